//! The counters of a log's counter collection (`users` for user messages:
//! `last_seq`, `acked_seq`; `topics` for topic logs: `last_seq`), moved only
//! forward; shared by the logs, the store and the retention sweep.

use edgepush_core::{Seq, StoreError, UserId};
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};

use crate::command::{add_write_concern, error_index};
use crate::error::{is_duplicate_key, is_transient_code, store_error};
use crate::schema::seq_to_bson;

/// `$max`es `field` of `key`'s document in `counters` to `seq`, creating the
/// document if needed.
pub(crate) async fn bump_counter(
    counters: &Collection<Document>,
    key: &str,
    field: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    let value = bson_seq(seq)?;
    bump(counters, key, doc! { field: value }).await
}

/// `$max`es a user's `last_seq` to `last` and `acked_seq` to `acked` in one
/// write (an ack that also moves a lagging counter), creating the document
/// if needed.
pub(crate) async fn bump_counters_to(
    counters: &Collection<Document>,
    key: &str,
    last: Seq,
    acked: Seq,
) -> Result<(), StoreError> {
    let fields = doc! { "last_seq": bson_seq(last)?, "acked_seq": bson_seq(acked)? };
    bump(counters, key, fields).await
}

fn bson_seq(seq: Seq) -> Result<i64, StoreError> {
    seq_to_bson(seq)
        .ok_or_else(|| StoreError::Backend(format!("seq {seq} does not fit a BSON int64")))
}

/// `$max`es `fields` of `key`'s document, creating it if needed.
async fn bump(
    counters: &Collection<Document>,
    key: &str,
    fields: Document,
) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match counters
            .update_one(doc! { "_id": key }, doc! { "$max": fields.clone() })
            .upsert(true)
            .await
        {
            Ok(_) => return Ok(()),
            // Two first upserts of one key raced; the document exists now.
            Err(e) if is_duplicate_key(&e) && tries < 3 => tries += 1,
            Err(e) => return Err(store_error("updating a user counter", e)),
        }
    }
}

/// Most statements in one `update` command. FerretDB v1 (PostgreSQL
/// backend) holds a database connection for each statement that modifies a
/// document until the whole command ends, and its pool has 50: a command of
/// more statements deadlocks it (measured: 40 pass, 60 hang). MongoDB has
/// no such limit; a chunk costs it one more round trip.
const STATEMENTS_PER_UPDATE: usize = 16;

/// `$max`es the `last_seq` of every `(key, seq)` in `counters` (creating
/// missing documents) with `update` commands of one statement per key (at
/// most [`STATEMENTS_PER_UPDATE`] each, one after the other), unordered;
/// answers each key's outcome in the order given.
pub(crate) async fn bump_counters(
    db: &Database,
    counters: &Collection<Document>,
    targets: &[(UserId, Seq)],
) -> Vec<Result<(), StoreError>> {
    let mut outcomes = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(STATEMENTS_PER_UPDATE) {
        outcomes.extend(bump_counters_once(db, counters, chunk).await);
    }
    outcomes
}

/// One `update` command of [`bump_counters`]. Statements refused as
/// duplicate keys (two first upserts of one key raced) are sent again, like
/// [`bump_counter`] does.
async fn bump_counters_once(
    db: &Database,
    counters: &Collection<Document>,
    targets: &[(UserId, Seq)],
) -> Vec<Result<(), StoreError>> {
    let mut outcomes: Vec<Result<(), StoreError>> = targets.iter().map(|_| Ok(())).collect();
    // Indexes into `targets` still to send.
    let mut todo: Vec<usize> = Vec::with_capacity(targets.len());
    for (i, (key, seq)) in targets.iter().enumerate() {
        match seq_to_bson(*seq) {
            Some(_) => todo.push(i),
            None => {
                outcomes[i] = Err(StoreError::Backend(format!(
                    "seq {seq} of {key} does not fit a BSON int64"
                )));
            }
        }
    }
    let mut tries = 0;
    while !todo.is_empty() {
        let updates: Vec<Document> = todo
            .iter()
            .map(|&i| {
                let (key, seq) = &targets[i];
                let seq = seq_to_bson(*seq).unwrap_or(i64::MAX);
                doc! {
                    "q": { "_id": key.as_str() },
                    "u": { "$max": { "last_seq": seq } },
                    "upsert": true,
                }
            })
            .collect();
        let mut command = doc! { "update": counters.name(), "updates": updates, "ordered": false };
        add_write_concern(&mut command, counters);
        let reply = match db.run_command(command).await {
            Ok(reply) => reply,
            Err(e) => {
                let e = store_error("updating seq counters", e);
                for &i in &todo {
                    outcomes[i] = Err(copy_error(&e));
                }
                return outcomes;
            }
        };
        if let Ok(wce) = reply.get_document("writeConcernError") {
            for &i in &todo {
                outcomes[i] = Err(StoreError::Unavailable(format!(
                    "updating seq counters: write concern error {wce}"
                )));
            }
            return outcomes;
        }
        let mut again = Vec::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors.iter().filter_map(|e| e.as_document()) {
                let Some(&i) = error_index(error).and_then(|k| todo.get(k)) else {
                    continue;
                };
                let code = error.get_i32("code").unwrap_or(0);
                if matches!(code, 11000 | 11001) && tries < 3 {
                    again.push(i);
                } else {
                    let text = error.get_str("errmsg").unwrap_or("");
                    outcomes[i] = Err(if is_transient_code(code) {
                        StoreError::Unavailable(format!(
                            "updating seq counters: code {code}: {text}"
                        ))
                    } else {
                        StoreError::Backend(format!("updating seq counters: code {code}: {text}"))
                    });
                }
            }
        }
        tries += 1;
        todo = again;
    }
    outcomes
}

/// The same error again (one failure answered to several callers).
pub(crate) fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Contention(m) => StoreError::Contention(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
    }
}
