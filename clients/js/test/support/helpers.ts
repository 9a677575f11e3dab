import { EdgepushClient, type ClientOptions, type EdgepushError, type Message, type StateEvent } from '../../src/index.js';
import { FakeSocket, FakeTimers, NODES, settle } from './fakes.js';

export interface Harness {
  client: EdgepushClient;
  timers: FakeTimers;
  messages: Message[];
  states: StateEvent[];
  errors: EdgepushError[];
}

/** A client on fake sockets and timers, no jitter, first node 0, listening to every event. */
export async function start(options: Partial<ClientOptions> = {}, listen = true): Promise<Harness> {
  FakeSocket.reset();
  const timers = new FakeTimers();
  const client = new EdgepushClient({
    nodes: NODES,
    token: 'tok',
    WebSocket: FakeSocket,
    timers,
    firstNode: 0,
    backoff: { jitter: 'none' },
    ...options,
  });
  const h: Harness = { client, timers, messages: [], states: [], errors: [] };
  if (listen) client.on('message', (m) => h.messages.push(m));
  client.on('state', (s) => h.states.push(s));
  client.on('error', (e) => h.errors.push(e));
  client.connect();
  await settle();
  return h;
}

export const seqs = (messages: Message[]): number[] => messages.map((m) => m.seq);
