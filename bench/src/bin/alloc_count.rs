//! `alloc-count`: heap allocations of the edge node, per idle connection
//! and per delivered message, counted by a counting global allocator.
//!
//! The edge node runs in this process (`edge_node::run` on in-memory
//! stores, listeners on port 0) on its own tokio runtime whose threads are
//! marked "counted"; the load generator and the publisher run on a second
//! runtime whose threads are not. So the counts are the node's alone: the
//! push API request (HTTP, SigV4 check, JSON parse of the batch), the hub,
//! the per-connection queues and the WebSocket writes.
//!
//! Phases (N connections, K messages each, after [`WARM_UP`] messages):
//! - `idle`: allocations and live heap bytes per connection after N connect;
//! - `fanout`: K batches, each one message to all N connections of one user;
//! - `fanout_gone`: the same batches to N connection ids that are not on the
//!   node: the cost of the request alone (parse, lookup), without delivery;
//! - `unicast`: K rounds of N batch items, one per user.
//!
//! Caveat: memory allocated on a node thread and freed on a client thread
//! (or the reverse) is counted on one side only; in this setup nothing is
//! handed between the runtimes except over sockets.
//!
//! ```text
//! alloc-count --connections 1000 --messages 20
//! alloc-count --connections 200 --messages 5 --trace-unicast 7
//! ```
//!
//! `--trace-unicast K` also samples every K-th allocation of the unicast
//! phase with a backtrace and prints, on stderr, the call sites that
//! allocate most (where an allocation per delivery comes from).
#![allow(unsafe_code)] // A global allocator is an `unsafe impl`; it only forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use edge_node::{AuthMode, NodeConfig, NodeDeps};
use edgepush_auth::AuthConfig;
use edgepush_bench::loadgen::{Protocol, Swarm, SwarmConfig, Users};
use edgepush_bench::publish::{PublishConfig, Publisher, Target};
use edgepush_core::memory::{MemoryMessageStore, MemoryRouteStore};
use edgepush_delivery::sigv4::PushCredential;
use serde_json::json;

/// Counts allocations made on threads marked [`COUNTED`].
struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted (node runtime threads).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static BYTES_ALLOCATED: AtomicU64 = AtomicU64::new(0);
static BYTES_FREED: AtomicU64 = AtomicU64::new(0);
/// Allocations minus frees by size class (bucket `b` holds sizes in
/// `(2^(b-1), 2^b]`): what stays allocated, by size.
static LIVE_BY_SIZE: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];

fn bucket(size: usize) -> usize {
    (usize::BITS - size.saturating_sub(1).leading_zeros()).min(31) as usize
}

fn note_alloc(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES_ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
    LIVE_BY_SIZE[bucket(size)].fetch_add(1, Ordering::Relaxed);
}

fn note_free(size: usize) {
    FREES.fetch_add(1, Ordering::Relaxed);
    BYTES_FREED.fetch_add(size as u64, Ordering::Relaxed);
    LIVE_BY_SIZE[bucket(size)].fetch_sub(1, Ordering::Relaxed);
}

fn counted() -> bool {
    // `const` thread-local without destructor: no allocation, safe here.
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

thread_local! {
    /// Set while this thread captures a backtrace (whose own allocations
    /// are neither counted nor traced).
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Sample every this many counted allocations with a backtrace (0: off).
static TRACE_EVERY: AtomicU64 = AtomicU64::new(0);
/// The sampled backtraces, resolved when printed.
static TRACES: std::sync::Mutex<Vec<std::backtrace::Backtrace>> = std::sync::Mutex::new(Vec::new());

/// Counts an allocation of the node; samples it when tracing is on.
fn note_node_alloc(size: usize) {
    if TRACING.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    note_alloc(size);
    let every = TRACE_EVERY.load(Ordering::Relaxed);
    if every > 0 && ALLOCS.load(Ordering::Relaxed).is_multiple_of(every) {
        TRACING.with(|t| t.set(true));
        let trace = std::backtrace::Backtrace::force_capture();
        if let Ok(mut traces) = TRACES.lock() {
            traces.push(trace);
        }
        TRACING.with(|t| t.set(false));
    }
}

/// The sampled call sites, most frequent first: each backtrace cut to the
/// frames below the allocator, with the crates' own frames kept.
fn print_traces(samples_every: u64) {
    let traces = std::mem::take(&mut *TRACES.lock().unwrap_or_else(|e| e.into_inner()));
    let mut sites: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for trace in &traces {
        let text = trace.to_string();
        let frames: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("at "))
            .map(|l| l.split_once(": ").map_or(l, |(_, f)| f))
            .filter(|f| {
                !f.starts_with("std::")
                    && !f.starts_with("alloc::")
                    && !f.starts_with("core::")
                    && !f.starts_with("<alloc_count::Counting")
                    && !f.starts_with("alloc_count::note")
                    && !f.starts_with("__rust")
            })
            .take(14)
            .collect();
        *sites.entry(frames.join("\n    ")).or_default() += 1;
    }
    let mut sites: Vec<(String, u64)> = sites.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1));
    eprintln!(
        "alloc-count: {} sampled allocations (1 in {samples_every}), top call sites:",
        traces.len()
    );
    for (site, n) in sites.iter().take(12) {
        eprintln!("  {n} x\n    {site}");
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments;
// the counting only touches atomics and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            note_node_alloc(layout.size());
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            note_node_alloc(layout.size());
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() && !TRACING.try_with(Cell::get).unwrap_or(true) {
            note_free(layout.size());
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() && !TRACING.try_with(Cell::get).unwrap_or(true) {
            // A realloc may move: count it as an allocation and a free.
            note_node_alloc(new_size);
            note_free(layout.size());
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    allocs: u64,
    frees: u64,
    allocated: u64,
    freed: u64,
    live_by_size: [i64; 32],
}

fn snapshot() -> Snapshot {
    Snapshot {
        allocs: ALLOCS.load(Ordering::Relaxed),
        frees: FREES.load(Ordering::Relaxed),
        allocated: BYTES_ALLOCATED.load(Ordering::Relaxed),
        freed: BYTES_FREED.load(Ordering::Relaxed),
        live_by_size: std::array::from_fn(|b| LIVE_BY_SIZE[b].load(Ordering::Relaxed)),
    }
}

/// Allocations still live per unit, by size class (`"<=2048": 1.0`).
fn live_by_size(a: Snapshot, b: Snapshot, units: u64) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for k in 0..32 {
        let n = b.live_by_size[k] - a.live_by_size[k];
        let per = n as f64 / units.max(1) as f64;
        if per.abs() >= 0.05 {
            out.insert(
                format!("<={}", 1u64 << k),
                json!((per * 100.0).round() / 100.0),
            );
        }
    }
    serde_json::Value::Object(out)
}

/// Per-unit figures between two snapshots.
fn per(a: Snapshot, b: Snapshot, units: u64) -> serde_json::Value {
    let u = units.max(1) as f64;
    let live = (b.allocated as i64 - b.freed as i64) - (a.allocated as i64 - a.freed as i64);
    json!({
        "units": units,
        "allocs": b.allocs - a.allocs,
        "allocs_per_unit": (b.allocs - a.allocs) as f64 / u,
        "frees_per_unit": (b.frees - a.frees) as f64 / u,
        "bytes_allocated_per_unit": (b.allocated - a.allocated) as f64 / u,
        "live_bytes_per_unit": live as f64 / u,
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "alloc-count",
    about = "Allocations of the edge node per connection and per delivered message"
)]
struct Args {
    /// Connections (N).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Messages per phase (K).
    #[arg(long, default_value_t = 20)]
    messages: u64,
    /// Bytes of data per message.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Sample every K-th allocation of the unicast phase with a backtrace
    /// and print the top call sites on stderr (0: off; slows the phase).
    #[arg(long, default_value_t = 0)]
    trace_unicast: u64,
}

const SECRET: &str = "alloc-count-secret-0123456789";

/// Messages sent before each measured phase. Seqs and message ids
/// (`bench-<seq>`) then have two digits in every measured message (seqs
/// 10..=99, for up to 90 messages): frames keep one length, so the
/// connections' write buffers, grown once to their steady size during the
/// warm-up, are not grown again by a frame one digit longer — a growth
/// that happens once per connection in a lifetime, not per message.
const WARM_UP: u64 = 9;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("node")
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .enable_all()
        .build()
        .context("node runtime")?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()
        .context("client runtime")?;

    let credential = PushCredential::new("bench-push", "bench-push-secret", "us-east-1");
    let mut config = NodeConfig::for_local(
        "alloc",
        AuthMode::Local(AuthConfig::hs256(SECRET.as_bytes().to_vec())),
        credential.clone(),
    );
    // Keep timers quiet during the measurement.
    config.heartbeat_interval = Duration::from_secs(600);
    config.node_ttl = Duration::from_secs(1200);
    config.ping_interval = Duration::from_secs(600);
    config.idle_timeout = Duration::from_secs(1200);
    // The fan-out phase holds N connections of one user.
    config.max_connections_per_user = config.max_connections;
    let stop = tokio_util::sync::CancellationToken::new();
    let (ws_addr, push_addr) = node_rt.block_on(async {
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let push = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addrs = (ws.local_addr()?, push.local_addr()?);
        let routes = Arc::new(MemoryRouteStore::new());
        let deps = NodeDeps {
            routes: routes.clone(),
            nodes: routes,
            messages: Arc::new(MemoryMessageStore::new()),
            verifier: edge_node::verifier_for(&config.auth)?,
            topics: Arc::new(edgepush_core::memory::MemoryTopicStore::new()),
            topic_routes: Arc::new(edgepush_core::memory::MemoryTopicRoutes::default()),
            presence: Arc::new(edgepush_core::memory::MemoryPresence::new()),
            pusher: Arc::new(edgepush_delivery::HttpPusher::new(
                edgepush_delivery::PushClientConfig::new(credential.clone()),
            )?),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = edge_node::run(ws, push, config, deps, stopped.cancelled_owned()).await
            {
                eprintln!("node failed: {e}");
            }
        });
        anyhow::Ok(addrs)
    })?;
    let push_url = format!("http://{push_addr}");
    let ws_url = format!("ws://{ws_addr}/ws");
    let n = args.connections;
    let k = args.messages;
    let pc = |count| PublishConfig {
        count,
        payload_bytes: args.payload_bytes,
        ..PublishConfig::default()
    };

    let report = client_rt.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(500));
        let wait = Duration::from_secs(120);

        // Idle connections of one user.
        let mut cfg = SwarmConfig::new(vec![ws_url.clone()], Protocol::Edgepush, SECRET);
        cfg.users = Users::Single("fan".into());
        cfg.rate = 0;
        let mut fan = Swarm::new(cfg).await?;
        settle().await;
        let s0 = snapshot();
        fan.grow(n).await;
        anyhow::ensure!(
            fan.connected() == n,
            "only {} of {n} connected: {:?}",
            fan.connected(),
            fan.report().first_error
        );
        settle().await;
        let s1 = snapshot();
        let mut idle = per(s0, s1, n as u64);
        idle["live_allocations_by_size"] = live_by_size(s0, s1, n as u64);

        // Fan-out: one message to N connections, K times (after the warm-up).
        let conn_ids: Vec<String> = fan.conn_ids().into_iter().flatten().collect();
        let warm = Publisher::new(
            Target::Batch {
                push_url: push_url.clone(),
                user: "fan".into(),
                conn_ids: conn_ids.clone(),
                first_seq: 1,
            },
            Some(credential.clone()),
        )?;
        warm.run(&pc(WARM_UP)).await;
        anyhow::ensure!(
            fan.wait_received(n as u64 * WARM_UP, wait).await,
            "warm-up not delivered"
        );
        settle().await;
        let s2 = snapshot();
        let batch = Publisher::new(
            Target::Batch {
                push_url: push_url.clone(),
                user: "fan".into(),
                conn_ids,
                first_seq: WARM_UP + 1,
            },
            Some(credential.clone()),
        )?;
        let published = batch.run(&pc(k)).await;
        anyhow::ensure!(
            fan.wait_received(n as u64 * (k + WARM_UP), wait).await,
            "fan-out not delivered: {published:?}"
        );
        settle().await;
        let s3 = snapshot();
        let fanout = per(s2, s3, n as u64 * k);

        // The same requests to connections that are not here.
        let ghosts: Vec<String> = (0..n).map(|i| format!("ghost{i}")).collect();
        let gone = Publisher::new(
            Target::Batch {
                push_url: push_url.clone(),
                user: "ghost".into(),
                conn_ids: ghosts,
                first_seq: 1,
            },
            Some(credential.clone()),
        )?;
        settle().await;
        let s4 = snapshot();
        gone.run(&pc(k)).await;
        settle().await;
        let s5 = snapshot();
        let fanout_gone = per(s4, s5, n as u64 * k);

        // Unicast: N users, one message each per round.
        let mut cfg = SwarmConfig::new(vec![ws_url.clone()], Protocol::Edgepush, SECRET);
        cfg.users = Users::PerConnection { prefix: "w".into() };
        cfg.rate = 0;
        let mut uni = Swarm::new(cfg).await?;
        uni.grow(n).await;
        let pairs: Vec<(String, String, u64)> = uni
            .conn_ids()
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (format!("w{i}"), c, 1)))
            .collect();
        let warm = Publisher::new(
            Target::BatchUnicast {
                push_url: push_url.clone(),
                pairs: pairs.clone(),
                chunk: 1000,
            },
            Some(credential.clone()),
        )?;
        warm.run(&pc(WARM_UP)).await;
        anyhow::ensure!(
            uni.wait_received(n as u64 * WARM_UP, wait).await,
            "unicast warm-up not delivered"
        );
        let pairs: Vec<(String, String, u64)> = pairs
            .into_iter()
            .map(|(u, c, _)| (u, c, WARM_UP + 1))
            .collect();
        let rounds = Publisher::new(
            Target::BatchUnicast {
                push_url: push_url.clone(),
                pairs,
                chunk: 1000,
            },
            Some(credential.clone()),
        )?;
        settle().await;
        let s6 = snapshot();
        TRACE_EVERY.store(args.trace_unicast, Ordering::Relaxed);
        rounds.run(&pc(k)).await;
        anyhow::ensure!(
            uni.wait_received(n as u64 * (k + WARM_UP), wait).await,
            "unicast not delivered"
        );
        settle().await;
        TRACE_EVERY.store(0, Ordering::Relaxed);
        let s7 = snapshot();
        let unicast = per(s6, s7, n as u64 * k);

        fan.close(Duration::from_secs(5)).await;
        uni.close(Duration::from_secs(5)).await;
        anyhow::Ok(json!({
            "connections": n,
            "messages": k,
            "payload_bytes": args.payload_bytes,
            "idle_per_connection": idle,
            "fanout_per_delivery": fanout,
            "fanout_gone_per_connection_id": fanout_gone,
            "unicast_per_delivery": unicast,
        }))
    })?;
    stop.cancel();
    drop(node_rt);
    if args.trace_unicast > 0 {
        print_traces(args.trace_unicast);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{report}");
    }
    Ok(())
}
