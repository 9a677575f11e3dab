//! `collect serve`: collect's HTTP API as a long-running server, for
//! deployments without Lambda (docker compose, ECS, Kubernetes). Without an
//! argument the binary serves Lambda invocations.
//!
//! The API is the same router dev mode and the Lambda serve
//! ([`crate::router()`]), so `POST /v1/messages` answers exactly as behind
//! API Gateway. Two paths are
//! added for orchestrators, answered before any API key is asked for:
//!
//! - `GET /healthz`: `200` while the process serves;
//! - `GET /readyz`: `200` when the message store and the hand-off (the SQS
//!   queue, or Redis for a direct hand-off) answer, else `503` with the
//!   reason, the same checks a submission makes first.
//!
//! The binary stops on SIGTERM or SIGINT
//! ([`edgepush_startup::shutdown_signal`]): it stops accepting and lets the
//! requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Collector;

/// Names of the variables read by [`serve`].
pub mod env {
    /// The address the server listens on (default [`super::DEFAULT_ADDR`]).
    pub const ADDR: &str = "EDGEPUSH_COLLECT_ADDR";
}

/// Where `collect serve` listens when [`env::ADDR`] is unset.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";

/// `collect serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// [`env::ADDR`] is not a socket address.
    #[error("EDGEPUSH_COLLECT_ADDR must be an address like 0.0.0.0:8080")]
    InvalidAddr,
    /// The address could not be bound, or serving failed.
    #[error("collect server on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The API router plus `/healthz` and `/readyz`.
pub fn router(collector: Arc<Collector>) -> Router {
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(collector.clone());
    probes.merge(crate::router(collector))
}

async fn readyz(State(collector): State<Arc<Collector>>) -> Response {
    if let Err(error) = collector.store.ping().await {
        let body =
            serde_json::json!({ "ready": false, "reason": format!("message store: {error}") });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if let Err(error) = collector.handoff.ready().await {
        let body = serde_json::json!({ "ready": false, "reason": format!("hand-off: {error}") });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    axum::Json(serde_json::json!({ "ready": true })).into_response()
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish and settles the message store (what its
/// appends left to the background is written before the process exits).
pub async fn run(
    listener: TcpListener,
    collector: Arc<Collector>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router(Arc::clone(&collector)))
        .with_graceful_shutdown(shutdown)
        .await;
    collector.store.settle().await;
    served
}

/// `collect serve`: binds [`env::ADDR`] (read through `lookup`) and serves
/// until `shutdown` resolves.
pub async fn serve(
    collector: Arc<Collector>,
    lookup: impl Fn(&str) -> Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr: SocketAddr = lookup(env::ADDR)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned())
        .parse()
        .map_err(|_| ServeError::InvalidAddr)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    tracing::info!(%addr, path = crate::MESSAGES_PATH, "collect serving HTTP");
    run(listener, collector, shutdown)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    tracing::info!("collect stopped");
    Ok(())
}
