//! The node's listeners, its accept loop and its graceful drain.
//!
//! [`run`] takes two bound listeners (clients, push API) — tests bind them
//! on port 0 — the configuration, the stores, and a shutdown future. On
//! shutdown it stops accepting, closes every connection with 1012, waits
//! for them (bounded by the drain timeout), removes the node's routes and
//! liveness entry, and returns.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use edgepush_core::protocol::CLOSE_DRAINING;
use edgepush_core::{ConnId, MessageStore, NodeDirectory, RouteStore, TokenVerifier};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NodeConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::{connection, push_api, registration};

/// The stores and verifier a node runs on (ports, so tests and dev mode can
/// use the in-memory backends).
#[derive(Clone)]
pub struct NodeDeps {
    /// user -> connection -> node.
    pub routes: Arc<dyn RouteStore>,
    /// node liveness.
    pub nodes: Arc<dyn NodeDirectory>,
    /// The message log: replay, gap fill, acks.
    pub messages: Arc<dyn MessageStore>,
    /// Client token verification.
    pub verifier: Arc<dyn TokenVerifier>,
}

/// The node failed to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by the accept loop, connections, the push API and the
/// heartbeat.
pub(crate) struct Shared {
    pub config: NodeConfig,
    pub deps: NodeDeps,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Set at the start of a drain: no new connections, no per-connection
    /// route removal (the drain removes them all at once).
    pub draining: AtomicBool,
    /// Whether the last heartbeat reached the node directory (`/readyz`).
    pub heartbeat_ok: AtomicBool,
    /// The push URL this node advertises.
    pub push_url: String,
    /// The credentials push requests may be signed with.
    pub credentials: edgepush_delivery::sigv4::CredentialSet,
    /// Small buffers: tungstenite's defaults (128 KiB read buffer allocated
    /// eagerly) would cost more than the rest of a connection together.
    pub ws_config: WebSocketConfig,
    /// Random per boot, so a restarted node never reuses connection ids.
    boot_id: u32,
    /// Counter part of connection ids.
    next_conn: AtomicU64,
}

impl Shared {
    /// A fresh connection id: boot id and counter, 16 hex digits.
    pub fn next_conn_id(&self) -> ConnId {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        ConnId::new(format!("{:08x}{:08x}", self.boot_id, n as u32))
            .expect("hex is a valid connection id")
    }
}

/// Runs a node on `ws` (client WebSockets) and `push` (push API, health,
/// metrics) until `shutdown` resolves, then drains.
pub async fn run(
    ws: TcpListener,
    push: TcpListener,
    config: NodeConfig,
    deps: NodeDeps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let push_url = match &config.push_url {
        Some(url) => url.clone(),
        None => format!("http://{}", push.local_addr()?),
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(4096)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(config.max_client_frame))
        .max_frame_size(Some(config.max_client_frame));
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        hub: Hub::new(metrics.clone()),
        metrics,
        draining: AtomicBool::new(false),
        heartbeat_ok: AtomicBool::new(false),
        push_url,
        credentials: edgepush_delivery::sigv4::CredentialSet::new(config.push_credentials.clone()),
        ws_config,
        boot_id: rand::random(),
        next_conn: AtomicU64::new(0),
        config,
        deps,
    });

    tracing::info!(
        node = %shared.config.node_id,
        ws = %ws.local_addr()?,
        push = %push.local_addr()?,
        push_url = %shared.push_url,
        "edge node starting"
    );
    registration::beat(&shared).await;

    let stop_background = CancellationToken::new();
    let heartbeat = tokio::spawn(registration::heartbeat_loop(
        shared.clone(),
        stop_background.clone(),
    ));
    let push_server = tokio::spawn(push_api::serve(
        push,
        shared.clone(),
        stop_background.clone(),
    ));

    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = ws.accept() => match accepted {
                Ok((stream, peer)) => {
                    let task = connection::serve(shared.clone(), stream, peer);
                    tracing::trace!(bytes = std::mem::size_of_val(&task), "connection task size");
                    connections.spawn(task);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    Metrics::inc(&shared.metrics.errors);
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    drop(ws);
    drain(&shared, &connections).await;
    stop_background.cancel();
    let _ = heartbeat.await;
    let _ = push_server.await;
    tracing::info!(node = %shared.config.node_id, "edge node stopped");
    Ok(())
}

async fn drain(shared: &Arc<Shared>, connections: &TaskTracker) {
    shared.draining.store(true, Ordering::Release);
    let routes = shared.hub.routes();
    tracing::info!(connections = routes.len(), "draining");
    shared.hub.close_all(CLOSE_DRAINING);
    connections.close();
    if tokio::time::timeout(shared.config.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = shared.hub.len(),
            "drain timeout; dropping the remaining connections"
        );
    }
    let node = &shared.config.node_id;
    let bounded = Duration::from_secs(5);
    match tokio::time::timeout(bounded, shared.deps.routes.remove_routes(&routes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not remove routes; they expire with the node's liveness")
        }
        Err(_) => tracing::warn!("removing routes timed out; they expire with the node's liveness"),
    }
    match tokio::time::timeout(bounded, shared.deps.nodes.remove_node(node)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove liveness entry; it expires"),
        Err(_) => tracing::warn!("removing liveness entry timed out; it expires"),
    }
}
