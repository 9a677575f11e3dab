//! The dispatch binary's configuration, read once at start from environment
//! variables through a lookup function (tests pass a closure over a map and
//! never touch the process environment).

use std::fmt;

pub use edgepush_core::config::ConfigError;
use edgepush_core::config::Vars;
use edgepush_delivery::sigv4::PushCredential;
use edgepush_delivery::{BuildError, HttpPusher, PushClientConfig};
use edgepush_redis::RedisConfig;

/// Names of the environment variables read by [`Config::from_lookup`]
/// (besides [`edgepush_redis::config::env`]: `EDGEPUSH_REDIS_URL`,
/// `EDGEPUSH_REDIS_CLUSTER`).
pub mod env {
    pub use edgepush_redis::config::env::{REDIS_CLUSTER, REDIS_URL};
    /// Access key id of the internal credential that signs pushes.
    pub const PUSH_ACCESS_KEY_ID: &str = "EDGEPUSH_PUSH_ACCESS_KEY_ID";
    /// Secret of the internal credential that signs pushes.
    pub const PUSH_SECRET_ACCESS_KEY: &str = "EDGEPUSH_PUSH_SECRET_ACCESS_KEY";
    /// SigV4 region of the push API (default `us-east-1`).
    pub const PUSH_REGION: &str = "EDGEPUSH_PUSH_REGION";
}

/// The SigV4 region used when [`env::PUSH_REGION`] is not set.
pub const DEFAULT_PUSH_REGION: &str = "us-east-1";

/// How dispatch signs its pushes to edge nodes (the internal SigV4
/// credential the nodes verify).
#[derive(Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The credential's access key id (not secret; it names the credential).
    pub access_key_id: String,
    /// The credential's secret; never logged.
    pub secret_access_key: String,
    /// The SigV4 region the nodes expect.
    pub region: String,
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

impl PushConfig {
    /// The credential itself.
    pub fn credential(&self) -> PushCredential {
        PushCredential::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.region.clone(),
        )
    }

    /// The HTTP push client of edge nodes, signing with this credential.
    pub fn http_pusher(&self) -> Result<HttpPusher, BuildError> {
        HttpPusher::new(PushClientConfig::new(self.credential()))
    }

    /// Reads the push credential from `lookup` (see [`env`](mod@env)).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(lookup);
        Ok(Self {
            access_key_id: vars.required(env::PUSH_ACCESS_KEY_ID)?,
            secret_access_key: vars.required(env::PUSH_SECRET_ACCESS_KEY)?,
            region: vars
                .get(env::PUSH_REGION)
                .unwrap_or_else(|| DEFAULT_PUSH_REGION.to_owned()),
        })
    }
}

/// Everything a dispatcher needs to start (the dispatch binary's, and
/// collect's when it dispatches in-process).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Config {
    /// Where routes and node liveness live (its `Debug` hides passwords).
    pub redis: RedisConfig,
    /// How pushes are signed.
    pub push: PushConfig,
}

impl Config {
    /// Reads the configuration from `lookup` (a resolved environment, or a
    /// map in tests). Blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            redis: RedisConfig::from_lookup(&lookup)?,
            push: PushConfig::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    #[test]
    fn reads_everything_and_defaults_the_region() {
        let cfg = Config::from_lookup(lookup(&[
            (env::REDIS_URL, "redis://127.0.0.1:6379"),
            (env::PUSH_ACCESS_KEY_ID, "AKID"),
            (env::PUSH_SECRET_ACCESS_KEY, "s3cret"),
        ]))
        .unwrap();
        assert_eq!(cfg.redis.url, "redis://127.0.0.1:6379");
        assert!(!cfg.redis.cluster);
        assert_eq!(cfg.push.access_key_id, "AKID");
        assert_eq!(cfg.push.region, DEFAULT_PUSH_REGION);
    }

    #[test]
    fn missing_and_empty_values_are_named() {
        assert_eq!(
            Config::from_lookup(lookup(&[])),
            Err(ConfigError::Missing(env::REDIS_URL))
        );
        assert_eq!(
            Config::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h"),
                (env::PUSH_ACCESS_KEY_ID, "AKID"),
                (env::PUSH_SECRET_ACCESS_KEY, "  "),
            ])),
            Err(ConfigError::Missing(env::PUSH_SECRET_ACCESS_KEY))
        );
        assert!(matches!(
            Config::from_lookup(lookup(&[(env::REDIS_URL, "http://h")])),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn debug_hides_secrets() {
        let cfg = Config::from_lookup(lookup(&[
            (env::REDIS_URL, "redis://:hunter2@cache:6379/0"),
            (env::PUSH_ACCESS_KEY_ID, "AKID"),
            (env::PUSH_SECRET_ACCESS_KEY, "s3cret"),
            (env::PUSH_REGION, "eu-west-1"),
        ]))
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("cache:6379"), "{shown}");
        assert!(shown.contains("eu-west-1"), "{shown}");
    }
}
