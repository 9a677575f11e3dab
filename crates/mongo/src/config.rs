//! Typed configuration of the MongoDB backend, parsed once by the binary and
//! handed in (tests build it directly).

use std::fmt;
use std::time::Duration;

use edgepush_core::config::{ConfigError, Vars};

/// Names of the variables read by [`MongoConfig::from_lookup`].
pub mod env {
    /// The connection string.
    pub const MONGODB_URI: &str = "EDGEPUSH_MONGODB_URI";
    /// The database, when not [`DEFAULT_DATABASE`](super::DEFAULT_DATABASE).
    pub const MONGODB_DATABASE: &str = "EDGEPUSH_MONGODB_DATABASE";
}

/// Default database name.
pub const DEFAULT_DATABASE: &str = "edgepush";
/// Default time a message is kept for replay.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Default bound on finding a usable server (the driver's own default is 30 s).
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound on opening one connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of recipients of one append written at the same time.
pub const DEFAULT_APPEND_CONCURRENCY: usize = 32;
/// Default bound on the copies stored by one round of the append batcher.
pub const DEFAULT_APPEND_BATCH: usize = 1000;
/// Default number of append rounds in flight at once.
pub const DEFAULT_APPEND_ROUNDS: usize = 2;
/// Default number of attempts to claim a seq before giving up with
/// [`StoreError::Contention`](edgepush_core::StoreError::Contention).
pub const DEFAULT_MAX_SEQ_ATTEMPTS: u32 = 100;

/// How to reach MongoDB and how to bound the work done there.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// `mongodb://` or `mongodb+srv://` connection string. May hold a
    /// password, so [`fmt::Debug`] redacts it. Options in it (pool size,
    /// write concern, TLS) are honoured, except the two timeouts below which
    /// this config sets explicitly.
    pub uri: String,
    /// Database holding the `messages` and `users` collections, so that
    /// deployments (and tests) can share one server.
    pub database: String,
    /// How long a message stays available for replay. Enforced by a TTL
    /// index where the server has them, by a background sweep otherwise.
    pub retention: Duration,
    /// Bound on the driver's wait for a usable server. Its default (30 s)
    /// would hold a Lambda invocation and its caller for half a minute while
    /// MongoDB is down; failing fast lets collect answer 503 instead.
    pub server_selection_timeout: Duration,
    /// Bound on opening one TCP/TLS connection, for the same reason.
    pub connect_timeout: Duration,
    /// How many reads of the append path (seq counters of the users of a
    /// round, existing copies) run concurrently: enough to hide round trips
    /// on large fan-outs, bounded so that appends cannot monopolise the
    /// connection pool.
    pub append_concurrency: usize,
    /// How many copies one round of the append batcher stores at most
    /// (one `insert` and one counter `update` each): bounds the size of a
    /// command; copies beyond wait for the next round.
    pub append_batch: usize,
    /// How many rounds of the append batcher run at once, each on users
    /// the others do not hold: while one round waits for the server,
    /// another stores the copies that arrived meanwhile (a server with
    /// spare cores stores two inserts in about the time of one).
    pub append_rounds: usize,
    /// How many times one recipient's append tries to claim the next seq
    /// before answering `Contention`; only hot users with many concurrent
    /// writers ever need more than a few.
    pub max_seq_attempts: u32,
}

impl MongoConfig {
    /// A configuration for `uri` with every other field at its default.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            database: DEFAULT_DATABASE.to_owned(),
            retention: DEFAULT_RETENTION,
            server_selection_timeout: DEFAULT_SERVER_SELECTION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            append_concurrency: DEFAULT_APPEND_CONCURRENCY,
            append_batch: DEFAULT_APPEND_BATCH,
            append_rounds: DEFAULT_APPEND_ROUNDS,
            max_seq_attempts: DEFAULT_MAX_SEQ_ATTEMPTS,
        }
    }
}

impl MongoConfig {
    /// The deployment's configuration: [`env::MONGODB_URI`] (required, a
    /// `mongodb://` or `mongodb+srv://` URI) and [`env::MONGODB_DATABASE`]
    /// (optional); every other field at its default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::new(lookup))?.ok_or(ConfigError::Missing(env::MONGODB_URI))
    }

    /// Like [`from_lookup`](Self::from_lookup) for components where MongoDB
    /// is optional: `None` when [`env::MONGODB_URI`] is unset.
    pub fn from_lookup_optional(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        Self::from_vars(&Vars::new(lookup))
    }

    fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(uri) = vars.get(env::MONGODB_URI) else {
            return Ok(None);
        };
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(ConfigError::invalid(
                env::MONGODB_URI,
                "expected a mongodb:// or mongodb+srv:// URI",
            ));
        }
        let mut config = Self::new(uri);
        if let Some(database) = vars.get(env::MONGODB_DATABASE) {
            config.database = database;
        }
        Ok(Some(config))
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("database", &self.database)
            .field("retention", &self.retention)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("append_concurrency", &self.append_concurrency)
            .field("append_batch", &self.append_batch)
            .field("append_rounds", &self.append_rounds)
            .field("max_seq_attempts", &self.max_seq_attempts)
            .finish()
    }
}

/// `uri` with any credentials (`user:password@`) replaced by `***@`, fit for
/// logs and error messages.
pub(crate) fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_owned();
    };
    let rest = &uri[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &uri[..scheme_end], &rest[at..]),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = MongoConfig::new("mongodb://h:1");
        assert_eq!(c.database, "edgepush");
        assert_eq!(c.retention, Duration::from_secs(604_800));
        assert_eq!(c.server_selection_timeout, Duration::from_secs(2));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.append_concurrency, 32);
        assert_eq!(c.append_rounds, 2);
    }

    #[test]
    fn from_lookup_reads_the_uri_and_the_database() {
        use edgepush_core::config::lookup_from_pairs as lookup;
        let c = MongoConfig::from_lookup(lookup(&[
            (env::MONGODB_URI, "mongodb://h:1"),
            (env::MONGODB_DATABASE, " "),
        ]))
        .expect("valid");
        assert_eq!(c, MongoConfig::new("mongodb://h:1"));
        let c = MongoConfig::from_lookup(lookup(&[
            (env::MONGODB_URI, "mongodb://h:1"),
            (env::MONGODB_DATABASE, "other"),
        ]))
        .expect("valid");
        assert_eq!(c.database, "other");
        assert_eq!(
            MongoConfig::from_lookup(lookup(&[])),
            Err(ConfigError::Missing(env::MONGODB_URI))
        );
        assert_eq!(MongoConfig::from_lookup_optional(lookup(&[])), Ok(None));
        let err =
            MongoConfig::from_lookup(lookup(&[(env::MONGODB_URI, "http://u:pw@h")])).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn debug_redacts_credentials() {
        let c = MongoConfig::new("mongodb://app:s3cret@db1:27017,db2/?replicaSet=rs");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("***@db1:27017,db2/?replicaSet=rs"),
            "{shown}"
        );
        assert_eq!(redact_uri("mongodb://h:1/x"), "mongodb://h:1/x");
        assert_eq!(redact_uri("no scheme"), "no scheme");
    }
}
