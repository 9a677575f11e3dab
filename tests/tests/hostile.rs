//! Hostile and greedy clients: what one client sends must not hurt the
//! others, and every input gets a defined answer.
//!
//! - a client that claims `after` beyond anything stored and acks huge seqs
//!   cannot blank its user's stream (acks are clipped to what is stored);
//! - a flood of ack frames costs bounded memory and a bounded number of
//!   store writes;
//! - the largest message collect accepts, to the most recipients collect
//!   accepts, all on one node, arrives live on every connection;
//! - the connection caps refuse before the upgrade, with their documented
//!   status and code;
//! - malformed upgrade requests (non-ASCII and invalid UTF-8 headers, huge
//!   heads, garbage, extreme `after` values) get HTTP answers, and the node
//!   stays up.
//!
//! Run with `scripts/test`, or with the `EDGEPUSH_TEST_*` variables set:
//! `cargo test -p edgepush-tests --test hostile -- --nocapture`.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use edgepush_core::protocol::MsgFrame;
use edgepush_core::{MessageStore as _, UserId};
use edgepush_tests::{
    Check, Collect, NodeOptions, NodeProcess, ReportingHandoff, TestEnv, TokenIn, WsClient, mint,
    raw_probe, rss_kib, stall, unique, until, upgrade_probe,
};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);
const GRACE: Duration = Duration::from_millis(500);

fn seqs(msgs: &[MsgFrame]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq).collect()
}

async fn connect(node: &NodeProcess, user: &str, after: Option<u64>) -> anyhow::Result<WsClient> {
    let token = mint(user, HOUR);
    match WsClient::connect_raw(&node.ws_url(), TokenIn::Header(&token), after).await? {
        Ok(client) => Ok(client),
        Err(refused) => bail!("refused with {}: {}", refused.status, refused.body),
    }
}

/// Waits until the node's metric `name` reaches `at_least`.
async fn metric_reaches(node: &NodeProcess, name: &str, at_least: f64) -> anyhow::Result<f64> {
    until(&format!("{name} >= {at_least}"), stall(), || async {
        let value = node.metric(name).await?.unwrap_or(0.0);
        Ok(if value >= at_least {
            Check::Done(value)
        } else {
            Check::Waiting(value as u64)
        })
    })
    .await
}

// 1 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_after_and_huge_acks_cannot_blank_the_stream() -> anyhow::Result<()> {
    TestEnv::run(bogus_after).await
}

async fn bogus_after(env: &TestEnv) -> anyhow::Result<()> {
    let node =
        NodeProcess::start(NodeOptions::new(env).with_env("EDGEPUSH_ACK_INTERVAL_MS", "100"))
            .await?;
    let collect = Collect::start(env).await?;
    let user = unique("victim");
    let uid = UserId::new(&user)?;
    let mut honest = connect(&node, &user, Some(0)).await?;
    for k in 1..=5 {
        collect.send(&[&user], json!({ "k": k })).await?;
    }
    ensure!(seqs(&honest.collect_msgs(5, stall()).await?) == [1, 2, 3, 4, 5]);

    // The hostile device claims far more than is stored, and acks beyond
    // anything, u64::MAX included.
    let mut hostile = connect(&node, &user, Some(1_000_000)).await?;
    let mut extreme = connect(&node, &user, Some(u64::MAX)).await?;
    for seq in [1_000_000_000_000, u64::MAX, 7] {
        hostile.ack(seq).await?;
        extreme.ack(seq).await?;
    }
    metric_reaches(&node, "edgepush_acks_total", 6.0).await?;
    // Acks are written within an interval; wait for the store to have them
    // (clipped), then make sure nothing passed what is stored.
    let position = until("the acks to reach the store", stall(), || async {
        let position = collect.store.position(&uid).await?;
        Ok(if position.acked_seq >= 5 {
            Check::Done(position)
        } else {
            Check::Waiting(position.acked_seq)
        })
    })
    .await?;
    ensure!(
        position.acked_seq == 5 && position.last_seq == 5,
        "the ack passed what is stored: {position:?}"
    );

    // A new message reaches every device, the hostile ones included (their
    // `after` counted only up to the last stored seq).
    collect.send(&[&user], json!({ "k": 6 })).await?;
    ensure!(seqs(&honest.collect_msgs(1, stall()).await?) == [6]);
    ensure!(seqs(&hostile.collect_msgs(1, stall()).await?) == [6]);
    ensure!(seqs(&extreme.collect_msgs(1, stall()).await?) == [6]);
    // A new device without `after` starts from the acked seq, not beyond.
    let mut fresh = connect(&node, &user, None).await?;
    let first = fresh.collect_msgs(1, stall()).await?;
    ensure!(
        first[0].seq <= 6,
        "a new device started after seq {}: the stream was blanked",
        first[0].seq
    );
    collect.send(&[&user], json!({ "k": 7 })).await?;
    ensure!(seqs(&honest.collect_msgs(1, stall()).await?) == [7]);
    let position = collect.store.position(&uid).await?;
    ensure!(
        position.acked_seq <= position.last_seq,
        "acked {} above stored {}",
        position.acked_seq,
        position.last_seq
    );
    honest.expect_silence(GRACE).await?;
    eprintln!(
        "bogus_after: after=1000000 and after=u64::MAX accepted and clipped to 5; acks of 10^12 and \
         u64::MAX recorded as {}; every device got seqs 6 and 7",
        5
    );
    Ok(())
}

// 2 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_flood_costs_bounded_memory_and_store_writes() -> anyhow::Result<()> {
    TestEnv::run(ack_flood).await
}

async fn ack_flood(env: &TestEnv) -> anyhow::Result<()> {
    const ACKS: u64 = 10_000;
    const INTERVAL_MS: u64 = 1_000;
    /// Growth of the node's memory the flood may cause.
    const RSS_GROWTH_KIB: u64 = 16 * 1024;
    let node = NodeProcess::start(
        NodeOptions::new(env).with_env("EDGEPUSH_ACK_INTERVAL_MS", INTERVAL_MS.to_string()),
    )
    .await?;
    let pid = node.pid().context("the node is not running")?;
    let collect = Collect::start(env).await?;
    let user = unique("flood");
    let mut client = connect(&node, &user, Some(0)).await?;
    for k in 1..=3 {
        collect.send(&[&user], json!({ "k": k })).await?;
    }
    ensure!(seqs(&client.collect_msgs(3, stall()).await?) == [1, 2, 3]);
    let writes_before = node
        .metric("edgepush_ack_writes_total")
        .await?
        .unwrap_or(0.0);
    let before = rss_kib(pid).context("reading VmRSS")?;
    let started = tokio::time::Instant::now();
    client.ack_burst(1..=ACKS).await?;
    metric_reaches(&node, "edgepush_acks_total", ACKS as f64).await?;
    let peak = rss_kib(pid).context("reading VmRSS")?;
    // The last flush happens within an interval of the last ack.
    let acked = until("the coalesced ack to reach the store", stall(), || async {
        let acked = collect.store.acked(&UserId::new(&user)?).await?;
        Ok(if acked == 3 {
            Check::Done(acked)
        } else {
            Check::Waiting(acked)
        })
    })
    .await?;
    let elapsed = started.elapsed();
    let writes = node
        .metric("edgepush_ack_writes_total")
        .await?
        .unwrap_or(0.0)
        - writes_before;
    // At most one write per interval (plus the one in progress).
    let allowed = (elapsed.as_millis() as u64).div_ceil(INTERVAL_MS) + 1;
    eprintln!(
        "ack_flood: {ACKS} acks in {elapsed:.1?} -> {writes} store writes (at most {allowed} \
         allowed), acked seq {acked} (clipped from {ACKS}); node VmRSS {before} KiB before, \
         {peak} KiB after"
    );
    ensure!(writes >= 1.0, "no ack was written");
    ensure!(
        writes as u64 <= allowed,
        "{writes} ack writes for {ACKS} acks in {elapsed:?}: not coalesced (at most {allowed})"
    );
    ensure!(
        peak.saturating_sub(before) <= RSS_GROWTH_KIB,
        "the node's VmRSS grew from {before} KiB to {peak} KiB"
    );
    // The connection still works.
    collect.send(&[&user], json!({ "k": 4 })).await?;
    ensure!(seqs(&client.collect_msgs(1, stall()).await?) == [4]);
    Ok(())
}

// 3 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_message_to_the_most_recipients_arrives_live() -> anyhow::Result<()> {
    TestEnv::run(largest_fan_out).await
}

async fn largest_fan_out(env: &TestEnv) -> anyhow::Result<()> {
    let limits = edgepush_collect::Limits::default();
    let recipients = limits.max_recipients;
    let node = NodeProcess::start_in(env).await?;
    let mut spy: Option<std::sync::Arc<ReportingHandoff>> = None;
    let collect = Collect::start_with(env, |d| {
        let handoff = std::sync::Arc::new(ReportingHandoff::new(d));
        spy = Some(handoff.clone());
        handoff
    })
    .await?;
    let spy = spy.context("no hand-off")?;
    let users: Vec<String> = (0..recipients)
        .map(|i| unique(&format!("big{i}")))
        .collect();
    let clients: Vec<WsClient> = stream::iter(&users)
        .map(|user| connect(&node, user, Some(0)))
        .buffer_unordered(32)
        .try_collect()
        .await?;
    // `data` of exactly the largest size: a JSON string of that many bytes.
    let data = Value::String("x".repeat(limits.max_data_bytes - 2));
    ensure!(serde_json::to_string(&data)?.len() == limits.max_data_bytes);
    let (status, body) = collect
        .post(&json!({ "to": users, "data": data, "idempotency_key": unique("big") }))
        .await?;
    ensure!(status == 202, "collect answered {status}: {body}");
    let report = spy.last().context("no dispatch report")?;
    let received: Vec<Vec<MsgFrame>> = stream::iter(clients)
        .map(|mut client| async move {
            let got = client.collect_msgs(1, stall()).await?;
            client.expect_silence(GRACE).await?;
            Ok::<_, anyhow::Error>(got)
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let intact = received
        .iter()
        .filter(|got| got.len() == 1 && got[0].seq == 1 && got[0].data == data)
        .count();
    eprintln!(
        "largest_fan_out: {} bytes to {recipients} users on one node: dispatch delivered {} \
         ({} failed node pushes); {intact} clients got it live on their first connection",
        limits.max_data_bytes, report.delivered, report.failed_nodes
    );
    ensure!(
        report.delivered == recipients as u64 && report.failed_nodes == 0,
        "dispatch: {report:?}"
    );
    ensure!(
        intact == recipients,
        "{intact} of {recipients} got the message intact"
    );
    Ok(())
}

// 4 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_before_the_upgrade() -> anyhow::Result<()> {
    TestEnv::run(caps).await
}

async fn caps(env: &TestEnv) -> anyhow::Result<()> {
    let node = NodeProcess::start(
        NodeOptions::new(env)
            .with_env("EDGEPUSH_MAX_CONNECTIONS", "3")
            .with_env("EDGEPUSH_MAX_CONNECTIONS_PER_USER", "2"),
    )
    .await?;
    let (alice, bob, carol) = (unique("alice"), unique("bob"), unique("carol"));
    let refused = |user: &str| {
        let token = mint(user, HOUR);
        let url = node.ws_url();
        async move {
            match WsClient::connect_raw(&url, TokenIn::Header(&token), None).await? {
                Ok(_) => bail!("a connection past the cap was accepted"),
                Err(refused) => Ok(refused),
            }
        }
    };
    let a1 = connect(&node, &alice, None).await?;
    let _a2 = connect(&node, &alice, None).await?;
    let third = refused(&alice).await?;
    let code = third.json().map(|b| b["error"]["code"].clone());
    ensure!(
        third.status == 429 && code == Some(json!("too_many_connections")),
        "alice's third connection: {} {}",
        third.status,
        third.body
    );
    let _b1 = connect(&node, &bob, None).await?;
    let full = refused(&carol).await?;
    let code = full.json().map(|b| b["error"]["code"].clone());
    ensure!(
        full.status == 503 && code == Some(json!("node_full")),
        "carol on a full node: {} {}",
        full.status,
        full.body
    );
    let (status, headers, _) = upgrade_probe(
        &node.ws_url(),
        &[("authorization", &format!("Bearer {}", mint(&carol, HOUR)))],
    )
    .await?;
    ensure!(
        status == 503 && headers.iter().any(|(k, _)| k == "retry-after"),
        "a full node answers 503 with retry-after: {status} {headers:?}"
    );
    // A place freed is a place taken again.
    a1.close().await?;
    until(
        "alice's closed connection to leave the node",
        stall(),
        || async {
            let open = node.metric("edgepush_connections").await?.unwrap_or(0.0);
            Ok(if open < 3.0 {
                Check::Done(())
            } else {
                Check::Waiting(open as u64)
            })
        },
    )
    .await?;
    let _c1 = connect(&node, &carol, None).await?;
    let refusals = node
        .metric("edgepush_connections_refused_total")
        .await?
        .unwrap_or(0.0);
    ensure!(refusals >= 3.0, "refusals counted: {refusals}");
    Ok(())
}

// 5 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_get_defined_answers() -> anyhow::Result<()> {
    TestEnv::run(handshakes).await
}

async fn handshakes(env: &TestEnv) -> anyhow::Result<()> {
    let node = NodeProcess::start_in(env).await?;
    let url = node.ws_url();
    let token = mint(&unique("hs"), HOUR);
    let bearer = format!("Bearer {token}");
    // (what, headers, query, expected status)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, u16);
    let cases: Vec<Case<'_>> = vec![
        (
            "non-ASCII scheme",
            vec![("authorization", "Beärer ééééé".into())],
            "",
            401,
        ),
        (
            "non-ASCII token",
            vec![("authorization", "Bearer äöüßé€".into())],
            "",
            401,
        ),
        (
            "multibyte at byte 7",
            vec![("authorization", "Bearer€x".into())],
            "",
            401,
        ),
        (
            "after = u64::MAX",
            vec![("authorization", bearer.clone())],
            "?after=18446744073709551615",
            101,
        ),
        (
            "after past u64",
            vec![("authorization", bearer.clone())],
            "?after=18446744073709551616",
            400,
        ),
        (
            "negative after",
            vec![("authorization", bearer.clone())],
            "?after=-1",
            400,
        ),
        (
            "after not a number",
            vec![("authorization", bearer.clone())],
            "?after=%F0%9F%92%A9",
            400,
        ),
        ("token in a broken escape", vec![], "?token=%E0%A4%A", 401),
    ];
    for (what, headers, query, expected) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, body) = upgrade_probe(&format!("{url}{query}"), &headers)
            .await
            .with_context(|| format!("case {what}"))?;
        ensure!(
            status == *expected,
            "{what}: expected {expected}, got {status}: {body}"
        );
        if status != 101 {
            let json: Value = serde_json::from_str(&body)
                .with_context(|| format!("{what}: the body is not JSON: {body:?}"))?;
            ensure!(json["error"]["code"].is_string(), "{what}: {body}");
        }
    }
    // Raw bytes: invalid UTF-8 in a header, garbage, a huge head.
    let mut invalid_utf8 = b"GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
    let huge = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 * 1024));
    let raw_cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "invalid UTF-8 header",
            std::mem::take(&mut invalid_utf8),
            &[400],
        ),
        (
            "garbage",
            b"\x00\x01\x02 not http at all\r\n\r\n".to_vec(),
            &[400],
        ),
        ("huge head", huge.into_bytes(), &[431]),
        (
            "binary noise",
            (0..=255u8).cycle().take(3000).collect(),
            &[400, 431],
        ),
    ];
    for (what, bytes, expected) in &raw_cases {
        let (status, _, body) = raw_probe(&url, bytes)
            .await
            .with_context(|| format!("case {what}"))?;
        ensure!(
            expected.contains(&status),
            "{what}: expected {expected:?}, got {status}: {body}"
        );
    }
    let (status, _) = node.get("/readyz").await?;
    ensure!(
        status == 200,
        "the node is not ready after the hostile handshakes"
    );
    // And it still serves a well-formed client.
    let _ok = connect(&node, &unique("after"), None).await?;
    Ok(())
}
