//! What the node's parts share: its configuration and stores, the hub of
//! live connections, the ack writer, the bound on store reads, metrics and
//! the flags the accept loop, the sessions, the push API and the heartbeat
//! read.
//!
//! Built once by [`server::run`](crate::server::run) and handed to every
//! task behind an `Arc`; nothing here refers back to the modules that use
//! it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use edgepush_core::{ConnId, MessageStore, NodeDirectory, RouteStore, TokenVerifier};
use edgepush_delivery::sigv4::CredentialSet;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::acks::AckWriter;
use crate::config::NodeConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;

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

/// State shared by the accept loop, the sessions, the push API, the ack
/// writer and the heartbeat.
pub(crate) struct NodeState {
    /// Parsed once at start.
    pub config: NodeConfig,
    /// The stores and the token verifier.
    pub deps: NodeDeps,
    /// The live connections.
    pub hub: Hub,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Coalesces client acks into at most one store write per user per
    /// interval.
    pub acks: AckWriter,
    /// Permits for the sessions' store reads ([`NodeConfig::store_reads`]).
    pub store_reads: Arc<Semaphore>,
    /// Set at the start of a drain: no new connections, no per-connection
    /// route removal (the drain removes them all at once).
    pub draining: AtomicBool,
    /// Whether the last heartbeat reached the node directory (`/readyz`).
    pub heartbeat_ok: AtomicBool,
    /// The push URL this node advertises.
    pub push_url: String,
    /// The credentials push requests may be signed with.
    pub credentials: CredentialSet,
    /// Small buffers: tungstenite's defaults (128 KiB read buffer allocated
    /// eagerly) would cost more than the rest of a connection together.
    pub ws_config: WebSocketConfig,
    /// Random per boot, so a restarted node never reuses connection ids.
    boot_id: u32,
    /// Counter part of connection ids.
    next_conn: AtomicU64,
}

impl NodeState {
    /// The state of a node with `config` and `deps`, advertising `push_url`.
    pub(crate) fn new(config: NodeConfig, deps: NodeDeps, push_url: String) -> Self {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(256)
            .write_buffer_size(4096)
            .max_write_buffer_size(256 * 1024)
            .max_message_size(Some(config.max_client_frame))
            .max_frame_size(Some(config.max_client_frame));
        let metrics = Arc::new(Metrics::default());
        Self {
            hub: Hub::new(metrics.clone()),
            metrics,
            acks: AckWriter::default(),
            store_reads: Arc::new(Semaphore::new(config.store_reads)),
            draining: AtomicBool::new(false),
            heartbeat_ok: AtomicBool::new(false),
            push_url,
            credentials: CredentialSet::new(config.push_credentials.clone()),
            ws_config,
            boot_id: rand::random(),
            next_conn: AtomicU64::new(0),
            config,
            deps,
        }
    }

    /// A fresh connection id: boot id and counter, 16 hex digits.
    pub(crate) fn next_conn_id(&self) -> ConnId {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        ConnId::new(format!("{:08x}{:08x}", self.boot_id, n as u32))
            .expect("hex is a valid connection id")
    }

    /// Whether the node is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
