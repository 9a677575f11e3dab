/**
 * The client protocol of `docs/protocol.md` section 1, as the client sees
 * it: close codes, the frames a node sends, the frames the client sends,
 * and the URL of one connection attempt.
 */

/** Close codes a node uses, and what this client does about each. */
export const CloseCode = {
  /** Closed through the push API, or by the client itself: reconnect. */
  Normal: 1000,
  /** The node's idle timeout or shutdown: reconnect, to another node first. */
  GoingAway: 1001,
  /** No close frame (the socket broke, or the upgrade was refused): reconnect elsewhere. */
  Abnormal: 1006,
  /** The client sent a frame the protocol does not define: stop, the client must be fixed. */
  PolicyViolation: 1008,
  /** A client frame over the node's limit (4 KiB): stop, the client must be fixed. */
  TooLarge: 1009,
  /** The message store was unavailable: reconnect after a backoff. */
  InternalError: 1011,
  /** The node is draining: reconnect, to another node first. */
  ServiceRestart: 1012,
  /** The token expired while connected: reconnect with a fresh one. */
  TokenExpired: 4001,
  /** The client was too slow: reconnect, the node replays what was dropped. */
  TooSlow: 4008,
} as const;

/** The broadcast topic: every connection is subscribed to it (by the node, not by a `subscribe` frame). */
export const BROADCAST = '$broadcast';

/** A message of the user's stream (no `topic`) or of a topic. */
export interface Message {
  /** Per user (or per topic) sequence number: starts at 1, strictly increasing, no gaps. */
  seq: number;
  /** The message id (the same for every recipient of one submission). */
  id: string;
  /** The submitter's JSON. */
  data: unknown;
  /** The topic, for topic messages. */
  topic?: string;
}

/** A frame from a node, sorted. */
export type ServerFrame =
  | { type: 'hello'; connId: string; userId: string }
  | { type: 'msg'; message: Message }
  | { type: 'subscribed'; topic: string; seq: number }
  | { type: 'unsubscribed'; topic: string }
  /** `op`: what was refused (`subscribe`, `unsubscribe`, `publish`, `connect` for the token's topics or `resume`). */
  | { type: 'error'; op?: string; topic?: string; code: string; message: string }
  /** Managed edge: the replay a `resume` asked for is posted up to `through`; `more`: ask again. */
  | { type: 'resumed'; after: number; through: number; more: boolean }
  /** Managed edge: the answer to `ping`. */
  | { type: 'pong' }
  /** Managed edge: the server closes the connection with this code (API Gateway cannot send ours). */
  | { type: 'close'; code: number; reason: string }
  /** A frame outside the protocol's types: one a business system posted through the push API. */
  | { type: 'other'; text: string }
  /** A protocol frame with missing or wrong fields. */
  | { type: 'malformed'; detail: string };

/**
 * Sorts one text frame. Never throws. `managed`: the connection is on the
 * managed edge, where `resumed`, `pong` and `close` are frames of the
 * protocol (elsewhere they are frames a business posted).
 */
export function parseFrame(text: string, managed = false): ServerFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { type: 'other', text };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { type: 'other', text };
  const frame = value as Record<string, unknown>;
  switch (frame.type) {
    case 'hello':
      if (typeof frame.conn_id !== 'string' || typeof frame.user_id !== 'string') {
        return { type: 'malformed', detail: 'hello without conn_id/user_id' };
      }
      return { type: 'hello', connId: frame.conn_id, userId: frame.user_id };
    case 'msg': {
      if (!isSeq(frame.seq) || frame.seq < 1) return { type: 'malformed', detail: 'msg with a bad seq' };
      if (typeof frame.id !== 'string') return { type: 'malformed', detail: 'msg without id' };
      if (!('data' in frame)) return { type: 'malformed', detail: 'msg without data' };
      if (frame.topic !== undefined && typeof frame.topic !== 'string') {
        return { type: 'malformed', detail: 'msg with a bad topic' };
      }
      const message: Message = { seq: frame.seq, id: frame.id, data: frame.data };
      if (typeof frame.topic === 'string') message.topic = frame.topic;
      return { type: 'msg', message };
    }
    case 'subscribed':
      if (typeof frame.topic !== 'string' || !isSeq(frame.seq)) {
        return { type: 'malformed', detail: 'subscribed without topic/seq' };
      }
      return { type: 'subscribed', topic: frame.topic, seq: frame.seq };
    case 'unsubscribed':
      if (typeof frame.topic !== 'string') return { type: 'malformed', detail: 'unsubscribed without topic' };
      return { type: 'unsubscribed', topic: frame.topic };
    case 'error': {
      // The topics contract names the reason; accept it flat or nested.
      const nested = typeof frame.error === 'object' && frame.error !== null ? (frame.error as Record<string, unknown>) : frame;
      const code = typeof nested.code === 'string' ? nested.code : 'error';
      const message = typeof nested.message === 'string' ? nested.message : code;
      const error: ServerFrame = { type: 'error', code, message };
      if (typeof frame.topic === 'string') error.topic = frame.topic;
      if (typeof frame.op === 'string') error.op = frame.op;
      return error;
    }
    case 'resumed':
      if (!managed) return { type: 'other', text };
      if (!isSeq(frame.after) || !isSeq(frame.through) || typeof frame.more !== 'boolean') {
        return { type: 'malformed', detail: 'resumed without after/through/more' };
      }
      return { type: 'resumed', after: frame.after, through: frame.through, more: frame.more };
    case 'pong':
      return managed ? { type: 'pong' } : { type: 'other', text };
    case 'close':
      if (!managed) return { type: 'other', text };
      if (!isSeq(frame.code)) return { type: 'malformed', detail: 'close without code' };
      return { type: 'close', code: frame.code, reason: typeof frame.reason === 'string' ? frame.reason : '' };
    default:
      return { type: 'other', text };
  }
}

/** Managed edge: `{"type":"resume","after":N}` (`after` only when known). */
export function resumeFrame(after: number | undefined): string {
  return JSON.stringify(after === undefined ? { type: 'resume' } : { type: 'resume', after });
}

/** Managed edge: the keepalive. */
export const PING_FRAME = '{"type":"ping"}';

/** A seq: a non-negative integer JavaScript holds exactly. */
export function isSeq(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** `{"type":"ack","seq":N}`. */
export function ackFrame(seq: number): string {
  return JSON.stringify({ type: 'ack', seq });
}

/** `{"type":"subscribe","topic":T,"after":N}` (`after` only when known; `token` for a subscribe token). */
export function subscribeFrame(topic: string, after: number | undefined, token: string | undefined): string {
  const frame: Record<string, unknown> = { type: 'subscribe', topic };
  if (after !== undefined) frame.after = after;
  if (token !== undefined) frame.token = token;
  return JSON.stringify(frame);
}

/** `{"type":"unsubscribe","topic":T}`. */
export function unsubscribeFrame(topic: string): string {
  return JSON.stringify({ type: 'unsubscribe', topic });
}

/** Checks a node URL: `ws://` or `wss://` with a host. Throws a TypeError otherwise. */
export function checkNodeUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`edgepush: ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TypeError(`edgepush: ${JSON.stringify(url)} must start with ws:// or wss://`);
  }
  if (!parsed.host) throw new TypeError(`edgepush: ${JSON.stringify(url)} has no host`);
  return parsed;
}

/**
 * The URL of one attempt: the node URL with `token`, `after` when known, and
 * `resume` (`topic~seq,...`) for the topics the node subscribes the
 * connection to itself (token topics, broadcast) whose position is known.
 */
export function attemptUrl(
  node: string,
  token: string | undefined,
  after: number | undefined,
  resume: ReadonlyArray<readonly [string, number]> = [],
): string {
  const url = new URL(node);
  if (token !== undefined) url.searchParams.set('token', token);
  if (after !== undefined) url.searchParams.set('after', String(after));
  else url.searchParams.delete('after');
  if (resume.length > 0) url.searchParams.set('resume', resume.map(([topic, seq]) => `${topic}~${seq}`).join(','));
  else url.searchParams.delete('resume');
  return url.toString();
}
