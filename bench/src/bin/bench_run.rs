//! `bench-run`: every benchmark scenario, edgepush and Centrifugo in the
//! same run; writes `results.json`, `results.md` and `memory_latency.svg`.
//!
//! `scripts/bench` builds the binaries, starts a private Redis and MongoDB
//! wire server, installs Centrifugo, and calls this with their addresses.
//! This process spawns the servers under test (`edge-node serve`,
//! `edgepush-dev`, `centrifugo`), holds up to ~19,000 client connections
//! itself, and spawns `loadgen` processes for the many-process run.
//!
//! Scenarios (sizes from the flags; `--quick` shrinks everything):
//! 1. memory: RSS of the server at 0 and at each N idle connections (one
//!    user / one personal channel per connection), plus one unicast round
//!    (a message to each of the N users) at each N;
//! 2. fan-out: one message to N connections of one user (edgepush batch
//!    push API) / N subscribers of one channel (Centrifugo `/api/publish`);
//! 3. latency: a steady publish rate to N connections; edgepush through the
//!    node's batch push API and end to end through collect (MongoDB,
//!    dispatch, Redis), Centrifugo through `/api/publish`; plus the end to
//!    end sustained rate through collect;
//! 4. collect: accepted messages per second through collect (dev mode:
//!    collect -> MongoDB -> dispatch) as fast as it answers, at each
//!    `--collect-concurrency` (32 and 64 requests in flight), each message
//!    to 1 user (and, separately, to 100 users) of
//!    many in rotation, with the request latency; beside Centrifugo's
//!    publish API with history kept in Redis (`/api/publish`, and
//!    `/api/broadcast` to 100 channels);
//! 5. store: the store's ceiling, message-shaped documents inserted by
//!    plain `insert` commands (1,000 per command, 1 and 2 in flight) into
//!    `messages` as the real store sets it up and into a collection with
//!    only `_id`, no edgepush in the loop: what collect's copies per second
//!    are bounded by;
//! 6. topic: one topic (edgepush) / channel (Centrifugo) with N
//!    subscribers on one node, N distinct users: deliveries per server CPU
//!    second at full speed, then publish-to-receive latency at a steady
//!    rate; edgepush through the node's topic push API (`/@topics`, what
//!    dispatch sends), Centrifugo through `/api/publish`;
//! 7. allocations: `alloc-count`;
//! 8. many processes: `--big` connections over several node and generator
//!    processes.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use edgepush_bench::ceiling::{self, CeilingConfig};
use edgepush_bench::latency::LatencySummary;
use edgepush_bench::loadgen::{Protocol, Sources, Swarm, SwarmConfig, Users};
use edgepush_bench::procfs::{self, MachineCpu};
use edgepush_bench::publish::{PublishConfig, Publisher, Target};
use edgepush_bench::report::{
    BigRun, CollectRow, FanoutRow, LatencyRow, Machine, MemoryRow, Results, SUSTAINED, Stages,
    StoreRow,
};
use edgepush_delivery::sigv4::PushCredential;
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use mongodb::bson::Document;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bench-run",
    about = "edgepush and Centrifugo benchmark scenarios",
    // A flag given again (scripts/bench passes the binaries, a caller may
    // name others) takes the last value.
    args_override_self = true
)]
struct Args {
    /// Where results.json, results.md and memory_latency.svg go.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Logs and config files of the servers under test.
    #[arg(long, default_value = "target/bench-work")]
    work_dir: PathBuf,
    /// Small sizes: a smoke run of every scenario.
    #[arg(long)]
    quick: bool,
    /// Redis for edgepush routes and Centrifugo's engine.
    #[arg(long)]
    redis_url: String,
    /// MongoDB (or FerretDB) for edgepush messages.
    #[arg(long)]
    mongodb_uri: String,
    /// Processes whose CPU is reported beside the end-to-end figures (`name=pid`).
    #[arg(long)]
    store_pid: Vec<String>,
    /// The `edge-node` binary (release).
    #[arg(long, default_value = "target/release/edge-node")]
    edge_node_bin: PathBuf,
    /// The `edgepush-dev` binary (release): dev mode, for the end-to-end row.
    #[arg(long, default_value = "target/release/edgepush-dev")]
    dev_bin: PathBuf,
    /// The `loadgen` binary (release).
    #[arg(long, default_value = "target/release/loadgen")]
    loadgen_bin: PathBuf,
    /// The `alloc-count` binary (release).
    #[arg(long, default_value = "target/release/alloc-count")]
    alloc_count_bin: PathBuf,
    /// The Centrifugo binary; Centrifugo rows are skipped without it.
    #[arg(long)]
    centrifugo_bin: Option<PathBuf>,
    /// Connection counts of the memory scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 5000, 10000, 19000])]
    sizes: Vec<usize>,
    /// Connection counts of the fan-out scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000, 19000])]
    fanout_sizes: Vec<usize>,
    /// Messages per fan-out measurement.
    #[arg(long, default_value_t = 50)]
    fanout_messages: u64,
    /// Connections of the steady-rate latency scenario.
    #[arg(long, default_value_t = 1000)]
    latency_connections: usize,
    /// Messages per second of the latency scenario.
    #[arg(long, default_value_t = 20.0)]
    latency_rate: f64,
    /// Seconds of the latency scenario.
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// Subscribers of the one topic (channel) of the topic scenario.
    #[arg(long, default_value_t = 19_000)]
    topic_connections: usize,
    /// Messages of the end-to-end sustained-rate run through collect.
    #[arg(long, default_value_t = 2000)]
    e2e_messages: u64,
    /// Messages per second of the end-to-end unicast row (collect ->
    /// MongoDB -> dispatch -> Redis -> node -> client, one user each).
    #[arg(long, default_value_t = 200.0)]
    e2e_rate: f64,
    /// Recipients per message of the collect scenario's runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
    collect_recipients: Vec<usize>,
    /// Distinct users (channels) the collect scenario rotates over.
    #[arg(long, default_value_t = 10_000)]
    collect_users: usize,
    /// Seconds of each collect run.
    #[arg(long, default_value_t = 10.0)]
    collect_secs: f64,
    /// Requests in flight in the collect scenario's runs: each number is a
    /// run per recipients count (group commit stores more copies per round
    /// when more requests wait, so this moves the figure).
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64])]
    collect_concurrency: Vec<usize>,
    /// What the MongoDB wire server is, shown beside the collect figures.
    #[arg(long, default_value = "MongoDB wire server")]
    store_label: String,
    /// Documents per `insert` command of the store-ceiling scenario.
    #[arg(long, default_value_t = 1000)]
    ceiling_docs: usize,
    /// Commands in flight in the store-ceiling scenario: a run at each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    ceiling_concurrency: Vec<usize>,
    /// Seconds of each store-ceiling run.
    #[arg(long, default_value_t = 5.0)]
    ceiling_secs: f64,
    /// Total connections of the many-process run (0: skip).
    #[arg(long, default_value_t = 0)]
    big: usize,
    /// Connections per process in the many-process run.
    #[arg(long, default_value_t = 17_000)]
    big_per_process: usize,
    /// Bytes of data per message.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// New connections per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Only these scenarios (memory, fanout, latency, collect, store, topic, alloc, big); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef";
const PUSH_KEY: &str = "bench-push";
const PUSH_SECRET: &str = "bench-push-secret";
const CF_API_KEY: &str = "bench-api-key";
/// Collect's API key in dev mode.
const DEV_API_KEY: &str = "bench-collect-key";

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.sizes = vec![200, 500];
        args.fanout_sizes = vec![200, 500];
        args.fanout_messages = 5;
        args.latency_connections = 100;
        args.latency_secs = 3.0;
        args.e2e_messages = 100;
        args.e2e_rate = 50.0;
        args.collect_secs = 3.0;
        args.ceiling_secs = 1.0;
        args.collect_users = 1000;
        args.topic_connections = 500;
        if args.big > 0 {
            args.big = 2000;
            args.big_per_process = 1000;
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(Runner::new(args)?.run())
}

/// A server process under test.
struct Server {
    name: String,
    child: Child,
    pid: u32,
    /// Client WebSocket URL.
    ws_url: String,
    /// edgepush: the push API; Centrifugo: the HTTP API base.
    http_url: String,
}

impl Server {
    fn memory(&self) -> procfs::Memory {
        procfs::memory(self.pid).unwrap_or_default()
    }

    fn cpu(&self) -> f64 {
        procfs::cpu_time(self.pid).map_or(0.0, |d| d.as_secs_f64())
    }

    /// SIGTERM (graceful drain), then SIGKILL after 15 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on TERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Two consecutive free ports (dev mode's two nodes).
fn free_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let p = free_port()?;
        if p < u16::MAX && StdListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no two consecutive free ports")
}

async fn wait_http_ok(url: &str, child: &mut Child, name: &str, log: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited ({status}); log: {}", tail(log));
        }
        if Instant::now() > deadline {
            bail!("{name} not ready at {url} within 60 s; log: {}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

struct Runner {
    args: Args,
    run_id: String,
    results: Results,
    next_source: u32,
    me: u32,
}

impl Runner {
    fn new(args: Args) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.work_dir)?;
        std::fs::create_dir_all(&args.out)?;
        let unix = edgepush_bench::unix_nanos() / 1_000_000_000;
        Ok(Self {
            run_id: format!("r{}", unix % 1_000_000),
            results: Results {
                unix_time: unix,
                machine: machine(),
                quick: args.quick,
                ..Results::default()
            },
            args,
            next_source: 0,
            me: std::process::id(),
        })
    }

    fn wants(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }

    /// A fresh range of 64 source addresses (127.<20+k>.0.1+64).
    fn sources(&mut self) -> Sources {
        self.next_source += 1;
        Sources {
            first: std::net::Ipv4Addr::new(127, (20 + self.next_source % 200) as u8, 0, 1),
            count: 64,
        }
    }

    fn swarm_config(&mut self, server: &Server, protocol: Protocol) -> SwarmConfig {
        let mut cfg = SwarmConfig::new(vec![server.ws_url.clone()], protocol, JWT_SECRET);
        cfg.sources = Some(self.sources());
        cfg.rate = self.args.rate;
        cfg.progress = true;
        cfg
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!("bench-run {}: load average {}", self.run_id, loadavg.trim());
        let has_cf = self.args.centrifugo_bin.is_some();
        if self.wants("memory") {
            self.memory(Protocol::Edgepush).await?;
            if has_cf {
                self.memory(Protocol::Centrifugo).await?;
            }
            self.write()?;
        }
        if self.wants("fanout") {
            self.fanout(Protocol::Edgepush).await?;
            if has_cf {
                self.fanout(Protocol::Centrifugo).await?;
            }
            self.write()?;
        }
        if self.wants("latency") {
            self.latency_batch_and_centrifugo().await?;
            self.latency_e2e().await?;
            self.write()?;
        }
        if self.wants("collect") {
            self.collect(Protocol::Edgepush).await?;
            if has_cf {
                self.collect(Protocol::Centrifugo).await?;
            }
            self.write()?;
        }
        if self.wants("store") {
            self.store_ceiling().await?;
            self.write()?;
        }
        if self.wants("topic") {
            self.topic(Protocol::Edgepush).await?;
            if has_cf {
                self.topic(Protocol::Centrifugo).await?;
            }
            self.write()?;
        }
        if self.wants("alloc") {
            self.allocations()?;
            self.write()?;
        }
        if self.wants("big") && self.args.big > 0 {
            self.big().await?;
            self.write()?;
        }
        self.results.notes.extend([
            "2 CPUs are shared by the server under test, the load generator and the publisher (and by other engineers' compiles): CPU seconds of each process are given beside each throughput figure; deliveries per server CPU second is the per-core figure.".to_owned(),
            "Memory per connection is (RSS at N - RSS at 0) / N of the server process; kernel socket memory is not in RSS and is shown separately (machine-wide TCP buffer pages; both ends of each loopback connection).".to_owned(),
            "edgepush connections are one user each (routes in Redis); Centrifugo connections subscribe to one personal channel each (server-side subscription from the token's `channels` claim), its way of addressing a user. Centrifugo runs with its Redis engine and default settings.".to_owned(),
            "Fan-out for edgepush goes through the node's batch push API (what dispatch calls), for Centrifugo through /api/publish and Redis PUB/SUB: each is the system's own path from publisher to node.".to_owned(),
        ]);
        self.write()?;
        eprintln!("bench-run: wrote {}", self.args.out.display());
        Ok(())
    }

    fn write(&self) -> anyhow::Result<()> {
        let out = &self.args.out;
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(&self.results)?,
        )?;
        std::fs::write(out.join("results.md"), self.results.markdown())?;
        std::fs::write(out.join("memory_latency.svg"), self.results.svg())?;
        Ok(())
    }

    // ---------------------------------------------------------------
    // Servers.

    async fn start_edge_node(&self, tag: &str) -> anyhow::Result<Server> {
        let (ws, push) = (free_port()?, free_port()?);
        let log = self.args.work_dir.join(format!("edge-node-{tag}.log"));
        let mut child = Command::new(&self.args.edge_node_bin)
            .arg("serve")
            .env("EDGEPUSH_REDIS_URL", &self.args.redis_url)
            .env("EDGEPUSH_MONGODB_URI", &self.args.mongodb_uri)
            .env(
                "EDGEPUSH_MONGODB_DATABASE",
                format!("bench_{}", self.run_id),
            )
            .env("EDGEPUSH_NODE_ID", format!("bench-{}-{tag}", self.run_id))
            // The fan-out and latency scenarios hold N connections of one user.
            .env("EDGEPUSH_MAX_CONNECTIONS_PER_USER", "1000000")
            .env("EDGEPUSH_WS_ADDR", format!("127.0.0.1:{ws}"))
            .env("EDGEPUSH_PUSH_ADDR", format!("127.0.0.1:{push}"))
            .env("EDGEPUSH_JWT_SECRET", JWT_SECRET)
            .env("EDGEPUSH_PUSH_ACCESS_KEY_ID", PUSH_KEY)
            .env("EDGEPUSH_PUSH_SECRET_ACCESS_KEY", PUSH_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", self.args.edge_node_bin.display()))?;
        let http_url = format!("http://127.0.0.1:{push}");
        wait_http_ok(&format!("{http_url}/readyz"), &mut child, "edge-node", &log).await?;
        let pid = child.id();
        Ok(Server {
            name: format!("edge-node {tag}"),
            child,
            pid,
            ws_url: format!("ws://127.0.0.1:{ws}/ws"),
            http_url,
        })
    }

    /// Centrifugo on the private Redis; with `history`, every channel keeps
    /// its last 100 publications for 5 minutes in Redis (`history_size`,
    /// `history_ttl`): what a publish that must survive a disconnect costs.
    async fn start_centrifugo(&self, tag: &str, history: bool) -> anyhow::Result<Server> {
        let bin = self
            .args
            .centrifugo_bin
            .as_ref()
            .context("no Centrifugo binary")?;
        let port = free_port()?;
        let mut config = serde_json::json!({
            "http_server": {"address": "127.0.0.1", "port": port},
            "log": {"level": "warn"},
            "client": {"token": {"hmac_secret_key": JWT_SECRET}, "allowed_origins": ["*"]},
            "http_api": {"key": CF_API_KEY},
            "engine": {"type": "redis", "redis": {"address": [self.args.redis_url], "prefix": format!("cf{}{tag}", self.run_id)}},
            "health": {"enabled": true},
            "usage_stats": {"disabled": true},
        });
        if history {
            config["channel"] = serde_json::json!({
                "without_namespace": {"history_size": 100, "history_ttl": "300s"}
            });
        }
        let config_path = self.args.work_dir.join(format!("centrifugo-{tag}.json"));
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let log = self.args.work_dir.join(format!("centrifugo-{tag}.log"));
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let http_url = format!("http://127.0.0.1:{port}");
        wait_http_ok(
            &format!("{http_url}/health"),
            &mut child,
            "centrifugo",
            &log,
        )
        .await?;
        let pid = child.id();
        Ok(Server {
            name: format!("centrifugo {tag}"),
            child,
            pid,
            ws_url: format!("ws://127.0.0.1:{port}/connection/websocket"),
            http_url,
        })
    }

    async fn start(&self, protocol: Protocol, tag: &str) -> anyhow::Result<Server> {
        match protocol {
            Protocol::Edgepush => self.start_edge_node(tag).await,
            Protocol::Centrifugo => self.start_centrifugo(tag, false).await,
        }
    }

    // ---------------------------------------------------------------
    // 1. Memory per idle connection, and a unicast round at each size.

    async fn memory(&mut self, protocol: Protocol) -> anyhow::Result<()> {
        let system = system_name(protocol);
        eprintln!("== memory: {system}");
        let server = self.start(protocol, "mem").await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss0 = server.memory();
        let mut cfg = self.swarm_config(&server, protocol);
        let prefix = format!("m{}x", self.run_id);
        cfg.users = Users::PerConnection {
            prefix: prefix.clone(),
        };
        let mut swarm = Swarm::new(cfg).await?;
        let own0 = procfs::memory(self.me).unwrap_or_default();
        let credential = PushCredential::new(PUSH_KEY, PUSH_SECRET, "us-east-1");
        // Each user's next seq (edgepush): rounds continue where the last stopped.
        let mut next_seq: Vec<u64> = Vec::new();
        let rounds = 3u64;
        let mut sizes = self.args.sizes.clone();
        sizes.sort_unstable();
        for n in sizes {
            swarm.grow(n).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss = server.memory();
            let own = procfs::memory(self.me).unwrap_or_default();
            let held = swarm.connected().max(1);
            let report = swarm.report();
            if report.failed > 0 {
                eprintln!(
                    "   {} connections failed: {:?}",
                    report.failed, report.first_error
                );
            }
            // The unicast round: one message to each of the N users, `rounds` times.
            swarm.latency().reset();
            let target = match protocol {
                Protocol::Edgepush => {
                    let ids = swarm.conn_ids();
                    next_seq.resize(ids.len(), 1);
                    let pairs = ids
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| {
                            c.clone().map(|c| (format!("{prefix}{i}"), c, next_seq[i]))
                        })
                        .collect();
                    for (i, c) in ids.iter().enumerate() {
                        if c.is_some() {
                            next_seq[i] += rounds;
                        }
                    }
                    Target::BatchUnicast {
                        push_url: server.http_url.clone(),
                        pairs,
                        chunk: 1000,
                    }
                }
                Protocol::Centrifugo => Target::CentrifugoBroadcast {
                    base: server.http_url.clone(),
                    api_key: CF_API_KEY.into(),
                    channels: (0..swarm.len()).map(|i| format!("{prefix}{i}")).collect(),
                    chunk: 1000,
                },
            };
            let publisher = Publisher::new(target, Some(credential.clone()))?;
            let before = swarm.received();
            let (cpu_s0, cpu_l0, t0) = (server.cpu(), self.own_cpu(), Instant::now());
            let published = publisher
                .run(&PublishConfig {
                    count: rounds,
                    payload_bytes: self.args.payload_bytes,
                    ..PublishConfig::default()
                })
                .await;
            let want = before + rounds * swarm.connected() as u64;
            let complete = swarm.wait_received(want, Duration::from_secs(120)).await;
            let elapsed = t0.elapsed().as_secs_f64();
            let (cpu_s, cpu_l) = (server.cpu() - cpu_s0, self.own_cpu() - cpu_l0);
            let deliveries = swarm.received() - before;
            if !complete || published.errors > 0 {
                eprintln!(
                    "   unicast round incomplete: {deliveries}/{} deliveries, publish {:?}",
                    want - before,
                    published.first_error
                );
            }
            let latency = swarm.latency().summary();
            eprintln!(
                "   N={n}: RSS {} -> {} KiB = {:.0} B/conn; unicast {deliveries} deliveries in {elapsed:.2}s, p50 {} us p99 {} us",
                rss0.rss_kib,
                rss.rss_kib,
                (rss.rss_kib.saturating_sub(rss0.rss_kib)) as f64 * 1024.0 / held as f64,
                latency.p50_us,
                latency.p99_us
            );
            self.results.memory.push(MemoryRow {
                system: system.into(),
                connections: held,
                rss_0_kib: rss0.rss_kib,
                rss_n_kib: rss.rss_kib,
                bytes_per_conn: rss.rss_kib.saturating_sub(rss0.rss_kib) as f64 * 1024.0
                    / held as f64,
                loadgen_bytes_per_conn: own.rss_kib.saturating_sub(own0.rss_kib) as f64 * 1024.0
                    / held as f64,
                kernel_tcp_mem_kib: procfs::sockstat().map_or(0, |s| s.tcp_mem_kib),
                failed: report.failed,
                unicast_latency: latency,
                unicast_deliveries_per_s: deliveries as f64 / elapsed.max(1e-9),
            });
            self.results.fanout.push(FanoutRow {
                system: system.into(),
                mode: "unicast".into(),
                path: match protocol {
                    Protocol::Edgepush => "batch push API, 1 item per user".into(),
                    Protocol::Centrifugo => "/api/broadcast, 1 channel per user".into(),
                },
                connections: held,
                messages: rounds,
                deliveries,
                elapsed_s: elapsed,
                deliveries_per_s: deliveries as f64 / elapsed.max(1e-9),
                server_cpu_s: cpu_s,
                loadgen_cpu_s: cpu_l,
                deliveries_per_server_cpu_s: deliveries as f64 / cpu_s.max(0.01),
                latency,
            });
            self.write()?;
        }
        swarm.close(Duration::from_secs(20)).await;
        server.stop();
        Ok(())
    }

    fn own_cpu(&self) -> f64 {
        procfs::cpu_time(self.me).map_or(0.0, |d| d.as_secs_f64())
    }

    // ---------------------------------------------------------------
    // 2. Fan-out: one message to N connections.

    async fn fanout(&mut self, protocol: Protocol) -> anyhow::Result<()> {
        let system = system_name(protocol);
        eprintln!("== fan-out: {system}");
        let server = self.start(protocol, "fan").await?;
        let credential = PushCredential::new(PUSH_KEY, PUSH_SECRET, "us-east-1");
        for n in self.args.fanout_sizes.clone() {
            let user = format!("f{}x{n}", self.run_id);
            let mut cfg = self.swarm_config(&server, protocol);
            cfg.users = Users::Single(user.clone());
            cfg.channel = Some(user.clone());
            let mut swarm = Swarm::new(cfg).await?;
            swarm.grow(n).await;
            let held = swarm.connected();
            let m = self.args.fanout_messages;
            let (target, path) = match protocol {
                Protocol::Edgepush => (
                    Target::Batch {
                        push_url: server.http_url.clone(),
                        user: user.clone(),
                        conn_ids: swarm.conn_ids().into_iter().flatten().collect(),
                        first_seq: 1,
                    },
                    "batch push API, 1 item, N connections",
                ),
                Protocol::Centrifugo => (
                    Target::Centrifugo {
                        base: server.http_url.clone(),
                        api_key: CF_API_KEY.into(),
                        channel: user.clone(),
                    },
                    "/api/publish, 1 channel, N subscribers",
                ),
            };
            let publisher = Publisher::new(target, Some(credential.clone()))?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (cpu_s0, cpu_l0, t0) = (server.cpu(), self.own_cpu(), Instant::now());
            let published = publisher
                .run(&PublishConfig {
                    count: m,
                    payload_bytes: self.args.payload_bytes,
                    ..PublishConfig::default()
                })
                .await;
            let complete = swarm
                .wait_received(m * held as u64, Duration::from_secs(180))
                .await;
            let elapsed = t0.elapsed().as_secs_f64();
            let (cpu_s, cpu_l) = (server.cpu() - cpu_s0, self.own_cpu() - cpu_l0);
            let deliveries = swarm.received();
            if !complete || published.errors > 0 {
                eprintln!(
                    "   fan-out incomplete: {deliveries}/{} ({:?}; {:?})",
                    m * held as u64,
                    published.first_error,
                    swarm.report().first_drop
                );
            }
            let row = FanoutRow {
                system: system.into(),
                mode: "fanout".into(),
                path: path.into(),
                connections: held,
                messages: m,
                deliveries,
                elapsed_s: elapsed,
                deliveries_per_s: deliveries as f64 / elapsed.max(1e-9),
                server_cpu_s: cpu_s,
                loadgen_cpu_s: cpu_l,
                deliveries_per_server_cpu_s: deliveries as f64 / cpu_s.max(0.01),
                latency: swarm.latency().summary(),
            };
            eprintln!(
                "   N={held}: {deliveries} deliveries in {elapsed:.2}s = {:.0}/s; server CPU {cpu_s:.2}s, loadgen CPU {cpu_l:.2}s",
                row.deliveries_per_s
            );
            self.results.fanout.push(row);
            swarm.close(Duration::from_secs(20)).await;
            self.write()?;
        }
        server.stop();
        Ok(())
    }

    // ---------------------------------------------------------------
    // Topic: one topic / channel, N subscribers (distinct users).

    async fn topic(&mut self, protocol: Protocol) -> anyhow::Result<()> {
        let system = system_name(protocol);
        eprintln!("== topic: {system}");
        let server = self.start(protocol, "topic").await?;
        let credential = PushCredential::new(PUSH_KEY, PUSH_SECRET, "us-east-1");
        let n = self.args.topic_connections;
        let topic = format!("bench-topic-{}", self.run_id);
        let mut cfg = self.swarm_config(&server, protocol);
        cfg.users = Users::PerConnection {
            prefix: format!("t{}x", self.run_id),
        };
        match protocol {
            Protocol::Edgepush => cfg.topic = Some(topic.clone()),
            Protocol::Centrifugo => cfg.channel = Some(topic.clone()),
        }
        let mut swarm = Swarm::new(cfg).await?;
        swarm.grow(n).await;
        let held = swarm.connected();
        let report = swarm.report();
        if report.failed > 0 {
            eprintln!(
                "   {} connections failed: {:?}",
                report.failed, report.first_error
            );
        }
        // The subscriptions start right after each connection's hello.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m = self.args.fanout_messages;
        let target = |first_seq: u64| match protocol {
            Protocol::Edgepush => Target::Topic {
                push_url: server.http_url.clone(),
                topic: topic.clone(),
                first_seq,
            },
            Protocol::Centrifugo => Target::Centrifugo {
                base: server.http_url.clone(),
                api_key: CF_API_KEY.into(),
                channel: topic.clone(),
            },
        };
        let (fan_path, steady_path) = match protocol {
            Protocol::Edgepush => (
                "topic push API (/@topics), 1 item, N subscribers",
                "/@topics -> 1 topic, N subscribers (N users)",
            ),
            Protocol::Centrifugo => (
                "/api/publish, 1 channel, N subscribers",
                "/api/publish -> Redis -> 1 channel, N subscribers (N users)",
            ),
        };

        // Throughput: `m` messages as fast as the server takes them.
        swarm.latency().reset();
        let publisher = Publisher::new(target(1), Some(credential.clone()))?;
        let before = swarm.received();
        let (cpu_s0, cpu_l0, t0) = (server.cpu(), self.own_cpu(), Instant::now());
        let published = publisher
            .run(&PublishConfig {
                count: m,
                payload_bytes: self.args.payload_bytes,
                ..PublishConfig::default()
            })
            .await;
        let want = before + m * held as u64;
        let complete = swarm.wait_received(want, Duration::from_secs(180)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let (cpu_s, cpu_l) = (server.cpu() - cpu_s0, self.own_cpu() - cpu_l0);
        let deliveries = swarm.received() - before;
        if !complete || published.errors > 0 {
            eprintln!(
                "   topic fan-out incomplete: {deliveries}/{} ({:?}; {:?})",
                want - before,
                published.first_error,
                swarm.report().first_drop
            );
        }
        let row = FanoutRow {
            system: system.into(),
            mode: "topic".into(),
            path: fan_path.into(),
            connections: held,
            messages: m,
            deliveries,
            elapsed_s: elapsed,
            deliveries_per_s: deliveries as f64 / elapsed.max(1e-9),
            server_cpu_s: cpu_s,
            loadgen_cpu_s: cpu_l,
            deliveries_per_server_cpu_s: deliveries as f64 / cpu_s.max(0.01),
            latency: swarm.latency().summary(),
        };
        eprintln!(
            "   N={held}: {deliveries} deliveries in {elapsed:.2}s = {:.0}/s; server CPU {cpu_s:.2}s = {:.0} deliveries per server CPU s",
            row.deliveries_per_s, row.deliveries_per_server_cpu_s
        );
        self.results.fanout.push(row);
        self.write()?;

        // Latency at a steady rate, continuing the topic's seqs.
        let publisher = Publisher::new(target(1 + published.sent), Some(credential))?;
        let mut pids = vec![(system.to_owned(), server.pid)];
        if protocol == Protocol::Centrifugo {
            pids.extend(self.store_pids().into_iter().filter(|(n, _)| n == "redis"));
        }
        let steady = self
            .steady(
                &swarm,
                &publisher,
                &pids,
                self.args.latency_rate,
                swarm.connected() as u64,
            )
            .await;
        let latency = &steady.latency;
        eprintln!(
            "   steady {} msg/s: p50 {} us, p99 {} us, p999 {} us ({} deliveries)",
            self.args.latency_rate,
            latency.p50_us,
            latency.p99_us,
            latency.p999_us,
            steady.deliveries
        );
        let row = steady.row(system, steady_path, held, self.args.latency_rate);
        self.results.latency.push(row);
        swarm.close(Duration::from_secs(20)).await;
        server.stop();
        Ok(())
    }

    // ---------------------------------------------------------------
    // 3. Latency at a steady rate.

    /// `latency_secs` of messages at `rate` per second; each message is
    /// expected at `per_message` connections.
    async fn steady(
        &mut self,
        swarm: &Swarm,
        publisher: &Publisher,
        pids: &[(String, u32)],
        rate: f64,
        per_message: u64,
    ) -> Steady {
        let config = |count| PublishConfig {
            count,
            rate,
            concurrency: 16,
            payload_bytes: self.args.payload_bytes,
            max_secs: 0.0,
        };
        // The machine quiet first, for every system alike: the scenario
        // before (19,000 connections of a fan-out row closing, a server
        // exiting) must not land in this row's tail.
        let (waited, busy) = settle().await;
        eprintln!(
            "   machine quiet after {:.1} s ({})",
            waited.as_secs_f64(),
            busy.map_or("busy cores unknown".to_owned(), |b| format!(
                "{b:.2} cores busy"
            ))
        );
        // Warm-up, not measured: one second of the same load, so that the
        // figures are the steady state's and not the first message's
        // (HTTP connections opened, buffers grown, code paged in).
        let before_warm = swarm.received();
        let warm = publisher.run(&config(rate.round().max(1.0) as u64)).await;
        swarm
            .wait_received(
                before_warm + warm.sent * per_message,
                Duration::from_secs(60),
            )
            .await;
        let count = (rate * self.args.latency_secs).round().max(1.0) as u64;
        swarm.latency().reset();
        let before = swarm.received();
        let cpu0 = CpuClock::start(self, pids);
        let published = publisher.run(&config(count)).await;
        let want = before + published.sent * per_message;
        swarm.wait_received(want, Duration::from_secs(60)).await;
        let cpu = cpu0.stop(self);
        let stages = Stages {
            answered: published.request_latency,
            spread: swarm.latency().spread(),
        };
        Steady {
            deliveries: swarm.received() - before,
            latency: swarm.latency().summary(),
            published,
            stages,
            cpu,
        }
    }

    fn store_pids(&self) -> Vec<(String, u32)> {
        self.args
            .store_pid
            .iter()
            .filter_map(|s| {
                s.split_once('=')
                    .and_then(|(n, p)| p.parse().ok().map(|p| (n.to_owned(), p)))
            })
            .collect()
    }

    async fn latency_batch_and_centrifugo(&mut self) -> anyhow::Result<()> {
        let n = self.args.latency_connections;
        let credential = PushCredential::new(PUSH_KEY, PUSH_SECRET, "us-east-1");
        let mut systems = vec![Protocol::Edgepush];
        if self.args.centrifugo_bin.is_some() {
            systems.push(Protocol::Centrifugo);
        }
        for protocol in systems {
            let system = system_name(protocol);
            eprintln!("== latency: {system}");
            let server = self.start(protocol, "lat").await?;
            let user = format!("l{}", self.run_id);
            let mut cfg = self.swarm_config(&server, protocol);
            cfg.users = Users::Single(user.clone());
            cfg.channel = Some(user.clone());
            let mut swarm = Swarm::new(cfg).await?;
            swarm.grow(n).await;
            let (target, path) = match protocol {
                Protocol::Edgepush => (
                    Target::Batch {
                        push_url: server.http_url.clone(),
                        user: user.clone(),
                        conn_ids: swarm.conn_ids().into_iter().flatten().collect(),
                        first_seq: 1,
                    },
                    "node batch push API -> N connections of 1 user",
                ),
                Protocol::Centrifugo => (
                    Target::Centrifugo {
                        base: server.http_url.clone(),
                        api_key: CF_API_KEY.into(),
                        channel: user.clone(),
                    },
                    "/api/publish -> Redis -> N subscribers of 1 channel",
                ),
            };
            let publisher = Publisher::new(target, Some(credential.clone()))?;
            let mut pids = vec![(system.to_owned(), server.pid)];
            if protocol == Protocol::Centrifugo {
                pids.extend(self.store_pids().into_iter().filter(|(n, _)| n == "redis"));
            }
            let steady = self
                .steady(
                    &swarm,
                    &publisher,
                    &pids,
                    self.args.latency_rate,
                    swarm.connected() as u64,
                )
                .await;
            let latency = &steady.latency;
            eprintln!(
                "   p50 {} us, p99 {} us, p999 {} us ({} deliveries)",
                latency.p50_us, latency.p99_us, latency.p999_us, steady.deliveries
            );
            let row = steady.row(system, path, swarm.connected(), self.args.latency_rate);
            self.results.latency.push(row);
            swarm.close(Duration::from_secs(20)).await;
            server.stop();
        }
        Ok(())
    }

    /// Dev mode (`edgepush-dev`: collect, dispatch and two nodes in one
    /// process) on the private Redis and MongoDB; `http_url` is collect's.
    async fn start_dev(&self) -> anyhow::Result<Server> {
        let collect_port = free_port()?;
        let ws_port = free_pair()?;
        let push_port = free_pair()?;
        let log = self.args.work_dir.join("edge-node-dev.log");
        let mut child = Command::new(&self.args.dev_bin)
            .args([
                "--redis-url",
                &self.args.redis_url,
                "--mongodb-uri",
                &self.args.mongodb_uri,
            ])
            .args(["--collect-addr", &format!("127.0.0.1:{collect_port}")])
            .args(["--max-connections-per-user", "1000000"])
            .args([
                "--ws-port",
                &ws_port.to_string(),
                "--push-port",
                &push_port.to_string(),
            ])
            .env("EDGEPUSH_DEV_API_KEY", DEV_API_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting edgepush-dev")?;
        wait_http_ok(
            &format!("http://127.0.0.1:{push_port}/readyz"),
            &mut child,
            "edgepush-dev",
            &log,
        )
        .await?;
        let pid = child.id();
        Ok(Server {
            name: "edgepush-dev".into(),
            child,
            pid,
            ws_url: format!("ws://127.0.0.1:{ws_port}/ws"),
            http_url: format!("http://127.0.0.1:{collect_port}"),
        })
    }

    /// Collect -> MongoDB -> dispatch -> Redis -> node -> client, in
    /// dev mode (`edgepush-dev`: collect, dispatch and two nodes in one process) on
    /// the real stores.
    async fn latency_e2e(&mut self) -> anyhow::Result<()> {
        eprintln!("== latency: edgepush end to end (collect)");
        let server = self.start_dev().await?;
        let pid = server.pid;
        let mut pids = vec![("edgepush-dev (collect+dispatch+nodes)".to_owned(), pid)];
        pids.extend(self.store_pids());

        // Fan-out through the whole path: one user with N connections.
        let user = format!("e{}", self.run_id);
        let mut cfg = self.swarm_config(&server, Protocol::Edgepush);
        cfg.secret = edgepush_dev::DEV_JWT_SECRET.as_bytes().to_vec();
        cfg.users = Users::Single(user.clone());
        let mut swarm = Swarm::new(cfg).await?;
        swarm.grow(self.args.latency_connections).await;
        let publisher = Publisher::new(
            Target::Collect {
                base: server.http_url.clone(),
                api_key: DEV_API_KEY.into(),
                to: vec![user],
                per_message: 0,
            },
            None,
        )?;
        let steady = self
            .steady(
                &swarm,
                &publisher,
                &pids,
                self.args.latency_rate,
                swarm.connected() as u64,
            )
            .await;
        let (latency, published) = (&steady.latency, &steady.published);
        eprintln!(
            "   p50 {} us, p99 {} us ({} deliveries, {} errors {:?})",
            latency.p50_us,
            latency.p99_us,
            steady.deliveries,
            published.errors,
            published.first_error
        );
        let row = steady.row(
            "edgepush",
            "collect -> MongoDB -> dispatch -> Redis -> node -> N connections of 1 user",
            swarm.connected(),
            self.args.latency_rate,
        );
        self.results.latency.push(row);
        swarm.close(Duration::from_secs(20)).await;

        // Sustained rate: unicast to many users, as fast as collect takes them.
        let n = self.args.latency_connections;
        let prefix = format!("s{}x", self.run_id);
        let mut cfg = self.swarm_config(&server, Protocol::Edgepush);
        cfg.secret = edgepush_dev::DEV_JWT_SECRET.as_bytes().to_vec();
        cfg.users = Users::PerConnection {
            prefix: prefix.clone(),
        };
        let mut swarm = Swarm::new(cfg).await?;
        swarm.grow(n).await;
        let publisher = Publisher::new(
            Target::Collect {
                base: server.http_url.clone(),
                api_key: DEV_API_KEY.into(),
                to: (0..n).map(|i| format!("{prefix}{i}")).collect(),
                per_message: 1,
            },
            None,
        )?;

        // End to end at a steady rate, each message to one user of many
        // (the unicast a business system sends).
        let rate = self.args.e2e_rate;
        let steady = self.steady(&swarm, &publisher, &pids, rate, 1).await;
        let (latency, published) = (&steady.latency, &steady.published);
        eprintln!(
            "   unicast end to end at {rate} msg/s: p50 {} us, p99 {} us, p999 {} us ({} deliveries, {} errors {:?})",
            latency.p50_us,
            latency.p99_us,
            latency.p999_us,
            steady.deliveries,
            published.errors,
            published.first_error
        );
        let row = steady.row(
            "edgepush",
            "collect -> MongoDB -> dispatch -> Redis -> node -> client, 1 user of N per message",
            swarm.connected(),
            rate,
        );
        self.results.latency.push(row);

        // Measured alone: the steady row's deliveries are not in it.
        swarm.latency().reset();
        let before = swarm.received();
        let cpu0 = CpuClock::start(self, &pids);
        let published = publisher
            .run(&PublishConfig {
                count: self.args.e2e_messages,
                rate: 0.0,
                concurrency: 32,
                payload_bytes: self.args.payload_bytes,
                max_secs: 0.0,
            })
            .await;
        swarm
            .wait_received(before + published.sent, Duration::from_secs(60))
            .await;
        let cpu = cpu0.stop(self);
        let latency = swarm.latency().summary();
        let stages = Stages {
            answered: published.request_latency,
            spread: swarm.latency().spread(),
        };
        eprintln!(
            "   sustained: {:.0} msgs/s accepted by collect ({} errors), request p50 {} us, delivery p50 {} us p99 {} us",
            published.rate,
            published.errors,
            published.request_latency.p50_us,
            latency.p50_us,
            latency.p99_us
        );
        self.results.latency.push(LatencyRow {
            system: "edgepush".into(),
            // The same label in every run (the rate is a figure of its
            // own), so that bench-summary sets the runs side by side.
            path: SUSTAINED.into(),
            connections: swarm.connected(),
            rate: published.rate,
            messages: published.sent,
            deliveries: swarm.received() - before,
            errors: published.errors,
            latency,
            stages,
            cpu_s: cpu,
        });
        swarm.close(Duration::from_secs(20)).await;
        server.stop();
        Ok(())
    }

    // ---------------------------------------------------------------
    // Collect throughput: accepted messages per second.

    /// Each of `collect_recipients` × `collect_concurrency` runs:
    /// `collect_secs` of messages as fast as the server answers, that many
    /// requests in flight, each
    /// to the next `recipients` of `collect_users` users in rotation (no
    /// client connected: this is the write path). edgepush through collect
    /// in dev mode (MongoDB, then dispatch's route lookup); Centrifugo
    /// through its publish API with history in Redis.
    async fn collect(&mut self, protocol: Protocol) -> anyhow::Result<()> {
        let system = system_name(protocol);
        eprintln!("== collect throughput: {system}");
        let server = match protocol {
            Protocol::Edgepush => self.start_dev().await?,
            Protocol::Centrifugo => self.start_centrifugo("collect", true).await?,
        };
        let mut pids = vec![(server.name.clone(), server.pid)];
        pids.extend(
            self.store_pids()
                .into_iter()
                .filter(|(n, _)| protocol == Protocol::Edgepush || n == "redis"),
        );
        let (store, path) = match protocol {
            Protocol::Edgepush => (
                self.args.store_label.clone(),
                "POST /v1/messages -> MongoDB -> dispatch",
            ),
            Protocol::Centrifugo => (
                "Redis (history_size 100, history_ttl 300 s)".to_owned(),
                "/api/publish (1 channel) or /api/broadcast (channels), history in Redis",
            ),
        };
        let users: Vec<String> = (0..self.args.collect_users.max(1))
            .map(|i| format!("k{}x{i}", self.run_id))
            .collect();
        let runs: Vec<(usize, usize)> = self
            .args
            .collect_recipients
            .iter()
            .flat_map(|&r| {
                self.args
                    .collect_concurrency
                    .iter()
                    .map(move |&c| (r.max(1), c.max(1)))
            })
            .collect();
        for (recipients, concurrency) in runs {
            let target = match protocol {
                Protocol::Edgepush => Target::Collect {
                    base: server.http_url.clone(),
                    api_key: DEV_API_KEY.into(),
                    to: users.clone(),
                    per_message: recipients,
                },
                Protocol::Centrifugo => Target::CentrifugoSpread {
                    base: server.http_url.clone(),
                    api_key: CF_API_KEY.into(),
                    channels: users.clone(),
                    per_message: recipients,
                },
            };
            let publisher = Publisher::new(target, None)?;
            let run = |count, max_secs| PublishConfig {
                count,
                rate: 0.0,
                concurrency,
                payload_bytes: self.args.payload_bytes,
                max_secs,
            };
            // Warm-up, unmeasured: connections, and one message to each
            // user (channel), so that every row measures the steady state
            // of a sustained stream, where each user was written to
            // moments ago. Without it the first row alone paid one read
            // of the counter per user (edgepush's batcher remembers a
            // user's last seq for 30 s) and the rows after it did not.
            let warm = (2 * concurrency).max(users.len().div_ceil(recipients)) as u64;
            publisher.run(&run(warm, 0.0)).await;
            let loadavg = loadavg_1m();
            let cpu0 = CpuClock::start(self, &pids);
            let published = publisher.run(&run(u64::MAX, self.args.collect_secs)).await;
            let cpu = cpu0.stop(self);
            let r = &published.request_latency;
            eprintln!(
                "   {recipients} recipient(s) per message, {concurrency} in flight: {:.0} msgs/s ({:.0} copies/s) accepted, request p50 {} us p99 {} us p999 {} us, {} errors {:?}",
                published.rate,
                published.rate * recipients as f64,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                published.errors,
                published.first_error
            );
            self.results.collect.push(CollectRow {
                system: system.into(),
                path: path.into(),
                store: store.clone(),
                recipients,
                users: users.len(),
                concurrency,
                messages: published.sent,
                errors: published.errors,
                elapsed_s: published.elapsed_s,
                messages_per_s: published.rate,
                copies_per_s: published.rate * recipients as f64,
                request_latency: published.request_latency,
                cpu_s: cpu,
                loadavg_1m: loadavg,
            });
            self.write()?;
        }
        server.stop();
        Ok(())
    }

    /// The store's ceiling: message-shaped documents by plain `insert`
    /// commands into the MongoDB wire server, no edgepush in the loop
    /// ([`edgepush_bench::ceiling`]): into `messages` as the real store
    /// sets it up (its indexes), and into a collection with only `_id`.
    async fn store_ceiling(&mut self) -> anyhow::Result<()> {
        eprintln!("== store ceiling: {}", self.args.store_label);
        let mut config = MongoConfig::new(self.args.mongodb_uri.clone());
        config.database = format!("bench_{}_ceiling", self.run_id);
        let store = MongoMessageStore::connect(config)
            .await
            .context("the store for the ceiling runs")?;
        let db = store.database();
        let pids = self.store_pids();
        let collections = [
            db.collection::<Document>("messages"),
            db.collection("plain"),
        ];
        for collection in &collections {
            for (k, &concurrency) in self.args.ceiling_concurrency.iter().enumerate() {
                let config = CeilingConfig {
                    docs_per_insert: self.args.ceiling_docs.max(1),
                    concurrency: concurrency.max(1),
                    secs: self.args.ceiling_secs,
                    payload_bytes: self.args.payload_bytes,
                    users: self.args.collect_users.max(1),
                };
                // Warm-up, not measured: the collection exists, the
                // connections are open.
                ceiling::measure(
                    collection,
                    &format!("warm{k}"),
                    CeilingConfig {
                        secs: 0.5,
                        ..config
                    },
                )
                .await?;
                let loadavg = loadavg_1m();
                let cpu0 = CpuClock::start(self, &pids);
                let run = ceiling::measure(collection, &format!("r{k}"), config).await?;
                let cpu = cpu0.stop(self);
                let indexes = collection
                    .list_index_names()
                    .await
                    .context("listing the indexes")?;
                eprintln!(
                    "   {} ({}), {} docs per insert, {} in flight: {:.0} docs/s",
                    collection.name(),
                    indexes.join(", "),
                    config.docs_per_insert,
                    config.concurrency,
                    run.docs_per_s
                );
                self.results.store.push(StoreRow {
                    store: self.args.store_label.clone(),
                    collection: collection.name().to_owned(),
                    indexes,
                    docs_per_insert: config.docs_per_insert,
                    concurrency: config.concurrency,
                    docs: run.docs,
                    elapsed_s: run.elapsed_s,
                    docs_per_s: run.docs_per_s,
                    cpu_s: cpu,
                    loadavg_1m: loadavg,
                });
            }
        }
        db.drop().await.context("dropping the ceiling database")?;
        Ok(())
    }

    // ---------------------------------------------------------------
    // 4. Allocations.

    fn allocations(&mut self) -> anyhow::Result<()> {
        let n = if self.args.quick { 200 } else { 1000 };
        eprintln!("== allocations (alloc-count, N={n})");
        let out = Command::new(&self.args.alloc_count_bin)
            .args(["--connections", &n.to_string(), "--messages", "20"])
            .args(["--payload-bytes", &self.args.payload_bytes.to_string()])
            .output()
            .context("running alloc-count")?;
        if !out.status.success() {
            bail!(
                "alloc-count failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let value: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("alloc-count output")?;
        eprintln!("   {value}");
        self.results.allocations = Some(value);
        Ok(())
    }

    // ---------------------------------------------------------------
    // 5. Many processes.

    async fn big(&mut self) -> anyhow::Result<()> {
        let total = self.args.big;
        let per = self.args.big_per_process.min(19_000);
        let procs = total.div_ceil(per);
        eprintln!("== many processes: {total} connections, {procs} nodes, {procs} load generators");
        let mut nodes = Vec::new();
        for j in 0..procs {
            nodes.push(self.start_edge_node(&format!("big{j}")).await?);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss0: u64 = nodes.iter().map(|n| n.memory().rss_kib).sum();
        let mut gens: Vec<(Child, ChildStdin, mpsc::Receiver<serde_json::Value>)> = Vec::new();
        for (j, node) in nodes.iter().enumerate() {
            let count = per.min(total - j * per);
            let mut child = Command::new(&self.args.loadgen_bin)
                .args(["--url", &node.ws_url, "--push-url", &node.http_url])
                .args(["--secret", JWT_SECRET, "--connections", &count.to_string()])
                .args(["--sources", &format!("127.{}.0.1+64", 100 + j)])
                .args([
                    "--user-prefix",
                    &format!("b{}x", self.run_id),
                    "--first-user",
                    &(j * per).to_string(),
                ])
                .args([
                    "--rate",
                    &(self.args.rate / 2).max(100).to_string(),
                    "--threads",
                    "1",
                ])
                .args(["--push-access-key", PUSH_KEY, "--push-secret", PUSH_SECRET])
                .args([
                    "--probe",
                    "1",
                    "--wait-stdin",
                    "--wait-secs",
                    "120",
                    "--quiet",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(
                    self.args.work_dir.join(format!("loadgen-big{j}.log")),
                )?)
                .spawn()
                .context("starting loadgen")?;
            let stdin = child.stdin.take().context("loadgen stdin")?;
            let stdout = child.stdout.take().context("loadgen stdout")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && tx.send(v).is_err()
                    {
                        break;
                    }
                }
            });
            gens.push((child, stdin, rx));
        }
        // Wait for every generator's `ready`.
        let mut connected = 0usize;
        let mut failed = 0usize;
        for (j, (_, _, rx)) in gens.iter().enumerate() {
            loop {
                let v = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(600)))
                    .with_context(|| format!("loadgen {j} never became ready"))?;
                if v["phase"] == "ready" {
                    connected += v["swarm"]["connected"].as_u64().unwrap_or(0) as usize;
                    failed += v["swarm"]["failed"].as_u64().unwrap_or(0) as usize;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_n: u64 = nodes.iter().map(|n| n.memory().rss_kib).sum();
        let sock = procfs::sockstat().unwrap_or_default();
        eprintln!(
            "   {connected} connected ({failed} failed): node RSS {rss0} -> {rss_n} KiB; kernel TCP buffers {} KiB",
            sock.tcp_mem_kib
        );
        // Probe: every generator pushes one message to each of its connections.
        for (_, stdin, _) in gens.iter_mut() {
            let _ = writeln!(stdin, "go");
            let _ = stdin.flush();
        }
        let mut probe_deliveries = 0;
        let mut p50 = Vec::new();
        let mut p99 = 0;
        let mut max_p999 = 0;
        let mut max_us = 0;
        for (child, stdin, rx) in gens {
            drop(stdin);
            loop {
                let Ok(v) =
                    tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(300)))
                else {
                    break;
                };
                if v["phase"] == "done" {
                    probe_deliveries += v["received"].as_u64().unwrap_or(0);
                    p50.push(v["p50_us"].as_u64().unwrap_or(0));
                    p99 = p99.max(v["p99_us"].as_u64().unwrap_or(0));
                    max_p999 = max_p999.max(v["p999_us"].as_u64().unwrap_or(0));
                    max_us = max_us.max(v["swarm"]["latency"]["max_us"].as_u64().unwrap_or(0));
                    break;
                }
            }
            let mut child = child;
            let _ = child.wait();
        }
        p50.sort_unstable();
        self.results.big = Some(BigRun {
            nodes: procs,
            loadgens: procs,
            connections: connected,
            failed,
            rss_0_kib: rss0,
            rss_n_kib: rss_n,
            bytes_per_conn: rss_n.saturating_sub(rss0) as f64 * 1024.0 / connected.max(1) as f64,
            kernel_tcp_mem_kib: sock.tcp_mem_kib,
            probe_deliveries,
            probe_latency: LatencySummary {
                count: probe_deliveries,
                p50_us: p50.get(p50.len() / 2).copied().unwrap_or(0),
                p99_us: p99,
                p999_us: max_p999,
                max_us,
                ..LatencySummary::default()
            },
        });
        for node in nodes {
            node.stop();
        }
        self.results.notes.push(
            "Many-process probe latency: p50 is the median of the generators' medians, p99/p999/max the worst generator's.".into(),
        );
        Ok(())
    }
}

/// What one steady-rate measurement ([`Runner::steady`]) gave.
struct Steady {
    published: edgepush_bench::publish::PublishReport,
    /// Messages received by the swarm while it ran.
    deliveries: u64,
    latency: LatencySummary,
    stages: Stages,
    /// CPU seconds per process (see [`CpuClock::stop`]).
    cpu: Vec<(String, f64)>,
}

impl Steady {
    /// The results row of this measurement.
    fn row(self, system: &str, path: &str, connections: usize, rate: f64) -> LatencyRow {
        LatencyRow {
            system: system.into(),
            path: path.into(),
            connections,
            rate,
            messages: self.published.sent,
            deliveries: self.deliveries,
            errors: self.published.errors,
            latency: self.latency,
            stages: self.stages,
            cpu_s: self.cpu,
        }
    }
}

/// CPU seconds of some processes (and their children) and of this one,
/// from a starting point.
struct CpuClock {
    start: Vec<(String, u32, f64)>,
    own: f64,
}

impl CpuClock {
    fn start(runner: &Runner, pids: &[(String, u32)]) -> Self {
        Self {
            start: pids
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, tree_cpu(*pid)))
                .collect(),
            own: runner.own_cpu(),
        }
    }

    /// `(process, CPU seconds since the start)`, this process last.
    fn stop(self, runner: &Runner) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .start
            .into_iter()
            .map(|(name, pid, c0)| (name, tree_cpu(pid) - c0))
            .collect();
        out.push(("loadgen+publisher".into(), runner.own_cpu() - self.own));
        out
    }
}

/// CPU seconds of `pid` and its children (PostgreSQL is one process per
/// connection).
fn tree_cpu(pid: u32) -> f64 {
    procfs::tree_cpu_time(pid).map_or(0.0, |d| d.as_secs_f64())
}

/// Most cores busy, on the whole machine, for it to count as quiet.
const QUIET_CORES: f64 = 0.25;
/// How long the machine is watched at a time.
const QUIET_WINDOW: Duration = Duration::from_millis(500);
/// Longest wait for quiet: on a machine others use it may never come, and
/// the row runs anyway (the progress line says how busy it was).
const QUIET_MAX: Duration = Duration::from_secs(20);

/// Waits until the whole machine used at most [`QUIET_CORES`] over a
/// [`QUIET_WINDOW`], or [`QUIET_MAX`] passed; returns the wait and the
/// cores busy in the last window (`None` when `/proc/stat` cannot be read).
async fn settle() -> (Duration, Option<f64>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    let mut busy = None;
    while start.elapsed() < QUIET_MAX {
        let Ok(a) = MachineCpu::now() else {
            break;
        };
        tokio::time::sleep(QUIET_WINDOW).await;
        let Ok(b) = MachineCpu::now() else {
            break;
        };
        busy = b.busy_since(&a, cores);
        if busy.is_some_and(|b| b <= QUIET_CORES) {
            break;
        }
    }
    (start.elapsed(), busy)
}

/// The 1-minute load average now.
fn loadavg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn system_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Edgepush => "edgepush",
        Protocol::Centrifugo => "centrifugo",
    }
}

fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let loadavg = loadavg_1m();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_kib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        loadavg_at_start: loadavg,
    }
}
