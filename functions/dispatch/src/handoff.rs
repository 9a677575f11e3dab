//! Hand-off by direct call: collect runs dispatch in-process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// `ready` reads the route store (a `PING` to Redis) and trusts a success
/// for [`READY_FOR`], so that a busy collect does not add a round trip to
/// every request; a failed hand-off forgets it.
pub struct DirectHandoff {
    dispatcher: Arc<Dispatcher>,
    /// When `ready` last succeeded.
    ready_at: Mutex<Option<Instant>>,
}

/// How long a successful [`Handoff::ready`] check of [`DirectHandoff`] is
/// trusted.
pub const READY_FOR: Duration = Duration::from_secs(1);

impl DirectHandoff {
    /// Dispatches with `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            dispatcher,
            ready_at: Mutex::new(None),
        }
    }

    /// The dispatcher it calls.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Makes the next `ready` read the route store again.
    fn distrust(&self) {
        if let Ok(mut at) = self.ready_at.lock() {
            *at = None;
        }
    }
}

#[async_trait]
impl Handoff for DirectHandoff {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        let report = self.dispatcher.dispatch(messages).await.map_err(|e| {
            self.distrust();
            HandoffError::Unavailable(e.to_string())
        })?;
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
            .map_err(|e| {
                self.distrust();
                HandoffError::Unavailable(e.to_string())
            })?;
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
        if let Ok(at) = self.ready_at.lock()
            && at.is_some_and(|at| at.elapsed() < READY_FOR)
        {
            return Ok(());
        }
        self.dispatcher
            .routes
            .ping()
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        if let Ok(mut at) = self.ready_at.lock() {
            *at = Some(Instant::now());
        }
        Ok(())
    }
}
