//! One connection's life on a real edge node process: resume after a seq,
//! resume after the acked seq, gap fill from MongoDB, pushes written by the
//! push path beside the session's own writes, protocol violations, and the
//! graceful drain (SIGTERM).
//!
//! Run with `scripts/test`, or set `EDGEPUSH_TEST_REDIS_URL` and
//! `EDGEPUSH_TEST_MONGODB_URI` and run `cargo test -p edgepush-tests --test connection`.

use std::time::Duration;

use anyhow::ensure;
use edgepush_core::protocol::{PushItem, ServerFrame};
use edgepush_core::{ConnId, MessageStore, NewMessage, Pusher, UserId};
use edgepush_delivery::{HttpPusher, PushClientConfig};
use edgepush_tests::tokens::push_credential;
use edgepush_tests::{
    Collect, NodeProcess, RedisProbe, TestEnv, TokenIn, WsClient, eventually, mint, stall, unique,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const HOUR: Duration = Duration::from_secs(3600);
const GRACE: Duration = Duration::from_millis(500);

fn seqs(msgs: &[edgepush_core::protocol::MsgFrame]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq).collect()
}

async fn connect_after(
    node: &NodeProcess,
    user: &str,
    after: Option<u64>,
) -> anyhow::Result<WsClient> {
    let token = mint(user, HOUR);
    match WsClient::connect_raw(&node.ws_url(), TokenIn::Header(&token), after).await? {
        Ok(client) => Ok(client),
        Err(refused) => anyhow::bail!("refused with {}: {}", refused.status, refused.body),
    }
}

/// Stores `n` messages `{"n": 1..=n}` for `user` straight into MongoDB, with
/// no hand-off to dispatch (as when the pushes to a node were lost): the
/// test pushes what it wants itself.
async fn store_without_handoff(
    collect: &Collect,
    user: &str,
    n: u64,
) -> anyhow::Result<Vec<edgepush_core::StoredMessage>> {
    let mut stored = Vec::new();
    for i in 1..=n {
        let msg = NewMessage {
            to: vec![UserId::new(user)?],
            data: serde_json::value::RawValue::from_string(json!({ "n": i }).to_string())?.into(),
            source: "test".into(),
            idempotency_key: None,
        };
        stored.extend(collect.store.append(&msg).await?);
    }
    Ok(stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_the_seq_it_names_then_goes_live() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let collect = Collect::start(&env).await?;
    let user = unique("resume");
    // Offline: five messages wait in MongoDB.
    for i in 1..=5 {
        collect.send(&[&user], json!({ "n": i })).await?;
    }
    let mut client = connect_after(&node, &user, Some(2)).await?;
    let replayed = client.collect_msgs(3, stall()).await?;
    ensure!(
        seqs(&replayed) == [3, 4, 5],
        "replayed {:?}",
        seqs(&replayed)
    );
    ensure!(
        replayed[0].data == json!({ "n": 3 }),
        "data {:?}",
        replayed[0].data
    );
    collect.send(&[&user], json!({ "n": 6 })).await?;
    let live = client.collect_msgs(1, stall()).await?;
    ensure!(seqs(&live) == [6], "live {:?}", seqs(&live));
    client.expect_silence(GRACE).await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_after_a_client_resumes_after_its_acked_seq() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let collect = Collect::start(&env).await?;
    let user = unique("acked");
    let mut first = connect_after(&node, &user, None).await?;
    for i in 1..=3 {
        collect.send(&[&user], json!({ "n": i })).await?;
    }
    let got = first.collect_msgs(3, stall()).await?;
    ensure!(seqs(&got) == [1, 2, 3], "got {:?}", seqs(&got));
    first.ack(2).await?;
    // The ack is recorded asynchronously: wait until the store has it.
    let store = collect.store.clone();
    let uid = UserId::new(&user)?;
    eventually("the ack to reach MongoDB", stall(), || {
        let store = store.clone();
        let uid = uid.clone();
        async move { Ok((store.acked(&uid).await? == 2).then_some(())) }
    })
    .await?;
    // An ack only moves forward.
    first.ack(1).await?;
    first.close().await?;
    let mut second = connect_after(&node, &user, None).await?;
    let again = second.collect_msgs(1, stall()).await?;
    ensure!(
        seqs(&again) == [3],
        "after acking 2, resume gave {:?}",
        seqs(&again)
    );
    second.expect_silence(GRACE).await?;
    ensure!(store.acked(&uid).await? == 2, "the ack moved backwards");
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_live_pushes_is_filled_from_the_store() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let collect = Collect::start(&env).await?;
    let user = unique("gap");
    let mut client = connect_after(&node, &user, None).await?;
    // Two messages stored without a hand-off, as when a push to this node
    // was lost; then only the second one is pushed.
    let stored = store_without_handoff(&collect, &user, 2).await?;
    let pusher = HttpPusher::new(PushClientConfig::new(push_credential()))?;
    let report = pusher
        .push(
            &node.push_url(),
            &[PushItem {
                connection_ids: vec![ConnId::new(&client.conn_id)?],
                message: stored[1].clone(),
            }],
        )
        .await?;
    ensure!(
        report.delivered == 1 && report.gone.is_empty(),
        "report {report:?}"
    );
    let got = client.collect_msgs(2, stall()).await?;
    ensure!(
        seqs(&got) == [1, 2],
        "expected the gap filled first, got {:?}",
        seqs(&got)
    );
    // Pushing seq 1 late is a duplicate for this connection: dropped.
    pusher
        .push(
            &node.push_url(),
            &[PushItem {
                connection_ids: vec![ConnId::new(&client.conn_id)?],
                message: stored[0].clone(),
            }],
        )
        .await?;
    client.expect_silence(GRACE).await?;
    env.cleanup().await;
    Ok(())
}

/// While a session waits, the node writes a push of the user's next seq to
/// the socket from the push path itself (`edge-node/src/socket.rs`). Mixed
/// with everything the session still writes or reads on its own (pongs to
/// the client's pings, acks, duplicates it drops, a gap it fills from the
/// store), the client still gets every seq once, in order, in well-formed
/// frames; both paths were taken; and an ack of the last seq counts in
/// full, so the session went on from what the push path wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_written_by_the_push_path_and_by_the_session_interleave_cleanly()
-> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let collect = Collect::start(&env).await?;
    let user = unique("direct");
    let mut client = connect_after(&node, &user, None).await?;
    // The user's stream has its start (nothing stored yet) once the
    // broadcast topic's `subscribed` frame comes: its start job runs next.
    match client.frame(stall()).await? {
        Some(ServerFrame::Subscribed { .. }) => {}
        other => anyhow::bail!("expected the broadcast subscription, got {other:?}"),
    }
    let stored = store_without_handoff(&collect, &user, 60).await?;
    let pusher = HttpPusher::new(PushClientConfig::new(push_credential()))?;
    let conn = ConnId::new(&client.conn_id)?;
    let item = |m: &edgepush_core::StoredMessage| PushItem {
        connection_ids: vec![conn.clone()],
        message: m.clone(),
    };
    for (i, m) in stored.iter().enumerate() {
        // Seq 41 is never pushed: the session reads it when 42 comes.
        if m.seq == 41 {
            continue;
        }
        let mut items = vec![item(m)];
        if i % 10 == 5 {
            // The previous seq again, right behind it: a duplicate.
            items.push(item(&stored[i - 1]));
        }
        let report = pusher.push(&node.push_url(), &items).await?;
        ensure!(report.gone.is_empty(), "report {report:?}");
        if i % 7 == 0 {
            client
                .send_raw(Message::Ping(b"ping".to_vec().into()))
                .await?;
        }
        if i % 9 == 0 {
            client.ack(m.seq).await?;
        }
    }
    let got = client.collect_msgs(60, stall()).await?;
    ensure!(
        seqs(&got) == (1..=60).collect::<Vec<_>>(),
        "got {:?}",
        seqs(&got)
    );
    ensure!(
        got[59].data == json!({ "n": 60 }),
        "data {:?}",
        got[59].data
    );
    client.expect_silence(GRACE).await?;

    let direct = node.metric("edgepush_direct_writes_total").await?;
    let written = node.metric("edgepush_frames_written_total").await?;
    ensure!(
        written == Some(60.0),
        "frames written {written:?}: each seq once"
    );
    ensure!(
        direct.is_some_and(|d| (1.0..60.0).contains(&d)),
        "direct writes {direct:?}: some seqs by the push path, the gap by the session"
    );

    client.ack(60).await?;
    let store = collect.store.clone();
    let uid = UserId::new(&user)?;
    eventually("the ack of seq 60 to reach MongoDB", stall(), || {
        let store = store.clone();
        let uid = uid.clone();
        async move { Ok((store.acked(&uid).await? == 60).then_some(())) }
    })
    .await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_their_codes() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let node = NodeProcess::start_in(&env).await?;
    let user = unique("violations");
    let cases: [(Message, u16, &str); 4] = [
        (Message::text("x".repeat(5000)), 1009, "a 5000-byte frame"),
        (Message::binary(vec![1u8, 2, 3]), 1008, "a binary frame"),
        (Message::text("{not json"), 1008, "malformed JSON"),
        (
            Message::text(r#"{"type":"subscribe"}"#),
            1008,
            "an unknown frame type",
        ),
    ];
    for (frame, code, what) in cases {
        let mut client = connect_after(&node, &user, None).await?;
        client.send_raw(frame).await?;
        let closed = client.closed(stall()).await?;
        ensure!(
            closed == Some(code),
            "{what}: expected close {code}, got {closed:?}"
        );
    }
    // The node is still serving.
    let client = connect_after(&node, &user, None).await?;
    client.close().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_1012_and_removes_routes_and_liveness() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let mut node = NodeProcess::start_in(&env).await?;
    let redis = RedisProbe::connect(&env.redis_url).await?;
    let users = [unique("drain-a"), unique("drain-b")];
    let mut clients = Vec::new();
    for user in &users {
        clients.push(connect_after(&node, user, None).await?);
        ensure!(!redis.routes(user).await?.is_empty(), "{user} has no route");
    }
    ensure!(
        redis.node_url(node.node_id()).await?.is_some(),
        "no liveness key"
    );
    let status = node.terminate().await?;
    ensure!(status.success(), "the node exited with {status}");
    for client in &mut clients {
        let code = client.closed(stall()).await?;
        ensure!(code == Some(1012), "expected close 1012, got {code:?}");
    }
    for user in &users {
        ensure!(
            redis.routes(user).await?.is_empty(),
            "{user}'s route survived the drain"
        );
    }
    ensure!(
        redis.node_url(node.node_id()).await?.is_none(),
        "the liveness key survived the drain"
    );
    env.cleanup().await;
    Ok(())
}
