/**
 * What the client reads from a JWT without verifying it (the node verifies):
 * `exp`, to refresh the token before the node closes with 4001, and `sub`,
 * to keep each user's positions under their own storage key.
 */
export interface TokenClaims {
  /** Expiry, seconds since the epoch. */
  exp?: number;
  /** The user id. */
  sub?: string;
}

/** The claims of `token`, or `{}` when it is not a readable JWT. */
export function readClaims(token: string): TokenClaims {
  const part = token.split('.')[1];
  if (!part) return {};
  try {
    const json = JSON.parse(base64UrlDecode(part)) as unknown;
    if (typeof json !== 'object' || json === null) return {};
    const claims: TokenClaims = {};
    const { exp, sub } = json as Record<string, unknown>;
    if (typeof exp === 'number' && Number.isFinite(exp)) claims.exp = exp;
    if (typeof sub === 'string') claims.sub = sub;
    return claims;
  } catch {
    return {};
  }
}

function base64UrlDecode(text: string): string {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
