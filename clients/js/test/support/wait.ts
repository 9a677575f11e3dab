/**
 * Waiting that follows progress, like tests/src/wait.rs `until`: poll
 * `read` until `done(value)`, and give up only when `progress()` (by
 * default the value itself) has not changed for `stallMs`, never after a
 * fixed total time a slower machine could miss.
 */
export async function until<T>(
  read: () => T | Promise<T>,
  done: (value: T) => boolean,
  what: string,
  progress: () => unknown = () => undefined,
  stallMs = 90_000,
): Promise<T> {
  let lastMark = '';
  let lastMove = Date.now();
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    const mark = JSON.stringify([value ?? null, progress() ?? null]);
    if (mark !== lastMark) {
      lastMark = mark;
      lastMove = Date.now();
    } else if (Date.now() - lastMove > stallMs) {
      throw new Error(`gave up waiting for ${what}: nothing moved for ${stallMs} ms (last: ${mark.slice(0, 500)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
