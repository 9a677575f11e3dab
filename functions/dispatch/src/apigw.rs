//! Managed edge: pushing to API Gateway WebSocket connections.
//!
//! An API Gateway WebSocket API holds its clients' sockets itself. The
//! connections function (`functions/connections`) records each of them as an
//! ordinary route, on a *virtual node* per API and stage (`apigw-<apiId>-<stage>`)
//! whose node directory entry is the API's management endpoint,
//! `https://<apiId>.execute-api.<region>.amazonaws.com/<stage>`. So the
//! [`Dispatcher`](crate::Dispatcher) finds API Gateway routes and edge-node
//! routes of a user in the same lookup and hands each node one batch, as
//! always.
//!
//! [`ManagedEdgePusher`] is the [`Pusher`] that tells the two apart by the
//! endpoint ([`is_management_endpoint`]): a batch for an edge node goes to
//! the node's batch endpoint unchanged; a batch for a management endpoint is
//! sent one connection at a time with `PostToConnection`, through a
//! [`ConnectionPoster`] ([`crate::SdkConnectionPoster`] in production: the real
//! `aws-sdk-apigatewaymanagement` client, signing with the function's own
//! AWS credentials). The frame is the same JSON `msg` frame edge nodes send
//! ([`encode_msg`]). A `GoneException` (410) is reported as a gone
//! connection, so the dispatcher removes exactly that route.
//!
//! Order: the posts to one connection are made one after the other, in the
//! batch's order (the messages' order), and stop at the first failure, so
//! an API Gateway client never sees a later message before an earlier one.
//! Different connections are posted to concurrently (bounded by
//! [`DEFAULT_POST_CONCURRENCY`]).
//!
//! Topics: a connection's topic subscriptions are kept in Redis
//! ([`TopicSubscribers`]), and the connections function makes the virtual
//! node a member of each topic ([`edgepush_core::TopicRoutes`]), so topic
//! fan-out hands the virtual node one batch like any edge node;
//! [`ManagedEdgePusher::push_topics`] then looks the subscribers up and posts
//! each message to each of them (the same topic `msg` frame edge nodes
//! send), in order per connection.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use edgepush_core::protocol::{
    PushItem, TopicPushItem, TopicPushResult, encode_msg, encode_topic_msg_unchecked,
};
use edgepush_core::{
    ConnId, IdError, NodeId, PushError, PushReport, Pusher, RouteError, TopicName,
};
use futures_util::StreamExt;
use futures_util::stream;

/// The largest `PostToConnection` body API Gateway accepts (128 KiB).
pub const MAX_POST_BYTES: usize = 128 * 1024;

/// How many connections of one management endpoint are posted to at once
/// by default: enough to overlap round trips, few enough to stay well under
/// API Gateway's per-account request rate from one function instance.
pub const DEFAULT_POST_CONCURRENCY: usize = 32;

/// Whether `url` is an API Gateway management endpoint
/// (`https://<apiId>.execute-api.<region>.amazonaws.com[.cn]/<stage>`)
/// rather than an edge node's push API (plain `http://`, see
/// [`edgepush_delivery::HttpPusher`]).
pub fn is_management_endpoint(url: &str) -> bool {
    let Some(rest) = url
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .and_then(|_| url.get(8..))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = host.split(':').next().unwrap_or_default();
    host.to_ascii_lowercase().contains(".execute-api.")
}

/// Node ids of API Gateway virtual nodes start with this.
pub const VIRTUAL_NODE_PREFIX: &str = "apigw-";

/// The id of the virtual node standing for the stage `stage` of API
/// `api_id`: `apigw-<apiId>-<stage>`, or `apigw-<apiId>-<hash of stage>`
/// when that would be too long for a node id.
pub fn virtual_node_id(api_id: &str, stage: &str) -> Result<NodeId, IdError> {
    match NodeId::new(format!("{VIRTUAL_NODE_PREFIX}{api_id}-{stage}")) {
        Err(IdError::TooLong { .. }) => NodeId::new(format!(
            "{VIRTUAL_NODE_PREFIX}{api_id}-{:016x}",
            fnv1a(stage)
        )),
        other => other,
    }
}

/// The virtual node of a management endpoint
/// (`https://<apiId>.execute-api.<region>.amazonaws.com/<stage>`, as the
/// connections function writes it); `None` for any other URL.
pub fn virtual_node_of_endpoint(endpoint: &str) -> Option<NodeId> {
    if !is_management_endpoint(endpoint) {
        return None;
    }
    let rest = endpoint.get(8..)?;
    let (host, path) = rest.split_once('/')?;
    let api_id = host.split('.').next()?;
    let stage = path.trim_matches('/');
    virtual_node_id(api_id, stage).ok()
}

/// FNV-1a, 64 bits: stable across builds and processes (unlike std's
/// hasher), so every instance names a long stage the same way.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The topic subscriptions of managed-edge connections (Redis:
/// [`edgepush_redis::RedisRouteStore`]'s `managed_*` keys).
#[async_trait]
pub trait TopicSubscribers: Send + Sync + 'static {
    /// The connections of virtual node `node` subscribed to `topic`.
    async fn subscribers(
        &self,
        node: &NodeId,
        topic: &TopicName,
    ) -> Result<Vec<ConnId>, RouteError>;

    /// Forgets every subscription of `conn` (it is gone).
    async fn forget(&self, node: &NodeId, conn: &ConnId) -> Result<(), RouteError>;
}

#[async_trait]
impl TopicSubscribers for edgepush_redis::RedisRouteStore {
    async fn subscribers(
        &self,
        node: &NodeId,
        topic: &TopicName,
    ) -> Result<Vec<ConnId>, RouteError> {
        self.managed_subscribers(node, topic).await
    }

    async fn forget(&self, node: &NodeId, conn: &ConnId) -> Result<(), RouteError> {
        self.managed_forget(node, conn).await
    }
}

/// A post to one connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostToConnectionError {
    /// The connection no longer exists: HTTP 410, the API's
    /// `GoneException`. Its route is stale.
    #[error("connection is gone")]
    Gone,
    /// Any other failure: refused (with the HTTP status when there was an
    /// answer), throttled past the client's retries, or unreachable.
    #[error("post to connection failed (status {status:?}): {reason}")]
    Failed {
        /// The answer's HTTP status, if an answer came.
        status: Option<u16>,
        /// What happened.
        reason: String,
    },
}

/// Posts data to one connection of an API Gateway WebSocket API (the
/// management API's `PostToConnection`), or closes it. A port, so tests can
/// record posts.
#[async_trait]
pub trait ConnectionPoster: Send + Sync + 'static {
    /// Sends `data` to `connection` through the management API at
    /// `endpoint` (`https://<apiId>.execute-api.<region>.amazonaws.com/<stage>`).
    async fn post_to_connection(
        &self,
        endpoint: &str,
        connection: &ConnId,
        data: Bytes,
    ) -> Result<(), PostToConnectionError>;

    /// Closes `connection` (the management API's `DeleteConnection`);
    /// [`PostToConnectionError::Gone`] when it is gone already. The
    /// connections function uses it to end connections whose token
    /// expired.
    async fn delete_connection(
        &self,
        endpoint: &str,
        connection: &ConnId,
    ) -> Result<(), PostToConnectionError>;
}

/// The dispatcher's [`Pusher`] when API Gateway routes may exist: batches
/// for management endpoints ([`is_management_endpoint`]) are posted one
/// connection at a time through `poster`; everything else goes to `edge`
/// (the edge nodes' batch pusher) unchanged.
pub struct ManagedEdgePusher {
    /// Pushes batches to edge nodes.
    edge: Arc<dyn Pusher>,
    /// Posts to API Gateway connections.
    poster: Arc<dyn ConnectionPoster>,
    /// Connections of one endpoint posted to at once.
    concurrency: usize,
    /// Who is subscribed to what on the virtual nodes; `None`: topics are
    /// refused for API Gateway connections (501).
    subscribers: Option<Arc<dyn TopicSubscribers>>,
}

impl ManagedEdgePusher {
    /// Sends edge-node batches through `edge` and API Gateway batches
    /// through `poster`, [`DEFAULT_POST_CONCURRENCY`] connections at a time.
    pub fn new(edge: Arc<dyn Pusher>, poster: Arc<dyn ConnectionPoster>) -> Self {
        Self {
            edge,
            poster,
            concurrency: DEFAULT_POST_CONCURRENCY,
            subscribers: None,
        }
    }

    /// Delivers topic messages to API Gateway connections too, to the
    /// subscribers `subscribers` names.
    pub fn with_topic_subscribers(mut self, subscribers: Arc<dyn TopicSubscribers>) -> Self {
        self.subscribers = Some(subscribers);
        self
    }

    /// Posts to at most `concurrency` connections at once (at least one).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Posts every item to its connections through the management API at
    /// `endpoint`; see the module documentation for the order and failure
    /// rules.
    async fn post_all(&self, endpoint: &str, items: &[PushItem]) -> Result<PushReport, PushError> {
        // Each message serialised once; per connection, its frames in batch
        // order.
        let mut frames: Vec<Bytes> = Vec::with_capacity(items.len());
        let mut per_conn: Vec<(ConnId, Vec<usize>)> = Vec::new();
        let mut conn_index: HashMap<ConnId, usize> = HashMap::new();
        for item in items {
            let message = &item.message;
            let frame = encode_msg(message.seq, &message.id, &message.data);
            if frame.len() > MAX_POST_BYTES {
                // API Gateway would refuse it (413); the client catches up
                // from the message store like after any failed push.
                tracing::warn!(
                    endpoint,
                    user = %message.user_id,
                    seq = message.seq,
                    bytes = frame.len(),
                    "message too large for PostToConnection; not pushed"
                );
                continue;
            }
            let index = frames.len();
            frames.push(frame);
            for conn in &item.connection_ids {
                let slot = *conn_index.entry(conn.clone()).or_insert_with(|| {
                    per_conn.push((conn.clone(), Vec::new()));
                    per_conn.len() - 1
                });
                per_conn[slot].1.push(index);
            }
        }

        let report = self.post_frames(endpoint, &frames, per_conn).await;
        tracing::debug!(
            endpoint,
            delivered = report.as_ref().map_or(0, |r| r.delivered),
            "posted to API Gateway connections"
        );
        report
    }

    /// Posts, per connection, its frames (indexes into `frames`) one after
    /// the other, stopping at its first failure; connections concurrently.
    /// `Err` only when nothing got through at all.
    async fn post_frames(
        &self,
        endpoint: &str,
        frames: &[Bytes],
        per_conn: Vec<(ConnId, Vec<usize>)>,
    ) -> Result<PushReport, PushError> {
        let outcomes: Vec<ConnOutcome> = stream::iter(per_conn)
            .map(|(conn, order)| async move {
                let mut outcome = ConnOutcome::default();
                for index in order {
                    match self
                        .poster
                        .post_to_connection(endpoint, &conn, frames[index].clone())
                        .await
                    {
                        Ok(()) => outcome.delivered += 1,
                        Err(PostToConnectionError::Gone) => {
                            outcome.gone = Some(conn);
                            break;
                        }
                        Err(error) => {
                            // Stop here: a later frame must not overtake
                            // this one.
                            tracing::warn!(
                                endpoint,
                                conn = %conn,
                                error = %error,
                                "PostToConnection failed; the connection's remaining messages are not pushed"
                            );
                            outcome.failure = Some(error);
                            break;
                        }
                    }
                }
                outcome
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;

        let mut report = PushReport::default();
        let mut failures = 0usize;
        let mut last_failure = None;
        for outcome in outcomes {
            report.delivered += outcome.delivered;
            report.gone.extend(outcome.gone);
            if let Some(failure) = outcome.failure {
                failures += 1;
                last_failure = Some(failure);
            }
        }
        if failures > 0 {
            tracing::debug!(
                endpoint,
                failures,
                "some posts to API Gateway connections failed"
            );
        }
        match last_failure {
            // Nothing got through at all: the endpoint as a whole failed.
            Some(failure) if report.delivered == 0 && report.gone.is_empty() => {
                Err(match failure {
                    PostToConnectionError::Failed {
                        status: Some(status),
                        reason,
                    } => PushError::Refused {
                        url: endpoint.to_owned(),
                        status,
                        body: reason,
                    },
                    other => PushError::Unreachable {
                        url: endpoint.to_owned(),
                        reason: other.to_string(),
                    },
                })
            }
            _ => Ok(report),
        }
    }
}

/// What the posts to one connection came to.
#[derive(Default)]
struct ConnOutcome {
    /// Frames API Gateway accepted.
    delivered: u64,
    /// Set when the connection turned out to be gone.
    gone: Option<ConnId>,
    /// Set when a post failed otherwise.
    failure: Option<PostToConnectionError>,
}

#[async_trait]
impl Pusher for ManagedEdgePusher {
    async fn push(&self, push_url: &str, items: &[PushItem]) -> Result<PushReport, PushError> {
        if is_management_endpoint(push_url) {
            self.post_all(push_url, items).await
        } else {
            self.edge.push(push_url, items).await
        }
    }

    /// Topic items go to edge nodes unchanged; for a management endpoint
    /// each message is posted to the virtual node's subscribers of its
    /// topic (presence events are not delivered there). Without
    /// [`TopicSubscribers`] a management endpoint is refused with 501
    /// rather than dropped.
    async fn push_topics(
        &self,
        push_url: &str,
        items: &[TopicPushItem],
    ) -> Result<TopicPushResult, PushError> {
        if !is_management_endpoint(push_url) {
            return self.edge.push_topics(push_url, items).await;
        }
        let (Some(subscribers), Some(node)) =
            (&self.subscribers, virtual_node_of_endpoint(push_url))
        else {
            return Err(PushError::Refused {
                url: push_url.to_owned(),
                status: 501,
                body: "topics are not delivered to these API Gateway connections".to_owned(),
            });
        };
        let unavailable = |e: RouteError| PushError::Unreachable {
            url: push_url.to_owned(),
            reason: format!("the managed edge's subscriptions: {e}"),
        };
        let mut frames: Vec<Bytes> = Vec::with_capacity(items.len());
        let mut per_conn: Vec<(ConnId, Vec<usize>)> = Vec::new();
        let mut conn_index: HashMap<ConnId, usize> = HashMap::new();
        let mut absent: Vec<TopicName> = Vec::new();
        let mut looked_up: HashMap<TopicName, Vec<ConnId>> = HashMap::new();
        for item in items {
            let Some(message) = &item.message else {
                continue;
            };
            if !looked_up.contains_key(&item.topic) {
                let conns = subscribers
                    .subscribers(&node, &item.topic)
                    .await
                    .map_err(unavailable)?;
                if conns.is_empty() && !absent.contains(&item.topic) {
                    absent.push(item.topic.clone());
                }
                looked_up.insert(item.topic.clone(), conns);
            }
            let conns = &looked_up[&item.topic];
            if conns.is_empty() {
                continue;
            }
            let index = frames.len();
            frames.push(encode_topic_msg_unchecked(
                item.topic.as_str(),
                message.seq,
                message.id.as_str(),
                &message.data,
            ));
            for conn in conns {
                let slot = *conn_index.entry(conn.clone()).or_insert_with(|| {
                    per_conn.push((conn.clone(), Vec::new()));
                    per_conn.len() - 1
                });
                per_conn[slot].1.push(index);
            }
        }
        let report = self.post_frames(push_url, &frames, per_conn).await?;
        for conn in &report.gone {
            if let Err(e) = subscribers.forget(&node, conn).await {
                tracing::warn!(conn = %conn, error = %e, "could not forget a gone subscriber");
            }
        }
        Ok(TopicPushResult {
            delivered: report.delivered,
            absent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_node_ids_fit_and_are_stable() {
        let node = virtual_node_id("a1b2c3d4e5", "prod").unwrap();
        assert_eq!(node.as_str(), "apigw-a1b2c3d4e5-prod");
        let long = "s".repeat(100);
        let a = virtual_node_id("a1b2c3d4e5", &long).unwrap();
        assert_eq!(a, virtual_node_id("a1b2c3d4e5", &long).unwrap());
        assert_ne!(a, virtual_node_id("a1b2c3d4e5", &"t".repeat(100)).unwrap());
        assert!(a.as_str().starts_with("apigw-a1b2c3d4e5-"));
        assert!(virtual_node_id("a b", "prod").is_err());
    }

    #[test]
    fn endpoints_name_their_virtual_node() {
        assert_eq!(
            virtual_node_of_endpoint("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"),
            Some(virtual_node_id("a1b2c3d4e5", "prod").unwrap())
        );
        let long = "s".repeat(100);
        assert_eq!(
            virtual_node_of_endpoint(&format!(
                "https://a1.execute-api.cn-north-1.amazonaws.com.cn/{long}"
            )),
            Some(virtual_node_id("a1", &long).unwrap())
        );
        assert_eq!(virtual_node_of_endpoint("http://10.0.0.1:8081"), None);
    }

    #[test]
    fn recognises_management_endpoints() {
        for url in [
            "https://abc123defg.execute-api.us-east-1.amazonaws.com/prod",
            "HTTPS://ABC.EXECUTE-API.eu-west-1.amazonaws.com/dev/",
            "https://abc.execute-api.cn-north-1.amazonaws.com.cn/prod",
            "https://abc.execute-api.us-east-1.amazonaws.com:443/prod",
        ] {
            assert!(is_management_endpoint(url), "{url}");
        }
        for url in [
            "http://10.0.3.7:9101",
            "http://abc.execute-api.us-east-1.amazonaws.com/prod",
            "https://ws.example.com/prod",
            "https://example.com/.execute-api./x",
            "",
            "https",
        ] {
            assert!(!is_management_endpoint(url), "{url}");
        }
    }
}
