//! [`RemoteVerifier`]: asks the auth function over HTTP.
//!
//! For edge nodes that do not hold the keys themselves. It POSTs
//! [`AuthRequest`] JSON to a URL that runs the auth function's handler, for
//! example the Lambda Invoke API of `cargo lambda watch`
//! (`http://127.0.0.1:9000/2015-03-31/functions/auth/invocations`) or the
//! dev-mode HTTP mount, and reads [`AuthResponse`]. (AWS's own Invoke API
//! also needs SigV4 signing, which this client does not do.)
//!
//! The token travels in the body, never in the URL, so it stays out of
//! access logs. Anything other than a well-formed answer, including a
//! timeout, is [`AuthError::Unavailable`]: the token was not judged.

use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::{AuthError, Identity, TokenVerifier};
use reqwest::Url;

use crate::config::ConfigError;
use crate::wire::{AuthRequest, AuthResponse};

/// Time allowed for one verification round trip by [`RemoteVerifier::new`].
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest answer read from the auth function, in bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A [`TokenVerifier`] that calls the auth function over HTTP.
#[derive(Debug, Clone)]
pub struct RemoteVerifier {
    /// Where the auth function's handler answers POSTs.
    url: Url,
    /// Shared connection pool; its timeout bounds each verification.
    client: reqwest::Client,
}

impl RemoteVerifier {
    /// A verifier POSTing to `url`, giving up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ConfigError::Remote(format!("cannot build the HTTP client: {e}")))?;
        Self::with_client(url, client)
    }

    /// A verifier POSTing to `url` with a caller-configured client (its
    /// timeout is the caller's business).
    pub fn with_client(url: &str, client: reqwest::Client) -> Result<Self, ConfigError> {
        let url = Url::parse(url)
            .map_err(|e| ConfigError::Remote(format!("bad auth function URL {url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::Remote(format!(
                "auth function URL must be http(s), not {}",
                url.scheme()
            )));
        }
        Ok(Self { url, client })
    }

    /// The URL this verifier calls.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }
}

#[async_trait]
impl TokenVerifier for RemoteVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // Same verdict the function would give, without the round trip.
        if token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        let body = AuthRequest {
            token: token.to_owned(),
        };
        let response = self
            .client
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(unavailable)?;

        let status = response.status();
        // The Lambda Invoke API answers 200 with this header when the
        // function itself failed.
        if let Some(kind) = response.headers().get("x-amz-function-error") {
            let kind = kind.to_str().unwrap_or("?").to_owned();
            return Err(AuthError::Unavailable(format!(
                "auth function failed ({kind})"
            )));
        }
        if !status.is_success() {
            return Err(AuthError::Unavailable(format!(
                "auth function answered HTTP {status}"
            )));
        }
        let bytes = response.bytes().await.map_err(unavailable)?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(AuthError::Unavailable(
                "auth function answer too large".to_owned(),
            ));
        }
        let answer: AuthResponse = serde_json::from_slice(&bytes)
            .map_err(|e| AuthError::Unavailable(format!("auth function answer unreadable: {e}")))?;
        answer.into_result()
    }
}

fn unavailable(e: reqwest::Error) -> AuthError {
    if e.is_timeout() {
        AuthError::Unavailable("auth function timed out".to_owned())
    } else if e.is_connect() {
        AuthError::Unavailable("cannot connect to the auth function".to_owned())
    } else {
        // Without the URL: it is configuration, already known to operators.
        AuthError::Unavailable(format!("auth function call failed: {}", e.without_url()))
    }
}
