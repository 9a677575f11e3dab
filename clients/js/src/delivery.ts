/**
 * One stream's way from the socket to the application: messages go, in
 * order, to the `message` listeners and to every open async iterator, and a
 * message counts as *handled* once every consumer is done with it: a
 * listener when it returns, an iterator when the loop asks for the next one
 * (or leaves). Handled messages come out of `onHandled` in seq order; only
 * they are acked and persisted, so a page that is closed with messages
 * still queued gets them again.
 *
 * A message that arrives while nobody consumes the stream waits (the
 * backlog) until a listener or an iterator appears; it is never acked
 * unseen.
 */
import type { Message } from './protocol.js';

interface Entry {
  message: Message;
  /** Consumers that still have to finish with it. */
  remaining: number;
  /** Handed to consumers (false: in the backlog). */
  delivered: boolean;
}

export class Delivery {
  /** Every message not yet handled by all its consumers, in order. */
  private readonly queue: Entry[] = [];
  private readonly iterators = new Set<MessageIterator>();
  private flushScheduled = false;

  constructor(
    private readonly toListeners: (message: Message) => void,
    private readonly hasListeners: () => boolean,
    private readonly onHandled: (message: Message) => void,
  ) {}

  /** A new message, in order. */
  push(message: Message): void {
    this.queue.push({ message, remaining: 0, delivered: false });
    if (this.hasConsumers()) this.flush();
  }

  /** Messages waiting for a consumer. */
  get backlog(): number {
    return this.queue.filter((e) => !e.delivered).length;
  }

  /** Called when a listener is added: hand it the backlog (after the caller's synchronous set-up). */
  consumerAdded(): void {
    if (this.flushScheduled || !this.queue.some((e) => !e.delivered)) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      if (this.hasConsumers()) this.flush();
    });
  }

  /** A new async iterator over the stream. */
  iterator(): MessageIterator {
    const it = new MessageIterator(this);
    this.iterators.add(it);
    this.flush();
    return it;
  }

  /** No more messages: iterators end once drained (throwing `error` if given). */
  end(error?: Error): void {
    for (const it of this.iterators) it.end(error);
  }

  /** @internal An iterator is done with `entry`. */
  release(entry: Entry): void {
    entry.remaining -= 1;
    this.collect();
  }

  /** @internal An iterator left; what it had not yet yielded goes back to the backlog when nobody else consumes. */
  detach(it: MessageIterator, unyielded: Entry[]): void {
    this.iterators.delete(it);
    const others = this.hasConsumers();
    for (const entry of unyielded) {
      entry.remaining -= 1;
      if (!others && entry.remaining === 0) entry.delivered = false;
    }
    this.collect();
  }

  private hasConsumers(): boolean {
    return this.iterators.size > 0 || this.hasListeners();
  }

  private flush(): void {
    for (const entry of this.queue) {
      if (entry.delivered) continue;
      entry.delivered = true;
      entry.remaining = this.iterators.size;
      for (const it of this.iterators) it.enqueue(entry);
      if (this.hasListeners()) this.toListeners(entry.message);
    }
    this.collect();
  }

  private collect(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (!head.delivered || head.remaining > 0) return;
      this.queue.shift();
      this.onHandled(head.message);
    }
  }
}

/** `for await (const message of client)`: each message once, in order. */
export class MessageIterator implements AsyncIterableIterator<Message> {
  private readonly buffer: Entry[] = [];
  private current: Entry | undefined;
  private waiting: { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private error: Error | undefined;
  private left = false;

  constructor(private readonly owner: Delivery) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Message>> {
    this.finishCurrent();
    const entry = this.buffer.shift();
    if (entry) {
      this.current = entry;
      return Promise.resolve({ value: entry.message, done: false });
    }
    if (this.ended || this.left) {
      this.leave();
      if (this.error) {
        const error = this.error;
        this.error = undefined;
        return Promise.reject(error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** Leaving the loop (`break`, `return`, a throw): the last message counts as handled. */
  return(): Promise<IteratorResult<Message>> {
    this.finishCurrent();
    this.leave();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** @internal */
  enqueue(entry: Entry): void {
    if (this.waiting) {
      const { resolve } = this.waiting;
      this.waiting = undefined;
      this.current = entry;
      resolve({ value: entry.message, done: false });
    } else {
      this.buffer.push(entry);
    }
  }

  /** @internal */
  end(error?: Error): void {
    this.ended = true;
    this.error = error;
    if (this.waiting && this.buffer.length === 0) {
      const waiting = this.waiting;
      this.waiting = undefined;
      this.leave();
      if (error) {
        this.error = undefined;
        waiting.reject(error);
      } else {
        waiting.resolve({ value: undefined, done: true });
      }
    }
  }

  private finishCurrent(): void {
    if (this.current) {
      const entry = this.current;
      this.current = undefined;
      this.owner.release(entry);
    }
  }

  private leave(): void {
    if (this.left) return;
    this.left = true;
    const unyielded = this.buffer.splice(0);
    if (this.waiting) {
      this.waiting.resolve({ value: undefined, done: true });
      this.waiting = undefined;
    }
    this.owner.detach(this, unyielded);
  }
}

/** Keeps one stream's last seq: drops duplicates, spots gaps. */
export class SeqTracker {
  constructor(public last: number | undefined = undefined) {}

  /** What to do with a message of seq `seq`; `"new"` moves the position. */
  accept(seq: number): 'new' | 'duplicate' | 'gap' {
    if (this.last !== undefined) {
      if (seq <= this.last) return 'duplicate';
      if (seq > this.last + 1) return 'gap';
    }
    this.last = seq;
    return 'new';
  }
}
