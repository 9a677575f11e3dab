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
//! [`ConnectionPoster`] ([`SdkConnectionPoster`] in production: the real
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

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use edgepush_core::protocol::{PushItem, TopicPushItem, TopicPushResult, encode_msg};
use edgepush_core::{ConnId, PushError, PushReport, Pusher};
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
}

impl ManagedEdgePusher {
    /// Sends edge-node batches through `edge` and API Gateway batches
    /// through `poster`, [`DEFAULT_POST_CONCURRENCY`] connections at a time.
    pub fn new(edge: Arc<dyn Pusher>, poster: Arc<dyn ConnectionPoster>) -> Self {
        Self {
            edge,
            poster,
            concurrency: DEFAULT_POST_CONCURRENCY,
        }
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

        let frames = &frames;
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
        tracing::debug!(
            endpoint,
            delivered = report.delivered,
            gone = report.gone.len(),
            failures,
            "posted to API Gateway connections"
        );
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

    /// Topic items go to edge nodes unchanged. An API Gateway stage has no
    /// topic memberships yet (topics on the managed edge come later), so a
    /// management endpoint here is refused with 501 rather than dropped.
    async fn push_topics(
        &self,
        push_url: &str,
        items: &[TopicPushItem],
    ) -> Result<TopicPushResult, PushError> {
        if is_management_endpoint(push_url) {
            Err(PushError::Refused {
                url: push_url.to_owned(),
                status: 501,
                body: "topics are not delivered to API Gateway connections yet".to_owned(),
            })
        } else {
            self.edge.push_topics(push_url, items).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
