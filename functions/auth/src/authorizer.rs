//! The auth function as an API Gateway Lambda authorizer: the WebSocket
//! API's `$connect` route (a `REQUEST` authorizer, payload format 1.0) and,
//! for REST APIs, a `TOKEN` authorizer.
//!
//! The token comes from `Authorization: Bearer <jwt>` or, for browsers that
//! cannot set headers on a WebSocket handshake, from `?token=<jwt>`: the
//! same two places an edge node reads it from. The answer is an IAM policy
//! ([`ApiGatewayCustomAuthorizerResponse`]):
//!
//! - a good token: `Allow` `execute-api:Invoke` on the event's `methodArn`,
//!   `principalId` = the user id, and `context: {"userId": "<user>", "exp":
//!   <the token's exp>}` (`exp` only when the token has one), which API
//!   Gateway hands to every event of the connection as
//!   `requestContext.authorizer.userId` / `.exp` (what
//!   `functions/connections` reads: it closes the connection at `exp`);
//! - a refused token (missing, malformed, wrongly signed, expired, not yet
//!   valid): an explicit `Deny` on the `methodArn`, which API Gateway turns
//!   into `403 Forbidden` and the handshake fails.
//!
//! Why `Deny` rather than failing the invocation with the error message
//! `Unauthorized` (which API Gateway maps to `401`): a refused token is an
//! answer, not a fault of the function, the same rule as the `{"token"}`
//! contract in [`crate::handler`]. The invocation succeeds, so Lambda error
//! metrics and alarms only count real faults, and API Gateway may cache the
//! verdict per identity source like any other policy. A WebSocket client
//! sees the handshake refused either way.
//!
//! The one case that *is* a function error is
//! [`AuthError::Unavailable`]: the verifier could not decide, so neither
//! `Allow` nor a (cacheable) `Deny` would be true; API Gateway answers `500`
//! and the client may retry.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequest,
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use edgepush_core::{AuthError, Identity, TokenVerifier};
use lambda_runtime::{Context, LambdaEvent};

/// The authorizer context key that carries the user id. It must match
/// `edgepush_connections::AUTHORIZER_USER_ID_KEY`, which reads it back on
/// `$connect`.
pub const USER_ID_CONTEXT_KEY: &str = "userId";

/// The authorizer context key that carries the token's `exp` (seconds since
/// the Unix epoch). It must match `edgepush_connections::AUTHORIZER_EXP_KEY`.
pub const EXP_CONTEXT_KEY: &str = "exp";

/// The authorizer context key that carries the token's `subscribe` claim
/// (topic patterns, a JSON list in a string). It must match
/// `edgepush_connections::AUTHORIZER_SUBSCRIBE_KEY`.
pub const SUBSCRIBE_CONTEXT_KEY: &str = "subscribe";

/// The IAM policy language version API Gateway expects.
const POLICY_VERSION: &str = "2012-10-17";

/// The action a WebSocket or REST client needs to call the API.
const INVOKE_ACTION: &str = "execute-api:Invoke";

/// The `principalId` of a denied request: API Gateway requires one on every
/// policy, and there is no user to name.
const ANONYMOUS_PRINCIPAL: &str = "anonymous";

/// Answers a `REQUEST` authorizer event (WebSocket `$connect`, REST, or an
/// HTTP API using the 1.0 payload) with an IAM policy.
///
/// Fails only when the verifier is unavailable (see the module docs).
pub async fn authorize_request(
    verifier: &dyn TokenVerifier,
    event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>,
) -> Result<ApiGatewayCustomAuthorizerResponse, lambda_runtime::Error> {
    let (request, context) = event.into_parts();
    let token = request_token(&request);
    let result = match token {
        Some(token) => verifier.verify(token).await,
        None => Err(AuthError::Missing),
    };
    answer(result, request.method_arn.as_deref(), &context)
}

/// Answers a `TOKEN` authorizer event (`authorizationToken`, the value of
/// the API's identity header) with an IAM policy. A `Bearer ` prefix is
/// accepted and removed.
pub async fn authorize_token(
    verifier: &dyn TokenVerifier,
    event: LambdaEvent<ApiGatewayCustomAuthorizerRequest>,
) -> Result<ApiGatewayCustomAuthorizerResponse, lambda_runtime::Error> {
    let (request, context) = event.into_parts();
    let token = request
        .authorization_token
        .as_deref()
        .map(|value| {
            edgepush_core::bearer::bearer_token(value)
                .unwrap_or(value)
                .trim()
        })
        .filter(|token| !token.is_empty());
    let result = match token {
        Some(token) => verifier.verify(token).await,
        None => Err(AuthError::Missing),
    };
    answer(result, request.method_arn.as_deref(), &context)
}

/// The token of a `REQUEST` event: the `Authorization: Bearer` header
/// first, then the `token` query parameter. `None` when neither holds a
/// non-empty token.
pub fn request_token(request: &ApiGatewayCustomAuthorizerRequestTypeRequest) -> Option<&str> {
    let from_header = request
        .headers
        .get_all("authorization")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(edgepush_core::bearer::bearer_token)
        .map(str::trim)
        .filter(|token| !token.is_empty());
    from_header.or_else(|| {
        request
            .query_string_parameters
            .first("token")
            .map(str::trim)
            .filter(|token| !token.is_empty())
    })
}

/// The policy for a verdict, logged without the token.
fn answer(
    result: Result<Identity, AuthError>,
    method_arn: Option<&str>,
    context: &Context,
) -> Result<ApiGatewayCustomAuthorizerResponse, lambda_runtime::Error> {
    // Without a methodArn there is nothing to allow; a Deny on everything
    // is the only safe answer.
    let resource = method_arn.filter(|arn| !arn.is_empty());
    match result {
        Ok(identity) if identity.topic.is_some() => {
            // A subscribe token is for one topic, never for a connection
            // (as on edge nodes).
            tracing::info!(
                request_id = %context.request_id,
                user_id = %identity.user_id,
                "authorizer denied a subscribe token"
            );
            Ok(deny(resource.unwrap_or("*")))
        }
        Ok(identity) if resource.is_some() => {
            tracing::info!(
                request_id = %context.request_id,
                user_id = %identity.user_id,
                "authorizer allowed"
            );
            Ok(allow(&identity, resource.unwrap_or("*")))
        }
        Ok(identity) => {
            tracing::warn!(
                request_id = %context.request_id,
                user_id = %identity.user_id,
                "authorizer event has no methodArn; denying"
            );
            Ok(deny("*"))
        }
        Err(AuthError::Unavailable(reason)) => {
            tracing::error!(
                request_id = %context.request_id,
                reason = %reason,
                "token verifier unavailable"
            );
            Err(format!("token verifier unavailable: {reason}").into())
        }
        Err(e) => {
            tracing::info!(
                request_id = %context.request_id,
                reason = %e,
                "authorizer denied"
            );
            Ok(deny(resource.unwrap_or("*")))
        }
    }
}

/// `Allow` on `resource` for the token's user, with the user id and the
/// token's expiry in the context.
pub fn allow(identity: &Identity, resource: &str) -> ApiGatewayCustomAuthorizerResponse {
    let mut response = policy(IamPolicyEffect::Allow, resource);
    let user = identity.user_id.as_str();
    response.principal_id = Some(user.to_owned());
    let mut context = serde_json::Map::new();
    context.insert(USER_ID_CONTEXT_KEY.into(), user.into());
    if let Some(exp) = identity.expires_at {
        context.insert(EXP_CONTEXT_KEY.into(), exp.into());
    }
    if !identity.subscribe.is_empty() {
        // API Gateway passes only strings, numbers and booleans on: the
        // patterns as one JSON string.
        let patterns = serde_json::to_string(&identity.subscribe).unwrap_or_default();
        context.insert(SUBSCRIBE_CONTEXT_KEY.into(), patterns.into());
    }
    response.context = serde_json::Value::Object(context);
    response
}

/// An explicit `Deny` on `resource`.
pub fn deny(resource: &str) -> ApiGatewayCustomAuthorizerResponse {
    let mut response = policy(IamPolicyEffect::Deny, resource);
    response.principal_id = Some(ANONYMOUS_PRINCIPAL.to_owned());
    response
}

/// A one-statement policy; the event types are `#[non_exhaustive]`, hence
/// `Default` and field assignment rather than struct literals.
fn policy(effect: IamPolicyEffect, resource: &str) -> ApiGatewayCustomAuthorizerResponse {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec![INVOKE_ACTION.to_owned()];
    statement.effect = effect;
    statement.resource = vec![resource.to_owned()];
    let mut document = ApiGatewayCustomAuthorizerPolicy::default();
    document.version = Some(POLICY_VERSION.to_owned());
    document.statement = vec![statement];
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.policy_document = document;
    response.context = serde_json::Value::Object(serde_json::Map::new());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_have_the_api_gateway_shape() {
        let alice = Identity::new(
            edgepush_core::UserId::new("alice").expect("valid user id"),
            Some(1_700_000_000),
        );
        let allowed = serde_json::to_value(allow(&alice, "arn:x/$connect")).expect("serialises");
        assert_eq!(allowed["principalId"], "alice");
        assert_eq!(allowed["context"]["userId"], "alice");
        assert_eq!(allowed["context"]["exp"], 1_700_000_000);
        let forever = Identity {
            expires_at: None,
            ..alice.clone()
        };
        let allowed = serde_json::to_value(allow(&forever, "arn:x/$connect")).expect("serialises");
        assert_eq!(allowed["context"], serde_json::json!({"userId": "alice"}));
        let chatty = Identity {
            subscribe: vec!["chat:*".into()],
            ..forever.clone()
        };
        let allowed = serde_json::to_value(allow(&chatty, "arn:x/$connect")).expect("serialises");
        assert_eq!(allowed["context"]["subscribe"], r#"["chat:*"]"#);
        assert_eq!(allowed["policyDocument"]["Version"], POLICY_VERSION);
        let statement = &allowed["policyDocument"]["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(statement["Action"][0], INVOKE_ACTION);
        assert_eq!(statement["Resource"][0], "arn:x/$connect");

        let denied = serde_json::to_value(deny("arn:x/$connect")).expect("serialises");
        assert_eq!(denied["policyDocument"]["Statement"][0]["Effect"], "Deny");
        assert_eq!(denied["context"], serde_json::json!({}));
    }
}
