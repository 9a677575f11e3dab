//! The long-running face of dispatch: an SQS consumer, for deployments
//! without Lambda (docker compose, ECS, Kubernetes). `dispatch consume` runs
//! it ([`serve`]); without an argument the binary serves Lambda invocations.
//!
//! It does for the process what Lambda's event source mapping does for the
//! function, so both deployments behave alike:
//!
//! - it long-polls the queue (`ReceiveMessage`, up to
//!   [`ConsumerConfig::batch_size`] records, waiting up to
//!   [`ConsumerConfig::wait_secs`]);
//! - it hands each batch to [`sqs_handler`], the handler the Lambda runs, as
//!   an [`SqsEvent`] ([`sqs_event`]);
//! - it deletes the records that went through and leaves on the queue those
//!   the handler reports in `batchItemFailures`: they become visible again
//!   after the queue's visibility timeout and reach its dead-letter queue
//!   after `maxReceiveCount` receives, exactly as with
//!   `ReportBatchItemFailures`. A record whose delete fails comes back too;
//!   nodes drop what a client already has by seq, so a redelivery is
//!   harmless.
//!
//! A receive that fails (the queue does not exist yet, the emulator is still
//! starting, the network) is logged and retried with exponential backoff and
//! full jitter; it never stops the consumer. [`ConsumerConfig::pollers`]
//! loops poll at once, so a slow batch does not hold up the queue. On
//! shutdown every loop stops polling, finishes the batch it holds (dispatch
//! and delete) and returns.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use lambda_runtime::{Context, LambdaEvent};
use tokio_util::sync::CancellationToken;

use edgepush_core::config::Vars;

use crate::config::ConfigError;
use crate::{Dispatcher, sqs_handler};

/// Names of the variables read by [`ConsumerConfig::from_lookup`].
pub mod env {
    /// The queue to consume: the one collect sends to.
    pub const QUEUE_URL: &str = "EDGEPUSH_QUEUE_URL";
    /// Records per receive, 1 to 10 (default 10).
    pub const BATCH_SIZE: &str = "EDGEPUSH_CONSUMER_BATCH_SIZE";
    /// Seconds a receive waits for records, 0 to 20 (default 20).
    pub const WAIT_SECS: &str = "EDGEPUSH_CONSUMER_WAIT_SECS";
    /// Receive loops running at once, 1 to 64 (default 2).
    pub const POLLERS: &str = "EDGEPUSH_CONSUMER_POLLERS";
}

/// What the consumer reads and how hard it pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The queue.
    pub queue_url: String,
    /// Records per `ReceiveMessage` (SQS allows 1 to 10).
    pub batch_size: i32,
    /// Long-poll wait of a receive, in seconds (SQS allows 0 to 20); long
    /// polls keep an idle consumer at three requests a minute per loop.
    pub wait_secs: i32,
    /// Receive loops running at once.
    pub pollers: usize,
}

impl ConsumerConfig {
    /// The defaults for `queue_url`: batches of 10, 20 s long polls, two
    /// loops.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            batch_size: 10,
            wait_secs: 20,
            pollers: 2,
        }
    }

    /// Reads [`env`](mod@env) through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(lookup);
        let queue_url = vars.required(env::QUEUE_URL)?;
        if !(queue_url.starts_with("https://") || queue_url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: env::QUEUE_URL,
                reason: "expected an http:// or https:// queue URL".into(),
            });
        }
        let mut config = Self::new(queue_url);
        let number =
            |name: &'static str, low: i64, high: i64| -> Result<Option<i64>, ConfigError> {
                let Some(value) = vars.get(name) else {
                    return Ok(None);
                };
                match value.parse::<i64>() {
                    Ok(n) if (low..=high).contains(&n) => Ok(Some(n)),
                    _ => Err(ConfigError::Invalid {
                        name,
                        reason: format!("expected a whole number from {low} to {high}"),
                    }),
                }
            };
        if let Some(n) = number(env::BATCH_SIZE, 1, 10)? {
            config.batch_size = n as i32;
        }
        if let Some(n) = number(env::WAIT_SECS, 0, 20)? {
            config.wait_secs = n as i32;
        }
        if let Some(n) = number(env::POLLERS, 1, 64)? {
            config.pollers = n as usize;
        }
        Ok(config)
    }
}

/// A receive failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ReceiveMessage on {queue_url} failed: {reason}")]
pub struct ReceiveError {
    /// The queue.
    pub queue_url: String,
    /// The SDK's account of the failure.
    pub reason: String,
}

/// What one receive-and-dispatch round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Records received.
    pub received: usize,
    /// Records handled and deleted from the queue.
    pub deleted: usize,
    /// Records the handler reported failed: left on the queue for
    /// redelivery (or the dead-letter queue).
    pub failed: usize,
    /// Records handled whose delete failed: they will be delivered again.
    pub not_deleted: usize,
}

/// The SQS consumer of one queue.
#[derive(Debug, Clone)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
}

impl Consumer {
    /// A consumer of `config.queue_url` through `client`.
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self { client, config }
    }

    /// A consumer whose client is built from `sdk` (region, credentials,
    /// endpoint).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: ConsumerConfig) -> Self {
        Self::new(Client::new(sdk), config)
    }

    /// Its configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// One round: a receive (a long poll), the handler over what came, the
    /// deletes. An error only when the receive failed; nothing was taken
    /// off the queue then.
    pub async fn poll_once(&self, dispatcher: &Dispatcher) -> Result<PollReport, ReceiveError> {
        let messages = self.receive().await?;
        Ok(self.handle(dispatcher, messages).await)
    }

    /// Runs [`ConsumerConfig::pollers`] receive loops until `shutdown`
    /// resolves; each then finishes the batch it holds and returns.
    pub async fn run(&self, dispatcher: &Dispatcher, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let loops = futures_util::future::join_all(
            (0..self.config.pollers.max(1)).map(|poller| self.poll_loop(dispatcher, poller, &stop)),
        );
        tracing::info!(
            queue_url = %self.config.queue_url,
            pollers = self.config.pollers,
            batch_size = self.config.batch_size,
            wait_secs = self.config.wait_secs,
            "consuming the dispatch queue"
        );
        tokio::pin!(loops);
        tokio::select! {
            _ = &mut loops => {}
            _ = shutdown => {
                tracing::info!("stopping: finishing the batches in hand");
                stop.cancel();
                loops.await;
            }
        }
        tracing::info!("consumer stopped");
    }

    async fn poll_loop(&self, dispatcher: &Dispatcher, poller: usize, stop: &CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = self.receive() => received,
            };
            match received {
                Ok(messages) => {
                    backoff.reset();
                    if !messages.is_empty() {
                        // Not cancelled by shutdown: the batch is dispatched
                        // and deleted before the loop looks at `stop` again.
                        let report = self.handle(dispatcher, messages).await;
                        tracing::debug!(poller, ?report, "batch done");
                    }
                }
                Err(error) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(poller, error = %error, retry_in_ms = wait.as_millis() as u64, "receive failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn receive(&self) -> Result<Vec<Message>, ReceiveError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(self.config.batch_size)
            .wait_time_seconds(self.config.wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| ReceiveError {
                queue_url: self.config.queue_url.clone(),
                reason: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Runs the handler over `messages` and deletes those it did not report.
    async fn handle(&self, dispatcher: &Dispatcher, messages: Vec<Message>) -> PollReport {
        let mut report = PollReport {
            received: messages.len(),
            ..PollReport::default()
        };
        if messages.is_empty() {
            return report;
        }
        let mut context = Context::default();
        context.request_id = messages
            .first()
            .and_then(|m| m.message_id())
            .map(|id| format!("sqs-batch-{id}"))
            .unwrap_or_default();
        let event = sqs_event(&messages);
        let failed: HashSet<String> = match sqs_handler(
            dispatcher,
            LambdaEvent::new(event, context),
        )
        .await
        {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(error) => {
                // The handler reports per record and does not fail as a
                // whole; should it, every record is left for redelivery.
                tracing::error!(error = %error, records = messages.len(), "the SQS handler failed; leaving the batch on the queue");
                report.failed = messages.len();
                return report;
            }
        };
        let mut entries = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            if message.message_id().is_some_and(|id| failed.contains(id)) {
                report.failed += 1;
                continue;
            }
            let Some(handle) = message.receipt_handle() else {
                report.not_deleted += 1;
                continue;
            };
            match DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(handle)
                .build()
            {
                Ok(entry) => entries.push(entry),
                Err(_) => report.not_deleted += 1,
            }
        }
        if entries.is_empty() {
            return report;
        }
        let count = entries.len();
        match self
            .client
            .delete_message_batch()
            .queue_url(&self.config.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) => {
                let refused = output.failed().len();
                if refused > 0 {
                    tracing::warn!(
                        refused,
                        codes = ?output.failed().iter().map(|f| f.code()).collect::<Vec<_>>(),
                        "SQS refused some deletes; those records will be delivered again"
                    );
                }
                report.deleted += count - refused;
                report.not_deleted += refused;
            }
            Err(error) => {
                tracing::warn!(error = %DisplayErrorContext(&error), records = count, "DeleteMessageBatch failed; the records will be delivered again");
                report.not_deleted += count;
            }
        }
        report
    }
}

/// `dispatch consume`: reads [`ConsumerConfig`] through `lookup`, builds the
/// SQS client from `aws` (region, credentials, endpoint), then consumes
/// until `shutdown` resolves.
pub async fn serve(
    dispatcher: &Dispatcher,
    lookup: impl Fn(&str) -> Option<String>,
    aws: &aws_config::SdkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let config = ConsumerConfig::from_lookup(&lookup)?;
    Consumer::from_sdk_config(aws, config)
        .run(dispatcher, shutdown)
        .await;
    Ok(())
}

/// The event Lambda's event source mapping would build from `messages`.
pub fn sqs_event(messages: &[Message]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id().map(str::to_owned);
            record.receipt_handle = m.receipt_handle().map(str::to_owned);
            record.body = m.body().map(str::to_owned);
            record.md5_of_body = m.md5_of_body().map(str::to_owned);
            record.attributes = m
                .attributes()
                .map(|attributes| {
                    attributes
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            record.event_source = Some("aws:sqs".to_owned());
            record
        })
        .collect();
    event
}

/// Exponential backoff with full jitter: 0.2 s doubling to 20 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(20);

    fn next_wait(&mut self) -> Duration {
        let ceiling = Self::BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::CAP);
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(rand::random::<f64>())
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    #[test]
    fn config_defaults_and_bounds() {
        let url = "http://127.0.0.1:4566/000000000000/edgepush-dispatch";
        let config = ConsumerConfig::from_lookup(lookup(&[(env::QUEUE_URL, url)])).unwrap();
        assert_eq!(config, ConsumerConfig::new(url));

        let config = ConsumerConfig::from_lookup(lookup(&[
            (env::QUEUE_URL, url),
            (env::BATCH_SIZE, "3"),
            (env::WAIT_SECS, "0"),
            (env::POLLERS, "1"),
        ]))
        .unwrap();
        assert_eq!(
            (config.batch_size, config.wait_secs, config.pollers),
            (3, 0, 1)
        );

        assert_eq!(
            ConsumerConfig::from_lookup(lookup(&[])),
            Err(ConfigError::Missing(env::QUEUE_URL))
        );
        for (name, value) in [
            (env::QUEUE_URL, "edgepush-dispatch"),
            (env::BATCH_SIZE, "11"),
            (env::BATCH_SIZE, "0"),
            (env::WAIT_SECS, "21"),
            (env::POLLERS, "many"),
        ] {
            let mut pairs = vec![(env::QUEUE_URL, url)];
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            assert!(
                matches!(
                    ConsumerConfig::from_lookup(lookup(&pairs)),
                    Err(ConfigError::Invalid { name: n, .. }) if n == name
                ),
                "{name}={value} must be refused"
            );
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        for _ in 0..40 {
            assert!(backoff.next_wait() <= Backoff::CAP);
        }
        assert_eq!(backoff.failures, 40);
        backoff.reset();
        assert!(backoff.next_wait() <= Backoff::BASE);
    }

    #[test]
    fn an_event_carries_what_the_handler_reads() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body("[]")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .build();
        let event = sqs_event(&[message]);
        let record = &event.records[0];
        assert_eq!(record.message_id.as_deref(), Some("m-1"));
        assert_eq!(record.receipt_handle.as_deref(), Some("rh-1"));
        assert_eq!(record.body.as_deref(), Some("[]"));
        assert_eq!(
            record
                .attributes
                .get("ApproximateReceiveCount")
                .map(String::as_str),
            Some("2")
        );
    }
}
