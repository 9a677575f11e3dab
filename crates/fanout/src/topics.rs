//! From topic items to one push batch per live node with subscribers.
//!
//! [`dispatch_topics`] is two round trips and the pushes:
//!
//! 1. [`TopicRoutes::nodes_of`] for every distinct topic (one round trip);
//! 2. [`NodeDirectory::live_nodes`] for every distinct node (one round trip);
//! 3. [`plan`]: a pure function to one [`TopicNodeBatch`] per live node,
//!    holding one item per (message, node), in the order handed in, so a
//!    topic's messages reach each node in seq order;
//! 4. every node's batch at once, each retried as [`crate::retry`] says.
//!
//! A push that failed for good to a node still live leaves its items in
//! [`TopicDispatchReport::undelivered`]: the caller must have them
//! dispatched again (nodes drop what a subscriber already has by seq).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use edgepush_core::protocol::TopicPushItem;
use edgepush_core::{
    NodeDirectory, NodeId, Pusher, RouteError, TopicMessage, TopicName, TopicRoutes,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::retry::{RetryPolicy, push_with_retries};

/// What one [`dispatch_topics`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDispatchReport {
    /// Items handed in (topic messages and presence events).
    pub items: usize,
    /// Items sent, summed over nodes: one per (item, live node with
    /// subscribers), never one per subscriber.
    pub node_items: usize,
    /// Live nodes pushed to.
    pub nodes: usize,
    /// Frames the nodes queued to local subscribers.
    pub delivered: u64,
    /// Items whose topic had no live node with subscribers: stored, and
    /// replayed to whoever subscribes with `after`.
    pub without_subscribers: usize,
    /// Memberships of nodes that are not live; skipped.
    pub skipped_dead_nodes: usize,
    /// Topics a node reported it has no subscriber of (any more).
    pub absent: usize,
    /// Pushes tried again after a failure.
    pub retries: usize,
    /// Nodes whose push failed for good.
    pub failed_nodes: usize,
    /// Indexes of the items a node still live did not take: they must be
    /// dispatched again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undelivered: Vec<usize>,
}

/// One live node's share of a topic dispatch.
#[derive(Debug, Clone)]
pub struct TopicNodeBatch {
    /// The node.
    pub node: NodeId,
    /// Its push URL.
    pub url: String,
    /// One item per message with subscribers there, in the order handed in.
    pub items: Vec<TopicPushItem>,
    /// For each item, its index in the input.
    pub item_index: Vec<usize>,
}

/// What [`plan`] makes of a topic dispatch.
#[derive(Debug, Clone, Default)]
pub struct TopicPlan {
    /// One batch per live node with subscribers, in first-seen order.
    pub batches: Vec<TopicNodeBatch>,
    /// Items without a live node.
    pub without_subscribers: usize,
    /// Memberships of dead nodes.
    pub skipped_dead_nodes: usize,
}

/// The distinct topics of `items`, in first-seen order.
pub fn topics_of(items: &[TopicPushItem]) -> Vec<TopicName> {
    let mut seen: HashSet<&TopicName> = HashSet::new();
    items
        .iter()
        .filter(|i| seen.insert(&i.topic))
        .map(|i| i.topic.clone())
        .collect()
}

/// Plans a topic dispatch: `topics` are [`topics_of`] `items`, `members`
/// one entry per topic, `live` the push URLs of the live nodes among them.
pub fn plan(
    items: &[TopicPushItem],
    topics: &[TopicName],
    members: &[Vec<NodeId>],
    live: &HashMap<NodeId, String>,
) -> TopicPlan {
    let mut out = TopicPlan::default();
    let mut live_members: HashMap<&TopicName, Vec<&NodeId>> = HashMap::new();
    for (topic, nodes) in topics.iter().zip(members) {
        let mut alive = Vec::with_capacity(nodes.len());
        for node in nodes {
            if live.contains_key(node) {
                if !alive.contains(&node) {
                    alive.push(node);
                }
            } else {
                out.skipped_dead_nodes += 1;
            }
        }
        live_members.insert(topic, alive);
    }
    let mut batch_of: HashMap<&NodeId, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let nodes = live_members
            .get(&item.topic)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if nodes.is_empty() {
            out.without_subscribers += 1;
            continue;
        }
        for &node in nodes {
            let Some(url) = live.get(node) else {
                continue;
            };
            let slot = *batch_of.entry(node).or_insert_with(|| {
                out.batches.push(TopicNodeBatch {
                    node: node.clone(),
                    url: url.clone(),
                    items: Vec::new(),
                    item_index: Vec::new(),
                });
                out.batches.len() - 1
            });
            out.batches[slot].items.push(item.clone());
            out.batches[slot].item_index.push(index);
        }
    }
    out
}

/// Sends `items` to every live node with subscribers of their topics, one
/// item per node; see the module docs. Only a route store failure is an
/// error (the caller retries).
pub async fn dispatch_topics(
    routes: &dyn TopicRoutes,
    nodes: &dyn NodeDirectory,
    pusher: &dyn Pusher,
    retry: &RetryPolicy,
    items: &[TopicPushItem],
) -> Result<TopicDispatchReport, RouteError> {
    let mut report = TopicDispatchReport {
        items: items.len(),
        ..TopicDispatchReport::default()
    };
    if items.is_empty() {
        return Ok(report);
    }
    let topics = topics_of(items);
    let members = routes.nodes_of(&topics).await?;
    if members.len() != topics.len() {
        return Err(RouteError::Backend(format!(
            "nodes_of answered {} entries for {} topics",
            members.len(),
            topics.len()
        )));
    }
    let mut distinct: Vec<NodeId> = members.iter().flatten().cloned().collect();
    distinct.sort();
    distinct.dedup();
    let live = if distinct.is_empty() {
        HashMap::new()
    } else {
        nodes.live_nodes(&distinct).await?
    };
    let plan = plan(items, &topics, &members, &live);
    report.without_subscribers = plan.without_subscribers;
    report.skipped_dead_nodes = plan.skipped_dead_nodes;
    report.nodes = plan.batches.len();
    report.node_items = plan.batches.iter().map(|b| b.items.len()).sum();

    let pushes = plan.batches.iter().map(|batch| {
        push_with_retries(nodes, retry, &batch.node, move || {
            pusher.push_topics(&batch.url, &batch.items)
        })
    });
    for (batch, pushed) in plan.batches.iter().zip(join_all(pushes).await) {
        report.retries += pushed.retries;
        match pushed.result {
            Ok(answer) => {
                report.delivered += answer.delivered;
                report.absent += answer.absent.len();
            }
            Err(error) => {
                report.failed_nodes += 1;
                if pushed.live {
                    report.undelivered.extend(&batch.item_index);
                    tracing::warn!(node = %batch.node, url = %batch.url, items = batch.items.len(), retries = pushed.retries, error = %error, "topic push to a live node failed; its items must be dispatched again");
                } else {
                    tracing::info!(node = %batch.node, url = %batch.url, items = batch.items.len(), error = %error, "topic push to a node that is no longer live failed; its subscribers resume elsewhere");
                }
            }
        }
    }
    report.undelivered.sort_unstable();
    report.undelivered.dedup();
    Ok(report)
}

/// The ports a topic fan-out runs on, bundled.
#[derive(Clone)]
pub struct TopicDispatcher {
    /// Which nodes have subscribers of a topic.
    pub routes: Arc<dyn TopicRoutes>,
    /// Which nodes are alive, and their push URLs.
    pub nodes: Arc<dyn NodeDirectory>,
    /// Sends one node its items.
    pub pusher: Arc<dyn Pusher>,
    /// How failed pushes are retried.
    pub retry: RetryPolicy,
}

impl TopicDispatcher {
    /// Sends `items`; see [`dispatch_topics`].
    pub async fn dispatch(
        &self,
        items: &[TopicPushItem],
    ) -> Result<TopicDispatchReport, RouteError> {
        dispatch_topics(
            &*self.routes,
            &*self.nodes,
            &*self.pusher,
            &self.retry,
            items,
        )
        .await
    }

    /// Sends stored topic messages; see [`dispatch_topics`].
    pub async fn dispatch_messages(
        &self,
        messages: &[TopicMessage],
    ) -> Result<TopicDispatchReport, RouteError> {
        let items: Vec<TopicPushItem> = messages.iter().map(TopicPushItem::message).collect();
        self.dispatch(&items).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use edgepush_core::memory::{MemoryRouteStore, MemoryTopicRoutes};
    use edgepush_core::protocol::{PushItem, TopicPushResult};
    use edgepush_core::{MessageId, PushError, PushReport};
    use serde_json::value::RawValue;

    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::parse_internal(s).unwrap()
    }

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn item(topic: &str, seq: u64) -> TopicPushItem {
        TopicPushItem::message(&TopicMessage {
            topic: t(topic),
            seq,
            id: MessageId::new(format!("m{seq}")).unwrap(),
            data: Arc::from(RawValue::from_string("1".into()).unwrap()),
            created_at_ms: 0,
        })
    }

    #[test]
    fn one_item_per_message_and_live_node() {
        let items = [item("a", 1), item("b", 1), item("a", 2), item("none", 1)];
        let topics = topics_of(&items);
        assert_eq!(topics, vec![t("a"), t("b"), t("none")]);
        let members = vec![vec![n("x"), n("y"), n("dead")], vec![n("y")], vec![]];
        let live: HashMap<NodeId, String> =
            [(n("x"), "http://x".into()), (n("y"), "http://y".into())].into();
        let p = plan(&items, &topics, &members, &live);
        assert_eq!(p.without_subscribers, 1);
        assert_eq!(p.skipped_dead_nodes, 1);
        let shape: Vec<(String, Vec<usize>)> = p
            .batches
            .iter()
            .map(|b| (b.node.to_string(), b.item_index.clone()))
            .collect();
        assert_eq!(
            shape,
            [("x".into(), vec![0, 2]), ("y".into(), vec![0, 1, 2])]
        );
        let seqs: Vec<u64> = p.batches[1]
            .items
            .iter()
            .map(|i| i.message.as_ref().unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 1, 2], "in the order handed in");
    }

    /// Records every topic push; fails the first `fail` of them.
    #[derive(Default)]
    struct Recording {
        pushes: Mutex<Vec<(String, usize)>>,
        fail: Mutex<usize>,
    }

    #[async_trait]
    impl Pusher for Recording {
        async fn push(&self, _: &str, _: &[PushItem]) -> Result<PushReport, PushError> {
            Ok(PushReport::default())
        }

        async fn push_topics(
            &self,
            url: &str,
            items: &[TopicPushItem],
        ) -> Result<TopicPushResult, PushError> {
            {
                let mut fail = self.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(PushError::Unreachable {
                        url: url.into(),
                        reason: "down".into(),
                    });
                }
            }
            self.pushes.lock().unwrap().push((url.into(), items.len()));
            Ok(TopicPushResult {
                delivered: items.len() as u64 * 10,
                absent: Vec::new(),
            })
        }
    }

    #[tokio::test]
    async fn dispatch_pushes_each_live_node_once_and_retries() {
        let routes = Arc::new(MemoryTopicRoutes::default());
        let directory = Arc::new(MemoryRouteStore::new());
        let ttl = Duration::from_secs(60);
        directory.heartbeat(&n("x"), "http://x", ttl).await.unwrap();
        directory.heartbeat(&n("y"), "http://y", ttl).await.unwrap();
        routes.add_topics(&n("x"), &[t("a")]).await.unwrap();
        routes.add_topics(&n("y"), &[t("a"), t("b")]).await.unwrap();
        routes.add_topics(&n("gone"), &[t("a")]).await.unwrap();
        let pusher = Arc::new(Recording::default());
        *pusher.fail.lock().unwrap() = 1;
        let dispatcher = TopicDispatcher {
            routes,
            nodes: directory,
            pusher: pusher.clone(),
            retry: RetryPolicy {
                first_delay: Duration::from_millis(1),
                ..RetryPolicy::default()
            },
        };
        let report = dispatcher
            .dispatch(&[item("a", 1), item("b", 1), item("c", 1)])
            .await
            .unwrap();
        assert_eq!(report.nodes, 2);
        assert_eq!(report.node_items, 3, "a to x and y, b to y");
        assert_eq!(report.delivered, 30);
        assert_eq!(report.without_subscribers, 1);
        assert_eq!(report.skipped_dead_nodes, 1);
        assert_eq!(report.retries, 1);
        assert!(report.undelivered.is_empty());
        let mut pushes = pusher.pushes.lock().unwrap().clone();
        pushes.sort();
        assert_eq!(pushes, [("http://x".into(), 1), ("http://y".into(), 2)]);
    }
}
