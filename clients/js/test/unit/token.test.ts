import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { FakeSocket, jwt } from '../support/fakes.js';
import { seqs, start } from '../support/helpers.js';

describe('tokens', () => {
  it('asks getToken before the first connect when no token is given', async () => {
    let calls = 0;
    await start({ token: undefined, getToken: async () => `t${++calls}` });
    assert.equal(calls, 1);
    assert.equal(FakeSocket.last.token, 't1');
  });

  it('gets a fresh token after a close with 4001 and resumes after the last seq', async () => {
    let calls = 0;
    const h = await start({ token: 'old', getToken: () => `fresh${++calls}` });
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.serverClose(4001, 'token expired');
    await h.timers.advance(100);
    assert.equal(calls, 1);
    assert.equal(FakeSocket.last.token, 'fresh1');
    assert.equal(FakeSocket.last.after, '1');
    assert.equal(FakeSocket.last.node, FakeSocket.all[0]!.node, '4001 does not move to another node');
    assert.ok(!h.errors.some((e) => e.fatal));
  });

  it('stops on 4001 with the reason when there is no getToken', async () => {
    const h = await start({ token: 'static' });
    FakeSocket.last.hello();
    FakeSocket.last.serverClose(4001, 'token expired');
    assert.equal(h.client.state, 'disconnected');
    assert.equal(h.errors.at(-1)?.code, 'token_refused');
    assert.equal(h.errors.at(-1)?.fatal, true);
    await h.timers.advance(60_000);
    assert.equal(FakeSocket.all.length, 1);
  });

  it('renews the token and the connection before exp, without losing the position', async () => {
    let n = 0;
    const nowSecs = 1_000; // FakeTimers start at 1,000,000 ms
    const tokens = [jwt({ sub: 'alice', exp: nowSecs + 60 }), jwt({ sub: 'alice', exp: nowSecs + 3600 })];
    const h = await start({ token: undefined, getToken: () => tokens[n++]!, refreshBeforeExpMs: 20_000 });
    assert.equal(FakeSocket.last.token, tokens[0]);
    FakeSocket.last.hello();
    FakeSocket.last.msg(1);
    FakeSocket.last.msg(2);
    await h.timers.advance(39_000);
    assert.equal(FakeSocket.all.length, 1, 'not yet');
    await h.timers.advance(1_000);
    assert.equal(n, 2);
    assert.equal(FakeSocket.all[0]!.closedByClient?.reason, 'token refresh');
    assert.deepEqual(FakeSocket.all[0]!.acks(), [2], 'acked what was handled before leaving');
    const renewed = FakeSocket.last;
    assert.equal(renewed.token, tokens[1]);
    assert.equal(renewed.after, '2');
    renewed.hello();
    renewed.msg(2);
    renewed.msg(3);
    assert.deepEqual(seqs(h.messages), [1, 2, 3]);
  });

  it('reports a failing getToken and retries with backoff', async () => {
    let calls = 0;
    const h = await start({
      token: undefined,
      getToken: async () => {
        calls += 1;
        if (calls < 3) throw new Error('auth server down');
        return 'ok';
      },
    });
    assert.equal(h.errors[0]?.code, 'token_unavailable');
    assert.match(h.errors[0]!.message, /auth server down/);
    await h.timers.advance(100);
    await h.timers.advance(200);
    assert.equal(calls, 3);
    assert.equal(FakeSocket.last.token, 'ok');
  });

  it('asks for a new token when every node refused an attempt in a row (a browser cannot see the 401)', async () => {
    let calls = 0;
    const h = await start({ token: undefined, getToken: () => `t${++calls}` });
    FakeSocket.last.serverClose(1006);
    await h.timers.advance(100);
    assert.equal(FakeSocket.last.token, 't1');
    FakeSocket.last.serverClose(1006);
    await h.timers.advance(200);
    assert.equal(FakeSocket.last.token, 't2');
  });
});
