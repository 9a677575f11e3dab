//! Client tokens for the tests: good ones signed with the secret every test
//! node is configured with, and every kind of bad one a node must refuse.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgepush_auth::{Claims, mint_hs256, unix_now};
use edgepush_delivery::sigv4::PushCredential;

/// The HS256 secret of test nodes (`EDGEPUSH_JWT_SECRET`).
pub const JWT_SECRET: &str = "edgepush-e2e-test-secret-0123456789";
/// The push API's access key id in tests.
pub const PUSH_ACCESS_KEY_ID: &str = "e2e-push";
/// The push API's secret in tests.
pub const PUSH_SECRET: &str = "e2e-push-secret-0123456789";
/// The push API's region in tests.
pub const PUSH_REGION: &str = "us-east-1";

/// The credential test nodes verify push requests with and the test's
/// dispatch signs them with.
pub fn push_credential() -> PushCredential {
    PushCredential::new(PUSH_ACCESS_KEY_ID, PUSH_SECRET, PUSH_REGION)
}

/// A valid token for `user`, good for `ttl`.
pub fn mint(user: &str, ttl: Duration) -> String {
    mint_hs256(JWT_SECRET.as_bytes(), &Claims::new(user, ttl))
}

/// A valid token for `user` whose connections are subscribed to `topics` at
/// connect and may subscribe to topics matching `subscribe` themselves.
pub fn mint_with(user: &str, ttl: Duration, topics: &[&str], subscribe: &[&str]) -> String {
    let claims = Claims {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        subscribe: subscribe.iter().map(|t| (*t).to_owned()).collect(),
        ..Claims::new(user, ttl)
    };
    mint_hs256(JWT_SECRET.as_bytes(), &claims)
}

/// A subscribe token: `user` may subscribe to `topic`.
pub fn subscribe_token(user: &str, topic: &str, ttl: Duration) -> String {
    mint_hs256(
        JWT_SECRET.as_bytes(),
        &Claims::subscribe_token(user, topic, ttl),
    )
}

/// A subscribe token for `user` and `topic` that expired an hour ago.
pub fn expired_subscribe_token(user: &str, topic: &str) -> String {
    let now = unix_now();
    let claims = Claims {
        exp: now.saturating_sub(3600),
        iat: now.saturating_sub(7200),
        ..Claims::subscribe_token(user, topic, Duration::ZERO)
    };
    mint_hs256(JWT_SECRET.as_bytes(), &claims)
}

/// A token for `user` that expired an hour ago (far beyond any leeway).
pub fn expired(user: &str) -> String {
    let now = unix_now();
    let claims = Claims {
        exp: now.saturating_sub(3600),
        iat: now.saturating_sub(7200),
        ..Claims::new(user, Duration::ZERO)
    };
    mint_hs256(JWT_SECRET.as_bytes(), &claims)
}

/// A token for `user` that becomes valid only in an hour (`nbf`).
pub fn not_yet_valid(user: &str) -> String {
    let now = unix_now();
    let claims = Claims {
        nbf: Some(now + 3600),
        exp: now + 7200,
        ..Claims::new(user, Duration::ZERO)
    };
    mint_hs256(JWT_SECRET.as_bytes(), &claims)
}

/// A well-formed, unexpired token for `user` signed with another secret.
pub fn wrong_secret(user: &str) -> String {
    mint_hs256(
        b"not-the-e2e-secret-at-all-9876543210",
        &Claims::new(user, Duration::from_secs(3600)),
    )
}

/// An unsigned token (`alg: none`, empty signature) for `user`, crafted by
/// hand since no library will mint one.
pub fn alg_none(user: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let now = unix_now();
    let claims = serde_json::json!({ "sub": user, "exp": now + 3600, "iat": now });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// Something that is not a JWT at all.
pub fn garbage() -> String {
    "this-is-not.a-jwt!".to_owned()
}
