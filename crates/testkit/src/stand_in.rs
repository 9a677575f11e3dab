//! A real HTTP server that answers like API Gateway's management API and
//! records every request, for the tests of code that posts to API Gateway
//! connections (dispatch's poster, collect's direct hand-off). The AWS SDK
//! is sent to it with an endpoint override (`AWS_ENDPOINT_URL` or the
//! client's own), the stage path kept.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `POST`, `DELETE`, ...
    pub method: String,
    /// The path, percent-encoding kept (`/prod/@connections/abc%3D`).
    pub path: String,
    /// The `authorization` header (empty when absent): the SigV4 signature.
    pub authorization: String,
    /// The body: the frame posted to the connection.
    pub body: Bytes,
    /// The status the stand-in answered (`200`, `410`, `500`).
    pub status: u16,
}

/// The stand-in for API Gateway's management API: `410` with
/// `x-amzn-errortype: GoneException` for connections whose id starts with
/// `gone`, `500` for posts a test made fail
/// ([`fail_posts_containing`](Self::fail_posts_containing)), `200` for
/// every other request. Stops when dropped.
pub struct ManagementApiStandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    failing: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ManagementApiStandIn {
    /// Starts one on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let failing: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let (record, fail) = (seen.clone(), failing.clone());
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let (record, fail) = (record.clone(), fail.clone());
            async move { answer(request, &record, &fail).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            seen,
            failing,
            task,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:<port>`: the endpoint override.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The management API client's configuration for tests: static
    /// credentials, a region, no retries. The caller sends it here with an
    /// endpoint override of [`url`](Self::url) (the stage path kept), as
    /// `SdkConnectionPoster::new(config).with_endpoint_override(url)` does.
    pub fn sdk_config(&self) -> aws_sdk_apigatewaymanagement::Config {
        use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
        use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
        aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version_latest()
            .credentials_provider(Credentials::new(
                "AKIDMANAGEDEDGE",
                "managed-edge-secret",
                None,
                None,
                "test",
            ))
            .region(Region::new("us-east-1"))
            .retry_config(RetryConfig::disabled())
            .build()
    }

    /// Every request so far, in the order they arrived.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// From now on, posts whose body contains `needle` are answered `500
    /// InternalServerErrorException` (API Gateway failing), until
    /// [`heal`](Self::heal).
    pub fn fail_posts_containing(&self, needle: &str) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.push(needle.as_bytes().to_vec());
        }
    }

    /// Answers every post again.
    pub fn heal(&self) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.clear();
        }
    }
}

impl Drop for ManagementApiStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records `request`, then answers like the management API.
async fn answer(
    request: Request<Body>,
    record: &Mutex<Vec<SeenRequest>>,
    failing: &Mutex<Vec<Vec<u8>>>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let gone = path.contains("/@connections/gone");
    let fail = failing.lock().is_ok_and(|needles| {
        needles
            .iter()
            .any(|needle| body.windows(needle.len().max(1)).any(|w| w == &needle[..]))
    });
    let status = match (gone, fail) {
        (true, _) => 410,
        (false, true) => 500,
        (false, false) => 200,
    };
    if let Ok(mut seen) = record.lock() {
        seen.push(SeenRequest {
            method: parts.method.to_string(),
            path,
            authorization,
            body,
            status,
        });
    }
    let builder = Response::builder().header("content-type", "application/json");
    let response = if fail && !gone {
        builder
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("x-amzn-errortype", "InternalServerErrorException")
            .body(Body::from(r#"{"message":"Internal server error"}"#))
    } else if gone {
        builder
            .status(StatusCode::GONE)
            .header("x-amzn-errortype", "GoneException")
            .header("x-amzn-requestid", "c0ffee00-0000-4000-8000-000000000001")
            .body(Body::from(r#"{"message":null}"#))
    } else {
        builder.status(StatusCode::OK).body(Body::empty())
    };
    response.unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both answers over a real socket, and the record of each request.
    #[tokio::test]
    async fn answers_gone_for_gone_connections_and_records_requests() -> anyhow::Result<()> {
        let stand_in = ManagementApiStandIn::start().await?;
        let client = reqwest::Client::new();
        let live = client
            .post(format!("{}/prod/@connections/live-1", stand_in.url()))
            .header("authorization", "AWS4-HMAC-SHA256 x")
            .body("frame-1")
            .send()
            .await?;
        assert_eq!(live.status().as_u16(), 200);
        let gone = client
            .post(format!("{}/prod/@connections/gone-1", stand_in.url()))
            .body("frame-2")
            .send()
            .await?;
        assert_eq!(gone.status().as_u16(), 410);
        assert_eq!(
            gone.headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok()),
            Some("GoneException")
        );
        let seen = stand_in.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/prod/@connections/live-1");
        assert_eq!(seen[0].authorization, "AWS4-HMAC-SHA256 x");
        assert_eq!(&seen[0].body[..], b"frame-1");
        assert_eq!(seen[1].path, "/prod/@connections/gone-1");
        assert_eq!(seen[1].authorization, "");
        assert_eq!((seen[0].status, seen[1].status), (200, 410));

        // A post a test made fail: 500, recorded with its status; healed.
        stand_in.fail_posts_containing("\"seq\":7");
        let post = |body: &'static str| {
            client
                .post(format!("{}/prod/@connections/live-1", stand_in.url()))
                .body(body)
                .send()
        };
        assert_eq!(post(r#"{"seq":7}"#).await?.status().as_u16(), 500);
        assert_eq!(post(r#"{"seq":8}"#).await?.status().as_u16(), 200);
        stand_in.heal();
        assert_eq!(post(r#"{"seq":7}"#).await?.status().as_u16(), 200);
        let statuses: Vec<u16> = stand_in.seen().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 410, 500, 200, 200]);
        Ok(())
    }
}
