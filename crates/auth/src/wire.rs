//! The auth function's request and response bodies (JSON).
//!
//! Defined here, next to [`crate::RemoteVerifier`] which reads them, and
//! re-exported by the function crate, so both ends share one definition.
//!
//! ```json
//! {"token": "<jwt>"}
//! {"ok": true, "user_id": "alice", "expires_at": 1700000000}
//! {"ok": false, "error": {"code": "expired", "message": "token expired"}}
//! ```

use edgepush_core::{AuthError, Identity, UserId};
use serde::{Deserialize, Serialize};

/// What the caller asks the auth function to verify.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    /// The token, without any `Bearer ` prefix. A missing field reads as
    /// empty, which the verifier answers with `missing`.
    #[serde(default)]
    pub token: String,
}

impl std::fmt::Debug for AuthRequest {
    // By hand: a bearer token must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .finish()
    }
}

/// Why a token was refused, as a stable code for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token was presented.
    Missing,
    /// Malformed, wrongly signed, wrong algorithm, issuer or audience.
    Invalid,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// The function could not verify (its own dependency was down).
    Unavailable,
}

/// The error half of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable reason; never echoes the token.
    pub message: String,
}

/// The auth function's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireResponse", try_from = "WireResponse")]
pub enum AuthResponse {
    /// The token is good.
    Allowed {
        /// The `sub` claim.
        user_id: UserId,
        /// The `exp` claim, seconds since the Unix epoch.
        expires_at: Option<u64>,
        /// The `topics` claim (server-side subscriptions), if any.
        topics: Vec<String>,
        /// The `subscribe` claim (topic patterns), if any.
        subscribe: Vec<String>,
        /// The `topic` claim of a subscribe token.
        topic: Option<String>,
    },
    /// The token was refused.
    Refused(ErrorBody),
}

impl AuthResponse {
    /// The verdict as the [`edgepush_core::TokenVerifier`] contract states it.
    pub fn into_result(self) -> Result<Identity, AuthError> {
        match self {
            Self::Allowed {
                user_id,
                expires_at,
                topics,
                subscribe,
                topic,
            } => Ok(Identity {
                user_id,
                expires_at,
                topics,
                subscribe,
                topic,
            }),
            Self::Refused(ErrorBody { code, message }) => Err(match code {
                ErrorCode::Missing => AuthError::Missing,
                ErrorCode::Invalid => AuthError::Invalid(message),
                ErrorCode::Expired => AuthError::Expired,
                ErrorCode::NotYetValid => AuthError::NotYetValid,
                ErrorCode::Unavailable => AuthError::Unavailable(message),
            }),
        }
    }
}

impl From<Result<Identity, AuthError>> for AuthResponse {
    fn from(result: Result<Identity, AuthError>) -> Self {
        match result {
            Ok(identity) => Self::Allowed {
                user_id: identity.user_id,
                expires_at: identity.expires_at,
                topics: identity.topics,
                subscribe: identity.subscribe,
                topic: identity.topic,
            },
            Err(e) => {
                let code = match &e {
                    AuthError::Missing => ErrorCode::Missing,
                    AuthError::Invalid(_) => ErrorCode::Invalid,
                    AuthError::Expired => ErrorCode::Expired,
                    AuthError::NotYetValid => ErrorCode::NotYetValid,
                    AuthError::Unavailable(_) => ErrorCode::Unavailable,
                };
                // The code already says which kind; the message carries the
                // reason alone where there is one.
                let message = match e {
                    AuthError::Invalid(reason) | AuthError::Unavailable(reason) => reason,
                    other => other.to_string(),
                };
                Self::Refused(ErrorBody { code, message })
            }
        }
    }
}

/// The flat JSON shape; [`AuthResponse`] converts to and from it so that an
/// inconsistent body (`ok: true` without a user) is a parse error.
#[derive(Serialize, Deserialize)]
struct WireResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

impl From<AuthResponse> for WireResponse {
    fn from(r: AuthResponse) -> Self {
        match r {
            AuthResponse::Allowed {
                user_id,
                expires_at,
                topics,
                subscribe,
                topic,
            } => Self {
                ok: true,
                user_id: Some(user_id),
                expires_at,
                topics,
                subscribe,
                topic,
                error: None,
            },
            AuthResponse::Refused(error) => Self {
                ok: false,
                user_id: None,
                expires_at: None,
                topics: Vec::new(),
                subscribe: Vec::new(),
                topic: None,
                error: Some(error),
            },
        }
    }
}

impl TryFrom<WireResponse> for AuthResponse {
    type Error = &'static str;

    fn try_from(w: WireResponse) -> Result<Self, Self::Error> {
        match (w.ok, w.user_id, w.error) {
            (true, Some(user_id), _) => Ok(Self::Allowed {
                user_id,
                expires_at: w.expires_at,
                topics: w.topics,
                subscribe: w.subscribe,
                topic: w.topic,
            }),
            (true, None, _) => Err("ok response without user_id"),
            (false, _, Some(error)) => Ok(Self::Refused(error)),
            (false, _, None) => Err("error response without error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_have_the_documented_shape() {
        let ok = AuthResponse::from(Ok(Identity::new(
            UserId::new("alice").expect("valid id"),
            Some(1_700_000_000),
        )));
        assert_eq!(
            serde_json::to_value(&ok).expect("serialises"),
            serde_json::json!({"ok": true, "user_id": "alice", "expires_at": 1_700_000_000u64})
        );
        let with_topics = Identity {
            topics: vec!["news".into()],
            subscribe: vec!["chat:*".into()],
            ..Identity::new(UserId::new("bob").expect("valid id"), Some(1))
        };
        let json = serde_json::to_value(AuthResponse::from(Ok(with_topics.clone()))).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"ok": true, "user_id": "bob", "expires_at": 1, "topics": ["news"], "subscribe": ["chat:*"]})
        );
        let back: AuthResponse = serde_json::from_value(json).expect("parses");
        assert_eq!(back.into_result(), Ok(with_topics));
        let refused = AuthResponse::from(Err(AuthError::NotYetValid));
        assert_eq!(
            serde_json::to_value(&refused).expect("serialises"),
            serde_json::json!({"ok": false, "error": {"code": "not_yet_valid", "message": "token not yet valid"}})
        );
    }

    #[test]
    fn responses_round_trip_to_results() {
        for err in [
            AuthError::Missing,
            AuthError::Invalid("bad signature".into()),
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::Unavailable("down".into()),
        ] {
            let json = serde_json::to_string(&AuthResponse::from(Err(err.clone()))).expect("json");
            let back: AuthResponse = serde_json::from_str(&json).expect("parses");
            assert_eq!(back.into_result(), Err(err));
        }
        assert!(serde_json::from_str::<AuthResponse>(r#"{"ok":true}"#).is_err());
        assert!(serde_json::from_str::<AuthResponse>(r#"{"ok":false}"#).is_err());
        assert!(
            serde_json::from_str::<AuthResponse>(r#"{"ok":true,"user_id":"a b"}"#).is_err(),
            "user ids are validated on the way in"
        );
    }

    #[test]
    fn request_debug_hides_the_token() {
        let req = AuthRequest {
            token: "eyJhbGciOi.secret.sig".into(),
        };
        assert!(!format!("{req:?}").contains("secret"));
    }
}
