//! Retention: entries past their expiry are deleted.
//!
//! User messages expire the configured retention after `created_at`; topic
//! messages at their `expire_at` (each carries its namespace's retention).
//! Both are an [`Expiry`]: a date field and a time after it. Where the
//! server has TTL indexes (MongoDB), a TTL index on that field does the
//! work. Where it answers NotImplemented (FerretDB v1) the store logs one
//! warning at start-up and runs [`sweep`] on a timer instead.
//!
//! Deleting a log's entries never resets its seq: the counter is kept.
//! [`sweep`] also moves the counter up to the highest seq it deletes, which
//! repairs a counter left behind by a crash between an insert and its
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
use crate::schema::{INDEX_CREATED_AT, INDEX_EXPIRE_AT, INDEX_EXPIRE_TTL, INDEX_TTL, get_seq};
use crate::server::ServerKind;

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

/// When the entries of a collection expire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry {
    /// The date field expiry counts from.
    pub(crate) field: &'static str,
    /// How long after it an entry expires (zero: the field is the expiry).
    pub(crate) after: Duration,
    /// The TTL index's name.
    pub(crate) ttl_index: &'static str,
    /// The plain index's name (servers without TTL indexes).
    pub(crate) plain_index: &'static str,
    /// The field naming an entry's log, whose counter the sweep keeps.
    pub(crate) key_field: &'static str,
}

impl Expiry {
    /// User messages: `retention` after `created_at`.
    pub(crate) fn messages(retention: Duration) -> Self {
        Self {
            field: "created_at",
            after: retention,
            ttl_index: INDEX_TTL,
            plain_index: INDEX_CREATED_AT,
            key_field: "user",
        }
    }

    /// Topic messages: at their `expire_at`.
    pub(crate) fn topic_messages() -> Self {
        Self {
            field: "expire_at",
            after: Duration::ZERO,
            ttl_index: INDEX_EXPIRE_TTL,
            plain_index: INDEX_EXPIRE_AT,
            key_field: "topic",
        }
    }
}

/// Creates the index that enforces `expiry` and says which mode applies:
/// a TTL index, else a plain index on the field for the sweep's filter
/// (only where the server answers ranges from indexes, [`ServerKind`]).
pub(crate) async fn setup(
    messages: &Collection<Document>,
    expiry: Expiry,
    server: ServerKind,
) -> Result<RetentionMode, StoreError> {
    let retention = expiry.after;
    let ttl = IndexModel::builder()
        .keys(doc! { expiry.field: 1 })
        .options(
            IndexOptions::builder()
                .name(expiry.ttl_index.to_owned())
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
            "index": { "name": expiry.ttl_index, "expireAfterSeconds": secs },
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
    if !server.serves_ranges_from_indexes() {
        return Ok(RetentionMode::Sweeper);
    }
    let plain = IndexModel::builder()
        .keys(doc! { expiry.field: 1 })
        .options(
            IndexOptions::builder()
                .name(expiry.plain_index.to_owned())
                .build(),
        )
        .build();
    messages
        .create_index(plain)
        .await
        .map_err(|e| store_error(&format!("creating the {} index", expiry.plain_index), e))?;
    Ok(RetentionMode::Sweeper)
}

/// Deletes the entries of `messages` past `expiry`, first moving each
/// affected log's counter in `counters` up to the highest seq deleted.
/// Returns how many documents were deleted.
pub(crate) async fn sweep(
    messages: &Collection<Document>,
    counters: &Collection<Document>,
    expiry: Expiry,
) -> Result<u64, StoreError> {
    let retention_ms = i64::try_from(expiry.after.as_millis()).unwrap_or(i64::MAX);
    let cutoff = DateTime::from_millis(
        DateTime::now()
            .timestamp_millis()
            .saturating_sub(retention_ms),
    );
    let filter = doc! { expiry.field: { "$lt": cutoff } };
    let mut total = 0;
    loop {
        let batch: Vec<Document> = messages
            .find(filter.clone())
            .projection(doc! { "_id": 1, expiry.key_field: 1, "seq": 1 })
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
            if let (Ok(key), Some(seq)) = (d.get_str(expiry.key_field), get_seq(d, "seq")) {
                let h = highest.entry(key).or_default();
                *h = (*h).max(seq);
            }
        }
        let repairs: Vec<_> = highest
            .into_iter()
            .map(|(key, seq)| bump_counter(counters, key, "last_seq", seq))
            .collect();
        stream::iter(repairs)
            .buffer_unordered(SWEEP_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        let deleted = messages
            .delete_many(doc! { "_id": { "$in": ids }, expiry.field: { "$lt": cutoff } })
            .await
            .map_err(|e| store_error("deleting expired messages", e))?
            .deleted_count;
        total += deleted;
        if !full {
            return Ok(total);
        }
    }
}

/// How often [`spawn_sweeper`] sweeps: a hundredth of the retention,
/// between a second and an hour, so an expired entry outlives its expiry
/// by at most 1 % of the retention (or a second).
///
/// Not more often: the server that needs the sweep (FerretDB v1, no TTL
/// indexes) cannot serve the date range from an index, so each sweep reads
/// every document of the collection. Measured in `scripts/bench` with a
/// sweep a minute (a week's retention) at ~70,000 messages: 1.5 s of
/// PostgreSQL per sweep and more of FerretDB, in each process that opens a
/// store, which stalled appends for seconds (end-to-end p99 1.1–20 s).
pub(crate) fn sweep_period(retention: Duration) -> Duration {
    (retention / 100).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Runs [`sweep`] every [`sweep_period`], the first one a period after the
/// start (a process that starts or restarts does not scan at once), until
/// `stop` is cancelled.
pub(crate) fn spawn_sweeper(
    messages: Collection<Document>,
    counters: Collection<Document>,
    expiry: Expiry,
    retention: Duration,
    stop: CancellationToken,
) {
    let period = sweep_period(retention);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match sweep(&messages, &counters, expiry).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention sweep deleted expired messages"),
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
            }
        }
        tracing::debug!("retention sweeper stopped");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_period_is_a_hundredth_of_the_retention_within_bounds() {
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(sweep_period(week), Duration::from_secs(3600));
        assert_eq!(
            sweep_period(Duration::from_secs(3600)),
            Duration::from_secs(36)
        );
        assert_eq!(sweep_period(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(sweep_period(Duration::ZERO), Duration::from_secs(1));
    }
}
