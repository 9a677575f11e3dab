//! Where one end-to-end test's system keeps its state. The shared servers'
//! addresses, unique names and the policy for a missing server (the test
//! fails) are [`edgepush_testkit::env`]'s.

use edgepush_testkit::{mongodb_uri, redis_url, unique_db};

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
        if let Err(e) = edgepush_testkit::drop_database(&self.mongodb_uri, &self.database).await {
            tracing::warn!(database = %self.database, error = %e, "could not drop the test database");
        }
    }

    /// Runs `test` in a fresh [`shared`](Self::shared) environment and
    /// cleans up after it, whatever its result:
    /// `TestEnv::run(async |env| { ... }).await` or
    /// `TestEnv::run(the_test_body).await`.
    pub async fn run(test: impl AsyncFnOnce(&TestEnv) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let env = Self::shared()?;
        let result = test(&env).await;
        env.cleanup().await;
        result
    }
}
