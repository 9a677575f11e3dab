//! The HTTP-shaped core of collect: one request in, one response out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use edgepush_core::protocol::SubmitResponse;
use edgepush_core::{Handoff, MessageId, MessageStore, NewMessage, UserId};
use http::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{ApiKeys, CollectError};

/// The start of the idempotency keys collect chooses for submissions that
/// came without one.
pub const AUTO_KEY_PREFIX: &str = "auto-";

/// The one path of the collect API.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// Bounds on what one submission may ask for. They protect the store and the
/// edge nodes: a message is stored once per recipient and every copy travels
/// to every connection of its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in `to` (before duplicates are removed).
    pub max_recipients: usize,
    /// Most bytes of `data`, as JSON text. Keeps every `msg` frame under the
    /// API Gateway WebSocket limit of 128 KiB.
    pub max_data_bytes: usize,
    /// Most bytes of the whole request body, checked before parsing.
    pub max_body_bytes: usize,
    /// Most bytes of an idempotency key (it is stored and indexed).
    pub max_idempotency_key_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_recipients: 1000,
            max_data_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_idempotency_key_len: 128,
        }
    }
}

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
}

/// An HTTP request as collect needs it, whatever carried it (Lambda event,
/// axum request, test).
#[derive(Debug, Clone)]
pub struct CollectRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path, without query string or API Gateway stage prefix.
    pub path: String,
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

/// The body of `POST /v1/messages`, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    to: Vec<String>,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A validated submission.
struct Submission {
    /// Recipients, validated and deduplicated, first occurrence kept.
    to: Vec<UserId>,
    /// The caller's JSON text, untouched.
    data: Box<RawValue>,
    idempotency_key: Option<String>,
}

/// What the request log line reports besides the outcome.
#[derive(Default)]
struct Trace<'a> {
    source: Option<&'a str>,
    recipients: Option<usize>,
    message_id: Option<MessageId>,
}

impl Collector {
    /// A collector with the default [`Limits`].
    pub fn new(store: Arc<dyn MessageStore>, handoff: Arc<dyn Handoff>, api_keys: ApiKeys) -> Self {
        Self {
            store,
            handoff,
            api_keys,
            limits: Limits::default(),
        }
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
    /// Other paths answer `404`, other methods `405`. Every answer is JSON.
    /// Logs one line per request.
    pub async fn handle(&self, request: CollectRequest) -> CollectResponse {
        let mut trace = Trace::default();
        let result = self.submit(&request, &mut trace).await;
        let method = request.method.as_str();
        let path = request.path.as_str();
        let message_id = trace.message_id.as_ref().map(MessageId::as_str);
        match result {
            Ok(accepted) => {
                tracing::info!(
                    method,
                    path,
                    status = 202,
                    source = trace.source,
                    recipients = trace.recipients,
                    message_id,
                    "message accepted"
                );
                CollectResponse::json(202, &accepted)
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
        if request.path != MESSAGES_PATH {
            return Err(CollectError::NotFound(request.path.clone()));
        }
        if request.method != Method::POST {
            return Err(CollectError::MethodNotAllowed(request.method.to_string()));
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
    fn authenticate(&self, authorization: Option<&str>) -> Result<&str, CollectError> {
        let key = authorization
            .and_then(edgepush_core::bearer::bearer_token)
            .ok_or(CollectError::MissingKey)?;
        self.api_keys.source_of(key).ok_or(CollectError::BadKey)
    }

    /// Parses and validates a submission.
    fn parse(&self, body: &[u8]) -> Result<Submission, CollectError> {
        let limits = &self.limits;
        let bad = |text: String| Err(CollectError::BadRequest(text));

        // serde accepts a JSON array for a struct; only an object is a body.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => bad("the body must be a JSON object".into()),
                Err(e) => bad(format!("malformed JSON: {e}")),
            };
        }
        let raw: SubmitBody = match serde_json::from_slice(body) {
            Ok(raw) => raw,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return bad(format!("invalid submission: {e}"));
            }
            Err(e) => return bad(format!("malformed JSON: {e}")),
        };

        if raw.to.is_empty() {
            return bad("`to` must name at least one recipient".into());
        }
        if raw.to.len() > limits.max_recipients {
            return bad(format!(
                "`to` has {} entries; at most {} are allowed",
                raw.to.len(),
                limits.max_recipients
            ));
        }
        let mut to = Vec::with_capacity(raw.to.len());
        let mut seen = HashSet::with_capacity(raw.to.len());
        for (index, name) in raw.to.iter().enumerate() {
            let user = match UserId::new(name) {
                Ok(user) => user,
                Err(e) => return bad(format!("`to[{index}]` is not a valid user id: {e}")),
            };
            if seen.insert(user.clone()) {
                to.push(user);
            }
        }

        let data_len = raw.data.get().len();
        if data_len > limits.max_data_bytes {
            return bad(format!(
                "`data` is {data_len} bytes of JSON; at most {} are allowed",
                limits.max_data_bytes
            ));
        }

        if let Some(key) = &raw.idempotency_key {
            if key.is_empty() {
                return bad("`idempotency_key` must not be empty".into());
            }
            if key.len() > limits.max_idempotency_key_len {
                return bad(format!(
                    "`idempotency_key` is longer than {} bytes",
                    limits.max_idempotency_key_len
                ));
            }
        }

        Ok(Submission {
            to,
            data: raw.data,
            idempotency_key: raw.idempotency_key,
        })
    }
}
