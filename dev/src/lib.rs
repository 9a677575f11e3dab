//! Dev mode: the whole system in one process, for a newcomer's first run
//! (`cargo run --release -p edgepush-dev`).
//!
//! Collect at `http://127.0.0.1:8080`, two edge nodes at
//! `ws://127.0.0.1:9001/ws` and `ws://127.0.0.1:9002/ws` (push APIs on 9101
//! and 9102), auth and dispatch in process. Stores are in memory unless a
//! Redis URL and/or a MongoDB URI are given. Dispatch pushes to the nodes
//! over their real, signed push API.
//!
//! This crate owns dev mode so that the edge node's library links neither
//! collect nor dispatch, and it builds them without their `aws` features:
//! no AWS SDK is compiled for the first command.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use edgepush_auth::{AuthConfig, Claims, mint_hs256};
use edgepush_collect::{ApiKeys, Collector, Limits, Topics};
use edgepush_core::memory::{
    MemoryMessageStore, MemoryPresence, MemoryRouteStore, MemoryTopicRoutes, MemoryTopicStore,
};
use edgepush_core::topic::{ClientPublish, NamespaceOptions};
use edgepush_core::{
    MessageStore, Namespaces, NodeDirectory, PresenceStore, RouteStore, TopicRoutes, TopicStore,
};
use edgepush_delivery::sigv4::PushCredential;
use edgepush_delivery::{HttpPusher, PushClientConfig};
use edgepush_dispatch::{DirectHandoff, Dispatcher};
use edgepush_mongo::{MongoConfig, MongoMessageStore, MongoTopicStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use edge_node::{AuthMode, NodeConfig, NodeDeps};

/// The collect API key dev mode accepts unless told otherwise.
pub const DEV_API_KEY: &str = "dev-key";
/// The HS256 secret of dev-mode tokens (`edgepush-dev token` signs with it).
pub const DEV_JWT_SECRET: &str = "edgepush-dev-secret-do-not-use-in-production";
/// The push API credential dev mode signs and verifies with.
pub const DEV_PUSH_ACCESS_KEY_ID: &str = "dev-push";
/// Its secret.
pub const DEV_PUSH_SECRET: &str = "dev-push-secret";

/// What dev mode runs on.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Redis for routes and liveness; in memory when `None`.
    pub redis_url: Option<String>,
    /// MongoDB for messages; in memory when `None`.
    pub mongodb_uri: Option<String>,
    /// The MongoDB database.
    pub mongodb_database: String,
    /// The collect API key.
    pub api_key: String,
    /// Where collect listens.
    pub collect_addr: SocketAddr,
    /// The two nodes' WebSocket ports (0 picks a free one).
    pub ws_ports: [u16; 2],
    /// The two nodes' push API ports (0 picks a free one).
    pub push_ports: [u16; 2],
    /// Run the nodes as child processes of this binary (`serve`), so one can
    /// be killed from a terminal; needs Redis and MongoDB.
    pub node_processes: Option<std::path::PathBuf>,
    /// Most connections of one user on a node (in-process nodes): the
    /// benchmarks hold a thousand connections of one user.
    pub max_connections_per_user: usize,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            mongodb_uri: None,
            mongodb_database: "edgepush_dev".into(),
            api_key: DEV_API_KEY.into(),
            collect_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws_ports: [9001, 9002],
            push_ports: [9101, 9102],
            node_processes: None,
            max_connections_per_user: edge_node::config::DEFAULT_MAX_CONNECTIONS_PER_USER,
        }
    }
}

/// The Redis (or in-memory) side of dev mode's stores.
struct RouteStores {
    routes: Arc<dyn RouteStore>,
    nodes: Arc<dyn NodeDirectory>,
    topic_routes: Arc<dyn TopicRoutes>,
    presence: Arc<dyn PresenceStore>,
}

/// Dev mode's topic namespaces: the default one, and `chat` with presence,
/// join/leave events and client publishes by subscribers, to try them all.
pub fn dev_namespaces() -> Namespaces {
    Namespaces::new([
        (String::new(), NamespaceOptions::default()),
        (
            "chat".to_owned(),
            NamespaceOptions {
                presence: true,
                join_leave: true,
                client_publish: ClientPublish::Subscribers,
                ..NamespaceOptions::default()
            },
        ),
    ])
}

/// A token dev mode accepts, for `user`, valid for `ttl`.
pub fn mint_token(secret: &[u8], user: &str, ttl: Duration) -> anyhow::Result<String> {
    edgepush_core::UserId::new(user).with_context(|| format!("user id {user:?}"))?;
    Ok(mint_hs256(secret, &Claims::new(user, ttl)))
}

/// The running system.
pub struct DevSystem {
    /// Where collect listens.
    pub collect_addr: SocketAddr,
    /// The nodes' WebSocket addresses.
    pub ws_addrs: Vec<SocketAddr>,
    /// The nodes' push API addresses.
    pub push_addrs: Vec<SocketAddr>,
    stores: &'static str,
    api_key: String,
    /// The node processes' ids (empty when the nodes run in process).
    pub node_pids: Vec<u32>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The message store, settled at stop (what its appends left to the
    /// background is written before the process exits).
    messages: Arc<dyn MessageStore>,
}

impl DevSystem {
    /// The start-up text: endpoints, keys, a walkthrough.
    pub fn banner(&self) -> String {
        let ws: Vec<String> = self
            .ws_addrs
            .iter()
            .map(|a| format!("ws://{a}/ws"))
            .collect();
        format!(
            "edgepush dev mode is up ({stores})\n\
             \x20 collect API : http://{collect}/v1/messages   (Authorization: Bearer {key})\n\
             \x20 edge nodes  : {ws}\n\
             \x20 push APIs   : {push}   (SigV4 execute-api, access key id {akid}, secret {secret})\n\
             \x20 tokens      : edgepush-dev token --user alice   (HS256, dev secret)\n\
             Try:\n\
             \x20 TOKEN=$(cargo run -q --release -p edgepush-dev -- token --user alice)\n\
             \x20 websocat \"{ws0}?token=$TOKEN\"      # or any WebSocket client\n\
             \x20 curl -s -X POST http://{collect}/v1/messages -H 'Authorization: Bearer {key}' \\\n\
             \x20      -H 'content-type: application/json' -d '{{\"to\":[\"alice\"],\"data\":{{\"text\":\"hello\"}}}}'\n\
             Console: http://{collect}/console/   {kill}\n\
             Ctrl-C drains and stops.",
            kill = match self.node_pids.as_slice() {
                [] => String::new(),
                pids => format!(
                    "(node pids: {}; kill -9 one and watch the page move)",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            stores = self.stores,
            collect = self.collect_addr,
            key = self.api_key,
            ws = ws.join("  "),
            ws0 = ws.first().cloned().unwrap_or_default(),
            push = self
                .push_addrs
                .iter()
                .map(|a| format!("http://{a}"))
                .collect::<Vec<_>>()
                .join("  "),
            akid = DEV_PUSH_ACCESS_KEY_ID,
            secret = DEV_PUSH_SECRET,
        )
    }

    /// Drains the nodes and stops everything.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.context("dev task panicked")?;
        }
        self.messages.settle().await;
        Ok(())
    }
}

/// Starts dev mode.
pub async fn start(cfg: DevConfig) -> anyhow::Result<DevSystem> {
    let (routes, route_kind) = match &cfg.redis_url {
        Some(url) => {
            let store = Arc::new(
                RedisRouteStore::connect(RedisConfig::new(url.clone()))
                    .await
                    .context("connecting to Redis")?,
            );
            (
                RouteStores {
                    routes: store.clone(),
                    nodes: store.clone(),
                    topic_routes: store.clone(),
                    presence: store,
                },
                "Redis",
            )
        }
        None => {
            let store = Arc::new(MemoryRouteStore::new());
            (
                RouteStores {
                    routes: store.clone(),
                    nodes: store,
                    topic_routes: Arc::new(MemoryTopicRoutes::default()),
                    presence: Arc::new(MemoryPresence::new()),
                },
                "in-memory routes",
            )
        }
    };
    let (messages, topics, message_kind): (Arc<dyn MessageStore>, Arc<dyn TopicStore>, &str) =
        match &cfg.mongodb_uri {
            Some(uri) => {
                let mut mongo = MongoConfig::new(uri.clone());
                mongo.database = cfg.mongodb_database.clone();
                let messages = MongoMessageStore::connect(mongo.clone())
                    .await
                    .context("connecting to MongoDB")?;
                let topics = MongoTopicStore::on(messages.database(), mongo)
                    .await
                    .context("opening the topic store")?;
                (Arc::new(messages), Arc::new(topics), "MongoDB")
            }
            None => (
                Arc::new(MemoryMessageStore::new()),
                Arc::new(MemoryTopicStore::new()),
                "in-memory messages",
            ),
        };
    let stores: &'static str = match (route_kind, message_kind) {
        ("Redis", "MongoDB") => "Redis + MongoDB",
        ("Redis", _) => "Redis + in-memory messages",
        (_, "MongoDB") => "in-memory routes + MongoDB",
        _ => "in-memory stores",
    };

    let credential = PushCredential::new(DEV_PUSH_ACCESS_KEY_ID, DEV_PUSH_SECRET, "us-east-1");
    let auth = AuthMode::Local(AuthConfig::hs256(DEV_JWT_SECRET.as_bytes().to_vec()));
    let pusher = Arc::new(
        HttpPusher::new(PushClientConfig::new(credential.clone())).context("push client")?,
    );
    let deps = NodeDeps {
        routes: routes.routes.clone(),
        nodes: routes.nodes.clone(),
        messages: messages.clone(),
        verifier: edge_node::verifier_for(&auth)?,
        topics: topics.clone(),
        topic_routes: routes.topic_routes.clone(),
        presence: routes.presence.clone(),
        pusher: pusher.clone(),
    };

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut ws_addrs = Vec::new();
    let mut push_addrs = Vec::new();
    let mut console_nodes = Vec::new();
    let mut node_pids = Vec::new();
    if let Some(binary) = &cfg.node_processes {
        let (Some(redis_url), Some(mongodb_uri)) = (&cfg.redis_url, &cfg.mongodb_uri) else {
            anyhow::bail!(
                "--node-processes needs REDIS_URL and MONGODB_URI: the node processes share them"
            );
        };
        let processes = edgepush_console::NodeProcesses::start(
            edgepush_console::NodeProcessConfig {
                binary: binary.clone(),
                redis_url: redis_url.clone(),
                mongodb_uri: mongodb_uri.clone(),
                mongodb_database: cfg.mongodb_database.clone(),
                push_access_key_id: DEV_PUSH_ACCESS_KEY_ID.into(),
                push_secret: DEV_PUSH_SECRET.into(),
                jwt_secret: DEV_JWT_SECRET.into(),
                ports: cfg.ws_ports.into_iter().zip(cfg.push_ports).collect(),
                restart_after: Duration::from_secs(1),
                env: vec![(Namespaces::ENV.to_owned(), dev_namespaces().to_json())],
            },
            stop.clone(),
        )
        .await?;
        (ws_addrs, push_addrs) = (processes.ws_addrs(), processes.push_addrs());
        (console_nodes, node_pids) = (processes.console_nodes(), processes.pids());
        tasks.extend(processes.into_tasks());
    }
    let in_process = if cfg.node_processes.is_some() { 0 } else { 2 };
    for (i, (ws_port, push_port)) in cfg
        .ws_ports
        .iter()
        .zip(cfg.push_ports.iter())
        .enumerate()
        .take(in_process)
    {
        let ws = TcpListener::bind(("127.0.0.1", *ws_port))
            .await
            .with_context(|| format!("binding ws port {ws_port}"))?;
        let push = TcpListener::bind(("127.0.0.1", *push_port))
            .await
            .with_context(|| format!("binding push port {push_port}"))?;
        ws_addrs.push(ws.local_addr()?);
        push_addrs.push(push.local_addr()?);
        console_nodes.push(edgepush_console::ConsoleNode {
            name: format!("dev-{}", i + 1),
            ws_url: format!("ws://{}/ws", ws.local_addr()?),
            push_url: format!("http://{}", push.local_addr()?),
            pid: None,
        });
        let node_cfg = NodeConfig {
            namespaces: dev_namespaces(),
            max_connections_per_user: cfg.max_connections_per_user,
            ..NodeConfig::for_local(&format!("dev-{}", i + 1), auth.clone(), credential.clone())
        };
        let deps = deps.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = edge_node::run(ws, push, node_cfg, deps, stop.cancelled_owned()).await {
                tracing::error!(error = %e, "dev node failed");
            }
        }));
    }

    let dispatcher = Arc::new(Dispatcher {
        routes: routes.routes,
        nodes: routes.nodes.clone(),
        pusher,
        retry: edgepush_dispatch::RetryPolicy::default(),
        topic_routes: routes.topic_routes,
    });
    let collector = Arc::new(Collector {
        store: messages.clone(),
        handoff: Arc::new(DirectHandoff::new(dispatcher)),
        api_keys: ApiKeys::single("dev", &cfg.api_key),
        limits: Limits::default(),
        topics: Some(Topics {
            store: topics,
            namespaces: dev_namespaces(),
            presence: routes.presence,
            nodes: routes.nodes.clone(),
        }),
    });
    let listener = TcpListener::bind(cfg.collect_addr)
        .await
        .with_context(|| format!("binding collect on {}", cfg.collect_addr))?;
    let collect_addr = listener.local_addr()?;
    let console = edgepush_console::ConsoleConfig {
        nodes: console_nodes,
        api_key: cfg.api_key.clone(),
        jwt_secret: DEV_JWT_SECRET.as_bytes().to_vec(),
        token_ttl: Duration::from_secs(3600),
        topics: true,
    };
    let app = edgepush_console::router(console).merge(edgepush_collect::router(collector));
    let stop_collect = stop.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop_collect.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "collect server failed");
        }
    }));
    tracing::info!(%collect_addr, ?ws_addrs, stores, "dev mode started");
    Ok(DevSystem {
        collect_addr,
        ws_addrs,
        push_addrs,
        stores,
        api_key: cfg.api_key,
        node_pids,
        stop,
        tasks,
        messages,
    })
}
