//! The push API client: [`HttpPusher`] sends signed push batches (and single
//! posts to a connection) to edge nodes over HTTP.
//!
//! One [`reqwest::Client`] is shared by every call, so connections to a node
//! are kept alive and reused across batches. Requests are signed with
//! [`crate::sigv4::sign`], exactly as the AWS SDK would sign them.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use edgepush_core::protocol::{PushBatchResult, PushItem, TopicPushItem, TopicPushResult};
use edgepush_core::{ConnId, PushError, PushReport, Pusher};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::sigv4::{self, PushCredential};

/// How long a whole push may take by default (connect, send, answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a node may take by default: a dead node should be
/// given up on quickly so the batch's users catch up on resume instead.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest batch body sent by default: well under the edge node's cap
/// (16 MiB), so a batch parses quickly and one slow request holds little.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long an idle connection to a node is kept for reuse: shorter than
/// the node's own idle limit (its head read timeout, 10 s by default), so
/// the pool never picks a connection the node is closing.
pub const DEFAULT_POOL_IDLE: Duration = Duration::from_secs(5);
/// How much of an error answer's body is kept in the error.
const ERROR_BODY_LIMIT: usize = 200;

/// A connection id in a path is encoded as the AWS SDK encodes a label:
/// everything but `A-Z a-z 0-9 - . _ ~`.
const LABEL_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How [`HttpPusher`] reaches edge nodes.
#[derive(Debug, Clone)]
pub struct PushClientConfig {
    /// The internal credential requests are signed with; edge nodes verify
    /// it against their [`sigv4::CredentialSet`].
    pub credential: PushCredential,
    /// Limit for a whole request, so one stuck node cannot hold dispatch.
    pub timeout: Duration,
    /// Limit for opening a connection, so a dead node is given up on fast.
    pub connect_timeout: Duration,
    /// The largest batch body of one request; a bigger batch is split into
    /// several requests, sent in order. Must stay under the node's cap.
    pub max_batch_bytes: usize,
}

impl PushClientConfig {
    /// A configuration with the default timeouts (5 s, connect 1 s) and
    /// batch size (4 MiB).
    pub fn new(credential: PushCredential) -> Self {
        Self {
            credential,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the push HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// A post to one connection failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The connection is not on the node (any more): HTTP 410, the AWS
    /// API's `GoneException`. Its route is stale.
    #[error("connection is gone")]
    Gone,
    /// The node answered with another error status.
    #[error("post to {url} refused with status {status}: {body}")]
    Refused {
        /// The URL posted to.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The node could not be reached or did not answer in time.
    #[error("post to {url} failed: {reason}")]
    Unreachable {
        /// The URL posted to.
        url: String,
        /// What happened.
        reason: String,
    },
}

/// Sends push requests to edge nodes: the production [`Pusher`].
///
/// Plain `http://` only (the push API is internal); cheap to clone, clones
/// share the connection pool.
#[derive(Debug, Clone)]
pub struct HttpPusher {
    /// One client for every node: its pool keeps connections alive.
    client: reqwest::Client,
    /// What requests are signed with.
    credential: PushCredential,
    /// See [`PushClientConfig::max_batch_bytes`].
    max_batch_bytes: usize,
}

impl HttpPusher {
    /// A pusher with its own connection pool.
    pub fn new(config: PushClientConfig) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(DEFAULT_POOL_IDLE)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            credential: config.credential,
            max_batch_bytes: config.max_batch_bytes,
        })
    }

    /// Posts `data` to connection `conn_id` on the node at `push_url`
    /// (`POST {push_url}/@connections/{id}`), like the SDK's
    /// `post_to_connection`.
    pub async fn post_to_connection(
        &self,
        push_url: &str,
        conn_id: &ConnId,
        data: Bytes,
    ) -> Result<(), PostError> {
        let path = format!(
            "/@connections/{}",
            utf8_percent_encode(conn_id.as_str(), LABEL_SET)
        );
        let url = join(push_url, &path);
        let answer = self
            .send(&url, "application/octet-stream", data)
            .await
            .map_err(|reason| PostError::Unreachable {
                url: url.clone(),
                reason,
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        if status == reqwest::StatusCode::GONE {
            return Err(PostError::Gone);
        }
        Err(PostError::Refused {
            status: status.as_u16(),
            body: body_start(answer).await,
            url,
        })
    }

    /// Signs and sends a `POST` of `body` to `url`; errors are transport
    /// errors, as text.
    async fn send(
        &self,
        url: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<reqwest::Response, String> {
        // Parse once and sign exactly the form reqwest will send.
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid push URL: {e}"))?;
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| format!("invalid push URL: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        sigv4::sign(
            &self.credential,
            &Method::POST,
            &uri,
            &mut headers,
            &body,
            SystemTime::now(),
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        self.client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(describe)
    }
}

#[async_trait]
impl Pusher for HttpPusher {
    async fn push(&self, push_url: &str, items: &[PushItem]) -> Result<PushReport, PushError> {
        let mut report = PushReport::default();
        self.send_items(push_url, "/@batch", items, |result: PushBatchResult| {
            report.delivered += result.delivered;
            report.gone.extend(result.gone);
        })
        .await?;
        Ok(report)
    }

    async fn push_topics(
        &self,
        push_url: &str,
        items: &[TopicPushItem],
    ) -> Result<TopicPushResult, PushError> {
        let mut report = TopicPushResult::default();
        self.send_items(push_url, "/@topics", items, |result: TopicPushResult| {
            report.delivered += result.delivered;
            report.absent.extend(result.absent);
        })
        .await?;
        Ok(report)
    }
}

impl HttpPusher {
    /// Posts `items` to `path` on the node at `push_url` as
    /// `{"items":[...]}` bodies of at most the batch cap each, one request
    /// after another (each log's messages keep their order), passing every
    /// answer to `on_result`.
    async fn send_items<T, R>(
        &self,
        push_url: &str,
        path: &str,
        items: &[T],
        mut on_result: impl FnMut(R) + Send,
    ) -> Result<(), PushError>
    where
        T: serde::Serialize + Sync,
        R: serde::de::DeserializeOwned,
    {
        // `{"items":[` item `,` item ... `]}`, each item serialised straight
        // into the body; a body that would pass the cap is sent first and
        // the item starts the next one.
        const HEAD: &[u8] = b"{\"items\":[";
        const TAIL: &[u8] = b"]}";
        let cap = self.max_batch_bytes.max(HEAD.len() + TAIL.len() + 1);
        let mut body: Vec<u8> = Vec::new();
        let mut count = 0usize;
        for item in items {
            if body.is_empty() {
                body.extend_from_slice(HEAD);
            }
            let mark = body.len();
            if count > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, item).map_err(|e| PushError::Unreachable {
                url: push_url.to_owned(),
                reason: format!("cannot encode the batch: {e}"),
            })?;
            if count > 0 && body.len() + TAIL.len() > cap {
                // This item does not fit: send the others, then start over
                // with it.
                let encoded = body.split_off(mark + 1);
                body.truncate(mark);
                body.extend_from_slice(TAIL);
                on_result(
                    self.send_batch(push_url, path, std::mem::take(&mut body), count)
                        .await?,
                );
                body.extend_from_slice(HEAD);
                body.extend_from_slice(&encoded);
                count = 0;
            }
            count += 1;
        }
        if count > 0 {
            body.extend_from_slice(TAIL);
            on_result(self.send_batch(push_url, path, body, count).await?);
        }
        Ok(())
    }

    /// Sends one batch body of `count` items to `path` and reads the node's
    /// answer.
    async fn send_batch<R: serde::de::DeserializeOwned>(
        &self,
        push_url: &str,
        path: &str,
        body: Vec<u8>,
        count: usize,
    ) -> Result<R, PushError> {
        let unreachable = |reason: String| PushError::Unreachable {
            url: push_url.to_owned(),
            reason,
        };
        let bytes_sent = body.len();
        let url = join(push_url, path);
        let answer = self
            .send(&url, "application/json", Bytes::from(body))
            .await
            .map_err(unreachable)?;
        let status = answer.status();
        if !status.is_success() {
            let body = body_start(answer).await;
            tracing::warn!(push_url, path, status = status.as_u16(), %body, "push batch refused");
            return Err(PushError::Refused {
                url: push_url.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        let bytes = answer.bytes().await.map_err(|e| unreachable(describe(e)))?;
        let result: R = serde_json::from_slice(&bytes).map_err(|e| PushError::Refused {
            url: push_url.to_owned(),
            status: status.as_u16(),
            body: format!("unreadable push batch result: {e}"),
        })?;
        tracing::debug!(
            push_url,
            path,
            items = count,
            bytes = bytes_sent,
            "push batch sent"
        );
        Ok(result)
    }
}

/// `base` and `path` (which starts with `/`) with exactly one `/` between.
fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Up to [`ERROR_BODY_LIMIT`] bytes of an answer's body, as text.
async fn body_start(mut answer: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_LIMIT {
        match answer.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(ERROR_BODY_LIMIT);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A transport error with its causes (reqwest's top-level text alone says
/// little: "error sending request").
fn describe(err: reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_without_double_slashes() {
        assert_eq!(
            join("http://127.0.0.1:9101", "/@batch"),
            "http://127.0.0.1:9101/@batch"
        );
        assert_eq!(
            join("http://h:1/prod/", "/@batch"),
            "http://h:1/prod/@batch"
        );
        assert_eq!(join("http://h:1/prod", "/@batch"), "http://h:1/prod/@batch");
    }

    #[test]
    fn connection_ids_are_encoded_like_the_sdk() {
        let id = "a+b:c@d=.-_";
        assert_eq!(
            utf8_percent_encode(id, LABEL_SET).to_string(),
            "a%2Bb%3Ac%40d%3D.-_"
        );
    }
}
