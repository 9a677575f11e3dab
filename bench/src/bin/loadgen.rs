//! `loadgen`: hold many WebSocket connections to edgepush or Centrifugo,
//! count and time the messages they receive.
//!
//! ```text
//! loadgen --url ws://127.0.0.1:9001/ws --secret $SECRET --connections 19000 \
//!         --sources 127.1.0.1+64 --rate 3000 --steps 1000,5000,19000 --server-pid $NODE_PID
//! ```
//!
//! stderr: a progress line while connecting (`connected 12000/19000,
//! 3200/s, errors 0`). stdout: JSON lines: `{"phase":"step",...}` after
//! each step (with the server's RSS when `--server-pid` is given),
//! `{"phase":"ready",...}` once every connection is open, and
//! `{"phase":"done",...}` at the end with connected, failed, received and
//! latency percentiles.
//!
//! With `--wait-stdin` it waits for a line on stdin after `ready` (another
//! process says "go"), runs the probe, and holds until stdin closes: how
//! `bench-run` drives several generator processes at once.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use edgepush_bench::loadgen::{Protocol, Sources, Swarm, SwarmConfig, Users};
use edgepush_bench::procfs;
use edgepush_bench::publish::{PublishConfig, Publisher, Target};
use edgepush_delivery::sigv4::PushCredential;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "WebSocket load generator for edgepush and Centrifugo"
)]
struct Args {
    /// WebSocket URL; repeat for several servers (connection i uses URL i % count).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// `edgepush` or `centrifugo`.
    #[arg(long, default_value = "edgepush")]
    protocol: Protocol,
    /// HS256 secret of the tokens.
    #[arg(long, env = "LOADGEN_SECRET")]
    secret: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Open connections in steps (comma-separated totals); RSS is read at each.
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// New connections per second (0: as fast as handshakes complete).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 256)]
    max_pending: usize,
    /// Source addresses, `127.1.0.1+64` (64 addresses from 127.1.0.1).
    #[arg(long)]
    sources: Option<Sources>,
    /// User ids are `<prefix><k>`.
    #[arg(long, default_value = "u")]
    user_prefix: String,
    /// Number of the first user.
    #[arg(long, default_value_t = 0)]
    first_user: usize,
    /// Every connection is this one user (a fan-out to one user's devices).
    #[arg(long)]
    single_user: Option<String>,
    /// Centrifugo: the channel all connections subscribe to (default: one per user).
    #[arg(long)]
    channel: Option<String>,
    /// WebSocket read buffer per connection, bytes.
    #[arg(long, default_value_t = 1024)]
    read_buffer: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Server process ids whose RSS and CPU are reported.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Seconds to let servers settle before reading their RSS at a step.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Messages each connection should receive before `done` (0: don't wait).
    #[arg(long, default_value_t = 0)]
    expect_messages: u64,
    /// How long to wait for them.
    #[arg(long, default_value_t = 60.0)]
    wait_secs: f64,
    /// Hold the connections this long after they are ready.
    #[arg(long, default_value_t = 0.0)]
    hold_secs: f64,
    /// After `ready`, wait for a line on stdin; at the end, hold until stdin closes.
    #[arg(long)]
    wait_stdin: bool,
    /// Edge node push URLs, aligned with --url: after `ready` (and "go"),
    /// push --probe messages to every connection through the batch API.
    #[arg(long)]
    push_url: Vec<String>,
    /// Unicast probe messages per connection.
    #[arg(long, default_value_t = 0)]
    probe: u64,
    /// Push API access key id.
    #[arg(long, default_value = "bench-push")]
    push_access_key: String,
    /// Push API secret.
    #[arg(long, default_value = "bench-push-secret")]
    push_secret: String,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(run(args))
}

fn emit(value: serde_json::Value) {
    #[allow(clippy::print_stdout)]
    {
        println!("{value}");
    }
}

fn servers(pids: &[u32]) -> serde_json::Value {
    pids.iter()
        .map(|pid| {
            json!({
                "pid": pid,
                "memory": procfs::memory(*pid).ok(),
                "cpu_s": procfs::cpu_time(*pid).ok().map(|d| d.as_secs_f64()),
            })
        })
        .collect()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = SwarmConfig::new(args.url.clone(), args.protocol, args.secret.as_bytes());
    cfg.users = match &args.single_user {
        Some(u) => Users::Single(u.clone()),
        None => Users::PerConnection {
            prefix: args.user_prefix.clone(),
        },
    };
    cfg.first_user = args.first_user;
    cfg.channel = args.channel.clone();
    cfg.sources = args.sources;
    cfg.rate = args.rate;
    cfg.max_pending = args.max_pending;
    cfg.read_buffer = args.read_buffer;
    cfg.progress = !args.quiet;
    let mut swarm = Swarm::new(cfg).await?;
    let me = std::process::id();
    let mut steps = args.steps.clone();
    steps.retain(|n| *n < args.connections);
    steps.push(args.connections);
    emit(
        json!({"phase": "start", "servers": servers(&args.server_pid), "loadgen": procfs::memory(me).ok()}),
    );
    for n in steps {
        swarm.grow(n).await;
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
        emit(json!({
            "phase": "step",
            "target": n,
            "swarm": swarm.report(),
            "servers": servers(&args.server_pid),
            "loadgen": procfs::memory(me).ok(),
            "sockstat": procfs::sockstat().ok(),
        }));
    }
    emit(json!({"phase": "ready", "swarm": swarm.report()}));

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    if args.wait_stdin {
        let _ = stdin.next_line().await;
    }
    let mut publish_reports = Vec::new();
    if args.probe > 0 && !args.push_url.is_empty() {
        swarm.latency().reset();
        let before = swarm.received();
        let credential = PushCredential::new(&args.push_access_key, &args.push_secret, "us-east-1");
        let ids = swarm.conn_ids();
        let mut jobs = Vec::new();
        for (node, push_url) in args.push_url.iter().enumerate() {
            let pairs: Vec<(String, String, u64)> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % args.url.len() == node % args.url.len())
                .filter_map(|(i, c)| c.clone().map(|c| (swarm.config().user_of(i), c, 1)))
                .collect();
            let publisher = Publisher::new(
                Target::BatchUnicast {
                    push_url: push_url.clone(),
                    pairs,
                    chunk: 1000,
                },
                Some(credential.clone()),
            )?;
            let probe = args.probe;
            jobs.push(tokio::spawn(async move {
                publisher
                    .run(&PublishConfig {
                        count: probe,
                        rate: 1.0,
                        ..PublishConfig::default()
                    })
                    .await
            }));
        }
        for job in jobs {
            publish_reports.push(job.await?);
        }
        let want = before + args.probe * swarm.connected() as u64;
        swarm
            .wait_received(want, Duration::from_secs_f64(args.wait_secs))
            .await;
    }
    if args.expect_messages > 0 {
        let want = args.expect_messages * swarm.len() as u64;
        swarm
            .wait_received(want, Duration::from_secs_f64(args.wait_secs))
            .await;
    }
    if args.hold_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    }
    if args.wait_stdin {
        while let Ok(Some(_)) = stdin.next_line().await {}
    }
    let report = swarm.report();
    let per_conn = swarm.received_per_connection();
    let exact = args.expect_messages > 0
        && per_conn
            .iter()
            .all(|n| u64::from(*n) == args.expect_messages);
    emit(json!({
        "phase": "done",
        "connected": report.connected,
        "failed": report.failed,
        "dropped": report.dropped,
        "received": report.received,
        "p50_us": report.latency.p50_us,
        "p99_us": report.latency.p99_us,
        "p999_us": report.latency.p999_us,
        "every_connection_got_expected": exact,
        "swarm": report,
        "probe": publish_reports,
        "servers": servers(&args.server_pid),
    }));
    swarm.close(Duration::from_secs(10)).await;
    Ok(())
}
