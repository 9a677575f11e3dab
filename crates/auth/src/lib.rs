//! JWT verification for edgepush: pinned algorithms, keys from config or JWKS.
