//! The connections binary's configuration, read once at start through a
//! lookup function (the process environment in the binary, a map in tests).
//!
//! | variable | meaning |
//! |---|---|
//! | `EDGEPUSH_REDIS_URL` | required: routes, node directory, connection owners |
//! | `EDGEPUSH_JWT_*` | optional: verify `$connect` tokens in process (see `edgepush-auth`); unset = only the REQUEST authorizer admits clients |
//! | `EDGEPUSH_MONGODB_URI`, `EDGEPUSH_MONGODB_DATABASE` | optional: record acks |
//! | `EDGEPUSH_APIGW_NODE_TTL_SECS` | lifetime of the virtual node entry (default 86400, at least 7200) |
//! | `AWS_REGION` | set by Lambda: names the management endpoint behind a custom domain |

use std::fmt;
use std::time::Duration;

use edgepush_auth::AuthConfig;

use crate::handler::{DEFAULT_NODE_TTL, MIN_NODE_TTL, Settings};

/// Names of the variables read by [`Config::from_lookup`].
pub mod env {
    /// Redis URL.
    pub const REDIS_URL: &str = "EDGEPUSH_REDIS_URL";
    /// MongoDB URI (acks).
    pub const MONGODB_URI: &str = "EDGEPUSH_MONGODB_URI";
    /// MongoDB database.
    pub const MONGODB_DATABASE: &str = "EDGEPUSH_MONGODB_DATABASE";
    /// Virtual node TTL, seconds.
    pub const NODE_TTL_SECS: &str = "EDGEPUSH_APIGW_NODE_TTL_SECS";
    /// The region, set by Lambda.
    pub const AWS_REGION: &str = "AWS_REGION";
    /// Any of these turns in-process token verification on.
    pub const JWT_KEY_VARS: [&str; 4] = [
        "EDGEPUSH_JWT_SECRET",
        "EDGEPUSH_JWT_PUBLIC_KEYS",
        "EDGEPUSH_JWT_JWKS",
        "EDGEPUSH_JWT_JWKS_FILE",
    ];
}

/// A configuration value is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why (never the value: it may be a secret).
        reason: String,
    },
    /// The `EDGEPUSH_JWT_*` variables are inconsistent.
    #[error("token verification: {0}")]
    Auth(#[from] edgepush_auth::ConfigError),
}

/// Where acks are recorded.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoTarget {
    /// The URI; may hold a password, so `Debug` hides it.
    pub uri: String,
    /// The database, when not the store's default.
    pub database: Option<String>,
}

impl fmt::Debug for MongoTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoTarget")
            .field("uri", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

/// Everything the connections binary needs to start.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Routes, virtual nodes and owners live here. May hold a password.
    pub redis_url: String,
    /// In-process token verification, when configured.
    pub auth: Option<AuthConfig>,
    /// The message store for acks, when configured.
    pub mongo: Option<MongoTarget>,
    /// Handler tunables.
    pub settings: Settings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &"<redacted>")
            .field("auth", &self.auth.as_ref().map(|a| a.key.algorithm_name()))
            .field("mongo", &self.mongo)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Config {
    /// Reads the configuration through `lookup`, usually
    /// `|name| std::env::var(name).ok()`. Blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let redis_url = get(env::REDIS_URL).ok_or(ConfigError::Missing(env::REDIS_URL))?;
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                name: env::REDIS_URL,
                reason: "expected a redis:// or rediss:// URL".into(),
            });
        }
        let auth = if env::JWT_KEY_VARS.iter().any(|name| get(name).is_some()) {
            Some(AuthConfig::from_lookup(&lookup)?)
        } else {
            None
        };
        let mongo = get(env::MONGODB_URI).map(|uri| MongoTarget {
            uri,
            database: get(env::MONGODB_DATABASE),
        });
        let node_ttl = match get(env::NODE_TTL_SECS) {
            None => DEFAULT_NODE_TTL,
            Some(v) => {
                let ttl = v.parse::<u64>().map(Duration::from_secs).map_err(|e| {
                    ConfigError::Invalid {
                        name: env::NODE_TTL_SECS,
                        reason: e.to_string(),
                    }
                })?;
                if ttl < MIN_NODE_TTL {
                    return Err(ConfigError::Invalid {
                        name: env::NODE_TTL_SECS,
                        reason: format!(
                            "must be at least {} (API Gateway's connection lifetime)",
                            MIN_NODE_TTL.as_secs()
                        ),
                    });
                }
                ttl
            }
        };
        Ok(Self {
            redis_url,
            auth,
            mongo,
            settings: Settings {
                node_ttl,
                region: get(env::AWS_REGION),
                ..Settings::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    #[test]
    fn minimal_config_uses_the_authorizer_only() {
        let cfg = Config::from_lookup(lookup(&[
            (env::REDIS_URL, "redis://:hunter2@cache:6379"),
            (env::AWS_REGION, "eu-west-1"),
        ]))
        .unwrap();
        assert!(cfg.auth.is_none());
        assert!(cfg.mongo.is_none());
        assert_eq!(cfg.settings.node_ttl, DEFAULT_NODE_TTL);
        assert_eq!(cfg.settings.region.as_deref(), Some("eu-west-1"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn jwt_and_mongo_turn_features_on() {
        let cfg = Config::from_lookup(lookup(&[
            (env::REDIS_URL, "redis://cache"),
            ("EDGEPUSH_JWT_SECRET", "0123456789abcdef0123"),
            (env::MONGODB_URI, "mongodb://u:pw@db"),
            (env::NODE_TTL_SECS, "7200"),
        ]))
        .unwrap();
        assert!(cfg.auth.is_some());
        assert_eq!(
            cfg.mongo.as_ref().map(|m| m.uri.as_str()),
            Some("mongodb://u:pw@db")
        );
        assert_eq!(cfg.settings.node_ttl, Duration::from_secs(7200));
        assert!(!format!("{cfg:?}").contains("pw@"));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            Config::from_lookup(lookup(&[])),
            Err(ConfigError::Missing(env::REDIS_URL))
        );
        for (name, value) in [(env::NODE_TTL_SECS, "60"), (env::NODE_TTL_SECS, "x")] {
            let err = Config::from_lookup(lookup(&[(env::REDIS_URL, "redis://h"), (name, value)]))
                .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(matches!(
            Config::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h"),
                ("EDGEPUSH_JWT_SECRET", "short")
            ])),
            Err(ConfigError::Auth(_))
        ));
    }
}
