//! [`ServerKind`]: which server is on the other end of the wire, as far as
//! it changes what this crate asks of it: the indexes worth their cost.
//!
//! Every index costs every insert of a copy. MongoDB answers the log's
//! reads from its indexes: `read_after` (`{user, seq: {$gt}}` sorted by
//! `seq`) from `(user, seq)`, and deletes expired copies with a TTL index
//! on `created_at`. FerretDB v1 (on PostgreSQL or SQLite) answers a filter
//! from an index only for equality on a top-level field, which it sends to
//! PostgreSQL as `_jsonb->'<field>' @> '<value>'`; the btree indexes it
//! builds for a collection's indexes, on `_jsonb->'<field>'`, serve no such
//! filter, no range and no sort. `explain` on FerretDB v1.24 shows
//! `{user, seq: {$gt}}` sent as a filter on `user` alone and
//! `{created_at: {$lt}}` (the retention sweep) not sent at all. So on
//! FerretDB v1 the `(user, seq)` and `(topic, seq)` indexes and the plain
//! `created_at` / `expire_at` indexes of the sweep cost every insert and
//! serve nothing: the store does not create them there. Uniqueness of a
//! seq does not rest on them: the `_id` `"<user>:<seq>"` already admits one
//! document per (user, seq) on every server. The idempotency index stays
//! everywhere: its uniqueness is what makes a retried request find its
//! copies. (Measured on this project's bench machine, FerretDB v1.24 on
//! PostgreSQL 15: inserts of 13 message-shaped documents went from 7,839
//! to 10,014 a second with `_id` as the only index; `docs/benchmarks.md`.)
//!
//! FerretDB names itself in `buildInfo` (`ferretdbVersion`); any other
//! server, and FerretDB from v2 (on PostgreSQL's DocumentDB extension,
//! which has real indexes), is treated as MongoDB.

use edgepush_core::StoreError;
use mongodb::Database;
use mongodb::bson::{Document, doc};

use crate::error::{is_transient, store_error};

/// The server, as far as the indexes worth creating go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// MongoDB, or a server that names no other kind: range filters and
    /// sorts are answered from btree indexes; every index is created.
    MongoDb,
    /// FerretDB before v2: only equality filters reach its backend's
    /// indexes; the seq and sweep indexes are not created.
    FerretDbV1,
}

impl ServerKind {
    /// Asks the server (`buildInfo`). A server that refuses the command
    /// is taken for MongoDB, the kind that gets every index; a server that
    /// cannot be reached fails with [`StoreError::Unavailable`].
    pub(crate) async fn detect(db: &Database) -> Result<Self, StoreError> {
        match db.run_command(doc! { "buildInfo": 1 }).await {
            Ok(info) => Ok(Self::from_build_info(&info)),
            Err(e) if is_transient(&e) => Err(store_error("asking the server its kind", e)),
            Err(e) => {
                tracing::warn!(error = %e, "buildInfo refused: treating the server as MongoDB");
                Ok(Self::MongoDb)
            }
        }
    }

    /// The kind a `buildInfo` answer names.
    pub fn from_build_info(info: &Document) -> Self {
        match info.get_str("ferretdbVersion") {
            Ok(version) if ferretdb_major(version).is_some_and(|major| major < 2) => {
                Self::FerretDbV1
            }
            _ => Self::MongoDb,
        }
    }

    /// Whether the server answers range filters and sorts from btree
    /// indexes: whether the `(<key>, seq)` and plain expiry indexes serve
    /// anything there.
    pub fn serves_ranges_from_indexes(self) -> bool {
        match self {
            Self::MongoDb => true,
            Self::FerretDbV1 => false,
        }
    }
}

/// The major version of a FerretDB version string (`v1.24.2`, `1.24.2`,
/// `v2.0.0-rc.1`).
fn ferretdb_major(version: &str) -> Option<u32> {
    let version = version.strip_prefix('v').unwrap_or(version);
    version.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferretdb_before_v2_is_told_apart_from_mongodb() {
        let ferret = |v: &str| doc! { "version": "7.0.42", "ferretdbVersion": v, "ok": 1.0 };
        for (version, kind) in [
            ("v1.24.2", ServerKind::FerretDbV1),
            ("0.9.1", ServerKind::FerretDbV1),
            // v2 runs on DocumentDB, whose indexes serve ranges.
            ("v2.0.0-rc.1", ServerKind::MongoDb),
            // A version it cannot read gets every index: the safe side.
            ("unknown", ServerKind::MongoDb),
        ] {
            assert_eq!(
                ServerKind::from_build_info(&ferret(version)),
                kind,
                "{version}"
            );
        }
        let mongod = doc! { "version": "7.0.12", "gitVersion": "abc", "ok": 1.0 };
        assert_eq!(ServerKind::from_build_info(&mongod), ServerKind::MongoDb);
        assert!(ServerKind::MongoDb.serves_ranges_from_indexes());
        assert!(!ServerKind::FerretDbV1.serves_ranges_from_indexes());
    }
}
