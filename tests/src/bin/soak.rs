//! `soak`: the whole system under churn for a configurable time, then the
//! verdict of the fault tests: every message collect accepted was delivered
//! exactly once (after dedupe by seq), in order, to every device of its user.
//!
//! It starts a private Redis, a private MongoDB-wire server, `--nodes`
//! `edge-node serve` processes and a collect API in this process, and
//! connects `--users` x `--devices-per-user` resilient clients spread over
//! the nodes. For `--duration` seconds a producer posts to random users,
//! random devices are restarted (a page reload that keeps its position),
//! and faults are injected at random intervals: a node killed with SIGKILL
//! and restarted, Redis restarted, the MongoDB server restarted. Then the
//! faults stop, the producer's last posts are accepted, and it waits
//! (following progress) until every device holds what was accepted for its
//! user. Progress goes to stderr every 10 s; the last lines are a `SOAK`
//! summary and the `FAULT soak:` verdict line. Exit status 1 when anything
//! was lost, repeated or out of order.
//!
//! Run it with `scripts/soak [ARGS]`, which installs and points it at the
//! servers (see `--help` for the arguments).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use edgepush_tests::fault::{
    Device, Ledger, Tally, Traffic, dispatch_summary, post_until_accepted, reconnects,
    reporting_collect, start_devices, stop_devices, wait_delivered,
};
use edgepush_tests::{Collect, MongoServer, NodeProcess, RedisServer, TestEnv, unique, unique_db};
use futures_util::future::try_join_all;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

/// The soak's knobs.
#[derive(Debug, Parser)]
#[command(about = "Soak edgepush: churn, node kills, store restarts; then check nothing was lost")]
struct Args {
    /// Seconds of churn and faults (the final drain comes on top).
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Users.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Devices (clients) per user.
    #[arg(long, default_value_t = 2)]
    devices_per_user: usize,
    /// Edge nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Posts per second to collect, in all.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Most recipients of one post (each post goes to 1..=this random users).
    #[arg(long, default_value_t = 4)]
    max_recipients: usize,
    /// Posts in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Device restarts per second (random devices, resuming after their last
    /// seq on a random node).
    #[arg(long, default_value_t = 5.0)]
    churn: f64,
    /// Shortest pause between two faults, in seconds.
    #[arg(long, default_value_t = 8)]
    fault_min: u64,
    /// Longest pause between two faults, in seconds.
    #[arg(long, default_value_t = 20)]
    fault_max: u64,
    /// Seed of every random choice (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
}

/// What was done to the system.
#[derive(Debug, Default)]
struct Faults {
    node_kills: u64,
    redis_restarts: u64,
    mongo_restarts: u64,
}

/// The data of post `n`: what each recipient's copy must carry.
fn post_data(n: u64) -> Value {
    json!({ "soak": n })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.users > 0 && args.devices_per_user > 0,
        "--users and --devices-per-user must be > 0"
    );
    ensure!(args.nodes > 0, "--nodes must be > 0");
    ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be > 0"
    );
    ensure!(args.concurrency > 0, "--concurrency must be > 0");
    ensure!(
        (1..=args.users).contains(&args.max_recipients),
        "--max-recipients must be between 1 and --users"
    );
    ensure!(
        args.churn >= 0.0 && args.churn.is_finite(),
        "--churn must be >= 0"
    );
    ensure!(
        args.fault_min >= 1 && args.fault_min <= args.fault_max,
        "need 1 <= --fault-min <= --fault-max"
    );
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("soak: {args:?}, seed {seed}");
    let started = Instant::now();

    let mut redis = RedisServer::start().await.context("starting Redis")?;
    let mut mongo = MongoServer::start()
        .await
        .context("starting the MongoDB server")?;
    let env = TestEnv {
        redis_url: redis.url(),
        mongodb_uri: mongo.uri(),
        database: unique_db(),
        namespaces: edgepush_core::Namespaces::default(),
    };
    let mut nodes = try_join_all((0..args.nodes).map(|_| NodeProcess::start_in(&env)))
        .await
        .context("starting the edge nodes")?;
    let (collect, spy) = reporting_collect(&env).await?;
    let urls: Vec<String> = nodes.iter().map(NodeProcess::ws_url).collect();
    let users: Vec<String> = (0..args.users)
        .map(|i| unique(&format!("soak{i}")))
        .collect();
    let owners: Vec<String> = users
        .iter()
        .flat_map(|u| std::iter::repeat_n(u.clone(), args.devices_per_user))
        .collect();
    eprintln!(
        "soak: {} nodes up, starting {} devices of {} users",
        nodes.len(),
        owners.len(),
        users.len()
    );
    let mut devices = start_devices(&owners, &urls, false, 50).await?;
    eprintln!("soak: devices connected after {:.1?}", started.elapsed());

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let stop = AtomicBool::new(false);
    let posted = AtomicU64::new(0);
    let mut faults = Faults::default();
    let chaos_end = Instant::now() + Duration::from_secs(args.duration);

    let produce = produce(
        &collect, &users, &args, seed, &stop, &posted, &ledger, &traffic,
    );
    let inject = inject_faults(
        &mut nodes,
        &mut redis,
        &mut mongo,
        &args,
        seed,
        chaos_end,
        &mut faults,
    );
    let churn = async {
        let result = churn(&mut devices, &args, seed, chaos_end, &ledger, &traffic).await;
        stop.store(true, Ordering::Release);
        result
    };
    tokio::try_join!(produce, inject, churn)?;
    let drain_started = Instant::now();
    eprintln!(
        "soak: faults and churn over; {} posts accepted; waiting for every device to hold \
         every accepted message",
        traffic.accepted()
    );
    let missing = wait_delivered(&devices, &ledger).await;
    let drained = drain_started.elapsed();

    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|_, n| post_data(n));
    let connections: u64 = devices.iter().map(|d| d.connections() as u64).sum();
    eprintln!(
        "SOAK duration={}s devices={} users={} nodes={} posts_accepted={} messages_accepted={} \
         node_kills={} redis_restarts={} mongo_restarts={} client_reconnects={} connections={} \
         collect_503s={} drain={:.1?} total={:.1?}; {}",
        args.duration,
        devices.len(),
        users.len(),
        nodes.len(),
        traffic.accepted(),
        ledger.total(),
        faults.node_kills,
        faults.redis_restarts,
        faults.mongo_restarts,
        reconnects(&devices),
        connections,
        traffic.count(503),
        drained,
        started.elapsed(),
        dispatch_summary(&spy),
    );
    stop_devices(devices).await;
    env.cleanup().await;
    tally.conclude("soak")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    Ok(())
}

/// Posts at `--rate` until `stop`, each post to random distinct users with a
/// key of its own, retried until accepted; records every receipt.
#[allow(clippy::too_many_arguments)]
async fn produce(
    collect: &Collect,
    users: &[String],
    args: &Args,
    seed: u64,
    stop: &AtomicBool,
    posted: &AtomicU64,
    ledger: &Ledger,
    traffic: &Traffic,
) -> anyhow::Result<()> {
    let run = unique("run");
    let period = Duration::from_secs_f64(args.concurrency as f64 / args.rate);
    let workers = (0..args.concurrency).map(|w| {
        let run = run.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0x5eed_0000 + w as u64));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                let n = posted.fetch_add(1, Ordering::AcqRel);
                let count = rng.random_range(1..=args.max_recipients);
                let to: Vec<&str> = rand::seq::index::sample(&mut rng, users.len(), count)
                    .iter()
                    .map(|i| users[i].as_str())
                    .collect();
                let body = json!({
                    "to": to,
                    "data": post_data(n),
                    "idempotency_key": format!("{run}-{n}"),
                });
                let receipts = post_until_accepted(collect, &body, traffic)
                    .await
                    .with_context(|| format!("post {n}"))?;
                ensure!(
                    receipts.len() == count,
                    "post {n} to {count} users: {} receipts",
                    receipts.len()
                );
                ledger.record(&receipts, n)?;
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    try_join_all(workers).await?;
    Ok(())
}

/// Until `end`: a fault every `--fault-min..=--fault-max` seconds. Every
/// fault is undone before the next (a killed node is restarted after 1-5 s,
/// a store after 1-3 s), so at the end everything runs.
async fn inject_faults(
    nodes: &mut [NodeProcess],
    redis: &mut RedisServer,
    mongo: &mut MongoServer,
    args: &Args,
    seed: u64,
    end: Instant,
    faults: &mut Faults,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    loop {
        let pause = Duration::from_secs(rng.random_range(args.fault_min..=args.fault_max));
        if Instant::now() + pause >= end {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        let down = Duration::from_millis(rng.random_range(1000..=5000));
        match rng.random_range(0..10) {
            0..=5 => {
                let i = rng.random_range(0..nodes.len());
                let node = &mut nodes[i];
                eprintln!("soak: fault: kill -9 {} for {down:.1?}", node.node_id());
                node.kill_9();
                tokio::time::sleep(down).await;
                node.restart()
                    .await
                    .with_context(|| format!("restarting {}", node.node_id()))?;
                faults.node_kills += 1;
            }
            6 | 7 => {
                let down = down.min(Duration::from_secs(3));
                eprintln!("soak: fault: Redis down for {down:.1?}");
                redis.kill();
                tokio::time::sleep(down).await;
                redis.restart().await.context("restarting Redis")?;
                faults.redis_restarts += 1;
            }
            _ => {
                let down = down.min(Duration::from_secs(3));
                eprintln!("soak: fault: MongoDB down for {down:.1?}");
                mongo.kill();
                tokio::time::sleep(down).await;
                mongo
                    .restart()
                    .await
                    .context("restarting the MongoDB server")?;
                faults.mongo_restarts += 1;
            }
        }
    }
}

/// Until `end`: `--churn` device restarts a second, and a progress line
/// every 10 s.
async fn churn(
    devices: &mut [Device],
    args: &Args,
    seed: u64,
    end: Instant,
    ledger: &Ledger,
    traffic: &Traffic,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut restarted = 0u64;
    let mut last_report = Instant::now();
    while Instant::now() < end {
        tick.tick().await;
        let whole = args.churn.floor();
        let extra = u64::from(rng.random_bool(args.churn - whole));
        for _ in 0..(whole as u64 + extra) {
            let i = rng.random_range(0..devices.len());
            devices[i].restart().await?;
            restarted += 1;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let held: u64 = devices.iter().map(|d| d.count() as u64).sum();
            let due: u64 = devices
                .iter()
                .map(|d| ledger.count_of(&d.user) as u64)
                .sum();
            let mut on: BTreeMap<String, usize> = BTreeMap::new();
            for d in devices.iter() {
                if let Some((url, _)) = d.current() {
                    *on.entry(url).or_default() += 1;
                }
            }
            eprintln!(
                "soak: {:>5.0}s posts accepted {} (503s {}), messages held {held} of {due} due, \
                 device restarts {restarted}, reconnects {}, devices per node {:?}",
                started.elapsed().as_secs_f64(),
                traffic.accepted(),
                traffic.count(503),
                reconnects(devices),
                on.values().collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}
