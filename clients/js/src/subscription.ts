/**
 * A topic subscription with its own events, per the topics contract
 * (`{"type":"subscribe","topic":T,"after":N}`, `subscribed`, `unsubscribe`,
 * error frames naming the topic, `msg` frames carrying `topic`).
 *
 * States: `unsubscribed` -> `subscribing` (asked, or waiting for the
 * connection) -> `subscribed` (the node answered). A refusal goes back to
 * `unsubscribed` with an `error` event; the connection stays up. Every
 * reconnect subscribes again with `after` = the last seq received, so the
 * node replays what was missed; duplicates are dropped by seq.
 */
import { Delivery, MessageIterator, SeqTracker } from './delivery.js';
import { Emitter } from './emitter.js';
import { EdgepushError } from './errors.js';
import type { Message } from './protocol.js';

export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

export interface SubscriptionStateEvent {
  state: SubscriptionState;
  previous: SubscriptionState;
  /** `subscribed`: the topic's latest seq when the node subscribed. */
  seq?: number;
  /** Going back to `unsubscribed` because the node refused: its reason code. */
  code?: string;
}

export interface SubscriptionEvents {
  /** A new topic message, in seq order, each seq once. */
  message: Message;
  state: SubscriptionStateEvent;
  error: EdgepushError;
}

export interface SubscriptionOptions {
  /** Resume after this seq (else the stored position, else from now). */
  after?: number;
  /** A subscribe token the business signed for this topic. */
  token?: string;
  /** Asked for a subscribe token on every subscribe (wins over `token`). */
  getToken?: () => string | Promise<string>;
}

/** The client's side of a subscription. @internal */
export interface SubscriptionHost {
  /** Sends a subscribe frame now if connected (else at the next connect). */
  requestSubscribe(sub: Subscription): void;
  /** Sends an unsubscribe frame if connected. */
  requestUnsubscribe(sub: Subscription): void;
  /** The application handled a topic message. */
  topicHandled(topic: string, seq: number): void;
  /** Reports a listener that threw. */
  listenerError(error: unknown): void;
}

/** Letters, digits and `. _ - : @ + = /`, at most 128 bytes. */
const TOPIC = /^[A-Za-z0-9._\-:@+=/]{1,128}$/;

export function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || !TOPIC.test(topic)) {
    throw new TypeError(`edgepush: ${JSON.stringify(topic)} is not a topic name (letters, digits and . _ - : @ + = /, at most 128)`);
  }
}

export class Subscription extends Emitter<SubscriptionEvents> {
  private current: SubscriptionState = 'unsubscribed';
  /** The application wants it (kept across reconnects). */
  private wanted = false;
  /** @internal */
  readonly tracker: SeqTracker;
  /** @internal */
  readonly delivery: Delivery;
  private handled: number | undefined;

  /** @internal Use `client.newSubscription(topic)`. */
  constructor(
    readonly topic: string,
    private readonly host: SubscriptionHost,
    private readonly options: SubscriptionOptions,
    stored: number | undefined,
  ) {
    super();
    checkTopic(topic);
    const start = options.after ?? stored;
    this.tracker = new SeqTracker(start);
    this.handled = start;
    this.delivery = new Delivery(
      (message) => this.emit('message', message),
      () => this.listenerCount('message') > 0,
      (message) => {
        this.handled = message.seq;
        host.topicHandled(topic, message.seq);
      },
    );
  }

  get state(): SubscriptionState {
    return this.current;
  }

  /** Whether the application wants this subscription. */
  get active(): boolean {
    return this.wanted;
  }

  /** The seq of the last message received on this topic. */
  get lastSeq(): number | undefined {
    return this.tracker.last;
  }

  /** The seq of the last message the application handled (what is persisted). */
  get handledSeq(): number | undefined {
    return this.handled;
  }

  /** Subscribes (now if connected, else at the next connect). */
  subscribe(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.setState('subscribing');
    this.host.requestSubscribe(this);
  }

  /** Unsubscribes; messages of the topic still in flight are dropped. */
  unsubscribe(): void {
    if (!this.wanted) return;
    this.wanted = false;
    this.host.requestUnsubscribe(this);
    this.setState('unsubscribed');
  }

  /** `for await (const message of subscription)`. */
  [Symbol.asyncIterator](): MessageIterator {
    return this.delivery.iterator();
  }

  /** @internal The `subscribe` frame to send. */
  async frameToken(): Promise<string | undefined> {
    if (this.options.getToken) return await this.options.getToken();
    return this.options.token;
  }

  /** @internal The node confirmed. */
  onSubscribed(seq: number): void {
    if (!this.wanted) return;
    if (this.tracker.last === undefined) this.tracker.last = seq;
    this.setState('subscribed', { seq });
  }

  /** @internal The node refused or dropped the subscription. */
  onRefused(code: string, message: string): void {
    const was = this.wanted;
    this.wanted = false;
    this.setState('unsubscribed', { code });
    if (was) this.emit('error', new EdgepushError('subscription_refused', `${this.topic}: ${message}`, false, undefined, this.topic));
  }

  /** @internal The connection went away: wait for the next one. */
  onDisconnected(): void {
    if (this.wanted) this.setState('subscribing');
  }

  /** @internal The client stopped. */
  onClientStopped(error?: EdgepushError): void {
    if (this.wanted) this.setState('subscribing');
    this.delivery.end(error);
  }

  protected override listenerAdded(name: keyof SubscriptionEvents): void {
    if (name === 'message') this.delivery.consumerAdded();
  }

  protected override onListenerError(name: keyof SubscriptionEvents, error: unknown): void {
    if (name !== 'error') this.host.listenerError(error);
  }

  private setState(state: SubscriptionState, extra: Partial<SubscriptionStateEvent> = {}): void {
    if (state === this.current) return;
    const previous = this.current;
    this.current = state;
    this.emit('state', { state, previous, ...extra });
  }
}
