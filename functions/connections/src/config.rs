//! The connections binary's configuration, read once at start through a
//! lookup function (the process environment in the binary, a map in tests).
//!
//! | variable | meaning |
//! |---|---|
//! | `EDGEPUSH_REDIS_URL` | required: routes, node directory, connection records |
//! | `EDGEPUSH_MONGODB_URI`, `EDGEPUSH_MONGODB_DATABASE` | required: replays and acks |
//! | `EDGEPUSH_JWT_*` | optional: verify `$connect` tokens in process (see `edgepush-auth`); unset = only the REQUEST authorizer admits clients |
//! | `EDGEPUSH_MAX_CONNECTIONS_PER_USER` | connections one user may hold on one API stage (default 64, as on edge nodes); beyond: `429 too_many_connections` |
//! | `EDGEPUSH_ACK_INTERVAL_MS` | at most one ack write per connection per interval (default 1000, as on edge nodes) |
//! | `EDGEPUSH_APIGW_REPLAY_PAGE` | messages one `resume` replays (default 100, 1..=1000) |
//! | `EDGEPUSH_APIGW_NODE_TTL_SECS` | lifetime of the virtual node entry (default 86400, at least 7200) |
//! | `EDGEPUSH_TOPIC_NAMESPACES` | the topic namespaces, as for edge nodes and collect |
//! | `EDGEPUSH_MAX_SUBSCRIPTIONS` | topic subscriptions per connection (default 128, as on edge nodes) |
//! | `AWS_REGION` | set by Lambda: names the management endpoint behind a custom domain |
//!
//! The management API client (replays, `pong`, closing connections) uses
//! the function's own AWS credentials; `AWS_ENDPOINT_URL` sends its calls
//! elsewhere (an emulator, a test's stand-in).

use std::fmt;

use edgepush_auth::AuthConfig;
pub use edgepush_core::config::ConfigError;
use edgepush_core::config::Vars;
use edgepush_mongo::MongoConfig;
use edgepush_redis::RedisConfig;

use crate::handler::{
    DEFAULT_ACK_INTERVAL, DEFAULT_MAX_CONNECTIONS_PER_USER, DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_NODE_TTL, DEFAULT_REPLAY_PAGE, MIN_NODE_TTL, Settings,
};

/// The largest [`Settings::replay_page`] accepted: a page must be posted,
/// one message after the other, well within the function's timeout.
pub const MAX_REPLAY_PAGE: usize = 1_000;

/// Names of the variables read by [`Config::from_lookup`] (besides
/// [`edgepush_redis::config::env`] and [`edgepush_mongo::config::env`]).
pub mod env {
    pub use edgepush_mongo::config::env::{MONGODB_DATABASE, MONGODB_URI};
    pub use edgepush_redis::config::env::{REDIS_CLUSTER, REDIS_URL};
    /// Virtual node TTL, seconds.
    pub const NODE_TTL_SECS: &str = "EDGEPUSH_APIGW_NODE_TTL_SECS";
    /// The per-user connection cap (the edge nodes' name).
    pub const MAX_CONNECTIONS_PER_USER: &str = "EDGEPUSH_MAX_CONNECTIONS_PER_USER";
    /// The ack interval, milliseconds (the edge nodes' name).
    pub const ACK_INTERVAL_MS: &str = "EDGEPUSH_ACK_INTERVAL_MS";
    /// Messages replayed per `resume`.
    pub const REPLAY_PAGE: &str = "EDGEPUSH_APIGW_REPLAY_PAGE";
    /// Topic subscriptions per connection (the edge nodes' name).
    pub const MAX_SUBSCRIPTIONS: &str = "EDGEPUSH_MAX_SUBSCRIPTIONS";
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
    /// Routes, virtual nodes and connection records live here.
    pub redis: RedisConfig,
    /// In-process token verification, when configured.
    pub auth: Option<AuthConfig>,
    /// The message store: replays and acks.
    pub mongo: MongoConfig,
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
        let max_connections_per_user = vars.parse(
            env::MAX_CONNECTIONS_PER_USER,
            DEFAULT_MAX_CONNECTIONS_PER_USER,
        )?;
        if max_connections_per_user == 0 {
            return Err(ConfigError::invalid(
                env::MAX_CONNECTIONS_PER_USER,
                "must be at least 1",
            ));
        }
        let replay_page = vars.parse(env::REPLAY_PAGE, DEFAULT_REPLAY_PAGE)?;
        if !(1..=MAX_REPLAY_PAGE).contains(&replay_page) {
            return Err(ConfigError::invalid(
                env::REPLAY_PAGE,
                format!("must be 1..={MAX_REPLAY_PAGE}"),
            ));
        }
        Ok(Self {
            redis,
            auth,
            mongo: MongoConfig::from_lookup(&lookup)?,
            settings: Settings {
                node_ttl,
                region: vars.get(env::AWS_REGION),
                ack_interval: vars.millis(env::ACK_INTERVAL_MS, DEFAULT_ACK_INTERVAL)?,
                max_connections_per_user,
                replay_page,
                max_subscriptions: vars.parse(env::MAX_SUBSCRIPTIONS, DEFAULT_MAX_SUBSCRIPTIONS)?,
                namespaces: edgepush_core::Namespaces::from_lookup(&lookup)
                    .map_err(|e| ConfigError::invalid(edgepush_core::Namespaces::ENV, e))?,
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
            (env::MONGODB_URI, "mongodb://u:pw@db"),
            (env::AWS_REGION, "eu-west-1"),
        ]))
        .unwrap();
        assert!(cfg.auth.is_none());
        assert_eq!(cfg.mongo.uri, "mongodb://u:pw@db");
        assert_eq!(cfg.settings.node_ttl, DEFAULT_NODE_TTL);
        assert_eq!(cfg.settings.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            cfg.settings.max_connections_per_user,
            DEFAULT_MAX_CONNECTIONS_PER_USER
        );
        assert_eq!(cfg.settings.replay_page, DEFAULT_REPLAY_PAGE);
        assert_eq!(cfg.settings.ack_interval, DEFAULT_ACK_INTERVAL);
        let text = format!("{cfg:?}");
        assert!(!text.contains("hunter2") && !text.contains("pw@"), "{text}");
    }

    #[test]
    fn jwt_and_tunables() {
        let cfg = Config::from_lookup(lookup(&[
            (env::REDIS_URL, "redis://cache"),
            ("EDGEPUSH_JWT_SECRET", "0123456789abcdef0123"),
            (env::MONGODB_URI, "mongodb://db"),
            (env::NODE_TTL_SECS, "7200"),
            (env::MAX_CONNECTIONS_PER_USER, "3"),
            (env::ACK_INTERVAL_MS, "250"),
            (env::REPLAY_PAGE, "20"),
        ]))
        .unwrap();
        assert!(cfg.auth.is_some());
        assert_eq!(cfg.settings.node_ttl, Duration::from_secs(7200));
        assert_eq!(cfg.settings.max_connections_per_user, 3);
        assert_eq!(cfg.settings.ack_interval, Duration::from_millis(250));
        assert_eq!(cfg.settings.replay_page, 20);
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            Config::from_lookup(lookup(&[])),
            Err(ConfigError::Missing(env::REDIS_URL))
        );
        assert_eq!(
            Config::from_lookup(lookup(&[(env::REDIS_URL, "redis://h")])),
            Err(ConfigError::Missing(env::MONGODB_URI))
        );
        for (name, value) in [
            (env::NODE_TTL_SECS, "60"),
            (env::NODE_TTL_SECS, "x"),
            (env::MAX_CONNECTIONS_PER_USER, "0"),
            (env::MAX_CONNECTIONS_PER_USER, "-1"),
            (env::REPLAY_PAGE, "0"),
            (env::REPLAY_PAGE, "100000"),
            (env::ACK_INTERVAL_MS, "soon"),
        ] {
            let err = Config::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h"),
                (env::MONGODB_URI, "mongodb://db"),
                (name, value),
            ]))
            .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(matches!(
            Config::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h"),
                (env::MONGODB_URI, "mongodb://db"),
                ("EDGEPUSH_JWT_SECRET", "short")
            ])),
            Err(ConfigError::Invalid {
                name: "EDGEPUSH_JWT_*",
                ..
            })
        ));
    }
}
