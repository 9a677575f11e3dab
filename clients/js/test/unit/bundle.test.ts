import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

describe('console bundle', () => {
  it('crates/console/assets/edgepush.js is the bundle of the current source (run `npm run bundle` when this fails)', async () => {
    // @ts-expect-error: a plain .mjs script without types.
    const { bundle, bundlePath } = (await import('../../../scripts/bundle.mjs')) as { bundle: () => Promise<string>; bundlePath: string };
    assert.equal(readFileSync(bundlePath, 'utf8'), await bundle());
  });
});
