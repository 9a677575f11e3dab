//! Typed configuration of the Redis backend, parsed once by the binary and
//! handed in (tests build it directly).

use std::fmt;
use std::time::Duration;

use edgepush_core::config::{ConfigError, Vars};

/// Default key prefix, so several deployments can share one Redis.
pub const DEFAULT_KEY_PREFIX: &str = "ep";
/// Default lifetime of a user's route hash after its last registration.
pub const DEFAULT_ROUTE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default bound on any one store operation.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Names of the variables read by [`RedisConfig::from_lookup`].
pub mod env {
    /// The Redis URL, or the comma-separated seed URLs of a cluster.
    pub const REDIS_URL: &str = "EDGEPUSH_REDIS_URL";
    /// `1`/`true`/`yes`/`on` when [`REDIS_URL`] names a Redis Cluster.
    pub const REDIS_CLUSTER: &str = "EDGEPUSH_REDIS_CLUSTER";
}

/// How to reach Redis and how to lay out and bound the work done there.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`). May hold a
    /// password, so [`fmt::Debug`] redacts it.
    ///
    /// In [cluster](Self::cluster) mode: one or more seed nodes separated by
    /// commas (`redis://a:6379,redis://b:6379`); the rest of the cluster is
    /// discovered from them, so an ElastiCache configuration endpoint alone
    /// suffices. A comma inside a password must be written `%2C`.
    pub url: String,
    /// Whether [`url`](Self::url) names a Redis Cluster (ElastiCache in
    /// cluster mode) rather than one server. A cluster needs a client that
    /// follows the slot map and `MOVED` redirects, and pipelines that never
    /// mix slots; a single server accepts neither `CLUSTER` commands nor
    /// several seeds.
    pub cluster: bool,
    /// Prepended to every key (`{prefix}:r:...`, `{prefix}:n:...`) so that
    /// deployments, and tests, sharing one Redis never see each other's keys.
    /// Must not contain `{` or `}`: the hash tag belongs to the user or node.
    pub key_prefix: String,
    /// Lifetime of a user's route hash, refreshed on every registration: long,
    /// because liveness comes from the node keys, and the TTL only garbage
    /// collects routes of users whose node died without cleaning up.
    pub route_ttl: Duration,
    /// Bound on every operation, reconnection included, so that callers get
    /// [`RouteError::Unavailable`](edgepush_core::RouteError::Unavailable)
    /// quickly while Redis is down instead of hanging.
    pub command_timeout: Duration,
    /// Bound on establishing a connection (first connect and reconnects), so
    /// that a dead Redis fails [`connect`](crate::RedisRouteStore::connect)
    /// quickly.
    pub connect_timeout: Duration,
}

impl RedisConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: false,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            route_ttl: DEFAULT_ROUTE_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// A configuration for the Redis Cluster reachable through `seeds` (any
    /// of its nodes, or its configuration endpoint), every other field at its
    /// default.
    pub fn cluster<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        Self {
            cluster: true,
            ..Self::new(seeds.join(","))
        }
    }

    /// The deployment's configuration: [`env::REDIS_URL`] (required; a
    /// `redis://`, `rediss://` or `unix://` URL, or in cluster mode
    /// comma-separated seeds) and [`env::REDIS_CLUSTER`] (a flag, off when
    /// unset); every other field at its default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(lookup);
        let config = Self {
            cluster: vars.flag(env::REDIS_CLUSTER)?,
            ..Self::new(vars.required(env::REDIS_URL)?)
        };
        let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if config.urls().is_empty()
            || !config
                .urls()
                .iter()
                .all(|url| schemes.iter().any(|scheme| url.starts_with(scheme)))
        {
            return Err(ConfigError::invalid(
                env::REDIS_URL,
                "expected redis://, rediss:// or unix:// URLs",
            ));
        }
        Ok(config)
    }

    /// The URLs in [`url`](Self::url): one for a single server, the seeds of
    /// a cluster (empty entries skipped).
    pub fn urls(&self) -> Vec<&str> {
        if !self.cluster {
            return vec![self.url.as_str()];
        }
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// [`url`](Self::url) with credentials removed, fit for logs.
    pub fn redacted_url(&self) -> String {
        if !self.cluster {
            return redact_url(&self.url);
        }
        self.urls()
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("route_ttl", &self.route_ttl)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `url` with any credentials (`user:password@`) replaced by `***@`, fit for
/// logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    #[test]
    fn defaults() {
        let c = RedisConfig::new("redis://127.0.0.1:6379");
        assert_eq!(c.key_prefix, "ep");
        assert_eq!(c.route_ttl, Duration::from_secs(86_400));
        assert_eq!(c.command_timeout, Duration::from_secs(1));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert!(!c.cluster);
        assert_eq!(c.urls(), vec!["redis://127.0.0.1:6379"]);
    }

    #[test]
    fn cluster_seeds() {
        let c = RedisConfig::cluster(["redis://a:1", "redis://:pw@b:2"]);
        assert!(c.cluster);
        assert_eq!(c.url, "redis://a:1,redis://:pw@b:2");
        assert_eq!(c.urls(), vec!["redis://a:1", "redis://:pw@b:2"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("redis://a:1,redis://***@b:2"), "{shown}");
        // Stray commas and blanks are ignored.
        let c = RedisConfig::from_lookup(lookup(&[
            (env::REDIS_URL, " redis://a:1 ,, redis://b:2,"),
            (env::REDIS_CLUSTER, "1"),
        ]))
        .expect("valid flag");
        assert_eq!(c.urls(), vec!["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn from_lookup_reads_the_url_and_the_cluster_flag() {
        for yes in ["1", "true", "TRUE", " yes ", "on"] {
            let c = RedisConfig::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h:6379"),
                (env::REDIS_CLUSTER, yes),
            ]));
            assert!(c.expect("valid").cluster, "{yes:?}");
        }
        for no in ["", "0", "false", "No", "off"] {
            let c = RedisConfig::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h:6379"),
                (env::REDIS_CLUSTER, no),
            ]));
            assert_eq!(c, Ok(RedisConfig::new("redis://h:6379")), "{no:?}");
        }
        assert!(matches!(
            RedisConfig::from_lookup(lookup(&[
                (env::REDIS_URL, "redis://h:6379"),
                (env::REDIS_CLUSTER, "cluster"),
            ])),
            Err(ConfigError::Invalid {
                name: env::REDIS_CLUSTER,
                ..
            })
        ));
        assert_eq!(
            RedisConfig::from_lookup(lookup(&[(env::REDIS_URL, "  ")])),
            Err(ConfigError::Missing(env::REDIS_URL))
        );
        let err =
            RedisConfig::from_lookup(lookup(&[(env::REDIS_URL, "http://:pw@h")])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: env::REDIS_URL,
                ..
            }
        ));
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn debug_redacts_credentials() {
        let c = RedisConfig::new("redis://user:s3cret@host:6379/0");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://***@host:6379/0"), "{shown}");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
