//! The environment the tests run in: the shared servers' addresses (which
//! must be given: a test without them fails, it never passes silently), and
//! unique names so tests running in parallel never see each other's data.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::bail;

/// The shared Redis of the test run.
pub const ENV_REDIS_URL: &str = "EDGEPUSH_TEST_REDIS_URL";
/// The shared MongoDB (or FerretDB) of the test run.
pub const ENV_MONGODB_URI: &str = "EDGEPUSH_TEST_MONGODB_URI";

fn required(name: &str, example: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => bail!("{name} is not set: set it (for example {name}={example}), or run scripts/test"),
    }
}

/// The shared Redis URL, from `EDGEPUSH_TEST_REDIS_URL`; an error saying
/// how to set it when it is missing.
pub fn redis_url() -> anyhow::Result<String> {
    required(ENV_REDIS_URL, "redis://127.0.0.1:6390")
}

/// The shared MongoDB URI, from `EDGEPUSH_TEST_MONGODB_URI`; an error saying
/// how to set it when it is missing.
pub fn mongodb_uri() -> anyhow::Result<String> {
    required(ENV_MONGODB_URI, "mongodb://127.0.0.1:27090")
}

/// A name no other test (of this run or another) uses: `tag`, the process
/// id, a counter and random bits. Only characters valid in user, node and
/// connection ids (`[A-Za-z0-9-]`), at most `tag.len() + 26` bytes.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits: u32 = rand::random();
    format!("{tag}-{:x}-{n}-{bits:08x}", std::process::id())
}

/// A MongoDB database name no other test uses (letters, digits and `_`,
/// short enough for every server).
pub fn unique_db() -> String {
    unique("ept").replace('-', "_")
}

/// Where one test's system keeps its state: the shared Redis and MongoDB,
/// and a database of the test's own (nodes and collect of one test share it).
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// The Redis every component of the test uses.
    pub redis_url: String,
    /// The MongoDB every component of the test uses.
    pub mongodb_uri: String,
    /// The test's own database on it.
    pub database: String,
    /// The topic namespaces of the test's nodes and collect API.
    pub namespaces: edgepush_core::Namespaces,
}

impl TestEnv {
    /// The shared servers (from the environment) and a fresh database.
    pub fn shared() -> anyhow::Result<Self> {
        Ok(Self {
            redis_url: redis_url()?,
            mongodb_uri: mongodb_uri()?,
            database: unique_db(),
            namespaces: edgepush_core::Namespaces::default(),
        })
    }

    /// The same servers and database, with another Redis (a private one).
    pub fn with_redis(&self, redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            ..self.clone()
        }
    }

    /// The same servers and database, with another MongoDB (a private one).
    pub fn with_mongodb(&self, mongodb_uri: impl Into<String>) -> Self {
        Self {
            mongodb_uri: mongodb_uri.into(),
            ..self.clone()
        }
    }

    /// Drops the test's database (best effort: a failing cleanup must not
    /// hide the test's own result).
    pub async fn cleanup(&self) {
        if let Err(e) = crate::inspect::drop_database(&self.mongodb_uri, &self.database).await {
            tracing::warn!(database = %self.database, error = %e, "could not drop the test database");
        }
    }
}
