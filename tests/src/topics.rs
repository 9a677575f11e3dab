//! The topic tests' harness: devices subscribed to topics (real
//! [`edgepush_client::Client`]s, the token's topics or their own), a
//! publisher that retries like the collect API asks, and the verdict per
//! device and topic (the same [`Tally`] as the user-message fault tests).

use anyhow::{Context as _, bail};
use edgepush_client::{ClientConfig, TokenSource, TopicEvent, TopicName, TopicSubscription};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

use crate::fault::{
    Device, GRACE, Ledger, TOKEN_TTL, Tally, Traffic, client_config, lock, post_to_until_accepted,
};
use crate::wait::{Check, stall, until};
use crate::{Collect, NodeProcess, mint_with};

/// The data of message `k` of `topic`.
pub fn topic_data(topic: &str, k: u64) -> Value {
    json!({ "topic": topic, "k": k })
}

/// Posts message `k` to `topic` (key `<topic>-<k>`) until collect answers
/// 202, retrying 503s and transport errors with the same body, as the
/// collect API asks; gives up when no publish of the test was accepted for
/// a stall period. Returns (seq, id).
pub async fn publish_until_accepted(
    collect: &Collect,
    topic: &str,
    k: u64,
    traffic: &Traffic,
) -> anyhow::Result<(u64, String)> {
    let path = format!("/v1/topics/{topic}/messages");
    let body = json!({ "data": topic_data(topic, k), "idempotency_key": format!("{topic}-{k}") });
    let answer = post_to_until_accepted(collect, &path, &body, traffic).await?;
    let seq = answer.get("seq").and_then(Value::as_u64);
    let id = answer.get("id").and_then(Value::as_str);
    let (Some(seq), Some(id)) = (seq, id) else {
        bail!("a 202 without seq and id: {answer}");
    };
    Ok((seq, id.to_owned()))
}

/// Publishes messages `first..=last` to `topic`, `concurrency` at a time,
/// recording each accepted seq in `ledger` (keyed by topic).
pub async fn produce_topic(
    collect: &Collect,
    topic: &str,
    range: std::ops::RangeInclusive<u64>,
    concurrency: usize,
    ledger: &Ledger,
    traffic: &Traffic,
) -> anyhow::Result<()> {
    stream::iter(range)
        .map(|k| async move {
            let (seq, id) = publish_until_accepted(collect, topic, k, traffic)
                .await
                .with_context(|| format!("message {k} to {topic}"))?;
            ledger.record_one(topic, seq, &id, k)
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The config of a device whose token subscribes it to `topics` and lets it
/// subscribe to `patterns`, plus its own `subscriptions`.
pub fn topic_config(
    user: &str,
    nodes: &[String],
    topics: &[&str],
    patterns: &[&str],
    subscriptions: Vec<TopicSubscription>,
) -> ClientConfig {
    ClientConfig {
        token: TokenSource::fixed(mint_with(user, TOKEN_TTL, topics, patterns)),
        topics: subscriptions,
        ..client_config(user, nodes)
    }
}

/// Starts one device per user, `concurrency` at a time, whose tokens
/// subscribe them to `topics`; user `i` lists `nodes[i % nodes.len()]`
/// first (and must start there when `place`). Returns once every device
/// is subscribed to every topic: a token's subscription starts at the
/// topic's latest seq when the node sets it up, after the connection is
/// up, so a message published before that is rightly not delivered.
pub async fn start_topic_devices(
    users: &[String],
    nodes: &[String],
    topics: &[&str],
    place: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<Device>> {
    let devices =
        start_topic_devices_unsubscribed(users, nodes, topics, place, concurrency).await?;
    let names = topics
        .iter()
        .map(|t| TopicName::parse_internal(t).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    until("every device subscribed to its topics", stall(), || async {
        let waiting = devices
            .iter()
            .filter(|d| {
                let received = lock(&d.received);
                !names.iter().all(|name| {
                    received
                        .topic_events
                        .iter()
                        .any(|e| matches!(e, TopicEvent::Subscribed { topic, .. } if topic == name))
                })
            })
            .count();
        Ok(if waiting == 0 {
            Check::Done(())
        } else {
            Check::Waiting(waiting)
        })
    })
    .await?;
    Ok(devices)
}

/// [`start_topic_devices`] without waiting for the subscriptions.
async fn start_topic_devices_unsubscribed(
    users: &[String],
    nodes: &[String],
    topics: &[&str],
    place: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<Device>> {
    stream::iter(users.iter().enumerate())
        .map(|(i, user)| {
            let own = nodes[i % nodes.len()].clone();
            let mut list = vec![own.clone()];
            list.extend(nodes.iter().filter(|n| **n != own).cloned());
            let config = topic_config(user, &list, topics, &[], Vec::new());
            async move {
                Device::start_with(user, place.then_some(own.as_str()), config)
                    .await
                    .with_context(|| format!("starting the client of {user}"))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// How many messages of `topic` `device` holds.
pub fn topic_count(device: &Device, topic: &TopicName) -> usize {
    lock(&device.received)
        .topic_msgs
        .get(topic)
        .map_or(0, Vec::len)
}

/// Waits until `device` holds at least `n` messages of `topic`, as long as
/// they keep coming.
pub async fn wait_topic_count(device: &Device, topic: &str, n: usize) -> anyhow::Result<()> {
    let name = TopicName::parse_internal(topic).map_err(|e| anyhow::anyhow!("{e}"))?;
    until(
        &format!("{} to hold {n} messages of {topic}", device.user),
        stall(),
        || async {
            let count = topic_count(device, &name);
            Ok(if count >= n {
                Check::Done(())
            } else {
                Check::Waiting(count)
            })
        },
    )
    .await
}

/// Waits until every device holds every message accepted for `topic`, as
/// long as messages keep arriving; what was still missing when nothing
/// moved for a stall period.
pub async fn wait_topic_delivered(
    devices: &[Device],
    topic: &str,
    ledger: &Ledger,
) -> Option<String> {
    let name = TopicName::parse_internal(topic).ok()?;
    let want = ledger.count_of(topic);
    let waited = until(
        &format!("every client to hold every message accepted for {topic}"),
        stall(),
        || async {
            let mut short = 0usize;
            let mut held = 0usize;
            for d in devices {
                let count = topic_count(d, &name);
                held += count;
                if count < want {
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
            tokio::time::sleep(GRACE).await;
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

/// Adds every device's messages of `topic` to `tally`.
pub fn tally_topic(tally: &mut Tally, devices: &[Device], topic: &str, ledger: &Ledger) {
    let Ok(name) = TopicName::parse_internal(topic) else {
        tally.problem(format!("{topic} is not a topic"));
        return;
    };
    let accepted = ledger.of(topic);
    for d in devices {
        let received = lock(&d.received);
        let got = received.topic_msgs.get(&name).cloned().unwrap_or_default();
        let label = format!("{}/{topic}", d.user);
        tally.add_stream(
            &label,
            &got,
            d.control.stats().topic_duplicates_dropped,
            &accepted,
            &|_, k| topic_data(topic, k),
        );
        if got.len() < accepted.len() {
            tally.problem(format!(
                "{}: connections {:?}, disconnects {:?}",
                d.user, received.connections, received.disconnects
            ));
        }
    }
}

/// The sum of `name` over `nodes`' metrics.
pub async fn metric_sum(nodes: &[&NodeProcess], name: &str) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for node in nodes {
        sum += node.metric(name).await?.unwrap_or(0.0);
    }
    Ok(sum)
}
