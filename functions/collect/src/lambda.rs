//! The Lambda face of collect: API Gateway HTTP API events (payload format
//! 2.0), which Lambda function URLs send too.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use lambda_runtime::LambdaEvent;
use tracing::Instrument as _;

use crate::{CollectError, CollectRequest, CollectResponse, Collector};

/// Serves one HTTP API / function URL invocation. Always answers with an
/// HTTP response (errors included); an `Err` is left for failures of the
/// invocation itself.
pub async fn handler(
    collector: &Collector,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let (request, context) = event.into_parts();
    let span = tracing::info_span!("collect", request_id = %context.request_id);
    let response = match collect_request(request) {
        Ok(request) => collector.handle(request).instrument(span).await,
        Err(error) => {
            span.in_scope(|| {
                tracing::info!(status = error.status(), error = %error, "request refused");
            });
            error.into()
        }
    };
    Ok(apigw_response(response))
}

/// The request inside an HTTP API event: method and path from the request
/// context (the stage prefix removed), the `Authorization` header, and the
/// body decoded from base64 when API Gateway encoded it.
pub fn collect_request(request: ApiGatewayV2httpRequest) -> Result<CollectRequest, CollectError> {
    let http = &request.request_context.http;
    let method = http.method.clone();
    let full_path = http
        .path
        .clone()
        .or(request.raw_path)
        .unwrap_or_else(|| "/".to_owned());
    let path = strip_stage(&full_path, request.request_context.stage.as_deref()).to_owned();
    let authorization = header(&request.headers, AUTHORIZATION);
    let body = match request.body {
        None => Bytes::new(),
        Some(text) if request.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|_| CollectError::BadRequest("the body is not valid base64".into()))?,
        Some(text) => Bytes::from(text),
    };
    let query = request.raw_query_string.filter(|q| !q.is_empty());
    Ok(CollectRequest {
        method,
        path,
        query,
        authorization,
        body,
    })
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

/// A header's value as text. `HeaderMap` names are case-insensitive, so
/// `Authorization` and `authorization` are the same header.
fn header(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The HTTP API response for `response`: a text body, never base64.
pub fn apigw_response(response: CollectResponse) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(response.status);
    out.headers = headers;
    out.body = Some(Body::Text(response.body));
    out.is_base64_encoded = false;
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
