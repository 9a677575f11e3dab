//! The `edge-node` binary: `edge-node serve` runs one edge node, configured
//! from `EDGEPUSH_*` variables through the shared start-up path
//! ([`edgepush_startup::start`]). Dev mode is `edgepush-dev`'s binary.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge_node::{NodeDeps, ServeConfig};
use edgepush_mongo::MongoMessageStore;
use edgepush_redis::RedisRouteStore;
use edgepush_startup::LogStyle;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli {
        command: Command::Serve,
    } = Cli::parse();
    serve().await
}

/// Runs one edge node configured from `EDGEPUSH_*` variables.
///
/// Any of them may be `ssm:/name`, `secretsmanager:<id>` or
/// `secretsmanager:<id>#<key>` (the push credential, the JWT keys, the
/// Redis/MongoDB URLs with their passwords): the start-up path resolves
/// them once, and everything below reads the resolved values. With only
/// literal values nothing calls AWS, so a local run needs no credentials.
async fn serve() -> anyhow::Result<()> {
    let env = edgepush_startup::start(LogStyle::Server)
        .await
        .context("resolving ssm:/secretsmanager: configuration values")?;
    let ServeConfig { node, redis, mongo } =
        ServeConfig::from_lookup(env.lookup()).context("configuration")?;
    let routes = Arc::new(RedisRouteStore::connect(redis).await.context("redis")?);
    let messages = Arc::new(MongoMessageStore::connect(mongo).await.context("mongodb")?);
    let deps = NodeDeps {
        routes: routes.clone(),
        nodes: routes,
        messages,
        verifier: edge_node::verifier_for(&node.auth).context("token verification")?,
    };
    let ws = TcpListener::bind(node.ws_addr)
        .await
        .with_context(|| format!("bind {}", node.ws_addr))?;
    let push = TcpListener::bind(node.push_addr)
        .await
        .with_context(|| format!("bind {}", node.push_addr))?;
    edge_node::run(ws, push, node, deps, edge_node::shutdown::signal()).await?;
    Ok(())
}
