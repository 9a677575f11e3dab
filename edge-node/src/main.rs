//! The `edge-node` binary: `serve` runs one edge node, `dev` runs the whole
//! system in one process, `token` mints a dev-mode token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge_node::dev::{self, DevConfig};
use edge_node::{NodeConfig, NodeDeps};
use edgepush_delivery::{HttpPusher, PushClientConfig};
use edgepush_mongo::{MongoConfig, MongoMessageStore, MongoTopicStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "edge-node", version, about = "edgepush edge node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one edge node, configured from EDGEPUSH_* environment variables.
    Serve,
    /// Run the whole system in one process: collect, dispatch, auth and two
    /// edge nodes, on in-memory stores unless REDIS_URL / MONGODB_URI are set.
    Dev(DevArgs),
    /// Print a token that dev mode accepts (alone on stdout).
    Token {
        /// The user the token speaks for (`sub`).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

#[derive(clap::Args)]
struct DevArgs {
    /// Redis for routes and liveness; in-memory when unset.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// MongoDB for messages; in-memory when unset.
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: Option<String>,
    /// The collect API's key.
    #[arg(long, env = "EDGEPUSH_DEV_API_KEY", default_value = dev::DEV_API_KEY)]
    api_key: String,
    /// Where collect listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    collect_addr: SocketAddr,
    /// The first node's WebSocket port; the second node uses the next one.
    #[arg(long, default_value_t = 9001)]
    ws_port: u16,
    /// The first node's push API port; the second node uses the next one.
    #[arg(long, default_value_t = 9101)]
    push_port: u16,
    /// Run the two nodes as child processes (`edge-node serve`) that can be
    /// killed from a terminal; needs REDIS_URL and MONGODB_URI.
    #[arg(long)]
    node_processes: bool,
}

/// A port for each node: `port` and the next one, or two free ones for 0.
fn port_pair(port: u16) -> [u16; 2] {
    if port == 0 {
        [0, 0]
    } else {
        [port, port.saturating_add(1)]
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("EDGEPUSH_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token { user, ttl_secs } => {
            let secret = std::env::var("EDGEPUSH_JWT_SECRET")
                .unwrap_or_else(|_| dev::DEV_JWT_SECRET.to_owned());
            let token = dev::mint_token(secret.as_bytes(), &user, Duration::from_secs(ttl_secs))?;
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
            Ok(())
        }
        Command::Serve => {
            init_tracing();
            serve().await
        }
        Command::Dev(args) => {
            init_tracing();
            let cfg = DevConfig {
                redis_url: args.redis_url,
                mongodb_uri: args.mongodb_uri,
                api_key: args.api_key,
                collect_addr: args.collect_addr,
                ws_ports: port_pair(args.ws_port),
                push_ports: port_pair(args.push_port),
                node_processes: if args.node_processes {
                    Some(std::env::current_exe().context("locating the edge-node binary")?)
                } else {
                    None
                },
                ..DevConfig::default()
            };
            let running = dev::start(cfg).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", running.banner());
            }
            edge_node::shutdown::signal().await;
            running.stop().await
        }
    }
}

/// Runs one edge node configured from `EDGEPUSH_*` variables.
///
/// Any of them may be `ssm:/name`, `secretsmanager:<id>` or
/// `secretsmanager:<id>#<key>` (the push credential, the JWT keys, the
/// Redis/MongoDB URLs with their passwords): they are resolved once, here,
/// and everything below reads the resolved map. With only literal values
/// `resolve_process_env` returns them as they are without building an AWS
/// client, so a local run needs no credentials and makes no AWS call.
async fn serve() -> anyhow::Result<()> {
    let resolved = edgepush_aws::resolve_process_env("EDGEPUSH_")
        .await
        .context("resolving ssm:/secretsmanager: configuration values")?;
    let env = |k: &str| resolved.get(k).cloned();
    let config = NodeConfig::from_lookup(&env).context("configuration")?;
    let redis_url = env("EDGEPUSH_REDIS_URL").context("EDGEPUSH_REDIS_URL must be set")?;
    let mongodb_uri = env("EDGEPUSH_MONGODB_URI").context("EDGEPUSH_MONGODB_URI must be set")?;
    let mut mongo = MongoConfig::new(mongodb_uri);
    if let Some(db) = env("EDGEPUSH_MONGODB_DATABASE") {
        mongo.database = db;
    }
    let mut redis =
        RedisConfig::from_settings(redis_url, env("EDGEPUSH_REDIS_CLUSTER").as_deref())?;
    // The node refreshes its routes within a third of this.
    redis.route_ttl = config.route_ttl;
    let routes = Arc::new(RedisRouteStore::connect(redis).await.context("redis")?);
    let messages = MongoMessageStore::connect(mongo.clone())
        .await
        .context("mongodb")?;
    let topics = MongoTopicStore::on(messages.database(), mongo)
        .await
        .context("mongodb topic store")?;
    // Presence events and client publishes go to other nodes signed with
    // the push credential every node verifies.
    let credential = config
        .push_credentials
        .first()
        .cloned()
        .context("a push credential is required")?;
    let pusher = HttpPusher::new(PushClientConfig::new(credential)).context("push client")?;
    let deps = NodeDeps {
        routes: routes.clone(),
        nodes: routes.clone(),
        messages: Arc::new(messages),
        verifier: edge_node::verifier_for(&config.auth)?,
        topics: Arc::new(topics),
        topic_routes: routes.clone(),
        presence: routes,
        pusher: Arc::new(pusher),
    };
    let ws = TcpListener::bind(config.ws_addr)
        .await
        .with_context(|| format!("bind {}", config.ws_addr))?;
    let push = TcpListener::bind(config.push_addr)
        .await
        .with_context(|| format!("bind {}", config.push_addr))?;
    edge_node::run(ws, push, config, deps, edge_node::shutdown::signal()).await?;
    Ok(())
}
