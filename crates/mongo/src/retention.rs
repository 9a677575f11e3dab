//! Retention: messages older than the configured retention are deleted.
//!
//! Where the server has TTL indexes (MongoDB), a TTL index on `created_at`
//! does the work. Where it answers NotImplemented (FerretDB v1) the store
//! logs one warning at start-up and runs [`sweep`] on a timer instead.
//!
//! Deleting a user's messages never resets their seq: the `users` counter is
//! kept. [`sweep`] also moves the counter up to the highest seq it deletes,
//! which repairs a counter left behind by a crash between an insert and its
//! counter update before the evidence (the inserted document) disappears.

use std::collections::HashMap;
use std::time::Duration;

use edgepush_core::StoreError;
use futures_util::{StreamExt, TryStreamExt, stream};
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use tokio_util::sync::CancellationToken;

use crate::counters::bump_counter;
use crate::error::{code, is_transient, store_error};
use crate::schema::{INDEX_CREATED_AT, INDEX_TTL, get_seq};

/// How many expired documents one sweep round reads and deletes.
const SWEEP_BATCH: i64 = 1000;
/// How many counters a sweep round repairs at the same time.
const SWEEP_CONCURRENCY: usize = 8;

/// How retention is enforced on the connected server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// The server deletes expired messages itself (TTL index).
    TtlIndex,
    /// The server has no TTL indexes; a background task of this store
    /// deletes expired messages periodically.
    Sweeper,
}

/// Creates the index that enforces retention and says which mode applies.
pub(crate) async fn setup(
    messages: &Collection<Document>,
    retention: Duration,
) -> Result<RetentionMode, StoreError> {
    let ttl = IndexModel::builder()
        .keys(doc! { "created_at": 1 })
        .options(
            IndexOptions::builder()
                .name(INDEX_TTL.to_owned())
                .expire_after(retention)
                .build(),
        )
        .build();
    let err = match messages.create_index(ttl).await {
        Ok(_) => return Ok(RetentionMode::TtlIndex),
        Err(e) if is_transient(&e) => return Err(store_error("creating the TTL index", e)),
        Err(e) => e,
    };
    // 85 IndexOptionsConflict / 86 IndexKeySpecsConflict: a TTL index from an
    // earlier deployment with another retention. Adjust it in place.
    if matches!(code(&err), Some(85 | 86)) {
        let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let coll_mod = doc! {
            "collMod": messages.name(),
            "index": { "name": INDEX_TTL, "expireAfterSeconds": secs },
        };
        match messages
            .client()
            .database(&messages.namespace().db)
            .run_command(coll_mod)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    retention_secs = secs,
                    "adjusted the TTL index to the configured retention"
                );
                return Ok(RetentionMode::TtlIndex);
            }
            Err(e) if is_transient(&e) => return Err(store_error("adjusting the TTL index", e)),
            Err(e) => tracing::warn!(error = %e, "could not adjust the existing TTL index"),
        }
    }
    tracing::warn!(
        error = %err,
        retention_secs = retention.as_secs(),
        "the server refused a TTL index (FerretDB has none): expired messages are deleted by a periodic sweep instead"
    );
    let plain = IndexModel::builder()
        .keys(doc! { "created_at": 1 })
        .options(
            IndexOptions::builder()
                .name(INDEX_CREATED_AT.to_owned())
                .build(),
        )
        .build();
    messages
        .create_index(plain)
        .await
        .map_err(|e| store_error("creating the created_at index", e))?;
    Ok(RetentionMode::Sweeper)
}

/// Deletes `messages` older than `retention`, first moving each affected
/// user's counter in `users` up to the highest seq deleted. Returns how many
/// documents were deleted.
pub(crate) async fn sweep(
    messages: &Collection<Document>,
    users: &Collection<Document>,
    retention: Duration,
) -> Result<u64, StoreError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = DateTime::from_millis(
        DateTime::now()
            .timestamp_millis()
            .saturating_sub(retention_ms),
    );
    let filter = doc! { "created_at": { "$lt": cutoff } };
    let mut total = 0;
    loop {
        let batch: Vec<Document> = messages
            .find(filter.clone())
            .projection(doc! { "_id": 1, "user": 1, "seq": 1 })
            .limit(SWEEP_BATCH)
            .await
            .map_err(|e| store_error("finding expired messages", e))?
            .try_collect()
            .await
            .map_err(|e| store_error("reading expired messages", e))?;
        if batch.is_empty() {
            return Ok(total);
        }
        let full = batch.len() as i64 >= SWEEP_BATCH;
        let mut highest: HashMap<&str, u64> = HashMap::new();
        let mut ids: Vec<Bson> = Vec::with_capacity(batch.len());
        for d in &batch {
            if let Some(id) = d.get("_id") {
                ids.push(id.clone());
            }
            if let (Ok(user), Some(seq)) = (d.get_str("user"), get_seq(d, "seq")) {
                let h = highest.entry(user).or_default();
                *h = (*h).max(seq);
            }
        }
        let repairs: Vec<_> = highest
            .into_iter()
            .map(|(user, seq)| bump_counter(users, user, "last_seq", seq))
            .collect();
        stream::iter(repairs)
            .buffer_unordered(SWEEP_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        let deleted = messages
            .delete_many(doc! { "_id": { "$in": ids }, "created_at": { "$lt": cutoff } })
            .await
            .map_err(|e| store_error("deleting expired messages", e))?
            .deleted_count;
        total += deleted;
        if !full {
            return Ok(total);
        }
    }
}

/// Runs [`sweep`] every `min(retention / 10, 60 s)` until `stop` is cancelled.
pub(crate) fn spawn_sweeper(
    messages: Collection<Document>,
    users: Collection<Document>,
    retention: Duration,
    stop: CancellationToken,
) {
    let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match sweep(&messages, &users, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention sweep deleted expired messages"),
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
            }
        }
        tracing::debug!("retention sweeper stopped");
    });
}
