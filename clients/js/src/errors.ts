/** Errors the client reports through its `error` events (and iterators, when fatal). */

/** What went wrong. */
export type ErrorCode =
  /** The node closed with 1008: the client sent a frame the protocol does not define (fatal). */
  | 'protocol_violation'
  /** The node closed with 1009: a client frame was over the node's limit (fatal). */
  | 'frame_too_large'
  /** The node closed with 4001 and there is no `getToken` to get a fresh token (fatal). */
  | 'token_refused'
  /** `getToken` threw or returned something other than a non-empty string; retried with backoff. */
  | 'token_unavailable'
  /** An attempt ended before the node's `hello` (refused, unreachable, timed out); retried. */
  | 'connect_failed'
  /** The node sent a frame the protocol does not allow; the client reconnects. */
  | 'malformed_frame'
  /** A message skipped seqs; the client reconnects and the node replays what is missing. */
  | 'gap'
  /** Positions could not be read or written. */
  | 'storage'
  /** A `message` listener threw (the message still counts as handled). */
  | 'listener'
  /** The node refused a subscription (on the subscription). */
  | 'subscription_refused'
  /** The node sent an error frame about the connection. */
  | 'node_error';

export class EdgepushError extends Error {
  override readonly name = 'EdgepushError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The client has stopped (state `disconnected`) and will not retry. */
    readonly fatal = false,
    /** The close code, when a close caused it. */
    readonly closeCode?: number,
    /** The topic, for subscription errors. */
    readonly topic?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
