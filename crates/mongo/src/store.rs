//! [`MongoMessageStore`]: the [`MessageStore`] port on MongoDB (or FerretDB).
//!
//! # How seqs stay gap-free without transactions
//!
//! A copy for `user` is stored by inserting a document whose `_id` is
//! `"<user>:<seq>"`, so the unique `_id` index admits exactly one document
//! per (user, seq) whatever the number of writers. To pick the seq, a writer
//! reads the user's counter (`users.last_seq`), inserts at `last_seq + 1`,
//! then moves the counter up with `$max`. The counter is only ever moved to a
//! seq that has been stored, so `last_seq + 1` never skips a number.
//!
//! When the insert hits a duplicate key, either the idempotency index fired
//! (this request's copy exists: return it) or the seq was taken: by a
//! concurrent writer, or by a writer that crashed between its insert and its
//! counter update. The writer then reads the highest stored seq of the user
//! and tries the next one. Any crash therefore leaves at worst a counter that
//! lags behind, which the next writer (or an idempotent retry, or the
//! retention sweep) repairs, and never a gap or a duplicate.
//!
//! Idempotency rests on the unique `(source, idem, user)` index: however many
//! identical requests race, one insert per recipient wins and every other
//! racer finds and returns that document.
//!
//! Within one store instance, appends to the same user queue on a local lock
//! ([`crate::locks`]), so only separate processes race for a seq; racers back
//! off with jitter and give up with [`StoreError::Contention`] after
//! [`MongoConfig::max_seq_attempts`].
//!
//! One residual window: if a writer crashes between its insert and its
//! counter update, nothing else is appended to that user for the whole
//! retention period, and the server's TTL monitor (not this store's sweep,
//! which repairs the counter first) deletes that last document, the seq is
//! handed out again. A client that had read the lost message would then skip
//! its reuse. This needs a crash and a week of silence for one user.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::message::now_ms;
use edgepush_core::{
    MessageStore, NewMessage, Seq, StoreError, StoredMessage, StreamPosition, UserId,
};
use futures_util::{StreamExt, TryStreamExt, stream};
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{MongoConfig, redact_uri};
use crate::counters::bump_counter;
use crate::error::{DuplicateOf, duplicate_of, is_transient_code, store_error};
use crate::locks::UserLocks;
use crate::retention::{self, RetentionMode};
use crate::schema::{
    CopyTemplate, INDEX_IDEMPOTENCY, INDEX_USER_SEQ, MESSAGES, USERS, get_seq, idem_value,
    message_from_doc, seq_to_bson,
};

/// Longest pause between two attempts to claim a seq under contention.
const MAX_BACKOFF_MS: u64 = 50;

/// What one insert came to.
enum Inserted {
    /// The copy is stored.
    Yes,
    /// A unique index refused it.
    Duplicate(DuplicateOf),
}

/// The message log on MongoDB. Cheap to clone: clones share one driver client
/// (and its connection pool). The retention sweeper, when one runs, stops
/// once the last clone is dropped.
#[derive(Clone)]
pub struct MongoMessageStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured database, for commands such as `ping`.
    db: Database,
    /// The `messages` collection: one document per (user, seq).
    messages: Collection<Document>,
    /// The `users` collection: seq counter and acked seq per user.
    users: Collection<Document>,
    /// Bounds from the config, kept for the append path.
    config: MongoConfig,
    /// How the server enforces retention.
    retention_mode: RetentionMode,
    /// Queues this instance's appends per user (see [`crate::locks`]).
    locks: UserLocks,
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
        let client = Client::with_options(options)
            .map_err(|e| store_error("creating the MongoDB client", e))?;
        let db = client.database(&config.database);
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| store_error(&format!("reaching MongoDB at {shown_uri}"), e))?;

        let messages = db.collection::<Document>(MESSAGES);
        let users = db.collection::<Document>(USERS);
        let unique = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(true)
                .build()
        };
        // One index per command: FerretDB v1 panics (and drops the
        // connection) when one createIndexes names two existing indexes.
        let indexes = [
            (doc! { "user": 1, "seq": 1 }, INDEX_USER_SEQ),
            (
                doc! { "source": 1, "idem": 1, "user": 1 },
                INDEX_IDEMPOTENCY,
            ),
        ];
        for (keys, name) in indexes {
            let model = IndexModel::builder()
                .keys(keys)
                .options(unique(name))
                .build();
            messages
                .create_index(model)
                .await
                .map_err(|e| store_error(&format!("creating the index {name}"), e))?;
        }
        let retention_mode = retention::setup(&messages, config.retention).await?;

        let sweeper = match retention_mode {
            RetentionMode::TtlIndex => None,
            RetentionMode::Sweeper => {
                let stop = CancellationToken::new();
                retention::spawn_sweeper(
                    messages.clone(),
                    users.clone(),
                    config.retention,
                    stop.clone(),
                );
                Some(stop.drop_guard())
            }
        };
        tracing::info!(
            uri = %shown_uri,
            database = %config.database,
            retention_mode = ?retention_mode,
            "message store connected"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                messages,
                users,
                config,
                retention_mode,
                locks: UserLocks::default(),
                _sweeper: sweeper,
            }),
        })
    }

    /// How the connected server enforces retention.
    pub fn retention_mode(&self) -> RetentionMode {
        self.inner.retention_mode
    }

    /// Deletes the messages older than the retention now (what the
    /// background sweeper does periodically) and returns how many went.
    /// Each affected user's counter is kept, so their seq continues.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        retention::sweep(
            &self.inner.messages,
            &self.inner.users,
            self.inner.config.retention,
        )
        .await
    }

    /// The user's counter: the highest seq known to be stored (0 when none).
    async fn last_seq(&self, user: &UserId) -> Result<Seq, StoreError> {
        let doc = self
            .inner
            .users
            .find_one(doc! { "_id": user.as_str() })
            .await
            .map_err(|e| store_error("reading a seq counter", e))?;
        Ok(doc.and_then(|d| get_seq(&d, "last_seq")).unwrap_or(0))
    }

    /// The highest seq stored for `user` (0 when none).
    async fn highest_stored_seq(&self, user: &UserId) -> Result<Seq, StoreError> {
        let doc = self
            .inner
            .messages
            .find_one(doc! { "user": user.as_str() })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(|e| store_error("reading the highest seq", e))?;
        Ok(doc.and_then(|d| get_seq(&d, "seq")).unwrap_or(0))
    }

    /// The copy stored for `user` under `(source, idem)`, if any.
    async fn find_copy(
        &self,
        source: &str,
        idem: &str,
        user: &UserId,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let doc = self
            .inner
            .messages
            .find_one(doc! { "source": source, "idem": idem, "user": user.as_str() })
            .await
            .map_err(|e| store_error("reading a stored copy", e))?;
        match doc {
            None => Ok(None),
            Some(d) => message_from_doc(&d)
                .map(Some)
                .map_err(|e| StoreError::Backend(e.to_string())),
        }
    }

    /// Moves `user`'s counter up to `seq`. The copy is stored already; the
    /// append still fails when the counter cannot follow, because readers
    /// trust the counter as the end of the user's log (a replay stops
    /// there): the caller's retry with the same idempotency key finds the
    /// copy and moves the counter then.
    async fn advance_counter(&self, user: &UserId, seq: Seq) -> Result<(), StoreError> {
        bump_counter(&self.inner.users, user.as_str(), "last_seq", seq)
            .await
            .inspect_err(|e| {
                tracing::warn!(user = %user, seq, error = %e, "stored a copy but could not advance the seq counter; the append fails so that it is retried");
            })
    }

    /// Inserts one copy with the `insert` command, so that a duplicate-key
    /// error comes back with the server's structured fields (`keyPattern`,
    /// `keyValue`), which the driver's `insert_one` drops.
    async fn insert_copy(&self, copy: Document) -> Result<Inserted, StoreError> {
        let mut command = doc! { "insert": MESSAGES, "documents": [copy], "ordered": true };
        if let Some(wc) = self.inner.messages.write_concern()
            && let Ok(wc) = mongodb::bson::to_document(wc)
            && !wc.is_empty()
        {
            command.insert("writeConcern", wc);
        }
        let reply = self
            .inner
            .db
            .run_command(command)
            .await
            .map_err(|e| store_error("storing a message", e))?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(first) = errors.first().and_then(|e| e.as_document())
        {
            let code = first.get_i32("code").unwrap_or(0);
            let text = first.get_str("errmsg").unwrap_or("");
            return match code {
                11000 | 11001 => Ok(Inserted::Duplicate(duplicate_of(first))),
                c if is_transient_code(c) => Err(StoreError::Unavailable(format!(
                    "storing a message: code {c}: {text}"
                ))),
                c => Err(StoreError::Backend(format!(
                    "storing a message: code {c}: {text}"
                ))),
            };
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            // The write happened on the primary but is not known to be
            // durable as asked: not an acknowledgement collect may answer
            // 202 on. A retry meets the idempotency index.
            return Err(StoreError::Unavailable(format!(
                "storing a message: write concern error {wce}"
            )));
        }
        Ok(Inserted::Yes)
    }

    /// Stores `tpl` for its user at the next free seq, or returns the copy an
    /// earlier or concurrent identical request stored.
    async fn append_one(&self, tpl: CopyTemplate<'_>) -> Result<StoredMessage, StoreError> {
        let user = tpl.user;
        let mut slot = self.inner.locks.lock(user).await;
        let result = self.claim_seq(&tpl, slot.known_seq()).await;
        match &result {
            Ok((stored, true)) => slot.set_known_seq(Some(stored.seq)),
            Ok((_, false)) => {}
            Err(_) => slot.set_known_seq(None),
        }
        result.map(|(stored, _)| stored)
    }

    /// The loop of [`append_one`](Self::append_one), starting after
    /// `known_seq` (a seq known to be stored) or after the user's counter.
    /// Returns the copy and whether this call inserted it.
    async fn claim_seq(
        &self,
        tpl: &CopyTemplate<'_>,
        known_seq: Option<Seq>,
    ) -> Result<(StoredMessage, bool), StoreError> {
        let user = tpl.user;
        let base = match known_seq {
            Some(seq) => seq,
            None => self.last_seq(user).await?,
        };
        let mut next = base.saturating_add(1);
        let attempts = self.inner.config.max_seq_attempts.max(1);
        for attempt in 0..attempts {
            let seq = seq_to_bson(next)
                .ok_or_else(|| StoreError::Backend(format!("seq of {user} overflowed")))?;
            let duplicate = match self.insert_copy(tpl.to_doc(seq)).await? {
                Inserted::Yes => {
                    self.advance_counter(user, next).await?;
                    return Ok((tpl.stored(next), true));
                }
                Inserted::Duplicate(of) => of,
            };
            // A seq conflict says nothing about this request's copy; if one
            // exists, the insert at a free seq will meet the idempotency
            // index and come here again. When the server does not say which
            // index fired, look.
            if duplicate != DuplicateOf::Seq
                && let Some(existing) = self.find_copy(tpl.source, tpl.idem, user).await?
            {
                // Stored by an earlier try of this request or a racer; that
                // writer may have crashed before moving the counter.
                self.advance_counter(user, existing.seq).await?;
                return Ok((existing, false));
            }
            // The seq is taken. Continue after the highest stored one; if the
            // taker vanished meanwhile (retention), retry the same seq rather
            // than skip it.
            let highest = self.highest_stored_seq(user).await?;
            next = next.max(highest.saturating_add(1));
            if attempt > 0 {
                let cap = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
                let pause = rand::random_range(0..=cap);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        Err(StoreError::Contention(format!(
            "gave up claiming a seq for {user} after {attempts} attempts"
        )))
    }
}

#[async_trait]
impl MessageStore for MongoMessageStore {
    async fn append(&self, msg: &NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        let id = msg.message_id();
        let idem = idem_value(msg.idempotency_key.as_deref(), &id);
        let created_at_ms = now_ms();
        // Futures built up front: a `map` closure over borrowed recipients
        // trips the compiler's `Send` inference in `async_trait`.
        let copies: Vec<_> = msg
            .to
            .iter()
            .map(|user| {
                self.append_one(CopyTemplate {
                    user,
                    id: &id,
                    data: &msg.data,
                    source: &msg.source,
                    idem: &idem,
                    created_at_ms,
                })
            })
            .collect();
        stream::iter(copies)
            .buffered(self.inner.config.append_concurrency.max(1))
            .try_collect()
            .await
    }

    async fn read_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Nothing is stored above i64::MAX; and a limit of 0 would mean "no
        // limit" to the server.
        let Some(after) = seq_to_bson(after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut cursor = self
            .inner
            .messages
            .find(doc! { "user": user.as_str(), "seq": { "$gt": after } })
            .sort(doc! { "seq": 1 })
            .limit(limit)
            .await
            .map_err(|e| store_error("reading messages", e))?;
        let mut out = Vec::new();
        while let Some(doc) = cursor
            .try_next()
            .await
            .map_err(|e| store_error("reading messages", e))?
        {
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
        let users = &self.inner.users;
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
            return Ok(seq);
        }
        // Beyond the last stored seq (or nothing stored): clip to it. A
        // user without a document has nothing stored, so nothing to ack.
        let position = self.position(user).await?;
        if position.last_seq > 0 {
            bump_counter(users, user.as_str(), "acked_seq", position.last_seq).await?;
        }
        Ok(position.last_seq.min(seq).max(position.acked_seq))
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, StoreError> {
        let doc = self
            .inner
            .users
            .find_one(doc! { "_id": user.as_str() })
            .await
            .map_err(|e| store_error("reading a stream position", e))?;
        let field = |name| doc.as_ref().and_then(|d| get_seq(d, name)).unwrap_or(0);
        let last_seq = field("last_seq");
        Ok(StreamPosition {
            last_seq,
            // An acked seq written before acks were clipped may exceed it.
            acked_seq: field("acked_seq").min(last_seq),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(|e| store_error("pinging MongoDB", e))
    }
}
