/**
 * The client against a real dev mode (`edgepush-dev`): resume after a
 * reconnect, acks and stored positions surviving a restart of the client,
 * 1012 moving to the other node, a SIGKILLed node, a refused token; topics
 * (subscribe, replay after a reconnect, a refusal) and broadcast.
 *
 * Run with `npm run test:node` (Node 20 needs --experimental-websocket for
 * globalThis.WebSocket); the node-process tests need the Redis and MongoDB
 * that scripts/test starts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { EdgepushClient, type EdgepushError, type Message, type StateEvent } from '../../src/index.js';
import { type DevMode, startDevMode, uniqueUser } from '../support/devmode.js';
import { until } from '../support/wait.js';

interface Watched {
  client: EdgepushClient;
  messages: Message[];
  states: StateEvent[];
  errors: EdgepushError[];
}

function watch(client: EdgepushClient): Watched {
  const w: Watched = { client, messages: [], states: [], errors: [] };
  client.on('message', (m) => w.messages.push(m));
  client.on('state', (s) => w.states.push(s));
  client.on('error', (e) => w.errors.push(e));
  return w;
}

const seqs = (w: Watched) => w.messages.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function received(w: Watched, count: number, what: string): Promise<void> {
  await until(() => w.messages.length, (n) => n >= count, `${count} messages (${what})`);
}

async function sendAll(dev: DevMode, user: string, from: number, to: number): Promise<void> {
  for (let n = from; n <= to; n++) assert.equal(await dev.send(user, { n }), n, 'collect gives seqs in order');
}

describe('against dev mode (in-memory stores)', () => {
  let dev: DevMode;
  before(async () => {
    dev = await startDevMode();
  });
  after(async () => {
    await dev?.stop();
  });

  it('resumes after a reconnect with what was sent while away, each once, in order', async () => {
    const user = uniqueUser('resume');
    const token = await dev.token(user);
    const w = watch(new EdgepushClient({ nodes: dev.nodes, token }));
    w.client.connect();
    await w.client.ready();
    await sendAll(dev, user, 1, 3);
    await received(w, 3, 'before the reconnect');
    w.client.disconnect();
    await sendAll(dev, user, 4, 6);
    w.client.connect();
    await received(w, 6, 'after the reconnect');
    await sendAll(dev, user, 7, 7);
    await received(w, 7, 'live after the replay');
    w.client.disconnect();
    assert.deepEqual(seqs(w), range(1, 7));
    assert.equal(w.client.stats.reconnects, 1);
  });

  it('acks survive a restart of the client: a new client without a position starts after the acked seq', async () => {
    const user = uniqueUser('acked');
    const token = await dev.token(user);
    const first = watch(new EdgepushClient({ nodes: dev.nodes, token, firstNode: 0 }));
    first.client.connect();
    await first.client.ready();
    await sendAll(dev, user, 1, 5);
    await received(first, 5, 'first client');
    const written = async () => (await dev.nodeStatus()).reduce((sum, n) => sum + (n.figures?.ack_writes_total ?? 0), 0);
    const writesBefore = await written();
    first.client.disconnect(); // sends the ack of 5
    // The node coalesces acks into at most one store write a second: wait
    // for that write, as a restarted page that came back sooner would get
    // 1..5 again.
    await until(written, (writes) => writes > writesBefore, 'the node to write the ack');
    await sendAll(dev, user, 6, 7);
    const second = watch(new EdgepushClient({ nodes: dev.nodes, token, firstNode: 1 }));
    second.client.connect();
    await received(second, 2, 'second client');
    second.client.disconnect();
    assert.deepEqual(seqs(second), [6, 7], 'starts after the acked seq, nothing before it');
    assert.equal(first.client.stats.acksSent > 0, true);
  });

  it('replaces a token the node refuses with a fresh one from getToken', async () => {
    const user = uniqueUser('token');
    let calls = 0;
    const w = watch(
      new EdgepushClient({
        nodes: dev.nodes,
        getToken: async () => {
          calls += 1;
          return calls === 1 ? 'not-a-jwt' : dev.token(user);
        },
        backoff: { initialMs: 50, maxMs: 200 },
      }),
    );
    w.client.connect();
    await w.client.ready();
    assert.ok(calls >= 2, 'the refused token was replaced');
    assert.ok(w.errors.some((e) => e.code === 'connect_failed'));
    await sendAll(dev, user, 1, 1);
    await received(w, 1, 'after the fresh token');
    w.client.disconnect();
  });
});

describe('topics against dev mode (in-memory stores)', () => {
  let dev: DevMode;
  before(async () => {
    dev = await startDevMode();
  });
  after(async () => {
    await dev?.stop();
  });

  it('subscribes to a topic, and after a reconnect gets what was published while away once, in order', async () => {
    const user = uniqueUser('topic');
    const topic = `room-${user}`;
    const w = watch(new EdgepushClient({ nodes: dev.nodes, token: await dev.token(user) }));
    const sub = w.client.newSubscription(topic);
    const got: Message[] = [];
    sub.on('message', (m) => got.push(m));
    sub.subscribe();
    w.client.connect();
    await until(() => sub.state, (s) => s === 'subscribed', 'the subscription');
    const publish = async (from: number, to: number) => {
      for (let n = from; n <= to; n++) assert.equal(await dev.publish(topic, { n }), n, 'collect gives topic seqs in order');
    };
    await publish(1, 3);
    await until(() => got.length, (n) => n >= 3, '3 topic messages');
    w.client.disconnect();
    await publish(4, 6);
    w.client.connect();
    await until(() => got.length, (n) => n >= 6, 'what was published while away');
    await publish(7, 7);
    await until(() => got.length, (n) => n >= 7, 'a live one after the replay');
    w.client.disconnect();
    assert.deepEqual(seqs({ ...w, messages: got }), range(1, 7));
    assert.ok(got.every((m) => m.topic === topic));
    assert.deepEqual(got.map((m) => (m.data as { n: number }).n), range(1, 7));
    assert.equal(w.messages.length, 0, 'topic messages go to the subscription object');
  });

  it('a refused subscription gets an error and leaves the connection working', async () => {
    const user = uniqueUser('refused');
    const w = watch(new EdgepushClient({ nodes: dev.nodes, token: await dev.token(user) }));
    w.client.connect();
    await w.client.ready();
    const refused = w.client.newSubscription('nowhere:x');
    const errors: EdgepushError[] = [];
    refused.on('error', (e) => errors.push(e));
    refused.subscribe();
    await until(() => errors.length, (n) => n >= 1, 'the refusal');
    assert.equal(refused.state, 'unsubscribed');
    assert.match(errors[0]!.message, /not configured/);
    assert.equal(w.client.state, 'connected');
    await sendAll(dev, user, 1, 1);
    await received(w, 1, 'a message after the refusal');
    w.client.disconnect();
    assert.equal(w.client.stats.reconnects, 0);
  });

  it('receives broadcasts, and after a reconnect those broadcast while away, without a gap', async () => {
    const user = uniqueUser('broadcast');
    const w = watch(new EdgepushClient({ nodes: dev.nodes, token: await dev.token(user) }));
    // A connection's broadcast stream starts (at the latest broadcast)
    // shortly after `hello`, before the subscriptions the client asks for:
    // once a subscription is confirmed, broadcast is in place.
    const barrier = w.client.newSubscription(`barrier-${user}`);
    barrier.subscribe();
    w.client.connect();
    await until(() => barrier.state, (s) => s === 'subscribed', 'the broadcast stream in place');
    const casts = () => w.messages.filter((m) => m.topic === '$broadcast');
    const first = await dev.broadcast({ b: 1 });
    await until(() => casts().length, (n) => n >= 1, 'the first broadcast');
    w.client.disconnect();
    await dev.broadcast({ b: 2 });
    await dev.broadcast({ b: 3 });
    w.client.connect();
    await until(() => casts().length, (n) => n >= 3, 'the broadcasts sent while away');
    await dev.broadcast({ b: 4 });
    await until(() => casts().length, (n) => n >= 4, 'a live broadcast');
    w.client.disconnect();
    assert.deepEqual(casts().map((m) => m.seq), range(first, first + 3));
    assert.equal(w.client.stats.gaps, 0);
    assert.equal(w.client.stats.reconnects, 1, 'one reconnect: the one asked for');
  });
});

describe('against dev mode with node processes (Redis + MongoDB)', () => {
  let dev: DevMode;
  before(async () => {
    dev = await startDevMode({ nodeProcesses: true });
  });
  after(async () => {
    await dev?.stop();
  });

  async function pidOf(ws: string): Promise<number> {
    const nodes = await until(() => dev.nodeStatus(), (ns) => ns.every((n) => n.up && n.pid), 'both nodes up');
    const node = nodes.find((n) => n.ws === ws);
    assert.ok(node?.pid, `a pid for ${ws}`);
    return node.pid;
  }

  it('moves to the other node on 1012 (SIGTERM drains the node) and misses nothing', async () => {
    const user = uniqueUser('drain');
    const w = watch(new EdgepushClient({ nodes: dev.nodes, getToken: () => dev.token(user), firstNode: 0 }));
    w.client.connect();
    await w.client.ready();
    assert.equal(w.client.node, dev.nodes[0]);
    await sendAll(dev, user, 1, 3);
    await received(w, 3, 'before the drain');
    process.kill(await pidOf(dev.nodes[0]!), 'SIGTERM');
    await until(() => w.states.some((s) => s.code === 1012), (seen) => seen, 'the 1012 close');
    await until(() => w.client.state === 'connected' && w.client.node === dev.nodes[1], (ok) => ok, 'a connection on the other node');
    const drain = w.states.find((s) => s.code === 1012)!;
    assert.equal(drain.state, 'connecting');
    const nextConnected = w.states[w.states.indexOf(drain) + 1];
    assert.equal(nextConnected?.node, dev.nodes[1], 'the first attempt after 1012 went to the other node');
    await sendAll(dev, user, 4, 6);
    await received(w, 6, 'after the move');
    w.client.disconnect();
    assert.deepEqual(seqs(w), range(1, 6));
  });

  it('survives a SIGKILL of its node: what was sent meanwhile is replayed on the other node, once, in order', async () => {
    const user = uniqueUser('kill');
    const w = watch(new EdgepushClient({ nodes: dev.nodes, getToken: () => dev.token(user), firstNode: 1 }));
    w.client.connect();
    await w.client.ready();
    const victim = w.client.node!;
    await sendAll(dev, user, 1, 3);
    await received(w, 3, 'before the kill');
    process.kill(await pidOf(victim), 'SIGKILL');
    // Sent while the client finds out and reconnects.
    await sendAll(dev, user, 4, 8);
    await until(() => w.client.state === 'connected' && w.client.node !== victim, (ok) => ok, 'a connection on the surviving node');
    await received(w, 8, 'after the kill');
    await sendAll(dev, user, 9, 10);
    await received(w, 10, 'live after the replay');
    w.client.disconnect();
    assert.deepEqual(seqs(w), range(1, 10));
  });

  it('stored positions survive a killed client process: the next one resumes after what was handled', async () => {
    const user = uniqueUser('stored');
    const token = await dev.token(user);
    const dir = mkdtempSync(join(tmpdir(), 'edgepush-js-'));
    try {
      const file = join(dir, 'positions.json');
      const script = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'client-process.js');
      const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', script, file, token, ...dev.nodes], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      await until(() => out.includes('state connected'), (ok) => ok, 'the client process to connect', () => out.length);
      await sendAll(dev, user, 1, 4);
      await until(() => out.includes('handled 4\n'), (ok) => ok, 'the client process to handle 4', () => out.length);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      await sendAll(dev, user, 5, 6);

      const { FileStorage } = await import('../fixtures/file-storage.js');
      const resumed = watch(new EdgepushClient({ nodes: dev.nodes, token, storage: new FileStorage(file) }));
      resumed.client.connect();
      await received(resumed, 2, 'the restarted client');
      resumed.client.disconnect();
      assert.deepEqual(seqs(resumed), [5, 6]);

      // Control: the killed process never acked, so without the stored
      // position the node replays from the start.
      const fresh = watch(new EdgepushClient({ nodes: dev.nodes, token, ack: { maxMessages: 1000, maxDelayMs: 3_600_000 } }));
      fresh.client.connect();
      await received(fresh, 6, 'a client without a position');
      fresh.client.disconnect();
      assert.deepEqual(seqs(fresh).slice(0, 6), range(1, 6));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
