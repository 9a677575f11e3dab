//! collect's requests and answers as HTTP-shaped values, whatever carried
//! them (the axum router, `lambda_http`, tests), and what the request log
//! line reports.

use bytes::Bytes;
use edgepush_core::MessageId;
use http::Method;

/// The start of the idempotency keys collect chooses for submissions that
/// came without one.
pub(crate) const AUTO_KEY_PREFIX: &str = "auto-";

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
    /// [`crate::Limits::max_body_bytes`]: anything longer is refused anyway.
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
