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
//! idempotency key, as the collect API asks its callers to. Waits are
//! bounded and fail with what did not happen; no test asserts a duration.
//!
//! Run with `scripts/test`, or set `EDGEPUSH_TEST_REDIS_URL`,
//! `EDGEPUSH_TEST_MONGODB_URI` and `EDGEPUSH_FERRETDB_BIN` and run
//! `cargo test -p edgepush-tests --test faults -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use edgepush_client::{
    Backoff, Client, ClientConfig, ClientControl, ClientHandle, Event, Jitter, MsgFrame,
    TokenSource,
};
use edgepush_core::protocol::{Accepted, ServerFrame, SubmitResponse};
use edgepush_core::{MessageStore as _, UserId};
use edgepush_tests::{
    Collect, MongoServer, NodeOptions, NodeProcess, RedisProbe, RedisServer, ReportingHandoff,
    TestEnv, TokenIn, WsClient, eventually, mint, unique,
};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Token lifetime: longer than any test.
const HOUR: Duration = Duration::from_secs(3600);
/// Bound on setting a test up (connecting its clients).
const SETUP: Duration = Duration::from_secs(60);
/// Bound on one message being accepted, however many 503s come first.
const ACCEPT: Duration = Duration::from_secs(180);
/// Bound on the fault's trigger and on its repair (routes back, ...).
const FAULT_BOUND: Duration = Duration::from_secs(120);
/// Bound on every client holding everything once the producer is done.
const DELIVERY: Duration = Duration::from_secs(240);
/// How long the clients are watched for anything extra at the end.
const GRACE: Duration = Duration::from_millis(500);
/// Most connection attempts to place a client on its own node (the client
/// picks its first node at random, so each attempt lands there with
/// probability 1/2).
const PLACEMENT_TRIES: usize = 30;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// The clients -------------------------------------------------------------

/// What one client's event stream brought.
#[derive(Default)]
struct Received {
    /// Every message the client passed to the application, in order.
    msgs: Vec<MsgFrame>,
    /// (node URL, connection id) of every connection, in order.
    connections: Vec<(String, String)>,
    /// Why connections ended.
    disconnects: Vec<String>,
    /// Set when the client stopped for good.
    fatal: Option<String>,
}

/// One user's [`Client`], read by a task of its own into [`Received`].
struct Device {
    user: String,
    received: Arc<Mutex<Received>>,
    control: ClientControl,
    task: JoinHandle<()>,
}

/// The config of every test client: quick, jittered reconnects.
fn client_config(user: &str, nodes: &[String]) -> ClientConfig {
    ClientConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: Jitter::Full,
            reset_after: Duration::from_secs(5),
        },
        ..ClientConfig::new(nodes.iter().cloned(), TokenSource::fixed(mint(user, HOUR)))
    }
}

impl Device {
    /// Starts a client of `user` over `nodes` and waits for its first
    /// connection. With `prefer`, a client whose first connection is on
    /// another node is closed and started again, until one starts there
    /// (the client has no "first node" setting: it starts at a random one).
    async fn start(user: &str, nodes: &[String], prefer: Option<&str>) -> anyhow::Result<Self> {
        for _ in 0..PLACEMENT_TRIES {
            let mut handle =
                Client::connect(client_config(user, nodes)).context("starting a client")?;
            let (node, conn_id) = first_connection(&mut handle)
                .await
                .with_context(|| format!("{user}: first connection"))?;
            if prefer.is_some_and(|p| p != node) {
                handle.close();
                continue;
            }
            let received = Arc::new(Mutex::new(Received {
                connections: vec![(node, conn_id)],
                ..Received::default()
            }));
            let control = handle.control();
            let task = tokio::spawn(read_events(handle, received.clone()));
            return Ok(Self {
                user: user.to_owned(),
                received,
                control,
                task,
            });
        }
        bail!("{user}: the client did not start on {prefer:?} in {PLACEMENT_TRIES} tries")
    }

    /// The (node URL, connection id) of its latest connection.
    fn current(&self) -> Option<(String, String)> {
        lock(&self.received).connections.last().cloned()
    }

    fn count(&self) -> usize {
        lock(&self.received).msgs.len()
    }
}

/// The first `Connected` event of a new client.
async fn first_connection(handle: &mut ClientHandle) -> anyhow::Result<(String, String)> {
    let wait = async {
        while let Some(event) = handle.recv().await {
            match event {
                Event::Connected { conn_id, node } => return Ok((node, conn_id.to_string())),
                Event::Fatal(e) => bail!("the client stopped: {e}"),
                Event::Message(m) => bail!("a message (seq {}) before any connection", m.seq),
                Event::Disconnected { .. } => {}
            }
        }
        bail!("the client's stream ended before it connected")
    };
    tokio::time::timeout(SETUP, wait)
        .await
        .map_err(|_| anyhow!("no connection within {SETUP:?}"))?
}

async fn read_events(mut handle: ClientHandle, received: Arc<Mutex<Received>>) {
    while let Some(event) = handle.recv().await {
        let mut r = lock(&received);
        match event {
            Event::Message(m) => r.msgs.push(m),
            Event::Connected { conn_id, node } => r.connections.push((node, conn_id.to_string())),
            Event::Disconnected { reason } => r.disconnects.push(reason.to_string()),
            Event::Fatal(e) => r.fatal = Some(e.to_string()),
        }
    }
}

/// Starts one device per user, `concurrency` at a time; user `i` prefers
/// `nodes[i % nodes.len()]` and lists that node first (when `place`).
async fn start_devices(
    users: &[String],
    nodes: &[String],
    place: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<Device>> {
    stream::iter(users.iter().enumerate())
        .map(|(i, user)| {
            let own = nodes[i % nodes.len()].clone();
            let mut list = vec![own.clone()];
            list.extend(nodes.iter().filter(|n| **n != own).cloned());
            async move {
                Device::start(user, &list, place.then_some(own.as_str()))
                    .await
                    .with_context(|| format!("starting the client of {user}"))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// Closes every client and waits (bounded) for their tasks.
async fn stop_devices(devices: Vec<Device>) {
    for d in &devices {
        d.control.close();
    }
    for d in devices {
        let _ = tokio::time::timeout(Duration::from_secs(5), d.task).await;
    }
}

// The producer ------------------------------------------------------------

/// One user's accepted messages: seq -> (message id, tag).
type Accepts = BTreeMap<u64, (String, u64)>;

/// Every message collect accepted: user -> seq -> (message id, tag), the
/// tag being what the test put in the data to recognise it.
#[derive(Default)]
struct Ledger {
    accepted: Mutex<HashMap<String, Accepts>>,
}

impl Ledger {
    /// Records the receipts of one accepted post tagged `tag`. A seq that
    /// was already accepted under another id is an error.
    fn record(&self, receipts: &[Accepted], tag: u64) -> anyhow::Result<()> {
        let mut accepted = lock(&self.accepted);
        for r in receipts {
            let mine = accepted.entry(r.user_id.to_string()).or_default();
            let id = r.id.to_string();
            if let Some((known, known_tag)) = mine.get(&r.seq) {
                ensure!(
                    *known == id && *known_tag == tag,
                    "seq {} of {} accepted twice: as {known} (tag {known_tag}) and {id} (tag {tag})",
                    r.seq,
                    r.user_id
                );
            }
            mine.insert(r.seq, (id, tag));
        }
        Ok(())
    }

    fn of(&self, user: &str) -> Accepts {
        lock(&self.accepted).get(user).cloned().unwrap_or_default()
    }

    fn total(&self) -> u64 {
        lock(&self.accepted).values().map(|m| m.len() as u64).sum()
    }
}

/// One answer of collect (or a transport error), with when it was asked
/// and answered.
#[derive(Debug, Clone, Copy)]
struct Response {
    started: Instant,
    ended: Instant,
    /// `None`: no HTTP answer (connection error or client timeout).
    status: Option<u16>,
}

/// Every answer the producer saw, and how many posts were accepted.
#[derive(Default)]
struct Traffic {
    responses: Mutex<Vec<Response>>,
    accepted_posts: AtomicU64,
}

impl Traffic {
    fn accepted(&self) -> u64 {
        self.accepted_posts.load(Ordering::Acquire)
    }

    fn count(&self, status: u16) -> usize {
        lock(&self.responses)
            .iter()
            .filter(|r| r.status == Some(status))
            .count()
    }

    /// Waits until at least `n` posts were accepted.
    async fn wait_accepted(&self, n: u64) -> anyhow::Result<()> {
        eventually(
            &format!("{n} posts accepted by collect"),
            FAULT_BOUND,
            || async { Ok((self.accepted() >= n).then_some(())) },
        )
        .await
    }
}

/// Posts `body` until collect answers 202 (bounded by [`ACCEPT`]),
/// retrying 503s and transport errors with the same body (so the same
/// idempotency key). Any other status is an error.
async fn post_until_accepted(
    collect: &Collect,
    body: &Value,
    traffic: &Traffic,
) -> anyhow::Result<Vec<Accepted>> {
    let deadline = Instant::now() + ACCEPT;
    let mut pause = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        let result = collect.post(body).await;
        let ended = Instant::now();
        let status = result.as_ref().ok().map(|(s, _)| *s);
        lock(&traffic.responses).push(Response {
            started,
            ended,
            status,
        });
        let last = match result {
            Ok((202, answer)) => {
                let parsed: SubmitResponse = serde_json::from_value(answer.clone())
                    .with_context(|| format!("202 body {answer}"))?;
                traffic.accepted_posts.fetch_add(1, Ordering::AcqRel);
                return Ok(parsed.messages);
            }
            Ok((503, answer)) => format!("503 {answer}"),
            Ok((other, answer)) => bail!("collect answered {other}: {answer}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("not accepted within {ACCEPT:?}; last answer: {last}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The data of message `k` to `user` in a rounds stream.
fn round_data(user: &str, k: u64) -> Value {
    json!({ "user": user, "k": k })
}

/// Sends `rounds` messages to each user: round `k` posts message `k` to
/// every user (`concurrency` posts at a time, each with its own
/// idempotency key), and starts once round `k - 1` is accepted, so user
/// `u`'s message `k` gets seq `k`. With `hold_last`, the last round waits
/// until the flag is set.
async fn produce_rounds(
    collect: &Collect,
    users: &[String],
    rounds: u64,
    concurrency: usize,
    hold_last: Option<&AtomicBool>,
    ledger: &Ledger,
    traffic: &Traffic,
) -> anyhow::Result<()> {
    for k in 1..=rounds {
        if k == rounds
            && let Some(gate) = hold_last
        {
            eventually(
                "the fault to be repaired before the last round",
                FAULT_BOUND,
                || async { Ok(gate.load(Ordering::Acquire).then_some(())) },
            )
            .await?;
        }
        stream::iter(users)
            .map(|user| async move {
                let body = json!({
                    "to": [user],
                    "data": round_data(user, k),
                    "idempotency_key": format!("{user}-{k}"),
                });
                let receipts = post_until_accepted(collect, &body, traffic)
                    .await
                    .with_context(|| format!("message {k} to {user}"))?;
                ensure!(
                    receipts.len() == 1 && receipts[0].seq == k,
                    "message {k} to {user}: receipts {receipts:?} (expected seq {k})"
                );
                ledger.record(&receipts, k)
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(())
}

// The verdict -------------------------------------------------------------

/// The closing numbers of a fault test.
#[derive(Debug, Default)]
struct Tally {
    /// Messages collect accepted (one per recipient).
    accepted: u64,
    /// Messages the clients passed to the application.
    delivered: u64,
    /// Duplicates the clients dropped by seq.
    duplicates_dropped: u64,
    /// Accepted messages some client never got.
    lost: u64,
    /// Everything else wrong (order, repeats, ids, data, unknown seqs).
    problems: Vec<String>,
}

impl Tally {
    /// Compares what `user` got with what was accepted for them.
    fn add(
        &mut self,
        user: &str,
        got: &[MsgFrame],
        duplicates_dropped: u64,
        ledger: &Ledger,
        expected_data: &dyn Fn(&str, u64) -> Value,
    ) {
        let mine = ledger.of(user);
        self.accepted += mine.len() as u64;
        self.delivered += got.len() as u64;
        self.duplicates_dropped += duplicates_dropped;
        for pair in got.windows(2) {
            if pair[1].seq <= pair[0].seq {
                self.problem(format!(
                    "{user}: seq {} after seq {} (out of order or repeated)",
                    pair[1].seq, pair[0].seq
                ));
            }
        }
        for m in got {
            match mine.get(&m.seq) {
                None => self.problem(format!(
                    "{user}: got seq {} ({}) that collect never accepted",
                    m.seq, m.id
                )),
                Some((id, _)) if id != m.id.as_str() => self.problem(format!(
                    "{user}: seq {} is {} but collect accepted {id}",
                    m.seq, m.id
                )),
                Some((_, tag)) => {
                    if m.data != expected_data(user, *tag) {
                        self.problem(format!("{user}: seq {} carries the wrong data", m.seq));
                    }
                }
            }
        }
        let seen: std::collections::HashSet<u64> = got.iter().map(|m| m.seq).collect();
        let missing: Vec<u64> = mine.keys().filter(|s| !seen.contains(s)).copied().collect();
        if !missing.is_empty() {
            self.lost += missing.len() as u64;
            self.problem(format!(
                "{user}: never got seqs {missing:?} (got {:?})",
                got.iter().map(|m| m.seq).collect::<Vec<_>>()
            ));
        }
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    fn add_devices(
        &mut self,
        devices: &[Device],
        ledger: &Ledger,
        expected_data: &dyn Fn(&str, u64) -> Value,
    ) {
        for d in devices {
            let received = lock(&d.received);
            self.add(
                &d.user,
                &received.msgs,
                d.control.stats().duplicates_dropped,
                ledger,
                expected_data,
            );
            if let Some(fatal) = &received.fatal {
                self.problems
                    .push(format!("{}: the client stopped: {fatal}", d.user));
            }
        }
    }

    /// Prints the `FAULT` line, then fails unless nothing was lost and
    /// everything was delivered exactly once, in order.
    fn conclude(&self, name: &str) -> anyhow::Result<()> {
        eprintln!(
            "FAULT {name}: accepted={} delivered={} duplicates_dropped={} lost={}",
            self.accepted, self.delivered, self.duplicates_dropped, self.lost
        );
        let shown: Vec<&str> = self.problems.iter().take(20).map(String::as_str).collect();
        ensure!(
            self.lost == 0 && self.problems.is_empty() && self.delivered == self.accepted,
            "{name}: lost {} of {} accepted messages, delivered {}; {} problems, the first ones:\n{}",
            self.lost,
            self.accepted,
            self.delivered,
            self.problems.len(),
            shown.join("\n")
        );
        ensure!(self.accepted > 0, "{name}: nothing was accepted at all");
        Ok(())
    }
}

/// Waits (bounded) until every device holds as many messages as were
/// accepted for its user; returns what was still missing on timeout
/// (the tally then says exactly what).
async fn wait_delivered(devices: &[Device], ledger: &Ledger) -> Option<String> {
    wait_delivered_within(devices, ledger, DELIVERY).await
}

/// [`wait_delivered`] with another bound.
async fn wait_delivered_within(
    devices: &[Device],
    ledger: &Ledger,
    bound: Duration,
) -> Option<String> {
    let waited = eventually(
        "every client to hold every accepted message",
        bound,
        || async {
            let short = devices
                .iter()
                .filter(|d| d.count() < ledger.of(&d.user).len())
                .count();
            if short == 0 {
                Ok(Some(()))
            } else {
                Err(anyhow!("{short} clients still miss messages"))
            }
        },
    )
    .await;
    match waited {
        Ok(()) => {
            // Anything extra would show up now.
            tokio::time::sleep(GRACE).await;
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

/// Sums the clients' reconnects.
fn reconnects(devices: &[Device]) -> u64 {
    devices.iter().map(|d| d.control.stats().reconnects).sum()
}

// The stores --------------------------------------------------------------

/// `FLUSHALL` on the Redis at `url`.
async fn flushall(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .context("FLUSHALL")
}

/// Waits (bounded) until every device's current connection is in its
/// user's route hash, pointing at the node it is connected to, and every
/// node's liveness entry is back.
async fn wait_routes_back(
    probe: &RedisProbe,
    devices: &[Device],
    node_ids: &HashMap<String, String>,
) -> anyhow::Result<()> {
    eventually(
        "every live connection's route and every node's liveness entry in Redis",
        FAULT_BOUND,
        || async {
            for node in node_ids.values() {
                if probe.node_url(node).await?.is_none() {
                    bail!("node {node} has no liveness entry");
                }
            }
            for d in devices {
                let (url, conn) = d.current().context("a device without a connection")?;
                let node = node_ids
                    .get(&url)
                    .with_context(|| format!("a connection to an unknown node {url}"))?;
                let routes = probe.routes(&d.user).await?;
                if routes.get(&conn) != Some(node) {
                    bail!(
                        "{}: route of {conn} is {:?}, expected {node} (routes {routes:?})",
                        d.user,
                        routes.get(&conn)
                    );
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// Two nodes of `env` and a collect API whose dispatch reports are kept.
async fn two_nodes(
    env: &TestEnv,
) -> anyhow::Result<(NodeProcess, NodeProcess, Collect, Arc<ReportingHandoff>)> {
    let (a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, spy) = reporting_collect(env).await?;
    Ok((a, b, collect, spy))
}

/// A collect API of `env` whose dispatch reports are kept.
async fn reporting_collect(env: &TestEnv) -> anyhow::Result<(Collect, Arc<ReportingHandoff>)> {
    let mut spy: Option<Arc<ReportingHandoff>> = None;
    let collect = Collect::start_with(env, |d| {
        let handoff = Arc::new(ReportingHandoff::new(d));
        spy = Some(handoff.clone());
        handoff
    })
    .await?;
    Ok((collect, spy.context("no hand-off was made")?))
}

/// What dispatch made of the stream: how many (message, recipient) pairs
/// it found no live route for, and how many pushes to a node failed. Those
/// messages reach their clients only through replay or gap fill.
fn dispatch_summary(spy: &ReportingHandoff) -> String {
    let reports = spy.reports();
    let sum = |f: fn(&edgepush_dispatch::DispatchReport) -> u64| reports.iter().map(f).sum::<u64>();
    format!(
        "dispatches {}: pushed {}, recipients offline {}, dead routes skipped {}, failed node \
         pushes {}",
        reports.len(),
        sum(|r| r.delivered),
        sum(|r| r.offline_users as u64),
        sum(|r| r.skipped_dead_routes as u64),
        sum(|r| r.failed_nodes as u64),
    )
}

fn node_ids(nodes: &[&NodeProcess]) -> HashMap<String, String> {
    nodes
        .iter()
        .map(|n| (n.ws_url(), n.node_id().to_owned()))
        .collect()
}

// 1 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_crash_loses_nothing() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let result = node_crash(&env).await;
    env.cleanup().await;
    result
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
                eventually(
                    "collect to answer 503 while Redis is down",
                    FAULT_BOUND,
                    || async {
                        Ok(lock(&traffic.responses)
                            .iter()
                            .any(|r| r.started >= broken && r.status == Some(503))
                            .then_some(()))
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
    // A slow heartbeat: the post below lands well inside the window.
    let options = NodeOptions {
        heartbeat_ms: 5_000,
        node_ttl_ms: 15_000,
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
    let post = |k: u64| json!({ "to": [user], "data": round_data(&user, k), "idempotency_key": format!("{user}-{k}") });
    ledger.record(&post_until_accepted(&collect, &post(1), &traffic).await?, 1)?;
    eventually("message 1 to arrive", DELIVERY, || async {
        Ok((devices[0].count() >= 1).then_some(()))
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
    let missing = wait_delivered_within(&devices, &ledger, Duration::from_secs(60)).await;

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
        eventually(
            &format!("{REFUSALS} answers of 503 while MongoDB is down"),
            FAULT_BOUND,
            || async {
                Ok((lock(&traffic.responses)
                    .iter()
                    .filter(|r| r.started >= killed && r.status == Some(503))
                    .count()
                    >= REFUSALS)
                    .then_some(()))
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
    let (mut ws, _) = tokio::time::timeout(SETUP, tokio_tungstenite::client_async(request, stream))
        .await
        .context("no upgrade answer")?
        .context("upgrading")?;
    match tokio::time::timeout(SETUP, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match ServerFrame::parse(text.as_str())? {
            ServerFrame::Hello { .. } => Ok(ws),
            ServerFrame::Msg(m) => bail!("a msg (seq {}) before hello", m.seq),
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

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
    let env = TestEnv::shared()?;
    let result = stalled_client(&env).await;
    env.cleanup().await;
    result
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
                ServerFrame::Hello { .. } => bail!("a second hello"),
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
        .collect_msgs(owed.saturating_sub(last as usize), DELIVERY)
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
    let env = TestEnv::shared()?;
    let result = concurrent_duplicates(&env).await;
    env.cleanup().await;
    result
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
