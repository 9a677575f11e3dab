//! The Lambda face of dispatch: an event type and a handler over a
//! [`Dispatcher`].
//!
//! The handler takes the messages out of the event and calls
//! [`dispatch_messages`]; another event source (an SQS batch) only needs its
//! own event type and a handler that does the same.

use edgepush_core::{StoredMessage, TopicMessage};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};

use crate::{DispatchReport, Dispatcher, TopicDispatchReport};

/// A direct invocation: the stored messages to deliver (what collect, or
/// anyone holding stored messages, sends).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatchEvent {
    /// Recipient copies, as the message store returned them.
    #[serde(default)]
    pub messages: Vec<StoredMessage>,
    /// Topic copies, as the topic store returned them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_messages: Vec<TopicMessage>,
}

/// Handles a direct invocation. A route store failure, or messages a live
/// node did not take, are an error, so the invocation is retried; pushes to
/// nodes that died are not.
pub async fn handler(
    dispatcher: &Dispatcher,
    event: LambdaEvent<DispatchEvent>,
) -> Result<DispatchReport, lambda_runtime::Error> {
    let (payload, context) = event.into_parts();
    let report = dispatch_messages(dispatcher, &context.request_id, &payload.messages).await?;
    if !report.undelivered.is_empty() {
        return Err(format!(
            "{} of {} messages could not be pushed to a live node",
            report.undelivered.len(),
            report.messages
        )
        .into());
    }
    let topics =
        dispatch_topic_messages(dispatcher, &context.request_id, &payload.topic_messages).await?;
    if !topics.undelivered.is_empty() {
        return Err(format!(
            "{} of {} topic messages could not be pushed to a live node",
            topics.undelivered.len(),
            topics.items
        )
        .into());
    }
    Ok(report)
}

/// Dispatches topic messages and logs the outcome once, whatever the event
/// source.
pub async fn dispatch_topic_messages(
    dispatcher: &Dispatcher,
    request_id: &str,
    messages: &[TopicMessage],
) -> Result<TopicDispatchReport, lambda_runtime::Error> {
    if messages.is_empty() {
        return Ok(TopicDispatchReport::default());
    }
    match dispatcher.dispatch_topics(messages).await {
        Ok(report) => {
            tracing::info!(
                request_id,
                topic_messages = report.items,
                node_items = report.node_items,
                nodes = report.nodes,
                delivered = report.delivered,
                without_subscribers = report.without_subscribers,
                skipped_dead_nodes = report.skipped_dead_nodes,
                retries = report.retries,
                failed_nodes = report.failed_nodes,
                undelivered = report.undelivered.len(),
                "topic messages dispatched"
            );
            Ok(report)
        }
        Err(error) => {
            tracing::error!(
                request_id,
                topic_messages = messages.len(),
                error = %error,
                "topic dispatch failed; the invocation will be retried"
            );
            Err(error.into())
        }
    }
}

/// Dispatches `messages` and logs the outcome once, whatever the event
/// source.
pub async fn dispatch_messages(
    dispatcher: &Dispatcher,
    request_id: &str,
    messages: &[StoredMessage],
) -> Result<DispatchReport, lambda_runtime::Error> {
    match dispatcher.dispatch(messages).await {
        Ok(report) => {
            tracing::info!(
                request_id,
                messages = report.messages,
                delivered = report.delivered,
                offline_users = report.offline_users,
                skipped_dead_routes = report.skipped_dead_routes,
                gone_removed = report.gone_removed,
                retries = report.retries,
                failed_nodes = report.failed_nodes,
                undelivered = report.undelivered.len(),
                "dispatched"
            );
            Ok(report)
        }
        Err(error) => {
            tracing::error!(
                request_id,
                messages = messages.len(),
                error = %error,
                "dispatch failed; the invocation will be retried"
            );
            Err(error.into())
        }
    }
}
