//! The collect binary's configuration, read once at start from environment
//! variables through a lookup function (tests pass a closure over a map and
//! never touch the process environment).

use std::fmt;

use edgepush_dispatch::config::redact_userinfo;

use crate::{ApiKeys, ApiKeysError};

/// Names of the environment variables read by [`Config::from_lookup`]
/// (besides those of [`edgepush_dispatch::config::env`]).
pub mod env {
    /// `name:key,name2:key2`; a bare `key` gets the source `default`.
    pub const API_KEYS: &str = "EDGEPUSH_API_KEYS";
    /// MongoDB connection string of the message store.
    pub const MONGODB_URI: &str = "EDGEPUSH_MONGODB_URI";
    /// MongoDB database name; the store's default when unset.
    pub const MONGODB_DATABASE: &str = "EDGEPUSH_MONGODB_DATABASE";
}

/// A configuration value is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// The API key list cannot be parsed.
    #[error("EDGEPUSH_API_KEYS is invalid: {0}")]
    ApiKeys(#[source] ApiKeysError),
    /// The dispatch part (Redis, push credential) is missing or unusable.
    #[error(transparent)]
    Dispatch(#[from] edgepush_dispatch::ConfigError),
    /// The topic namespaces cannot be parsed.
    #[error(transparent)]
    Namespaces(#[from] edgepush_core::topic::NamespacesError),
}

/// Everything the collect binary needs to start.
#[derive(Clone)]
pub struct Config {
    /// Who may call.
    pub api_keys: ApiKeys,
    /// The message store. May carry a password: `Debug` hides user info.
    pub mongodb_uri: String,
    /// The database, when not the store's default.
    pub mongodb_database: Option<String>,
    /// How the in-process dispatch reaches Redis and the edge nodes.
    pub dispatch: edgepush_dispatch::Config,
    /// The topic namespaces (`EDGEPUSH_TOPIC_NAMESPACES`,
    /// `EDGEPUSH_TOPIC_RETENTION_SECS`).
    pub namespaces: edgepush_core::Namespaces,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_keys", &self.api_keys)
            .field("mongodb_uri", &redact_userinfo(&self.mongodb_uri))
            .field("mongodb_database", &self.mongodb_database)
            .field("dispatch", &self.dispatch)
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

impl Config {
    /// Reads the configuration from `lookup`, usually
    /// `|name| std::env::var(name).ok()`. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let api_keys = get(env::API_KEYS)
            .ok_or(ConfigError::Missing(env::API_KEYS))?
            .parse()
            .map_err(ConfigError::ApiKeys)?;
        Ok(Self {
            api_keys,
            mongodb_uri: get(env::MONGODB_URI).ok_or(ConfigError::Missing(env::MONGODB_URI))?,
            mongodb_database: get(env::MONGODB_DATABASE),
            dispatch: edgepush_dispatch::Config::from_lookup(&lookup)?,
            namespaces: edgepush_core::Namespaces::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use edgepush_dispatch::config::env as dispatch_env;

    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    const FULL: &[(&str, &str)] = &[
        (env::API_KEYS, "billing:k-secret-1"),
        (env::MONGODB_URI, "mongodb://app:pw-secret@db:27017"),
        (dispatch_env::REDIS_URL, "redis://127.0.0.1:6379"),
        (dispatch_env::PUSH_ACCESS_KEY_ID, "AKID"),
        (dispatch_env::PUSH_SECRET_ACCESS_KEY, "push-secret"),
    ];

    #[test]
    fn reads_everything() {
        let cfg = Config::from_lookup(lookup(FULL)).unwrap();
        assert_eq!(cfg.api_keys.source_of("k-secret-1"), Some("billing"));
        assert_eq!(cfg.mongodb_database, None);
        assert_eq!(cfg.dispatch.push.region, "us-east-1");
        let shown = format!("{cfg:?}");
        for secret in ["k-secret-1", "pw-secret", "push-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("db:27017"), "{shown}");
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let without = |name: &str| {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != name).collect();
            Config::from_lookup(lookup(&pairs)).unwrap_err()
        };
        assert_eq!(without(env::API_KEYS), ConfigError::Missing(env::API_KEYS));
        assert_eq!(
            without(env::MONGODB_URI),
            ConfigError::Missing(env::MONGODB_URI)
        );
        assert_eq!(
            without(dispatch_env::REDIS_URL),
            ConfigError::Dispatch(edgepush_dispatch::ConfigError::Missing(
                dispatch_env::REDIS_URL
            ))
        );
        let mut pairs = FULL.to_vec();
        pairs[0] = (env::API_KEYS, "billing:");
        assert!(matches!(
            Config::from_lookup(lookup(&pairs)),
            Err(ConfigError::ApiKeys(ApiKeysError::EmptyKey { index: 0 }))
        ));
    }
}
