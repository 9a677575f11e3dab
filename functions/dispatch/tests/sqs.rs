//! The SQS handler: partial batch failures with a real SQS event payload,
//! and the whole path collect -> SQS -> dispatch through a real SQS
//! emulator (`EDGEPUSH_TEST_AWS_ENDPOINT`, from `scripts/start-localstack`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use edgepush_aws::{AwsSettings, SqsHandoff, SqsHandoffConfig};
use edgepush_core::memory::MemoryRouteStore;
use edgepush_core::protocol::{PushItem, TopicPushItem, TopicPushResult};
use edgepush_core::{
    ConnId, Handoff, MessageId, NodeDirectory, NodeId, PushError, PushReport, Pusher, RouteStore,
    StoredMessage, TopicMessage, TopicName, TopicRoutes,
};
use edgepush_dispatch::{Dispatcher, sqs_handler};
use edgepush_testkit::wait::{Progress, stall};
use edgepush_testkit::{SwitchedRoutes, aws_endpoint, unique, user};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::value::RawValue;

const FIXTURE: &str = include_str!("fixtures/sqs-event.json");
const MALFORMED_ID: &str = "5f3c9a8e-0b1d-4c2e-9f7a-3d6b8e1a2c4f";

/// Records every push; every connection is live.
#[derive(Default)]
struct RecordingPusher {
    items: Mutex<Vec<(String, PushItem)>>,
    /// (push URL, topic, seq) of every topic message pushed, in push order.
    topic_items: Mutex<Vec<(String, String, u64)>>,
}

impl RecordingPusher {
    /// (user, seq, message id, push URL) of every item pushed, sorted.
    fn pushed(&self) -> Vec<(String, u64, String, String)> {
        let items = self.items.lock().expect("recording lock");
        let mut out: Vec<_> = items
            .iter()
            .map(|(url, item)| {
                (
                    item.message.user_id.to_string(),
                    item.message.seq,
                    item.message.id.to_string(),
                    url.clone(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// (push URL, topic, seq) of every topic message pushed, in push order.
    fn topic_pushes(&self) -> Vec<(String, String, u64)> {
        self.topic_items.lock().expect("recording lock").clone()
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, push_url: &str, items: &[PushItem]) -> Result<PushReport, PushError> {
        let delivered = items.iter().map(|i| i.connection_ids.len() as u64).sum();
        self.items
            .lock()
            .expect("recording lock")
            .extend(items.iter().map(|i| (push_url.to_owned(), i.clone())));
        Ok(PushReport {
            delivered,
            gone: Vec::new(),
        })
    }

    async fn push_topics(
        &self,
        push_url: &str,
        items: &[TopicPushItem],
    ) -> Result<TopicPushResult, PushError> {
        let mut recorded = self.topic_items.lock().expect("recording lock");
        let before = recorded.len();
        for item in items {
            if let Some(message) = &item.message {
                recorded.push((push_url.to_owned(), item.topic.to_string(), message.seq));
            }
        }
        Ok(TopicPushResult {
            // This push's messages, not every one recorded so far.
            delivered: (recorded.len() - before) as u64,
            absent: Vec::new(),
        })
    }
}

/// alice on n1 (a1), bob on n2 (b1); both nodes live.
async fn world(
    down: bool,
) -> anyhow::Result<(Dispatcher, Arc<SwitchedRoutes>, Arc<RecordingPusher>)> {
    let memory = Arc::new(MemoryRouteStore::new());
    let ttl = Duration::from_secs(600);
    memory
        .heartbeat(&NodeId::new("n1")?, "http://n1", ttl)
        .await?;
    memory
        .heartbeat(&NodeId::new("n2")?, "http://n2", ttl)
        .await?;
    memory
        .add_route(&user("alice"), &ConnId::new("a1")?, &NodeId::new("n1")?)
        .await?;
    memory
        .add_route(&user("bob"), &ConnId::new("b1")?, &NodeId::new("n2")?)
        .await?;
    let routes = Arc::new(SwitchedRoutes::new(memory.clone()));
    routes.set_down(down);
    let pusher = Arc::new(RecordingPusher::default());
    let dispatcher = Dispatcher {
        routes: routes.clone(),
        nodes: memory,
        pusher: pusher.clone(),
        retry: edgepush_dispatch::RetryPolicy::default(),
        topic_routes: Arc::new(edgepush_core::memory::MemoryTopicRoutes::default()),
    };
    Ok((dispatcher, routes, pusher))
}

fn failures(response: &aws_lambda_events::sqs::SqsBatchResponse) -> BTreeSet<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[tokio::test]
async fn a_malformed_record_fails_alone_and_the_rest_is_dispatched() -> anyhow::Result<()> {
    let (dispatcher, routes, pusher) = world(false).await?;
    let event: SqsEvent = serde_json::from_str(FIXTURE)?;
    assert_eq!(event.records.len(), 3);

    let response = sqs_handler(&dispatcher, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(failures(&response), BTreeSet::from([s(MALFORMED_ID)]));
    assert_eq!(
        pusher.pushed(),
        [
            (s("alice"), 1, s("m-100"), s("http://n1")),
            (s("alice"), 2, s("m-102"), s("http://n1")),
            (s("bob"), 4, s("m-100"), s("http://n2")),
        ],
        "both valid records (an array body and a single-object body) were dispatched"
    );
    assert_eq!(
        routes.routes_of_calls(),
        1,
        "one routes_of for the whole batch"
    );
    // The answer Lambda reads back: camelCase field names.
    let json = serde_json::to_value(&response)?;
    assert_eq!(
        json["batchItemFailures"][0]["itemIdentifier"],
        serde_json::json!(MALFORMED_ID)
    );
    Ok(())
}

#[tokio::test]
async fn route_store_down_fails_every_record() -> anyhow::Result<()> {
    let (dispatcher, _, pusher) = world(true).await?;
    let event: SqsEvent = serde_json::from_str(FIXTURE)?;
    let all: BTreeSet<String> = event
        .records
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();

    let response = sqs_handler(&dispatcher, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    assert_eq!(
        failures(&response),
        all,
        "every record returns to the queue"
    );
    assert_eq!(
        response.batch_item_failures.len(),
        3,
        "each record is reported once"
    );
    assert!(pusher.pushed().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_all_valid_batch_reports_no_failure() -> anyhow::Result<()> {
    let (dispatcher, _, pusher) = world(false).await?;
    let mut event: SqsEvent = serde_json::from_str(FIXTURE)?;
    event
        .records
        .retain(|r| r.message_id.as_deref() != Some(MALFORMED_ID));

    let response = sqs_handler(&dispatcher, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(pusher.pushed().len(), 3);
    Ok(())
}

fn stored(to: &str, seq: u64) -> anyhow::Result<StoredMessage> {
    Ok(StoredMessage {
        user_id: user(to),
        seq,
        id: MessageId::new(format!("m-{seq}"))?,
        data: Arc::from(RawValue::from_string(format!(r#"{{"n":{seq}}}"#))?),
        created_at_ms: 1_767_225_600_000,
    })
}

/// Collect's SQS hand-off to `queue_url`, one stored copy per SQS message
/// (so that one malformed message fails alone).
fn one_copy_per_message(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> SqsHandoff {
    SqsHandoff::new(
        sqs.clone(),
        SqsHandoffConfig {
            max_messages_per_body: 1,
            ..SqsHandoffConfig::new(queue_url)
        },
    )
}

/// A client of the emulator and a queue of the test's own, with a unique
/// name: (client, queue name, queue URL).
async fn fresh_queue(
    prefix: &str,
    visibility_timeout_secs: Option<u32>,
) -> anyhow::Result<(aws_sdk_sqs::Client, String, String)> {
    let config = AwsSettings::for_endpoint(aws_endpoint()?).load().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = unique(prefix);
    let mut create = sqs.create_queue().queue_name(&name);
    if let Some(secs) = visibility_timeout_secs {
        create = create.attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            secs.to_string(),
        );
    }
    let queue_url = create
        .send()
        .await?
        .queue_url()
        .context("no queue URL")?
        .to_owned();
    Ok((sqs, name, queue_url))
}

#[tokio::test]
async fn collect_to_sqs_to_dispatch_end_to_end() -> anyhow::Result<()> {
    let (sqs, name, queue_url) = fresh_queue("edgepush-e2e", None).await?;

    // Collect's side: 12 copies for two users, one SQS message per copy,
    // plus one garbage message put there by hand.
    let sent: Vec<StoredMessage> = (1..=12)
        .map(|seq| stored(if seq % 2 == 0 { "alice" } else { "bob" }, seq))
        .collect::<anyhow::Result<_>>()?;
    let handoff = one_copy_per_message(&sqs, &queue_url);
    handoff.ready().await?;
    handoff.hand_off(&sent).await?;
    let garbage_id = sqs
        .send_message()
        .queue_url(&queue_url)
        .message_body("this is not a stored message")
        .send()
        .await?
        .message_id()
        .context("no message id")?
        .to_owned();

    // What the event source mapping does: receive, and hand the records to
    // the function as an SqsEvent.
    let event = receive_records(&sqs, &name, &queue_url, 13).await?;
    assert_eq!(
        event.records.len(),
        13,
        "12 hand-off messages and the garbage"
    );

    let (dispatcher, routes, pusher) = world(false).await?;
    let response = sqs_handler(&dispatcher, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    assert_eq!(failures(&response), BTreeSet::from([garbage_id]));
    let pushed: BTreeSet<(String, u64)> = pusher
        .pushed()
        .into_iter()
        .map(|(user, seq, _, _)| (user, seq))
        .collect();
    let want: BTreeSet<(String, u64)> = sent
        .iter()
        .map(|m| (m.user_id.to_string(), m.seq))
        .collect();
    assert_eq!(pushed, want, "every handed-off message reached the pusher");
    assert_eq!(routes.routes_of_calls(), 1);

    sqs.delete_queue().queue_url(&queue_url).send().await?;
    Ok(())
}

/// Receives `n` records from `queue_url` as the event source mapping does,
/// shaped as the records of an [`SqsEvent`].
async fn receive_records(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    queue_url: &str,
    n: usize,
) -> anyhow::Result<SqsEvent> {
    let mut records: Vec<SqsMessage> = Vec::new();
    let mut progress = Progress::new(stall());
    while records.len() < n {
        progress.observe(&format!("{n} records on the queue"), records.len())?;
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for m in out.messages() {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id().map(str::to_owned);
            record.receipt_handle = m.receipt_handle().map(str::to_owned);
            record.body = m.body().map(str::to_owned);
            record.md5_of_body = m.md5_of_body().map(str::to_owned);
            record.event_source = Some("aws:sqs".to_owned());
            record.event_source_arn = Some(format!("arn:aws:sqs:us-east-1:000000000000:{name}"));
            record.aws_region = Some("us-east-1".to_owned());
            records.push(record);
        }
    }
    let mut event = SqsEvent::default();
    event.records = records;
    Ok(event)
}

/// Topic messages take the same road: collect hands them to SQS, dispatch
/// reads the records and sends one push per subscribed live node, with
/// every stored copy, and none to a node without subscribers.
#[tokio::test]
async fn topic_messages_go_through_sqs_to_the_nodes_with_subscribers() -> anyhow::Result<()> {
    let (sqs, name, queue_url) = fresh_queue("edgepush-topics", None).await?;
    let news = TopicName::new("news:sport")?;
    let quiet = TopicName::new("news:quiet")?;
    let sent: Vec<TopicMessage> = (1..=5)
        .map(|seq| {
            Ok(TopicMessage {
                topic: if seq == 5 {
                    quiet.clone()
                } else {
                    news.clone()
                },
                seq: if seq == 5 { 1 } else { seq },
                id: MessageId::new(format!("t-{seq}"))?,
                data: Arc::from(RawValue::from_string(format!(r#"{{"n":{seq}}}"#))?),
                created_at_ms: 1_767_225_600_000,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let handoff = one_copy_per_message(&sqs, &queue_url);
    handoff.hand_off_topics(&sent).await?;
    let event = receive_records(&sqs, &name, &queue_url, sent.len()).await?;
    assert_eq!(event.records.len(), sent.len(), "one record per copy");

    let (mut dispatcher, _, pusher) = world(false).await?;
    let topic_routes = Arc::new(edgepush_core::memory::MemoryTopicRoutes::default());
    topic_routes
        .add_topics(&NodeId::new("n1")?, std::slice::from_ref(&news))
        .await?;
    dispatcher.topic_routes = topic_routes;
    let response = sqs_handler(&dispatcher, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    assert_eq!(failures(&response), BTreeSet::new(), "no record failed");
    let pushed = pusher.topic_pushes();
    assert!(
        pushed.iter().all(|(url, _, _)| url == "http://n1"),
        "only the subscribed node gets pushes: {pushed:?}"
    );
    let mut seqs: Vec<u64> = pushed
        .iter()
        .filter(|(_, topic, _)| *topic == news.to_string())
        .map(|(_, _, seq)| *seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4], "every copy of news:sport, once");
    assert!(
        pushed
            .iter()
            .all(|(_, topic, _)| *topic != quiet.to_string()),
        "nothing for a topic without subscribers"
    );

    sqs.delete_queue().queue_url(&queue_url).send().await?;
    Ok(())
}

/// `dispatch consume` on a real queue: the valid records are dispatched and
/// deleted, the malformed one stays on the queue (in flight until its
/// visibility timeout, then redelivered, then dead-lettered), and `run`
/// returns once shut down.
#[tokio::test]
async fn the_consumer_deletes_what_went_through_and_leaves_the_rest() -> anyhow::Result<()> {
    use aws_sdk_sqs::types::QueueAttributeName;
    use edgepush_dispatch::consumer::{Consumer, ConsumerConfig, PollReport};

    let (sqs, _, queue_url) = fresh_queue("edgepush-consumer", Some(600)).await?;
    let sent: Vec<StoredMessage> = (1..=3)
        .map(|seq| stored(if seq == 2 { "bob" } else { "alice" }, seq))
        .collect::<anyhow::Result<_>>()?;
    let handoff = one_copy_per_message(&sqs, &queue_url);
    handoff.hand_off(&sent).await?;
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("{\"not\": \"stored messages\"}")
        .send()
        .await?;

    let (dispatcher, _, pusher) = world(false).await?;
    let consumer = Consumer::new(
        sqs.clone(),
        ConsumerConfig {
            wait_secs: 1,
            pollers: 1,
            ..ConsumerConfig::new(&queue_url)
        },
    );
    let mut total = PollReport::default();
    let mut progress = Progress::new(stall());
    while total.received < 4 {
        progress.observe("4 records received by the consumer", total.received)?;
        let report = consumer.poll_once(&dispatcher).await?;
        total.received += report.received;
        total.deleted += report.deleted;
        total.failed += report.failed;
        total.not_deleted += report.not_deleted;
    }
    assert_eq!(
        total,
        PollReport {
            received: 4,
            deleted: 3,
            failed: 1,
            not_deleted: 0
        }
    );
    let pushed: BTreeSet<(String, u64)> = pusher
        .pushed()
        .into_iter()
        .map(|(user, seq, _, _)| (user, seq))
        .collect();
    assert_eq!(
        pushed,
        BTreeSet::from([(s("alice"), 1), (s("bob"), 2), (s("alice"), 3)])
    );
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let count = |a: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|m| m.get(&a))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        ),
        (s("0"), s("1")),
        "only the malformed record is left, in flight until its visibility timeout"
    );

    // `run` polls until shut down, then returns.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = consumer.run(&dispatcher, async {
        let _ = stopped.await;
    });
    let _ = stop.send(());
    run.await;

    sqs.delete_queue().queue_url(&queue_url).send().await?;
    Ok(())
}
