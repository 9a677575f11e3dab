/**
 * `EdgepushClient`: one connection to one of several edge nodes, kept up
 * for the application, delivering every message once and in order.
 *
 * State machine (the `state` event reports every change):
 *
 * ```text
 *   disconnected --connect()--> connecting --hello--> connected
 *        ^                        ^    |                  |
 *        |                        |    +-- attempt fails -+-- connection ends
 *        |                        +------ backoff --------+
 *        +-- disconnect(), or a close that says retrying is pointless (1008, 1009,
 *            4001 without getToken): the `error` event says why
 * ```
 *
 * What each ending does (the same table as the Rust client,
 * `crates/client/src/task.rs`, plus the stops):
 *
 * | ending                                   | next node first? | then            |
 * |------------------------------------------|------------------|-----------------|
 * | refused or unreachable before `hello`    | yes              | backoff         |
 * | close 1012 (draining), 1001, 1006 (lost) | yes              | backoff         |
 * | close 1011, 4008, 1000, other            | no               | backoff         |
 * | a gap in seqs                            | no               | backoff         |
 * | close 4001                               | no               | fresh token     |
 * | close 1008, 1009                         | -                | stop (fatal)    |
 *
 * Backoff: exponential with full jitter, reset by a connection that
 * delivered a message or stayed up for `resetAfterMs`.
 *
 * Managed edge (`managed` option: the endpoints are an API Gateway
 * WebSocket API, `functions/connections`): the server cannot speak first,
 * so on open the client sends `{"type":"resume","after":<last seq>}` and
 * waits for `hello`. Live messages are posted one HTTP call each there and
 * may overtake each other or the replay, so a seq that comes early is held
 * until the ones before it arrive; a gap still open after `gapWaitMs` is
 * asked for with `resume` after the last contiguous seq (no reconnect).
 * `resumed` with `more` makes it ask again; without a known position the
 * first `resumed`'s `after` is where the stream starts. A
 * `{"type":"close","code":C}` frame counts as a close with code `C`. The
 * client pings every `pingEveryMs` (API Gateway closes idle connections
 * after 10 minutes). See docs/protocol.md, "Managed edge".
 */
import { Backoff, type BackoffOptions } from './backoff.js';
import { Delivery, MessageIterator, SeqTracker } from './delivery.js';
import { Emitter } from './emitter.js';
import { EdgepushError, type ErrorCode } from './errors.js';
import {
  ackFrame,
  attemptUrl,
  BROADCAST,
  checkNodeUrl,
  CloseCode,
  type Message,
  parseFrame,
  PING_FRAME,
  resumeFrame,
  subscribeFrame,
  unsubscribeFrame,
} from './protocol.js';
import { encodePositions, loadPositions, type PositionStorage, type Positions } from './storage.js';
import { Subscription, type SubscriptionHost, type SubscriptionOptions } from './subscription.js';
import { readClaims } from './token.js';

export type ClientState = 'disconnected' | 'connecting' | 'connected';

export interface StateEvent {
  state: ClientState;
  previous: ClientState;
  /** `connected`: the node URL (as configured). */
  node?: string;
  /** `connected`: the node's id of this connection. */
  connId?: string;
  /** `connected`: the user the token speaks for. */
  userId?: string;
  /** Leaving `connected`: the close code (1006 when the socket broke). */
  code?: number;
  /** Leaving `connected`: the node's reason text, or the client's. */
  reason?: string;
}

export interface ClientEvents {
  /** A new message of the user's stream (or of a topic with no `Subscription` object), in order, once. */
  message: Message;
  state: StateEvent;
  error: EdgepushError;
  /** A frame outside the protocol that a business system posted to this connection through the push API. */
  frame: string | ArrayBuffer;
}

/** The part of the WebSocket API the client uses (browsers' and Node's `WebSocket`, the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onopen: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Timers the client uses; tests give fake ones. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface AckOptions {
  /** Ack once this many handled messages are unacked (default 64). */
  maxMessages?: number;
  /** Ack at the latest this long after the first unacked message was handled (default 1000 ms). */
  maxDelayMs?: number;
}

/** The managed edge's timings (see the `managed` option). */
export interface ManagedOptions {
  /** How long a seq that came early waits for the ones before it before the gap is asked for (default 1000 ms). */
  gapWaitMs?: number;
  /** How often the client pings (default 300 000 ms; API Gateway closes a connection idle for 10 minutes). */
  pingEveryMs?: number;
  /** A `resume` unanswered (no `resumed`, no message) this long ends the connection (default 30 000 ms). */
  answerTimeoutMs?: number;
}

/** Most early messages held on the managed edge; beyond, the gap request replays them. */
const MAX_HELD = 10_000;

export interface ClientOptions {
  /** Edge node endpoints, `ws://host:port/ws`; the client starts at a random one. */
  nodes: string | readonly string[];
  /** The token (sent as `?token=`). Optional when `getToken` is given. */
  token?: string;
  /**
   * Asked for a fresh token: before the first connect when `token` is not
   * given, `refreshBeforeExpMs` before the token's `exp`, after a close with
   * 4001, and when every node refused an attempt in a row. Without it a
   * 4001 stops the client.
   */
  getToken?: () => string | Promise<string>;
  /** How long before `exp` a fresh token is fetched and the connection renewed (default 30 000 ms). */
  refreshBeforeExpMs?: number;
  /** Resume after this seq on the first connect (wins over the stored position). */
  after?: number;
  /** Where to keep positions across page loads (`localStorage`, or any `getItem`/`setItem` object). */
  storage?: PositionStorage | null;
  /** The storage key (default `edgepush:<token sub>`). */
  storageKey?: string;
  /** Ack batching, or `"each"` to ack every handled message at once. */
  ack?: AckOptions | 'each';
  backoff?: BackoffOptions;
  /** An attempt without `hello` by then is abandoned (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** The WebSocket implementation (default `globalThis.WebSocket`; Node 20 needs `--experimental-websocket` or the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Index of the first node (default random). */
  firstNode?: number;
  /** Random numbers in [0, 1) for jitter and the first node (default `Math.random`). */
  random?: () => number;
  /** Timers (default the global ones and `Date.now`). */
  timers?: Timers;
  /**
   * The endpoints are an API Gateway WebSocket API (the managed edge), not
   * edge nodes: `true` for the default timings. Subscription objects work
   * there; the token's topics and broadcast are not served there yet.
   */
  managed?: boolean | ManagedOptions;
}

/** Counters of the client's life. */
export interface ClientStats {
  /** New messages passed to the application. */
  messages: number;
  /** Messages dropped because their seq was not above the last one. */
  duplicatesDropped: number;
  /** Connection attempts after the first. */
  reconnects: number;
  /** Messages that skipped seqs (each caused a reconnect). */
  gaps: number;
  /** Frames that broke the protocol (each caused a reconnect). */
  malformed: number;
  /** Attempts that ended before `hello`. */
  connectFailures: number;
  /** Ack frames sent. */
  acksSent: number;
}

const defaultTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
  now: () => Date.now(),
};

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;

export class EdgepushClient extends Emitter<ClientEvents> implements SubscriptionHost {
  private readonly nodes: string[];
  private readonly WS: WebSocketConstructor;
  private readonly timers: Timers;
  private readonly backoff: Backoff;
  private readonly ackEach: boolean;
  private readonly ackMax: number;
  private readonly ackDelayMs: number;
  private readonly connectTimeoutMs: number;
  private readonly refreshBeforeExpMs: number;
  private readonly managed: Required<ManagedOptions> | undefined;

  private current: ClientState = 'disconnected';
  private ws: WebSocketLike | undefined;
  /** Bumped by every attempt and by disconnect(): callbacks of older ones do nothing. */
  private generation = 0;
  private helloSeen = false;
  private nodeIndex: number;
  private failures = 0;
  /** Attempts in a row that ended before `hello`. */
  private failedInARow = 0;
  private upSince = 0;
  private deliveredSinceUp = false;
  private token: string | undefined;
  private tokenExp: number | undefined;
  private tokenSub: string | undefined;

  private readonly user = new SeqTracker();
  /** Topics the node delivers without a `Subscription` object (token claims, broadcast). */
  private readonly loose = new Map<string, SeqTracker>();
  private readonly subs = new Map<string, Subscription>();
  private readonly delivery: Delivery;
  private handled: number | undefined;
  private acked: number | undefined;
  private unacked = 0;
  private readonly topicHandledSeqs: Record<string, number> = {};

  private loaded = false;
  private storageKey: string | undefined;
  private persistScheduled = false;

  private reconnectTimer: unknown;
  private connectTimer: unknown;
  private ackTimer: unknown;
  private refreshTimer: unknown;
  /** Managed edge: messages of the user's stream that came early, by seq. */
  private readonly held = new Map<number, Message>();
  private gapTimer: unknown;
  private answerTimer: unknown;
  private pingTimer: unknown;

  private node_: string | undefined;
  private connId_: string | undefined;
  private userId_: string | undefined;
  private readonly counters: ClientStats = {
    messages: 0,
    duplicatesDropped: 0,
    reconnects: 0,
    gaps: 0,
    malformed: 0,
    connectFailures: 0,
    acksSent: 0,
  };
  private attempts = 0;

  constructor(private readonly options: ClientOptions) {
    super();
    const nodes = typeof options.nodes === 'string' ? [options.nodes] : [...options.nodes];
    if (nodes.length === 0) throw new TypeError('edgepush: at least one node URL is needed');
    for (const node of nodes) checkNodeUrl(node);
    this.nodes = nodes;
    if (options.token === undefined && options.getToken === undefined) {
      throw new TypeError('edgepush: give a token or a getToken function');
    }
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError('edgepush: no WebSocket here; pass the WebSocket option (Node 20: --experimental-websocket, or the ws package)');
    }
    this.WS = WS;
    this.timers = options.timers ?? defaultTimers;
    const random = options.random ?? Math.random;
    this.backoff = new Backoff(options.backoff, random);
    this.ackEach = options.ack === 'each';
    const ack = typeof options.ack === 'object' ? options.ack : {};
    this.ackMax = Math.max(1, Math.floor(ack.maxMessages ?? 64));
    this.ackDelayMs = Math.max(0, ack.maxDelayMs ?? 1000);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.refreshBeforeExpMs = options.refreshBeforeExpMs ?? 30_000;
    const managed: ManagedOptions | undefined = options.managed === true ? {} : options.managed || undefined;
    this.managed = managed && {
      gapWaitMs: Math.max(0, managed.gapWaitMs ?? 1000),
      pingEveryMs: Math.max(1000, managed.pingEveryMs ?? 300_000),
      answerTimeoutMs: Math.max(1, managed.answerTimeoutMs ?? 30_000),
    };
    this.nodeIndex =
      options.firstNode !== undefined ? Math.abs(Math.floor(options.firstNode)) % nodes.length : Math.floor(random() * nodes.length) % nodes.length;
    if (options.after !== undefined) this.user.last = options.after;
    if (options.token !== undefined) this.setToken(options.token);
    this.delivery = new Delivery(
      (message) => this.emit('message', message),
      () => this.listenerCount('message') > 0,
      (message) => this.onHandled(message),
    );
  }

  /** The current state. */
  get state(): ClientState {
    return this.current;
  }

  /** The node of the current connection. */
  get node(): string | undefined {
    return this.node_;
  }

  /** The node's id of the current connection. */
  get connId(): string | undefined {
    return this.connId_;
  }

  /** The user of the last `hello`. */
  get userId(): string | undefined {
    return this.userId_;
  }

  /** The highest seq of the user's stream received (what the next connection resumes after). */
  get lastSeq(): number | undefined {
    return this.user.last;
  }

  /** The highest seq of the user's stream the application handled (what is acked and persisted). */
  get handledSeq(): number | undefined {
    return this.handled;
  }

  /** Counters so far. */
  get stats(): ClientStats {
    return { ...this.counters };
  }

  /** Starts connecting (does nothing unless `disconnected`). */
  connect(): void {
    if (this.current !== 'disconnected') return;
    this.setState('connecting', {});
    void this.attempt();
  }

  /**
   * Stops: acks and persists what the application handled, closes with
   * 1000, ends the iterators (after what they hold). `connect()` starts again.
   */
  disconnect(): void {
    if (this.current === 'disconnected') return;
    this.stop(undefined, 'client disconnected');
  }

  /** Resolves once connected; rejects when the client stops first. */
  ready(): Promise<void> {
    if (this.current === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const offState = this.on('state', (event) => {
        if (event.state === 'connected') {
          done();
          resolve();
        } else if (event.state === 'disconnected') {
          done();
          reject(new Error('edgepush: the client stopped before connecting'));
        }
      });
      const done = () => offState();
    });
  }

  /** A subscription object for `topic` (throws if one exists: see `getSubscription`). */
  newSubscription(topic: string, options: SubscriptionOptions = {}): Subscription {
    if (this.subs.has(topic)) throw new Error(`edgepush: a subscription to ${JSON.stringify(topic)} exists already`);
    const stored = this.topicHandledSeqs[topic] ?? this.loose.get(topic)?.last;
    const sub = new Subscription(topic, this, options, stored);
    this.subs.set(topic, sub);
    return sub;
  }

  /** The subscription object of `topic`, if any. */
  getSubscription(topic: string): Subscription | undefined {
    return this.subs.get(topic);
  }

  /** Unsubscribes and forgets `sub`. */
  removeSubscription(sub: Subscription): void {
    sub.unsubscribe();
    if (this.subs.get(sub.topic) === sub) this.subs.delete(sub.topic);
  }

  /** `for await (const message of client)`: the `message` event's messages, each once, in order. */
  [Symbol.asyncIterator](): MessageIterator {
    return this.delivery.iterator();
  }

  // ---- SubscriptionHost ------------------------------------------------

  /** @internal */
  requestSubscribe(sub: Subscription): void {
    if (this.current === 'connected') void this.sendSubscribe(sub, this.generation);
  }

  /** @internal */
  requestUnsubscribe(sub: Subscription): void {
    if (this.current === 'connected') this.send(unsubscribeFrame(sub.topic));
  }

  /** @internal */
  topicHandled(topic: string, seq: number): void {
    this.topicHandledSeqs[topic] = seq;
    this.schedulePersist();
  }

  /** @internal */
  listenerError(error: unknown): void {
    this.report('listener', `a listener threw: ${describe(error)}`, { cause: error });
  }

  // ---- Emitter hooks ---------------------------------------------------

  protected override listenerAdded(name: keyof ClientEvents): void {
    if (name === 'message') this.delivery.consumerAdded();
  }

  protected override onListenerError(name: keyof ClientEvents, error: unknown): void {
    // An `error` listener that throws is not reported again (no loop).
    if (name !== 'error') this.listenerError(error);
  }

  // ---- attempts --------------------------------------------------------

  private async attempt(): Promise<void> {
    const generation = ++this.generation;
    if (this.attempts++ > 0) this.counters.reconnects += 1;
    if (this.needsToken()) {
      let token: string;
      try {
        token = await this.fetchToken();
      } catch (error) {
        if (generation !== this.generation) return;
        this.report('token_unavailable', `getToken failed: ${describe(error)}`, { cause: error });
        this.retryLater(false, false);
        return;
      }
      if (generation !== this.generation) return;
      this.setToken(token);
    }
    if (!this.loaded) {
      await this.load();
      if (generation !== this.generation) return;
    }
    const node = this.nodes[this.nodeIndex % this.nodes.length]!;
    let ws: WebSocketLike;
    try {
      ws = new this.WS(attemptUrl(node, this.token, this.user.last, this.resumeList()));
    } catch (error) {
      this.attemptFailed(`could not open ${node}: ${describe(error)}`);
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (event) => {
      if (this.ws === ws) this.onData(ws, node, event.data);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.onClose(event.code, event.reason);
    };
    ws.onerror = () => {
      // A close event follows; it says what happened.
    };
    if (this.managed) {
      // The managed edge waits for the client to speak first.
      ws.onopen = () => {
        if (this.ws !== ws) return;
        try {
          ws.send(resumeFrame(this.user.last));
        } catch {
          return; // a close event follows
        }
        this.armAnswer(ws);
      };
    }
    this.connectTimer = this.timers.setTimeout(() => {
      if (this.ws !== ws || this.helloSeen) return;
      this.abandon(ws, 'connect timeout');
      this.attemptFailed(`no hello from ${node} within ${this.connectTimeoutMs} ms`);
    }, this.connectTimeoutMs);
  }

  /** An attempt ended before `hello`: next node, backoff. */
  private attemptFailed(detail: string, code?: number): void {
    this.counters.connectFailures += 1;
    this.failedInARow += 1;
    // A browser cannot see the HTTP status of a refused upgrade, so a 401
    // looks like any failure: when every node failed in a row, the token
    // may be the reason.
    if (this.options.getToken && this.failedInARow >= this.nodes.length) this.token = undefined;
    this.report('connect_failed', detail, {}, code);
    this.retryLater(true, false);
  }

  private onData(ws: WebSocketLike, node: string, data: unknown): void {
    if (typeof data !== 'string') {
      if (!this.helloSeen) return this.malformed(ws, 'a binary frame before hello');
      if (data instanceof ArrayBuffer) this.emit('frame', data);
      return;
    }
    const frame = parseFrame(data, this.managed !== undefined);
    if (frame.type === 'close') {
      // The managed edge's close code, posted before API Gateway closes.
      this.abandon(ws, 'closed by the server');
      return this.onClose(frame.code, frame.reason);
    }
    if (!this.helloSeen) {
      if (frame.type !== 'hello') return this.malformed(ws, `expected hello, got ${frame.type}`);
      return this.onHello(node, frame.connId, frame.userId);
    }
    switch (frame.type) {
      case 'msg':
        if (this.managed && frame.message.topic === undefined) return this.onManagedMsg(frame.message);
        return this.onMsg(ws, frame.message);
      case 'resumed':
        return this.onResumed(ws, frame.after, frame.more);
      case 'pong':
        return;
      case 'subscribed':
        this.subs.get(frame.topic)?.onSubscribed(frame.seq);
        return;
      case 'unsubscribed':
        this.subs.get(frame.topic)?.onRefused('unsubscribed', 'the node ended the subscription');
        return;
      case 'error': {
        // A `connect` error is about the token's topics or `resume`, never
        // about a subscription object.
        const sub = frame.topic !== undefined && frame.op !== 'connect' ? this.subs.get(frame.topic) : undefined;
        if (sub) sub.onRefused(frame.code, frame.message);
        else this.report('node_error', `${frame.code}: ${frame.message}`);
        return;
      }
      case 'other':
        this.emit('frame', frame.text);
        return;
      case 'hello':
        return this.malformed(ws, 'a second hello');
      case 'malformed':
        return this.malformed(ws, frame.detail);
    }
  }

  private onHello(node: string, connId: string, userId: string): void {
    this.helloSeen = true;
    this.timers.clearTimeout(this.connectTimer);
    this.failedInARow = 0;
    this.upSince = this.timers.now();
    this.deliveredSinceUp = false;
    this.node_ = node;
    this.connId_ = connId;
    this.userId_ = userId;
    this.setState('connected', { node, connId, userId });
    if (this.managed) this.armPing();
    this.flushAck();
    for (const sub of this.subs.values()) {
      if (sub.active) void this.sendSubscribe(sub, this.generation);
    }
  }

  /**
   * Where the topics the node subscribes the connection to itself (token
   * topics, broadcast: those without a `Subscription` object) resume: the
   * last seq received from them in this client, and the stored position of
   * broadcast (stored positions of other topics may belong to
   * subscriptions the page has not made again yet, which the node would
   * refuse; a token topic's stored position seeds its tracker instead, so
   * a message missed while the page was away shows as a gap and the
   * reconnect resumes it). Without `resume` the node starts these topics at
   * their latest seq, and every reconnect would see a gap again.
   */
  private resumeList(): Array<[string, number]> {
    const out = new Map<string, number>();
    const broadcast = this.topicHandledSeqs[BROADCAST];
    if (broadcast !== undefined) out.set(BROADCAST, broadcast);
    for (const [topic, tracker] of this.loose) {
      if (tracker.last !== undefined && !this.subs.has(topic)) out.set(topic, tracker.last);
    }
    return [...out];
  }

  private onMsg(ws: WebSocketLike, message: Message): void {
    const topic = message.topic;
    const sub = topic === undefined ? undefined : this.subs.get(topic);
    if (sub && !sub.active) return; // in flight after an unsubscribe
    let tracker: SeqTracker;
    if (topic === undefined) tracker = this.user;
    else if (sub) tracker = sub.tracker;
    else {
      tracker = this.loose.get(topic) ?? new SeqTracker(this.topicHandledSeqs[topic]);
      this.loose.set(topic, tracker);
    }
    const last = tracker.last;
    switch (tracker.accept(message.seq)) {
      case 'duplicate':
        this.counters.duplicatesDropped += 1;
        return;
      case 'gap':
        this.counters.gaps += 1;
        this.report('gap', `${topic ?? 'user stream'}: had seq ${last}, got ${message.seq}; reconnecting to get a replay`);
        this.abandon(ws, 'gap');
        this.connectionEnded(CloseCode.Normal, 'gap', false);
        return;
      case 'new':
        this.counters.messages += 1;
        this.deliveredSinceUp = true;
        (sub ? sub.delivery : this.delivery).push(message);
    }
  }

  // ---- the managed edge ------------------------------------------------

  /** A message of the user's stream on the managed edge: held until the ones before it are here. */
  private onManagedMsg(message: Message): void {
    const last = this.user.last;
    if (last !== undefined && message.seq <= last) {
      this.counters.duplicatesDropped += 1;
      return;
    }
    if (this.answerTimer !== undefined && this.ws) this.armAnswer(this.ws); // a replay is coming in
    if (this.held.size < MAX_HELD || this.held.has(message.seq)) this.held.set(message.seq, message);
    this.releaseHeld();
  }

  /** `resumed`: the replay is posted; the first one names where the stream starts. */
  private onResumed(ws: WebSocketLike, after: number, more: boolean): void {
    this.timers.clearTimeout(this.answerTimer);
    this.answerTimer = undefined;
    if (this.user.last === undefined) this.user.last = after;
    this.releaseHeld();
    if (more && this.send(resumeFrame(this.user.last))) this.armAnswer(ws);
    else this.armGap();
  }

  /** Delivers the held messages that follow the last seq without a gap. */
  private releaseHeld(): void {
    const tracker = this.user;
    if (tracker.last === undefined) return;
    for (const seq of [...this.held.keys()]) {
      if (seq <= tracker.last) {
        this.held.delete(seq);
        this.counters.duplicatesDropped += 1;
      }
    }
    for (let next = this.held.get(tracker.last + 1); next; next = this.held.get(tracker.last + 1)) {
      this.held.delete(next.seq);
      tracker.accept(next.seq);
      this.counters.messages += 1;
      this.deliveredSinceUp = true;
      this.delivery.push(next);
    }
    this.armGap();
  }

  /** Arms the gap timer while early messages wait and no `resume` is out; disarms it when none wait. */
  private armGap(): void {
    if (this.held.size === 0) {
      this.timers.clearTimeout(this.gapTimer);
      this.gapTimer = undefined;
      return;
    }
    if (this.gapTimer !== undefined || this.answerTimer !== undefined || !this.managed) return;
    const ws = this.ws;
    this.gapTimer = this.timers.setTimeout(() => {
      this.gapTimer = undefined;
      if (this.ws !== ws || !ws || this.held.size === 0 || this.user.last === undefined) return;
      this.counters.gaps += 1;
      const first = Math.min(...this.held.keys());
      this.report('gap', `user stream: had seq ${this.user.last}, holding ${first}; asking for the gap`);
      if (this.send(resumeFrame(this.user.last))) this.armAnswer(ws);
    }, this.managed.gapWaitMs);
  }

  /** A `resume` is out: without an answer in time the connection is given up. */
  private armAnswer(ws: WebSocketLike): void {
    if (!this.managed) return;
    this.timers.clearTimeout(this.answerTimer);
    this.answerTimer = this.timers.setTimeout(() => {
      this.answerTimer = undefined;
      if (this.ws !== ws) return;
      const wasUp = this.helloSeen;
      this.abandon(ws, 'resume unanswered');
      if (wasUp) this.connectionEnded(CloseCode.GoingAway, 'resume unanswered', true);
      else this.attemptFailed('no answer to resume');
    }, this.managed.answerTimeoutMs);
  }

  private armPing(): void {
    if (!this.managed) return;
    const ws = this.ws;
    this.timers.clearTimeout(this.pingTimer);
    this.pingTimer = this.timers.setTimeout(() => {
      if (this.ws !== ws || !this.helloSeen) return;
      this.send(PING_FRAME);
      this.armPing();
    }, this.managed.pingEveryMs);
  }

  /** The connection is over: what the managed edge kept for it goes (a resume asks again). */
  private resetManaged(): void {
    for (const timer of [this.gapTimer, this.answerTimer, this.pingTimer]) this.timers.clearTimeout(timer);
    this.gapTimer = this.answerTimer = this.pingTimer = undefined;
    this.held.clear();
  }

  private malformed(ws: WebSocketLike, detail: string): void {
    this.counters.malformed += 1;
    this.report('malformed_frame', detail);
    const wasUp = this.helloSeen;
    this.abandon(ws, 'malformed frame');
    if (wasUp) this.connectionEnded(CloseCode.Normal, 'malformed frame', true);
    else this.attemptFailed(`malformed frame before hello: ${detail}`);
  }

  private onClose(code: number, reason: string): void {
    this.ws = undefined;
    this.timers.clearTimeout(this.connectTimer);
    this.resetManaged();
    if (code === CloseCode.PolicyViolation || code === CloseCode.TooLarge) {
      const what: ErrorCode = code === CloseCode.PolicyViolation ? 'protocol_violation' : 'frame_too_large';
      const text = code === CloseCode.PolicyViolation ? 'the node closed with 1008: it received a frame the protocol does not define' : 'the node closed with 1009: a frame was too large';
      this.stop(new EdgepushError(what, `${text}${reason ? ` (${reason})` : ''}; not retrying`, true, code), reason || what);
      return;
    }
    if (code === CloseCode.TokenExpired) {
      if (!this.options.getToken) {
        this.stop(new EdgepushError('token_refused', `the node closed with 4001 (${reason || 'token expired'}) and there is no getToken`, true, code), reason);
        return;
      }
      this.token = undefined;
    }
    if (!this.helloSeen) {
      this.attemptFailed(`closed before hello (${code}${reason ? ` ${reason}` : ''})`, code);
      return;
    }
    const moveOn = code === CloseCode.ServiceRestart || code === CloseCode.GoingAway || code === CloseCode.Abnormal;
    this.connectionEnded(code, reason, moveOn);
  }

  /** A connection that was up has ended: back to connecting, after a backoff. */
  private connectionEnded(code: number, reason: string, moveOn: boolean): void {
    const healthy = this.deliveredSinceUp || this.timers.now() - this.upSince >= this.backoff.resetAfterMs;
    this.helloSeen = false;
    for (const sub of this.subs.values()) sub.onDisconnected();
    this.setState('connecting', { code, reason });
    this.retryLater(moveOn, healthy);
  }

  private retryLater(moveOn: boolean, healthy: boolean, delayMs?: number): void {
    if (moveOn) this.nodeIndex = (this.nodeIndex + 1) % this.nodes.length;
    if (healthy) this.failures = 0;
    const delay = delayMs ?? this.backoff.delay(this.failures);
    this.failures += 1;
    const generation = ++this.generation;
    this.reconnectTimer = this.timers.setTimeout(() => {
      if (generation === this.generation && this.current === 'connecting') void this.attempt();
    }, delay);
  }

  /** Closes `ws` without hearing from it again. */
  private abandon(ws: WebSocketLike, reason: string): void {
    if (this.ws === ws) this.ws = undefined;
    this.timers.clearTimeout(this.connectTimer);
    this.resetManaged();
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    try {
      ws.close(CloseCode.Normal, reason);
    } catch {
      // Already closing.
    }
  }

  /** Stops for good (until `connect()`), with `error` when fatal. */
  private stop(error: EdgepushError | undefined, reason: string): void {
    this.generation += 1;
    for (const timer of [this.reconnectTimer, this.connectTimer, this.refreshTimer]) this.timers.clearTimeout(timer);
    this.flushAck();
    this.persistNow();
    this.timers.clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const ws = this.ws;
    if (ws) this.abandon(ws, 'client closed');
    this.helloSeen = false;
    if (error) this.emit('error', error);
    this.setState('disconnected', error?.closeCode !== undefined ? { code: error.closeCode, reason } : { reason });
    this.delivery.end(error);
    for (const sub of this.subs.values()) sub.onClientStopped(error);
  }

  // ---- tokens ----------------------------------------------------------

  private needsToken(): boolean {
    if (this.token === undefined) return true;
    if (!this.options.getToken || this.tokenExp === undefined) return false;
    return this.tokenExp * 1000 <= this.timers.now();
  }

  private async fetchToken(): Promise<string> {
    const getToken = this.options.getToken;
    if (!getToken) throw new Error('no getToken');
    const token = await getToken();
    if (typeof token !== 'string' || token.length === 0) throw new Error('getToken returned no token');
    return token;
  }

  private setToken(token: string): void {
    this.token = token;
    const claims = readClaims(token);
    this.tokenExp = claims.exp;
    if (claims.sub !== undefined) this.tokenSub = claims.sub;
    this.timers.clearTimeout(this.refreshTimer);
    if (this.options.getToken && claims.exp !== undefined) {
      const due = claims.exp * 1000 - this.refreshBeforeExpMs - this.timers.now();
      this.refreshTimer = this.timers.setTimeout(() => void this.refreshToken(), Math.min(Math.max(0, due), MAX_TIMER_MS));
    }
  }

  /** Before `exp`: a fresh token, then a new connection with it (resuming after the last seq). */
  private async refreshToken(): Promise<void> {
    if (this.current === 'disconnected') return;
    const oldExp = this.tokenExp;
    let token: string;
    try {
      token = await this.fetchToken();
    } catch (error) {
      this.report('token_unavailable', `getToken failed before the token's expiry: ${describe(error)}`, { cause: error });
      return;
    }
    if (this.isStopped()) return;
    const exp = readClaims(token).exp;
    if (oldExp !== undefined && (exp === undefined || exp <= oldExp)) {
      // Not fresher: keep it for the next attempt; the node closes with 4001 at expiry and we ask again.
      this.token = token;
      return;
    }
    this.setToken(token);
    const ws = this.ws;
    if (this.current === 'connected' && ws) {
      this.flushAck();
      this.abandon(ws, 'token refresh');
      this.helloSeen = false;
      for (const sub of this.subs.values()) sub.onDisconnected();
      this.setState('connecting', { code: CloseCode.Normal, reason: 'token refresh' });
      this.generation += 1;
      void this.attempt();
    }
  }

  private isStopped(): boolean {
    return this.current === 'disconnected';
  }

  // ---- acks and positions ----------------------------------------------

  private onHandled(message: Message): void {
    if (message.topic !== undefined) {
      this.topicHandled(message.topic, message.seq);
      return;
    }
    this.handled = message.seq;
    this.unacked += 1;
    if (this.ackEach || this.unacked >= this.ackMax) this.flushAck();
    else if (this.ackTimer === undefined) {
      this.ackTimer = this.timers.setTimeout(() => {
        this.ackTimer = undefined;
        this.flushAck();
      }, this.ackDelayMs);
    }
    this.schedulePersist();
  }

  /** Acks the handled position if it moved and a connection is up (else at the next `hello`). */
  private flushAck(): void {
    if (this.handled === undefined || (this.acked !== undefined && this.acked >= this.handled)) return;
    if (!this.helloSeen || !this.ws) return;
    if (!this.send(ackFrame(this.handled))) return;
    this.acked = this.handled;
    this.unacked = 0;
    this.counters.acksSent += 1;
    if (this.ackTimer !== undefined) {
      this.timers.clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
  }

  private send(text: string): boolean {
    const ws = this.ws;
    if (!ws || !this.helloSeen) return false;
    try {
      ws.send(text);
      return true;
    } catch {
      return false;
    }
  }

  private async sendSubscribe(sub: Subscription, generation: number): Promise<void> {
    let token: string | undefined;
    try {
      token = await sub.frameToken();
    } catch (error) {
      sub.onRefused('token_unavailable', `getToken failed: ${describe(error)}`);
      return;
    }
    if (generation !== this.generation || !sub.active) return;
    this.send(subscribeFrame(sub.topic, sub.lastSeq, token));
  }

  private async load(): Promise<void> {
    this.loaded = true;
    const storage = this.options.storage;
    if (!storage) return;
    this.storageKey = this.options.storageKey ?? (this.tokenSub !== undefined ? `edgepush:${this.tokenSub}` : undefined);
    if (this.storageKey === undefined) {
      this.report('storage', 'positions are not stored: the token has no sub claim; give storageKey');
      return;
    }
    let positions: Positions;
    try {
      positions = await loadPositions(storage, this.storageKey, this.tokenSub);
    } catch (error) {
      this.report('storage', `could not read positions: ${describe(error)}`, { cause: error });
      return;
    }
    if (this.options.after === undefined && positions.seq !== undefined && this.user.last === undefined) {
      this.user.last = positions.seq;
      this.handled = positions.seq;
    }
    for (const [topic, seq] of Object.entries(positions.topics)) {
      if (this.topicHandledSeqs[topic] === undefined) this.topicHandledSeqs[topic] = seq;
      const sub = this.subs.get(topic);
      if (sub && sub.tracker.last === undefined) sub.tracker.last = seq;
    }
  }

  private schedulePersist(): void {
    if (this.persistScheduled || !this.options.storage) return;
    this.persistScheduled = true;
    // Coalesces a burst handled in one task; runs before the page can unload.
    queueMicrotask(() => {
      this.persistScheduled = false;
      this.persistNow();
    });
  }

  private persistNow(): void {
    const storage = this.options.storage;
    if (!storage || this.storageKey === undefined) return;
    const positions: Positions = { topics: { ...this.topicHandledSeqs } };
    if (this.tokenSub !== undefined) positions.user = this.tokenSub;
    if (this.handled !== undefined) positions.seq = this.handled;
    try {
      const written = storage.setItem(this.storageKey, encodePositions(positions));
      if (written instanceof Promise) {
        written.catch((error: unknown) => this.report('storage', `could not write positions: ${describe(error)}`, { cause: error }));
      }
    } catch (error) {
      this.report('storage', `could not write positions: ${describe(error)}`, { cause: error });
    }
  }

  // ---- events ----------------------------------------------------------

  private setState(state: ClientState, extra: Partial<StateEvent>): void {
    if (state === this.current) return;
    const previous = this.current;
    this.current = state;
    if (state !== 'connected') {
      this.connId_ = undefined;
    }
    this.emit('state', { state, previous, ...extra });
  }

  private report(code: ErrorCode, message: string, options: { cause?: unknown } = {}, closeCode?: number): void {
    this.emit('error', new EdgepushError(code, message, false, closeCode, undefined, options));
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
