//! The node's configuration, parsed once from a key/value lookup (the
//! process environment in the binary, a map in tests).
//!
//! Every variable is documented in the README's "Configuration" section.

use std::net::SocketAddr;
use std::time::Duration;

use edgepush_auth::AuthConfig;
pub use edgepush_core::config::ConfigError;
use edgepush_core::config::Vars;
use edgepush_core::{Namespaces, NodeId};
use edgepush_delivery::sigv4::PushCredential;
use edgepush_mongo::MongoConfig;
use edgepush_redis::RedisConfig;

/// Default of [`NodeConfig::store_reads`].
pub const DEFAULT_STORE_READS: usize = 16;
/// Default of [`NodeConfig::route_ttl`]: a day.
pub const DEFAULT_ROUTE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default of [`NodeConfig::max_connections`]. Set it a little below the
/// process's open-file limit (`ulimit -n`), so that clients past it get a
/// clear `503 node_full` and move on, instead of a failing `accept`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_000_000;
/// Default of [`NodeConfig::max_connections_per_user`].
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 64;
/// Default of [`NodeConfig::push_concurrency`].
pub const DEFAULT_PUSH_CONCURRENCY: usize = 64;
/// Default of [`NodeConfig::max_subscriptions`].
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 128;
/// Default of [`NodeConfig::presence_interval`].
pub const DEFAULT_PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// How the node verifies client tokens.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// In process, with the auth library.
    Local(AuthConfig),
    /// By calling the auth function at this URL (its Invoke API).
    Remote {
        /// For example `http://127.0.0.1:9000/2015-03-31/functions/auth/invocations`.
        url: String,
    },
}

/// Everything one edge node needs to know, besides its stores.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id in the node directory and in routes.
    pub node_id: NodeId,
    /// Where clients connect (`GET /ws`).
    pub ws_addr: SocketAddr,
    /// Where the push API, health checks and metrics listen.
    pub push_addr: SocketAddr,
    /// The push API URL other components reach this node at; defaults to
    /// `http://<bound push address>`, which is right only when that address
    /// is reachable from dispatch.
    pub push_url: Option<String>,
    /// How tokens are verified.
    pub auth: AuthMode,
    /// The credentials a push request may be signed with (several, for
    /// rotation). Never empty: the push API refuses unsigned calls.
    pub push_credentials: Vec<PushCredential>,
    /// How often the node refreshes its liveness entry.
    pub heartbeat_interval: Duration,
    /// How long a liveness entry lives without a heartbeat: a dead node
    /// stops receiving pushes within this time.
    pub node_ttl: Duration,
    /// How often an idle connection is pinged.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// How long a client may take to send its upgrade request.
    pub handshake_timeout: Duration,
    /// How long one burst of writes to a client may take before the client
    /// counts as too slow.
    pub write_timeout: Duration,
    /// Frames a connection may have queued before it counts as too slow.
    pub send_queue: usize,
    /// The largest frame a client may send (clients only send acks).
    pub max_client_frame: usize,
    /// Messages read from the message store per page when a connection
    /// replays or fills a gap: bounds the memory a replay takes.
    pub replay_page: usize,
    /// How long a graceful shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Store reads (stream positions, replay pages, gap fills) that the
    /// node's sessions may have in flight at once. A reconnect storm queues
    /// here instead of in the store, and a client that leaves while queued
    /// costs the store nothing.
    pub store_reads: usize,
    /// Bound on one store read of a session; a read that takes longer closes
    /// the connection with 1011 (the client resumes later).
    pub store_timeout: Duration,
    /// How often the acks received since the last write are written to the
    /// store: one write per user per interval, however many acks came.
    pub ack_interval: Duration,
    /// Lifetime of a user's route hash in the route store. The node keeps
    /// the routes of its live connections fresh, each within a third of it.
    pub route_ttl: Duration,
    /// Most open connections on this node; more are refused with `503
    /// node_full` before the upgrade.
    pub max_connections: usize,
    /// Most open connections of one user on this node; more are refused
    /// with `429 too_many_connections` before the upgrade.
    pub max_connections_per_user: usize,
    /// Push API requests handled at once; more are answered `503` (dispatch
    /// retries them).
    pub push_concurrency: usize,
    /// Bound on reading a push request's head, and then its body.
    pub push_read_timeout: Duration,
    /// The topic namespaces and their options (`EDGEPUSH_TOPIC_NAMESPACES`,
    /// `EDGEPUSH_TOPIC_RETENTION_SECS`): a topic elsewhere is refused.
    pub namespaces: Namespaces,
    /// Most topic subscriptions of one connection (token and client ones;
    /// broadcast not counted): bounds a connection's memory and start work.
    pub max_subscriptions: usize,
    /// How often presence changes are written, and join/leave events sent:
    /// everything that changed within one interval is one write, and at most
    /// one event per topic.
    pub presence_interval: Duration,
    /// Whether the node writes who is online (one presence entry per
    /// connection, written with the coalesced presence writes).
    pub user_presence: bool,
}

impl NodeConfig {
    /// A configuration for tests and dev mode: listeners on loopback port 0,
    /// the given auth and push credential, short timers.
    pub fn for_local(node_id: &str, auth: AuthMode, credential: PushCredential) -> Self {
        Self {
            node_id: NodeId::new(node_id).unwrap_or_else(|_| NodeId::new("node").expect("valid")),
            ws_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            push_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            push_url: None,
            auth,
            push_credentials: vec![credential],
            heartbeat_interval: Duration::from_millis(1000),
            node_ttl: Duration::from_millis(3000),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            send_queue: 1024,
            max_client_frame: edgepush_core::protocol::DEFAULT_MAX_CLIENT_FRAME,
            replay_page: 500,
            drain_timeout: Duration::from_secs(10),
            store_reads: DEFAULT_STORE_READS,
            store_timeout: Duration::from_secs(30),
            ack_interval: Duration::from_millis(500),
            route_ttl: DEFAULT_ROUTE_TTL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            push_concurrency: DEFAULT_PUSH_CONCURRENCY,
            push_read_timeout: Duration::from_secs(10),
            namespaces: Namespaces::default(),
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            presence_interval: DEFAULT_PRESENCE_INTERVAL,
            user_presence: true,
        }
    }

    /// Parses the `EDGEPUSH_*` variables through `lookup`; blank values
    /// count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&lookup);
        let node_id = match vars.get("EDGEPUSH_NODE_ID") {
            Some(id) => {
                NodeId::new(&id).map_err(|e| ConfigError::invalid("EDGEPUSH_NODE_ID", e))?
            }
            None => default_node_id(),
        };
        let auth = match vars.get("EDGEPUSH_AUTH_MODE").as_deref() {
            None | Some("local") => AuthMode::Local(AuthConfig::from_lookup(&lookup)?),
            Some("remote") => AuthMode::Remote {
                url: vars.required("EDGEPUSH_AUTH_URL")?,
            },
            Some(_) => {
                return Err(ConfigError::invalid(
                    "EDGEPUSH_AUTH_MODE",
                    "must be \"local\" or \"remote\"",
                ));
            }
        };
        let credential = PushCredential {
            access_key_id: vars.required("EDGEPUSH_PUSH_ACCESS_KEY_ID")?,
            secret_access_key: vars.required("EDGEPUSH_PUSH_SECRET_ACCESS_KEY")?,
            region: vars
                .get("EDGEPUSH_PUSH_REGION")
                .unwrap_or_else(|| "us-east-1".into()),
        };
        let ms = |name, default_ms| vars.millis(name, Duration::from_millis(default_ms));
        Self {
            node_id,
            ws_addr: vars.parse("EDGEPUSH_WS_ADDR", SocketAddr::from(([0, 0, 0, 0], 9001)))?,
            push_addr: vars.parse("EDGEPUSH_PUSH_ADDR", SocketAddr::from(([0, 0, 0, 0], 9101)))?,
            push_url: vars.get("EDGEPUSH_PUSH_URL"),
            auth,
            push_credentials: vec![credential],
            heartbeat_interval: ms("EDGEPUSH_HEARTBEAT_MS", 2_000)?,
            node_ttl: ms("EDGEPUSH_NODE_TTL_MS", 10_000)?,
            ping_interval: ms("EDGEPUSH_PING_INTERVAL_MS", 25_000)?,
            idle_timeout: ms("EDGEPUSH_IDLE_TIMEOUT_MS", 75_000)?,
            handshake_timeout: ms("EDGEPUSH_HANDSHAKE_TIMEOUT_MS", 10_000)?,
            write_timeout: ms("EDGEPUSH_WRITE_TIMEOUT_MS", 10_000)?,
            send_queue: vars.parse("EDGEPUSH_SEND_QUEUE", 1024)?,
            max_client_frame: vars.parse(
                "EDGEPUSH_MAX_CLIENT_FRAME",
                edgepush_core::protocol::DEFAULT_MAX_CLIENT_FRAME,
            )?,
            replay_page: vars.parse("EDGEPUSH_REPLAY_PAGE", 500)?,
            drain_timeout: ms("EDGEPUSH_DRAIN_TIMEOUT_MS", 10_000)?,
            store_reads: vars.parse("EDGEPUSH_STORE_READS", DEFAULT_STORE_READS)?,
            store_timeout: ms("EDGEPUSH_STORE_TIMEOUT_MS", 30_000)?,
            ack_interval: ms("EDGEPUSH_ACK_INTERVAL_MS", 1_000)?,
            route_ttl: vars.millis("EDGEPUSH_ROUTE_TTL_MS", DEFAULT_ROUTE_TTL)?,
            max_connections: vars.parse("EDGEPUSH_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?,
            max_connections_per_user: vars.parse(
                "EDGEPUSH_MAX_CONNECTIONS_PER_USER",
                DEFAULT_MAX_CONNECTIONS_PER_USER,
            )?,
            push_concurrency: vars.parse("EDGEPUSH_PUSH_CONCURRENCY", DEFAULT_PUSH_CONCURRENCY)?,
            push_read_timeout: ms("EDGEPUSH_PUSH_READ_TIMEOUT_MS", 10_000)?,
            namespaces: Namespaces::from_lookup(&lookup)
                .map_err(|e| ConfigError::invalid(Namespaces::ENV, e))?,
            max_subscriptions: vars
                .parse("EDGEPUSH_MAX_SUBSCRIPTIONS", DEFAULT_MAX_SUBSCRIPTIONS)?,
            presence_interval: vars
                .millis("EDGEPUSH_PRESENCE_INTERVAL_MS", DEFAULT_PRESENCE_INTERVAL)?,
            user_presence: vars.parse("EDGEPUSH_USER_PRESENCE", true)?,
        }
        .validated()
    }

    fn validated(self) -> Result<Self, ConfigError> {
        if self.heartbeat_interval >= self.node_ttl {
            return Err(ConfigError::Invalid {
                name: "EDGEPUSH_HEARTBEAT_MS",
                reason: "must be shorter than EDGEPUSH_NODE_TTL_MS".into(),
            });
        }
        if self.send_queue == 0 || self.replay_page == 0 {
            return Err(ConfigError::Invalid {
                name: "EDGEPUSH_SEND_QUEUE",
                reason: "queues and pages must hold at least one message".into(),
            });
        }
        let at_least_one = [
            ("EDGEPUSH_STORE_READS", self.store_reads),
            ("EDGEPUSH_MAX_CONNECTIONS", self.max_connections),
            (
                "EDGEPUSH_MAX_CONNECTIONS_PER_USER",
                self.max_connections_per_user,
            ),
            ("EDGEPUSH_PUSH_CONCURRENCY", self.push_concurrency),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }
        let nonzero = [
            ("EDGEPUSH_ACK_INTERVAL_MS", self.ack_interval),
            ("EDGEPUSH_STORE_TIMEOUT_MS", self.store_timeout),
            ("EDGEPUSH_PUSH_READ_TIMEOUT_MS", self.push_read_timeout),
            ("EDGEPUSH_PRESENCE_INTERVAL_MS", self.presence_interval),
        ];
        for (name, value) in nonzero {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be more than 0".into(),
                });
            }
        }
        if self.route_ttl < self.node_ttl {
            return Err(ConfigError::Invalid {
                name: "EDGEPUSH_ROUTE_TTL_MS",
                reason: "must be at least EDGEPUSH_NODE_TTL_MS".into(),
            });
        }
        Ok(self)
    }
}

fn default_node_id() -> NodeId {
    let bits: u32 = rand::random();
    NodeId::new(format!("node-{bits:08x}")).expect("valid node id")
}

/// What `edge-node serve` runs on: the node's configuration and its two
/// stores, parsed once from one lookup.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The node.
    pub node: NodeConfig,
    /// Routes and liveness (`EDGEPUSH_REDIS_URL`, `EDGEPUSH_REDIS_CLUSTER`);
    /// its route TTL is the node's.
    pub redis: RedisConfig,
    /// Messages and topic messages (`EDGEPUSH_MONGODB_URI`,
    /// `EDGEPUSH_MONGODB_DATABASE`).
    pub mongo: MongoConfig,
}

impl ServeConfig {
    /// Parses every variable `edge-node serve` reads through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let node = NodeConfig::from_lookup(&lookup)?;
        let mut redis = RedisConfig::from_lookup(&lookup)?;
        // The node refreshes its routes within a third of this.
        redis.route_ttl = node.route_ttl;
        Ok(Self {
            node,
            redis,
            mongo: MongoConfig::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    const BASE: [(&str, &str); 3] = [
        ("EDGEPUSH_JWT_SECRET", "0123456789abcdef0123"),
        ("EDGEPUSH_PUSH_ACCESS_KEY_ID", "AKID"),
        ("EDGEPUSH_PUSH_SECRET_ACCESS_KEY", "secret"),
    ];

    #[test]
    fn parses_defaults_and_overrides() {
        let mut pairs = BASE.to_vec();
        pairs.push(("EDGEPUSH_NODE_ID", "n1"));
        pairs.push(("EDGEPUSH_SEND_QUEUE", "16"));
        let cfg = NodeConfig::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(cfg.node_id.as_str(), "n1");
        assert_eq!(cfg.send_queue, 16);
        assert_eq!(cfg.ws_addr.port(), 9001);
        assert!(matches!(cfg.auth, AuthMode::Local(_)));
        assert_eq!(cfg.max_subscriptions, DEFAULT_MAX_SUBSCRIPTIONS);
        assert!(cfg.user_presence);
    }

    #[test]
    fn reads_topic_settings() {
        let mut pairs = BASE.to_vec();
        pairs.push((
            "EDGEPUSH_TOPIC_NAMESPACES",
            r#"{"chat": {"presence": true}}"#,
        ));
        pairs.push(("EDGEPUSH_MAX_SUBSCRIPTIONS", "4"));
        pairs.push(("EDGEPUSH_USER_PRESENCE", "false"));
        let cfg = NodeConfig::from_lookup(lookup(&pairs)).unwrap();
        let chat = edgepush_core::TopicName::new("chat:1").unwrap();
        assert!(cfg.namespaces.options(&chat).is_some_and(|o| o.presence));
        assert_eq!(cfg.max_subscriptions, 4);
        assert!(!cfg.user_presence);
        let mut pairs = BASE.to_vec();
        pairs.push(("EDGEPUSH_TOPIC_NAMESPACES", "{nope"));
        let err = NodeConfig::from_lookup(lookup(&pairs)).unwrap_err();
        assert!(
            err.to_string().contains("EDGEPUSH_TOPIC_NAMESPACES"),
            "{err}"
        );
    }

    #[test]
    fn refuses_to_run_without_a_push_credential() {
        let err = NodeConfig::from_lookup(lookup(&BASE[..1])).unwrap_err();
        assert!(
            err.to_string().contains("EDGEPUSH_PUSH_ACCESS_KEY_ID"),
            "{err}"
        );
    }

    #[test]
    fn reports_malformed_values() {
        let mut pairs = BASE.to_vec();
        pairs.push(("EDGEPUSH_WS_ADDR", "not an address"));
        let err = NodeConfig::from_lookup(lookup(&pairs)).unwrap_err();
        assert!(err.to_string().contains("EDGEPUSH_WS_ADDR"), "{err}");
        let mut pairs = BASE.to_vec();
        pairs.push(("EDGEPUSH_HEARTBEAT_MS", "20000"));
        assert!(NodeConfig::from_lookup(lookup(&pairs)).is_err());
        let mut pairs = BASE.to_vec();
        pairs.push(("EDGEPUSH_AUTH_MODE", "sometimes"));
        assert!(NodeConfig::from_lookup(lookup(&pairs)).is_err());
    }

    #[test]
    fn blank_values_take_the_default_and_serve_reads_the_stores() {
        let mut pairs = BASE.to_vec();
        pairs.push(("EDGEPUSH_SEND_QUEUE", " "));
        pairs.push(("EDGEPUSH_REDIS_URL", "redis://h:6379"));
        pairs.push(("EDGEPUSH_REDIS_CLUSTER", "yes"));
        pairs.push(("EDGEPUSH_MONGODB_URI", "mongodb://h:27017"));
        pairs.push(("EDGEPUSH_MONGODB_DATABASE", "other"));
        pairs.push(("EDGEPUSH_ROUTE_TTL_MS", "60000"));
        let cfg = ServeConfig::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(cfg.node.send_queue, 1024);
        assert!(cfg.redis.cluster);
        assert_eq!(cfg.redis.route_ttl, Duration::from_secs(60));
        assert_eq!(cfg.mongo.database, "other");
        let without_mongo = &pairs[..pairs.len() - 3];
        assert_eq!(
            ServeConfig::from_lookup(lookup(without_mongo)).unwrap_err(),
            ConfigError::Missing("EDGEPUSH_MONGODB_URI")
        );
    }
}
