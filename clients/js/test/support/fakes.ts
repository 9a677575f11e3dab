/** In-memory fakes for the unit tests: timers that advance on demand, a WebSocket the test plays the node for, a storage. */
import type { Timers, WebSocketLike } from '../../src/index.js';

export class FakeTimers implements Timers {
  time = 1_000_000;
  private nextId = 1;
  readonly pending = new Map<number, { at: number; fn: () => void; ms: number }>();
  /** Every delay asked for, in order. */
  readonly delays: number[] = [];

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.pending.set(id, { at: this.time + ms, fn, ms });
    this.delays.push(ms);
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  now(): number {
    return this.time;
  }

  /** Moves time forward by `ms`, running every timer that falls due, in order. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      await settle();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.pending) {
        if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry;
      }
      if (!next) break;
      this.pending.delete(next[0]);
      this.time = Math.max(this.time, next[1].at);
      next[1].fn();
    }
    this.time = end;
    await settle();
  }
}

/** Lets promise callbacks and microtasks run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  binaryType = 'blob';
  readyState = 0;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  onopen: ((event: unknown) => void) | null = null;
  readonly sent: unknown[] = [];
  closedByClient: { code?: number; reason?: string } | undefined;
  readonly url: URL;

  constructor(url: string) {
    this.url = new URL(url);
    FakeSocket.all.push(this);
  }

  static reset(): void {
    FakeSocket.all = [];
  }

  static get last(): FakeSocket {
    const socket = FakeSocket.all[FakeSocket.all.length - 1];
    if (!socket) throw new Error('no socket was opened');
    return socket;
  }

  get node(): string {
    return `${this.url.protocol}//${this.url.host}${this.url.pathname}`;
  }

  get after(): string | null {
    return this.url.searchParams.get('after');
  }

  /** The `resume` list as `topic -> seq`. */
  get resume(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const entry of (this.url.searchParams.get('resume') ?? '').split(',')) {
      const at = entry.lastIndexOf('~');
      if (at > 0) out[entry.slice(0, at)] = Number(entry.slice(at + 1));
    }
    return out;
  }

  get token(): string | null {
    return this.url.searchParams.get('token');
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  /** The node: the upgrade worked and it says hello. */
  hello(user = 'alice', connId = `conn-${FakeSocket.all.length}`): void {
    if (this.readyState !== 1) this.open();
    this.text({ type: 'hello', conn_id: connId, user_id: user });
  }

  /** The upgrade worked (the managed edge then waits for the client to speak). */
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  text(frame: unknown): void {
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }

  msg(seq: number, data: unknown = { n: seq }, topic?: string): void {
    this.text(topic === undefined ? { type: 'msg', seq, id: `id-${seq}`, data } : { type: 'msg', topic, seq, id: `id-${topic}-${seq}`, data });
  }

  /** The node closes (or the socket breaks: 1006). */
  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  acks(): number[] {
    return this.sent.filter((f): f is { type: 'ack'; seq: number } => (f as { type?: string }).type === 'ack').map((f) => f.seq);
  }
}

export class MapStorage {
  readonly map = new Map<string, string>();
  writes = 0;
  getItem(key: string): string | null {
    return this.map.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.writes += 1;
    this.map.set(key, value);
  }
}

/** An unsigned JWT with these claims (the client never verifies; the node does). */
export function jwt(claims: Record<string, unknown>): string {
  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.c2ln`;
}

export const NODES = ['ws://node-a:9001/ws', 'ws://node-b:9002/ws'];
