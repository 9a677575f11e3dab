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

use edgepush_core::{
    ConnId, MessageStore, NodeDirectory, PresenceStore, Pusher, RouteStore, TokenVerifier,
    TopicName, TopicRoutes, TopicStore, UserId,
};
use edgepush_delivery::sigv4::CredentialSet;
use edgepush_fanout::{RetryPolicy, TopicDispatcher};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::acks::AckWriter;
use crate::config::NodeConfig;
use crate::hub::{Conn, Hub};
use crate::metrics::Metrics;
use crate::presence::{PresenceParts, PresenceTracker};
use crate::registrar::{Registrar, RegistrarParts};
use crate::topics::TopicIndex;

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
    /// Client token verification (connection and subscribe tokens).
    pub verifier: Arc<dyn TokenVerifier>,
    /// The topic log: replay and gap fill of subscriptions, client
    /// publishes.
    pub topics: Arc<dyn TopicStore>,
    /// topic -> nodes with subscribers: this node's memberships.
    pub topic_routes: Arc<dyn TopicRoutes>,
    /// Who is online and who is subscribed.
    pub presence: Arc<dyn PresenceStore>,
    /// Pushes to other nodes (presence events, client publishes).
    pub pusher: Arc<dyn Pusher>,
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
    /// The local subscribers of each topic.
    pub topics: TopicIndex,
    /// Writes the node's topic memberships.
    pub registrar: Registrar,
    /// Presence changes waiting for the next write.
    pub presence: PresenceTracker,
    /// Sends topic items (presence events, client publishes) to every node
    /// with subscribers.
    pub fanout: TopicDispatcher,
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
        let fanout = TopicDispatcher {
            routes: deps.topic_routes.clone(),
            nodes: deps.nodes.clone(),
            pusher: deps.pusher.clone(),
            retry: RetryPolicy::default(),
        };
        Self {
            hub: Hub::new(metrics.clone()),
            topics: TopicIndex::default(),
            registrar: Registrar::default(),
            presence: PresenceTracker::default(),
            fanout,
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

    /// What the presence writer works with.
    pub(crate) fn presence_parts(&self) -> PresenceParts<'_> {
        PresenceParts {
            tracker: &self.presence,
            config: &self.config,
            hub: &self.hub,
            topics: &self.topics,
            store: &*self.deps.presence,
            fanout: &self.fanout,
            metrics: &self.metrics,
        }
    }

    /// What the registrar's task works with.
    pub(crate) fn registrar_parts(&self) -> RegistrarParts<'_> {
        RegistrarParts {
            registrar: &self.registrar,
            topics: &self.topics,
            hub: &self.hub,
            node: &self.config.node_id,
            routes: &*self.deps.topic_routes,
            metrics: &self.metrics,
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

    /// Whether `topic`'s namespace keeps presence.
    fn keeps_presence(&self, topic: &TopicName) -> bool {
        self.config
            .namespaces
            .options(topic)
            .is_some_and(|o| o.presence)
    }

    /// Joins `conn` to `topic` in the topic index (telling presence).
    pub(crate) fn join_topic(&self, topic: &TopicName, conn_id: &ConnId, conn: &Arc<Conn>) {
        let presence = self.keeps_presence(topic);
        let before = self.topics.subscribe(topic, conn_id, conn, presence);
        if presence {
            self.presence.touched(topic, &conn.user_id, before);
        }
    }

    /// Takes `conn_id` of `user` out of `topic` (telling presence), and has
    /// the membership released when it was the node's last subscriber.
    pub(crate) fn leave_topic(&self, topic: &TopicName, conn_id: &ConnId, user: &UserId) {
        let Some((before, empty)) = self.topics.unsubscribe(topic, conn_id, user) else {
            return;
        };
        if self.keeps_presence(topic) {
            self.presence.touched(topic, user, before);
        }
        if empty {
            self.registrar.release(topic.clone());
        }
    }
}
