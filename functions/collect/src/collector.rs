//! The HTTP-shaped core of collect: one request in, one response out.

use std::collections::HashMap;
use std::sync::Arc;

use edgepush_core::protocol::SubmitResponse;
pub use edgepush_core::submit::Limits;
use edgepush_core::submit::Submission;
use edgepush_core::{Handoff, MessageId, MessageStore, NewMessage, UserId};
use http::Method;

use crate::ApiKeys;
use crate::error::{CollectError, check_size};
use crate::request::{AUTO_KEY_PREFIX, CollectRequest, CollectResponse, Trace};
use crate::topics::{Route, Topics};

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
        let source = self.admit(request, Method::POST, trace)?;
        check_size(request, &self.limits)?;
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
    /// Serves a request of the topic side ([`crate::topics`]) after the
    /// checks every request gets (method, API key).
    async fn topic_request<'a>(
        &'a self,
        route: Route,
        request: &CollectRequest,
        trace: &mut Trace<'a>,
    ) -> Result<CollectResponse, CollectError> {
        let source = self.admit(request, route.method(), trace)?;
        let topics = self
            .topics
            .as_ref()
            .ok_or(CollectError::TopicsNotConfigured)?;
        topics
            .serve(route, request, source, &self.limits, &*self.handoff, trace)
            .await
    }

    /// `405` unless `request` uses `method`, then `401` without a valid API
    /// key; the key's source otherwise (noted in `trace`).
    fn admit<'a>(
        &'a self,
        request: &CollectRequest,
        method: Method,
        trace: &mut Trace<'a>,
    ) -> Result<&'a str, CollectError> {
        if request.method != method {
            return Err(CollectError::MethodNotAllowed(
                request.method.to_string(),
                method,
            ));
        }
        let source = self.authenticate(request.authorization.as_deref())?;
        trace.source = Some(source);
        Ok(source)
    }

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
