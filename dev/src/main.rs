//! The `edgepush-dev` binary: dev mode (the whole system in one process)
//! by default, `token` to mint a token dev mode accepts.
//!
//! ```sh
//! cargo run --release -p edgepush-dev
//! cargo run -q --release -p edgepush-dev -- token --user alice
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use edgepush_dev::{DEV_API_KEY, DEV_JWT_SECRET, DevConfig};
use edgepush_startup::{Env, LogStyle};

/// Redis for routes and liveness (dev mode: in memory when unset).
const REDIS_URL: &str = "REDIS_URL";
/// MongoDB for messages (dev mode: in memory when unset).
const MONGODB_URI: &str = "MONGODB_URI";
/// The collect API key dev mode accepts.
const DEV_API_KEY_VAR: &str = "EDGEPUSH_DEV_API_KEY";
/// The HS256 secret `token` signs with (dev mode's own when unset).
const JWT_SECRET: &str = "EDGEPUSH_JWT_SECRET";

#[derive(Parser)]
#[command(
    name = "edgepush-dev",
    version,
    about = "edgepush dev mode: collect, dispatch, auth and two edge nodes in one process",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    dev: DevArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one edge node from EDGEPUSH_* variables, as `edge-node serve`
    /// does (without ssm:/secretsmanager: references): what dev mode's
    /// `--node-processes` starts.
    #[command(hide = true)]
    Serve,
    /// Print a token that dev mode accepts (alone on stdout). Signs with
    /// EDGEPUSH_JWT_SECRET when set, else with dev mode's secret.
    Token {
        /// The user the token speaks for (`sub`).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

#[derive(Args)]
struct DevArgs {
    /// Redis for routes and liveness [env: REDIS_URL]; in memory when unset.
    #[arg(long)]
    redis_url: Option<String>,
    /// MongoDB for messages [env: MONGODB_URI]; in memory when unset.
    #[arg(long)]
    mongodb_uri: Option<String>,
    /// The collect API's key [env: EDGEPUSH_DEV_API_KEY] [default: dev-key].
    #[arg(long)]
    api_key: Option<String>,
    /// Where collect listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    collect_addr: SocketAddr,
    /// The first node's WebSocket port; the second node uses the next one.
    #[arg(long, default_value_t = 9001)]
    ws_port: u16,
    /// The first node's push API port; the second node uses the next one.
    #[arg(long, default_value_t = 9101)]
    push_port: u16,
    /// Run the two nodes as child processes of this binary, which can be
    /// killed from a terminal (the demo console shows their pids); needs
    /// REDIS_URL and MONGODB_URI.
    #[arg(long)]
    node_processes: bool,
    /// Most connections of one user on each (in-process) node.
    #[arg(long, default_value_t = edge_node::config::DEFAULT_MAX_CONNECTIONS_PER_USER)]
    max_connections_per_user: usize,
}

/// A port for each node: `port` and the next one, or two free ones for 0.
fn port_pair(port: u16) -> [u16; 2] {
    if port == 0 {
        [0, 0]
    } else {
        [port, port.saturating_add(1)]
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Dev mode is built without AWS support: a `ssm:` value is refused.
    let env = Env::from_process().resolve().await?;
    match cli.command {
        Some(Command::Serve) => {
            edgepush_startup::init_tracing(LogStyle::Server, &env);
            let config = edge_node::ServeConfig::from_lookup(env.lookup())?;
            edge_node::serve(config, edgepush_startup::shutdown_signal()).await?;
            Ok(())
        }
        Some(Command::Token { user, ttl_secs }) => {
            let secret = env
                .get(JWT_SECRET)
                .unwrap_or_else(|| DEV_JWT_SECRET.to_owned());
            let token =
                edgepush_dev::mint_token(secret.as_bytes(), &user, Duration::from_secs(ttl_secs))?;
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
            Ok(())
        }
        None => {
            edgepush_startup::init_tracing(LogStyle::Server, &env);
            let args = cli.dev;
            let cfg = DevConfig {
                redis_url: args.redis_url.or_else(|| env.get(REDIS_URL)),
                mongodb_uri: args.mongodb_uri.or_else(|| env.get(MONGODB_URI)),
                api_key: args
                    .api_key
                    .or_else(|| env.get(DEV_API_KEY_VAR))
                    .unwrap_or_else(|| DEV_API_KEY.to_owned()),
                collect_addr: args.collect_addr,
                ws_ports: port_pair(args.ws_port),
                push_ports: port_pair(args.push_port),
                node_processes: if args.node_processes {
                    Some(std::env::current_exe().context("locating the edgepush-dev binary")?)
                } else {
                    None
                },
                max_connections_per_user: args.max_connections_per_user,
                ..DevConfig::default()
            };
            let running = edgepush_dev::start(cfg).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", running.banner());
            }
            edgepush_startup::shutdown_signal().await;
            running.stop().await
        }
    }
}
