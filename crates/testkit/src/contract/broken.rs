//! The suites can fail: in-memory backends with one rule broken, each of a
//! kind a real backend could break in silence, and the rules their suites
//! then report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::memory::{
    MemoryMessageStore, MemoryRouteStore, MemoryTopicRoutes, MemoryTopicStore,
};
use edgepush_core::ports::{Heartbeat, NodeDirectory, RouteError, TopicRoutes, TopicStore};
use edgepush_core::{
    MessageStore, NewMessage, NewTopicMessage, NodeId, Seq, StoreError, StoredMessage,
    StreamPosition, TopicMessage, TopicName, UserId,
};

use super::{Backend, message_store, node_directory, topic_routes, topic_store};

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

    async fn ack_delivered(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError> {
        self.0.ack_delivered(user, seq).await
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

/// A topic store that drops the idempotency key on its way in, as an
/// adapter that forgot to index it would: every retry of a publish is
/// stored again under a new seq.
struct ForgetsIdempotencyKeys(MemoryTopicStore);

#[async_trait]
impl TopicStore for ForgetsIdempotencyKeys {
    async fn publish(&self, msg: &NewTopicMessage) -> Result<Vec<TopicMessage>, StoreError> {
        let mut msg = msg.clone();
        msg.idempotency_key = None;
        self.0.publish(&msg).await
    }

    async fn read_after(
        &self,
        topic: &TopicName,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<TopicMessage>, StoreError> {
        self.0.read_after(topic, after, limit).await
    }

    async fn last_seq(&self, topic: &TopicName) -> Result<Seq, StoreError> {
        self.0.last_seq(topic).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

/// Topic routes that write only the first 1,000 memberships of a call, as
/// an adapter that sent one bounded command and forgot the rest would: a
/// node re-registering its whole index after a Redis loss stays unknown
/// for most of its topics.
struct WritesOneChunk(MemoryTopicRoutes);

/// The one chunk [`WritesOneChunk`] writes.
const CHUNK: usize = 1000;

#[async_trait]
impl TopicRoutes for WritesOneChunk {
    async fn add_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError> {
        self.0
            .add_topics(node, &topics[..topics.len().min(CHUNK)])
            .await
    }

    async fn remove_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError> {
        self.0.remove_topics(node, topics).await
    }

    async fn nodes_of(&self, topics: &[TopicName]) -> Result<Vec<Vec<NodeId>>, RouteError> {
        self.0.nodes_of(topics).await
    }
}

#[tokio::test]
async fn a_store_that_ends_pages_early_breaks_the_short_page_rule() {
    let store = Arc::new(EndsPagesEarly(MemoryMessageStore::new()));
    let report = message_store::check(Backend::single(store)).await;
    assert_eq!(report.failed(), ["a_short_page_means_the_end_of_the_log"]);
    let err = report.into_result().unwrap_err().to_string();
    assert!(
        err.contains("MessageStore contract: 1 of 12 rules broken"),
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

#[tokio::test]
async fn a_topic_store_that_forgets_idempotency_keys_breaks_the_retry_rules() {
    let store = Arc::new(ForgetsIdempotencyKeys(MemoryTopicStore::new()));
    let report = topic_store::check(Backend::single(store)).await;
    assert_eq!(
        report.failed(),
        [
            "an_idempotent_retry_returns_the_first_copies",
            "racing_duplicates_return_the_same_copies",
        ]
    );
}

#[tokio::test]
async fn topic_routes_that_write_one_chunk_break_the_bulk_rule() {
    let routes = Arc::new(WritesOneChunk(MemoryTopicRoutes::default()));
    let report = topic_routes::check(Backend::single(routes)).await;
    assert_eq!(
        report.failed(),
        ["thousands_of_memberships_are_added_and_removed_in_one_call"]
    );
}
