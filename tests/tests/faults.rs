//! Fault tests of the delivery guarantee: nothing accepted is lost.
//!
//! Each test breaks something real while a producer streams messages
//! through collect: an edge node is SIGKILLed, Redis is flushed or
//! restarted, MongoDB goes down, a client stops reading, duplicates race.
//! The edge nodes are `edge-node serve` processes, Redis and MongoDB are
//! real servers (private ones where the test breaks them), and the clients
//! are [`edgepush_client::Client`]s (one test also uses a raw
//! tokio-tungstenite socket that stops reading).
//!
//! Every test ends the same way: it prints
//! `FAULT <name>: accepted=A delivered=D duplicates_dropped=X lost=L` and
//! asserts that every user holds every message collect accepted (answered
//! `202` for) exactly once, in seq order, with the ids and data collect
//! stored: `lost == 0` and `delivered == accepted`.
//!
//! The producers retry `503`s (and transport errors) with the same
//! idempotency key, as the collect API asks its callers to. Every wait
//! follows progress (`edgepush_tests::wait::until`): it fails only when
//! nothing has moved for `EDGEPUSH_TEST_STALL_SECS` (120 s), with what did
//! not happen; no test asserts a duration. The harness is
//! `edgepush_tests::fault`.
//!
//! Run with `scripts/test`, or set `EDGEPUSH_TEST_REDIS_URL`,
//! `EDGEPUSH_TEST_MONGODB_URI` and `EDGEPUSH_FERRETDB_BIN` and run
//! `cargo test -p edgepush-tests --test faults -- --nocapture`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use edgepush_client::MsgFrame;
use edgepush_core::protocol::{ServerFrame, SubmitResponse};
use edgepush_core::{MessageStore as _, UserId};
use edgepush_tests::fault::{
    Device, GRACE, Ledger, Tally, Traffic, dispatch_summary, flushall, lock, node_ids,
    post_until_accepted, produce_rounds, reconnects, reporting_collect, round_data, round_post,
    start_devices, stop_devices, two_nodes, wait_delivered, wait_routes_back,
};
use edgepush_tests::{
    Check, Collect, MongoServer, NodeOptions, NodeProcess, RedisProbe, RedisServer, TestEnv,
    TokenIn, WsClient, mint, rss_kib, stall, unique, until,
};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Token lifetime: longer than any test.
const HOUR: Duration = Duration::from_secs(3600);

// 1 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_crash_loses_nothing() -> anyhow::Result<()> {
    TestEnv::run(node_crash).await
}

async fn node_crash(env: &TestEnv) -> anyhow::Result<()> {
    const USERS: usize = 500;
    const PER_USER: u64 = 20;
    const CONCURRENCY: usize = 24;
    let (mut a, b, collect, spy) = two_nodes(env).await?;
    let (a_url, b_url) = (a.ws_url(), b.ws_url());
    let users: Vec<String> = (0..USERS).map(|i| unique(&format!("c{i}"))).collect();
    // Even users start on a, odd users on b; each client lists both.
    let devices = start_devices(&users, &[a_url.clone(), b_url.clone()], true, 25).await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let total = USERS as u64 * PER_USER;
    let started = Instant::now();
    let produce = produce_rounds(
        &collect,
        &users,
        PER_USER,
        CONCURRENCY,
        None,
        &ledger,
        &traffic,
    );
    let crash = async {
        traffic.wait_accepted(total / 2).await?;
        a.kill_9();
        Ok::<u64, anyhow::Error>(traffic.accepted())
    };
    let ((), killed_at) = tokio::try_join!(produce, crash)?;
    let missing = wait_delivered(&devices, &ledger).await;

    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    // The clients of the killed node went to the other one.
    let stranded: Vec<String> = devices
        .iter()
        .step_by(2)
        .filter(|d| d.current().map(|(url, _)| url) != Some(b_url.clone()))
        .map(|d| d.user.clone())
        .collect();
    eprintln!(
        "node_crash: killed {} after {killed_at} of {total} posts; {} reconnects; \
         503s {}; {}; {:.1?} in all",
        a.node_id(),
        reconnects(&devices),
        traffic.count(503),
        dispatch_summary(&spy),
        started.elapsed()
    );
    stop_devices(devices).await;
    tally.conclude("node_crash")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(
        stranded.is_empty(),
        "{} clients of the killed node are not on {b_url}: {:?}",
        stranded.len(),
        &stranded[..stranded.len().min(10)]
    );
    ensure!(
        ledger.total() == total,
        "accepted {} of {total}",
        ledger.total()
    );
    Ok(())
}

// 2 -----------------------------------------------------------------------

/// The Redis faults of test 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedisFault {
    FlushAll,
    Restart,
}

async fn redis_loss(fault: RedisFault, name: &str) -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let env = TestEnv::shared()?.with_redis(redis.url());
    let result = redis_loss_in(&env, redis, fault, name).await;
    env.cleanup().await;
    result
}

async fn redis_loss_in(
    env: &TestEnv,
    mut redis: RedisServer,
    fault: RedisFault,
    name: &str,
) -> anyhow::Result<()> {
    const USERS: usize = 100;
    const PER_USER: u64 = 20;
    const CONCURRENCY: usize = 16;
    let (a, b, collect, spy) = two_nodes(env).await?;
    let ids = node_ids(&[&a, &b]);
    let probe = RedisProbe::connect(&redis.url()).await?;
    let users: Vec<String> = (0..USERS).map(|i| unique(&format!("r{i}"))).collect();
    let devices = start_devices(&users, &[a.ws_url(), b.ws_url()], true, 25).await?;
    wait_routes_back(&probe, &devices, &ids)
        .await
        .context("routes before the fault")?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let total = USERS as u64 * PER_USER;
    // A message dispatched while the routes are gone reaches a live
    // connection only with the user's next message (the node fills the
    // gap) or a reconnect; the last round therefore waits until the routes
    // are back, so every user has a message after the repair.
    let repaired = AtomicBool::new(false);
    let produce = produce_rounds(
        &collect,
        &users,
        PER_USER,
        CONCURRENCY,
        Some(&repaired),
        &ledger,
        &traffic,
    );
    let break_redis = async {
        traffic.wait_accepted(total / 2).await?;
        let at = traffic.accepted();
        let broken = Instant::now();
        match fault {
            RedisFault::FlushAll => flushall(&redis.url()).await?,
            RedisFault::Restart => {
                redis.kill();
                // Collect must refuse while Redis is down.
                until(
                    "collect to answer 503 while Redis is down",
                    stall(),
                    || async {
                        let responses = lock(&traffic.responses);
                        let since: Vec<_> =
                            responses.iter().filter(|r| r.started >= broken).collect();
                        Ok(if since.iter().any(|r| r.status == Some(503)) {
                            Check::Done(())
                        } else {
                            Check::Waiting(since.len())
                        })
                    },
                )
                .await?;
                redis.restart().await?;
            }
        }
        let back = Instant::now();
        // A fresh connection: a restart breaks the probe's.
        let probe = RedisProbe::connect(&redis.url()).await?;
        wait_routes_back(&probe, &devices, &ids)
            .await
            .context("routes after the fault")?;
        let repaired_after = back.elapsed();
        repaired.store(true, Ordering::Release);
        Ok::<_, anyhow::Error>((at, repaired_after))
    };
    let ((), (at, repaired_after)) = tokio::try_join!(produce, break_redis)?;
    let missing = wait_delivered(&devices, &ledger).await;

    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    let mut reregistrations = Vec::new();
    for node in [&a, &b] {
        reregistrations.push(
            node.metric("edgepush_reregistrations_total")
                .await?
                .unwrap_or(0.0),
        );
    }
    eprintln!(
        "{name}: {fault:?} after {at} of {total} posts; routes back {repaired_after:.1?} after \
         Redis was (back) up; re-registrations per node {reregistrations:?}; {} reconnects; \
         503s {}; {}",
        reconnects(&devices),
        traffic.count(503),
        dispatch_summary(&spy),
    );
    stop_devices(devices).await;
    tally.conclude(name)?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(
        reregistrations.iter().all(|n| *n >= 1.0),
        "a node did not re-register its routes: {reregistrations:?}"
    );
    ensure!(
        ledger.total() == total,
        "accepted {} of {total}",
        ledger.total()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_loses_nothing() -> anyhow::Result<()> {
    redis_loss(RedisFault::FlushAll, "redis_flushall").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_nothing() -> anyhow::Result<()> {
    redis_loss(RedisFault::Restart, "redis_restart").await
}

/// A message accepted while the routes are gone (after a `FLUSHALL`, before
/// the node's next heartbeat re-registers them) must still reach a client
/// that stays connected, even if no later message comes to fill the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_accepted_while_routes_are_gone_reaches_its_live_client() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let env = TestEnv::shared()?.with_redis(redis.url());
    let result = routes_gone_window(&env, &redis).await;
    env.cleanup().await;
    result
}

async fn routes_gone_window(env: &TestEnv, redis: &RedisServer) -> anyhow::Result<()> {
    // A slow heartbeat: the post below lands well inside the window, even
    // on a slow machine.
    let options = NodeOptions {
        heartbeat_ms: 30_000,
        node_ttl_ms: 120_000,
        ..NodeOptions::new(env)
    };
    let node = NodeProcess::start(options).await?;
    let ids = node_ids(&[&node]);
    let (collect, spy) = reporting_collect(env).await?;
    let probe = RedisProbe::connect(&redis.url()).await?;
    let user = unique("win");
    let device = Device::start(&user, &[node.ws_url()], None).await?;
    let devices = [device];
    wait_routes_back(&probe, &devices, &ids).await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let post = |k: u64| round_post(&user, k);
    ledger.record(&post_until_accepted(&collect, &post(1), &traffic).await?, 1)?;
    until("message 1 to arrive", stall(), || async {
        let held = devices[0].count();
        Ok(if held >= 1 {
            Check::Done(())
        } else {
            Check::Waiting(held)
        })
    })
    .await?;

    flushall(&redis.url()).await?;
    ledger.record(&post_until_accepted(&collect, &post(2), &traffic).await?, 2)?;
    let report = spy.last().context("no dispatch report")?;
    ensure!(
        report.delivered == 0,
        "message 2 was delivered live ({report:?}): the routes were back before it was \
         dispatched, so this run did not test the window"
    );
    wait_routes_back(&probe, &devices, &ids).await?;
    // Several heartbeats after the routes are back.
    let missing = wait_delivered(&devices, &ledger).await;

    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    let connections = lock(&devices[0].received).connections.len();
    stop_devices(devices.into()).await;
    let result = tally.conclude("routes_gone_window");
    if result.is_err() {
        eprintln!(
            "routes_gone_window: dispatch found no route for message 2 ({report:?}); the \
             client kept its one connection ({connections} in all) and was never sent seq 2"
        );
    }
    result?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    Ok(())
}

// 3 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_loses_nothing() -> anyhow::Result<()> {
    const USERS: usize = 100;
    const PER_USER: u64 = 20;
    const CONCURRENCY: usize = 16;
    /// 503s seen during the outage before MongoDB is brought back.
    const REFUSALS: usize = 20;
    let mut mongo = MongoServer::start().await?;
    let env = TestEnv::shared()?.with_mongodb(mongo.uri());
    let (a, b, collect, spy) = two_nodes(&env).await?;
    let users: Vec<String> = (0..USERS).map(|i| unique(&format!("m{i}"))).collect();
    let devices = start_devices(&users, &[a.ws_url(), b.ws_url()], true, 25).await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let total = USERS as u64 * PER_USER;
    let produce = produce_rounds(
        &collect,
        &users,
        PER_USER,
        CONCURRENCY,
        None,
        &ledger,
        &traffic,
    );
    let outage = async {
        traffic.wait_accepted(total / 2).await?;
        let at = traffic.accepted();
        mongo.kill();
        let killed = Instant::now();
        until(
            &format!("{REFUSALS} answers of 503 while MongoDB is down"),
            stall(),
            || async {
                let refusals = lock(&traffic.responses)
                    .iter()
                    .filter(|r| r.started >= killed && r.status == Some(503))
                    .count();
                Ok(if refusals >= REFUSALS {
                    Check::Done(())
                } else {
                    Check::Waiting(refusals)
                })
            },
        )
        .await?;
        let restarting = Instant::now();
        mongo.restart().await?;
        Ok::<_, anyhow::Error>((at, killed, restarting, Instant::now()))
    };
    let ((), (at, killed, restarting, back)) = tokio::try_join!(produce, outage)?;
    let missing = wait_delivered(&devices, &ledger).await;

    // Every answer, placed relative to the outage. A request asked after
    // the kill and answered before the restart began saw only a dead
    // server: it must not be a 2xx.
    let responses = lock(&traffic.responses).clone();
    let mut during: BTreeMap<String, usize> = BTreeMap::new();
    let mut straddling: BTreeMap<String, usize> = BTreeMap::new();
    let (mut before, mut after) = (0usize, 0usize);
    let mut accepted_while_down = Vec::new();
    let label = |s: Option<u16>| s.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
    for r in &responses {
        if r.ended < killed {
            before += 1;
        } else if r.started >= killed && r.ended <= restarting {
            *during.entry(label(r.status)).or_default() += 1;
            if r.status.is_some_and(|s| (200..300).contains(&s)) {
                accepted_while_down.push(format!(
                    "{} asked {:.3?} after the kill, answered {:.3?} after it",
                    label(r.status),
                    r.started - killed,
                    r.ended - killed
                ));
            }
        } else if r.started >= back {
            after += 1;
        } else {
            *straddling.entry(label(r.status)).or_default() += 1;
        }
    }
    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    eprintln!(
        "mongodb_outage: killed after {at} of {total} posts, down {:.1?} (restart took {:.1?}); \
         answers: {before} before, during the outage {during:?}, straddling kill or restart \
         {straddling:?}, {after} after; {} reconnects; {}",
        restarting - killed,
        back - restarting,
        reconnects(&devices),
        dispatch_summary(&spy),
    );
    stop_devices(devices).await;
    tally.conclude("mongodb_outage")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(
        accepted_while_down.is_empty(),
        "collect answered 2xx while MongoDB was down: {accepted_while_down:?}"
    );
    ensure!(
        during.get("503").copied().unwrap_or(0) >= REFUSALS,
        "fewer than {REFUSALS} 503s during the outage: {during:?}"
    );
    ensure!(
        ledger.total() == total,
        "accepted {} of {total}",
        ledger.total()
    );
    Ok(())
}

// 4 -----------------------------------------------------------------------

type RawWs = WebSocketStream<TcpStream>;

/// A raw tokio-tungstenite client with a small receive buffer (so a stall
/// fills up quickly) that reads its `hello` and nothing more until told.
async fn raw_connect(addr: SocketAddr, url: &str, token: &str) -> anyhow::Result<RawWs> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await.context("connecting")?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (mut ws, _) =
        tokio::time::timeout(stall(), tokio_tungstenite::client_async(request, stream))
            .await
            .context("no upgrade answer")?
            .context("upgrading")?;
    match tokio::time::timeout(stall(), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match ServerFrame::parse(text.as_str())? {
            ServerFrame::Hello { .. } => Ok(ws),
            other => bail!("{other:?} before hello"),
        },
        other => bail!("no hello: {other:?}"),
    }
}

/// How the stalled connection ended when it was read again.
#[derive(Debug)]
enum StallEnd {
    /// A close frame, with its code.
    Closed(Option<u16>),
    /// The connection ended without one; what the socket said.
    Ended(String),
}

impl std::fmt::Display for StallEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(Some(code)) => write!(f, "close {code}"),
            Self::Closed(None) => f.write_str("a close frame without a code"),
            Self::Ended(detail) => write!(f, "the connection ending ({detail})"),
        }
    }
}

/// The data of message `k` of the stalled-client stream: `k` up to
/// [`BIG_TAG`] is a small message to everyone, above it a big one to the
/// stalled user only.
fn stall_data(k: u64) -> Value {
    let pad = if k > BIG_TAG { BIG_PAD } else { SMALL_PAD };
    json!({ "k": k, "pad": "x".repeat(pad) })
}

/// Tags above this mark the big messages of the stalled-client stream.
const BIG_TAG: u64 = 1_000_000;
/// Bytes of padding of a message to everyone.
const SMALL_PAD: usize = 1024;
/// Bytes of padding of a message to the stalled user: big, so its socket
/// buffers fill after a few dozen messages (on loopback the node's send
/// buffer grows to `net.ipv4.tcp_wmem`'s 4 MiB whatever the client's
/// window), and yet under collect's 64 KiB limit.
const BIG_PAD: usize = 60 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_up_the_others() -> anyhow::Result<()> {
    TestEnv::run(stalled_client).await
}

async fn stalled_client(env: &TestEnv) -> anyhow::Result<()> {
    const READERS: usize = 50;
    /// Rounds of the stream: each posts one small message to everyone and
    /// one big message to the stalled user.
    const ROUNDS: u64 = 100;
    const RSS_BOUND_KIB: u64 = 300 * 1024;
    // A small queue and a short write timeout make the node give up on the
    // stalled client soon; a long idle timeout makes sure slowness, not
    // silence, is what closes it.
    let node = NodeProcess::start(
        NodeOptions::new(env)
            .with_env("EDGEPUSH_SEND_QUEUE", "64")
            .with_env("EDGEPUSH_WRITE_TIMEOUT_MS", "2000")
            .with_env("EDGEPUSH_IDLE_TIMEOUT_MS", "600000"),
    )
    .await?;
    let pid = node.pid().context("the node is not running")?;
    let collect = Collect::start(env).await?;
    let readers: Vec<String> = (0..READERS).map(|i| unique(&format!("s{i}"))).collect();
    let stalled_user = unique("stalled");
    let devices = start_devices(&readers, &[node.ws_url()], false, 25).await?;
    let stalled_token = mint(&stalled_user, HOUR);
    let mut stalled = raw_connect(node.ws_addr(), &node.ws_url(), &stalled_token).await?;

    // Memory of the node while the stream runs.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let baseline = rss_kib(pid).context("reading the node's VmRSS")?;
    let sampler = tokio::spawn({
        let (stop, peak) = (stop_sampling.clone(), peak.clone());
        async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::Acquire) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::AcqRel);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        }
    });

    // The stream, one post at a time (so every connection gets its seqs in
    // order and the node needs MongoDB only for the stalled client's
    // catch-up).
    let mut everyone: Vec<&str> = readers.iter().map(String::as_str).collect();
    everyone.push(&stalled_user);
    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let started = Instant::now();
    for k in 1..=ROUNDS {
        for (to, tag) in [
            (everyone.clone(), k),
            (vec![stalled_user.as_str()], BIG_TAG + k),
        ] {
            let body = json!({ "to": to, "data": stall_data(tag), "idempotency_key": format!("{stalled_user}-{tag}") });
            let receipts = post_until_accepted(&collect, &body, &traffic)
                .await
                .with_context(|| format!("message {tag}"))?;
            ensure!(
                receipts.len() == to.len(),
                "message {tag}: {} receipts for {} recipients",
                receipts.len(),
                to.len()
            );
            ledger.record(&receipts, tag)?;
        }
    }
    let streamed = started.elapsed();

    // The readers get everything; the stalled client has read nothing yet.
    let missing = wait_delivered(&devices, &ledger).await;
    stop_sampling.store(true, Ordering::Release);
    let samples = sampler.await.context("the RSS sampler")?;
    let peak_kib = peak.load(Ordering::Acquire).max(baseline);
    let slow_clients = node.metric("edgepush_slow_clients_total").await?;

    // The stalled client reads again: a prefix of its stream, then the end.
    let mut prefix: Vec<MsgFrame> = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(30), stalled.next()).await {
            Err(_) => bail!(
                "the stalled client read {} messages and its connection is still open: the \
                 node never closed it (the stream did not fill its buffers?)",
                prefix.len()
            ),
            Ok(None) => break StallEnd::Ended("no close frame".into()),
            Ok(Some(Err(e))) => break StallEnd::Ended(e.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                break StallEnd::Closed(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(Message::Text(text)))) => match ServerFrame::parse(text.as_str())? {
                ServerFrame::Msg(m) => prefix.push(m),
                ServerFrame::Subscribed { .. } => {}
                other => bail!("unexpected {other:?}"),
            },
            Ok(Some(Ok(_))) => {}
        }
    };
    let before_close = prefix.len();
    let last = prefix.last().map_or(0, |m| m.seq);
    let owed = ledger.of(&stalled_user).len();
    // It resumes after the last seq it read and catches up.
    let mut resumed =
        match WsClient::connect_raw(&node.ws_url(), TokenIn::Header(&stalled_token), Some(last))
            .await?
        {
            Ok(client) => client,
            Err(refused) => bail!("the resume was refused: {refused:?}"),
        };
    let rest = resumed
        .collect_msgs(owed.saturating_sub(last as usize), stall())
        .await
        .context("the stalled client catching up")?;
    resumed.expect_silence(GRACE).await?;
    let mut stalled_msgs = prefix;
    stalled_msgs.extend(rest);

    let mut tally = Tally::default();
    let expected = |_: &str, tag: u64| stall_data(tag);
    tally.add_devices(&devices, &ledger, &expected);
    tally.add(&stalled_user, &stalled_msgs, 0, &ledger, &expected);
    eprintln!(
        "stalled_client: {ROUNDS} messages of {SMALL_PAD} B to {} users and {ROUNDS} of \
         {BIG_PAD} B to the stalled one in {streamed:.1?}; the stalled client read \
         {before_close} of {owed} before {end} and caught up from seq {last}; node VmRSS {} \
         MiB before, peak {} MiB over {samples} samples; slow clients {slow_clients:?}; \
         readers reconnected {} times",
        everyone.len(),
        baseline / 1024,
        peak_kib / 1024,
        reconnects(&devices),
    );
    stop_devices(devices).await;
    tally.conclude("stalled_client")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(
        matches!(end, StallEnd::Closed(Some(4008)) | StallEnd::Ended(_)),
        "the stalled client ended with {end}, expected close 4008 or a cut connection"
    );
    ensure!(
        before_close < owed,
        "the stalled client got all {owed} messages before its connection ended"
    );
    ensure!(
        peak_kib < RSS_BOUND_KIB,
        "the node's VmRSS peaked at {} MiB (bound {} MiB)",
        peak_kib / 1024,
        RSS_BOUND_KIB / 1024
    );
    Ok(())
}

// 5 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_store_one_message() -> anyhow::Result<()> {
    TestEnv::run(concurrent_duplicates).await
}

async fn concurrent_duplicates(env: &TestEnv) -> anyhow::Result<()> {
    const COPIES: usize = 10;
    let node = NodeProcess::start_in(env).await?;
    let collect = Collect::start(env).await?;
    let user = unique("dup");
    let devices = [Device::start(&user, &[node.ws_url()], None).await?];

    let key = unique("key");
    let body = json!({ "to": [user], "data": round_data(&user, 1), "idempotency_key": key });
    let answers = futures_util::future::join_all((0..COPIES).map(|_| collect.post(&body))).await;
    let mut receipts = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let (status, body) = answer.with_context(|| format!("post {i}"))?;
        ensure!(status == 202, "post {i} answered {status}: {body}");
        let parsed: SubmitResponse =
            serde_json::from_value(body.clone()).with_context(|| format!("202 body {body}"))?;
        ensure!(
            parsed.messages.len() == 1,
            "post {i}: receipts {:?}",
            parsed.messages
        );
        receipts.push(parsed.messages[0].clone());
    }
    let first = &receipts[0];
    ensure!(
        receipts
            .iter()
            .all(|r| r.id == first.id && r.seq == first.seq && r.user_id == first.user_id),
        "the answers name different messages: {receipts:?}"
    );
    let stored = collect
        .store
        .read_after(&UserId::new(&user)?, 0, 100)
        .await?;
    ensure!(
        stored.len() == 1 && stored[0].id == first.id && stored[0].seq == first.seq,
        "{} messages stored for {COPIES} identical posts: {:?}",
        stored.len(),
        stored
            .iter()
            .map(|m| (m.seq, m.id.to_string()))
            .collect::<Vec<_>>()
    );

    let ledger = Ledger::default();
    ledger.record(&receipts, 1)?;
    let missing = wait_delivered(&devices, &ledger).await;
    let mut tally = Tally::default();
    tally.add_devices(&devices, &ledger, &|user, k| round_data(user, k));
    eprintln!(
        "concurrent_duplicates: {COPIES} posts with one key -> seq {} id {}; {} stored",
        first.seq,
        first.id,
        stored.len()
    );
    stop_devices(devices.into()).await;
    tally.conclude("concurrent_duplicates")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    Ok(())
}
