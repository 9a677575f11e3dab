/**
 * A small typed event emitter: `on(name, listener)` returns a function that
 * removes the listener. A listener that throws never breaks the emitter: the
 * error is handed to `onListenerError` and the other listeners still run.
 */
export type Listener<T> = (event: T) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds a listener; the returned function removes it. */
  on<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(listener as Listener<never>);
    this.listenerAdded(name);
    return () => this.off(name, listener);
  }

  /** Adds a listener that runs once. */
  once<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(name, (event) => {
      off();
      listener(event);
    });
    return off;
  }

  /** Removes a listener. */
  off<K extends keyof Events>(name: K, listener: Listener<Events[K]>): void {
    this.listeners.get(name)?.delete(listener as Listener<never>);
  }

  /** How many listeners `name` has. */
  listenerCount<K extends keyof Events>(name: K): number {
    return this.listeners.get(name)?.size ?? 0;
  }

  /** Calls every listener of `name` with `event`. */
  protected emit<K extends keyof Events>(name: K, event: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(event);
      } catch (error) {
        this.onListenerError(name, error);
      }
    }
  }

  /** Hook: a listener was added (subclasses flush what waited for one). */
  protected listenerAdded(_name: keyof Events): void {}

  /** Hook: a listener threw. */
  protected onListenerError(_name: keyof Events, _error: unknown): void {}
}
