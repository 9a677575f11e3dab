//! `SqsHandoff` against a real SQS emulator (LocalStack, or moto):
//! `EDGEPUSH_TEST_AWS_ENDPOINT` names it (`scripts/start-localstack`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::Client;
use edgepush_aws::{SqsHandoff, SqsHandoffConfig, body};
use edgepush_core::{Handoff, HandoffError, MessageId, StoredMessage, UserId};
use edgepush_testkit::wait::{Progress, stall};
use serde_json::value::RawValue;

fn stored(user: &str, seq: u64) -> StoredMessage {
    StoredMessage {
        user_id: UserId::new(user).expect("valid user id"),
        seq,
        id: MessageId::new(format!("m{seq}")).expect("valid message id"),
        data: Arc::from(
            RawValue::from_string(format!(r#"{{"n":{seq},"text":"héllo"}}"#)).expect("json"),
        ),
        created_at_ms: 1_700_000_000_000 + seq as i64,
    }
}

async fn new_queue(client: &Client) -> anyhow::Result<String> {
    let out = client
        .create_queue()
        .queue_name(common::unique("edgepush-test"))
        .send()
        .await
        .context("CreateQueue")?;
    out.queue_url().map(str::to_owned).context("no queue URL")
}

/// Receives until `want` stored messages came (giving up when none has come
/// for the stall period, see `edgepush_testkit::wait`); returns them and how
/// many SQS messages carried them. Deletes what it receives.
async fn receive(
    client: &Client,
    queue_url: &str,
    want: usize,
) -> anyhow::Result<(Vec<StoredMessage>, usize)> {
    let mut got = Vec::new();
    let mut sqs_messages = 0;
    let mut progress = Progress::new(stall());
    while got.len() < want {
        progress.observe(&format!("{want} stored messages on the queue"), got.len())?;
        let out = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .context("ReceiveMessage")?;
        for m in out.messages() {
            sqs_messages += 1;
            let text = m.body().context("message without a body")?;
            assert!(text.len() <= body::MAX_BODY_BYTES);
            match body::decode(text).context("body is not stored messages")? {
                body::Body::Messages(messages) => got.extend(messages),
                body::Body::Topics(t) => anyhow::bail!("unexpected topic body of {}", t.len()),
            }
            if let Some(handle) = m.receipt_handle() {
                client
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .context("DeleteMessage")?;
            }
        }
    }
    Ok((got, sqs_messages))
}

fn keys(messages: &[StoredMessage]) -> BTreeSet<(String, u64)> {
    messages
        .iter()
        .map(|m| (m.user_id.to_string(), m.seq))
        .collect()
}

#[tokio::test]
async fn sends_25_stored_messages_and_all_25_arrive() -> anyhow::Result<()> {
    let client = Client::new(&common::sdk_config().await);
    let queue_url = new_queue(&client).await?;
    let messages: Vec<StoredMessage> = (1..=25)
        .map(|seq| stored(&format!("user-{}", seq % 4), seq))
        .collect();

    let handoff = SqsHandoff::new(client.clone(), SqsHandoffConfig::new(&queue_url));
    handoff.ready().await?;
    handoff.hand_off(&messages).await?;

    let (got, sqs_messages) = receive(&client, &queue_url, 25).await?;
    assert_eq!(got.len(), 25, "every stored message arrived once");
    assert_eq!(keys(&got), keys(&messages));
    for m in &got {
        let sent = messages
            .iter()
            .find(|s| s.user_id == m.user_id && s.seq == m.seq)
            .context("unexpected message")?;
        assert_eq!(m, sent, "arrived unchanged");
    }
    assert_eq!(
        sqs_messages, 3,
        "grouped ten stored messages per SQS message"
    );
    Ok(())
}

#[tokio::test]
async fn one_stored_message_per_entry_needs_several_batch_calls() -> anyhow::Result<()> {
    let client = Client::new(&common::sdk_config().await);
    let queue_url = new_queue(&client).await?;
    let messages: Vec<StoredMessage> = (1..=25).map(|seq| stored("solo", seq)).collect();

    let config = SqsHandoffConfig {
        max_messages_per_body: 1,
        ..SqsHandoffConfig::new(&queue_url)
    };
    SqsHandoff::new(client.clone(), config)
        .hand_off(&messages)
        .await?;

    let (got, sqs_messages) = receive(&client, &queue_url, 25).await?;
    assert_eq!(keys(&got), keys(&messages));
    assert_eq!(got.len(), 25);
    assert_eq!(sqs_messages, 25, "one SQS message per stored message");
    Ok(())
}

#[tokio::test]
async fn a_missing_queue_is_not_ready_and_refuses_hand_offs() -> anyhow::Result<()> {
    let client = Client::new(&common::sdk_config().await);
    // A real queue's URL with another name: same account, no such queue.
    let real = new_queue(&client).await?;
    let (base, _) = real.rsplit_once('/').context("queue URL without a path")?;
    let missing = format!("{base}/{}", common::unique("edgepush-missing"));

    let handoff = SqsHandoff::new(client.clone(), SqsHandoffConfig::new(&missing));
    let err = handoff.ready().await.expect_err("no such queue");
    let HandoffError::Unavailable(reason) = &err;
    assert!(reason.contains(&missing), "names the queue: {reason}");

    let err = handoff
        .hand_off(&[stored("u", 1)])
        .await
        .expect_err("nothing can be sent to a missing queue");
    assert!(matches!(err, HandoffError::Unavailable(_)));

    // The existing queue is ready, and the answer is cached: deleting the
    // queue does not make the next check fail within the TTL.
    let ready = SqsHandoff::new(
        client.clone(),
        SqsHandoffConfig {
            ready_ttl: Duration::from_secs(3600),
            ..SqsHandoffConfig::new(&real)
        },
    );
    ready.ready().await?;
    client.delete_queue().queue_url(&real).send().await?;
    ready.ready().await?;
    // Without the cache the deleted queue is reported.
    let uncached = SqsHandoff::new(
        client,
        SqsHandoffConfig {
            ready_ttl: Duration::ZERO,
            ..SqsHandoffConfig::new(&real)
        },
    );
    assert!(
        uncached.ready().await.is_err(),
        "deleted queue is not ready"
    );
    Ok(())
}

#[tokio::test]
async fn an_entry_sqs_refuses_is_retried_alone_then_reported() -> anyhow::Result<()> {
    let client = Client::new(&common::sdk_config().await);
    // A queue that refuses bodies over 1 KiB: SQS answers the batch with
    // the big entry in `Failed` and the small one in `Successful`.
    let queue_url = client
        .create_queue()
        .queue_name(common::unique("edgepush-small"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await?
        .queue_url()
        .context("no queue URL")?
        .to_owned();
    let small = stored("small", 1);
    let mut big = stored("big", 2);
    big.data = Arc::from(RawValue::from_string(format!("\"{}\"", "x".repeat(2000)))?);

    let handoff = SqsHandoff::new(
        client.clone(),
        SqsHandoffConfig {
            max_messages_per_body: 1,
            ..SqsHandoffConfig::new(&queue_url)
        },
    );
    let err = handoff
        .hand_off(&[small.clone(), big])
        .await
        .expect_err("the big entry is refused twice");
    let HandoffError::Unavailable(reason) = &err;
    assert!(reason.contains("InvalidParameterValue"), "{reason}");
    if !reason.contains("twice") {
        // moto refuses the whole call instead of the one entry (SQS and
        // LocalStack refuse the entry): nothing was queued.
        assert!(reason.contains("SendMessageBatch"), "{reason}");
        return Ok(());
    }

    // The retry resent only the refused entry: the small message is in the
    // queue once, not twice.
    let (got, _) = receive(&client, &queue_url, 1).await?;
    assert_eq!(got, vec![small]);
    let more = client
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await?;
    assert!(more.messages().is_empty(), "nothing else was queued");
    Ok(())
}
