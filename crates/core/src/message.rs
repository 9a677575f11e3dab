//! Messages before and after the message store holds them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::id::Seq;
use crate::id::{MessageId, UserId};
use crate::topic::TopicName;

/// What collect asks the message store to keep: one message for one or more
/// recipients.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The recipients, deduplicated, in the caller's order.
    pub to: Vec<UserId>,
    /// The payload, any JSON value, kept as the caller's text.
    pub data: Arc<RawValue>,
    /// Who submitted it (the API key's name): idempotency keys are scoped by it.
    pub source: String,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

impl NewMessage {
    /// The message id every copy of this message carries: derived from the
    /// idempotency key when there is one (so retries name the same message),
    /// random otherwise.
    pub fn message_id(&self) -> MessageId {
        match &self.idempotency_key {
            Some(key) => MessageId::for_idempotency_key(&self.source, key),
            None => MessageId::random(),
        }
    }
}

/// One recipient's copy of a message, as the message store holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The recipient.
    pub user_id: UserId,
    /// The recipient's sequence number for this message.
    pub seq: Seq,
    /// The message id, the same for every recipient of one submission.
    pub id: MessageId,
    /// The payload, shared between the copies of one submission.
    pub data: Arc<RawValue>,
    /// Milliseconds since the Unix epoch when the store accepted it.
    pub created_at_ms: i64,
}

impl PartialEq for StoredMessage {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id
            && self.seq == other.seq
            && self.id == other.id
            && self.data.get() == other.data.get()
            && self.created_at_ms == other.created_at_ms
    }
}

impl PartialEq for NewMessage {
    fn eq(&self, other: &Self) -> bool {
        self.to == other.to
            && self.data.get() == other.data.get()
            && self.source == other.source
            && self.idempotency_key == other.idempotency_key
    }
}

/// What a publisher asks the topic store to keep: one message for one or
/// more topics (each gets its own copy, with that topic's next seq).
#[derive(Debug, Clone)]
pub struct NewTopicMessage {
    /// The topics, deduplicated, in the caller's order, each with how long
    /// its copy stays available for replay (its namespace's retention).
    pub topics: Vec<(TopicName, std::time::Duration)>,
    /// The payload, any JSON value, kept as the caller's text.
    pub data: Arc<RawValue>,
    /// Who published it (the API key's name, or `client:<user>` for a
    /// client connection): idempotency keys are scoped by it.
    pub source: String,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

impl NewTopicMessage {
    /// The message id every copy carries, as [`NewMessage::message_id`].
    pub fn message_id(&self) -> MessageId {
        match &self.idempotency_key {
            Some(key) => MessageId::for_idempotency_key(&self.source, key),
            None => MessageId::random(),
        }
    }
}

/// One topic's copy of a message, as the topic store holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMessage {
    /// The topic.
    pub topic: TopicName,
    /// The topic's sequence number for this message: strictly increasing
    /// from 1, without gaps, per topic.
    pub seq: Seq,
    /// The message id, the same for every topic of one publication.
    pub id: MessageId,
    /// The payload.
    pub data: Arc<RawValue>,
    /// Milliseconds since the Unix epoch when the store accepted it.
    pub created_at_ms: i64,
}

impl PartialEq for TopicMessage {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.seq == other.seq
            && self.id == other.id
            && self.data.get() == other.data.get()
            && self.created_at_ms == other.created_at_ms
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
