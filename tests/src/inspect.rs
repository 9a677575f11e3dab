//! Reading the stores behind the system's back, to check what it wrote
//! there: the Redis route and liveness keys (through the Redis crate's own
//! key layout, [`edgepush_redis::keys`]) and the messages in MongoDB
//! (through a separate [`MongoMessageStore`] connection).

use std::collections::HashMap;

use anyhow::Context as _;
use edgepush_core::{NodeId, UserId};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_redis::config::DEFAULT_KEY_PREFIX;
use edgepush_redis::keys::{node_key, route_key};
use redis::AsyncCommands as _;

/// A plain Redis connection for looking at the keys edge nodes write.
#[derive(Clone)]
pub struct RedisProbe {
    conn: redis::aio::MultiplexedConnection,
    /// The key prefix nodes use: the default, since `edge-node serve` has
    /// no setting for it.
    prefix: String,
}

impl RedisProbe {
    /// Connects to `url`, reading keys under the default prefix.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to Redis at {url}"))?;
        Ok(Self {
            conn,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
        })
    }

    /// The route hash of `user`: connection id -> node id (empty when the
    /// key does not exist).
    pub async fn routes(&self, user: &str) -> anyhow::Result<HashMap<String, String>> {
        let key = route_key(&self.prefix, &UserId::new(user)?);
        let mut conn = self.conn.clone();
        conn.hgetall(&key)
            .await
            .with_context(|| format!("HGETALL {key}"))
    }

    /// Whether the route hash of `user` exists at all.
    pub async fn route_key_exists(&self, user: &str) -> anyhow::Result<bool> {
        let key = route_key(&self.prefix, &UserId::new(user)?);
        let mut conn = self.conn.clone();
        conn.exists(&key)
            .await
            .with_context(|| format!("EXISTS {key}"))
    }

    /// The push URL in `node`'s liveness entry, `None` once it expired or
    /// was removed.
    pub async fn node_url(&self, node: &str) -> anyhow::Result<Option<String>> {
        let key = node_key(&self.prefix, &NodeId::new(node)?);
        let mut conn = self.conn.clone();
        conn.get(&key).await.with_context(|| format!("GET {key}"))
    }
}

/// A [`MongoMessageStore`] of its own on `database`: a separate connection
/// from the system's, to read what the system stored.
pub async fn message_store(uri: &str, database: &str) -> anyhow::Result<MongoMessageStore> {
    let mut config = MongoConfig::new(uri);
    config.database = database.to_owned();
    MongoMessageStore::connect(config)
        .await
        .with_context(|| format!("connecting a message store to {uri} database {database}"))
}
