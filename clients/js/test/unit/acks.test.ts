import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { FakeSocket, settle } from '../support/fakes.js';
import { start } from '../support/helpers.js';

describe('acks', () => {
  it('batches: at maxMessages at once, the rest after maxDelayMs', async () => {
    const h = await start({ ack: { maxMessages: 3, maxDelayMs: 1000 } });
    const ws = FakeSocket.last;
    ws.hello();
    for (let seq = 1; seq <= 5; seq++) ws.msg(seq);
    assert.deepEqual(ws.acks(), [3]);
    await h.timers.advance(999);
    assert.deepEqual(ws.acks(), [3]);
    await h.timers.advance(1);
    assert.deepEqual(ws.acks(), [3, 5]);
    assert.equal(h.client.stats.acksSent, 2);
  });

  it('acks each message with ack: "each"', async () => {
    await start({ ack: 'each' });
    const ws = FakeSocket.last;
    ws.hello();
    ws.msg(1);
    ws.msg(2);
    assert.deepEqual(ws.acks(), [1, 2]);
  });

  it('sends what was handled while disconnected at the next hello, and the last ack on disconnect()', async () => {
    const h = await start({ ack: { maxMessages: 100, maxDelayMs: 1000 } });
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.serverClose(1012);
    await h.timers.advance(1000);
    const next = FakeSocket.last;
    assert.equal(FakeSocket.all.length, 2);
    next.hello();
    assert.deepEqual(next.acks(), [1]);
    next.msg(2);
    h.client.disconnect();
    assert.deepEqual(next.acks(), [1, 2]);
  });

  it('acks a message taken by an async iterator only when the loop asks for the next one', async () => {
    const h = await start({ ack: 'each' }, false);
    const it = h.client[Symbol.asyncIterator]();
    const ws = FakeSocket.last;
    ws.hello();
    ws.msg(1);
    ws.msg(2);
    assert.deepEqual(ws.acks(), []);
    assert.equal((await it.next()).value?.seq, 1);
    assert.deepEqual(ws.acks(), [], 'still being handled');
    assert.equal((await it.next()).value?.seq, 2);
    assert.deepEqual(ws.acks(), [1]);
    await it.return?.();
    assert.deepEqual(ws.acks(), [1, 2], 'leaving the loop finishes the last one');
  });

  it('never acks a message nobody consumed: it waits for the first listener', async () => {
    const h = await start({ ack: 'each' }, false);
    const ws = FakeSocket.last;
    ws.hello();
    ws.msg(1);
    ws.msg(2);
    assert.deepEqual(ws.acks(), []);
    const got: number[] = [];
    h.client.on('message', (m) => got.push(m.seq));
    await settle();
    assert.deepEqual(got, [1, 2]);
    assert.deepEqual(ws.acks(), [1, 2]);
  });

  it('gives messages a loop left unread to the next consumer, in order', async () => {
    const h = await start({ ack: 'each' }, false);
    const ws = FakeSocket.last;
    ws.hello();
    const first = h.client[Symbol.asyncIterator]();
    ws.msg(1);
    ws.msg(2);
    ws.msg(3);
    assert.equal((await first.next()).value?.seq, 1);
    await first.return?.();
    assert.deepEqual(ws.acks(), [1]);
    const second = h.client[Symbol.asyncIterator]();
    assert.deepEqual([(await second.next()).value?.seq, (await second.next()).value?.seq], [2, 3]);
    ws.msg(4);
    assert.equal((await second.next()).value?.seq, 4);
    assert.deepEqual(ws.acks(), [1, 2, 3]);
  });

  it('reports a listener that throws and still counts the message as handled', async () => {
    const h = await start({ ack: 'each' });
    h.client.on('message', () => {
      throw new Error('app bug');
    });
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    assert.equal(h.errors[0]?.code, 'listener');
    assert.deepEqual(FakeSocket.last.acks(), [1]);
    assert.equal(h.messages.length, 1, 'the other listeners still ran');
  });

  it('ends iterators after what they hold on disconnect()', async () => {
    const h = await start({}, false);
    const it = h.client[Symbol.asyncIterator]();
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    h.client.disconnect();
    assert.equal((await it.next()).value?.seq, 1);
    assert.equal((await it.next()).done, true);
  });
});
