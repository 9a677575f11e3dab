//! The edgepush edge node: the stateful part of the system.
//!
//! A node holds client WebSocket connections, registers `user -> connection
//! -> node` routes in the route store (Redis), keeps its liveness entry
//! fresh with a heartbeat, and serves the push API that dispatch delivers
//! through. On connect it replays what the client missed from the message
//! store (MongoDB); on shutdown it drains.
//!
//! Topics: a connection subscribes (from its token, or with a `subscribe`
//! frame), the node registers itself as a member of the topic in the route
//! store, receives one item per topic message, and fans it out to its local
//! subscribers with one serialised frame; each subscription is replayed and
//! gap-filled from the topic store like the user's stream. Presence (who is
//! online, who is subscribed) is written, coalesced, to the presence store.
//!
//! The same binary runs dev mode: the whole system in one process.
//!
//! # Layout
//!
//! - [`config`]: [`NodeConfig`](config::NodeConfig), parsed once from the
//!   environment.
//! - [`server`]: [`server::run`]: listeners, accept loop, graceful drain.
//! - `state`: what the parts share ([`NodeDeps`], the node's state).
//! - `handshake`: the HTTP upgrade request, read by hand so the token is
//!   verified (asynchronously) before the upgrade.
//! - `admission`: everything that can refuse a client before the upgrade
//!   (token, caps, route store), mapped to HTTP answers.
//! - `connection`: one accepted socket: handshake, admission, `101`, the
//!   session, the close, forgetting the route.
//! - `session`: one client's session: the loop that writes queued and
//!   replayed frames in seq order per stream (the user's, broadcast, each
//!   topic), reads acks, subscribe, unsubscribe and publish frames, pings.
//! - `replay`: the session's store jobs (where a stream starts, replay
//!   pages, gap fills, client publishes), bounded by permits and a timeout.
//! - `topics`: the topic index (local subscribers per topic) and the topic
//!   fan-out.
//! - `registrar`: the node's topic memberships in the route store.
//! - `presence`: presence changes, coalesced into one write per interval,
//!   and join/leave events.
//! - `acks`: client acks coalesced into one store write per user per
//!   interval.
//! - `hub`: the node's map of live connections, with bounded queues and the
//!   connection caps.
//! - `push_api`: the API Gateway Management API compatible push API,
//!   the batch endpoint, health and metrics.
//! - `registration`: heartbeat, route re-registration and route refresh.
//! - [`metrics`]: counters rendered for Prometheus.
//! - [`dev`]: dev mode.
//! - [`shutdown`]: the signals that start a drain.

pub mod config;
pub mod dev;
pub mod metrics;
pub mod server;
pub mod shutdown;

mod acks;
mod admission;
mod connection;
mod handshake;
mod hub;
mod presence;
mod push_api;
mod registrar;
mod registration;
mod replay;
mod session;
mod state;
mod topics;

pub use config::{AuthMode, NodeConfig};
pub use server::run;
pub use state::NodeDeps;

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
