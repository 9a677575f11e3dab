//! [`MongoMessageStore`]: the [`MessageStore`] port on MongoDB (or FerretDB).
//!
//! The per-user log (gap-free seqs without transactions, idempotent
//! appends) is a [`SeqLog`] keyed by user: see [`crate::log`] for how it
//! stays gap-free under concurrent writers and crashes. Appends go through
//! one [`AppendBatcher`] per store (shared by its clones), which stores the
//! copies of concurrent requests together, a few round trips per round
//! instead of per copy: see [`crate::batcher`] for how, and why the
//! guarantees hold. This module adds what only users have: acks and the
//! stream position.

use std::sync::Arc;

use async_trait::async_trait;
use edgepush_core::{
    MessageStore, NewMessage, Seq, StoreError, StoredMessage, StreamPosition, UserId,
};
use mongodb::Database;
use mongodb::bson::doc;
use mongodb::options::{ClientOptions, ReturnDocument};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::batcher::{AppendBatcher, BatchSettings, Counters, KNOWN_FOR};
use crate::config::{MongoConfig, redact_uri};
use crate::counters::{bump_counter, bump_counters_to};
use crate::error::store_error;
use crate::log::SeqLog;
use crate::retention::{self, Expiry, RetentionMode};
use crate::schema::{
    INDEX_IDEMPOTENCY, INDEX_USER_SEQ, MESSAGES, USERS, get_seq, message_from_doc, seq_to_bson,
};
use crate::server::ServerKind;

/// The message log on MongoDB. Cheap to clone: clones share one driver client
/// (and its connection pool). The retention sweeper, when one runs, stops
/// once the last clone is dropped.
#[derive(Clone)]
pub struct MongoMessageStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `messages` (one document per (user, seq)) and `users` (seq counter
    /// and acked seq per user).
    log: Arc<SeqLog>,
    /// Stores the copies of concurrent appends together.
    batcher: AppendBatcher,
    /// Bounds from the config, kept for the append path.
    config: MongoConfig,
    /// How the server enforces retention.
    retention_mode: RetentionMode,
    /// Which server it is: the indexes it got.
    server: ServerKind,
    /// Stops the retention sweeper when the last clone of the store goes.
    _sweeper: Option<DropGuard>,
}

impl std::fmt::Debug for MongoMessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoMessageStore")
            .field("config", &self.inner.config)
            .field("retention_mode", &self.inner.retention_mode)
            .finish()
    }
}

impl MongoMessageStore {
    /// Connects, checks that the server answers, and creates the indexes.
    ///
    /// Fails with [`StoreError::Unavailable`] within about
    /// `server_selection_timeout` when the server cannot be reached, and with
    /// [`StoreError::Backend`] when the URI is invalid or an index the
    /// store's guarantees rest on cannot be created. Must be called inside a
    /// tokio runtime (the retention sweeper is a tokio task).
    pub async fn connect(config: MongoConfig) -> Result<Self, StoreError> {
        let db = connect_db(&config).await?;
        Self::on(db, config).await
    }

    /// The store on a database handle already connected (shares its client
    /// and connection pool); creates the indexes.
    pub async fn on(db: Database, config: MongoConfig) -> Result<Self, StoreError> {
        let log = Arc::new(SeqLog::new(
            db,
            MESSAGES,
            USERS,
            "user",
            config.max_seq_attempts,
        ));
        let server = ServerKind::detect(&log.db).await?;
        log.create_indexes(INDEX_USER_SEQ, INDEX_IDEMPOTENCY, server)
            .await?;
        let expiry = Expiry::messages(config.retention);
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
            "message store connected"
        );
        let batcher = AppendBatcher::spawn(
            Arc::clone(&log),
            BatchSettings {
                max_copies: config.append_batch.max(1),
                rounds: config.append_rounds.max(1),
                concurrency: config.append_concurrency.max(1),
                max_attempts: config.max_seq_attempts.max(1),
                // Shorter than a quarter of the retention, so that nothing
                // stored after a remembered seq can have expired.
                known_for: KNOWN_FOR.min(config.retention / 4),
                counters: counters_for(retention_mode),
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                batcher,
                config,
                retention_mode,
                server,
                _sweeper: sweeper,
            }),
        })
    }

    /// The database this store is on (to open the topic store on the same
    /// client: [`MongoTopicStore::on`](crate::MongoTopicStore::on)).
    pub fn database(&self) -> Database {
        self.inner.log.db.clone()
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &MongoConfig {
        &self.inner.config
    }

    /// How the connected server enforces retention.
    pub fn retention_mode(&self) -> RetentionMode {
        self.inner.retention_mode
    }

    /// Which server it is on, as far as the indexes it created go.
    pub fn server_kind(&self) -> ServerKind {
        self.inner.server
    }

    /// Deletes the messages older than the retention now (what the
    /// background sweeper does periodically) and returns how many went.
    /// Each affected user's counter is kept, so their seq continues.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        // Seqs the appends remember may be about to be deleted (a test
        // ages documents by hand): read the counters again afterwards.
        self.inner.batcher.forget().await;
        let log = &self.inner.log;
        retention::sweep(
            &log.entries,
            &log.counters,
            Expiry::messages(self.inner.config.retention),
        )
        .await
    }
}

/// How far a user's counter may lag behind the end of the log before an
/// append moves it (with [`Counters::Lagging`]): a reader then finds the
/// end in at most about `2 log2(32) + 1 = 11` reads by `_id`, and the
/// append path writes a counter once per 32 copies of a user.
const MAX_COUNTER_LAG: u64 = 32;

/// When appends move the counters, given how retention deletes: the
/// counter can lag where this crate's sweep is the only deleter (it moves
/// the counter before deleting below it); where a TTL monitor deletes, the
/// counter must be the end of the log (see [`crate::batcher`]).
fn counters_for(mode: RetentionMode) -> Counters {
    match mode {
        RetentionMode::TtlIndex => Counters::BeforeAnswer,
        RetentionMode::Sweeper => Counters::Lagging {
            max_lag: MAX_COUNTER_LAG,
        },
    }
}

impl MongoMessageStore {
    /// An ack where the counter may lag (see `counters_for`), when `seq` is
    /// stored: then it is within the log whatever the counter says, and
    /// one write moves both the acked seq and the counter up to it (so the
    /// counter of a user whose clients ack keeps up with the log). Two
    /// operations: a read of the copy by `_id`, and the write. `None` when
    /// `seq` is not stored (beyond the log, or deleted): the caller clips.
    async fn ack_stored(&self, user: &UserId, seq: Seq) -> Result<Option<Seq>, StoreError> {
        let log = &self.inner.log;
        let Some(wanted) = seq_to_bson(seq).filter(|s| *s > 0) else {
            return Ok(None);
        };
        if !log.entry_exists(user.as_str(), seq).await? {
            return Ok(None);
        }
        self.record_ack(user, wanted).await.map(Some)
    }

    /// `$max`es the acked seq and the counter of `user` to `wanted`, a seq
    /// known to be stored, in one write; answers the acked seq after it.
    async fn record_ack(&self, user: &UserId, wanted: i64) -> Result<Seq, StoreError> {
        let log = &self.inner.log;
        let after = log
            .counters
            .find_one_and_update(
                doc! { "_id": user.as_str() },
                doc! { "$max": { "acked_seq": wanted, "last_seq": wanted } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| store_error("recording an ack", e))?;
        let field = |name| after.as_ref().and_then(|d| get_seq(d, name)).unwrap_or(0);
        let (acked, counter) = (field("acked_seq"), field("last_seq"));
        if acked <= counter {
            return Ok(acked);
        }
        // An acked seq past the counter (written before acks were
        // clipped): answer it clipped to the log, as `position` does.
        Ok(self.position(user).await?.acked_seq)
    }
}

/// Connects to the server `config` names and checks that it answers.
///
/// Fails with [`StoreError::Unavailable`] within about
/// `server_selection_timeout` when the server cannot be reached, and with
/// [`StoreError::Backend`] when the URI is invalid.
pub(crate) async fn connect_db(config: &MongoConfig) -> Result<Database, StoreError> {
    let shown_uri = redact_uri(&config.uri);
    let mut options = ClientOptions::parse(&config.uri).await.map_err(|e| {
        let err = store_error("parsing the MongoDB URI", e);
        match err {
            StoreError::Unavailable(m) => StoreError::Unavailable(m),
            _ => StoreError::Backend(format!("invalid MongoDB URI {shown_uri}")),
        }
    })?;
    options.server_selection_timeout = Some(config.server_selection_timeout);
    options.connect_timeout = Some(config.connect_timeout);
    if options.app_name.is_none() {
        options.app_name = Some("edgepush".to_owned());
    }
    let client = mongodb::Client::with_options(options)
        .map_err(|e| store_error("creating the MongoDB client", e))?;
    let db = client.database(&config.database);
    db.run_command(doc! { "ping": 1 })
        .await
        .map_err(|e| store_error(&format!("reaching MongoDB at {shown_uri}"), e))?;
    Ok(db)
}

#[async_trait]
impl MessageStore for MongoMessageStore {
    async fn append(&self, msg: &NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.batcher.append(msg).await
    }

    async fn read_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let docs = self
            .inner
            .log
            .read_after(user.as_str(), after, limit)
            .await?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            // A page shorter than asked means "nothing more" to callers:
            // a copy that cannot be read fails the read rather than being
            // skipped, which would end a replay early and silently.
            match message_from_doc(&doc) {
                Ok(m) if m.user_id == *user => out.push(m),
                Ok(m) => {
                    return Err(StoreError::Backend(format!(
                        "reading messages of {user}: found a document of {}",
                        m.user_id
                    )));
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "reading messages of {user}: {e}"
                    )));
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError> {
        // Nothing above i64::MAX is ever stored: clip before converting.
        let wanted = seq_to_bson(seq).unwrap_or(i64::MAX);
        let users = &self.inner.log.counters;
        if self.inner.retention_mode == RetentionMode::Sweeper
            && let Some(acked) = self.ack_stored(user, seq).await?
        {
            return Ok(acked);
        }
        // The common case in one round trip: the ack is within what is
        // stored (the filter), so `$max` may take it as it is.
        let moved = users
            .update_one(
                doc! { "_id": user.as_str(), "last_seq": { "$gte": wanted } },
                doc! { "$max": { "acked_seq": wanted } },
            )
            .await
            .map_err(|e| store_error("recording an ack", e))?;
        if moved.matched_count == 1 {
            if moved.modified_count == 1 {
                return Ok(seq);
            }
            // Already at or past `seq` (an older or repeated ack): answer
            // where it stands, as the port promises, not the seq asked for.
            return Ok(self.position(user).await?.acked_seq);
        }
        // Beyond the last stored seq (or nothing stored): clip to it. A
        // user without a document has nothing stored, so nothing to ack.
        // With a lagging counter (see `counters_for`) the counter moves to
        // the end of the log with it.
        let position = self.position(user).await?;
        let acked = position.last_seq.min(seq).max(position.acked_seq);
        if position.last_seq > 0 {
            match self.inner.retention_mode {
                RetentionMode::TtlIndex => {
                    bump_counter(users, user.as_str(), "acked_seq", position.last_seq).await?;
                }
                RetentionMode::Sweeper => {
                    bump_counters_to(users, user.as_str(), position.last_seq, acked).await?;
                }
            }
        }
        Ok(acked)
    }

    async fn ack_delivered(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError> {
        match self.inner.retention_mode {
            // The counter is the end of the log: `ack`'s one write.
            RetentionMode::TtlIndex => self.ack(user, seq).await,
            // `seq` is stored: no need to look (see `ack_stored`).
            RetentionMode::Sweeper => match seq_to_bson(seq).filter(|s| *s > 0) {
                Some(wanted) => self.record_ack(user, wanted).await,
                None => self.ack(user, seq).await,
            },
        }
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, StoreError> {
        let log = &self.inner.log;
        let doc = log.counter(user.as_str()).await?;
        let field = |name| doc.as_ref().and_then(|d| get_seq(d, name)).unwrap_or(0);
        let counter = field("last_seq");
        let last_seq = match self.inner.retention_mode {
            RetentionMode::TtlIndex => counter,
            // The counter may lag behind the log (see `counters_for`).
            RetentionMode::Sweeper => log.stored_end(user.as_str(), counter).await?,
        };
        Ok(StreamPosition {
            last_seq,
            // An acked seq written before acks were clipped may exceed it.
            acked_seq: field("acked_seq").min(last_seq),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.log.ping().await
    }

    /// Moves every counter the appends left lagging up to the last seq
    /// they stored, once the appends in hand are done. The append task
    /// would do it when the store's last handle is dropped, but a process
    /// that returns from `main` stops its runtime first, and the next
    /// writer of each such user then meets a taken seq (on FerretDB one
    /// refused document sends the whole round's insert back one document
    /// at a time). Nothing to do where counters move before answering
    /// (MongoDB).
    async fn settle(&self) {
        self.inner.batcher.settle().await;
    }
}
