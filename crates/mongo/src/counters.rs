//! The per-user counters of the `users` collection (`last_seq`,
//! `acked_seq`), moved only forward; shared by the store and the retention
//! sweep.

use edgepush_core::{Seq, StoreError};
use mongodb::Collection;
use mongodb::bson::{Document, doc};

use crate::error::{is_duplicate_key, store_error};
use crate::schema::seq_to_bson;

/// `$max`es `field` of `user`'s document in `users` to `seq`, creating the
/// document if needed.
pub(crate) async fn bump_counter(
    users: &Collection<Document>,
    user: &str,
    field: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    let value = seq_to_bson(seq)
        .ok_or_else(|| StoreError::Backend(format!("seq {seq} does not fit a BSON int64")))?;
    let mut tries = 0;
    loop {
        match users
            .update_one(doc! { "_id": user }, doc! { "$max": { field: value } })
            .upsert(true)
            .await
        {
            Ok(_) => return Ok(()),
            // Two first upserts of one user raced; the document exists now.
            Err(e) if is_duplicate_key(&e) && tries < 3 => tries += 1,
            Err(e) => return Err(store_error("updating a user counter", e)),
        }
    }
}
