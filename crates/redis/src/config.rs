//! Typed configuration of the Redis backend, parsed once by the binary and
//! handed in (tests build it directly).

use std::fmt;
use std::time::Duration;

/// Default key prefix, so several deployments can share one Redis.
pub const DEFAULT_KEY_PREFIX: &str = "ep";
/// Default lifetime of a user's route hash after its last registration.
pub const DEFAULT_ROUTE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default bound on any one store operation.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How to reach Redis and how to lay out and bound the work done there.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`). May hold a
    /// password, so [`fmt::Debug`] redacts it.
    pub url: String,
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
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            route_ttl: DEFAULT_ROUTE_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
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

    #[test]
    fn defaults() {
        let c = RedisConfig::new("redis://127.0.0.1:6379");
        assert_eq!(c.key_prefix, "ep");
        assert_eq!(c.route_ttl, Duration::from_secs(86_400));
        assert_eq!(c.command_timeout, Duration::from_secs(1));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
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
