//! Hand-off by direct call: collect runs dispatch in-process.

use std::sync::Arc;

use async_trait::async_trait;
use edgepush_core::{Handoff, HandoffError, StoredMessage, TopicMessage};

use crate::Dispatcher;

/// A [`Handoff`] that dispatches right away, in the caller's process (dev
/// mode, and a collect function deployed without a queue).
///
/// `hand_off` succeeds once every live node holding a recipient's
/// connection took its batch (pushes are retried for a bounded time). It
/// fails when the route store cannot be read or a live node kept refusing:
/// the messages are stored, and collect answers 503 so that its caller
/// retries with the same idempotency key, which dispatches them again
/// without storing anything twice. Nodes that died are not waited for:
/// their clients resume elsewhere from the store.
///
/// `ready` reads the route store (a `PING` to Redis) on every call: with
/// the store down, collect answers 503 before storing anything. (Trusting
/// a success for a second, as the SQS hand-off does for its check, saved
/// one Redis round trip per request but let the requests of that second
/// be stored with Redis down; `tests/tests/push_path.rs`
/// `redis_down_means_503_and_nothing_stored` holds the rule.)
pub struct DirectHandoff {
    dispatcher: Arc<Dispatcher>,
}

impl DirectHandoff {
    /// Dispatches with `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self { dispatcher }
    }

    /// The dispatcher it calls.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }
}

#[async_trait]
impl Handoff for DirectHandoff {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        let report = self
            .dispatcher
            .dispatch(messages)
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        tracing::debug!(
            messages = report.messages,
            delivered = report.delivered,
            offline_users = report.offline_users,
            skipped_dead_routes = report.skipped_dead_routes,
            gone_removed = report.gone_removed,
            retries = report.retries,
            failed_nodes = report.failed_nodes,
            undelivered = report.undelivered.len(),
            "dispatched in-process"
        );
        if !report.undelivered.is_empty() {
            return Err(HandoffError::Unavailable(format!(
                "{} of {} messages could not be pushed to a live node",
                report.undelivered.len(),
                report.messages
            )));
        }
        Ok(())
    }

    async fn hand_off_topics(&self, messages: &[TopicMessage]) -> Result<(), HandoffError> {
        let report = self
            .dispatcher
            .dispatch_topics(messages)
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        tracing::debug!(
            items = report.items,
            node_items = report.node_items,
            nodes = report.nodes,
            delivered = report.delivered,
            without_subscribers = report.without_subscribers,
            retries = report.retries,
            failed_nodes = report.failed_nodes,
            undelivered = report.undelivered.len(),
            "topic messages dispatched in-process"
        );
        if !report.undelivered.is_empty() {
            return Err(HandoffError::Unavailable(format!(
                "{} of {} topic messages could not be pushed to a live node",
                report.undelivered.len(),
                report.items
            )));
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), HandoffError> {
        self.dispatcher
            .routes
            .ping()
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))
    }
}
