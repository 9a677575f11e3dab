//! The counters of a log's counter collection (`users` for user messages:
//! `last_seq`, `acked_seq`; `topics` for topic logs: `last_seq`), moved only
//! forward; shared by the logs, the store and the retention sweep.

use edgepush_core::{Seq, StoreError};
use mongodb::Collection;
use mongodb::bson::{Document, doc};

use crate::error::{is_duplicate_key, store_error};
use crate::schema::seq_to_bson;

/// `$max`es `field` of `key`'s document in `counters` to `seq`, creating the
/// document if needed.
pub(crate) async fn bump_counter(
    counters: &Collection<Document>,
    key: &str,
    field: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    let value = seq_to_bson(seq)
        .ok_or_else(|| StoreError::Backend(format!("seq {seq} does not fit a BSON int64")))?;
    let mut tries = 0;
    loop {
        match counters
            .update_one(doc! { "_id": key }, doc! { "$max": { field: value } })
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
