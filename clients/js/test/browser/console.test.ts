/**
 * The demo console in a real Chromium against a real dev mode whose nodes
 * are processes: it connects, shows messages sent through collect,
 * survives a SIGKILL of the node it is on with every message shown exactly
 * once, and resumes after a reload from the acked position (stored in
 * localStorage, or acked to the node).
 *
 * EDGEPUSH_CONSOLE_SCREENSHOT=<path> saves a screenshot of the console
 * with messages (docs/demo-console.png was made so).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { Browser, Page } from 'playwright-core';

import { type DevMode, startDevMode, uniqueUser } from '../support/devmode.js';
import { launch } from '../support/browser.js';
import { until } from '../support/wait.js';

interface Row {
  seq: number;
  topic: string;
  duplicate: boolean;
}

async function rows(page: Page): Promise<Row[]> {
  return page.$$eval('#messages tbody tr', (trs) =>
    trs.map((tr) => ({
      seq: Number((tr as HTMLElement).dataset.seq),
      topic: (tr as HTMLElement).dataset.topic ?? '',
      duplicate: tr.classList.contains('duplicate'),
    })),
  );
}

/** Seqs shown, oldest first (the page lists the newest on top). */
async function shownSeqs(page: Page): Promise<number[]> {
  return (await rows(page)).map((r) => r.seq).reverse();
}

async function shown(page: Page, count: number, what: string): Promise<void> {
  await until(() => rows(page).then((r) => r.length), (n) => n >= count, `${count} rows on the page (${what})`);
}

/**
 * The page's client state; `none` until console.js has run: it is a module
 * with a top-level `await` (its config), which the `load` that
 * `page.goto` waits for does not wait for.
 */
async function state(page: Page): Promise<{ state: string; node: string | undefined }> {
  return page.evaluate(() => {
    const client = (window as unknown as { edgepushConsole?: { client?: { state: string; node?: string } } }).edgepushConsole?.client;
    return { state: client?.state ?? 'none', node: client?.node };
  });
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('demo console in Chromium', () => {
  let dev: DevMode;
  let browser: Browser;
  before(async () => {
    dev = await startDevMode({ nodeProcesses: true });
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await dev?.stop();
  });

  async function send(user: string, from: number, to: number): Promise<void> {
    for (let n = from; n <= to; n++) assert.equal(await dev.send(user, { text: `message ${n}` }), n);
  }

  async function open(page: Page, user: string, remember = true): Promise<void> {
    await page.goto(`${dev.console}?user=${encodeURIComponent(user)}&connect=1${remember ? '' : '&remember=0'}`);
    await until(() => state(page), (s) => s.state === 'connected', 'the page to connect');
  }

  it('connects, shows messages sent through collect, survives a SIGKILL of its node with each message once, and resumes after a reload', async () => {
    const user = uniqueUser('page');
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    try {
      await open(page, user);
      assert.equal(await page.textContent('#status'), 'connected');
      await send(user, 1, 3);
      await shown(page, 3, 'first messages');
      assert.deepEqual(await shownSeqs(page), [1, 2, 3]);

      // SIGKILL the node the page is on; send while it reconnects.
      const victim = (await state(page)).node!;
      const nodes = await until(() => dev.nodeStatus(), (ns) => ns.every((n) => n.up && n.pid), 'both nodes up');
      const pid = nodes.find((n) => n.ws === victim)!.pid!;
      process.kill(pid, 'SIGKILL');
      await send(user, 4, 8);
      await until(() => state(page), (s) => s.state === 'connected' && s.node !== victim, 'the page on the surviving node');
      await send(user, 9, 10);
      await shown(page, 10, 'after the kill');
      const afterKill = await rows(page);
      assert.deepEqual(afterKill.map((r) => r.seq).reverse(), range(1, 10), 'every message shown once, in order');
      assert.equal(afterKill.filter((r) => r.duplicate).length, 0);
      await until(() => page.textContent('#log'), (log) => (log ?? '').includes('connecting'), 'the log to show the reconnect');
      if (process.env.EDGEPUSH_CONSOLE_SCREENSHOT) {
        // Let the node table show both nodes again with their rates.
        await until(() => dev.nodeStatus(), (ns) => ns.every((n) => n.up), 'the killed node to be restarted');
        await page.waitForTimeout(2500);
        await page.screenshot({ path: process.env.EDGEPUSH_CONSOLE_SCREENSHOT, fullPage: true });
      }

      // Reload: the page resumes after what it showed (stored in localStorage).
      await page.reload();
      await until(() => state(page), (s) => s.state === 'connected', 'the reloaded page to connect');
      assert.equal(await page.textContent('#resumed'), 'seq 10');
      await send(user, 11, 12);
      await shown(page, 2, 'after the reload');
      assert.deepEqual(await shownSeqs(page), [11, 12], 'nothing before the stored position comes again');
      assert.deepEqual(pageErrors, []);
    } finally {
      await context.close();
    }
  });

  it('without localStorage, a reload resumes from the position acked to the node', async () => {
    const user = uniqueUser('acked-page');
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      await open(page, user, false);
      await send(user, 1, 4);
      await shown(page, 4, 'before the reload');
      await page.click('#disconnect'); // acks what the page showed
      // Where a connection without `after` starts is what the store holds
      // for this user: a probe connection (no `after`, no acks) names it by
      // the first message replayed to it once message 5 exists. (A node-wide
      // ack-write counter moved for other users' acks too.)
      await send(user, 5, 5);
      await until(() => firstReplayed(page, user), (seq) => seq === 5, 'the node to store the ack of seq 4');
      await page.reload();
      await page.evaluate(() => localStorage.clear());
      await open(page, user, false);
      assert.equal(await page.textContent('#resumed'), 'the position the node has acked');
      await send(user, 6, 6);
      await shown(page, 2, 'after the reload');
      assert.deepEqual(await shownSeqs(page), [5, 6]);
    } finally {
      await context.close();
    }
  });

  /**
   * Opens a WebSocket from the page as `user` without `after` and returns
   * the seq of the first message the node replays to it (it sends no ack,
   * so it moves nothing).
   */
  async function firstReplayed(page: Page, user: string): Promise<number> {
    const url = `${dev.nodes[0]}?token=${encodeURIComponent(await dev.token(user))}`;
    return page.evaluate(
      (url) =>
        new Promise<number>((resolve, reject) => {
          const ws = new WebSocket(url);
          ws.onmessage = (event) => {
            const frame = JSON.parse(String(event.data)) as { type?: string; seq?: number };
            if (frame.type === 'msg' && typeof frame.seq === 'number') {
              ws.close();
              resolve(frame.seq);
            }
          };
          ws.onclose = (event) => reject(new Error(`probe closed with ${event.code} before a message`));
        }),
      url,
    );
  }

});
