//! [`MongoTopicStore`]: the [`TopicStore`] port on MongoDB (or FerretDB).
//!
//! The per-topic log is a [`SeqLog`] keyed by topic (see [`crate::log`]:
//! gap-free seqs without transactions, idempotent publishes, crash repair),
//! in its own collections:
//!
//! `topic_messages`, one document per (topic, seq):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `_id` | string | `"<topic>:<seq, 20 digits>"` |
//! | `topic`, `seq` | string, int64 | unique index `topic_seq` where the server answers ranges from indexes ([`crate::server`]); the `_id` keeps a seq unique everywhere |
//! | `id` | string | the message id, shared by the copies of one publication |
//! | `data` | string | the payload as JSON text |
//! | `source`, `idem` | string | the publisher and `key:<idempotency key>` / `auto:<id>`; unique index `source_idem_topic` with `topic` |
//! | `created_at` | date | acceptance time |
//! | `expire_at` | date | `created_at` + the namespace's retention; a TTL index (`expireAfterSeconds: 0`) where the server has them, a sweep elsewhere |
//!
//! `topics`, one document per topic: `{_id: <topic>, last_seq}`; kept when
//! retention deletes the messages, so a topic's seq never restarts.

use std::sync::Arc;

use async_trait::async_trait;
use edgepush_core::message::now_ms;
use edgepush_core::{NewTopicMessage, Seq, StoreError, TopicMessage, TopicName, TopicStore};
use futures_util::{StreamExt, TryStreamExt, stream};
use mongodb::Database;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{MongoConfig, redact_uri};
use crate::log::{Claimed, SeqLog};
use crate::retention::{self, Expiry, RetentionMode};
use crate::schema::{
    EntryTemplate, INDEX_TOPIC_IDEMPOTENCY, INDEX_TOPIC_SEQ, TOPIC_MESSAGES, TOPICS, idem_value,
    topic_message_from_doc,
};
use crate::server::ServerKind;
use crate::store::connect_db;

/// The topic log on MongoDB. Cheap to clone: clones share one driver
/// client. The retention sweeper, when one runs, stops with the last clone.
#[derive(Clone)]
pub struct MongoTopicStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `topic_messages` and `topics`.
    log: SeqLog,
    /// Bounds of the append path.
    config: MongoConfig,
    /// How the server enforces retention.
    retention_mode: RetentionMode,
    /// Which server it is: the indexes it got.
    server: ServerKind,
    /// Stops the retention sweeper when the last clone goes.
    _sweeper: Option<DropGuard>,
}

impl std::fmt::Debug for MongoTopicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoTopicStore")
            .field("config", &self.inner.config)
            .field("retention_mode", &self.inner.retention_mode)
            .finish()
    }
}

impl MongoTopicStore {
    /// Connects, checks that the server answers, and creates the indexes;
    /// fails like [`MongoMessageStore::connect`](crate::MongoMessageStore::connect).
    pub async fn connect(config: MongoConfig) -> Result<Self, StoreError> {
        let db = connect_db(&config).await?;
        Self::on(db, config).await
    }

    /// The store on a connected database (sharing its client, e.g. the
    /// message store's [`database`](crate::MongoMessageStore::database));
    /// creates the indexes.
    pub async fn on(db: Database, config: MongoConfig) -> Result<Self, StoreError> {
        let log = SeqLog::new(db, TOPIC_MESSAGES, TOPICS, "topic", config.max_seq_attempts);
        let server = ServerKind::detect(&log.db).await?;
        log.create_indexes(INDEX_TOPIC_SEQ, INDEX_TOPIC_IDEMPOTENCY, server)
            .await?;
        let expiry = Expiry::topic_messages();
        let retention_mode = retention::setup(&log.entries, expiry, server).await?;
        let sweeper = match retention_mode {
            RetentionMode::TtlIndex => None,
            RetentionMode::Sweeper => {
                let stop = CancellationToken::new();
                retention::spawn_sweeper(
                    log.entries.clone(),
                    log.counters.clone(),
                    expiry,
                    config.retention,
                    stop.clone(),
                );
                Some(stop.drop_guard())
            }
        };
        tracing::info!(
            uri = %redact_uri(&config.uri),
            database = %config.database,
            retention_mode = ?retention_mode,
            server = ?server,
            "topic store connected"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                config,
                retention_mode,
                server,
                _sweeper: sweeper,
            }),
        })
    }

    /// How the connected server enforces retention.
    pub fn retention_mode(&self) -> RetentionMode {
        self.inner.retention_mode
    }

    /// Which server it is on, as far as the indexes it created go.
    pub fn server_kind(&self) -> ServerKind {
        self.inner.server
    }

    /// Deletes the topic messages past their `expire_at` now (what the
    /// background sweeper does periodically); returns how many went. Each
    /// topic's counter is kept.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        let log = &self.inner.log;
        retention::sweep(&log.entries, &log.counters, Expiry::topic_messages()).await
    }

    /// Stores `tpl` in its topic at the next free seq, or returns the copy
    /// an earlier or concurrent identical publication stored.
    async fn publish_one(
        &self,
        topic: &TopicName,
        tpl: EntryTemplate<'_>,
    ) -> Result<TopicMessage, StoreError> {
        match self.inner.log.append(&tpl).await? {
            Claimed::Inserted(seq) => Ok(TopicMessage {
                topic: topic.clone(),
                seq,
                id: tpl.id.clone(),
                data: Arc::clone(tpl.data),
                created_at_ms: tpl.created_at_ms,
            }),
            Claimed::Existing(doc) => {
                topic_message_from_doc(&doc).map_err(|e| StoreError::Backend(e.to_string()))
            }
        }
    }
}

#[async_trait]
impl TopicStore for MongoTopicStore {
    async fn publish(&self, msg: &NewTopicMessage) -> Result<Vec<TopicMessage>, StoreError> {
        let id = msg.message_id();
        let idem = idem_value(msg.idempotency_key.as_deref(), &id);
        let created_at_ms = now_ms();
        let copies: Vec<_> = msg
            .topics
            .iter()
            .map(|(topic, retention)| {
                let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                self.publish_one(
                    topic,
                    EntryTemplate {
                        key_field: "topic",
                        key: topic.as_str(),
                        id: &id,
                        data: &msg.data,
                        source: &msg.source,
                        idem: &idem,
                        created_at_ms,
                        expire_at_ms: Some(created_at_ms.saturating_add(retention_ms)),
                    },
                )
            })
            .collect();
        stream::iter(copies)
            .buffered(self.inner.config.append_concurrency.max(1))
            .try_collect()
            .await
    }

    async fn read_after(
        &self,
        topic: &TopicName,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<TopicMessage>, StoreError> {
        let docs = self
            .inner
            .log
            .read_after(topic.as_str(), after, limit)
            .await?;
        // A short page means "nothing more": a copy that cannot be read
        // fails the read rather than ending a replay early.
        docs.iter()
            .map(|doc| match topic_message_from_doc(doc) {
                Ok(m) if m.topic == *topic => Ok(m),
                Ok(m) => Err(StoreError::Backend(format!(
                    "reading topic {topic}: found a document of {}",
                    m.topic
                ))),
                Err(e) => Err(StoreError::Backend(format!("reading topic {topic}: {e}"))),
            })
            .collect()
    }

    async fn last_seq(&self, topic: &TopicName) -> Result<Seq, StoreError> {
        self.inner.log.last_seq(topic.as_str()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.log.ping().await
    }
}
