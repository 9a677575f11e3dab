//! The push API, both ends of its authentication and the caller's client.
//!
//! Edge nodes expose a push API compatible with the AWS API Gateway
//! Management API (`POST/GET/DELETE <stage>/@connections/{id}`, SigV4 for
//! service `execute-api`) plus a batch endpoint (`POST <stage>/@batch`,
//! body [`edgepush_core::protocol::PushBatch`]). This crate holds:
//!
//! - [`sigv4`]: signing ([`sign`]) for callers and verification ([`verify`])
//!   for edge nodes, compatible with the AWS SDK's signer;
//! - [`client`]: [`HttpPusher`], the production [`edgepush_core::Pusher`]
//!   that dispatch uses to send batches to edge nodes.

pub mod client;
pub mod sigv4;

pub use client::{
    BuildError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, HttpPusher, PostError, PushClientConfig,
};
pub use sigv4::{CredentialSet, PushCredential, SignError, VerifyError, sign, verify};
