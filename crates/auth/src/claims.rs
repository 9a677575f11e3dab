//! The claims edgepush reads, and HS256 minting for dev mode and tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The registered claims of an edgepush token. Issuers may add more; the
/// verifier ignores what it does not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token speaks for; must be a valid
    /// [`edgepush_core::UserId`].
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. Always required: a token that
    /// never expires cannot be revoked.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer, checked when the verifier is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, checked when the verifier is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issued at, seconds since the Unix epoch (informational).
    pub iat: u64,
    /// Topics the connection is subscribed to at connect (connection
    /// tokens only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Topic patterns (`*` for any run of characters) the client may
    /// subscribe to with a `subscribe` frame (connection tokens only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// The one topic a *subscribe token* lets `sub` subscribe to. A token
    /// with this claim cannot open a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl Claims {
    /// Claims for `sub`, issued now and valid for `ttl`.
    pub fn new(sub: impl Into<String>, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            sub: sub.into(),
            exp: now.saturating_add(ttl.as_secs()),
            nbf: None,
            iss: None,
            aud: None,
            iat: now,
            topics: Vec::new(),
            subscribe: Vec::new(),
            topic: None,
        }
    }

    /// A subscribe token's claims: `sub` may subscribe to `topic`, for `ttl`.
    pub fn subscribe_token(
        sub: impl Into<String>,
        topic: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            topic: Some(topic.into()),
            ..Self::new(sub, ttl)
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs `claims` with HS256 and `secret`, as the edge node's dev-mode
/// `token` command and the tests do. Production issuers mint their own
/// tokens; edgepush only verifies them.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> String {
    // HMAC signing cannot fail and `Claims` always serialises (plain strings
    // and integers), so the only error jsonwebtoken can return here is
    // impossible.
    #[allow(clippy::expect_used)]
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of plain claims cannot fail")
}
