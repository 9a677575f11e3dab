//! The SQS face of dispatch: a handler for the batches an SQS event source
//! mapping delivers, reporting partial batch failures.
//!
//! The event source mapping must have `FunctionResponseTypes =
//! ["ReportBatchItemFailures"]` (see `infra/`): then only the records named
//! in [`SqsBatchResponse::batch_item_failures`] return to the queue, and a
//! record that keeps failing moves to the dead-letter queue after the
//! queue's `maxReceiveCount`.
//!
//! - A record whose body is not stored messages or stored topic messages
//!   ([`edgepush_aws::body`]) is reported alone, and logged: retrying cannot
//!   fix it, so it reaches the dead-letter queue for a person to look at,
//!   without holding up the rest.
//! - Every valid record is dispatched together: the user messages of the
//!   whole batch with one `routes_of`, its topic messages with one
//!   `nodes_of`. When the route store fails, every valid record of that
//!   kind is reported, so SQS redelivers them all.
//! - A push that failed for good to a node that is still live (after the
//!   dispatcher's retries) reports the records whose messages it carried,
//!   so SQS redelivers them; nodes drop what a client already has by seq.
//!   A push to a node that died is not a failure: its clients resume
//!   elsewhere from MongoDB.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use edgepush_aws::body::Body;
use edgepush_core::config::{ConfigError, Vars};
use edgepush_core::{StoredMessage, TopicMessage};
use lambda_runtime::LambdaEvent;

use crate::Dispatcher;
use crate::lambda::{dispatch_messages, dispatch_topic_messages};

/// Names of the variables read by [`EventSource::from_lookup`].
pub mod env {
    /// `sqs` (default) or `direct`.
    pub const DISPATCH_EVENT: &str = "EDGEPUSH_DISPATCH_EVENT";
}

/// Which events the dispatch function is invoked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSource {
    /// SQS batches from the hand-off queue ([`sqs_handler`]); the default.
    #[default]
    Sqs,
    /// Direct invocations with a [`DispatchEvent`](crate::DispatchEvent)
    /// ([`handler`](crate::handler)).
    Direct,
}

impl EventSource {
    /// Reads [`env::DISPATCH_EVENT`] through `lookup`; unset or blank means
    /// [`EventSource::Sqs`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = Vars::new(lookup).get(env::DISPATCH_EVENT);
        match value.map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("sqs") => Ok(EventSource::Sqs),
            Some("direct") => Ok(EventSource::Direct),
            Some(_) => Err(ConfigError::invalid(
                env::DISPATCH_EVENT,
                "must be `sqs` or `direct`",
            )),
        }
    }
}

/// Handles one SQS batch; see the module docs for what is reported failed.
///
/// Never returns `Err` for a bad record or a down route store: those are
/// reported per record, so the records that went through are not redone.
pub async fn sqs_handler(
    dispatcher: &Dispatcher,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let (payload, context) = event.into_parts();
    let request_id = context.request_id.as_str();
    let mut response = SqsBatchResponse::default();

    let mut valid_ids: Vec<String> = Vec::with_capacity(payload.records.len());
    let mut messages: Vec<StoredMessage> = Vec::new();
    // For each message, the index in `valid_ids` of the record it came in.
    let mut record_of: Vec<usize> = Vec::new();
    let mut topic_messages: Vec<TopicMessage> = Vec::new();
    let mut topic_record_of: Vec<usize> = Vec::new();
    for record in payload.records {
        let Some(message_id) = record.message_id.filter(|id| !id.is_empty()) else {
            // SQS always sets it; without one the record cannot be reported,
            // and failing the whole batch would redo the valid records.
            tracing::error!(request_id, "SQS record without a messageId; skipped");
            continue;
        };
        match edgepush_aws::body::decode(record.body.as_deref().unwrap_or_default()) {
            Ok(Body::Messages(batch)) => {
                record_of.extend(std::iter::repeat_n(valid_ids.len(), batch.len()));
                valid_ids.push(message_id);
                messages.extend(batch);
            }
            Ok(Body::Topics(batch)) => {
                topic_record_of.extend(std::iter::repeat_n(valid_ids.len(), batch.len()));
                valid_ids.push(message_id);
                topic_messages.extend(batch);
            }
            Err(error) => {
                let receive_count = record.attributes.get("ApproximateReceiveCount");
                tracing::error!(
                    request_id,
                    message_id = %message_id,
                    receive_count = receive_count.map(String::as_str).unwrap_or("?"),
                    body_bytes = record.body.as_deref().map(str::len).unwrap_or(0),
                    error = %error,
                    "SQS record is not stored messages; reported failed (it reaches the dead-letter queue)"
                );
                response.add_failure(message_id);
            }
        }
    }

    if valid_ids.is_empty() {
        return Ok(response);
    }
    // Records whose messages must come again; every valid record when a
    // route store failed (`dispatch_*` have logged it).
    let mut failed: Vec<usize> = Vec::new();
    if !messages.is_empty() {
        match dispatch_messages(dispatcher, request_id, &messages).await {
            Err(_) => failed.extend(record_of.iter().copied()),
            Ok(report) => failed.extend(
                report
                    .undelivered
                    .iter()
                    .filter_map(|&m| record_of.get(m).copied()),
            ),
        }
    }
    if !topic_messages.is_empty() {
        match dispatch_topic_messages(dispatcher, request_id, &topic_messages).await {
            Err(_) => failed.extend(topic_record_of.iter().copied()),
            Ok(report) => failed.extend(
                report
                    .undelivered
                    .iter()
                    .filter_map(|&m| topic_record_of.get(m).copied()),
            ),
        }
    }
    failed.sort_unstable();
    failed.dedup();
    for record in failed {
        if let Some(id) = valid_ids.get(record) {
            tracing::warn!(request_id, message_id = %id, "this record's messages were not all taken by live nodes; reported failed for redelivery");
            response.add_failure(id.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_source_defaults_to_sqs() {
        let with = |v: Option<&str>| {
            EventSource::from_lookup(|name| {
                assert_eq!(name, env::DISPATCH_EVENT);
                v.map(str::to_owned)
            })
        };
        assert_eq!(with(None), Ok(EventSource::Sqs));
        assert_eq!(with(Some(" ")), Ok(EventSource::Sqs));
        assert_eq!(with(Some("SQS")), Ok(EventSource::Sqs));
        assert_eq!(with(Some("direct")), Ok(EventSource::Direct));
        assert_eq!(
            with(Some("kinesis")),
            Err(ConfigError::invalid(
                env::DISPATCH_EVENT,
                "must be `sqs` or `direct`"
            ))
        );
    }
}
