//! The `edge-node` binary: `edge-node serve` runs one edge node, configured
//! from `EDGEPUSH_*` variables through the shared start-up path
//! ([`edgepush_startup::start`]). Dev mode is `edgepush-dev`'s binary.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge_node::ServeConfig;
use edgepush_startup::LogStyle;

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
    let config = ServeConfig::from_lookup(env.lookup()).context("configuration")?;
    edge_node::serve(config, edgepush_startup::shutdown_signal()).await?;
    Ok(())
}
