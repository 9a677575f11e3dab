//! The edgepush edge node: the stateful part of the system.
//!
//! A node holds client WebSocket connections, registers `user -> connection
//! -> node` routes in the route store (Redis), keeps its liveness entry
//! fresh with a heartbeat, and serves the push API that dispatch delivers
//! through. On connect it replays what the client missed from the message
//! store (MongoDB); on shutdown it drains.
//!
//! The same binary runs dev mode: the whole system in one process.
//!
//! # Layout
//!
//! - [`config`]: [`NodeConfig`](config::NodeConfig), parsed once from the
//!   environment.
//! - [`server`]: [`server::run`] — listeners, accept loop, graceful drain.
//! - `handshake`: the HTTP upgrade request, read by hand so the token is
//!   verified (asynchronously) before the upgrade.
//! - `connection`: one client connection: replay, send loop, acks, pings,
//!   close codes.
//! - `hub`: the node's map of live connections, with bounded queues.
//! - `push_api`: the API Gateway Management API compatible push API,
//!   the batch endpoint, health and metrics.
//! - `registration`: heartbeat and route re-registration.
//! - [`metrics`]: counters rendered for Prometheus.
//! - [`dev`]: dev mode.
//! - [`shutdown`]: the signals that start a drain.

pub mod config;
pub mod dev;
pub mod metrics;
pub mod server;
pub mod shutdown;

mod connection;
mod handshake;
mod hub;
mod push_api;
mod registration;

pub use config::{AuthMode, NodeConfig};
pub use server::{NodeDeps, run};

use std::sync::Arc;

use edgepush_auth::{JwtVerifier, RemoteVerifier};
use edgepush_core::TokenVerifier;

/// The token verifier `mode` asks for.
pub fn verifier_for(mode: &AuthMode) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    Ok(match mode {
        AuthMode::Local(cfg) => Arc::new(JwtVerifier::new(cfg.clone())?),
        AuthMode::Remote { url } => Arc::new(RemoteVerifier::new(
            url,
            edgepush_auth::DEFAULT_REMOTE_TIMEOUT,
        )?),
    })
}
