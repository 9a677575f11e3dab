//! collect's HTTP face: one axum router serving [`Collector::handle`],
//! behind a local listener in dev mode and behind `lambda_http` in the
//! Lambda function ([`crate::lambda`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http_body_util::BodyExt as _;

use crate::{CollectError, CollectRequest, CollectResponse, Collector};

/// A router that sends every request (any path, any method) to `collector`,
/// so unknown paths and methods get collect's own JSON `404`/`405`.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new().fallback(serve).with_state(collector)
}

async fn serve(State(collector): State<Arc<Collector>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Read one byte past the limit: enough for `handle` to answer 413 after
    // checking the API key, without buffering an unbounded body.
    let limit = collector.limits.max_body_bytes.saturating_add(1);
    let response = match read_at_most(body, limit).await {
        Ok(body) => {
            collector
                .handle(CollectRequest {
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                    authorization,
                    body,
                })
                .await
        }
        Err(error) => {
            tracing::info!(error = %error, "could not read a request body");
            CollectError::BadRequest("could not read the request body".into()).into()
        }
    };
    http_response(response)
}

/// The first `limit` bytes of `body`; stops reading there.
async fn read_at_most(mut body: Body, limit: usize) -> Result<Bytes, axum::Error> {
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            let take = data.len().min(limit - buf.len());
            buf.extend_from_slice(&data[..take]);
        }
    }
    Ok(buf.freeze())
}

/// The HTTP response of a [`CollectResponse`].
pub(crate) fn http_response(response: CollectResponse) -> Response {
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out
}
