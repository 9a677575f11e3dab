/**
 * The managed edge (an API Gateway WebSocket API in front of
 * `functions/connections`), played by a fake socket that behaves as that
 * path does (docs/protocol.md, "Managed edge"): nothing before the client
 * speaks, `hello` and the replay after its `resume`, `resumed` with `more`
 * per page, live posts that may overtake each other, and `close` frames.
 * The real handlers are tested with the Rust client in
 * functions/connections/tests/client.rs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { FakeSocket } from '../support/fakes.js';
import { seqs, start } from '../support/helpers.js';

const resumes = (ws: FakeSocket): Array<number | undefined> =>
  ws.sent.filter((f): f is { type: 'resume'; after?: number } => (f as { type?: string }).type === 'resume').map((f) => f.after);

describe('managed edge', () => {
  it('resumes first, pages the replay, orders crossing posts and asks for a lost one', async () => {
    const h = await start({ managed: { gapWaitMs: 500 }, after: 10, ack: 'each' });
    const ws = FakeSocket.last;
    ws.open();
    // The client speaks first, from where it is.
    assert.deepEqual(resumes(ws), [10]);
    ws.hello('kim', 'KimC0nn=');
    assert.equal(h.client.state, 'connected');
    // A page of the replay, then `more`: it asks again after its last seq.
    for (let seq = 11; seq <= 13; seq++) ws.msg(seq);
    ws.text({ type: 'resumed', after: 10, through: 13, more: true });
    assert.deepEqual(resumes(ws), [10, 13]);
    // A live post overtakes the rest of the replay: held, not a gap.
    ws.msg(16);
    ws.msg(14);
    ws.msg(15);
    ws.text({ type: 'resumed', after: 13, through: 15, more: false });
    assert.deepEqual(seqs(h.messages), [11, 12, 13, 14, 15, 16]);
    // Two live posts crossing: 18 lands before 17.
    ws.msg(18);
    await h.timers.advance(100);
    ws.msg(17);
    assert.deepEqual(seqs(h.messages).slice(-2), [17, 18]);
    assert.deepEqual(resumes(ws), [10, 13], 'a late post is no gap');
    // A lost post: 19 never comes; after the gap wait the client asks for it.
    ws.msg(20);
    await h.timers.advance(499);
    assert.deepEqual(resumes(ws), [10, 13]);
    await h.timers.advance(1);
    assert.deepEqual(resumes(ws), [10, 13, 18]);
    ws.msg(19);
    ws.msg(20); // the replay repeats what the client held
    ws.text({ type: 'resumed', after: 18, through: 20, more: false });
    assert.deepEqual(seqs(h.messages), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    assert.equal(h.client.stats.gaps, 1);
    assert.equal(FakeSocket.all.length, 1, 'no reconnect on the managed edge');
    assert.deepEqual(ws.acks().slice(-1), [20]);
  });

  it('without a position, the first resumed names where the stream starts', async () => {
    const h = await start({ managed: true });
    const ws = FakeSocket.last;
    ws.open();
    assert.deepEqual(resumes(ws), [undefined]);
    ws.hello();
    ws.msg(43); // live, ahead of the replay
    ws.msg(41);
    ws.msg(42);
    assert.deepEqual(seqs(h.messages), []);
    ws.text({ type: 'resumed', after: 40, through: 42, more: false });
    assert.deepEqual(seqs(h.messages), [41, 42, 43]);
  });

  it('treats a close frame as the close code and resumes after its last seq', async () => {
    const h = await start({ managed: true, getToken: () => 'fresh' });
    const ws = FakeSocket.last;
    ws.hello();
    ws.msg(1);
    ws.text({ type: 'resumed', after: 0, through: 1, more: false });
    ws.text({ type: 'close', code: 4001, reason: 'token expired' });
    assert.equal(h.client.state, 'connecting');
    assert.equal(h.states.at(-1)?.code, 4001);
    await h.timers.advance(100);
    const next = FakeSocket.last;
    assert.notEqual(next, ws);
    next.open();
    assert.deepEqual(resumes(next), [1]);
    assert.equal(next.after, '1');
  });

  it('pings, and leaves the frames of edge nodes alone when not managed', async () => {
    const h = await start({ managed: { pingEveryMs: 60_000 } });
    const ws = FakeSocket.last;
    ws.hello();
    ws.text({ type: 'resumed', after: 0, through: 0, more: false });
    await h.timers.advance(60_000);
    assert.equal(ws.sent.filter((f) => (f as { type?: string }).type === 'ping').length, 1);
    ws.text({ type: 'pong' });
    assert.equal(h.client.state, 'connected');
    // A resume nobody answers gives the connection up.
    ws.msg(3);
    await h.timers.advance(1000);
    assert.deepEqual(resumes(ws), [undefined, 0]);
    await h.timers.advance(30_000);
    assert.equal(h.client.state, 'connecting');
    assert.equal(h.states.at(-1)?.reason, 'resume unanswered');

    const edge = await start();
    const frames: unknown[] = [];
    edge.client.on('frame', (f) => frames.push(f));
    FakeSocket.last.hello();
    FakeSocket.last.text({ type: 'close', code: 4001 });
    assert.equal(edge.client.state, 'connected', 'a posted frame, not a close');
    assert.equal(frames.length, 1);
    assert.deepEqual(FakeSocket.last.sent, []);
  });
});
