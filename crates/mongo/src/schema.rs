//! The stored document shapes: names of collections, fields and indexes, and
//! the conversions between documents and [`StoredMessage`].
//!
//! Kept in one place because the layout is a contract with the data already
//! on disk (and with the tests, which write documents by hand to simulate
//! crashes).

use std::sync::Arc;

use edgepush_core::{MessageId, Seq, StoredMessage, TopicMessage, TopicName, UserId};
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde_json::value::RawValue;

/// Collection of message copies, one document per (user, seq).
pub const MESSAGES: &str = "messages";
/// Collection of per-user state: `{_id: user, last_seq, acked_seq}`.
pub const USERS: &str = "users";
/// Collection of topic message copies, one document per (topic, seq).
pub const TOPIC_MESSAGES: &str = "topic_messages";
/// Collection of per-topic state: `{_id: topic, last_seq}`.
pub const TOPICS: &str = "topics";

/// Unique index on `(user, seq)`; serves `read_after` and the highest-seq
/// lookup (uniqueness is also guaranteed by `_id`). Not created where the
/// server cannot answer from it ([`crate::server`]).
pub const INDEX_USER_SEQ: &str = "user_seq";
/// Unique index on `(source, idem, user)`: one copy per recipient of one
/// idempotent request.
pub const INDEX_IDEMPOTENCY: &str = "source_idem_user";
/// TTL index on `created_at` (servers that have TTL indexes).
pub const INDEX_TTL: &str = "created_at_ttl";
/// Plain index on `created_at` for the sweep (servers without TTL indexes
/// that answer ranges from indexes, [`crate::server`]).
pub const INDEX_CREATED_AT: &str = "created_at_1";
/// Unique index on `(topic, seq)` of topic messages (where the server
/// answers ranges from indexes, [`crate::server`]).
pub const INDEX_TOPIC_SEQ: &str = "topic_seq";
/// Unique index on `(source, idem, topic)`: one copy per topic of one
/// idempotent publication.
pub const INDEX_TOPIC_IDEMPOTENCY: &str = "source_idem_topic";
/// TTL index on `expire_at` of topic messages (each carries its namespace's
/// retention).
pub const INDEX_EXPIRE_TTL: &str = "expire_at_ttl";
/// Plain index on `expire_at` for the sweep (as [`INDEX_CREATED_AT`]).
pub const INDEX_EXPIRE_AT: &str = "expire_at_1";

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

/// The fields of one entry of a log (a user's or a topic's), independent
/// of its seq.
pub struct EntryTemplate<'a> {
    /// The field naming the log: `user` or `topic`.
    pub key_field: &'static str,
    /// The user or topic.
    pub key: &'a str,
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
    /// When the entry expires (topic messages carry their namespace's
    /// retention); `None` for entries whose collection expires by age.
    pub expire_at_ms: Option<i64>,
}

impl EntryTemplate<'_> {
    /// The document for this entry at `seq` (`seq` must fit an `i64`).
    pub fn to_doc(&self, seq: i64) -> Document {
        let mut doc = doc! {
            "_id": format!("{}:{seq:020}", self.key),
            self.key_field: self.key,
            "seq": seq,
            "id": self.id.as_str(),
            "data": self.data.get(),
            "source": self.source,
            "idem": self.idem,
            "created_at": DateTime::from_millis(self.created_at_ms),
        };
        if let Some(at) = self.expire_at_ms {
            doc.insert("expire_at", DateTime::from_millis(at));
        }
        doc
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
        self.entry().to_doc(seq)
    }

    /// The same fields as a log entry.
    pub fn entry(&self) -> EntryTemplate<'_> {
        EntryTemplate {
            key_field: "user",
            key: self.user.as_str(),
            id: self.id,
            data: self.data,
            source: self.source,
            idem: self.idem,
            created_at_ms: self.created_at_ms,
            expire_at_ms: None,
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

/// The fields every log entry has, read back from its document.
struct EntryFields {
    seq: Seq,
    id: MessageId,
    data: Arc<RawValue>,
    created_at_ms: i64,
}

fn malformed(doc: &Document, reason: &'static str) -> MalformedDoc {
    MalformedDoc {
        id: doc
            .get("_id")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".to_owned()),
        reason,
    }
}

fn entry_fields(doc: &Document) -> Result<EntryFields, MalformedDoc> {
    let bad = |reason| malformed(doc, reason);
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
    Ok(EntryFields {
        seq,
        id,
        data,
        created_at_ms,
    })
}

/// Reads a message document back as `user`'s [`StoredMessage`].
pub fn message_from_doc(doc: &Document) -> Result<StoredMessage, MalformedDoc> {
    let user = doc
        .get_str("user")
        .ok()
        .and_then(|u| UserId::new(u).ok())
        .ok_or_else(|| malformed(doc, "user missing or invalid"))?;
    let f = entry_fields(doc)?;
    Ok(StoredMessage {
        user_id: user,
        seq: f.seq,
        id: f.id,
        data: f.data,
        created_at_ms: f.created_at_ms,
    })
}

/// Reads a topic message document back as a [`TopicMessage`].
pub fn topic_message_from_doc(doc: &Document) -> Result<TopicMessage, MalformedDoc> {
    let topic = doc
        .get_str("topic")
        .ok()
        .and_then(|t| TopicName::parse_internal(t).ok())
        .ok_or_else(|| malformed(doc, "topic missing or invalid"))?;
    let f = entry_fields(doc)?;
    Ok(TopicMessage {
        topic,
        seq: f.seq,
        id: f.id,
        data: f.data,
        created_at_ms: f.created_at_ms,
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
