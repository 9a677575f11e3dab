//! The harness of the fault tests and the soak: devices (real
//! [`Client`]s read by a task of their own), a ledger of what collect
//! accepted, a producer that retries like the collect API asks its callers
//! to, and the verdict ([`Tally`]) that says whether anything was lost.
//!
//! Every wait here follows progress ([`crate::wait::until`]): it gives up
//! only when nothing has moved for [`crate::wait::stall`], so a slow,
//! loaded machine is never cut off while it keeps working.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use edgepush_client::{
    Backoff, Client, ClientConfig, ClientControl, ClientHandle, Event, Jitter, MsgFrame,
    TokenSource, TopicEvent, TopicName,
};
use edgepush_core::protocol::{Accepted, SubmitResponse};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::wait::{Check, stall, until};
use crate::{Collect, NodeProcess, RedisProbe, ReportingHandoff, TestEnv, mint};

/// Token lifetime of the devices: longer than any test.
pub const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// How long the clients are watched for anything extra at the end.
pub const GRACE: Duration = Duration::from_millis(500);
/// Most connection attempts to place a client on its own node.
const PLACEMENT_TRIES: usize = 30;

/// Locks `mutex`, also when a panicking holder poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// The clients -------------------------------------------------------------

/// What one client's event stream brought.
#[derive(Debug, Default)]
pub struct Received {
    /// Every message of the user's stream the client passed to the
    /// application, in order.
    pub msgs: Vec<MsgFrame>,
    /// Every topic message it passed on, per topic, in order.
    pub topic_msgs: HashMap<TopicName, Vec<MsgFrame>>,
    /// Every other topic event (subscribed, refused, presence, ...), in
    /// order.
    pub topic_events: Vec<TopicEvent>,
    /// (node URL, connection id) of every connection, in order.
    pub connections: Vec<(String, String)>,
    /// Why connections ended.
    pub disconnects: Vec<String>,
    /// Set when the client stopped for good.
    pub fatal: Option<String>,
}

/// One user's [`Client`], read by a task of its own into [`Received`].
pub struct Device {
    /// The user.
    pub user: String,
    /// What it got.
    pub received: Arc<Mutex<Received>>,
    /// Its counters and its off switch (of the current client, see
    /// [`restart`](Self::restart)).
    pub control: ClientControl,
    task: JoinHandle<()>,
    /// What its clients are started with.
    config: ClientConfig,
    /// Duplicates dropped by the clients before the current one.
    past_duplicates: u64,
    /// Reconnects of the clients before the current one, plus one per
    /// restart.
    past_reconnects: u64,
}

/// The config of every test client: quick, jittered reconnects, first to
/// `nodes[0]`.
pub fn client_config(user: &str, nodes: &[String]) -> ClientConfig {
    ClientConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: Jitter::Full,
            reset_after: Duration::from_secs(5),
        },
        first_node: Some(0),
        ..ClientConfig::new(
            nodes.iter().cloned(),
            TokenSource::fixed(mint(user, TOKEN_TTL)),
        )
    }
}

impl Device {
    /// Starts a client of `user` over `nodes` (first attempt to `nodes[0]`)
    /// and waits for its first connection. With `prefer`, a client whose
    /// first connection is elsewhere (its node refused it) is closed and
    /// started again.
    pub async fn start(user: &str, nodes: &[String], prefer: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(user, prefer, client_config(user, nodes)).await
    }

    /// [`start`](Self::start) with a config of the caller's.
    pub async fn start_with(
        user: &str,
        prefer: Option<&str>,
        config: ClientConfig,
    ) -> anyhow::Result<Self> {
        for _ in 0..PLACEMENT_TRIES {
            let mut handle = Client::connect(config.clone()).context("starting a client")?;
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
                config,
                past_duplicates: 0,
                past_reconnects: 0,
            });
        }
        bail!("{user}: the client did not start on {prefer:?} in {PLACEMENT_TRIES} tries")
    }

    /// Closes its client and starts a new one that resumes after the last
    /// seq it holds, to a node picked at random: a page reloaded by a user
    /// (its position kept in local storage). Messages the old client had
    /// not passed on are fetched again by the new one.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.control.close();
        let old = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let abort = old.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), old)
            .await
            .is_err()
        {
            // It no longer writes to `received` once aborted.
            abort.abort();
        }
        let stats = self.control.stats();
        self.past_duplicates += stats.duplicates_dropped;
        self.past_reconnects += stats.reconnects + 1;
        let after = lock(&self.received).msgs.last().map_or(0, |m| m.seq);
        let config = ClientConfig {
            after: Some(after),
            first_node: None,
            ..self.config.clone()
        };
        let handle = Client::connect(config).context("restarting a client")?;
        self.control = handle.control();
        self.task = tokio::spawn(read_events(handle, self.received.clone()));
        Ok(())
    }

    /// Duplicates its clients dropped by seq.
    pub fn duplicates_dropped(&self) -> u64 {
        self.past_duplicates + self.control.stats().duplicates_dropped
    }

    /// Its clients' reconnects, restarts included.
    pub fn reconnects(&self) -> u64 {
        self.past_reconnects + self.control.stats().reconnects
    }

    /// The (node URL, connection id) of its latest connection.
    pub fn current(&self) -> Option<(String, String)> {
        lock(&self.received).connections.last().cloned()
    }

    /// How many messages it holds.
    pub fn count(&self) -> usize {
        lock(&self.received).msgs.len()
    }

    /// How many connections it has had.
    pub fn connections(&self) -> usize {
        lock(&self.received).connections.len()
    }
}

/// The first `Connected` event of a new client. The client retries on its
/// own; this gives up when it has not connected within a stall period.
async fn first_connection(handle: &mut ClientHandle) -> anyhow::Result<(String, String)> {
    let wait = async {
        while let Some(event) = handle.recv().await {
            match event {
                Event::Connected { conn_id, node } => return Ok((node, conn_id.to_string())),
                Event::Fatal(e) => bail!("the client stopped: {e}"),
                Event::Message(m) => bail!("a message (seq {}) before any connection", m.seq),
                Event::Topic(e) => bail!("a topic event before any connection: {e:?}"),
                Event::Disconnected { .. } => {}
            }
        }
        bail!("the client's stream ended before it connected")
    };
    let limit = stall();
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| anyhow!("no connection within {limit:?}"))?
}

async fn read_events(mut handle: ClientHandle, received: Arc<Mutex<Received>>) {
    while let Some(event) = handle.recv().await {
        let mut r = lock(&received);
        match event {
            Event::Message(m) => r.msgs.push(m),
            Event::Topic(TopicEvent::Message(m)) => {
                if let Some(topic) = m.topic.clone() {
                    r.topic_msgs.entry(topic).or_default().push(m);
                }
            }
            Event::Topic(other) => r.topic_events.push(other),
            Event::Connected { conn_id, node } => r.connections.push((node, conn_id.to_string())),
            Event::Disconnected { reason } => r.disconnects.push(reason.to_string()),
            Event::Fatal(e) => r.fatal = Some(e.to_string()),
        }
    }
}

/// Starts one device per user, `concurrency` at a time; user `i` lists
/// `nodes[i % nodes.len()]` first (and must start there when `place`).
pub async fn start_devices(
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
pub async fn stop_devices(devices: Vec<Device>) {
    for d in &devices {
        d.control.close();
    }
    for d in devices {
        let _ = tokio::time::timeout(Duration::from_secs(5), d.task).await;
    }
}

/// Sums the clients' reconnects.
pub fn reconnects(devices: &[Device]) -> u64 {
    devices.iter().map(Device::reconnects).sum()
}

// The producer ------------------------------------------------------------

/// One user's accepted messages: seq -> (message id, tag).
pub type Accepts = BTreeMap<u64, (String, u64)>;

/// Every message collect accepted: user -> seq -> (message id, tag), the
/// tag being what the test put in the data to recognise it.
#[derive(Default)]
pub struct Ledger {
    accepted: Mutex<HashMap<String, Accepts>>,
}

impl Ledger {
    /// Records the receipts of one accepted post tagged `tag`. A seq that
    /// was already accepted under another id is an error.
    pub fn record(&self, receipts: &[Accepted], tag: u64) -> anyhow::Result<()> {
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

    /// What was accepted for `user`.
    pub fn of(&self, user: &str) -> Accepts {
        lock(&self.accepted).get(user).cloned().unwrap_or_default()
    }

    /// How many messages were accepted for `user`.
    pub fn count_of(&self, user: &str) -> usize {
        lock(&self.accepted).get(user).map_or(0, BTreeMap::len)
    }

    /// Records that `seq` of stream `key` (a topic) was accepted as `id`,
    /// tagged `tag`. A seq accepted before under another id is an error.
    pub fn record_one(&self, key: &str, seq: u64, id: &str, tag: u64) -> anyhow::Result<()> {
        let mut accepted = lock(&self.accepted);
        let mine = accepted.entry(key.to_owned()).or_default();
        if let Some((known, known_tag)) = mine.get(&seq) {
            ensure!(
                known == id && *known_tag == tag,
                "seq {seq} of {key} accepted twice: as {known} (tag {known_tag}) and {id} (tag {tag})"
            );
        }
        mine.insert(seq, (id.to_owned(), tag));
        Ok(())
    }

    /// How many messages (recipient copies) were accepted in all.
    pub fn total(&self) -> u64 {
        lock(&self.accepted).values().map(|m| m.len() as u64).sum()
    }
}

/// One answer of collect (or a transport error), with when it was asked
/// and answered.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    /// When the post was sent.
    pub started: Instant,
    /// When its answer (or error) came.
    pub ended: Instant,
    /// `None`: no HTTP answer (connection error or client timeout).
    pub status: Option<u16>,
}

/// Every answer the producer saw, and how many posts were accepted.
#[derive(Default)]
pub struct Traffic {
    /// Every answer.
    pub responses: Mutex<Vec<Response>>,
    accepted_posts: AtomicU64,
}

impl Traffic {
    /// Posts accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted_posts.load(Ordering::Acquire)
    }

    /// Records one answer (`None`: no HTTP answer) of a post sent at
    /// `started`.
    pub fn note(&self, started: Instant, status: Option<u16>) {
        lock(&self.responses).push(Response {
            started,
            ended: Instant::now(),
            status,
        });
    }

    /// Counts one accepted post.
    pub fn accepted_one(&self) {
        self.accepted_posts.fetch_add(1, Ordering::AcqRel);
    }

    /// Answers with `status`.
    pub fn count(&self, status: u16) -> usize {
        lock(&self.responses)
            .iter()
            .filter(|r| r.status == Some(status))
            .count()
    }

    /// Waits until at least `n` posts were accepted, as long as posts keep
    /// being accepted.
    pub async fn wait_accepted(&self, n: u64) -> anyhow::Result<()> {
        until(
            &format!("{n} posts accepted by collect"),
            stall(),
            || async {
                let accepted = self.accepted();
                Ok(if accepted >= n {
                    Check::Done(())
                } else {
                    Check::Waiting(accepted)
                })
            },
        )
        .await
    }
}

/// Posts `body` until collect answers 202, retrying 503s and transport
/// errors with the same body (so the same idempotency key), as the collect
/// API asks. It gives up when no post of the whole test (`traffic`) has been
/// accepted for a stall period: the system stopped making progress. Any
/// other status is an error.
pub async fn post_until_accepted(
    collect: &Collect,
    body: &Value,
    traffic: &Traffic,
) -> anyhow::Result<Vec<Accepted>> {
    let answer =
        post_to_until_accepted(collect, edgepush_collect::MESSAGES_PATH, body, traffic).await?;
    let parsed: SubmitResponse =
        serde_json::from_value(answer.clone()).with_context(|| format!("202 body {answer}"))?;
    Ok(parsed.messages)
}

/// [`post_until_accepted`] to any path of the collect API (topic
/// publishes, broadcasts); returns the `202`'s body.
pub async fn post_to_until_accepted(
    collect: &Collect,
    path: &str,
    body: &Value,
    traffic: &Traffic,
) -> anyhow::Result<Value> {
    let limit = stall();
    let mut pause = Duration::from_millis(50);
    let mut seen = (traffic.accepted(), Instant::now());
    loop {
        let started = Instant::now();
        let result = collect.post_to(path, body).await;
        traffic.note(started, result.as_ref().ok().map(|(s, _)| *s));
        let last = match result {
            Ok((202, answer)) => {
                traffic.accepted_one();
                return Ok(answer);
            }
            Ok((503, answer)) => format!("503 {answer}"),
            Ok((other, answer)) => bail!("collect answered {other} to {path}: {answer}"),
            Err(e) => format!("{e:#}"),
        };
        let accepted = traffic.accepted();
        if accepted != seen.0 {
            seen = (accepted, Instant::now());
        } else if seen.1.elapsed() >= limit {
            bail!(
                "not accepted, and no post of the test accepted at all for {limit:?}; last answer: {last}"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The data of message `k` to `user` in a rounds stream.
pub fn round_data(user: &str, k: u64) -> Value {
    json!({ "user": user, "k": k })
}

/// The body of message `k` to `user` in a rounds stream.
pub fn round_post(user: &str, k: u64) -> Value {
    json!({
        "to": [user],
        "data": round_data(user, k),
        "idempotency_key": format!("{user}-{k}"),
    })
}

/// Sends `rounds` messages to each user: round `k` posts message `k` to
/// every user (`concurrency` posts at a time, each with its own
/// idempotency key), and starts once round `k - 1` is accepted, so user
/// `u`'s message `k` gets seq `k`. With `hold_last`, the last round waits
/// until the flag is set (by a task that fails on its own if it stalls).
pub async fn produce_rounds(
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
            while !gate.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stream::iter(users)
            .map(|user| async move {
                let receipts = post_until_accepted(collect, &round_post(user, k), traffic)
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
pub struct Tally {
    /// Messages collect accepted (one per recipient).
    pub accepted: u64,
    /// Messages the clients passed to the application.
    pub delivered: u64,
    /// Duplicates the clients dropped by seq.
    pub duplicates_dropped: u64,
    /// Accepted messages some client never got.
    pub lost: u64,
    /// Everything else wrong (order, repeats, ids, data, unknown seqs).
    pub problems: Vec<String>,
}

impl Tally {
    /// Compares what `user` got with what was accepted for them.
    pub fn add(
        &mut self,
        user: &str,
        got: &[MsgFrame],
        duplicates_dropped: u64,
        ledger: &Ledger,
        expected_data: &dyn Fn(&str, u64) -> Value,
    ) {
        self.add_stream(
            user,
            got,
            duplicates_dropped,
            &ledger.of(user),
            expected_data,
        );
    }

    /// Compares what one stream (`label`: a user, or a device's topic) got
    /// with what was accepted for it (`mine`).
    pub fn add_stream(
        &mut self,
        label: &str,
        got: &[MsgFrame],
        duplicates_dropped: u64,
        mine: &Accepts,
        expected_data: &dyn Fn(&str, u64) -> Value,
    ) {
        let user = label;
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
        let seen: HashSet<u64> = got.iter().map(|m| m.seq).collect();
        let missing: Vec<u64> = mine.keys().filter(|s| !seen.contains(s)).copied().collect();
        if !missing.is_empty() {
            self.lost += missing.len() as u64;
            self.problem(format!(
                "{user}: never got seqs {missing:?} (got {:?})",
                got.iter().map(|m| m.seq).collect::<Vec<_>>()
            ));
        }
    }

    /// Notes something wrong.
    pub fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    /// Adds every device's messages.
    pub fn add_devices(
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
                d.duplicates_dropped(),
                ledger,
                expected_data,
            );
            if received.msgs.len() < ledger.count_of(&d.user) {
                self.problems.push(format!(
                    "{}: connections {:?}, disconnects {:?}",
                    d.user, received.connections, received.disconnects
                ));
            }
            if let Some(fatal) = &received.fatal {
                self.problems
                    .push(format!("{}: the client stopped: {fatal}", d.user));
            }
        }
    }

    /// Prints the `FAULT` line (uncaptured), then fails unless nothing was lost and
    /// everything was delivered exactly once, in order.
    pub fn conclude(&self, name: &str) -> anyhow::Result<()> {
        // Straight to the process's stderr, past the test harness's output
        // capture: every run's log shows every fault's figures, also when
        // the test passes.
        let _ = writeln!(
            std::io::stderr().lock(),
            "FAULT {name}: accepted={} delivered={} duplicates_dropped={} lost={}",
            self.accepted,
            self.delivered,
            self.duplicates_dropped,
            self.lost
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

/// Waits until every device holds as many messages as were accepted for
/// its user, as long as messages keep arriving; returns what was still
/// missing when nothing moved for a stall period (the tally then says
/// exactly what).
pub async fn wait_delivered(devices: &[Device], ledger: &Ledger) -> Option<String> {
    let waited = until(
        "every client to hold every accepted message",
        stall(),
        || async {
            let mut short = 0usize;
            let mut held = 0usize;
            for d in devices {
                let count = d.count();
                held += count;
                if count < ledger.count_of(&d.user) {
                    short += 1;
                }
            }
            Ok(if short == 0 {
                Check::Done(())
            } else {
                Check::Waiting((held, short))
            })
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

// The stores --------------------------------------------------------------

/// `FLUSHALL` on the Redis at `url`.
pub async fn flushall(url: &str) -> anyhow::Result<()> {
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

/// Waits until every device's current connection is in its user's route
/// hash, pointing at the node it is connected to, and every node's liveness
/// entry is back; as long as more of them come back.
pub async fn wait_routes_back(
    probe: &RedisProbe,
    devices: &[Device],
    node_ids: &HashMap<String, String>,
) -> anyhow::Result<()> {
    until(
        "every live connection's route and every node's liveness entry in Redis",
        stall(),
        || async {
            let mut missing = Vec::new();
            for node in node_ids.values() {
                if probe.node_url(node).await?.is_none() {
                    missing.push(format!("liveness of {node}"));
                }
            }
            for d in devices {
                let (url, conn) = d.current().context("a device without a connection")?;
                let node = node_ids
                    .get(&url)
                    .with_context(|| format!("a connection to an unknown node {url}"))?;
                let routes = probe.routes(&d.user).await?;
                if routes.get(&conn) != Some(node) {
                    missing.push(format!("route of {}/{conn}", d.user));
                }
            }
            Ok(if missing.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(missing)
            })
        },
    )
    .await
}

// The system --------------------------------------------------------------

/// Two nodes of `env` and a collect API whose dispatch reports are kept.
pub async fn two_nodes(
    env: &TestEnv,
) -> anyhow::Result<(NodeProcess, NodeProcess, Collect, Arc<ReportingHandoff>)> {
    let (a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, spy) = reporting_collect(env).await?;
    Ok((a, b, collect, spy))
}

/// A collect API of `env` whose dispatch reports are kept.
pub async fn reporting_collect(env: &TestEnv) -> anyhow::Result<(Collect, Arc<ReportingHandoff>)> {
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
/// it found no live route for, and how many pushes to a node failed.
pub fn dispatch_summary(spy: &ReportingHandoff) -> String {
    let reports = spy.reports();
    let sum = |f: fn(&edgepush_dispatch::DispatchReport) -> u64| reports.iter().map(f).sum::<u64>();
    format!(
        "dispatches {}: pushed {}, recipients offline {}, dead routes skipped {}, push retries \
         {}, failed node pushes {}, undelivered {}",
        reports.len(),
        sum(|r| r.delivered),
        sum(|r| r.offline_users as u64),
        sum(|r| r.skipped_dead_routes as u64),
        sum(|r| r.retries as u64),
        sum(|r| r.failed_nodes as u64),
        sum(|r| r.undelivered.len() as u64),
    )
}

/// ws URL -> node id of `nodes`.
pub fn node_ids(nodes: &[&NodeProcess]) -> HashMap<String, String> {
    nodes
        .iter()
        .map(|n| (n.ws_url(), n.node_id().to_owned()))
        .collect()
}
