//! Routing and fan-out: from stored messages to one push batch per live node.
//!
//! A "node" is anything with a node directory entry: an edge node (its push
//! API's URL) or an API Gateway WebSocket API stage, registered by the
//! connections function as the virtual node `apigw-<apiId>-<stage>` with its
//! management endpoint as the URL. Both get one batch here; the
//! [`ManagedEdgePusher`](crate::ManagedEdgePusher) posts an API Gateway batch
//! one connection at a time, and reports `GoneException`s as gone
//! connections, whose routes are removed below like any other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use edgepush_core::protocol::PushItem;
use edgepush_core::{
    ConnId, NodeDirectory, NodeId, PushReport, Pusher, RouteError, RouteStore, StoredMessage,
    UserId,
};
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
    /// Nodes whose push failed as a whole; their connections catch up on
    /// resume.
    pub failed_nodes: usize,
}

/// One recipient's live connections, grouped by node.
type LiveRoutes<'a> = Vec<(&'a NodeId, Vec<ConnId>)>;

impl Dispatcher {
    /// Delivers `messages` to every live connection of their recipients.
    ///
    /// One `routes_of` call for all distinct recipients, one `live_nodes`
    /// call for all distinct nodes, then one push batch per live node, all
    /// nodes concurrently. Only a route store failure is an error (the
    /// caller retries); a failed push to one node is logged and counted in
    /// [`DispatchReport::failed_nodes`] without affecting the others.
    pub async fn dispatch(&self, messages: &[StoredMessage]) -> Result<DispatchReport, RouteError> {
        let mut report = DispatchReport {
            messages: messages.len(),
            ..DispatchReport::default()
        };
        if messages.is_empty() {
            return Ok(report);
        }

        // Distinct recipients, in first-seen order.
        let mut user_index: HashMap<&UserId, usize> = HashMap::new();
        let mut users: Vec<UserId> = Vec::new();
        for message in messages {
            user_index.entry(&message.user_id).or_insert_with(|| {
                users.push(message.user_id.clone());
                users.len() - 1
            });
        }

        let routes = self.routes.routes_of(&users).await?;
        if routes.len() != users.len() {
            return Err(RouteError::Backend(format!(
                "routes_of answered {} entries for {} users",
                routes.len(),
                users.len()
            )));
        }

        // Distinct nodes over all routes.
        let mut nodes: Vec<NodeId> = Vec::new();
        {
            let mut seen: HashSet<&NodeId> = HashSet::new();
            for (_, node) in routes.iter().flatten() {
                if seen.insert(node) {
                    nodes.push(node.clone());
                }
            }
        }
        let live = if nodes.is_empty() {
            HashMap::new()
        } else {
            self.nodes.live_nodes(&nodes).await?
        };

        // Per recipient: its connections on live nodes, grouped by node.
        // `owner` maps (node, connection) back to the user, to turn the
        // connections a node reports gone into routes to remove.
        let mut live_routes: Vec<LiveRoutes<'_>> = Vec::with_capacity(users.len());
        let mut owner: HashMap<(&NodeId, &ConnId), &UserId> = HashMap::new();
        for (user, user_routes) in users.iter().zip(&routes) {
            let mut by_node: LiveRoutes<'_> = Vec::new();
            for (conn, node) in user_routes {
                if !live.contains_key(node) {
                    report.skipped_dead_routes += 1;
                    continue;
                }
                owner.insert((node, conn), user);
                match by_node.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, conns)) => conns.push(conn.clone()),
                    None => by_node.push((node, vec![conn.clone()])),
                }
            }
            if by_node.is_empty() {
                report.offline_users += 1;
            }
            live_routes.push(by_node);
        }

        // One item per (message, node), one batch per node.
        let mut batches: HashMap<&NodeId, Vec<PushItem>> = HashMap::new();
        for message in messages {
            let Some(&index) = user_index.get(&message.user_id) else {
                continue;
            };
            for (node, conns) in &live_routes[index] {
                batches.entry(node).or_default().push(PushItem {
                    connection_ids: conns.clone(),
                    message: message.clone(),
                });
            }
        }

        let pushes = batches.into_iter().filter_map(|(node, items)| {
            let url = live.get(node)?;
            let pusher = &self.pusher;
            Some(async move {
                let count = items.len();
                (node, url, count, pusher.push(url, items).await)
            })
        });

        let mut gone: Vec<(UserId, ConnId)> = Vec::new();
        for (node, url, items, result) in join_all(pushes).await {
            match result {
                Ok(PushReport {
                    delivered,
                    gone: gone_conns,
                }) => {
                    report.delivered += delivered;
                    for conn in gone_conns {
                        match owner.get(&(node, &conn)) {
                            Some(user) => gone.push(((*user).clone(), conn)),
                            None => tracing::debug!(
                                node = %node,
                                conn = %conn,
                                "node reported a connection that was not pushed to; ignored"
                            ),
                        }
                    }
                }
                Err(error) => {
                    report.failed_nodes += 1;
                    tracing::warn!(
                        node = %node,
                        url = %url,
                        items,
                        error = %error,
                        "push to node failed; its connections catch up on resume"
                    );
                }
            }
        }

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
}
