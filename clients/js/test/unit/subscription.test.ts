/**
 * Subscriptions against the topics contract (issue 10): subscribe with
 * `after`, `subscribed` with the latest seq, `msg` frames with `topic`,
 * error frames naming the topic, `unsubscribe`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Message, SubscriptionState } from '../../src/index.js';
import { FakeSocket, jwt, MapStorage, settle } from '../support/fakes.js';
import { seqs, start } from '../support/helpers.js';

type Frame = Record<string, unknown>;
const framesOf = (ws: FakeSocket, type: string) => ws.sent.filter((f) => (f as Frame).type === type) as Frame[];

describe('subscriptions', () => {
  it('subscribes once connected, delivers the topic in order once, and resubscribes with after on reconnect', async () => {
    const h = await start();
    const sub = h.client.newSubscription('news:sports');
    const got: Message[] = [];
    const states: SubscriptionState[] = [];
    sub.on('message', (m) => got.push(m));
    sub.on('state', (s) => states.push(s.state));
    sub.subscribe();
    assert.equal(sub.state, 'subscribing');
    assert.equal(FakeSocket.last.sent.length, 0, 'nothing sent before hello');
    FakeSocket.last.hello();
    await settle();
    assert.deepEqual(framesOf(FakeSocket.last, 'subscribe'), [{ type: 'subscribe', topic: 'news:sports' }]);
    FakeSocket.last.text({ type: 'subscribed', topic: 'news:sports', seq: 5 });
    assert.equal(sub.state, 'subscribed');
    for (const seq of [6, 7, 7, 5]) FakeSocket.last.msg(seq, {}, 'news:sports');
    assert.deepEqual(seqs(got), [6, 7]);
    assert.deepEqual(h.messages, [], 'topic messages with a subscription object go to it, not to the client');

    FakeSocket.last.serverClose(1012);
    assert.equal(sub.state, 'subscribing');
    await h.timers.advance(100);
    FakeSocket.last.hello();
    await settle();
    assert.deepEqual(framesOf(FakeSocket.last, 'subscribe'), [{ type: 'subscribe', topic: 'news:sports', after: 7 }]);
    FakeSocket.last.msg(7, {}, 'news:sports');
    FakeSocket.last.msg(8, {}, 'news:sports');
    FakeSocket.last.text({ type: 'subscribed', topic: 'news:sports', seq: 8 });
    assert.deepEqual(seqs(got), [6, 7, 8]);
    assert.deepEqual(states, ['subscribing', 'subscribed', 'subscribing', 'subscribed']);
  });

  it('starts after an explicit position, and sends a subscribe token', async () => {
    const h = await start();
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('room:1', { after: 10, getToken: async () => 'sub-token' });
    sub.subscribe();
    await settle();
    assert.deepEqual(framesOf(FakeSocket.last, 'subscribe'), [{ type: 'subscribe', topic: 'room:1', after: 10, token: 'sub-token' }]);
  });

  it('a refusal goes back to unsubscribed with an error, and the connection stays up', async () => {
    const h = await start();
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('secret');
    const errors: string[] = [];
    sub.on('error', (e) => errors.push(`${e.code} ${e.topic} ${e.message}`));
    sub.subscribe();
    await settle();
    FakeSocket.last.text({ type: 'error', topic: 'secret', code: 'forbidden', message: 'no permission' });
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(errors, ['subscription_refused secret secret: no permission']);
    assert.equal(h.client.state, 'connected');
    FakeSocket.last.serverClose(1012);
    await h.timers.advance(100);
    FakeSocket.last.hello();
    await settle();
    assert.deepEqual(framesOf(FakeSocket.last, 'subscribe'), [], 'a refused subscription is not retried by itself');
  });

  it('unsubscribe sends the frame and drops what is still in flight', async () => {
    const h = await start();
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('t');
    const got: Message[] = [];
    sub.on('message', (m) => got.push(m));
    sub.subscribe();
    await settle();
    FakeSocket.last.msg(1, {}, 't');
    sub.unsubscribe();
    FakeSocket.last.msg(2, {}, 't');
    assert.deepEqual(framesOf(FakeSocket.last, 'unsubscribe'), [{ type: 'unsubscribe', topic: 't' }]);
    assert.deepEqual(seqs(got), [1]);
    assert.equal(sub.state, 'unsubscribed');
  });

  it('refuses bad topic names and a second object for one topic', async () => {
    const h = await start();
    for (const bad of ['', 'a b', 'x'.repeat(129), 'é']) assert.throws(() => h.client.newSubscription(bad), /topic name/);
    h.client.newSubscription('ok.topic_1-2:3@4+5=6/7');
    assert.throws(() => h.client.newSubscription('ok.topic_1-2:3@4+5=6/7'), /exists/);
  });

  it('a gap in a topic makes the client reconnect and resubscribe after the last seq', async () => {
    const h = await start();
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('t');
    const got: Message[] = [];
    sub.on('message', (m) => got.push(m));
    sub.subscribe();
    await settle();
    FakeSocket.last.msg(1, {}, 't');
    FakeSocket.last.msg(3, {}, 't');
    assert.equal(h.errors[0]?.code, 'gap');
    await h.timers.advance(100);
    FakeSocket.last.hello();
    await settle();
    assert.deepEqual(framesOf(FakeSocket.last, 'subscribe'), [{ type: 'subscribe', topic: 't', after: 1 }]);
    assert.deepEqual(seqs(got), [1]);
  });

  it('topics subscribed by the token (no object) come as client messages, deduplicated per topic', async () => {
    const h = await start();
    FakeSocket.last.hello();
    FakeSocket.last.msg(1, {}, 'a');
    FakeSocket.last.msg(1, {}, 'b');
    FakeSocket.last.msg(1, {}, 'a');
    FakeSocket.last.msg(1);
    assert.deepEqual(
      h.messages.map((m) => `${m.topic ?? '-'}:${m.seq}`),
      ['a:1', 'b:1', '-:1'],
    );
  });

  it('stores topic positions and resumes a new page subscription after them', async () => {
    const storage = new MapStorage();
    const token = jwt({ sub: 'alice' });
    const h = await start({ token, storage });
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('t');
    sub.on('message', () => {});
    sub.subscribe();
    await settle();
    FakeSocket.last.msg(4, {}, 't');
    await settle();
    assert.deepEqual(JSON.parse(storage.map.get('edgepush:alice')!).topics, { t: 4 });
    h.client.disconnect();

    const again = await start({ token, storage });
    const resumed = again.client.newSubscription('t');
    resumed.subscribe();
    FakeSocket.last.hello();
    await settle();
    assert.deepEqual(framesOf(FakeSocket.last, 'subscribe'), [{ type: 'subscribe', topic: 't', after: 4 }]);
  });

  it('resumes the topics the node subscribes it to (token topics, broadcast) on every reconnect', async () => {
    const storage = new MapStorage();
    const token = jwt({ sub: 'alice' });
    const h = await start({ token, storage });
    assert.deepEqual(FakeSocket.last.resume, {}, 'nothing known yet');
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('mine');
    sub.subscribe();
    await settle();
    FakeSocket.last.msg(3, {}, 'from-token');
    FakeSocket.last.msg(9, {}, '$broadcast');
    FakeSocket.last.msg(2, {}, 'mine');
    await settle();
    FakeSocket.last.serverClose(1012);
    await h.timers.advance(100);
    assert.deepEqual(FakeSocket.last.resume, { 'from-token': 3, $broadcast: 9 }, 'a subscription object resubscribes with after instead');
    FakeSocket.last.hello();
    // A broadcast missed while away comes first (the node replays it), then live ones: no gap.
    FakeSocket.last.msg(10, {}, '$broadcast');
    FakeSocket.last.msg(11, {}, '$broadcast');
    await settle();
    assert.equal(h.client.stats.gaps, 0);
    assert.deepEqual(
      h.messages.filter((m) => m.topic === '$broadcast').map((m) => m.seq),
      [9, 10, 11],
    );
    // An error about the token's topics or `resume` is no subscription's.
    FakeSocket.last.text({ type: 'error', op: 'connect', topic: 'mine', code: 'not_subscribed', message: 'x' });
    assert.equal(sub.state, 'subscribing');
    h.client.disconnect();

    // A new client (a reload) resumes broadcast from the stored position.
    const again = await start({ token, storage });
    assert.deepEqual(FakeSocket.last.resume, { $broadcast: 11 });
    again.client.disconnect();
  });

  it('iterates a subscription', async () => {
    const h = await start();
    FakeSocket.last.hello();
    const sub = h.client.newSubscription('t');
    sub.subscribe();
    await settle();
    const it = sub[Symbol.asyncIterator]();
    FakeSocket.last.msg(1, 'x', 't');
    assert.deepEqual((await it.next()).value, { seq: 1, id: 'id-t-1', data: 'x', topic: 't' });
  });
});
