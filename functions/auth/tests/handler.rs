//! The auth function's handler, called directly as the Lambda runtime
//! would, with a real JwtVerifier.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgepush_auth::{AuthConfig, Claims, JwtVerifier, mint_hs256};
use edgepush_auth_fn::{AuthRequest, AuthResponse, ErrorCode, handler};
use lambda_runtime::{Context, LambdaEvent};

const SECRET: &[u8] = b"handler-test-secret-0123456789";

fn verifier() -> JwtVerifier {
    JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec())).expect("valid config")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn call(token: &str) -> serde_json::Value {
    let event = LambdaEvent::new(
        AuthRequest {
            token: token.to_owned(),
        },
        Context::default(),
    );
    let response = handler(&verifier(), event)
        .await
        .expect("handler never fails");
    serde_json::to_value(response).expect("serialises")
}

#[tokio::test]
async fn valid_token_returns_the_user() {
    let claims = Claims::new("alice", Duration::from_secs(300));
    let body = call(&mint_hs256(SECRET, &claims)).await;
    assert_eq!(
        body,
        serde_json::json!({"ok": true, "user_id": "alice", "expires_at": claims.exp})
    );
}

#[tokio::test]
async fn expired_token_is_reported_as_expired() {
    let mut claims = Claims::new("alice", Duration::from_secs(300));
    claims.exp = now() - 3600;
    let body = call(&mint_hs256(SECRET, &claims)).await;
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"]["code"], "expired");
    assert_eq!(body["error"]["message"], "token expired");
}

#[tokio::test]
async fn future_nbf_is_reported_as_not_yet_valid() {
    let mut claims = Claims::new("alice", Duration::from_secs(300));
    claims.nbf = Some(now() + 600);
    let body = call(&mint_hs256(SECRET, &claims)).await;
    assert_eq!(body["error"]["code"], "not_yet_valid");
}

#[tokio::test]
async fn bad_tokens_are_reported_as_invalid_without_echo() {
    let wrong_secret = mint_hs256(
        b"some-other-secret-0123456789",
        &Claims::new("alice", Duration::from_secs(300)),
    );
    for token in ["garbage-token-value", wrong_secret.as_str()] {
        let body = call(token).await;
        assert_eq!(body["ok"], false, "{body}");
        assert_eq!(body["error"]["code"], "invalid", "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(!message.is_empty());
        assert!(
            !message.contains(token),
            "message echoes the token: {message}"
        );
    }
}

#[tokio::test]
async fn empty_token_is_reported_as_missing() {
    let body = call("").await;
    assert_eq!(body["error"]["code"], "missing");
    // A payload without the field reads as an empty token.
    let request: AuthRequest = serde_json::from_str("{}").expect("token defaults to empty");
    let response = handler(&verifier(), LambdaEvent::new(request, Context::default()))
        .await
        .expect("handler never fails");
    match response {
        AuthResponse::Refused(error) => assert_eq!(error.code, ErrorCode::Missing),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
