//! Topics end to end: fan-out over several nodes, resubscription with
//! `after` on another node, refused subscriptions, broadcast.
//!
//! Edge nodes are `edge-node serve` processes on the real Redis and MongoDB
//! wire server; the collect API and dispatch run in the test process;
//! clients are `edgepush-client`s, or raw WebSockets where a test checks
//! frames one by one. Every wait follows progress
//! (`edgepush_tests::wait::until`); no duration is asserted. The fault tests
//! of topics (node crash, Redis flush, MongoDB outage) are in
//! `topic_faults.rs`, presence in `presence.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use edgepush_client::{ClientConfig, TopicName, TopicSubscription};
use edgepush_core::protocol::{ClientFrame, ServerFrame};
use edgepush_tests::fault::{
    Device, Ledger, Tally, Traffic, lock, reporting_collect, stop_devices,
};
use edgepush_tests::topics::{
    metric_sum, produce_topic, start_topic_devices, tally_topic, topic_config, topic_data,
    wait_topic_delivered,
};
use edgepush_tests::{
    Check, NodeProcess, TestEnv, WsClient, mint, mint_with, stall, subscribe_token, unique, until,
};
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);

/// The namespaces of these tests: the default one, `room` (clients may
/// subscribe to what their token's patterns allow), `feed` (client
/// publishes by subscribers).
fn env() -> anyhow::Result<TestEnv> {
    let mut env = TestEnv::shared()?;
    env.namespaces = edgepush_core::Namespaces::from_json(
        r#"{"": {}, "room": {}, "feed": {"client_publish": "subscribers"}}"#,
    )?;
    Ok(env)
}

// 1 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_subscribers_on_three_nodes_get_every_message_once() -> anyhow::Result<()> {
    let env = env()?;
    let result = fan_out(&env).await;
    env.cleanup().await;
    result
}

async fn fan_out(env: &TestEnv) -> anyhow::Result<()> {
    const SUBSCRIBERS: usize = 2000;
    const MESSAGES: u64 = 200;
    let topic = format!("room:{}", unique("live"));
    let (a, b, c) = tokio::try_join!(
        NodeProcess::start_in(env),
        NodeProcess::start_in(env),
        NodeProcess::start_in(env)
    )?;
    let nodes = [&a, &b, &c];
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    let (collect, spy) = reporting_collect(env).await?;
    let users: Vec<String> = (0..SUBSCRIBERS).map(|i| unique(&format!("s{i}"))).collect();
    let devices = start_topic_devices(&users, &urls, &[&topic], true, 50).await?;
    // Every subscription is in place (its `subscribed` frame came).
    until("every subscription in place", stall(), || async {
        let ready = devices
            .iter()
            .filter(|d| {
                lock(&d.received).topic_events.iter().any(|e| {
                    matches!(e, edgepush_client::TopicEvent::Subscribed { topic: t, .. } if t.as_str() == topic)
                })
            })
            .count();
        Ok(if ready == SUBSCRIBERS {
            Check::Done(())
        } else {
            Check::Waiting(ready)
        })
    })
    .await?;
    let items_before = metric_sum(&nodes, "edgepush_topic_items_total").await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    produce_topic(&collect, &topic, 1..=MESSAGES, 4, &ledger, &traffic).await?;
    let missing = wait_topic_delivered(&devices, &topic, &ledger).await;

    let mut tally = Tally::default();
    tally_topic(&mut tally, &devices, &topic, &ledger);
    // At most one push per node per message: counted by dispatch and by the
    // nodes.
    let reports = spy.topic_reports();
    let node_items: usize = reports.iter().map(|r| r.node_items).sum();
    let most_per_message = reports.iter().map(|r| r.nodes).max().unwrap_or(0);
    let mut received = Vec::new();
    for node in nodes {
        received.push(
            node.metric("edgepush_topic_items_total")
                .await?
                .unwrap_or(0.0) as u64,
        );
    }
    let items = metric_sum(&nodes, "edgepush_topic_items_total").await? - items_before;
    eprintln!(
        "fan_out: {SUBSCRIBERS} subscribers on 3 nodes, {MESSAGES} messages: dispatch sent {node_items} \
         node items (at most {most_per_message} nodes per message), nodes received {received:?}"
    );
    stop_devices(devices).await;
    tally.conclude("topic_fan_out")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(
        ledger.count_of(&topic) == MESSAGES as usize,
        "accepted {} of {MESSAGES}",
        ledger.count_of(&topic)
    );
    ensure!(
        reports.len() == MESSAGES as usize
            && reports.iter().all(|r| r.nodes <= 3 && r.node_items <= 3),
        "more than one push per node per message: {reports:?}"
    );
    for (node, got) in nodes.iter().zip(&received) {
        ensure!(
            *got <= MESSAGES,
            "node {} received {got} topic items for {MESSAGES} messages",
            node.node_id()
        );
    }
    ensure!(
        items as usize == node_items,
        "nodes received {items} items, dispatch sent {node_items}"
    );
    Ok(())
}

// 2 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_on_another_node_after_100_missed_gets_exactly_those() -> anyhow::Result<()> {
    let env = env()?;
    let result = resubscribe(&env).await;
    env.cleanup().await;
    result
}

async fn resubscribe(env: &TestEnv) -> anyhow::Result<()> {
    let topic = format!("room:{}", unique("resub"));
    let (a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, _spy) = reporting_collect(env).await?;
    let user = unique("r");
    let token = mint_with(&user, HOUR, &[], &["room:*"]);
    let ledger = Ledger::default();
    let traffic = Traffic::default();

    // On node a: subscribe from the latest, receive 20.
    let mut first = WsClient::connect(&a.ws_url(), &token).await?;
    first
        .send_frame(&ClientFrame::Subscribe {
            topic: topic.clone(),
            after: None,
            token: None,
        })
        .await?;
    expect_subscribed(&mut first, &topic, 0).await?;
    produce_topic(&collect, &topic, 1..=20, 1, &ledger, &traffic).await?;
    let got = topic_msgs(&mut first, &topic, 20).await?;
    ensure!(
        seqs(&got) == (1..=20).collect::<Vec<_>>(),
        "first: {:?}",
        seqs(&got)
    );
    first.close().await?;

    // Away for 100 messages.
    produce_topic(&collect, &topic, 21..=120, 4, &ledger, &traffic).await?;

    // On node b, after 20, while 30 more are published: the missed ones,
    // then the live ones, nothing twice.
    let mut second = WsClient::connect(&b.ws_url(), &token).await?;
    second
        .send_frame(&ClientFrame::Subscribe {
            topic: topic.clone(),
            after: Some(20),
            token: None,
        })
        .await?;
    let live = produce_topic(&collect, &topic, 121..=150, 2, &ledger, &traffic);
    let read = async {
        expect_subscribed(&mut second, &topic, 120).await?;
        topic_msgs(&mut second, &topic, 130).await
    };
    let ((), got) = tokio::try_join!(live, read)?;
    second
        .expect_silence(Duration::from_millis(500))
        .await
        .context("nothing after the 150th")?;
    let want: Vec<u64> = (21..=150).collect();
    ensure!(seqs(&got) == want, "second: {:?}", seqs(&got));
    let accepted = ledger.of(&topic);
    for m in &got {
        let (id, k) = accepted.get(&m.seq).context("a seq never accepted")?;
        ensure!(
            m.id.as_str() == id && m.data == topic_data(&topic, *k),
            "seq {} is wrong",
            m.seq
        );
    }
    Ok(())
}

/// Reads frames until `subscribed` for `topic`; its seq must be at least
/// `at_least` (messages may be published meanwhile).
async fn expect_subscribed(
    client: &mut WsClient,
    topic: &str,
    at_least: u64,
) -> anyhow::Result<u64> {
    loop {
        match client.frame(stall()).await? {
            Some(ServerFrame::Subscribed { topic: t, seq }) if t.as_str() == topic => {
                ensure!(
                    seq >= at_least,
                    "subscribed at {seq}, expected at least {at_least}"
                );
                return Ok(seq);
            }
            Some(ServerFrame::Subscribed { .. }) => {}
            Some(other) => bail!("expected subscribed to {topic}, got {other:?}"),
            None => bail!("no subscribed frame for {topic}"),
        }
    }
}

/// Reads `n` messages of `topic`, following progress; any other frame but
/// `subscribed` is an error.
async fn topic_msgs(
    client: &mut WsClient,
    topic: &str,
    n: usize,
) -> anyhow::Result<Vec<edgepush_client::MsgFrame>> {
    let mut got = Vec::new();
    while got.len() < n {
        match client.frame(stall()).await? {
            Some(ServerFrame::Msg(m)) if m.topic.as_ref().is_some_and(|t| t.as_str() == topic) => {
                got.push(m)
            }
            Some(ServerFrame::Subscribed { .. }) => {}
            Some(other) => bail!(
                "expected a msg of {topic}, got {other:?} after {}",
                got.len()
            ),
            None => bail!(
                "got {} of {n} messages of {topic}: {:?}",
                got.len(),
                seqs(&got)
            ),
        }
    }
    Ok(got)
}

fn seqs(got: &[edgepush_client::MsgFrame]) -> Vec<u64> {
    got.iter().map(|m| m.seq).collect()
}

// 3 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscriptions_get_an_error_frame_and_the_connection_goes_on() -> anyhow::Result<()>
{
    let env = env()?;
    let result = refusals(&env).await;
    env.cleanup().await;
    result
}

async fn refusals(env: &TestEnv) -> anyhow::Result<()> {
    let node = NodeProcess::start(
        edgepush_tests::NodeOptions::new(env).with_env("EDGEPUSH_MAX_SUBSCRIPTIONS", "3"),
    )
    .await?;
    let (collect, _spy) = reporting_collect(env).await?;
    let user = unique("refused");
    let open = format!("room:{}", unique("open"));
    let secret = format!("room:{}", unique("secret"));
    // The token: one topic of its own, a bad one, one in an unknown
    // namespace; patterns for `room:<open>` only.
    let token = mint_with(
        &user,
        HOUR,
        &["feed:mine", "not a topic", "nowhere:x"],
        &[&open],
    );
    let mut ws = WsClient::connect(&node.ws_url(), &token).await?;
    let mut errors = Vec::new();
    let mut subscribed = BTreeSet::new();
    // Connect-time refusals come right after `hello`; the server-side
    // subscriptions that were taken follow.
    while errors.len() < 2 || subscribed.len() < 2 {
        match ws.frame(stall()).await? {
            Some(ServerFrame::Error {
                op, topic, code, ..
            }) => errors.push((op, topic, code)),
            Some(ServerFrame::Subscribed { topic, .. }) => {
                subscribed.insert(topic.to_string());
            }
            other => bail!("expected the connect errors, got {other:?}"),
        }
    }
    ensure!(
        subscribed == BTreeSet::from(["$broadcast".to_owned(), "feed:mine".to_owned()]),
        "{subscribed:?}"
    );
    ensure!(
        errors
            == vec![
                ("connect".into(), "not a topic".into(), "bad_topic".into()),
                (
                    "connect".into(),
                    "nowhere:x".into(),
                    "unknown_namespace".into()
                ),
            ],
        "{errors:?}"
    );

    let cases: Vec<(ClientFrame, &str)> = vec![
        (sub(&secret, None), "forbidden"),
        (sub(&secret, Some("garbage".into())), "bad_token"),
        (
            sub(
                &secret,
                Some(subscribe_token("someone-else", &secret, HOUR)),
            ),
            "bad_token",
        ),
        (
            sub(&secret, Some(subscribe_token(&user, &open, HOUR))),
            "bad_token",
        ),
        (
            sub(
                &secret,
                Some(edgepush_tests::tokens::expired_subscribe_token(
                    &user, &secret,
                )),
            ),
            "bad_token",
        ),
        (sub("nowhere:x", None), "unknown_namespace"),
        (sub("a b", None), "bad_topic"),
        (sub("$broadcast", None), "bad_topic"),
        (sub(&"x".repeat(200), None), "bad_topic"),
        (
            ClientFrame::Unsubscribe {
                topic: open.clone(),
            },
            "not_subscribed",
        ),
        (sub("feed:mine", None), "already_subscribed"),
        (
            ClientFrame::Publish {
                topic: open.clone(),
                data: serde_json::value::RawValue::from_string("1".into())?,
                idempotency_key: None,
            },
            "forbidden",
        ),
    ];
    for (frame, code) in &cases {
        ws.send_frame(frame).await?;
        expect_error(&mut ws, code)
            .await
            .with_context(|| format!("{frame:?}"))?;
    }
    // Allowed: by the pattern, and by a subscribe token; the third is one
    // too many.
    ws.send_frame(&sub(&open, None)).await?;
    expect_subscribed(&mut ws, &open, 0).await?;
    ws.send_frame(&sub(&secret, Some(subscribe_token(&user, &secret, HOUR))))
        .await?;
    expect_subscribed(&mut ws, &secret, 0).await?;
    ws.send_frame(&sub(
        "room:third",
        Some(subscribe_token(&user, "room:third", HOUR)),
    ))
    .await?;
    expect_error(&mut ws, "too_many_subscriptions").await?;

    // The connection works: a topic message, a client publish, a user
    // message, an unsubscription.
    let seq = collect.publish(&secret, json!({"n": 1}), "k1").await?;
    let got = topic_msgs(&mut ws, &secret, 1).await?;
    ensure!(got[0].seq == seq, "{got:?}");
    ws.send_frame(&ClientFrame::Publish {
        topic: "feed:mine".into(),
        data: serde_json::value::RawValue::from_string(r#"{"from":"client"}"#.into())?,
        idempotency_key: Some("p1".into()),
    })
    .await?;
    let mut published = false;
    let mut echoed = false;
    while !(published && echoed) {
        match ws.frame(stall()).await? {
            Some(ServerFrame::Published { topic, seq: 1, .. }) if topic.as_str() == "feed:mine" => {
                published = true
            }
            Some(ServerFrame::Msg(m))
                if m.topic.as_ref().is_some_and(|t| t.as_str() == "feed:mine") =>
            {
                ensure!(m.seq == 1 && m.data == json!({"from": "client"}), "{m:?}");
                echoed = true;
            }
            other => bail!("expected published and the message, got {other:?}"),
        }
    }
    let receipts = collect
        .send(&[user.as_str()], json!({"user": "message"}))
        .await?;
    let m = ws.next_msg(stall()).await?.context("no user message")?;
    ensure!(m.topic.is_none() && m.seq == receipts[0].seq, "{m:?}");
    ws.send_frame(&ClientFrame::Unsubscribe {
        topic: secret.clone(),
    })
    .await?;
    match ws.frame(stall()).await? {
        Some(ServerFrame::Unsubscribed { topic }) if topic.as_str() == secret => {}
        other => bail!("expected unsubscribed, got {other:?}"),
    }
    collect.publish(&secret, json!({"n": 2}), "k2").await?;
    ws.expect_silence(Duration::from_millis(500)).await?;

    // A subscribe token cannot open a connection.
    let refused = WsClient::connect_raw(
        &node.ws_url(),
        edgepush_tests::TokenIn::Header(&subscribe_token(&user, &secret, HOUR)),
        None,
    )
    .await?;
    match refused {
        Err(r) => ensure!(r.status == 401, "{r:?}"),
        Ok(_) => bail!("a subscribe token opened a connection"),
    }
    // A bad resume list is a 400.
    let auth = format!("Bearer {}", mint(&user, HOUR));
    let bad = edgepush_tests::upgrade_probe(
        &format!("{}?resume=nope", node.ws_url()),
        &[("Authorization", &auth)],
    )
    .await?;
    ensure!(bad.0 == 400, "{bad:?}");
    Ok(())
}

fn sub(topic: &str, token: Option<String>) -> ClientFrame {
    ClientFrame::Subscribe {
        topic: topic.to_owned(),
        after: None,
        token,
    }
}

/// Reads the next frame, which must be an error with `code`.
async fn expect_error(ws: &mut WsClient, code: &str) -> anyhow::Result<()> {
    match ws.frame(stall()).await? {
        Some(ServerFrame::Error {
            code: got, message, ..
        }) => {
            ensure!(got == code, "expected {code}, got {got}: {message}");
            Ok(())
        }
        other => bail!("expected an error {code}, got {other:?}"),
    }
}

// 4 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_connection_on_every_node_and_is_replayed() -> anyhow::Result<()> {
    // A Redis of its own: a broadcast goes to every node registered there,
    // and the nodes of the tests running beside this one must not get it.
    let redis = edgepush_tests::RedisServer::start().await?;
    let env = env()?.with_redis(redis.url());
    let result = broadcast(&env).await;
    env.cleanup().await;
    result
}

async fn broadcast(env: &TestEnv) -> anyhow::Result<()> {
    const CONNECTIONS: usize = 90;
    let (a, b, c) = tokio::try_join!(
        NodeProcess::start_in(env),
        NodeProcess::start_in(env),
        NodeProcess::start_in(env)
    )?;
    let urls = [a.ws_url(), b.ws_url(), c.ws_url()];
    let (collect, _spy) = reporting_collect(env).await?;
    let users: Vec<String> = (0..CONNECTIONS).map(|i| unique(&format!("b{i}"))).collect();
    // A third without any topic, a third with one, a third with two.
    let topic = format!("room:{}", unique("side"));
    let mut devices = Vec::with_capacity(CONNECTIONS);
    for (i, user) in users.iter().enumerate() {
        let own = urls[i % 3].clone();
        let list = vec![own.clone()];
        let topics: Vec<&str> = match i % 3 {
            0 => vec![],
            1 => vec![topic.as_str()],
            _ => vec![topic.as_str(), "feed:other"],
        };
        let config = topic_config(user, &list, &topics, &[], Vec::new());
        devices.push(Device::start_with(user, Some(&own), config).await?);
    }
    let broadcast_topic = TopicName::broadcast();
    wait_subscribed(&devices, &broadcast_topic).await?;
    // One device is away for the first broadcasts and comes back with the
    // position it holds.
    let away = devices.pop().context("devices")?;
    let away_user = away.user.clone();
    let position = away
        .control
        .topic_position("$broadcast")
        .context("the broadcast position is known after subscribed")?;
    stop_devices(vec![away]).await;

    let ledger = Ledger::default();
    for k in 1..=5u64 {
        let (status, body) = collect
            .post_to(
                "/v1/broadcast",
                &json!({"data": topic_data("$broadcast", k), "idempotency_key": format!("b-{k}")}),
            )
            .await?;
        ensure!(status == 202, "broadcast answered {status}: {body}");
        ensure!(body["topic"] == "$broadcast", "{body}");
        let seq = body["seq"].as_u64().context("seq")?;
        ledger.record_one("$broadcast", seq, body["id"].as_str().context("id")?, k)?;
    }
    let config = ClientConfig {
        resume: vec![(broadcast_topic.clone(), position)],
        ..topic_config(&away_user, &[urls[2].clone()], &[], &[], Vec::new())
    };
    devices.push(Device::start_with(&away_user, None, config).await?);
    let missing = wait_topic_delivered(&devices, "$broadcast", &ledger).await;
    let mut tally = Tally::default();
    tally_topic(&mut tally, &devices, "$broadcast", &ledger);
    // A broadcast is not a topic message: nothing of `room:...`.
    let strays: usize = devices
        .iter()
        .map(|d| {
            lock(&d.received)
                .topic_msgs
                .iter()
                .filter(|(t, _)| !t.is_broadcast())
                .map(|(_, m)| m.len())
                .sum::<usize>()
        })
        .sum();
    stop_devices(devices).await;
    tally.conclude("broadcast")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(strays == 0, "{strays} topic messages nobody published");
    let stored: BTreeSet<u64> = ledger.of("$broadcast").keys().copied().collect();
    ensure!(stored.len() == 5, "{stored:?}");
    Ok(())
}

/// Waits until every device has its subscription of `topic` in place.
async fn wait_subscribed(devices: &[Device], topic: &TopicName) -> anyhow::Result<()> {
    until(
        &format!("every subscription of {topic}"),
        stall(),
        || async {
            let ready = devices
                .iter()
                .filter(|d| d.control.topic_position(topic.as_str()).is_some())
                .count();
            Ok(if ready == devices.len() {
                Check::Done(())
            } else {
                Check::Waiting(ready)
            })
        },
    )
    .await
}

// 5 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resubscribes_its_own_topics_after_a_reconnect() -> anyhow::Result<()> {
    let env = env()?;
    let result = client_resubscribes(&env).await;
    env.cleanup().await;
    result
}

async fn client_resubscribes(env: &TestEnv) -> anyhow::Result<()> {
    let topic = format!("room:{}", unique("own"));
    let (mut a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, _spy) = reporting_collect(env).await?;
    let user = unique("own");
    let config = topic_config(
        &user,
        &[a.ws_url(), b.ws_url()],
        &[],
        &["room:*"],
        vec![TopicSubscription::new(topic.clone())],
    );
    let device = Device::start_with(&user, Some(&a.ws_url()), config).await?;
    wait_subscribed(std::slice::from_ref(&device), &TopicName::new(&topic)?).await?;
    let ledger = Ledger::default();
    let traffic = Traffic::default();
    produce_topic(&collect, &topic, 1..=10, 2, &ledger, &traffic).await?;
    // Its node dies; the client moves to the other one and subscribes again
    // after the last seq it holds, while messages keep coming.
    let crash = async {
        edgepush_tests::topics::wait_topic_count(&device, &topic, 5).await?;
        a.kill_9();
        anyhow::Ok(())
    };
    tokio::try_join!(
        produce_topic(&collect, &topic, 11..=40, 1, &ledger, &traffic),
        crash
    )?;
    let devices = vec![device];
    let missing = wait_topic_delivered(&devices, &topic, &ledger).await;
    let mut tally = Tally::default();
    tally_topic(&mut tally, &devices, &topic, &ledger);
    let reconnects = devices[0].reconnects();
    stop_devices(devices).await;
    tally.conclude("client_resubscribe")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    ensure!(reconnects >= 1, "the client never reconnected");
    drop(b);
    Ok(())
}
