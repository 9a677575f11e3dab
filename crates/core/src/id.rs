//! Validated identifiers.
//!
//! Identifiers end up in Redis keys (inside a `{...}` hash tag), in URL paths
//! and in MongoDB documents, so each one is checked once at the edge of the
//! system and is a distinct type afterwards.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sequence number of a user's stream or a topic: strictly increasing
/// from 1, without gaps. Here, below both messages and topics, which use it.
pub type Seq = u64;

/// Longest user id accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is the empty string.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier.
        kind: &'static str,
    },
    /// The identifier is longer than allowed.
    #[error("{kind} is longer than {max} bytes")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The identifier holds a character outside `[A-Za-z0-9._:@+=-]`.
    #[error("{kind} may only hold letters, digits and . _ : @ + = -")]
    BadChar {
        /// Which identifier.
        kind: &'static str,
    },
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '=' | '-')
}

fn check(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if !s.chars().all(allowed) {
        return Err(IdError::BadChar { kind });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                check($kind, s, $max)?;
                Ok(Self(Arc::from(s)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Checks `s` without allocating (for ids borrowed from a
            /// request body).
            pub fn validate(s: &str) -> Result<(), IdError> {
                check($kind, s, $max)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A user, as named by the `sub` claim of its token and by the `to` list
    /// of the collect API. Letters, digits and `. _ : @ + = -`, at most 128
    /// bytes, so it can sit inside a Redis hash tag and a URL unescaped.
    UserId, "user id", MAX_USER_ID_LEN
);
string_id!(
    /// An edge node, as registered in Redis.
    NodeId, "node id", 64
);
string_id!(
    /// One WebSocket connection. Unique per node boot (a restarted node never
    /// reuses the ids of its previous life), and opaque to clients.
    ConnId, "connection id", 64
);
string_id!(
    /// A message, shared by the copies stored for each of its recipients.
    MessageId, "message id", 64
);

impl MessageId {
    /// A fresh random id (128 random bits, hex).
    pub fn random() -> Self {
        let bits: u128 = rand::random();
        Self(Arc::from(format!("{bits:032x}")))
    }

    /// The id of the message a caller submitted under `idempotency_key`:
    /// the same for every retry, so a retried request names the same message.
    pub fn for_idempotency_key(source: &str, idempotency_key: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0u8]);
        h.update(idempotency_key.as_bytes());
        let digest = h.finalize();
        Self(Arc::from(hex::encode(&digest[..16])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_validated() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("tenant:42@example.com").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Empty { kind: "user id" }));
        assert!(matches!(UserId::new("a{b}"), Err(IdError::BadChar { .. })));
        assert!(matches!(UserId::new("a b"), Err(IdError::BadChar { .. })));
        assert!(matches!(
            UserId::new("x".repeat(129)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: UserId = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(ok.as_str(), "bob");
        assert!(serde_json::from_str::<UserId>("\"b/ob\"").is_err());
        assert!(serde_json::from_str::<UserId>("42").is_err());
    }

    #[test]
    fn idempotent_message_ids_are_stable_and_scoped() {
        let a = MessageId::for_idempotency_key("api", "k1");
        assert_eq!(a, MessageId::for_idempotency_key("api", "k1"));
        assert_ne!(a, MessageId::for_idempotency_key("api", "k2"));
        assert_ne!(a, MessageId::for_idempotency_key("other", "k1"));
        assert_ne!(MessageId::random(), MessageId::random());
    }
}
