//! Routing and fan-out: from stored messages to one push batch per live node.
//!
//! [`Dispatcher::dispatch`] is two steps:
//!
//! 1. [`plan`]: a pure function from the messages, their recipients' routes
//!    and the live nodes to one [`NodeBatch`] per live node (unit-tested
//!    without I/O);
//! 2. the pushes: every node's batch at once, each retried with backoff
//!    while the push fails for a reason that may pass (the node cannot be
//!    reached, times out, answers 5xx or 429) and the node is still live,
//!    for at most [`RetryPolicy::give_up_after`].
//!
//! A "node" is anything with a node directory entry: an edge node (its push
//! API's URL) or an API Gateway WebSocket API stage, registered by the
//! connections function as the virtual node `apigw-<apiId>-<stage>` with its
//! management endpoint as the URL. Both get one batch here; the
//! [`ManagedEdgePusher`](crate::ManagedEdgePusher) posts an API Gateway batch
//! one connection at a time, and reports `GoneException`s as gone
//! connections, whose routes are removed below like any other. The pusher
//! splits a batch into requests that fit the node's body cap and sends them
//! in order, so one user's messages keep their seq order.
//!
//! A push that failed for good to a node that is still live leaves its
//! messages in [`DispatchReport::undelivered`]: the caller must have them
//! dispatched again (the SQS handler reports their records failed, so the
//! queue redelivers; a direct hand-off fails, so collect answers 503 and its
//! caller retries with the same idempotency key). Nodes dedupe by seq, so a
//! second delivery is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use edgepush_core::protocol::PushItem;
use edgepush_core::{
    ConnId, NodeDirectory, NodeId, PushReport, Pusher, RouteError, RouteStore, StoredMessage,
    TopicMessage, TopicRoutes, UserId,
};
pub use edgepush_fanout::{RetryPolicy, TopicDispatchReport, is_retryable};
use edgepush_fanout::{TopicDispatcher, push_with_retries};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

/// Routes stored messages to the edge nodes holding their recipients'
/// connections. Holds only trait objects, so the same code runs against
/// Redis and HTTP in production and in-memory fakes in tests and dev mode.
#[derive(Clone)]
pub struct Dispatcher {
    /// Where each user's connections are (user -> connection -> node).
    pub routes: Arc<dyn RouteStore>,
    /// Which nodes are alive and their push URLs: a route on a dead node is
    /// skipped without touching it (the node's routes expire on their own).
    pub nodes: Arc<dyn NodeDirectory>,
    /// Sends one batch to one node.
    pub pusher: Arc<dyn Pusher>,
    /// How failed pushes are retried.
    pub retry: RetryPolicy,
    /// Which nodes have subscribers of a topic (topic -> nodes).
    pub topic_routes: Arc<dyn TopicRoutes>,
}

/// What one [`Dispatcher::dispatch`] call did; returned by the Lambda
/// handler and logged by callers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchReport {
    /// Stored messages (recipient copies) handed in.
    pub messages: usize,
    /// Frames the nodes queued to live connections.
    pub delivered: u64,
    /// Distinct recipients without a route on a live node: their messages
    /// wait in MongoDB until they connect.
    pub offline_users: usize,
    /// Routes pointing at nodes that are not alive; skipped, not removed.
    pub skipped_dead_routes: usize,
    /// Routes removed because their node said the connection is gone.
    pub gone_removed: usize,
    /// Pushes tried again after a failure.
    #[serde(default)]
    pub retries: usize,
    /// Nodes whose push failed for good.
    pub failed_nodes: usize,
    /// Indexes (into the messages handed in) of the messages that a node
    /// still live did not take: they must be dispatched again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undelivered: Vec<usize>,
}

/// One live node's share of a dispatch.
#[derive(Debug, Clone)]
pub struct NodeBatch {
    /// The node.
    pub node: NodeId,
    /// Its push URL.
    pub url: String,
    /// One item per message with recipients there, in the order handed in.
    pub items: Vec<PushItem>,
    /// For each item, the index of its message in the input.
    pub message_index: Vec<usize>,
}

/// What [`plan`] makes of a dispatch.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One batch per live node with recipients, in first-seen order.
    pub batches: Vec<NodeBatch>,
    /// (node, connection) -> user, to turn the connections a node reports
    /// gone into routes to remove.
    pub owners: HashMap<(NodeId, ConnId), UserId>,
    /// Distinct recipients without a live route.
    pub offline_users: usize,
    /// Routes on nodes that are not alive.
    pub skipped_dead_routes: usize,
}

/// The distinct recipients of `messages`, in first-seen order.
pub fn recipients(messages: &[StoredMessage]) -> Vec<UserId> {
    let mut seen: HashSet<&UserId> = HashSet::new();
    messages
        .iter()
        .filter(|m| seen.insert(&m.user_id))
        .map(|m| m.user_id.clone())
        .collect()
}

/// The distinct nodes of `routes`, in first-seen order.
pub fn nodes_of(routes: &[Vec<(ConnId, NodeId)>]) -> Vec<NodeId> {
    let mut seen: HashSet<&NodeId> = HashSet::new();
    routes
        .iter()
        .flatten()
        .filter(|(_, node)| seen.insert(node))
        .map(|(_, node)| node.clone())
        .collect()
}

/// Plans a dispatch: `users` are [`recipients`] of `messages`, `routes` one
/// entry per user, `live` the push URLs of the live nodes among them.
pub fn plan(
    messages: &[StoredMessage],
    users: &[UserId],
    routes: &[Vec<(ConnId, NodeId)>],
    live: &HashMap<NodeId, String>,
) -> Plan {
    let mut out = Plan::default();
    // Per recipient: its connections on live nodes, grouped by node.
    let mut by_user: HashMap<&UserId, Vec<(&NodeId, Vec<ConnId>)>> = HashMap::new();
    for (user, user_routes) in users.iter().zip(routes) {
        let mut by_node: Vec<(&NodeId, Vec<ConnId>)> = Vec::new();
        for (conn, node) in user_routes {
            if !live.contains_key(node) {
                out.skipped_dead_routes += 1;
                continue;
            }
            out.owners
                .insert((node.clone(), conn.clone()), user.clone());
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, conns)) => conns.push(conn.clone()),
                None => by_node.push((node, vec![conn.clone()])),
            }
        }
        if by_node.is_empty() {
            out.offline_users += 1;
        }
        by_user.insert(user, by_node);
    }

    // One item per (message, node), one batch per node.
    let mut batch_of: HashMap<&NodeId, usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        let Some(nodes) = by_user.get(&message.user_id) else {
            continue;
        };
        for (node, conns) in nodes {
            let Some(url) = live.get(*node) else {
                continue;
            };
            let slot = *batch_of.entry(node).or_insert_with(|| {
                out.batches.push(NodeBatch {
                    node: (*node).clone(),
                    url: url.clone(),
                    items: Vec::new(),
                    message_index: Vec::new(),
                });
                out.batches.len() - 1
            });
            let batch = &mut out.batches[slot];
            batch.items.push(PushItem {
                connection_ids: conns.clone(),
                message: message.clone(),
            });
            batch.message_index.push(index);
        }
    }
    out
}

impl Dispatcher {
    /// A dispatcher with the default [`RetryPolicy`].
    pub fn new(
        routes: Arc<dyn RouteStore>,
        nodes: Arc<dyn NodeDirectory>,
        pusher: Arc<dyn Pusher>,
        topic_routes: Arc<dyn TopicRoutes>,
    ) -> Self {
        Self {
            routes,
            nodes,
            pusher,
            retry: RetryPolicy::default(),
            topic_routes,
        }
    }

    /// The topic side of this dispatcher.
    pub fn topics(&self) -> TopicDispatcher {
        TopicDispatcher {
            routes: self.topic_routes.clone(),
            nodes: self.nodes.clone(),
            pusher: self.pusher.clone(),
            retry: self.retry,
        }
    }

    /// Delivers stored topic messages to every live node with subscribers,
    /// one item per node per message ([`edgepush_fanout::dispatch_topics`]).
    pub async fn dispatch_topics(
        &self,
        messages: &[TopicMessage],
    ) -> Result<TopicDispatchReport, RouteError> {
        self.topics().dispatch_messages(messages).await
    }

    /// Delivers `messages` to every live connection of their recipients.
    ///
    /// One `routes_of` call for all distinct recipients, one `live_nodes`
    /// call for all distinct nodes, then one push batch per live node, all
    /// nodes concurrently, each retried as the module docs say. Only a route
    /// store failure is an error (the caller retries); a push that failed
    /// for good is counted in [`DispatchReport::failed_nodes`] and, if its
    /// node is still live, its messages listed in
    /// [`DispatchReport::undelivered`].
    pub async fn dispatch(&self, messages: &[StoredMessage]) -> Result<DispatchReport, RouteError> {
        let mut report = DispatchReport {
            messages: messages.len(),
            ..DispatchReport::default()
        };
        if messages.is_empty() {
            return Ok(report);
        }
        let users = recipients(messages);
        let routes = self.routes.routes_of(&users).await?;
        if routes.len() != users.len() {
            return Err(RouteError::Backend(format!(
                "routes_of answered {} entries for {} users",
                routes.len(),
                users.len()
            )));
        }
        let nodes = nodes_of(&routes);
        let live = if nodes.is_empty() {
            HashMap::new()
        } else {
            self.nodes.live_nodes(&nodes).await?
        };
        let plan = plan(messages, &users, &routes, &live);
        report.offline_users = plan.offline_users;
        report.skipped_dead_routes = plan.skipped_dead_routes;

        let pushes = plan
            .batches
            .iter()
            .map(|batch| self.push_with_retries(batch));
        let mut gone: Vec<(UserId, ConnId)> = Vec::new();
        for (batch, pushed) in plan.batches.iter().zip(join_all(pushes).await) {
            report.retries += pushed.retries;
            match pushed.result {
                Ok(PushReport {
                    delivered,
                    gone: gone_conns,
                }) => {
                    report.delivered += delivered;
                    for conn in gone_conns {
                        match plan.owners.get(&(batch.node.clone(), conn.clone())) {
                            Some(user) => gone.push((user.clone(), conn)),
                            None => tracing::debug!(
                                node = %batch.node,
                                conn = %conn,
                                "node reported a connection that was not pushed to; ignored"
                            ),
                        }
                    }
                }
                Err(error) => {
                    report.failed_nodes += 1;
                    if pushed.live {
                        report.undelivered.extend(&batch.message_index);
                        tracing::warn!(
                            node = %batch.node,
                            url = %batch.url,
                            items = batch.items.len(),
                            retries = pushed.retries,
                            error = %error,
                            "push to a live node failed; its messages must be dispatched again"
                        );
                    } else {
                        tracing::info!(
                            node = %batch.node,
                            url = %batch.url,
                            items = batch.items.len(),
                            error = %error,
                            "push to a node that is no longer live failed; its clients resume elsewhere"
                        );
                    }
                }
            }
        }
        report.undelivered.sort_unstable();
        report.undelivered.dedup();

        if !gone.is_empty() {
            // The deliveries are done: failing here would make the caller
            // retry and deliver everything again, for the sake of a cleanup
            // the next dispatch to these routes will attempt anyway.
            match self.routes.remove_routes(&gone).await {
                Ok(()) => report.gone_removed = gone.len(),
                Err(error) => tracing::warn!(
                    routes = gone.len(),
                    error = %error,
                    "could not remove the routes of gone connections"
                ),
            }
        }

        Ok(report)
    }

    /// Pushes one node's batch, retrying as [`RetryPolicy`] says while the
    /// node is live.
    async fn push_with_retries(&self, batch: &NodeBatch) -> edgepush_fanout::Pushed<PushReport> {
        push_with_retries(&*self.nodes, &self.retry, &batch.node, || {
            self.pusher.push(&batch.url, &batch.items)
        })
        .await
    }
}
