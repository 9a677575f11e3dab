/**
 * Debian's Chromium driven by playwright-core (no browser download):
 * `CHROMIUM_BIN` or /usr/bin/chromium, with the flags that work on these
 * machines. A missing Chromium fails loudly: the browser tests are never
 * skipped.
 */
import { existsSync } from 'node:fs';

import { type Browser, chromium } from 'playwright-core';

export function chromiumPath(): string {
  const path = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
  if (!existsSync(path)) {
    throw new Error(`no Chromium at ${path}: apt-get install chromium (scripts/test does), or set CHROMIUM_BIN`);
  }
  return path;
}

export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}
