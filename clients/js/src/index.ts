/**
 * @edgepush/client: the browser and Node.js client of edgepush.
 *
 * ```js
 * import { EdgepushClient } from '@edgepush/client';
 * const client = new EdgepushClient({ nodes: ['ws://127.0.0.1:9001/ws'], getToken, storage: localStorage });
 * client.on('message', (m) => console.log(m.seq, m.data));
 * client.connect();
 * ```
 */
export { EdgepushClient } from './client.js';
export type {
  AckOptions,
  ClientEvents,
  ClientOptions,
  ClientState,
  ClientStats,
  ManagedOptions,
  StateEvent,
  Timers,
  WebSocketConstructor,
  WebSocketLike,
} from './client.js';
export { Subscription, checkTopic } from './subscription.js';
export type { SubscriptionEvents, SubscriptionOptions, SubscriptionState, SubscriptionStateEvent } from './subscription.js';
export { EdgepushError } from './errors.js';
export type { ErrorCode } from './errors.js';
export { Backoff } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { CloseCode } from './protocol.js';
export type { Message } from './protocol.js';
export type { PositionStorage } from './storage.js';
export type { MessageIterator } from './delivery.js';
