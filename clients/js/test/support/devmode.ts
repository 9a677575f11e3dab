/**
 * A real dev mode process (`edgepush-dev`) for the Node.js and browser
 * tests: free ports, the banner parsed for the console URL, and, with
 * `nodeProcesses`, its two edge nodes as child processes on the Redis and
 * MongoDB server that scripts/test started (EDGEPUSH_TEST_REDIS_URL,
 * EDGEPUSH_TEST_MONGODB_URI), so a test can SIGTERM or SIGKILL one.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { until } from './wait.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', '..');

export interface DevNode {
  name: string;
  ws: string;
  pid: number | null;
  up: boolean;
  figures: { connections: number; frames_written_total: number; deliveries_total: number; acks_total: number; ack_writes_total: number } | null;
}

export interface DevMode {
  /** `http://127.0.0.1:PORT` (collect and the console). */
  base: string;
  /** `http://127.0.0.1:PORT/console/`. */
  console: string;
  /** The nodes' ws URLs, in order. */
  nodes: string[];
  /** The dev process. */
  process: ChildProcess;
  /** A dev token for `user`. */
  token(user: string): Promise<string>;
  /** POST /v1/messages to `user`; the seq collect gave it. */
  send(user: string, data: unknown): Promise<number>;
  /** POST /v1/topics/{topic}/messages; the seq collect gave it. */
  publish(topic: string, data: unknown): Promise<number>;
  /** POST /v1/broadcast; the broadcast seq collect gave it. */
  broadcast(data: unknown): Promise<number>;
  /** `/console/api/nodes`. */
  nodeStatus(): Promise<DevNode[]>;
  /** SIGTERM, and wait for the exit (the nodes drain). */
  stop(): Promise<void>;
}

/** A unique user id per test, so runs sharing a MongoDB never see each other's messages. */
export function uniqueUser(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

export function devModeBinary(): string {
  const binary = process.env.EDGEPUSH_DEV_BIN ?? join(repoRoot, 'target', 'debug', 'edgepush-dev');
  if (!existsSync(binary)) {
    throw new Error(`no edgepush-dev binary at ${binary}: run \`cargo build -p edgepush-dev\` or set EDGEPUSH_DEV_BIN (scripts/test does both)`);
  }
  return binary;
}

export async function startDevMode(options: { nodeProcesses?: boolean } = {}): Promise<DevMode> {
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' };
  delete env.REDIS_URL;
  delete env.MONGODB_URI;
  const args = ['--collect-addr', '127.0.0.1:0', '--ws-port', '0', '--push-port', '0'];
  if (options.nodeProcesses) {
    const redis = process.env.EDGEPUSH_TEST_REDIS_URL;
    const mongo = process.env.EDGEPUSH_TEST_MONGODB_URI;
    if (!redis || !mongo) {
      throw new Error('EDGEPUSH_TEST_REDIS_URL and EDGEPUSH_TEST_MONGODB_URI must be set (scripts/test starts both servers and sets them)');
    }
    env.REDIS_URL = redis;
    env.MONGODB_URI = mongo;
    args.push('--node-processes');
  }
  const child = spawn(devModeBinary(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited: string | undefined;
  const keep = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', (chunk: Buffer) => {
    keep(chunk);
    if (process.env.EDGEPUSH_TEST_DEV_LOG) process.stderr.write(chunk);
  });
  child.on('exit', (code, signal) => {
    exited = `exited with ${code ?? signal}`;
  });
  let base: string;
  try {
    base = await until(
      () => {
        if (exited) throw new Error(`dev mode ${exited} before it was up:\n${output.slice(-4000)}`);
        return /Console: (http:\/\/127\.0\.0\.1:\d+)\/console\//.exec(output)?.[1];
      },
      (found) => found !== undefined,
      'dev mode to print its console URL',
      () => output.length,
    ) as string;
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const config = (await (await fetch(`${base}/console/api/config`)).json()) as { nodes: { ws: string }[]; api_key: string };
  /** A POST of a topic publish to collect; the receipt's seq. */
  const post = async (path: string, body: unknown): Promise<number> => {
    const response = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${config.api_key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = (await response.json()) as { seq?: number };
    if (response.status !== 202 || answer.seq === undefined) throw new Error(`collect answered ${response.status}: ${JSON.stringify(answer)}`);
    return answer.seq;
  };
  const dev: DevMode = {
    base,
    console: `${base}/console/`,
    nodes: config.nodes.map((n) => n.ws),
    process: child,
    async token(user) {
      const response = await fetch(`${base}/console/api/token?user=${encodeURIComponent(user)}`);
      if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
      return ((await response.json()) as { token: string }).token;
    },
    async send(user, data) {
      const response = await fetch(`${base}/v1/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${config.api_key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ to: [user], data }),
      });
      const body = (await response.json()) as { messages?: { seq: number }[] };
      if (response.status !== 202 || !body.messages?.[0]) throw new Error(`collect answered ${response.status}: ${JSON.stringify(body)}`);
      return body.messages[0].seq;
    },
    async publish(topic, data) {
      return post(`/v1/topics/${encodeURIComponent(topic)}/messages`, { data });
    },
    async broadcast(data) {
      return post('/v1/broadcast', { data });
    },
    async nodeStatus() {
      return ((await (await fetch(`${base}/console/api/nodes`)).json()) as { nodes: DevNode[] }).nodes;
    },
    async stop() {
      if (exited) return;
      const pids = options.nodeProcesses ? (await dev.nodeStatus().catch(() => [])).map((n) => n.pid) : [];
      const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await done;
      clearTimeout(timer);
      // The dev process drains its nodes; make sure none outlives it.
      for (const pid of pids) {
        if (pid) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      }
    },
  };
  return dev;
}
