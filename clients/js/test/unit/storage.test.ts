import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { FakeSocket, jwt, MapStorage, settle } from '../support/fakes.js';
import { seqs, start } from '../support/helpers.js';

const alice = jwt({ sub: 'alice' });

describe('stored positions', () => {
  it('stores the handled position under the user key and a new client resumes after it', async () => {
    const storage = new MapStorage();
    const h = await start({ token: alice, storage });
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.msg(2);
    await settle();
    assert.deepEqual(JSON.parse(storage.map.get('edgepush:alice')!), { v: 1, user: 'alice', seq: 2, topics: {} });
    assert.equal(storage.writes, 1, 'a burst is written once');
    h.client.disconnect();

    const reopened = await start({ token: alice, storage });
    assert.equal(FakeSocket.last.after, '2');
    FakeSocket.last.hello();
    assert.deepEqual(FakeSocket.last.acks(), [2], 'tells the node what this page already handled');
    FakeSocket.last.msg(3);
    assert.deepEqual(seqs(reopened.messages), [3]);
  });

  it('stores only what the application handled, not what was received', async () => {
    const storage = new MapStorage();
    const h = await start({ token: alice, storage }, false);
    const it = h.client[Symbol.asyncIterator]();
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.msg(2);
    await it.next();
    await it.next();
    await settle();
    assert.equal(JSON.parse(storage.map.get('edgepush:alice')!).seq, 1);
  });

  it("does not use another user's position, nor a corrupt value", async () => {
    const storage = new MapStorage();
    storage.map.set('edgepush:bob', JSON.stringify({ v: 1, user: 'bob', seq: 9, topics: {} }));
    await start({ token: jwt({ sub: 'bob' }), storage, storageKey: 'shared' });
    assert.equal(FakeSocket.last.after, null);
    storage.map.set('shared', JSON.stringify({ v: 1, user: 'carol', seq: 9, topics: {} }));
    await start({ token: jwt({ sub: 'bob' }), storage, storageKey: 'shared' });
    assert.equal(FakeSocket.last.after, null, 'carol\'s position is not bob\'s');
    storage.map.set('edgepush:bob', '{not json');
    await start({ token: jwt({ sub: 'bob' }), storage });
    assert.equal(FakeSocket.last.after, null);
  });

  it('works with an async storage, and an explicit after wins', async () => {
    const map = new Map<string, string>([['edgepush:alice', JSON.stringify({ v: 1, user: 'alice', seq: 5, topics: {} })]]);
    const storage = {
      getItem: async (k: string) => map.get(k) ?? null,
      setItem: async (k: string, v: string) => void map.set(k, v),
    };
    await start({ token: alice, storage });
    assert.equal(FakeSocket.last.after, '5');
    await start({ token: alice, storage, after: 2 });
    assert.equal(FakeSocket.last.after, '2');
  });

  it('reports a storage that throws and keeps delivering', async () => {
    const storage = {
      getItem: () => null,
      setItem: () => {
        throw new Error('quota exceeded');
      },
    };
    const h = await start({ token: alice, storage });
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    await settle();
    assert.equal(h.errors[0]?.code, 'storage');
    assert.deepEqual(seqs(h.messages), [1]);
  });

  it('says so when positions cannot be keyed (no sub, no storageKey)', async () => {
    const h = await start({ token: 'opaque', storage: new MapStorage() });
    assert.equal(h.errors[0]?.code, 'storage');
  });
});
