//! The stored document shapes: names of collections, fields and indexes, and
//! the conversions between documents and [`StoredMessage`].
//!
//! Kept in one place because the layout is a contract with the data already
//! on disk (and with the tests, which write documents by hand to simulate
//! crashes).

use std::sync::Arc;

use edgepush_core::{MessageId, Seq, StoredMessage, UserId};
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde_json::value::RawValue;

/// Collection of message copies, one document per (user, seq).
pub const MESSAGES: &str = "messages";
/// Collection of per-user state: `{_id: user, last_seq, acked_seq}`.
pub const USERS: &str = "users";

/// Unique index on `(user, seq)`; serves `read_after` and the highest-seq
/// lookup (uniqueness is also guaranteed by `_id`).
pub const INDEX_USER_SEQ: &str = "user_seq";
/// Unique index on `(source, idem, user)`: one copy per recipient of one
/// idempotent request.
pub const INDEX_IDEMPOTENCY: &str = "source_idem_user";
/// TTL index on `created_at` (servers that have TTL indexes).
pub const INDEX_TTL: &str = "created_at_ttl";
/// Plain index on `created_at` for the sweep (servers without TTL indexes).
pub const INDEX_CREATED_AT: &str = "created_at_1";

/// `_id` of a user's message `seq`: `"<user>:<seq, 20 digits>"`, so the
/// always-present unique `_id` index admits one document per (user, seq).
pub fn message_doc_id(user: &UserId, seq: Seq) -> String {
    format!("{}:{seq:020}", user.as_str())
}

/// The `idem` field of a copy: `"key:<idempotency key>"`, or
/// `"auto:<message id>"` for requests without a key, so the unique
/// idempotency index never sees nulls and a caller's key can never collide
/// with a generated one.
pub fn idem_value(idempotency_key: Option<&str>, id: &MessageId) -> String {
    match idempotency_key {
        Some(key) => format!("key:{key}"),
        None => format!("auto:{id}"),
    }
}

/// A seq as stored (BSON has no unsigned integers).
pub fn seq_to_bson(seq: Seq) -> Option<i64> {
    i64::try_from(seq).ok()
}

/// Reads an integer field written as int32 or int64 (hand-written or older
/// documents may use either), refusing negatives.
pub fn get_seq(doc: &Document, field: &str) -> Option<Seq> {
    match doc.get(field)? {
        Bson::Int64(v) => Seq::try_from(*v).ok(),
        Bson::Int32(v) => Seq::try_from(*v).ok(),
        _ => None,
    }
}

/// The fields of one copy, independent of its seq.
pub struct CopyTemplate<'a> {
    /// The recipient.
    pub user: &'a UserId,
    /// The message id shared by all copies.
    pub id: &'a MessageId,
    /// The payload, shared by all copies.
    pub data: &'a Arc<RawValue>,
    /// Who submitted it.
    pub source: &'a str,
    /// The `idem` field, see [`idem_value`].
    pub idem: &'a str,
    /// Acceptance time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

impl CopyTemplate<'_> {
    /// The document for this copy at `seq` (`seq` must fit an `i64`).
    pub fn to_doc(&self, seq: i64) -> Document {
        doc! {
            "_id": format!("{}:{seq:020}", self.user.as_str()),
            "user": self.user.as_str(),
            "seq": seq,
            "id": self.id.as_str(),
            "data": self.data.get(),
            "source": self.source,
            "idem": self.idem,
            "created_at": DateTime::from_millis(self.created_at_ms),
        }
    }

    /// The copy as returned to callers once stored at `seq`, sharing the
    /// payload instead of parsing it back.
    pub fn stored(&self, seq: Seq) -> StoredMessage {
        StoredMessage {
            user_id: self.user.clone(),
            seq,
            id: self.id.clone(),
            data: Arc::clone(self.data),
            created_at_ms: self.created_at_ms,
        }
    }
}

/// Why a stored document could not be read back as a message.
#[derive(Debug, thiserror::Error)]
#[error("malformed message document {id}: {reason}")]
pub struct MalformedDoc {
    /// The document's `_id`, as far as it could be shown.
    pub id: String,
    /// What was wrong.
    pub reason: &'static str,
}

/// Reads a message document back as `user`'s [`StoredMessage`].
pub fn message_from_doc(doc: &Document) -> Result<StoredMessage, MalformedDoc> {
    let bad = |reason| MalformedDoc {
        id: doc
            .get("_id")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".to_owned()),
        reason,
    };
    let user = doc
        .get_str("user")
        .ok()
        .and_then(|u| UserId::new(u).ok())
        .ok_or_else(|| bad("user missing or invalid"))?;
    let seq = get_seq(doc, "seq")
        .filter(|s| *s > 0)
        .ok_or_else(|| bad("seq missing or invalid"))?;
    let id = doc
        .get_str("id")
        .ok()
        .and_then(|i| MessageId::new(i).ok())
        .ok_or_else(|| bad("id missing or invalid"))?;
    let data: Arc<RawValue> = doc
        .get_str("data")
        .ok()
        .and_then(|d| RawValue::from_string(d.to_owned()).ok())
        .map(Arc::from)
        .ok_or_else(|| bad("data missing or not JSON text"))?;
    let created_at_ms = doc
        .get_datetime("created_at")
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad("created_at missing or not a date"))?;
    Ok(StoredMessage {
        user_id: user,
        seq,
        id,
        data,
        created_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Arc<RawValue> {
        Arc::from(RawValue::from_string(s.to_owned()).unwrap())
    }

    #[test]
    fn ids_sort_by_seq_within_a_user() {
        let u = UserId::new("alice").unwrap();
        assert_eq!(message_doc_id(&u, 7), "alice:00000000000000000007");
        assert!(message_doc_id(&u, 9) < message_doc_id(&u, 10));
        assert_eq!(
            message_doc_id(&u, u64::MAX).len(),
            "alice:".len() + 20,
            "u64::MAX has 20 digits"
        );
    }

    #[test]
    fn idem_values_are_namespaced() {
        let id = MessageId::new("abc").unwrap();
        assert_eq!(idem_value(Some("k1"), &id), "key:k1");
        assert_eq!(idem_value(None, &id), "auto:abc");
        assert_ne!(idem_value(Some("auto:abc"), &id), idem_value(None, &id));
    }

    #[test]
    fn round_trip() {
        let user = UserId::new("bob").unwrap();
        let id = MessageId::new("m1").unwrap();
        let t = CopyTemplate {
            user: &user,
            id: &id,
            data: &raw(r#"{"a.b":[[1]],"$x":true}"#),
            source: "api",
            idem: "key:k",
            created_at_ms: 1_700_000_000_123,
        };
        let doc = t.to_doc(3);
        assert_eq!(doc.get_str("_id").unwrap(), message_doc_id(&user, 3));
        let m = message_from_doc(&doc).unwrap();
        assert_eq!(m, t.stored(3));
        assert_eq!(m.user_id, user);
        assert_eq!(m.seq, 3);
        assert_eq!(m.id, id);
        assert_eq!(m.data.get(), r#"{"a.b":[[1]],"$x":true}"#);
        assert_eq!(m.created_at_ms, 1_700_000_000_123);
    }

    #[test]
    fn malformed_documents_are_refused_not_panicked_on() {
        assert!(message_from_doc(&doc! {}).is_err());
        assert!(message_from_doc(&doc! {"_id": 1, "user": "u", "seq": "x"}).is_err());
        let mut d = CopyTemplate {
            user: &UserId::new("u").unwrap(),
            id: &MessageId::new("m").unwrap(),
            data: &raw("1"),
            source: "s",
            idem: "auto:m",
            created_at_ms: 0,
        }
        .to_doc(1);
        d.insert("data", "{");
        assert!(message_from_doc(&d).is_err(), "data is not JSON");
        d.insert("data", "1");
        assert!(message_from_doc(&d).is_ok());
        d.insert("seq", -1_i64);
        assert!(message_from_doc(&d).is_err());
        d.insert("seq", 2_i32);
        assert_eq!(message_from_doc(&d).unwrap().seq, 2);
    }
}
