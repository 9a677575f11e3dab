/**
 * Exponential backoff with full jitter between connection attempts, the
 * same rule as the Rust client (`crates/client/src/config.rs`): after
 * `failures` failed attempts the bound is
 * `min(max, initial * multiplier^failures)` and the delay is drawn
 * uniformly between 0 and the bound, so that thousands of pages cut off by
 * one node crash do not all come back in the same instant.
 */
export interface BackoffOptions {
  /** Bound of the first delay, ms (default 100). */
  initialMs?: number;
  /** Largest bound, ms (default 10 000). */
  maxMs?: number;
  /** Factor applied after each failed attempt (default 2; below 1 counts as 1). */
  multiplier?: number;
  /** `"full"` (default): uniform in [0, bound]; `"none"`: exactly the bound. */
  jitter?: 'full' | 'none';
  /**
   * A connection that stayed up this long counts as healthy even if it
   * delivered nothing, and resets the backoff (default 10 000 ms); one that
   * delivered a message resets it at once.
   */
  resetAfterMs?: number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier: number;
  readonly jitter: 'full' | 'none';
  readonly resetAfterMs: number;

  constructor(options: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.initialMs = nonNegative(options.initialMs, 100);
    this.maxMs = nonNegative(options.maxMs, 10_000);
    const multiplier = options.multiplier ?? 2;
    this.multiplier = Number.isNaN(multiplier) || multiplier < 1 ? 1 : multiplier;
    this.jitter = options.jitter ?? 'full';
    this.resetAfterMs = nonNegative(options.resetAfterMs, 10_000);
  }

  /** The exponential bound after `failures` consecutive failures. */
  bound(failures: number): number {
    const exponent = Math.min(Math.max(0, Math.floor(failures)), 1024);
    const ms = this.initialMs * Math.pow(this.multiplier, exponent);
    return Number.isFinite(ms) ? Math.min(ms, this.maxMs) : this.maxMs;
  }

  /** The delay before the next attempt: the bound, jittered. */
  delay(failures: number): number {
    const bound = this.bound(failures);
    if (this.jitter === 'none') return bound;
    const r = this.random();
    const unit = Number.isFinite(r) ? Math.min(Math.max(r, 0), 1) : 1;
    return unit * bound;
  }
}

function nonNegative(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value >= 0 ? value : fallback;
}
