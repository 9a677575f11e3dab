import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Backoff, EdgepushClient } from '../../src/index.js';
import { FakeSocket, NODES, settle } from '../support/fakes.js';
import { seqs, start } from '../support/helpers.js';

describe('state machine', () => {
  it('goes disconnected -> connecting -> connected on hello, and back on disconnect()', async () => {
    const h = await start();
    assert.equal(h.client.state, 'connecting');
    FakeSocket.last.hello('alice', 'c1');
    assert.equal(h.client.state, 'connected');
    assert.equal(h.client.connId, 'c1');
    assert.equal(h.client.userId, 'alice');
    assert.equal(h.client.node, NODES[0]);
    h.client.disconnect();
    assert.deepEqual(
      h.states.map((s) => s.state),
      ['connecting', 'connected', 'disconnected'],
    );
    assert.deepEqual(FakeSocket.last.closedByClient, { code: 1000, reason: 'client closed' });
    await h.timers.advance(60_000);
    assert.equal(FakeSocket.all.length, 1, 'no reconnect after disconnect()');
  });

  it('puts the token in ?token= and no after on the first connect', async () => {
    await start({ token: 'abc.def' });
    assert.equal(FakeSocket.last.token, 'abc.def');
    assert.equal(FakeSocket.last.after, null);
  });

  it('refuses bad options', () => {
    assert.throws(() => new EdgepushClient({ nodes: [], token: 't', WebSocket: FakeSocket }), /at least one node/);
    assert.throws(() => new EdgepushClient({ nodes: ['http://x/ws'], token: 't', WebSocket: FakeSocket }), /ws:\/\//);
    assert.throws(() => new EdgepushClient({ nodes: NODES, WebSocket: FakeSocket }), /token/);
  });
});

describe('seq, duplicates and gaps', () => {
  it('delivers each seq once, in order, and drops duplicates', async () => {
    const h = await start();
    const ws = FakeSocket.last;
    ws.hello();
    for (const seq of [1, 2, 2, 3, 1, 3]) ws.msg(seq);
    assert.deepEqual(seqs(h.messages), [1, 2, 3]);
    assert.equal(h.client.stats.duplicatesDropped, 3);
    assert.equal(h.client.lastSeq, 3);
  });

  it('resumes with after=<last seq> on every reconnect, and drops the overlap of the replay', async () => {
    const h = await start();
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.msg(2);
    FakeSocket.last.serverClose(1011, 'store unavailable');
    assert.equal(h.client.state, 'connecting');
    await h.timers.advance(100);
    const second = FakeSocket.last;
    assert.equal(FakeSocket.all.length, 2);
    assert.equal(second.after, '2');
    second.hello();
    second.msg(2); // replay overlaps
    second.msg(3);
    second.serverClose(4008, 'too slow');
    await h.timers.advance(100);
    assert.equal(FakeSocket.last.after, '3');
    assert.deepEqual(seqs(h.messages), [1, 2, 3]);
  });

  it('starts after the configured seq', async () => {
    const h = await start({ after: 41 });
    assert.equal(FakeSocket.last.after, '41');
    FakeSocket.last.hello();
    FakeSocket.last.msg(41);
    FakeSocket.last.msg(42);
    assert.deepEqual(seqs(h.messages), [42]);
  });

  it('reconnects to the same node with after=<last> on a gap, without delivering past it', async () => {
    const h = await start();
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.msg(3);
    assert.deepEqual(seqs(h.messages), [1]);
    assert.equal(FakeSocket.last.closedByClient?.reason, 'gap');
    assert.equal(h.errors[0]?.code, 'gap');
    await h.timers.advance(200);
    const next = FakeSocket.last;
    assert.equal(FakeSocket.all.length, 2);
    assert.equal(next.node, NODES[0]);
    assert.equal(next.after, '1');
    next.hello();
    next.msg(2);
    next.msg(3);
    assert.deepEqual(seqs(h.messages), [1, 2, 3]);
    assert.equal(h.client.stats.gaps, 1);
  });

  it('reconnects elsewhere on a malformed frame, and passes frames outside the protocol on as `frame`', async () => {
    const h = await start();
    const frames: unknown[] = [];
    h.client.on('frame', (f) => frames.push(f));
    FakeSocket.last.hello();
    FakeSocket.last.text('plain text from the push API');
    FakeSocket.last.text({ type: 'business', x: 1 });
    assert.equal(frames.length, 2);
    assert.equal(h.client.state, 'connected');
    FakeSocket.last.text({ type: 'msg', seq: 'one', id: 'x', data: 1 });
    assert.equal(h.client.state, 'connecting');
    assert.equal(h.client.stats.malformed, 1);
    await h.timers.advance(200);
    assert.equal(FakeSocket.last.node, NODES[1]);
  });
});

describe('close codes', () => {
  for (const [code, moves] of [
    [1012, true],
    [1001, true],
    [1006, true],
    [1011, false],
    [4008, false],
    [1000, false],
  ] as const) {
    it(`close ${code} ${moves ? 'moves to the other node' : 'stays on the node'}`, async () => {
      const h = await start();
      FakeSocket.last.hello();
      FakeSocket.last.msg(1);
      FakeSocket.last.serverClose(code, 'x');
      const state = h.states[h.states.length - 1]!;
      assert.equal(state.state, 'connecting');
      assert.equal(state.code, code);
      await h.timers.advance(100);
      assert.equal(FakeSocket.all.length, 2);
      assert.equal(FakeSocket.last.node, moves ? NODES[1] : NODES[0]);
      assert.equal(FakeSocket.last.after, '1');
    });
  }

  for (const [code, error] of [
    [1008, 'protocol_violation'],
    [1009, 'frame_too_large'],
  ] as const) {
    it(`close ${code} stops the client with the reason surfaced`, async () => {
      const h = await start();
      const it = h.client[Symbol.asyncIterator]();
      FakeSocket.last.hello();
      FakeSocket.last.serverClose(code, 'bad frame');
      assert.equal(h.client.state, 'disconnected');
      const fatal = h.errors.find((e) => e.fatal);
      assert.ok(fatal, 'a fatal error event');
      assert.equal(fatal.code, error);
      assert.equal(fatal.closeCode, code);
      assert.match(fatal.message, /bad frame/);
      await assert.rejects(it.next(), (e: Error) => e === fatal);
      await h.timers.advance(120_000);
      assert.equal(FakeSocket.all.length, 1, 'no retry');
    });
  }

  it('moves on when an attempt fails before hello, and when hello does not come in time', async () => {
    const h = await start({ connectTimeoutMs: 5000 });
    FakeSocket.last.serverClose(1006);
    assert.equal(h.errors[0]?.code, 'connect_failed');
    await h.timers.advance(100);
    assert.equal(FakeSocket.last.node, NODES[1]);
    await h.timers.advance(5000);
    assert.equal(FakeSocket.all[1]!.closedByClient?.reason, 'connect timeout');
    await h.timers.advance(400);
    assert.equal(FakeSocket.last.node, NODES[0]);
    assert.equal(h.client.stats.connectFailures, 2);
  });
});

describe('backoff', () => {
  it('grows exponentially up to the max, and odd multipliers do not break it', () => {
    const b = new Backoff({ jitter: 'none' });
    assert.deepEqual([0, 1, 3, 20, 1e9].map((f) => b.bound(f)), [100, 200, 800, 10_000, 10_000]);
    for (const multiplier of [NaN, Infinity, -3, 0, 1e300]) {
      const odd = new Backoff({ multiplier });
      assert.ok(odd.bound(50) <= odd.maxMs && odd.delay(50) <= odd.maxMs, String(multiplier));
    }
  });

  it('draws full jitter uniformly below the bound', () => {
    const draws = [0, 0.25, 0.999];
    const b = new Backoff({}, () => draws.shift()!);
    assert.deepEqual([b.delay(3), b.delay(3), b.delay(3)], [0, 200, 799.2]);
    const random = new Backoff();
    for (let f = 0; f < 12; f++) {
      const d = random.delay(f);
      assert.ok(d >= 0 && d <= random.bound(f));
    }
  });

  it('waits longer after each failed attempt and resets after a connection that delivered', async () => {
    const h = await start();
    const reconnectDelays = () => h.timers.delays.filter((d) => d !== 10_000 && d !== 1000);
    for (let i = 0; i < 4; i++) {
      FakeSocket.last.serverClose(1006);
      await h.timers.advance(10_000);
    }
    assert.deepEqual(reconnectDelays(), [100, 200, 400, 800]);
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.serverClose(1012);
    await h.timers.advance(10_000);
    assert.equal(reconnectDelays().at(-1), 100, 'reset by a healthy connection');
    FakeSocket.last.hello();
    FakeSocket.last.serverClose(1011);
    assert.equal(reconnectDelays().at(-1), 200, 'a connection that delivered nothing and was short does not reset');
  });

  it('spreads clients over the nodes from a random start', async () => {
    const seen = new Set<string>();
    for (const r of [0, 0.6]) {
      FakeSocket.reset();
      const client = new EdgepushClient({ nodes: NODES, token: 't', WebSocket: FakeSocket, random: () => r });
      client.connect();
      await settle();
      seen.add(FakeSocket.last.node);
      client.disconnect();
    }
    assert.equal(seen.size, 2);
  });
});
