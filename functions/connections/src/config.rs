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

use edgepush_auth::AuthConfig;
pub use edgepush_core::config::ConfigError;
use edgepush_core::config::Vars;
use edgepush_mongo::MongoConfig;
use edgepush_redis::RedisConfig;

use crate::handler::{DEFAULT_NODE_TTL, MIN_NODE_TTL, Settings};

/// Names of the variables read by [`Config::from_lookup`] (besides
/// [`edgepush_redis::config::env`] and [`edgepush_mongo::config::env`]).
pub mod env {
    pub use edgepush_mongo::config::env::{MONGODB_DATABASE, MONGODB_URI};
    pub use edgepush_redis::config::env::{REDIS_CLUSTER, REDIS_URL};
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

/// Everything the connections binary needs to start.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Routes, virtual nodes and owners live here.
    pub redis: RedisConfig,
    /// In-process token verification, when configured.
    pub auth: Option<AuthConfig>,
    /// The message store for acks, when configured.
    pub mongo: Option<MongoConfig>,
    /// Handler tunables.
    pub settings: Settings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis", &self.redis)
            .field("auth", &self.auth.as_ref().map(|a| a.key.algorithm_name()))
            .field("mongo", &self.mongo)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Config {
    /// Reads the configuration through `lookup` (a resolved environment, or
    /// a map in tests). Blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&lookup);
        let redis = RedisConfig::from_lookup(&lookup)?;
        let auth = if env::JWT_KEY_VARS.iter().any(|name| vars.is_set(name)) {
            Some(AuthConfig::from_lookup(&lookup)?)
        } else {
            None
        };
        let node_ttl = vars.secs(env::NODE_TTL_SECS, DEFAULT_NODE_TTL)?;
        if node_ttl < MIN_NODE_TTL {
            return Err(ConfigError::invalid(
                env::NODE_TTL_SECS,
                format!(
                    "must be at least {} (API Gateway's connection lifetime)",
                    MIN_NODE_TTL.as_secs()
                ),
            ));
        }
        Ok(Self {
            redis,
            auth,
            mongo: MongoConfig::from_lookup_optional(&lookup)?,
            settings: Settings {
                node_ttl,
                region: vars.get(env::AWS_REGION),
                ..Settings::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            Err(ConfigError::Invalid {
                name: "EDGEPUSH_JWT_*",
                ..
            })
        ));
    }
}
