//! The Lambda face of collect: API Gateway HTTP API events (payload format
//! 2.0), which Lambda function URLs send too, served by `lambda_http` with
//! the same axum router as dev mode ([`crate::router()`]).
//!
//! Two things happen before the router sees a request:
//!
//! - a body that API Gateway says is base64 but is not is answered `400`
//!   here (`lambda_http` would panic on it);
//! - the stage prefix of a named stage is removed from the path
//!   (`/prod/v1/messages` -> `/v1/messages`), so the API is the same on any
//!   stage and on a function URL.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use axum::Router;
use axum::extract::Request;
use base64::Engine as _;
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Adapter, LambdaEvent, Service as _};
use serde::Serialize;
use tracing::Instrument as _;

use crate::{CollectError, CollectResponse, Collector};

/// The router of the Lambda function: [`crate::router()`] with the stage
/// prefix removed from every path.
pub fn app(collector: Arc<Collector>) -> Router {
    crate::router(collector).layer(axum::middleware::map_request(strip_stage_prefix))
}

/// What the function answers: `lambda_http`'s response of the router, or
/// a refusal made before it. Serialised as the HTTP API response either way.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer<R> {
    Served(R),
    Refused(Box<ApiGatewayV2httpResponse>),
}

/// Serves one HTTP API / function URL invocation with `app` (what
/// `lambda_http::run(app)` does for each event, plus the base64 check).
/// Always answers with an HTTP response (errors included), serialised as
/// API Gateway expects it.
pub async fn handler(
    app: Router,
    event: LambdaEvent<LambdaRequest>,
) -> Result<impl Serialize + Send + use<>, lambda_http::Error> {
    let request_id = event.context.request_id.clone();
    let span = tracing::info_span!("collect", %request_id);
    if let Some(refusal) = check_body(&event.payload) {
        span.in_scope(|| {
            tracing::info!(
                status = refusal.status,
                "request refused: body is not base64"
            );
        });
        return Ok(Answer::Refused(Box::new(apigw_response(refusal))));
    }
    let mut adapter = Adapter::from(app);
    match adapter.call(event).instrument(span).await {
        Ok(response) => Ok(Answer::Served(response)),
        Err(never) => match never {},
    }
}

/// Runs the function: [`handler`] for every event.
pub async fn run(collector: Arc<Collector>) -> Result<(), lambda_http::Error> {
    let app = app(collector);
    lambda_runtime::run(lambda_http::service_fn(
        move |event: LambdaEvent<LambdaRequest>| handler(app.clone(), event),
    ))
    .await
}

/// A `400` for a body flagged base64 that does not decode.
fn check_body(request: &LambdaRequest) -> Option<CollectResponse> {
    let LambdaRequest::ApiGatewayV2(request) = request else {
        return None;
    };
    let body = request.body.as_deref()?;
    if !request.is_base64_encoded
        || base64::engine::general_purpose::STANDARD
            .decode(body)
            .is_ok()
    {
        return None;
    }
    Some(CollectError::BadRequest("the body is not valid base64".into()).into())
}

/// Removes a named stage's prefix from the request's path.
async fn strip_stage_prefix(mut request: Request) -> Request {
    let stage = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    let path = request.uri().path();
    let stripped = strip_stage(path, stage.as_deref());
    if stripped.len() != path.len() {
        let mut target = stripped.to_owned();
        if let Some(query) = request.uri().query() {
            target.push('?');
            target.push_str(query);
        }
        if let Ok(uri) = target.parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// `/prod/v1/messages` -> `/v1/messages` on a stage named `prod`; paths on
/// the `$default` stage (and function URLs) have no prefix.
fn strip_stage<'a>(path: &'a str, stage: Option<&str>) -> &'a str {
    match stage {
        Some(stage) if stage != "$default" && !stage.is_empty() => path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(stage))
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path),
        _ => path,
    }
}

/// The HTTP API response of a refusal made before the router.
fn apigw_response(response: CollectResponse) -> ApiGatewayV2httpResponse {
    let http = crate::router::http_response(response.clone());
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(response.status);
    out.headers = http.headers().clone();
    out.is_base64_encoded = false;
    out.body = Some(Body::Text(response.body));
    out
}

#[cfg(test)]
mod tests {
    use super::strip_stage;

    #[test]
    fn stage_prefixes_are_removed() {
        assert_eq!(
            strip_stage("/v1/messages", Some("$default")),
            "/v1/messages"
        );
        assert_eq!(
            strip_stage("/prod/v1/messages", Some("prod")),
            "/v1/messages"
        );
        assert_eq!(strip_stage("/production/x", Some("prod")), "/production/x");
        assert_eq!(strip_stage("/v1/messages", None), "/v1/messages");
    }
}
