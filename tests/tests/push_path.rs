//! The push path end to end, on the real shared Redis and MongoDB: two
//! `edge-node serve` processes, the collect API with the real dispatch path,
//! real WebSocket clients.
//!
//! Run with `scripts/test`, or set `EDGEPUSH_TEST_REDIS_URL`,
//! `EDGEPUSH_TEST_MONGODB_URI` and `EDGEPUSH_FERRETDB_BIN` (for the private
//! MongoDB of the outage test) and run `cargo test -p edgepush-tests`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use async_trait::async_trait;
use edgepush_core::protocol::{Accepted, MsgFrame};
use edgepush_core::{Handoff, HandoffError, MessageStore, StoredMessage, UserId};
use edgepush_dispatch::DirectHandoff;
use edgepush_mongo::MongoMessageStore;
use edgepush_tests::tokens;
use edgepush_tests::{
    API_KEY, Collect, MongoServer, NodeProcess, RedisProbe, RedisServer, ReportingHandoff, TestEnv,
    TokenIn, WsClient, eventually, message_store, mint, stall, unique, upgrade_probe,
};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

/// Token lifetime: long enough for any test.
const HOUR: Duration = Duration::from_secs(3600);
/// How long a client listens for anything it is not owed.
const GRACE: Duration = Duration::from_millis(500);

/// Two nodes and collect on the shared servers.
struct Cluster {
    env: TestEnv,
    a: NodeProcess,
    b: NodeProcess,
    collect: Collect,
    redis: RedisProbe,
}

impl Cluster {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(|d| Arc::new(DirectHandoff::new(d))).await
    }

    async fn start_with(
        handoff: impl FnOnce(Arc<edgepush_dispatch::Dispatcher>) -> Arc<dyn Handoff>,
    ) -> anyhow::Result<Self> {
        let env = TestEnv::shared()?;
        let (a, b) = tokio::try_join!(NodeProcess::start_in(&env), NodeProcess::start_in(&env))?;
        let collect = Collect::start_with(&env, handoff).await?;
        let redis = RedisProbe::connect(&env.redis_url).await?;
        Ok(Self {
            env,
            a,
            b,
            collect,
            redis,
        })
    }
}

async fn connect(url: &str, user: &str) -> anyhow::Result<WsClient> {
    let client = WsClient::connect(url, &mint(user, HOUR)).await?;
    ensure!(
        client.user_id == user,
        "hello names {} instead of {user}",
        client.user_id
    );
    Ok(client)
}

/// Checks that `got` is exactly the message `receipt` names, with `data`.
fn check_msg(got: &MsgFrame, receipt: &Accepted, data: &Value) -> anyhow::Result<()> {
    ensure!(
        got.seq == receipt.seq && got.id == receipt.id && &got.data == data,
        "expected seq {} id {} data {data}, got seq {} id {} data {}",
        receipt.seq,
        receipt.id,
        got.seq,
        got.id,
        got.data
    );
    Ok(())
}

async fn one_msg(client: &mut WsClient) -> anyhow::Result<MsgFrame> {
    let mut msgs = client.collect_msgs(1, stall()).await?;
    msgs.pop().context("collect_msgs returned nothing")
}

// 1 ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_every_device_of_their_recipients_and_nobody_else() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let alice = unique("alice");
    let bob = unique("bob");
    let mut alice_a = connect(&c.a.ws_url(), &alice).await?;
    let mut alice_b = connect(&c.b.ws_url(), &alice).await?;
    let mut bob_b = connect(&c.b.ws_url(), &bob).await?;

    let to_alice = json!({ "text": "for alice", "n": 1 });
    let receipts = c.collect.send(&[&alice], to_alice.clone()).await?;
    ensure!(
        receipts.len() == 1 && receipts[0].user_id.as_str() == alice && receipts[0].seq == 1,
        "receipts {receipts:?}"
    );
    check_msg(&one_msg(&mut alice_a).await?, &receipts[0], &to_alice).context("alice on node a")?;
    check_msg(&one_msg(&mut alice_b).await?, &receipts[0], &to_alice).context("alice on node b")?;
    bob_b
        .expect_silence(GRACE)
        .await
        .context("bob after a message to alice")?;

    let to_bob = json!({ "text": "for bob" });
    let receipts = c.collect.send(&[&bob], to_bob.clone()).await?;
    ensure!(
        receipts.len() == 1 && receipts[0].seq == 1,
        "receipts {receipts:?}"
    );
    check_msg(&one_msg(&mut bob_b).await?, &receipts[0], &to_bob).context("bob")?;
    alice_a
        .expect_silence(GRACE)
        .await
        .context("alice (a) after a message to bob")?;
    alice_b
        .expect_silence(GRACE)
        .await
        .context("alice (b) after a message to bob")?;

    let to_both = json!({ "text": "for both", "list": [1, 2, 3] });
    let receipts = c.collect.send(&[&alice, &bob], to_both.clone()).await?;
    ensure!(receipts.len() == 2, "receipts {receipts:?}");
    ensure!(
        receipts[0].user_id.as_str() == alice && receipts[0].seq == 2,
        "alice's receipt {:?}",
        receipts[0]
    );
    ensure!(
        receipts[1].user_id.as_str() == bob && receipts[1].seq == 2,
        "bob's receipt {:?}",
        receipts[1]
    );
    ensure!(
        receipts[0].id == receipts[1].id,
        "one message, one id: {receipts:?}"
    );
    check_msg(&one_msg(&mut alice_a).await?, &receipts[0], &to_both).context("alice (a), both")?;
    check_msg(&one_msg(&mut alice_b).await?, &receipts[0], &to_both).context("alice (b), both")?;
    check_msg(&one_msg(&mut bob_b).await?, &receipts[1], &to_both).context("bob, both")?;

    for (name, client) in [
        ("alice a", &mut alice_a),
        ("alice b", &mut alice_b),
        ("bob", &mut bob_b),
    ] {
        client
            .expect_silence(GRACE)
            .await
            .with_context(|| format!("{name} at the end"))?;
    }
    c.env.cleanup().await;
    Ok(())
}

// 2 ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_get_every_message_once_in_order() -> anyhow::Result<()> {
    const USERS: usize = 200;
    const PER_USER: u64 = 5;
    const CONCURRENCY: usize = 16;
    let c = Cluster::start().await?;
    let users: Vec<String> = (0..USERS).map(|i| unique(&format!("u{i}"))).collect();

    // Connect in waves; even users on node a, odd users on node b.
    let urls = [c.a.ws_url(), c.b.ws_url()];
    let clients: Vec<WsClient> = stream::iter(users.iter().enumerate())
        .map(|(i, user)| {
            let url = urls[i % 2].clone();
            async move {
                connect(&url, user)
                    .await
                    .with_context(|| format!("connecting {user}"))
            }
        })
        .buffered(20)
        .try_collect()
        .await?;

    // Every client reads its messages while collect is fed.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let msgs = client
                    .collect_msgs(PER_USER as usize, Duration::from_secs(300))
                    .await?;
                Ok::<_, anyhow::Error>((client, msgs))
            })
        })
        .collect();

    // Each user's messages in order (so seq k carries k); users concurrently.
    let collect = &c.collect;
    let receipts: Vec<(String, Vec<Accepted>)> = stream::iter(users.iter())
        .map(|user| async move {
            let mut mine = Vec::new();
            for k in 1..=PER_USER {
                let mut r = collect
                    .send(&[user], json!({ "user": user, "k": k }))
                    .await
                    .with_context(|| format!("message {k} to {user}"))?;
                ensure!(r.len() == 1, "one receipt expected: {r:?}");
                mine.push(r.remove(0));
            }
            Ok::<_, anyhow::Error>((user.clone(), mine))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (user, mine) in &receipts {
        let seqs: Vec<u64> = mine.iter().map(|r| r.seq).collect();
        ensure!(
            seqs == (1..=PER_USER).collect::<Vec<_>>(),
            "{user}'s receipts have seqs {seqs:?}"
        );
    }
    let receipts: std::collections::HashMap<String, Vec<Accepted>> = receipts.into_iter().collect();

    let mut clients = Vec::with_capacity(USERS);
    let mut failures = Vec::new();
    for reader in readers {
        match reader.await.context("reader task")? {
            Ok((client, msgs)) => {
                let user = client.user_id.clone();
                let mine = receipts.get(&user).context("a client of an unknown user")?;
                for (k, (msg, receipt)) in msgs.iter().zip(mine).enumerate() {
                    let data = json!({ "user": user, "k": k as u64 + 1 });
                    if let Err(e) = check_msg(msg, receipt, &data) {
                        failures.push(format!("{user} message {}: {e}", k + 1));
                    }
                }
                clients.push(client);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "{} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing extra: no duplicates, nothing of anyone else's.
    let silent: Vec<_> = clients
        .into_iter()
        .map(|mut client| tokio::spawn(async move { client.expect_silence(GRACE).await }))
        .collect();
    for check in silent {
        check.await.context("silence task")??;
    }
    c.env.cleanup().await;
    Ok(())
}

// 3 ---------------------------------------------------------------------

/// A hand-off that, before passing messages on, reads each one back through
/// a separate message store connection and records what it found.
struct SeenInStore {
    inner: DirectHandoff,
    reader: MongoMessageStore,
    seen: Mutex<Vec<(StoredMessage, Option<StoredMessage>)>>,
}

#[async_trait]
impl Handoff for SeenInStore {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        for message in messages {
            let found = self
                .reader
                .read_after(&message.user_id, message.seq.saturating_sub(1), 1)
                .await
                .map_err(|e| HandoffError::Unavailable(format!("test reader: {e}")))?
                .into_iter()
                .find(|m| m.seq == message.seq);
            if let Ok(mut seen) = self.seen.lock() {
                seen.push((message.clone(), found));
            }
        }
        self.inner.hand_off(messages).await
    }

    async fn ready(&self) -> Result<(), HandoffError> {
        self.inner.ready().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_in_mongodb_before_collect_answers() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let reader = message_store(&env.mongodb_uri, &env.database).await?;
    let mut spy: Option<Arc<SeenInStore>> = None;
    let collect = Collect::start_with(&env, |dispatcher| {
        let handoff = Arc::new(SeenInStore {
            inner: DirectHandoff::new(dispatcher),
            reader: reader.clone(),
            seen: Mutex::new(Vec::new()),
        });
        spy = Some(handoff.clone());
        handoff
    })
    .await?;
    let spy = spy.context("the hand-off was not built")?;
    let node = NodeProcess::start_in(&env).await?;
    let carl = unique("carl");
    let dana = unique("dana");
    let mut carl_client = connect(&node.ws_url(), &carl).await?;

    let data = json!({ "durable": true });
    let receipts = collect.send(&[&carl, &dana], data.clone()).await?;
    ensure!(receipts.len() == 2, "receipts {receipts:?}");

    let seen = spy.seen.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(
        seen.len() == 2,
        "the hand-off saw {} messages, expected 2",
        seen.len()
    );
    for (handed, found) in &seen {
        let found = found.as_ref().with_context(|| {
            format!(
                "{} seq {} was not in MongoDB when handed off",
                handed.user_id, handed.seq
            )
        })?;
        ensure!(
            found.id == handed.id && found.data.get() == handed.data.get(),
            "MongoDB held {found:?} for {handed:?}"
        );
        let receipt = receipts
            .iter()
            .find(|r| r.user_id == handed.user_id)
            .context("a hand-off for a user without a receipt")?;
        ensure!(
            receipt.seq == handed.seq && receipt.id == handed.id,
            "receipt {receipt:?} vs {handed:?}"
        );
    }

    for receipt in &receipts {
        let stored = reader.read_after(&receipt.user_id, 0, 10).await?;
        ensure!(
            stored.len() == 1,
            "{} has {} messages stored",
            receipt.user_id,
            stored.len()
        );
        ensure!(
            stored[0].seq == receipt.seq && stored[0].id == receipt.id,
            "stored {:?}",
            stored[0]
        );
        let stored_data: Value = serde_json::from_str(stored[0].data.get())?;
        ensure!(stored_data == data, "stored data {stored_data}");
    }
    // The hand-off still delivered.
    check_msg(&one_msg(&mut carl_client).await?, &receipts[0], &data)?;
    env.cleanup().await;
    Ok(())
}

// 4 ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_lose_their_routes() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let redis = RedisProbe::connect(&env.redis_url).await?;
    let erin = unique("erin");
    let polite = connect(&node.ws_url(), &erin).await?;
    let abrupt = connect(&node.ws_url(), &erin).await?;

    let routes = redis.routes(&erin).await?;
    for conn in [&polite.conn_id, &abrupt.conn_id] {
        ensure!(
            routes.get(conn).map(String::as_str) == Some(node.node_id()),
            "route of {conn} is not {} -> {}: {routes:?}",
            conn,
            node.node_id()
        );
    }

    // A client that closes properly.
    let polite_id = polite.conn_id.clone();
    polite.close().await?;
    eventually(
        "the closed connection's route to disappear",
        stall(),
        || async {
            let routes = redis.routes(&erin).await?;
            Ok((!routes.contains_key(&polite_id)).then_some(()))
        },
    )
    .await?;
    let routes = redis.routes(&erin).await?;
    ensure!(
        routes.contains_key(&abrupt.conn_id),
        "the open connection's route went too: {routes:?}"
    );

    // A client that just goes away (TCP closed, no close frame).
    let abrupt_id = abrupt.conn_id.clone();
    drop(abrupt);
    eventually(
        "the dropped connection's route to disappear",
        stall(),
        || async {
            let routes = redis.routes(&erin).await?;
            Ok((!routes.contains_key(&abrupt_id)).then_some(()))
        },
    )
    .await?;
    ensure!(
        !redis.route_key_exists(&erin).await?,
        "an empty route hash is left for {erin}"
    );
    env.cleanup().await;
    Ok(())
}

// 5 ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_skipped_once_its_liveness_expires() -> anyhow::Result<()> {
    let mut reporter: Option<Arc<ReportingHandoff>> = None;
    let mut c = Cluster::start_with(|d| {
        let r = Arc::new(ReportingHandoff::new(d));
        reporter = Some(r.clone());
        r
    })
    .await?;
    let reporter = reporter.context("the hand-off was not built")?;
    let carol = unique("carol");
    let dave = unique("dave");
    let carol_a = connect(&c.a.ws_url(), &carol).await?;
    let mut carol_b = connect(&c.b.ws_url(), &carol).await?;
    let dave_a = connect(&c.a.ws_url(), &dave).await?;
    let dead = c.a.node_id().to_owned();
    ensure!(
        c.redis.node_url(&dead).await?.is_some(),
        "node a has no liveness entry"
    );

    c.a.kill_9();
    eventually(
        "the killed node's liveness key to expire",
        stall(),
        || async { Ok(c.redis.node_url(&dead).await?.is_none().then_some(())) },
    )
    .await?;

    // Nobody swept the dead node's routes.
    let carol_routes = c.redis.routes(&carol).await?;
    ensure!(
        carol_routes.get(&carol_a.conn_id) == Some(&dead),
        "carol's route on the dead node is gone: {carol_routes:?}"
    );
    ensure!(
        carol_routes.get(&carol_b.conn_id).map(String::as_str) == Some(c.b.node_id()),
        "carol's route on the live node is gone: {carol_routes:?}"
    );
    let dave_routes = c.redis.routes(&dave).await?;
    ensure!(
        dave_routes.get(&dave_a.conn_id) == Some(&dead),
        "dave's route is gone: {dave_routes:?}"
    );

    // carol: one live device, one dead route.
    let delivered_before =
        c.b.metric("edgepush_deliveries_total")
            .await?
            .unwrap_or(0.0);
    let data = json!({ "after": "crash" });
    let receipts = c.collect.send(&[&carol], data.clone()).await?;
    let report = reporter.last().context("no dispatch report")?;
    ensure!(
        report.delivered == 1 && report.skipped_dead_routes == 1 && report.failed_nodes == 0,
        "dispatch to carol: {report:?} (expected 1 delivered, 1 dead route skipped, no push to the dead node)"
    );
    check_msg(&one_msg(&mut carol_b).await?, &receipts[0], &data)?;
    carol_b.expect_silence(GRACE).await?;
    let delivered_after =
        c.b.metric("edgepush_deliveries_total")
            .await?
            .unwrap_or(0.0);
    ensure!(
        delivered_after >= delivered_before + 1.0,
        "node b's deliveries went {delivered_before} -> {delivered_after}"
    );

    // dave: only a dead route; the message waits in MongoDB.
    let receipts = c.collect.send(&[&dave], json!("stored only")).await?;
    ensure!(
        receipts.len() == 1 && receipts[0].seq == 1,
        "receipts {receipts:?}"
    );
    let report = reporter.last().context("no dispatch report")?;
    ensure!(
        report.delivered == 0
            && report.offline_users == 1
            && report.skipped_dead_routes == 1
            && report.failed_nodes == 0,
        "dispatch to dave: {report:?} (expected nothing delivered, dave offline, no push to the dead node)"
    );
    let stored = c
        .collect
        .store
        .read_after(&UserId::new(&dave)?, 0, 10)
        .await?;
    ensure!(
        stored.len() == 1,
        "dave has {} messages stored",
        stored.len()
    );

    drop((carol_a, dave_a));
    c.env.cleanup().await;
    Ok(())
}

// 6 ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let redis = RedisProbe::connect(&env.redis_url).await?;

    struct Case {
        name: &'static str,
        user: String,
        token: Option<String>,
        in_query: bool,
        code: &'static str,
    }
    let case = |name, make: &dyn Fn(&str) -> Option<String>, in_query, code| {
        let user = unique(name);
        Case {
            name,
            token: make(&user),
            user,
            in_query,
            code,
        }
    };
    let cases = [
        case(
            "expired",
            &|u| Some(tokens::expired(u)),
            false,
            "token_expired",
        ),
        case(
            "expired-query",
            &|u| Some(tokens::expired(u)),
            true,
            "token_expired",
        ),
        case(
            "nbf",
            &|u| Some(tokens::not_yet_valid(u)),
            false,
            "token_not_yet_valid",
        ),
        case(
            "wrong-secret",
            &|u| Some(tokens::wrong_secret(u)),
            false,
            "invalid_token",
        ),
        case(
            "wrong-secret-query",
            &|u| Some(tokens::wrong_secret(u)),
            true,
            "invalid_token",
        ),
        case(
            "alg-none",
            &|u| Some(tokens::alg_none(u)),
            false,
            "invalid_token",
        ),
        case(
            "garbage",
            &|_| Some(tokens::garbage()),
            false,
            "invalid_token",
        ),
        case("missing", &|_| None, false, "missing_token"),
    ];

    let unauthorized_before = node
        .metric("edgepush_handshake_unauthorized_total")
        .await?
        .unwrap_or(0.0);
    let mut failures = Vec::new();
    for c in &cases {
        // Byte for byte: the answer to the upgrade request.
        let (url, headers) = match (&c.token, c.in_query) {
            (Some(t), true) => (format!("{}?token={t}", node.ws_url()), vec![]),
            (Some(t), false) => (
                node.ws_url(),
                vec![("Authorization".to_owned(), format!("Bearer {t}"))],
            ),
            (None, _) => (node.ws_url(), vec![]),
        };
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, answer_headers, body) = upgrade_probe(&url, &headers).await?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        let code = json
            .as_ref()
            .and_then(|j| j["error"]["code"].as_str())
            .map(str::to_owned);
        let content_type = answer_headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        if status != 401
            || code.as_deref() != Some(c.code)
            || !content_type.as_deref().unwrap_or("").contains("json")
        {
            failures.push(format!(
                "{}: status {status}, content-type {content_type:?}, body {body:?} (expected 401 with error.code {})",
                c.name, c.code
            ));
        }

        // And a real client is refused the same way.
        let token = match (&c.token, c.in_query) {
            (Some(t), true) => TokenIn::Query(t),
            (Some(t), false) => TokenIn::Header(t),
            (None, _) => TokenIn::None,
        };
        match WsClient::connect_raw(&node.ws_url(), token, None).await? {
            Ok(client) => failures.push(format!(
                "{}: the client was let in as {}",
                c.name, client.user_id
            )),
            Err(refused) if refused.status != 401 => failures.push(format!(
                "{}: the client was refused with {}",
                c.name, refused.status
            )),
            Err(_) => {}
        }
    }

    // Nothing registered for any of them.
    for c in &cases {
        if redis.route_key_exists(&c.user).await? {
            failures.push(format!(
                "{}: routes registered for {}: {:?}",
                c.name,
                c.user,
                redis.routes(&c.user).await?
            ));
        }
    }
    ensure!(failures.is_empty(), "bad tokens:\n{}", failures.join("\n"));
    let unauthorized_after = node
        .metric("edgepush_handshake_unauthorized_total")
        .await?
        .unwrap_or(0.0);
    ensure!(
        unauthorized_after - unauthorized_before >= (2 * cases.len()) as f64,
        "handshake_unauthorized went {unauthorized_before} -> {unauthorized_after} for {} refusals",
        2 * cases.len()
    );

    // The same node lets a good token in, by header and by query.
    let good = unique("good");
    let token = mint(&good, HOUR);
    for how in [TokenIn::Header(&token), TokenIn::Query(&token)] {
        match WsClient::connect_raw(&node.ws_url(), how, None).await? {
            Ok(client) => ensure!(client.user_id == good, "hello for {}", client.user_id),
            Err(refused) => bail!("a good token ({how:?}) was refused: {refused:?}"),
        }
    }
    env.cleanup().await;
    Ok(())
}

// 7 ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_refuses_bad_input_and_stores_nothing() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let collect = Collect::start(&env).await?;
    let reader = message_store(&env.mongodb_uri, &env.database).await?;
    let vic = unique("vic");
    let many: Vec<String> = (0..1001).map(|i| format!("{vic}-{i}")).collect();
    let big = "x".repeat(64 * 1024 + 1);

    let valid = json!({ "to": [vic], "data": 1 }).to_string();
    let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        (
            "malformed JSON",
            format!(r#"{{"to":["{vic}"],"data":"#),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "missing to",
            json!({ "data": 1 }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "missing data",
            json!({ "to": [vic] }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "to not an array",
            json!({ "to": vic, "data": 1 }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "to with a number",
            json!({ "to": [vic, 42], "data": 1 }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "empty to",
            json!({ "to": [], "data": 1 }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "1001 recipients",
            json!({ "to": many, "data": 1 }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "invalid user id",
            json!({ "to": [vic, "no spaces allowed"], "data": 1 }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "data over 64 KiB",
            json!({ "to": [vic], "data": big }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        (
            "unknown field",
            json!({ "to": [vic], "data": 1, "priority": "high" }).to_string(),
            Some(API_KEY),
            400,
            "bad_request",
        ),
        ("missing API key", valid.clone(), None, 401, "unauthorized"),
        (
            "wrong API key",
            valid.clone(),
            Some("not-the-key"),
            401,
            "unauthorized",
        ),
    ];
    let mut failures = Vec::new();
    for (name, body, key, want_status, want_code) in &cases {
        let (status, answer) = collect.post_raw(body.clone(), *key).await?;
        let code = answer["error"]["code"].as_str();
        if status != *want_status || code != Some(*want_code) {
            failures.push(format!(
                "{name}: {status} {answer} (expected {want_status} with error.code {want_code})"
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "collect accepted or mis-refused:\n{}",
        failures.join("\n")
    );

    for user in [&vic, &many[0], &many[1000]] {
        let stored = reader.read_after(&UserId::new(user)?, 0, 10).await?;
        ensure!(
            stored.is_empty(),
            "{user} has {} messages after refused requests: {stored:?}",
            stored.len()
        );
    }
    // The same user and key work when the request is good, and the refused
    // requests used up no seq.
    let receipts = collect.send(&[&vic], json!(1)).await?;
    ensure!(
        receipts.len() == 1 && receipts[0].seq == 1,
        "receipts {receipts:?}"
    );
    ensure!(
        reader.read_after(&UserId::new(&vic)?, 0, 10).await?.len() == 1,
        "the good message is not stored"
    );
    env.cleanup().await;
    Ok(())
}

// 8 ---------------------------------------------------------------------

/// Posts with an idempotency key until collect answers 202 (bounded):
/// retries are safe, so a half-recovered store cannot store it twice.
async fn post_until_accepted(
    collect: &Collect,
    user: &str,
    key: &str,
) -> anyhow::Result<Vec<Accepted>> {
    let body = json!({ "to": [user], "data": { "key": key }, "idempotency_key": key });
    eventually(
        "collect to answer 202 again",
        Duration::from_secs(60),
        || async {
            let (status, answer) = collect.post(&body).await?;
            match status {
                202 => Ok(Some(
                    serde_json::from_value::<edgepush_core::protocol::SubmitResponse>(answer)?
                        .messages,
                )),
                503 => Ok(None),
                other => bail!("collect answered {other}: {answer}"),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_and_nothing_stored() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let env = TestEnv::shared()?.with_redis(redis.url());
    let collect = Collect::start(&env).await?;
    let reader = message_store(&env.mongodb_uri, &env.database).await?;
    let fay = unique("fay");
    let fay_id = UserId::new(&fay)?;
    ensure!(
        collect.send(&[&fay], json!("before")).await?.len() == 1,
        "no receipt"
    );

    redis.kill();
    let (status, answer) = collect
        .post(&json!({ "to": [fay], "data": "while down" }))
        .await?;
    ensure!(
        status == 503 && answer["error"]["code"] == "unavailable",
        "with Redis down collect answered {status} {answer}"
    );
    let stored = reader.read_after(&fay_id, 0, 10).await?;
    ensure!(
        stored.len() == 1,
        "with Redis down collect stored something: {stored:?}"
    );

    redis.restart().await?;
    let receipts = post_until_accepted(&collect, &fay, &unique("k")).await?;
    ensure!(
        receipts.len() == 1 && receipts[0].seq == 2,
        "after the restart: {receipts:?}"
    );
    let stored = reader.read_after(&fay_id, 0, 10).await?;
    ensure!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>() == [1, 2],
        "stored {stored:?}"
    );
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_down_means_503_until_it_is_back() -> anyhow::Result<()> {
    let mut mongo = MongoServer::start().await?;
    let env = TestEnv::shared()?.with_mongodb(mongo.uri());
    let collect = Collect::start(&env).await?;
    let gus = unique("gus");
    ensure!(
        collect.send(&[&gus], json!("before")).await?.len() == 1,
        "no receipt"
    );

    mongo.kill();
    let (status, answer) = collect
        .post(&json!({ "to": [gus], "data": "while down" }))
        .await?;
    ensure!(
        status == 503 && answer["error"]["code"] == "unavailable",
        "with MongoDB down collect answered {status} {answer}"
    );

    mongo.restart().await?;
    let receipts = post_until_accepted(&collect, &gus, &unique("k")).await?;
    ensure!(
        receipts.len() == 1 && receipts[0].seq == 2,
        "after the restart: {receipts:?}"
    );
    let stored = collect.store.read_after(&UserId::new(&gus)?, 0, 10).await?;
    ensure!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>() == [1, 2],
        "stored {stored:?}"
    );
    Ok(())
}
