//! The suites can fail: in-memory backends with one rule broken, each of a
//! kind a real backend could break in silence, and the rules their suites
//! then report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::memory::{MemoryMessageStore, MemoryRouteStore};
use edgepush_core::ports::{Heartbeat, NodeDirectory, RouteError};
use edgepush_core::{
    MessageStore, NewMessage, NodeId, Seq, StoreError, StoredMessage, StreamPosition, UserId,
};

use super::{Backend, message_store, node_directory};

/// A message store whose full pages come back one copy short, as the
/// MongoDB adapter's did when it skipped a document it could not read: a
/// reader takes the short page for the end of the log and stops early.
struct EndsPagesEarly(MemoryMessageStore);

#[async_trait]
impl MessageStore for EndsPagesEarly {
    async fn append(&self, msg: &NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        self.0.append(msg).await
    }

    async fn read_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut page = self.0.read_after(user, after, limit).await?;
        if page.len() == limit && limit > 1 {
            page.pop();
        }
        Ok(page)
    }

    async fn ack(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError> {
        self.0.ack(user, seq).await
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, StoreError> {
        self.0.position(user).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

/// A node directory whose heartbeats always answer `Refreshed`, as one that
/// refreshed the entry without noticing it had expired or been flushed: the
/// node would never register its routes again.
struct NeverRecreates(MemoryRouteStore);

#[async_trait]
impl NodeDirectory for NeverRecreates {
    async fn heartbeat(
        &self,
        node: &NodeId,
        push_url: &str,
        ttl: Duration,
    ) -> Result<Heartbeat, RouteError> {
        self.0.heartbeat(node, push_url, ttl).await?;
        Ok(Heartbeat::Refreshed)
    }

    async fn live_nodes(&self, nodes: &[NodeId]) -> Result<HashMap<NodeId, String>, RouteError> {
        self.0.live_nodes(nodes).await
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), RouteError> {
        self.0.remove_node(node).await
    }
}

#[tokio::test]
async fn a_store_that_ends_pages_early_breaks_the_short_page_rule() {
    let store = Arc::new(EndsPagesEarly(MemoryMessageStore::new()));
    let report = message_store::check(Backend::single(store)).await;
    assert_eq!(report.failed(), ["a_short_page_means_the_end_of_the_log"]);
    let err = report.into_result().unwrap_err().to_string();
    assert!(
        err.contains("MessageStore contract: 1 of 11 rules broken"),
        "{err}"
    );
    assert!(
        err.contains("what a reader that stops at the first short page got"),
        "{err}"
    );
}

#[tokio::test]
async fn a_directory_that_never_reports_recreation_breaks_the_heartbeat_rules() {
    let nodes = Arc::new(NeverRecreates(MemoryRouteStore::new()));
    let report = node_directory::check(Backend::single(nodes)).await;
    assert_eq!(
        report.failed(),
        [
            "the_first_heartbeat_creates_and_later_ones_refresh",
            "a_silent_node_is_dead_once_its_ttl_passed",
            "remove_node_marks_it_dead_now",
        ]
    );
}
