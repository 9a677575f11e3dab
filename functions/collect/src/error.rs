//! Every way a submission can be refused, and the one place where a refusal
//! becomes an HTTP answer.
//!
//! The conversion does not log: [`Collector::handle`](crate::Collector::handle)
//! logs each request once, with the full error, at the call site. The answer
//! carries a message for the caller, without backend details for 5xx.

use edgepush_core::protocol::ErrorBody;
use edgepush_core::{HandoffError, RouteError, StoreError};
use http::Method;

use crate::request::{CollectRequest, CollectResponse};

/// Why a request was not accepted. `Display` is the detailed, loggable text;
/// the HTTP answer is built by [`CollectResponse::from`].
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// No such path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The path exists, the method does not; the second is the one it
    /// answers.
    #[error("method {0} is not allowed")]
    MethodNotAllowed(String, Method),
    /// No `Authorization: Bearer <key>` header.
    #[error("missing bearer API key")]
    MissingKey,
    /// A key that is not configured.
    #[error("invalid API key")]
    BadKey,
    /// The body is over [`Limits::max_body_bytes`](crate::Limits::max_body_bytes).
    #[error("request body is over {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The body is not a valid submission; the text says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The hand-off to dispatch is down, checked before writing: nothing
    /// was stored.
    #[error("dispatch not ready, nothing stored: {0}")]
    NotReady(HandoffError),
    /// The message store failed; some copies may be stored. The key is the
    /// idempotency key to retry with.
    #[error("{0}")]
    Store(StoreError, String),
    /// The message is stored, but dispatch did not take it. The key is the
    /// idempotency key to retry with.
    #[error("stored, but the hand-off failed: {0}")]
    HandoffFailed(HandoffError, String),
    /// A topic path on a collector built without the topic side.
    #[error("topics are not configured on this collector")]
    TopicsNotConfigured,
    /// Presence was asked of a namespace that does not keep it.
    #[error("the namespace {0:?} does not keep presence")]
    PresenceDisabled(String),
    /// The presence store (or the node directory) failed.
    #[error("presence read failed: {0}")]
    Presence(RouteError),
}

impl CollectError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) | Self::PresenceDisabled(_) => 404,
            Self::MethodNotAllowed(..) => 405,
            Self::TopicsNotConfigured => 501,
            Self::Presence(RouteError::Unavailable(_)) => 503,
            Self::Presence(RouteError::Backend(_)) => 500,
            Self::MissingKey | Self::BadKey => 401,
            Self::TooLarge { .. } => 413,
            Self::BadRequest(_) => 400,
            Self::NotReady(_) | Self::HandoffFailed(..) => 503,
            Self::Store(StoreError::Unavailable(_) | StoreError::Contention(_), _) => 503,
            Self::Store(StoreError::Backend(_), _) => 500,
        }
    }

    /// The machine-readable code of the answer's [`ErrorBody`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::PresenceDisabled(_) => "presence_disabled",
            Self::MethodNotAllowed(..) => "method_not_allowed",
            Self::TopicsNotConfigured => "not_implemented",
            Self::Presence(RouteError::Unavailable(_)) => "unavailable",
            Self::Presence(RouteError::Backend(_)) => "internal",
            Self::MissingKey | Self::BadKey => "unauthorized",
            Self::TooLarge { .. } => "too_large",
            Self::BadRequest(_) => "bad_request",
            Self::NotReady(_) | Self::HandoffFailed(..) => "unavailable",
            Self::Store(StoreError::Unavailable(_) | StoreError::Contention(_), _) => "unavailable",
            Self::Store(StoreError::Backend(_), _) => "internal",
        }
    }

    /// The idempotency key a retry must carry, when the store was written to.
    fn retry_key(&self) -> Option<&str> {
        match self {
            Self::Store(_, key) | Self::HandoffFailed(_, key) => Some(key),
            _ => None,
        }
    }

    /// The message for the caller: client errors say what to fix, server
    /// errors say what happened to the message, never backend details.
    fn public_message(&self) -> String {
        match self {
            Self::NotFound(_) => "no such path; see the collect API: POST /v1/messages, \
                 POST /v1/topics/{topic}/messages, POST /v1/publish, POST /v1/broadcast, \
                 GET /v1/users/{user}/presence, GET /v1/presence, \
                 GET /v1/topics/{topic}/presence, GET /v1/topics/{topic}/members"
                .into(),
            Self::MethodNotAllowed(method, allowed) => {
                format!("method {method} is not allowed here; use {allowed}")
            }
            Self::TopicsNotConfigured => "topics are not configured on this deployment".into(),
            Self::PresenceDisabled(namespace) => format!(
                "the namespace {namespace:?} does not keep presence (enable it in EDGEPUSH_TOPIC_NAMESPACES)"
            ),
            Self::Presence(RouteError::Unavailable(_)) => {
                "presence is unavailable; retry later".into()
            }
            Self::Presence(RouteError::Backend(_)) => "presence could not be read".into(),
            Self::BadRequest(text) => text.clone(),
            Self::MissingKey => "an API key is required: Authorization: Bearer <key>".into(),
            Self::BadKey => "invalid API key".into(),
            Self::TooLarge { max } => format!("the request body is over {max} bytes"),
            Self::NotReady(_) => "delivery is unavailable; nothing was stored, retry later".into(),
            Self::Store(StoreError::Unavailable(_) | StoreError::Contention(_), _) => {
                "the message store is unavailable and the message may be partly stored; \
                 retry later with error.idempotency_key"
                    .into()
            }
            Self::Store(StoreError::Backend(_), _) => {
                "the message store failed and the message may be partly stored; retry \
                 with error.idempotency_key"
                    .into()
            }
            Self::HandoffFailed(..) => {
                "the message is stored but could not be handed to delivery; retry with \
                 error.idempotency_key: nothing is stored twice and delivery is tried again"
                    .into()
            }
        }
    }
}

impl From<CollectError> for CollectResponse {
    fn from(error: CollectError) -> Self {
        let mut body = ErrorBody::new(error.code(), error.public_message());
        body.error.idempotency_key = error.retry_key().map(str::to_owned);
        let mut response = CollectResponse::json(error.status(), &body);
        match &error {
            CollectError::MethodNotAllowed(_, allowed) => {
                response.push_header("allow", allowed.as_str());
            }
            CollectError::MissingKey | CollectError::BadKey => {
                response.push_header("www-authenticate", "Bearer");
            }
            _ if error.status() == 503 => response.push_header("retry-after", "1"),
            _ => {}
        }
        response
    }
}

/// `413` for a body over [`Limits::max_body_bytes`](crate::Limits::max_body_bytes).
pub(crate) fn check_size(
    request: &CollectRequest,
    limits: &edgepush_core::submit::Limits,
) -> Result<(), CollectError> {
    if request.body.len() > limits.max_body_bytes {
        return Err(CollectError::TooLarge {
            max: limits.max_body_bytes,
        });
    }
    Ok(())
}
