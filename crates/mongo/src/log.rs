//! [`SeqLog`]: a gap-free, idempotent log per key on MongoDB without
//! transactions. The user message store keys it by user, the topic store by
//! topic; both share this code.
//!
//! # How seqs stay gap-free without transactions
//!
//! An entry of log `k` is stored by inserting a document whose `_id` is
//! `"<k>:<seq, 20 digits>"`, so the unique `_id` index admits exactly one
//! document per (log, seq) whatever the number of writers. To pick the seq,
//! a writer reads the log's counter (`last_seq` in the counters collection),
//! inserts at `last_seq + 1`, then moves the counter up with `$max`. The
//! counter is only ever moved to a seq that has been stored, so
//! `last_seq + 1` never skips a number.
//!
//! When the insert hits a duplicate key, either the idempotency index fired
//! (this request's entry exists: return it) or the seq was taken: by a
//! concurrent writer, or by a writer that crashed between its insert and its
//! counter update. The writer then reads the highest stored seq of the log
//! and tries the next one. Any crash therefore leaves at worst a counter that
//! lags behind, which the next writer (or an idempotent retry, or the
//! retention sweep) repairs, and never a gap or a duplicate.
//!
//! Idempotency rests on the unique `(source, idem, <key>)` index: however
//! many identical requests race, one insert per log wins and every other
//! racer finds and returns that document.
//!
//! Within one store instance, appends to the same log queue on a local lock
//! ([`crate::locks`]), so only separate processes race for a seq; racers back
//! off with jitter and give up with [`StoreError::Contention`] after
//! [`MongoConfig::max_seq_attempts`](crate::MongoConfig::max_seq_attempts).
//!
//! One residual window: if a writer crashes between its insert and its
//! counter update, nothing else is appended to that log for the whole
//! retention period, and the server's TTL monitor (not this store's sweep,
//! which repairs the counter first) deletes that last document, the seq is
//! handed out again. A client that had read the lost message would then skip
//! its reuse. This needs a crash and a retention period of silence.

use std::time::Duration;

use edgepush_core::{Seq, StoreError};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::command::{add_write_concern, error_index};
use crate::counters::bump_counter;
use crate::error::{DuplicateOf, duplicate_of, is_transient_code, store_error};
use crate::locks::KeyLocks;
use crate::schema::{EntryTemplate, get_seq, seq_to_bson};
use crate::server::ServerKind;

/// Longest pause between two attempts to claim a seq under contention.
const MAX_BACKOFF_MS: u64 = 50;
/// The most document bytes one `insert` command carries. `run_command`
/// sends the documents inside the command, one BSON document of at most
/// 16 MiB, so a round of large copies (a 64 KiB message to 1,000
/// recipients is 64 MiB) goes in several commands; half the limit leaves
/// room for the command's own fields and each array entry's key.
pub(crate) const MAX_INSERT_BYTES: usize = 8 * 1024 * 1024;

/// What one insert came to.
#[derive(Debug)]
pub(crate) enum Inserted {
    /// The entry is stored.
    Yes,
    /// A unique index refused it.
    Duplicate(DuplicateOf),
}

/// What an append came to.
pub(crate) enum Claimed {
    /// This call stored the entry at this seq.
    Inserted(Seq),
    /// An earlier or concurrent identical request stored it: its document.
    Existing(Document),
}

/// One kind of log: its collections and the field naming the log.
pub(crate) struct SeqLog {
    /// The database, for commands (`insert`, `ping`).
    pub(crate) db: Database,
    /// One document per (log, seq).
    pub(crate) entries: Collection<Document>,
    /// One document per log: `{_id: <key>, last_seq, ...}`.
    pub(crate) counters: Collection<Document>,
    /// `user` or `topic`.
    pub(crate) key_field: &'static str,
    /// How many times an append tries to claim the next seq.
    pub(crate) max_seq_attempts: u32,
    /// Queues this instance's appends per log.
    locks: KeyLocks,
}

impl SeqLog {
    /// The log kind stored in `entries` (with counters in `counters`),
    /// keyed by `key_field`.
    pub(crate) fn new(
        db: Database,
        entries: &str,
        counters: &str,
        key_field: &'static str,
        max_seq_attempts: u32,
    ) -> Self {
        Self {
            entries: db.collection(entries),
            counters: db.collection(counters),
            db,
            key_field,
            max_seq_attempts,
            locks: KeyLocks::default(),
        }
    }

    /// Creates the unique `(source, idem, <key>)` index and, where the
    /// server answers ranges from indexes ([`ServerKind`]), the unique
    /// `(<key>, seq)` one; one command each (FerretDB v1 panics, and drops
    /// the connection, when one `createIndexes` names two existing
    /// indexes).
    pub(crate) async fn create_indexes(
        &self,
        seq_index: &str,
        idempotency_index: &str,
        server: ServerKind,
    ) -> Result<(), StoreError> {
        let unique = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(true)
                .build()
        };
        let seq = (doc! { self.key_field: 1, "seq": 1 }, seq_index);
        let idempotency = (
            doc! { "source": 1, "idem": 1, self.key_field: 1 },
            idempotency_index,
        );
        let indexes = match server.serves_ranges_from_indexes() {
            true => vec![seq, idempotency],
            false => vec![idempotency],
        };
        for (keys, name) in indexes {
            let model = IndexModel::builder()
                .keys(keys)
                .options(unique(name))
                .build();
            self.entries
                .create_index(model)
                .await
                .map_err(|e| store_error(&format!("creating the index {name}"), e))?;
        }
        Ok(())
    }

    /// The log's counter document, if any.
    pub(crate) async fn counter(&self, key: &str) -> Result<Option<Document>, StoreError> {
        self.counters
            .find_one(doc! { "_id": key })
            .await
            .map_err(|e| store_error("reading a seq counter", e))
    }

    /// The log's counter: the highest seq known to be stored (0 when none).
    pub(crate) async fn last_seq(&self, key: &str) -> Result<Seq, StoreError> {
        Ok(self
            .counter(key)
            .await?
            .and_then(|d| get_seq(&d, "last_seq"))
            .unwrap_or(0))
    }

    /// The highest seq stored in the log (0 when none).
    pub(crate) async fn highest_stored_seq(&self, key: &str) -> Result<Seq, StoreError> {
        let doc = self
            .entries
            .find_one(doc! { self.key_field: key })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(|e| store_error("reading the highest seq", e))?;
        Ok(doc.and_then(|d| get_seq(&d, "seq")).unwrap_or(0))
    }

    /// Whether the log's entry `seq` is stored: one read by `_id`, the only
    /// filter FerretDB v1 answers from an index.
    pub(crate) async fn entry_exists(&self, key: &str, seq: Seq) -> Result<bool, StoreError> {
        let Some(seq) = seq_to_bson(seq) else {
            return Ok(false);
        };
        let found = self
            .entries
            .find_one(doc! { "_id": format!("{key}:{seq:020}") })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| store_error("reading a stored seq", e))?;
        Ok(found.is_some())
    }

    /// The highest seq stored in the log, found from `from` by reads of
    /// `_id`: `from`, then `from + 1, + 2, + 4, …` until one is missing,
    /// then a bisection between the last found and the first missing.
    /// About `2 log2(lag) + 1` reads for a log `lag` entries past `from`.
    ///
    /// Correct only when every seq from `from + 1` up to the highest stored
    /// one is stored, i.e. when nothing above `from` was ever deleted: true
    /// of a counter on a server whose retention is this crate's sweep
    /// (the sweep moves the counter up to every seq it deletes, and seqs are
    /// handed out without gaps), not where a TTL monitor deletes (see
    /// [`RetentionMode`](crate::RetentionMode)).
    pub(crate) async fn stored_end(&self, key: &str, from: Seq) -> Result<Seq, StoreError> {
        // `found` is stored (or is `from`); `missing` is not.
        let mut found = from;
        let mut step: u64 = 1;
        let mut missing = loop {
            let probe = found.saturating_add(step);
            if probe == found || !self.entry_exists(key, probe).await? {
                break probe;
            }
            found = probe;
            step = step.saturating_mul(2);
        };
        while missing - found > 1 {
            let mid = found + (missing - found) / 2;
            if self.entry_exists(key, mid).await? {
                found = mid;
            } else {
                missing = mid;
            }
        }
        Ok(found)
    }

    /// The entry stored in the log under `(source, idem)`, if any.
    pub(crate) async fn find_entry(
        &self,
        source: &str,
        idem: &str,
        key: &str,
    ) -> Result<Option<Document>, StoreError> {
        self.entries
            .find_one(doc! { "source": source, "idem": idem, self.key_field: key })
            .await
            .map_err(|e| store_error("reading a stored copy", e))
    }

    /// Moves the log's counter up to `seq`. The entry is stored already; the
    /// append still fails when the counter cannot follow, because readers
    /// trust the counter as the end of the log (a replay stops there): the
    /// caller's retry with the same idempotency key finds the entry and
    /// moves the counter then.
    async fn advance_counter(&self, key: &str, seq: Seq) -> Result<(), StoreError> {
        bump_counter(&self.counters, key, "last_seq", seq)
            .await
            .inspect_err(|e| {
                tracing::warn!(log = %key, seq, error = %e, "stored an entry but could not advance the seq counter; the append fails so that it is retried");
            })
    }

    /// Inserts one entry with the `insert` command, so that a duplicate-key
    /// error comes back with the server's structured fields (`keyPattern`,
    /// `keyValue`), which the driver's `insert_one` drops.
    async fn insert(&self, entry: Document) -> Result<Inserted, StoreError> {
        match self.insert_many(vec![entry]).await?.pop() {
            Some(Ok(inserted)) => Ok(inserted),
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Backend(
                "storing a message: no outcome for the document".into(),
            )),
        }
    }

    /// Inserts `entries` with unordered `insert` commands and answers each
    /// document's outcome, in the order given: stored, refused by a unique
    /// index (which one), or another write error. A failure of a whole
    /// command (the server unreachable, or a write concern error: the
    /// writes are not known to be durable) fails them all: what was stored
    /// then is found again by an idempotent retry.
    ///
    /// Unordered: one document's refusal does not stop the others, so a
    /// caller must never put two entries of one log in one call (see
    /// [`crate::batcher`]: one entry per log per round). For the same
    /// reason the split into commands of at most [`MAX_INSERT_BYTES`]
    /// changes nothing: each document's outcome is its own.
    pub(crate) async fn insert_many(
        &self,
        entries: Vec<Document>,
    ) -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for chunk in insert_chunks(entries, MAX_INSERT_BYTES) {
            outcomes.extend(self.insert_command(chunk).await?);
        }
        Ok(outcomes)
    }

    /// One unordered `insert` command of `entries` (see
    /// [`insert_many`](Self::insert_many)).
    async fn insert_command(
        &self,
        entries: Vec<Document>,
    ) -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
        let count = entries.len();
        let mut command =
            doc! { "insert": self.entries.name(), "documents": entries, "ordered": false };
        add_write_concern(&mut command, &self.entries);
        let reply = self
            .db
            .run_command(command)
            .await
            .map_err(|e| store_error("storing a message", e))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            // The write happened on the primary but is not known to be
            // durable as asked: not an acknowledgement collect may answer
            // 202 on. A retry meets the idempotency index.
            return Err(StoreError::Unavailable(format!(
                "storing a message: write concern error {wce}"
            )));
        }
        let mut outcomes: Vec<Result<Inserted, StoreError>> =
            (0..count).map(|_| Ok(Inserted::Yes)).collect();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors.iter().filter_map(|e| e.as_document()) {
                let Some(slot) = error_index(error).and_then(|i| outcomes.get_mut(i)) else {
                    // A write error that names no document of ours: the
                    // outcome of every document is unknown.
                    return Err(StoreError::Backend(format!(
                        "storing a message: a write error without a valid index: {error}"
                    )));
                };
                let code = error.get_i32("code").unwrap_or(0);
                let text = error.get_str("errmsg").unwrap_or("");
                *slot = match code {
                    11000 | 11001 => Ok(Inserted::Duplicate(duplicate_of(error))),
                    c if is_transient_code(c) => Err(StoreError::Unavailable(format!(
                        "storing a message: code {c}: {text}"
                    ))),
                    c => Err(StoreError::Backend(format!(
                        "storing a message: code {c}: {text}"
                    ))),
                };
            }
        }
        Ok(outcomes)
    }

    /// Stores `tpl` at the log's next free seq, or returns the entry an
    /// earlier or concurrent identical request stored.
    pub(crate) async fn append(&self, tpl: &EntryTemplate<'_>) -> Result<Claimed, StoreError> {
        let mut slot = self.locks.lock(tpl.key).await;
        let result = self.claim_seq(tpl, slot.known_seq()).await;
        match &result {
            Ok(Claimed::Inserted(seq)) => slot.set_known_seq(Some(*seq)),
            Ok(Claimed::Existing(_)) => {}
            Err(_) => slot.set_known_seq(None),
        }
        result
    }

    /// The loop of [`append`](Self::append), starting after `known_seq` (a
    /// seq known to be stored) or after the log's counter.
    async fn claim_seq(
        &self,
        tpl: &EntryTemplate<'_>,
        known_seq: Option<Seq>,
    ) -> Result<Claimed, StoreError> {
        let key = tpl.key;
        let base = match known_seq {
            Some(seq) => seq,
            None => self.last_seq(key).await?,
        };
        let mut next = base.saturating_add(1);
        let attempts = self.max_seq_attempts.max(1);
        for attempt in 0..attempts {
            let seq = seq_to_bson(next)
                .ok_or_else(|| StoreError::Backend(format!("seq of {key} overflowed")))?;
            let duplicate = match self.insert(tpl.to_doc(seq)).await? {
                Inserted::Yes => {
                    self.advance_counter(key, next).await?;
                    return Ok(Claimed::Inserted(next));
                }
                Inserted::Duplicate(of) => of,
            };
            // A seq conflict says nothing about this request's entry; if one
            // exists, the insert at a free seq will meet the idempotency
            // index and come here again. When the server does not say which
            // index fired, look.
            if duplicate != DuplicateOf::Seq
                && let Some(existing) = self.find_entry(tpl.source, tpl.idem, key).await?
            {
                // Stored by an earlier try of this request or a racer; that
                // writer may have crashed before moving the counter.
                if let Some(seq) = get_seq(&existing, "seq") {
                    self.advance_counter(key, seq).await?;
                }
                return Ok(Claimed::Existing(existing));
            }
            // The seq is taken. Continue after the highest stored one; if the
            // taker vanished meanwhile (retention), retry the same seq rather
            // than skip it.
            let highest = self.highest_stored_seq(key).await?;
            next = next.max(highest.saturating_add(1));
            if attempt > 0 {
                let cap = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
                let pause = rand::random_range(0..=cap);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        Err(StoreError::Contention(format!(
            "gave up claiming a seq for {key} after {attempts} attempts"
        )))
    }

    /// Up to `limit` entry documents of the log with `seq > after`, in seq
    /// order.
    pub(crate) async fn read_after(
        &self,
        key: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        // Nothing is stored above i64::MAX; and a limit of 0 would mean "no
        // limit" to the server.
        let Some(after) = seq_to_bson(after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.entries
            .find(doc! { self.key_field: key, "seq": { "$gt": after } })
            .sort(doc! { "seq": 1 })
            .limit(limit)
            .await
            .map_err(|e| store_error("reading messages", e))?
            .try_collect()
            .await
            .map_err(|e| store_error("reading messages", e))
    }

    /// Succeeds when the server answers.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(|e| store_error("pinging MongoDB", e))
    }
}

/// Splits `entries` into runs of at most `max_bytes` of BSON each, in
/// order; a document larger than `max_bytes` alone forms a run (the server
/// answers it with a write error of its own).
fn insert_chunks(entries: Vec<Document>, max_bytes: usize) -> Vec<Vec<Document>> {
    let mut chunks: Vec<Vec<Document>> = Vec::new();
    let mut current: Vec<Document> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = bson_len(&entry);
        if !current.is_empty() && bytes + size > max_bytes {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(entry);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The encoded size of `doc`, counted without building the bytes.
fn bson_len(doc: &Document) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a document that cannot be encoded
    // fails the command itself.
    let _ = doc.to_writer(&mut count);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, data_bytes: usize) -> Document {
        doc! { "_id": format!("u{i}:1"), "data": "x".repeat(data_bytes) }
    }

    #[test]
    fn bson_len_is_the_encoded_size() {
        let d = entry(7, 1000);
        let mut bytes = Vec::new();
        d.to_writer(&mut bytes).expect("encodes");
        assert_eq!(bson_len(&d), bytes.len());
    }

    #[test]
    fn large_rounds_are_split_in_order_within_the_limit() {
        // 1,000 copies of a 64 KiB message: 64 MiB, over the 16 MiB a
        // command may carry.
        let entries: Vec<Document> = (0..1000).map(|i| entry(i, 64 * 1024)).collect();
        let total: usize = entries.iter().map(bson_len).sum();
        let chunks = insert_chunks(entries, MAX_INSERT_BYTES);
        assert!(
            chunks.len() >= total / MAX_INSERT_BYTES,
            "{} chunks",
            chunks.len()
        );
        for chunk in &chunks {
            assert!(chunk.iter().map(bson_len).sum::<usize>() <= MAX_INSERT_BYTES);
        }
        let ids: Vec<String> = chunks
            .iter()
            .flatten()
            .map(|d| d.get_str("_id").expect("id").to_owned())
            .collect();
        let want: Vec<String> = (0..1000).map(|i| format!("u{i}:1")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn small_rounds_stay_one_command_and_a_huge_document_stands_alone() {
        let small: Vec<Document> = (0..32).map(|i| entry(i, 100)).collect();
        assert_eq!(insert_chunks(small, MAX_INSERT_BYTES).len(), 1);
        let mixed = vec![entry(0, 10), entry(1, 5000), entry(2, 10)];
        let chunks = insert_chunks(mixed, 1000);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1]);
        assert!(insert_chunks(Vec::new(), 1000).is_empty());
    }
}
