//! The collect function: accepts business messages over HTTP, validates
//! them, stores them durably, and hands them off to dispatch.
//!
//! The API (`POST /v1/messages`) answers `202` only after the message store
//! has acknowledged every recipient's copy; see [`Collector::handle`] for the
//! exact order of checks and the status of each failure. The topic side
//! (publish to topics, broadcast, presence reads) is [`topics`].
//!
//! The logic is one HTTP-shaped function over trait objects,
//! [`Collector::handle`], served by one axum router ([`router()`]) in every
//! place it runs:
//!
//! - dev mode and local tests: the router on a local listener;
//! - the Lambda function: the same router behind `lambda_http`
//!   ([`lambda`]: API Gateway HTTP API payload v2 and Lambda function URLs);
//! - `collect serve` ([`server`]): the router as a long-running HTTP server
//!   with `/healthz` and `/readyz` (docker compose, ECS, Kubernetes).
//!
//! # Layout
//!
//! - `request`: [`CollectRequest`], [`CollectResponse`], the HTTP-shaped
//!   values every face converts from and to.
//! - [`Collector`], [`Limits`]: the core (`collector`), which serves
//!   `/v1/messages` and hands the topic paths to [`topics`].
//! - [`topics`]: the topic side ([`Topics`]): publish, broadcast, presence.
//! - [`ApiKeys`]: who may call, and the source name that scopes their
//!   idempotency keys.
//! - [`CollectError`]: every refusal, mapped to a response in one place.
//! - [`config`]: the typed configuration of the binary.
//! - [`router()`]: the HTTP face; [`lambda`]: the Lambda face; [`server`]:
//!   the long-running face.
//! - `start` (feature `aws`, default): [`connect`], the collector of a
//!   deployment (MongoDB and the chosen hand-off). Without the feature (dev
//!   mode) no AWS SDK is compiled.

pub mod api_keys;
mod collector;
pub mod config;
mod error;
pub mod lambda;
mod request;
pub mod router;
pub mod server;
#[cfg(feature = "aws")]
mod start;
pub mod topics;

pub use api_keys::{ApiKeys, ApiKeysError};
pub use collector::{Collector, Limits, MESSAGES_PATH};
pub use config::{Config, ConfigError};
pub use error::CollectError;
pub use request::{CollectRequest, CollectResponse};
pub use router::router;
#[cfg(feature = "aws")]
pub use start::{ConnectError, connect};
pub use topics::Topics;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod topic_tests;
