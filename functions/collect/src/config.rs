//! The collect binary's configuration, read once at start from environment
//! variables through a lookup function (tests pass a closure over a map and
//! never touch the process environment).

pub use edgepush_core::config::ConfigError;
use edgepush_core::config::Vars;
use edgepush_mongo::MongoConfig;

use crate::ApiKeys;

/// Names of the environment variables read by [`Config::from_lookup`]
/// (besides those of [`edgepush_dispatch::config::env`] and
/// [`edgepush_mongo::config::env`]).
pub mod env {
    pub use edgepush_mongo::config::env::{MONGODB_DATABASE, MONGODB_URI};
    /// `name:key,name2:key2`; a bare `key` gets the source `default`.
    pub const API_KEYS: &str = "EDGEPUSH_API_KEYS";
}

/// Everything the collect binary needs to start. `Debug` hides the API
/// keys and every password.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who may call.
    pub api_keys: ApiKeys,
    /// The message store.
    pub mongo: MongoConfig,
    /// How the in-process dispatch reaches Redis and the edge nodes.
    pub dispatch: edgepush_dispatch::Config,
    /// The topic namespaces (`EDGEPUSH_TOPIC_NAMESPACES`,
    /// `EDGEPUSH_TOPIC_RETENTION_SECS`).
    pub namespaces: edgepush_core::Namespaces,
}

impl Config {
    /// Reads the configuration from `lookup` (a resolved environment, or a
    /// map in tests). Blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&lookup);
        let api_keys = vars
            .required(env::API_KEYS)?
            .parse()
            .map_err(|e| ConfigError::invalid(env::API_KEYS, e))?;
        Ok(Self {
            api_keys,
            mongo: MongoConfig::from_lookup(&lookup)?,
            dispatch: edgepush_dispatch::Config::from_lookup(&lookup)?,
            namespaces: edgepush_core::Namespaces::from_lookup(&lookup)
                .map_err(|e| ConfigError::invalid(edgepush_core::Namespaces::ENV, e))?,
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
        assert_eq!(cfg.mongo.database, edgepush_mongo::config::DEFAULT_DATABASE);
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
            ConfigError::Missing(dispatch_env::REDIS_URL)
        );
        let mut pairs = FULL.to_vec();
        pairs[0] = (env::API_KEYS, "billing:");
        assert!(matches!(
            Config::from_lookup(lookup(&pairs)),
            Err(ConfigError::Invalid {
                name: env::API_KEYS,
                ..
            })
        ));
    }
}
