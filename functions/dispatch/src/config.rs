//! The dispatch binary's configuration, read once at start from environment
//! variables through a lookup function (tests pass a closure over a map and
//! never touch the process environment).

use std::fmt;

use edgepush_delivery::sigv4::PushCredential;
use edgepush_delivery::{BuildError, HttpPusher, PushClientConfig};

/// Names of the environment variables read by [`Config::from_lookup`].
pub mod env {
    /// Redis URL of the route store and node directory.
    pub const REDIS_URL: &str = "EDGEPUSH_REDIS_URL";
    /// Access key id of the internal credential that signs pushes.
    pub const PUSH_ACCESS_KEY_ID: &str = "EDGEPUSH_PUSH_ACCESS_KEY_ID";
    /// Secret of the internal credential that signs pushes.
    pub const PUSH_SECRET_ACCESS_KEY: &str = "EDGEPUSH_PUSH_SECRET_ACCESS_KEY";
    /// SigV4 region of the push API (default `us-east-1`).
    pub const PUSH_REGION: &str = "EDGEPUSH_PUSH_REGION";
}

/// The SigV4 region used when [`env::PUSH_REGION`] is not set.
pub const DEFAULT_PUSH_REGION: &str = "us-east-1";

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
        /// Why it was refused (never the value itself: it may be a secret).
        reason: String,
    },
}

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
    /// The HTTP push client, signing with this credential.
    pub fn http_pusher(&self) -> Result<HttpPusher, BuildError> {
        let credential = PushCredential::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.region.clone(),
        );
        HttpPusher::new(PushClientConfig::new(credential))
    }

    /// Reads the push credential from `lookup` (see [`env`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            access_key_id: required(&lookup, env::PUSH_ACCESS_KEY_ID)?,
            secret_access_key: required(&lookup, env::PUSH_SECRET_ACCESS_KEY)?,
            region: optional(&lookup, env::PUSH_REGION)
                .unwrap_or_else(|| DEFAULT_PUSH_REGION.to_owned()),
        })
    }
}

/// Everything the dispatch binary needs to start.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Where routes and node liveness live. May carry a password, so the
    /// `Debug` output hides the URL's user info.
    pub redis_url: String,
    /// How pushes are signed.
    pub push: PushConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &redact_userinfo(&self.redis_url))
            .field("push", &self.push)
            .finish()
    }
}

impl Config {
    /// Reads the configuration from `lookup`, usually
    /// `|name| std::env::var(name).ok()`. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let redis_url = required(&lookup, env::REDIS_URL)?;
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("redis+unix://")
            || redis_url.starts_with("unix://"))
        {
            return Err(ConfigError::Invalid {
                name: env::REDIS_URL,
                reason: "expected a redis://, rediss:// or unix:// URL".into(),
            });
        }
        Ok(Self {
            redis_url,
            push: PushConfig::from_lookup(&lookup)?,
        })
    }
}

/// The value of `name`, trimmed, if it is set and not empty.
pub(crate) fn optional(lookup: impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The value of `name`, or [`ConfigError::Missing`].
fn required(
    lookup: impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    optional(lookup, name).ok_or(ConfigError::Missing(name))
}

/// `scheme://user:pass@host/..` -> `scheme://***@host/..`, for logs.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
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
        assert_eq!(cfg.redis_url, "redis://127.0.0.1:6379");
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
