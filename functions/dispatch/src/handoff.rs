//! Hand-off by direct call: collect runs dispatch in-process.

use std::sync::Arc;

use async_trait::async_trait;
use edgepush_core::{Handoff, HandoffError, StoredMessage};

use crate::Dispatcher;

/// A [`Handoff`] that dispatches right away, in the caller's process (dev
/// mode, and a collect function deployed without a queue).
///
/// `hand_off` succeeds once the route store has answered, even when some
/// nodes could not be pushed to: the messages are stored, and those
/// connections catch up on resume.
#[derive(Clone)]
pub struct DirectHandoff(pub Arc<Dispatcher>);

#[async_trait]
impl Handoff for DirectHandoff {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        let report = self
            .0
            .dispatch(messages)
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        tracing::debug!(
            messages = report.messages,
            delivered = report.delivered,
            offline_users = report.offline_users,
            skipped_dead_routes = report.skipped_dead_routes,
            gone_removed = report.gone_removed,
            failed_nodes = report.failed_nodes,
            "dispatched in-process"
        );
        Ok(())
    }

    async fn ready(&self) -> Result<(), HandoffError> {
        self.0
            .routes
            .ping()
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))
    }
}
