//! The HTTP-shaped core of collect: one request in, one response out.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use edgepush_core::protocol::SubmitResponse;
pub use edgepush_core::submit::Limits;
use edgepush_core::submit::Submission;
use edgepush_core::{Handoff, MessageId, MessageStore, NewMessage, UserId};
use http::Method;

use crate::topics::{Route, Topics};
use crate::{ApiKeys, CollectError};

/// The start of the idempotency keys collect chooses for submissions that
/// came without one.
pub(crate) const AUTO_KEY_PREFIX: &str = "auto-";

/// The one path of the collect API.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// Validates, stores and hands off submissions. Holds trait objects only,
/// so it runs over MongoDB and a real dispatch path in production and over
/// in-memory fakes in tests and dev mode.
pub struct Collector {
    /// Where messages are kept; a `202` means it acknowledged the write.
    pub store: Arc<dyn MessageStore>,
    /// The way to dispatch, checked before writing and called after.
    pub handoff: Arc<dyn Handoff>,
    /// Who may call, and the source name that scopes their idempotency keys.
    pub api_keys: ApiKeys,
    /// Bounds on a submission.
    pub limits: Limits,
    /// The topic side (publish, broadcast, presence); `None` answers its
    /// paths `501 not_implemented`.
    pub topics: Option<Topics>,
}

/// An HTTP request as collect needs it, whatever carried it (Lambda event,
/// axum request, test).
#[derive(Debug, Clone)]
pub struct CollectRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path, without query string or API Gateway stage prefix.
    pub path: String,
    /// The query string (without `?`), if any.
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The raw body. Callers may cut it one byte past
    /// [`Limits::max_body_bytes`]: anything longer is refused anyway.
    pub body: Bytes,
}

/// An HTTP response as collect produces it; the adapters turn it into their
/// own response type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body, JSON.
    pub body: String,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
}

impl CollectResponse {
    /// A JSON response with `status` and `body` serialised.
    pub(crate) fn json(status: u16, body: &impl serde::Serialize) -> Self {
        // Serialising our own plain types cannot fail; answer a bare 500
        // rather than panic if it ever does.
        let (status, body) = match serde_json::to_string(body) {
            Ok(text) => (status, text),
            Err(_) => (
                500,
                r#"{"error":{"code":"internal","message":"could not encode the answer"}}"#.into(),
            ),
        };
        Self {
            status,
            body,
            headers: vec![("content-type".into(), "application/json".into())],
        }
    }

    /// Adds a header.
    pub(crate) fn push_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the request log line reports besides the outcome.
#[derive(Default)]
pub(crate) struct Trace<'a> {
    pub(crate) source: Option<&'a str>,
    /// Recipients, or topics.
    pub(crate) recipients: Option<usize>,
    pub(crate) message_id: Option<MessageId>,
}

impl Collector {
    /// A collector with the default [`Limits`], without the topic side.
    pub fn new(store: Arc<dyn MessageStore>, handoff: Arc<dyn Handoff>, api_keys: ApiKeys) -> Self {
        Self {
            store,
            handoff,
            api_keys,
            limits: Limits::default(),
            topics: None,
        }
    }

    /// The same with the topic side.
    pub fn with_topics(mut self, topics: Topics) -> Self {
        self.topics = Some(topics);
        self
    }

    /// Serves one request to the collect API.
    ///
    /// For `POST /v1/messages`, in this order:
    /// 1. `401` without a valid `Authorization: Bearer <key>`;
    /// 2. `413` when the body is over [`Limits::max_body_bytes`];
    /// 3. `400` when the body is not a valid submission;
    /// 4. `503` when dispatch is not ready (nothing is stored);
    /// 5. the store's append: `503` (with `retry-after`) when it is
    ///    unavailable or contended, `500` on other failures;
    /// 6. `503` when the hand-off fails (the message is stored; retrying
    ///    with the same idempotency key is safe);
    /// 7. `202` with one receipt per distinct recipient, in `to` order.
    ///
    /// The topic paths (publish, broadcast, presence) are served as
    /// [`crate::topics`] documents. Other paths answer `404`, other methods
    /// `405`. Every answer is JSON. Logs one line per request.
    pub async fn handle(&self, request: CollectRequest) -> CollectResponse {
        let mut trace = Trace::default();
        let result = if request.path == MESSAGES_PATH {
            self.submit(&request, &mut trace)
                .await
                .map(|accepted| CollectResponse::json(202, &accepted))
        } else {
            match Route::of(&request.path) {
                Some(route) => self.topic_request(route, &request, &mut trace).await,
                None => Err(CollectError::NotFound(request.path.clone())),
            }
        };
        let method = request.method.as_str();
        let path = request.path.as_str();
        let message_id = trace.message_id.as_ref().map(MessageId::as_str);
        match result {
            Ok(response) => {
                tracing::info!(
                    method,
                    path,
                    status = response.status,
                    source = trace.source,
                    recipients = trace.recipients,
                    message_id,
                    "request served"
                );
                response
            }
            Err(error) => {
                let status = error.status();
                let code = error.code();
                if status >= 500 {
                    tracing::warn!(
                        method, path, status, code, source = trace.source,
                        recipients = trace.recipients, message_id, error = %error,
                        "request failed"
                    );
                } else {
                    tracing::info!(
                        method, path, status, code, source = trace.source,
                        recipients = trace.recipients, error = %error,
                        "request refused"
                    );
                }
                error.into()
            }
        }
    }

    async fn submit<'a>(
        &'a self,
        request: &CollectRequest,
        trace: &mut Trace<'a>,
    ) -> Result<SubmitResponse, CollectError> {
        if request.method != Method::POST {
            return Err(CollectError::MethodNotAllowed(
                request.method.to_string(),
                Method::POST,
            ));
        }
        let source = self.authenticate(request.authorization.as_deref())?;
        trace.source = Some(source);
        if request.body.len() > self.limits.max_body_bytes {
            return Err(CollectError::TooLarge {
                max: self.limits.max_body_bytes,
            });
        }
        let submission = self.parse(&request.body)?;
        trace.recipients = Some(submission.to.len());

        self.handoff.ready().await.map_err(CollectError::NotReady)?;

        // Every submission is stored under an idempotency key: the caller's,
        // or one chosen here, which a 503 hands back so that a retry of a
        // keyless request cannot store a second copy.
        let key = submission
            .idempotency_key
            .unwrap_or_else(|| format!("{AUTO_KEY_PREFIX}{}", MessageId::random()));
        let message = NewMessage {
            to: submission.to,
            data: Arc::from(submission.data),
            source: source.to_owned(),
            idempotency_key: Some(key.clone()),
        };
        let mut stored = self
            .store
            .append(&message)
            .await
            .map_err(|e| CollectError::Store(e, key.clone()))?;
        trace.message_id = stored.first().map(|m| m.id.clone());
        if stored.len() > 1 {
            // Receipts follow `to`, whatever order the store answered in.
            let position: HashMap<&UserId, usize> =
                message.to.iter().enumerate().map(|(i, u)| (u, i)).collect();
            stored.sort_by_key(|m| position.get(&m.user_id).copied().unwrap_or(usize::MAX));
        }

        self.handoff
            .hand_off(&stored)
            .await
            .map_err(|e| CollectError::HandoffFailed(e, key))?;
        Ok(SubmitResponse::from_stored(&stored))
    }

    /// The source name of the caller's API key.
    pub(crate) fn authenticate(&self, authorization: Option<&str>) -> Result<&str, CollectError> {
        let key = authorization
            .and_then(edgepush_core::bearer::bearer_token)
            .ok_or(CollectError::MissingKey)?;
        self.api_keys.source_of(key).ok_or(CollectError::BadKey)
    }

    /// Parses and validates a submission.
    fn parse(&self, body: &[u8]) -> Result<Submission, CollectError> {
        Submission::parse(body, &self.limits).map_err(CollectError::BadRequest)
    }
}
