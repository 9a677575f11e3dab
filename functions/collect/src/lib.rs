//! The collect function: accepts business messages over HTTP, validates
//! them, stores them durably, and hands them off to dispatch.
//!
//! The API (`POST /v1/messages`) answers `202` only after the message store
//! has acknowledged every recipient's copy; see [`Collector::handle`] for the
//! exact order of checks and the status of each failure.
//!
//! The logic is one HTTP-shaped function over trait objects,
//! [`Collector::handle`], mounted twice:
//!
//! - [`lambda::handler`]: API Gateway HTTP API (payload v2) and Lambda
//!   function URLs.
//! - [`dev::router`]: an axum router for dev mode and local testing.
//! - [`server`]: `collect serve`, that router as a long-running HTTP server
//!   with `/healthz` and `/readyz` (docker compose, ECS, Kubernetes).
//!
//! # Layout
//!
//! - [`Collector`], [`Limits`], [`CollectRequest`], [`CollectResponse`]: the
//!   core.
//! - [`ApiKeys`]: who may call, and the source name that scopes their
//!   idempotency keys.
//! - [`CollectError`]: every refusal, mapped to a response in one place.
//! - [`config`]: the typed configuration of the binary.

pub mod api_keys;
mod collector;
pub mod config;
pub mod dev;
mod error;
pub mod lambda;
pub mod server;

pub use api_keys::{ApiKeys, ApiKeysError};
pub use collector::{CollectRequest, CollectResponse, Collector, Limits, MESSAGES_PATH};
pub use config::{Config, ConfigError};
pub use error::CollectError;
pub use lambda::handler;

#[cfg(test)]
mod tests;
