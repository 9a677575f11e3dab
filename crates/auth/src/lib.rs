//! JWT verification for edgepush: pinned algorithms, keys from config or JWKS.
//!
//! The auth function and the edge node both verify client tokens with a
//! [`JwtVerifier`]; an edge node that should not hold keys uses a
//! [`RemoteVerifier`] that calls the auth function instead. Both implement
//! [`edgepush_core::TokenVerifier`].
//!
//! ```
//! use std::time::Duration;
//! use edgepush_auth::{mint_hs256, AuthConfig, Claims, JwtVerifier};
//!
//! let secret = b"0123456789abcdef-dev-only";
//! let verifier = JwtVerifier::new(AuthConfig::hs256(secret.to_vec())).expect("valid config");
//! let token = mint_hs256(secret, &Claims::new("alice", Duration::from_secs(60)));
//! let identity = verifier.verify(&token).expect("fresh token");
//! assert_eq!(identity.user_id.as_str(), "alice");
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`AuthConfig`], [`KeyConfig`], parsing from
//!   `EDGEPUSH_JWT_*` variables, [`ConfigError`].
//! - [`verifier`]: the in-process [`JwtVerifier`].
//! - [`claims`]: [`Claims`] and [`mint_hs256`] (dev mode, tests).
//! - [`wire`]: the auth function's JSON request and response.
//! - [`remote`]: the HTTP client [`RemoteVerifier`].

pub mod claims;
pub mod config;
pub mod remote;
pub mod verifier;
pub mod wire;

pub use claims::{Claims, mint_hs256, unix_now};
pub use config::{AuthConfig, ConfigError, DEFAULT_LEEWAY, KeyConfig, PublicKeyAlgorithm};
pub use remote::{DEFAULT_REMOTE_TIMEOUT, RemoteVerifier};
pub use verifier::JwtVerifier;
pub use wire::{AuthRequest, AuthResponse, ErrorBody, ErrorCode};
