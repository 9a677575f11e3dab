//! Presence end to end: who is online and who is subscribed, read through
//! the collect API, after connects, disconnects, a node crash (its
//! connections leave within its liveness TTL) and a reconnect storm (the
//! join/leave events stay few). Nodes are `edge-node serve` processes on
//! the real Redis; every wait follows progress.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use edgepush_core::protocol::{ClientFrame, ServerFrame};
use edgepush_tests::fault::{Device, reporting_collect, stop_devices};
use edgepush_tests::topics::{start_topic_devices, topic_config};
use edgepush_tests::{
    Check, Collect, NodeOptions, NodeProcess, TestEnv, WsClient, mint, mint_with, stall, unique,
    until,
};
use serde_json::Value;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

fn env() -> anyhow::Result<TestEnv> {
    let mut env = TestEnv::shared()?;
    env.namespaces = edgepush_core::Namespaces::from_json(
        r#"{"": {}, "room": {"presence": true, "join_leave": true}}"#,
    )?;
    Ok(env)
}

/// A node whose presence is written every `interval_ms`.
async fn node(env: &TestEnv, interval_ms: u64) -> anyhow::Result<NodeProcess> {
    NodeProcess::start(
        NodeOptions::new(env).with_env("EDGEPUSH_PRESENCE_INTERVAL_MS", interval_ms.to_string()),
    )
    .await
}

/// `GET path`, expecting 200.
async fn get(collect: &Collect, path: &str) -> anyhow::Result<Value> {
    let (status, body) = collect.get(path).await?;
    ensure!(status == 200, "GET {path} answered {status}: {body}");
    Ok(body)
}

/// Waits until the topic's (connections, users, nodes) are `want`.
async fn wait_counts(collect: &Collect, topic: &str, want: (u64, u64, u64)) -> anyhow::Result<()> {
    let path = format!("/v1/topics/{topic}/presence");
    until(
        &format!("presence of {topic} to be {want:?}"),
        stall(),
        || async {
            let body = get(collect, &path).await?;
            let got = (
                body["connections"].as_u64().unwrap_or(u64::MAX),
                body["users"].as_u64().unwrap_or(u64::MAX),
                body["nodes"].as_u64().unwrap_or(u64::MAX),
            );
            Ok(if got == want {
                Check::Done(())
            } else {
                Check::Waiting(got)
            })
        },
    )
    .await
}

/// Every member of `topic`, paging `limit` at a time: user -> connections.
async fn members(
    collect: &Collect,
    topic: &str,
    limit: usize,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/topics/{topic}/members?limit={limit}"),
            Some(c) => format!("/v1/topics/{topic}/members?limit={limit}&cursor={c}"),
        };
        let body = get(collect, &path).await?;
        for m in body["members"].as_array().context("members")? {
            let user = m["user_id"].as_str().context("user_id")?.to_owned();
            *out.entry(user).or_default() += m["connections"].as_u64().context("connections")?;
        }
        match body.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
}

// 1 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_connects_disconnects_and_a_node_crash() -> anyhow::Result<()> {
    let env = env()?;
    let result = counts(&env).await;
    env.cleanup().await;
    result
}

async fn counts(env: &TestEnv) -> anyhow::Result<()> {
    let topic = format!("room:{}", unique("p"));
    let (a, mut b) = tokio::try_join!(node(env, 300), node(env, 300))?;
    let (collect, _spy) = reporting_collect(env).await?;
    // 20 users on each node; b's clients know only b, so they stay away
    // when it dies.
    let on_a: Vec<String> = (0..20).map(|i| unique(&format!("pa{i}"))).collect();
    let on_b: Vec<String> = (0..20).map(|i| unique(&format!("pb{i}"))).collect();
    let mut devices_a = start_topic_devices(&on_a, &[a.ws_url()], &[&topic], true, 20).await?;
    let devices_b = start_topic_devices(&on_b, &[b.ws_url()], &[&topic], true, 20).await?;
    wait_counts(&collect, &topic, (40, 40, 2)).await?;
    let all = members(&collect, &topic, 7).await?;
    let want: BTreeSet<String> = on_a.iter().chain(&on_b).cloned().collect();
    ensure!(
        all.keys().cloned().collect::<BTreeSet<_>>() == want,
        "members: {all:?}"
    );
    ensure!(all.values().all(|c| *c == 1), "{all:?}");

    // Who is online: a second connection of one user, without topics.
    let second = WsClient::connect(&b.ws_url(), &mint(&on_a[0], HOUR)).await?;
    let path = format!(
        "/v1/presence?users={},{},nobody-{}",
        on_a[0],
        on_b[0],
        unique("x")
    );
    until("two connections of the first user", stall(), || async {
        let body = get(&collect, &path).await?;
        let users = body["users"].as_array().context("users")?.clone();
        let got: Vec<(bool, u64)> = users
            .iter()
            .map(|u| {
                (
                    u["online"].as_bool().unwrap_or(false),
                    u["connections"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        Ok(if got == vec![(true, 2), (true, 1), (false, 0)] {
            Check::Done(())
        } else {
            Check::Waiting(got)
        })
    })
    .await?;
    let one = get(&collect, &format!("/v1/users/{}/presence", on_a[0])).await?;
    let since = one["since_ms"].as_i64().context("since_ms")?;
    ensure!(since > 1_700_000_000_000, "since {since}");
    second.close().await?;

    // Ten of a's clients leave.
    let leaving: Vec<Device> = devices_a.drain(..10).collect();
    stop_devices(leaving).await;
    wait_counts(&collect, &topic, (30, 30, 2)).await?;

    // b dies: its 20 leave presence once its liveness expires, with no
    // goodbye from it.
    b.kill_9();
    let killed = Instant::now();
    wait_counts(&collect, &topic, (10, 10, 1)).await?;
    let gone_after = killed.elapsed();
    let offline = get(&collect, &format!("/v1/users/{}/presence", on_b[0])).await?;
    ensure!(
        offline["online"] == false && offline["connections"] == 0,
        "{offline}"
    );
    let left = members(&collect, &topic, 100).await?;
    ensure!(
        left.keys().cloned().collect::<BTreeSet<_>>() == on_a[10..].iter().cloned().collect(),
        "{left:?}"
    );
    eprintln!(
        "presence: a crashed node's 20 connections left presence {gone_after:.1?} after the kill (liveness TTL 3 s)"
    );

    // A namespace without presence, a bad topic.
    let (status, body) = collect.get("/v1/topics/other/presence").await?;
    ensure!(
        status == 404 && body["error"]["code"] == "presence_disabled",
        "{status} {body}"
    );
    let (status, _) = collect.get("/v1/topics/a%20b/presence").await?;
    ensure!(status == 400, "{status}");
    let (status, _) = collect
        .get(&format!("/v1/topics/{topic}/members?limit=0"))
        .await?;
    ensure!(status == 400, "{status}");
    stop_devices(devices_a).await;
    stop_devices(devices_b).await;
    drop(a);
    Ok(())
}

// 2 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_events_are_coalesced_in_a_reconnect_storm() -> anyhow::Result<()> {
    let env = env()?;
    let result = storm(&env).await;
    env.cleanup().await;
    result
}

/// Every `presence` frame of `topic` the watcher reads until `stop`: (joined, left) each.
type Events = Vec<(Vec<String>, Vec<String>)>;

async fn storm(env: &TestEnv) -> anyhow::Result<()> {
    const STORM: usize = 100;
    let topic = format!("room:{}", unique("storm"));
    let a = node(env, 1000).await?;
    let (collect, _spy) = reporting_collect(env).await?;
    let watcher_user = unique("watcher");
    let mut watcher = WsClient::connect(
        &a.ws_url(),
        &mint_with(&watcher_user, HOUR, &[], &["room:*"]),
    )
    .await?;
    watcher
        .send_frame(&ClientFrame::Subscribe {
            topic: topic.clone(),
            after: None,
            token: None,
        })
        .await?;

    // The watcher's own join comes first.
    let mut events: Events = Vec::new();
    read_events(&mut watcher, &topic, &mut events, |e| {
        e.iter().any(|(j, _)| j.contains(&watcher_user))
    })
    .await?;
    events.clear();

    // One user joins, then leaves: one event each.
    let single = unique("single");
    let config = topic_config(&single, &[a.ws_url()], &[&topic], &[], Vec::new());
    let one = Device::start_with(&single, None, config).await?;
    read_events(&mut watcher, &topic, &mut events, |e| {
        e.iter().any(|(j, _)| j.contains(&single))
    })
    .await?;
    stop_devices(vec![one]).await;
    read_events(&mut watcher, &topic, &mut events, |e| {
        e.iter().any(|(_, l)| l.contains(&single))
    })
    .await?;
    ensure!(
        events
            == vec![
                (vec![single.clone()], vec![]),
                (vec![], vec![single.clone()])
            ],
        "{events:?}"
    );

    // A hundred join.
    let users: Vec<String> = (0..STORM).map(|i| unique(&format!("st{i}"))).collect();
    let mut devices = start_topic_devices(&users, &[a.ws_url()], &[&topic], true, 25).await?;
    wait_counts(&collect, &topic, (STORM as u64 + 1, STORM as u64 + 1, 1)).await?;
    events.clear();
    read_events(&mut watcher, &topic, &mut events, |e| {
        let joined: BTreeSet<&String> = e.iter().flat_map(|(j, _)| j).collect();
        joined.len() == STORM
    })
    .await?;
    let join_events = events.len();

    // The storm: every client drops its connection and comes back at once.
    events.clear();
    let before: Vec<usize> = devices.iter().map(Device::connections).collect();
    futures_util::future::try_join_all(devices.iter_mut().map(Device::restart)).await?;
    until("every client back", stall(), || async {
        let back = devices
            .iter()
            .zip(&before)
            .filter(|(d, b)| d.connections() > **b)
            .count();
        Ok(if back == STORM {
            Check::Done(())
        } else {
            Check::Waiting(back)
        })
    })
    .await?;
    wait_counts(&collect, &topic, (STORM as u64 + 1, STORM as u64 + 1, 1)).await?;
    // What the storm sent, until a quiet interval.
    drain_events(&mut watcher, &topic, &mut events).await?;
    let changes = 2 * STORM;
    let named: usize = events.iter().map(|(j, l)| j.len() + l.len()).sum();
    eprintln!(
        "presence storm: {STORM} joins sent {join_events} events; {STORM} reconnects ({changes} connection changes) sent {} events naming {named} users",
        events.len()
    );
    // Per user, the last word is "joined" (or nothing: left and back
    // within one interval).
    let mut last: BTreeMap<&String, bool> = BTreeMap::new();
    for (joined, left) in &events {
        for u in left {
            last.insert(u, false);
        }
        for u in joined {
            last.insert(u, true);
        }
    }
    ensure!(
        last.values().all(|joined| *joined),
        "a user left for good: {events:?}"
    );
    ensure!(
        named <= changes,
        "{named} users named for {changes} changes"
    );
    ensure!(
        events.len() * 4 <= changes,
        "{} events for {changes} connection changes: not coalesced",
        events.len()
    );
    stop_devices(devices).await;
    Ok(())
}

/// Reads `presence` frames of `topic` into `events` until `done` holds.
async fn read_events(
    watcher: &mut WsClient,
    topic: &str,
    events: &mut Events,
    done: impl Fn(&Events) -> bool,
) -> anyhow::Result<()> {
    while !done(events) {
        match watcher.frame(stall()).await? {
            Some(frame) => note(frame, topic, events)?,
            None => bail!("no presence event for {:?}; got {events:?}", stall()),
        }
    }
    Ok(())
}

/// Reads `presence` frames until none came for a while (several presence
/// intervals).
async fn drain_events(
    watcher: &mut WsClient,
    topic: &str,
    events: &mut Events,
) -> anyhow::Result<()> {
    while let Some(frame) = watcher.frame(Duration::from_secs(3)).await? {
        note(frame, topic, events)?;
    }
    Ok(())
}

fn note(frame: ServerFrame, topic: &str, events: &mut Events) -> anyhow::Result<()> {
    match frame {
        ServerFrame::Presence {
            topic: t,
            joined,
            left,
        } if t.as_str() == topic => {
            events.push((
                joined.iter().map(ToString::to_string).collect(),
                left.iter().map(ToString::to_string).collect(),
            ));
            Ok(())
        }
        ServerFrame::Subscribed { .. } => Ok(()),
        other => bail!("expected presence events, got {other:?}"),
    }
}
