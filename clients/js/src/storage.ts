/**
 * Positions kept across page loads: the seq of the last message the
 * application handled, for the user's stream and for each topic, stored
 * under one key per user as `{"v":1,"user":"alice","seq":42,"topics":{"news":7}}`.
 *
 * Any object with `getItem`/`setItem` works: `localStorage`,
 * `sessionStorage`, or an adapter of the application's (either may return a
 * promise).
 */
import { isSeq } from './protocol.js';

export interface PositionStorage {
  getItem(key: string): string | null | undefined | Promise<string | null | undefined>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** What is stored for one user. */
export interface Positions {
  user?: string;
  /** The user stream's last handled seq. */
  seq?: number;
  /** Each topic's last handled seq. */
  topics: Record<string, number>;
}

/** Reads the positions under `key`; unreadable or foreign values count as none. */
export async function loadPositions(storage: PositionStorage, key: string, user: string | undefined): Promise<Positions> {
  const text = await storage.getItem(key);
  const empty: Positions = { topics: {} };
  if (typeof text !== 'string') return empty;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return empty;
  }
  if (typeof value !== 'object' || value === null) return empty;
  const stored = value as Record<string, unknown>;
  if (stored.v !== 1) return empty;
  if (user !== undefined && stored.user !== undefined && stored.user !== user) return empty;
  const positions: Positions = { topics: {} };
  if (typeof stored.user === 'string') positions.user = stored.user;
  if (isSeq(stored.seq)) positions.seq = stored.seq;
  if (typeof stored.topics === 'object' && stored.topics !== null) {
    for (const [topic, seq] of Object.entries(stored.topics as Record<string, unknown>)) {
      if (isSeq(seq)) positions.topics[topic] = seq;
    }
  }
  return positions;
}

/** The stored text of `positions`. */
export function encodePositions(positions: Positions): string {
  const value: Record<string, unknown> = { v: 1 };
  if (positions.user !== undefined) value.user = positions.user;
  if (positions.seq !== undefined) value.seq = positions.seq;
  value.topics = positions.topics;
  return JSON.stringify(value);
}
