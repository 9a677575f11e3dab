//! Fault tests of the delivery guarantee for clients that stay connected:
//! the node stalls, its push API fails, the network between dispatch and the
//! node is cut, routes live much shorter than connections. In each, a
//! producer streams messages through collect while the fault happens, and at
//! the end every client holds every accepted message exactly once, in order,
//! without having reconnected (one connection each): catch-up on resume is
//! the safety net, not the delivery path.
//!
//! Each test prints `FAULT <name>: accepted=A delivered=D
//! duplicates_dropped=X lost=L`. Waits follow progress (see
//! `edgepush_tests::fault`).
//!
//! Run with `scripts/test`, or with the `EDGEPUSH_TEST_*` variables set:
//! `cargo test -p edgepush-tests --test faults_network -- --nocapture`. The
//! network test needs root, iproute2 and iptables (`scripts/test` installs
//! them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use edgepush_tests::fault::{
    Device, Ledger, Tally, Traffic, dispatch_summary, post_until_accepted, produce_rounds,
    reconnects, reporting_collect, round_data, round_post, start_devices, stop_devices,
    wait_delivered,
};
use edgepush_tests::net::{FlakyProxy, TcpRelay, TestHost};
use edgepush_tests::{Check, Collect, NodeOptions, NodeProcess, TestEnv, stall, unique, until};

/// Every device kept the one connection it started with.
fn ensure_stayed_connected(devices: &[Device], name: &str) -> anyhow::Result<()> {
    let moved: Vec<String> = devices
        .iter()
        .filter(|d| d.connections() != 1)
        .map(|d| format!("{} ({} connections)", d.user, d.connections()))
        .collect();
    ensure!(
        moved.is_empty() && reconnects(devices) == 0,
        "{name}: clients reconnected ({} reconnects): {:?}",
        reconnects(devices),
        &moved[..moved.len().min(10)]
    );
    Ok(())
}

/// Users of a stream, and messages each.
const USERS: usize = 100;
const ROUNDS: u64 = 20;
/// Posts of a stream in all.
const TOTAL: u64 = USERS as u64 * ROUNDS;

/// Streams [`ROUNDS`] messages to each of [`USERS`] users with `fault`
/// running beside the producer (it sees the producer's `traffic`, to start
/// when half the posts are in), then checks that everything arrived on the
/// clients' first connections.
async fn stream_through(
    name: &str,
    env: &TestEnv,
    nodes: &[String],
    traffic: &Traffic,
    fault: impl Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<()> {
    let (collect, spy) = reporting_collect(env).await?;
    let users: Vec<String> = (0..USERS).map(|i| unique(&format!("{name}{i}"))).collect();
    let devices = start_devices(&users, nodes, true, 25).await?;
    let ledger = Ledger::default();
    let total = TOTAL;
    let produce = produce_rounds(&collect, &users, ROUNDS, 16, None, &ledger, traffic);
    let ((), what) = tokio::try_join!(produce, fault)?;
    let missing = wait_delivered(&devices, &ledger).await;

    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    eprintln!(
        "{name}: {what}; {} reconnects; 503s {}; {}",
        reconnects(&devices),
        traffic.count(503),
        dispatch_summary(&spy)
    );
    let stayed = ensure_stayed_connected(&devices, name);
    stop_devices(devices).await;
    tally.conclude(name)?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    stayed?;
    ensure!(
        ledger.total() == total,
        "accepted {} of {total}",
        ledger.total()
    );
    Ok(())
}

// 1 -----------------------------------------------------------------------

/// SIGSTOP for a few seconds (less than the liveness TTL), then SIGCONT:
/// pushes wait or are retried, nobody reconnects, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_loses_nothing() -> anyhow::Result<()> {
    const PAUSE: Duration = Duration::from_secs(3);
    let env = TestEnv::shared()?;
    let node = NodeProcess::start(NodeOptions {
        node_ttl_ms: 15_000,
        ..NodeOptions::new(&env)
    })
    .await?;
    let traffic = Traffic::default();
    let fault = async {
        traffic.wait_accepted(TOTAL / 2).await?;
        let at = traffic.accepted();
        node.pause()?;
        tokio::time::sleep(PAUSE).await;
        node.resume()?;
        Ok(format!("paused {PAUSE:?} after {at} of {TOTAL} posts"))
    };
    let result = stream_through("paused_node", &env, &[node.ws_url()], &traffic, fault).await;
    env.cleanup().await;
    result
}

// 2 -----------------------------------------------------------------------

/// The push API answers 500 for a while (a proxy in front of it fails every
/// request): dispatch retries, and what it cannot deliver in time fails the
/// hand-off, so collect answers 503 and the producer retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_api_that_fails_for_a_while_loses_nothing() -> anyhow::Result<()> {
    const FAILING: Duration = Duration::from_secs(4);
    let env = TestEnv::shared()?;
    let proxy = FlakyProxy::start().await?;
    let node =
        NodeProcess::start(NodeOptions::new(&env).with_env("EDGEPUSH_PUSH_URL", proxy.url()))
            .await?;
    proxy.set_target(node.push_addr());
    let traffic = Traffic::default();
    let fault = async {
        traffic.wait_accepted(TOTAL / 2).await?;
        let at = traffic.accepted();
        proxy.set_failing(true);
        // Fail for a while, and at least until some pushes met it.
        tokio::time::sleep(FAILING).await;
        until("pushes to meet the failing push API", stall(), || async {
            let refused = proxy.refused();
            Ok(if refused > 0 {
                Check::Done(())
            } else {
                Check::Waiting(traffic.accepted())
            })
        })
        .await?;
        proxy.set_failing(false);
        Ok(format!(
            "push API failed from {at} of {TOTAL} posts for {FAILING:?} at least: {} requests \
             answered 500",
            proxy.refused()
        ))
    };
    let result = stream_through("push_500", &env, &[node.ws_url()], &traffic, fault).await;
    env.cleanup().await;
    result
}

// 3 -----------------------------------------------------------------------

/// The node runs on a test host of its own (a network namespace); dispatch
/// is cut off from its push API (every packet dropped) while its clients
/// stay connected, then the path comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_dispatch_loses_nothing() -> anyhow::Result<()> {
    const CUT: Duration = Duration::from_secs(8);
    let env = TestEnv::shared()?;
    let host = TestHost::create()?;
    let gateway = std::net::IpAddr::V4(host.gateway);
    let redis = TcpRelay::start(gateway, socket_of(&env.redis_url)?).await?;
    let mongo = TcpRelay::start(gateway, socket_of(&env.mongodb_uri)?).await?;
    let node = NodeProcess::start(NodeOptions {
        redis_url: format!("redis://{}", redis.addr),
        mongodb_uri: format!("mongodb://{}/?directConnection=true", mongo.addr),
        host: host.ip(),
        wrap: host.wrap(),
        node_ttl_ms: 10_000,
        ..NodeOptions::new(&env)
    })
    .await?;
    let push_port = node.push_addr().port();
    let blocked = AtomicBool::new(false);
    let traffic = Traffic::default();
    let fault = async {
        traffic.wait_accepted(TOTAL / 2).await?;
        let at = traffic.accepted();
        host.block_port(push_port)?;
        blocked.store(true, Ordering::Release);
        tokio::time::sleep(CUT).await;
        host.unblock_port(push_port)?;
        blocked.store(false, Ordering::Release);
        Ok(format!(
            "push API of the node on {} cut off for {CUT:?} after {at} of {TOTAL} posts",
            host.addr
        ))
    };
    let result = stream_through("node_cut_off", &env, &[node.ws_url()], &traffic, fault).await;
    if blocked.load(Ordering::Acquire) {
        let _ = host.unblock_port(push_port);
    }
    drop(node);
    env.cleanup().await;
    result
}

/// `host:port` of a `redis://` or `mongodb://` URL on loopback.
fn socket_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .with_context(|| format!("not a URL: {url}"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    authority
        .parse()
        .with_context(|| format!("{url}: the test needs host:port with an IP address"))
}

// 4 -----------------------------------------------------------------------

/// Routes live 3 seconds; the connections live many times longer and keep
/// receiving, because the node writes their routes again before they
/// expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_outlive_their_ttl_while_connections_live() -> anyhow::Result<()> {
    const ROUTE_TTL_MS: u64 = 3_000;
    const TTL_ROUNDS: u64 = 12;
    const GAP: Duration = Duration::from_secs(1);
    let env = TestEnv::shared()?;
    let node = NodeProcess::start(
        NodeOptions {
            node_ttl_ms: ROUTE_TTL_MS,
            ..NodeOptions::new(&env)
        }
        .with_env("EDGEPUSH_ROUTE_TTL_MS", ROUTE_TTL_MS.to_string()),
    )
    .await?;
    let (collect, spy) = reporting_collect(&env).await?;
    let users: Vec<String> = (0..50).map(|i| unique(&format!("ttl{i}"))).collect();
    let devices = start_devices(&users, &[node.ws_url()], true, 25).await?;
    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let started = tokio::time::Instant::now();
    // One round at a time with a pause between: the stream lasts many route
    // TTLs, whatever the machine's speed.
    for k in 1..=TTL_ROUNDS {
        produce_rounds_one(&collect, &users, k, &ledger, &traffic).await?;
        tokio::time::sleep(GAP).await;
    }
    let lasted = started.elapsed();
    let missing = wait_delivered(&devices, &ledger).await;
    let refreshed = node
        .metric("edgepush_routes_refreshed_total")
        .await?
        .unwrap_or(0.0);
    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    eprintln!(
        "route_ttl: routes live {ROUTE_TTL_MS} ms, the stream {lasted:.1?}; routes refreshed \
         {refreshed}; {} reconnects; {}",
        reconnects(&devices),
        dispatch_summary(&spy)
    );
    let stayed = ensure_stayed_connected(&devices, "route_ttl");
    stop_devices(devices).await;
    tally.conclude("route_ttl")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    stayed?;
    ensure!(
        lasted > Duration::from_millis(3 * ROUTE_TTL_MS),
        "the stream lasted {lasted:?}, not several route TTLs"
    );
    ensure!(refreshed > 0.0, "the node never refreshed a route");
    env.cleanup().await;
    Ok(())
}

/// Round `k` of a rounds stream alone.
async fn produce_rounds_one(
    collect: &Collect,
    users: &[String],
    k: u64,
    ledger: &Ledger,
    traffic: &Traffic,
) -> anyhow::Result<()> {
    for user in users {
        let receipts = post_until_accepted(collect, &round_post(user, k), traffic).await?;
        ensure!(
            receipts.len() == 1 && receipts[0].seq == k,
            "message {k} to {user}: receipts {receipts:?}"
        );
        ledger.record(&receipts, k)?;
    }
    Ok(())
}
