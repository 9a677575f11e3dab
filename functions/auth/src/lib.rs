//! The auth Lambda function: verifies a token, returns the user id.
//!
//! The logic is [`handler`], an ordinary async function over a
//! [`TokenVerifier`] trait object: `main.rs` wires it to the Lambda runtime
//! with a [`edgepush_auth::JwtVerifier`], tests call it directly, and dev
//! mode can mount it on a local HTTP server.
//!
//! Event: `{"token": "<jwt>"}` ([`AuthRequest`]). Answer ([`AuthResponse`]):
//! `{"ok":true,"user_id":"alice","expires_at":1700000000}` or
//! `{"ok":false,"error":{"code":"expired","message":"token expired"}}`, with
//! `code` one of `missing`, `invalid`, `expired`, `not_yet_valid`
//! (and `unavailable` when the verifier itself depends on something down).
//! A refused token is an answer, not a function error: the invocation
//! succeeds, so Lambda does not retry it.
//!
//! The same binary is also an API Gateway Lambda authorizer (the WebSocket
//! API's `$connect` route): [`dispatch`] looks at each payload and hands a
//! `{"type": "REQUEST", "methodArn": ...}` event to
//! [`authorizer::authorize_request`], which answers an IAM policy, and
//! anything else to [`handler`]. See [`authorizer`] for the policy and the
//! choice of `Deny` over an `Unauthorized` error.

pub mod authorizer;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequest, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use edgepush_core::TokenVerifier;
use lambda_runtime::LambdaEvent;
use serde::Serialize;

pub use edgepush_auth::wire::{AuthRequest, AuthResponse, ErrorBody, ErrorCode};

/// One invocation's payload, by the shape it has.
#[derive(Debug)]
pub enum AuthEvent {
    /// `{"token": "..."}`: the function's own contract (edge nodes in
    /// `remote` auth mode, [`edgepush_auth::RemoteVerifier`]).
    Token(AuthRequest),
    /// An API Gateway `REQUEST` authorizer event (`"type": "REQUEST"`),
    /// e.g. a WebSocket `$connect`.
    Request(Box<ApiGatewayCustomAuthorizerRequestTypeRequest>),
    /// An API Gateway `TOKEN` authorizer event (`"type": "TOKEN"`).
    TokenAuthorizer(ApiGatewayCustomAuthorizerRequest),
}

impl AuthEvent {
    /// Classifies a payload by its `type` field: `REQUEST` and `TOKEN` are
    /// API Gateway authorizer events, anything else is an [`AuthRequest`].
    /// Fails when the payload does not fit the shape it claims.
    pub fn from_value(payload: serde_json::Value) -> Result<Self, serde_json::Error> {
        let kind = payload.get("type").and_then(serde_json::Value::as_str);
        match kind {
            Some("REQUEST") => Ok(Self::Request(Box::new(serde_json::from_value(payload)?))),
            Some("TOKEN") => Ok(Self::TokenAuthorizer(serde_json::from_value(payload)?)),
            _ => Ok(Self::Token(serde_json::from_value(payload)?)),
        }
    }
}

/// What [`dispatch`] answers: the shape that matches the event's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AuthAnswer {
    /// The answer to an [`AuthRequest`].
    Token(AuthResponse),
    /// The IAM policy an API Gateway authorizer returns.
    Policy(ApiGatewayCustomAuthorizerResponse),
}

/// The Lambda entry point: accepts either payload shape ([`AuthEvent`]) and
/// answers in kind.
///
/// Fails for a payload that fits no shape (e.g. `{"token": 5}`), and for an
/// authorizer event when the verifier is unavailable.
pub async fn dispatch(
    verifier: &dyn TokenVerifier,
    event: LambdaEvent<serde_json::Value>,
) -> Result<AuthAnswer, lambda_runtime::Error> {
    let (payload, context) = event.into_parts();
    let parsed = AuthEvent::from_value(payload).inspect_err(|e| {
        tracing::warn!(request_id = %context.request_id, error = %e, "unrecognised event");
    })?;
    match parsed {
        AuthEvent::Token(request) => handler(verifier, LambdaEvent::new(request, context))
            .await
            .map(AuthAnswer::Token),
        AuthEvent::Request(request) => {
            authorizer::authorize_request(verifier, LambdaEvent::new(*request, context))
                .await
                .map(AuthAnswer::Policy)
        }
        AuthEvent::TokenAuthorizer(request) => {
            authorizer::authorize_token(verifier, LambdaEvent::new(request, context))
                .await
                .map(AuthAnswer::Policy)
        }
    }
}

/// Verifies the event's token with `verifier`.
///
/// Never fails for a bad token; the `Result` is the Lambda handler
/// signature's, kept for errors of the function itself.
pub async fn handler(
    verifier: &dyn TokenVerifier,
    event: LambdaEvent<AuthRequest>,
) -> Result<AuthResponse, lambda_runtime::Error> {
    let (request, context) = event.into_parts();
    let result = verifier.verify(&request.token).await;
    match &result {
        Ok(identity) => tracing::info!(
            request_id = %context.request_id,
            user_id = %identity.user_id,
            "token accepted"
        ),
        Err(e) => tracing::info!(
            request_id = %context.request_id,
            reason = %e,
            "token refused"
        ),
    }
    Ok(AuthResponse::from(result))
}
