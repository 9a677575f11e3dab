//! The production [`ConnectionPoster`]: API Gateway's `PostToConnection`
//! through the real `aws-sdk-apigatewaymanagement` client (feature `aws`;
//! dev mode has no API Gateway and builds without it).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use edgepush_core::ConnId;

use crate::apigw::{ConnectionPoster, PostToConnectionError};

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
pub(crate) const DEFAULT_POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on opening a connection to API Gateway.
pub(crate) const DEFAULT_POST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// throttling), and a bound of 5 s per post. An endpoint URL in `sdk`
    /// (`AWS_ENDPOINT_URL`: an emulator, or a test's stand-in) becomes the
    /// [endpoint override](Self::with_endpoint_override).
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
        let poster = Self::new(base);
        match sdk.endpoint_url() {
            Some(origin) => poster.with_endpoint_override(origin),
            None => poster,
        }
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
        outcome(result)
    }

    async fn delete_connection(
        &self,
        endpoint: &str,
        connection: &ConnId,
    ) -> Result<(), PostToConnectionError> {
        let result = self
            .client(endpoint)
            .delete_connection()
            .connection_id(connection.as_str())
            .send()
            .await;
        outcome(result)
    }
}

/// A management API call's result: `Gone` for a `GoneException` (410),
/// `Failed` with the status and the SDK's whole error chain otherwise.
fn outcome<O, E>(result: Result<O, SdkError<E, HttpResponse>>) -> Result<(), PostToConnectionError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let err = match result {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    if err.as_service_error().and_then(|e| e.code()) == Some("GoneException") {
        return Err(PostToConnectionError::Gone);
    }
    Err(PostToConnectionError::Failed {
        status: err.raw_response().map(|r| r.status().as_u16()),
        reason: DisplayErrorContext(&err).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
