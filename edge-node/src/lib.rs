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
//! Dev mode (the whole system in one process) lives in its own crate,
//! `edgepush-dev`, on top of this library.
//!
//! # Layout
//!
//! One noun per module; a module uses only those above it in this list
//! (`scripts/module-cycles` checks that no two depend on each other):
//!
//! - [`config`]: [`NodeConfig`] and
//!   [`ServeConfig`], parsed once from a lookup.
//! - [`metrics`]: counters rendered for Prometheus.
//! - `handshake`: the HTTP upgrade request, read by hand so the token is
//!   verified (asynchronously) before the upgrade, and the raw answers.
//! - `hub`: the node's map of live connections, with bounded queues and the
//!   connection caps; the direct write of a push to an idle session's
//!   socket.
//! - `socket`: the client's socket as tungstenite sees it, shared with the
//!   hub's direct writes.
//! - `topics`: the topic index (local subscribers per topic) and the topic
//!   fan-out.
//! - `acks`: client acks coalesced into one store write per user per
//!   interval.
//! - `registrar`: the node's topic memberships in the route store.
//! - `presence`: presence changes, coalesced into one write per interval,
//!   and join/leave events.
//! - `state`: what the parts share ([`NodeDeps`], the node's state).
//! - `admission`: everything that can refuse a client before the upgrade
//!   (path, method, token, caps, route store), mapped to HTTP answers.
//! - `replay`: the session's store jobs (where a stream starts, replay
//!   pages, gap fills, client publishes), bounded by permits and a timeout.
//! - `session`: one client's session, like mini-redis's `Handler`: the
//!   struct that owns the connection's state and the one loop that writes
//!   queued and replayed frames in seq order per stream (the user's,
//!   broadcast, each topic), reads acks, subscribe, unsubscribe and publish
//!   frames, pings.
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
mod presence;
mod push_api;
mod registrar;
mod registration;
mod replay;
mod session;
mod socket;
mod state;
mod topics;

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
