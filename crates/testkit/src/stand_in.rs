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
}

/// The stand-in for API Gateway's management API: `410` with
/// `x-amzn-errortype: GoneException` for connections whose id starts with
/// `gone`, `200` for every other request. Stops when dropped.
pub struct ManagementApiStandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ManagementApiStandIn {
    /// Starts one on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let record = record.clone();
            async move { answer(request, &record).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, seen, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:<port>`: the endpoint override.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in the order they arrived.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ManagementApiStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records `request`, then answers like the management API.
async fn answer(request: Request<Body>, record: &Mutex<Vec<SeenRequest>>) -> Response<Body> {
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
    if let Ok(mut seen) = record.lock() {
        seen.push(SeenRequest {
            method: parts.method.to_string(),
            path,
            authorization,
            body,
        });
    }
    let builder = Response::builder().header("content-type", "application/json");
    let response = if gone {
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
        Ok(())
    }
}
