//! The hand-off from collect to dispatch through an SQS queue.
//!
//! Collect has stored the messages in MongoDB; [`SqsHandoff::hand_off`]
//! returns once SQS has accepted every one of them, so dispatch (fed by the
//! queue's event source mapping) will see them at least once. Bodies are
//! small groups of stored messages ([`crate::body`]); up to ten bodies go in
//! one `SendMessageBatch` call, and several calls run at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use edgepush_core::{Handoff, HandoffError, StoredMessage, TopicMessage};
use futures_util::StreamExt;
use futures_util::stream;

use crate::body;

/// Most entries SQS takes in one `SendMessageBatch` call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// How an [`SqsHandoff`] packs and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsHandoffConfig {
    /// The queue's URL (`EDGEPUSH_QUEUE_URL`). A standard queue: dispatch is
    /// fine with any order and with duplicates (clients drop them by seq).
    pub queue_url: String,
    /// Most stored messages per SQS message. Larger groups mean fewer calls;
    /// smaller ones mean less retried work when one record fails in dispatch.
    pub max_messages_per_body: usize,
    /// Most bytes per SQS message body, and per `SendMessageBatch` call.
    pub max_body_bytes: usize,
    /// How long a successful [`Handoff::ready`] check is trusted, so a busy
    /// collect does not ask SQS before every request.
    pub ready_ttl: Duration,
    /// How many `SendMessageBatch` calls may be in flight at once for one
    /// hand-off (a fan-out to many recipients).
    pub concurrency: usize,
}

impl SqsHandoffConfig {
    /// The defaults for `queue_url`: 10 messages per body, 256 KiB, readiness
    /// trusted for 5 s, 4 calls at once.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            max_messages_per_body: 10,
            max_body_bytes: body::MAX_BODY_BYTES,
            ready_ttl: Duration::from_secs(5),
            concurrency: 4,
        }
    }
}

/// A [`Handoff`] that sends stored messages to an SQS queue.
pub struct SqsHandoff {
    /// The SQS client; cheap to clone, shares one connection pool.
    client: Client,
    /// Limits and the queue.
    config: SqsHandoffConfig,
    /// When `ready` last succeeded; `None` until it has.
    ready_at: Mutex<Option<Instant>>,
}

impl SqsHandoff {
    /// A hand-off to the queue of `config`, through `client`.
    pub fn new(client: Client, config: SqsHandoffConfig) -> Self {
        Self {
            client,
            config,
            ready_at: Mutex::new(None),
        }
    }

    /// A hand-off with an SQS client built from `sdk` (see
    /// [`AwsSettings::load`](crate::AwsSettings::load)).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: SqsHandoffConfig) -> Self {
        Self::new(Client::new(sdk), config)
    }

    /// The queue this hand-off sends to.
    pub fn queue_url(&self) -> &str {
        &self.config.queue_url
    }

    /// Sends the bodies of one `SendMessageBatch` call, then once more those
    /// SQS refused.
    async fn send_batch(&self, bodies: Vec<String>) -> Result<(), HandoffError> {
        let mut pending: Vec<(String, String)> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| (i.to_string(), body))
            .collect();
        for attempt in 1..=2 {
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(body)
                        .build()
                        .map_err(|e| HandoffError::Unavailable(format!("bad SQS entry: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.config.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    HandoffError::Unavailable(format!(
                        "SendMessageBatch to {} failed: {}",
                        self.config.queue_url,
                        crate::sdk_error::describe(&e)
                    ))
                })?;
            let failed = output.failed();
            if failed.is_empty() {
                return Ok(());
            }
            let reasons: Vec<String> = failed
                .iter()
                .map(|f| {
                    format!(
                        "{} ({}{})",
                        f.code(),
                        f.message().unwrap_or("no message"),
                        if f.sender_fault() {
                            ", sender fault"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            if attempt == 2 {
                return Err(HandoffError::Unavailable(format!(
                    "SQS refused {} of the entries twice: {}",
                    failed.len(),
                    reasons.join("; ")
                )));
            }
            tracing::warn!(
                queue_url = %self.config.queue_url,
                failed = failed.len(),
                reasons = %reasons.join("; "),
                "SQS refused some entries; retrying them once"
            );
            let failed_ids: Vec<&str> = failed.iter().map(|f| f.id()).collect();
            pending.retain(|(id, _)| failed_ids.contains(&id.as_str()));
        }
        Ok(())
    }
}

/// Splits `bodies` into `SendMessageBatch` calls: at most ten entries and
/// `max_bytes` bytes of bodies each.
fn batches(bodies: Vec<String>, max_bytes: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut bytes = 0;
    for b in bodies {
        if !current.is_empty()
            && (current.len() == MAX_BATCH_ENTRIES || bytes + b.len() > max_bytes)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += b.len();
        current.push(b);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl SqsHandoff {
    /// Sends `bodies` (of `messages` messages in all), up to ten per call,
    /// several calls at once; `Ok` once SQS accepted every one.
    async fn send_bodies(&self, bodies: Vec<String>, messages: usize) -> Result<(), HandoffError> {
        let calls = batches(bodies, self.config.max_body_bytes);
        let count = calls.len();
        let mut results = stream::iter(calls)
            .map(|bodies| self.send_batch(bodies))
            .buffer_unordered(self.config.concurrency.max(1));
        while let Some(result) = results.next().await {
            // Dropping `results` cancels the calls still in flight: the
            // caller answers 503 and the client retries the whole request
            // (its idempotency key makes that safe).
            result?;
        }
        tracing::debug!(
            queue_url = %self.config.queue_url,
            messages,
            calls = count,
            "handed off to SQS"
        );
        Ok(())
    }
}

#[async_trait]
impl Handoff for SqsHandoff {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        if messages.is_empty() {
            return Ok(());
        }
        let bodies = body::encode(
            messages,
            self.config.max_messages_per_body,
            self.config.max_body_bytes,
        )
        .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        self.send_bodies(bodies, messages.len()).await
    }

    async fn hand_off_topics(&self, messages: &[TopicMessage]) -> Result<(), HandoffError> {
        if messages.is_empty() {
            return Ok(());
        }
        let bodies = body::encode_topics(
            messages,
            self.config.max_messages_per_body,
            self.config.max_body_bytes,
        )
        .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        self.send_bodies(bodies, messages.len()).await
    }

    async fn ready(&self) -> Result<(), HandoffError> {
        if let Ok(guard) = self.ready_at.lock()
            && let Some(at) = *guard
            && at.elapsed() < self.config.ready_ttl
        {
            return Ok(());
        }
        self.client
            .get_queue_attributes()
            .queue_url(&self.config.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| {
                HandoffError::Unavailable(format!(
                    "SQS queue {} is not reachable: {}",
                    self.config.queue_url,
                    crate::sdk_error::describe(&e)
                ))
            })?;
        if let Ok(mut guard) = self.ready_at.lock() {
            *guard = Some(Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_ten_entries_and_the_byte_limit() {
        let bodies: Vec<String> = (0..25).map(|_| "x".repeat(10)).collect();
        let calls = batches(bodies, 1000);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);

        let bodies: Vec<String> = (0..5).map(|_| "x".repeat(400)).collect();
        let calls = batches(bodies, 1000);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    }
}
