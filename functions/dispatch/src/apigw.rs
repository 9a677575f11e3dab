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
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::error::DisplayErrorContext;
use aws_sdk_apigatewaymanagement::primitives::Blob;
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
/// management API's `PostToConnection`). A port, so tests can record posts.
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
}

/// Most management endpoints whose clients are kept; past this the cache is
/// emptied (a deployment has a handful of APIs and stages, so this only
/// bounds memory against a polluted node directory).
const MAX_CACHED_ENDPOINTS: usize = 64;

/// The production [`ConnectionPoster`]: the real
/// `aws-sdk-apigatewaymanagement` client.
///
/// One SDK client per management endpoint (the endpoint is part of a
/// client's configuration), built from one base configuration (credentials,
/// region, retries, timeouts) and kept for reuse.
pub struct SdkConnectionPoster {
    /// Credentials, region, retries and timeouts shared by every endpoint.
    base: aws_sdk_apigatewaymanagement::Config,
    /// When set, requests go to this origin (scheme and authority) instead
    /// of the endpoint's own, keeping the endpoint's path (the stage): for
    /// local emulators and tests that stand in for API Gateway.
    endpoint_override: Option<String>,
    /// The clients built so far, by endpoint.
    clients: Mutex<HashMap<String, aws_sdk_apigatewaymanagement::Client>>,
}

impl fmt::Debug for SdkConnectionPoster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkConnectionPoster")
            .field("region", &self.base.region())
            .field("endpoint_override", &self.endpoint_override)
            .finish_non_exhaustive()
    }
}

/// Bound on one post, retries included, so a stuck API cannot hold a
/// dispatch invocation.
pub const DEFAULT_POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on opening a connection to API Gateway.
pub const DEFAULT_POST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl SdkConnectionPoster {
    /// A poster on `base` (credentials, region, retries, timeouts); the
    /// endpoint of each post is set per management endpoint.
    pub fn new(base: aws_sdk_apigatewaymanagement::Config) -> Self {
        Self {
            base,
            endpoint_override: None,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A poster with the credentials and region of `sdk` (the function's
    /// own, from [`aws_config`]), the SDK's standard retries (which absorb
    /// throttling), and [`DEFAULT_POST_TIMEOUT`].
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig) -> Self {
        let base = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(DEFAULT_POST_TIMEOUT)
                    .connect_timeout(DEFAULT_POST_CONNECT_TIMEOUT)
                    .build(),
            )
            .build();
        Self::new(base)
    }

    /// A poster with the process's AWS credentials and region, found the
    /// standard way (in Lambda: the function role's credentials and
    /// `AWS_REGION` from the environment).
    pub async fn from_env() -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk_config(&sdk)
    }

    /// Sends every request to `origin` (`http://127.0.0.1:4510`) instead of
    /// the management endpoint's own scheme and host, keeping its path.
    pub fn with_endpoint_override(mut self, origin: impl Into<String>) -> Self {
        self.endpoint_override = Some(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// The URL requests for `endpoint` are really sent to.
    fn effective_endpoint(&self, endpoint: &str) -> String {
        let endpoint = endpoint.trim_end_matches('/');
        match &self.endpoint_override {
            None => endpoint.to_owned(),
            Some(origin) => {
                let after_scheme = endpoint
                    .split_once("://")
                    .map_or(endpoint, |(_, rest)| rest);
                let path = after_scheme
                    .find('/')
                    .map_or("", |slash| &after_scheme[slash..]);
                format!("{origin}{path}")
            }
        }
    }

    /// The client for `endpoint`, built on first use.
    fn client(&self, endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(endpoint) {
            return client.clone();
        }
        if clients.len() >= MAX_CACHED_ENDPOINTS {
            clients.clear();
        }
        let config = self
            .base
            .to_builder()
            .endpoint_url(self.effective_endpoint(endpoint))
            .build();
        let client = aws_sdk_apigatewaymanagement::Client::from_conf(config);
        clients.insert(endpoint.to_owned(), client.clone());
        client
    }
}

#[async_trait]
impl ConnectionPoster for SdkConnectionPoster {
    async fn post_to_connection(
        &self,
        endpoint: &str,
        connection: &ConnId,
        data: Bytes,
    ) -> Result<(), PostToConnectionError> {
        let result = self
            .client(endpoint)
            .post_to_connection()
            .connection_id(connection.as_str())
            .data(Blob::new(data.to_vec()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_gone_exception())
                {
                    return Err(PostToConnectionError::Gone);
                }
                Err(PostToConnectionError::Failed {
                    status: err.raw_response().map(|r| r.status().as_u16()),
                    reason: DisplayErrorContext(&err).to_string(),
                })
            }
        }
    }
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

    #[test]
    fn endpoint_override_keeps_the_stage() {
        let base = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version_latest()
            .build();
        let poster = SdkConnectionPoster::new(base.clone());
        assert_eq!(
            poster.effective_endpoint("https://a.execute-api.r.amazonaws.com/prod/"),
            "https://a.execute-api.r.amazonaws.com/prod"
        );
        let poster = SdkConnectionPoster::new(base).with_endpoint_override("http://127.0.0.1:9/");
        assert_eq!(
            poster.effective_endpoint("https://a.execute-api.r.amazonaws.com/prod"),
            "http://127.0.0.1:9/prod"
        );
        assert_eq!(
            poster.effective_endpoint("https://a.execute-api.r.amazonaws.com"),
            "http://127.0.0.1:9"
        );
    }
}
