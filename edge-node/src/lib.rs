//! The edgepush edge node: the stateful part of the system.
//!
//! A node holds client WebSocket connections, registers `user -> connection
//! -> node` routes in the route store (Redis), keeps its liveness entry
//! fresh with a heartbeat, and serves the push API that dispatch delivers
//! through. On connect it replays what the client missed from the message
//! store (MongoDB); on shutdown it drains.
//!
//! Dev mode (the whole system in one process) lives in its own crate,
//! `edgepush-dev`, on top of this library.
//!
//! # Layout
//!
//! One noun per module; a module uses only those above it in this list
//! (`scripts/module-cycles` checks that no two depend on each other):
//!
//! - [`config`]: [`NodeConfig`](config::NodeConfig) and
//!   [`ServeConfig`](config::ServeConfig), parsed once from a lookup.
//! - [`metrics`]: counters rendered for Prometheus.
//! - `handshake`: the HTTP upgrade request, read by hand so the token is
//!   verified (asynchronously) before the upgrade, and the raw answers.
//! - `hub`: the node's map of live connections, with bounded queues and the
//!   connection caps.
//! - `acks`: client acks coalesced into one store write per user per
//!   interval.
//! - `state`: what the parts share ([`NodeDeps`], the node's state).
//! - `admission`: everything that can refuse a client before the upgrade
//!   (path, method, token, caps, route store), mapped to HTTP answers.
//! - `replay`: a session's store reads (position, replay pages, gap fill),
//!   bounded by permits and a timeout.
//! - `session`: one client's session, like mini-redis's `Handler`: the
//!   struct that owns the connection's state and the one loop that writes
//!   queued and replayed frames in seq order, reads acks and pings.
//! - `connection`: one accepted socket: handshake, admission, `101`, the
//!   session, the close frame, forgetting the route.
//! - `push_api`: the API Gateway Management API compatible push API,
//!   the batch endpoint, health and metrics.
//! - `registration`: heartbeat, route re-registration and route refresh.
//! - [`server`]: [`server::run`]: listeners, accept loop, graceful drain;
//!   [`server::serve`]: the same on Redis and MongoDB from a [`ServeConfig`]
//!   (the binary drains on [`edgepush_startup::shutdown_signal`]).
//! - [`verifier_for`] (here): the token verifier an [`AuthMode`] asks for.
//!
//! Close codes are the named constants of [`edgepush_core::protocol`];
//! every frame a session writes goes through one timed helper
//! (`session::timed`).

pub mod config;
pub mod metrics;
pub mod server;

mod acks;
mod admission;
mod connection;
mod handshake;
mod hub;
mod push_api;
mod registration;
mod replay;
mod session;
mod state;

pub use config::{AuthMode, NodeConfig, ServeConfig};
pub use server::{run, serve};
pub use state::NodeDeps;

use std::sync::Arc;

use edgepush_auth::{JwtVerifier, RemoteVerifier};
use edgepush_core::TokenVerifier;

/// The token verifier `mode` asks for; an error names what is wrong with
/// its keys or URL.
pub fn verifier_for(mode: &AuthMode) -> Result<Arc<dyn TokenVerifier>, edgepush_auth::ConfigError> {
    Ok(match mode {
        AuthMode::Local(cfg) => Arc::new(JwtVerifier::new(cfg.clone())?),
        AuthMode::Remote { url } => Arc::new(RemoteVerifier::new(
            url,
            edgepush_auth::DEFAULT_REMOTE_TIMEOUT,
        )?),
    })
}
