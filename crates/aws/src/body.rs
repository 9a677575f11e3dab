//! The body of an SQS message on the hand-off queue.
//!
//! A body is a JSON array of [`StoredMessage`]s (a small group, so one
//! `SendMessageBatch` call carries many recipient copies); a single JSON
//! object is accepted too, so an operator can hand-write a message into the
//! queue. [`encode`] (collect's side) and [`decode`] (dispatch's side) are
//! the only two places that know the format.

use edgepush_core::StoredMessage;
use serde_json::value::RawValue;

/// The largest SQS message body, in bytes (256 KiB). SQS has accepted more
/// since 2025, but older queues, emulators and the batch total keep to it.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A message is larger than any body may be.
#[derive(Debug, thiserror::Error)]
#[error("stored message {id} for {user} is {bytes} bytes as JSON; an SQS body holds at most {max}")]
pub struct TooLarge {
    /// The message id.
    pub id: String,
    /// The recipient.
    pub user: String,
    /// Its size as JSON.
    pub bytes: usize,
    /// The limit it is over.
    pub max: usize,
}

/// Groups `messages` into bodies of at most `max_messages` messages and
/// `max_bytes` bytes each, in order. Fails only when one message alone is
/// over `max_bytes`.
pub fn encode(
    messages: &[StoredMessage],
    max_messages: usize,
    max_bytes: usize,
) -> Result<Vec<String>, TooLarge> {
    let max_messages = max_messages.max(1);
    let mut bodies = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for message in messages {
        // `StoredMessage` is plain data with string keys: serialising it
        // cannot fail, but a failure is still reported, never unwrapped.
        let json = serde_json::to_string(message).map_err(|_| TooLarge {
            id: message.id.to_string(),
            user: message.user_id.to_string(),
            bytes: 0,
            max: max_bytes,
        })?;
        // "[" + json + "]" for a body of one.
        if json.len() + 2 > max_bytes {
            return Err(TooLarge {
                id: message.id.to_string(),
                user: message.user_id.to_string(),
                bytes: json.len(),
                max: max_bytes,
            });
        }
        // Adding it costs "," + json, and the closing "]".
        if count > 0 && (count == max_messages || current.len() + 1 + json.len() + 1 > max_bytes) {
            current.push(']');
            bodies.push(std::mem::take(&mut current));
            count = 0;
        }
        current.push(if count == 0 { '[' } else { ',' });
        current.push_str(&json);
        count += 1;
    }
    if count > 0 {
        current.push(']');
        bodies.push(current);
    }
    Ok(bodies)
}

/// Reads a body: a JSON array of stored messages, or one stored message.
/// An empty array is valid (and carries nothing).
pub fn decode(body: &str) -> Result<Vec<StoredMessage>, serde_json::Error> {
    let raw: &RawValue = serde_json::from_str(body)?;
    if raw.get().trim_start().starts_with('[') {
        serde_json::from_str(raw.get())
    } else {
        serde_json::from_str(raw.get()).map(|one| vec![one])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use edgepush_core::{MessageId, UserId};

    use super::*;

    fn stored(user: &str, seq: u64, data: &str) -> StoredMessage {
        StoredMessage {
            user_id: UserId::new(user).unwrap(),
            seq,
            id: MessageId::new("m1").unwrap(),
            data: Arc::from(RawValue::from_string(data.to_owned()).unwrap()),
            created_at_ms: 7,
        }
    }

    #[test]
    fn groups_by_count_and_round_trips() {
        let messages: Vec<_> = (1..=25).map(|seq| stored("u", seq, "{}")).collect();
        let bodies = encode(&messages, 10, MAX_BODY_BYTES).unwrap();
        assert_eq!(bodies.len(), 3);
        let back: Vec<_> = bodies.iter().flat_map(|b| decode(b).unwrap()).collect();
        assert_eq!(back, messages);
    }

    #[test]
    fn groups_by_size() {
        let data = format!("\"{}\"", "x".repeat(1000));
        let messages: Vec<_> = (1..=10).map(|seq| stored("u", seq, &data)).collect();
        let bodies = encode(&messages, 100, 2500).unwrap();
        assert!(bodies.len() >= 4, "{} bodies", bodies.len());
        assert!(bodies.iter().all(|b| b.len() <= 2500));
        let back: Vec<_> = bodies.iter().flat_map(|b| decode(b).unwrap()).collect();
        assert_eq!(back, messages);
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let data = format!("\"{}\"", "x".repeat(1000));
        let err = encode(&[stored("u", 1, &data)], 10, 500).unwrap_err();
        assert!(err.bytes > 1000);
        assert_eq!(err.user, "u");
    }

    #[test]
    fn decodes_one_object_and_refuses_garbage() {
        let one = serde_json::to_string(&stored("u", 3, r#"{"a":1}"#)).unwrap();
        assert_eq!(decode(&one).unwrap(), vec![stored("u", 3, r#"{"a":1}"#)]);
        assert!(decode("[]").unwrap().is_empty());
        assert!(decode("not json").is_err());
        assert!(decode(r#"{"user_id":"u"}"#).is_err());
        assert!(decode(r#"[{"user_id":"u","seq":"x"}]"#).is_err());
    }
}
