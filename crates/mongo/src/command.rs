//! Write commands sent with `run_command` (an `insert` or `update` of many
//! documents, whose per-document outcomes the driver's helpers would not
//! give back): the collection's write concern, and which document a write
//! error names.

use mongodb::Collection;
use mongodb::bson::Document;

/// The `index` of a write error (int32 or int64), if valid.
pub(crate) fn error_index(error: &Document) -> Option<usize> {
    match error.get("index")? {
        mongodb::bson::Bson::Int32(i) => usize::try_from(*i).ok(),
        mongodb::bson::Bson::Int64(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

/// Adds `collection`'s write concern, if it has one, to a write command
/// sent with `run_command` (which does not add it by itself).
pub(crate) fn add_write_concern(command: &mut Document, collection: &Collection<Document>) {
    if let Some(wc) = collection.write_concern()
        && let Ok(wc) = mongodb::bson::to_document(wc)
        && !wc.is_empty()
    {
        command.insert("writeConcern", wc);
    }
}
