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

use edgepush_core::TokenVerifier;
use lambda_runtime::LambdaEvent;

pub use edgepush_auth::wire::{AuthRequest, AuthResponse, ErrorBody, ErrorCode};

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
