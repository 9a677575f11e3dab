//! API keys: which callers may submit messages, and under which source name.
//!
//! The source name scopes idempotency keys (two callers using the same key
//! never collide) and appears in logs in place of the key. Keys are kept only
//! as SHA-256 digests and compared in constant time, so neither a log line
//! nor the time a comparison takes gives a key away.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The source name of a key configured without one.
pub const DEFAULT_SOURCE: &str = "default";

/// `EDGEPUSH_API_KEYS` could not be parsed. Never quotes a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeysError {
    /// No key at all: nobody could call the API.
    #[error("no API key configured")]
    Empty,
    /// An entry `name:` has no key.
    #[error("entry {index}: the key is empty")]
    EmptyKey {
        /// Position of the entry, from 0.
        index: usize,
    },
    /// An entry `:key` has no name, or the name holds whitespace.
    #[error("entry {index}: the source name is empty or holds whitespace")]
    BadName {
        /// Position of the entry, from 0.
        index: usize,
    },
    /// The same key is listed twice: its source would be ambiguous.
    #[error("entry {index}: the key is listed twice")]
    Duplicate {
        /// Position of the second entry, from 0.
        index: usize,
    },
}

/// One configured key.
#[derive(Clone)]
struct Entry {
    /// SHA-256 of the key: fixed length, so comparing leaks no length.
    digest: [u8; 32],
    /// The caller's name.
    source: String,
}

/// The accepted API keys, each mapped to its source name.
///
/// Parsed from `name:key,name2:key2`; a bare `key` gets the source
/// [`DEFAULT_SOURCE`]. `Debug` shows the source names only.
#[derive(Clone)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// A set with one key for `source` (tests and dev mode).
    pub fn single(source: impl Into<String>, key: &str) -> Self {
        Self {
            entries: vec![Entry {
                digest: digest(key),
                source: source.into(),
            }],
        }
    }

    /// The source name of `key`, if it is one of ours.
    ///
    /// Every configured key is compared, in constant time each, whatever
    /// matches: the time taken does not depend on the key presented.
    pub fn source_of(&self, key: &str) -> Option<&str> {
        let presented = digest(key);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry.source.as_str());
            }
        }
        found
    }

    /// The configured source names, in configuration order.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.source.as_str())
    }
}

impl FromStr for ApiKeys {
    type Err = ApiKeysError;

    fn from_str(s: &str) -> Result<Self, ApiKeysError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, item) in s.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                // Tolerate `a:k1,` and blank entries from templating.
                continue;
            }
            let (source, key) = match item.split_once(':') {
                Some((name, key)) => (name.trim(), key.trim()),
                None => (DEFAULT_SOURCE, item),
            };
            if source.is_empty() || source.chars().any(char::is_whitespace) {
                return Err(ApiKeysError::BadName { index });
            }
            if key.is_empty() {
                return Err(ApiKeysError::EmptyKey { index });
            }
            let entry = Entry {
                digest: digest(key),
                source: source.to_owned(),
            };
            if entries.iter().any(|e| e.digest == entry.digest) {
                return Err(ApiKeysError::Duplicate { index });
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(ApiKeysError::Empty);
        }
        Ok(Self { entries })
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("sources", &self.sources().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_bare_keys() {
        let keys: ApiKeys = "billing:k-bill, ops:k:ops ,k-bare".parse().unwrap();
        assert_eq!(keys.source_of("k-bill"), Some("billing"));
        assert_eq!(keys.source_of("k:ops"), Some("ops"), "keys may hold ':'");
        assert_eq!(keys.source_of("k-bare"), Some(DEFAULT_SOURCE));
        assert_eq!(keys.source_of("k-bil"), None);
        assert_eq!(keys.source_of(""), None);
        assert_eq!(
            keys.sources().collect::<Vec<_>>(),
            ["billing", "ops", "default"]
        );
    }

    #[test]
    fn refuses_unusable_lists() {
        assert_eq!("".parse::<ApiKeys>().unwrap_err(), ApiKeysError::Empty);
        assert_eq!(" , ".parse::<ApiKeys>().unwrap_err(), ApiKeysError::Empty);
        assert_eq!(
            "a:".parse::<ApiKeys>().unwrap_err(),
            ApiKeysError::EmptyKey { index: 0 }
        );
        assert_eq!(
            "a:k,:k2".parse::<ApiKeys>().unwrap_err(),
            ApiKeysError::BadName { index: 1 }
        );
        assert_eq!(
            "a:k,b:k".parse::<ApiKeys>().unwrap_err(),
            ApiKeysError::Duplicate { index: 1 }
        );
    }

    #[test]
    fn debug_and_errors_never_show_keys() {
        let keys: ApiKeys = "billing:super-secret-key".parse().unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("billing"), "{shown}");
        assert!(!shown.contains("super-secret-key"), "{shown}");
        let err = "a:secret-one,b:secret-one".parse::<ApiKeys>().unwrap_err();
        assert!(!err.to_string().contains("secret-one"));
    }
}
