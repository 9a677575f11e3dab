//! The body of an SQS message on the hand-off queue.
//!
//! A body is a JSON array of [`StoredMessage`]s (a small group, so one
//! `SendMessageBatch` call carries many recipient copies), or an object
//! `{"topic_messages": [...]}` of [`TopicMessage`]s; a single stored message
//! object is accepted too, so an operator can hand-write a message into the
//! queue. [`encode`], [`encode_topics`] (collect's side) and [`decode`]
//! (dispatch's side) are the only places that know the format.

use edgepush_core::{StoredMessage, TopicMessage};
use serde::Serialize;
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
    /// The recipient (or the topic).
    pub user: String,
    /// Its size as JSON.
    pub bytes: usize,
    /// The limit it is over.
    pub max: usize,
}

/// What a body carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// User messages (recipient copies).
    Messages(Vec<StoredMessage>),
    /// Topic messages (topic copies).
    Topics(Vec<TopicMessage>),
}

/// The object form of a topic body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicBody {
    topic_messages: Vec<TopicMessage>,
}

/// Groups `messages` into bodies of at most `max_messages` messages and
/// `max_bytes` bytes each, in order. Fails only when one message alone is
/// over `max_bytes`.
pub fn encode(
    messages: &[StoredMessage],
    max_messages: usize,
    max_bytes: usize,
) -> Result<Vec<String>, TooLarge> {
    group(messages, "[", "]", max_messages, max_bytes, |m| {
        (m.id.to_string(), m.user_id.to_string())
    })
}

/// [`encode`] for topic messages: bodies `{"topic_messages":[...]}`.
pub fn encode_topics(
    messages: &[TopicMessage],
    max_messages: usize,
    max_bytes: usize,
) -> Result<Vec<String>, TooLarge> {
    group(
        messages,
        "{\"topic_messages\":[",
        "]}",
        max_messages,
        max_bytes,
        |m| (m.id.to_string(), m.topic.to_string()),
    )
}

/// Groups `items` into bodies `head` item `,` item ... `tail`.
fn group<T: Serialize>(
    items: &[T],
    head: &str,
    tail: &str,
    max_items: usize,
    max_bytes: usize,
    name: impl Fn(&T) -> (String, String),
) -> Result<Vec<String>, TooLarge> {
    let max_items = max_items.max(1);
    let too_large = |item: &T, bytes| {
        let (id, user) = name(item);
        TooLarge {
            id,
            user,
            bytes,
            max: max_bytes,
        }
    };
    let mut bodies = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for item in items {
        // Plain data with string keys: serialising cannot fail, but a
        // failure is still reported, never unwrapped.
        let json = serde_json::to_string(item).map_err(|_| too_large(item, 0))?;
        if json.len() + head.len() + tail.len() > max_bytes {
            return Err(too_large(item, json.len()));
        }
        // Adding it costs "," + json, and the tail.
        if count > 0
            && (count == max_items || current.len() + 1 + json.len() + tail.len() > max_bytes)
        {
            current.push_str(tail);
            bodies.push(std::mem::take(&mut current));
            count = 0;
        }
        if count == 0 {
            current.push_str(head);
        } else {
            current.push(',');
        }
        current.push_str(&json);
        count += 1;
    }
    if count > 0 {
        current.push_str(tail);
        bodies.push(current);
    }
    Ok(bodies)
}

/// Reads a body: a JSON array of stored messages, one stored message, or
/// `{"topic_messages": [...]}`. An empty array is valid (and carries
/// nothing).
pub fn decode(body: &str) -> Result<Body, serde_json::Error> {
    let raw: &RawValue = serde_json::from_str(body)?;
    let text = raw.get().trim_start();
    if text.starts_with('[') {
        return serde_json::from_str(text).map(Body::Messages);
    }
    // An object: a topic body names its one field; anything else must be a
    // stored message.
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        topic_messages: Option<serde::de::IgnoredAny>,
    }
    let peek: Peek = serde_json::from_str(text)?;
    if peek.topic_messages.is_some() {
        serde_json::from_str::<TopicBody>(text).map(|b| Body::Topics(b.topic_messages))
    } else {
        serde_json::from_str(text).map(|one| Body::Messages(vec![one]))
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
        let back: Vec<_> = bodies.iter().flat_map(|b| messages_of(b)).collect();
        assert_eq!(back, messages);
    }

    fn messages_of(body: &str) -> Vec<StoredMessage> {
        match decode(body).unwrap() {
            Body::Messages(m) => m,
            other => panic!("expected messages, got {other:?}"),
        }
    }

    #[test]
    fn topic_bodies_round_trip() {
        let messages: Vec<_> = (1..=25)
            .map(|seq| TopicMessage {
                topic: edgepush_core::TopicName::new("news").unwrap(),
                seq,
                id: MessageId::new("m").unwrap(),
                data: std::sync::Arc::from(RawValue::from_string("{}".into()).unwrap()),
                created_at_ms: 1,
            })
            .collect();
        let bodies = encode_topics(&messages, 10, MAX_BODY_BYTES).unwrap();
        assert_eq!(bodies.len(), 3);
        let mut back = Vec::new();
        for b in &bodies {
            match decode(b).unwrap() {
                Body::Topics(t) => back.extend(t),
                other => panic!("expected topics, got {other:?}"),
            }
        }
        assert_eq!(back, messages);
        assert!(decode(r#"{"topic_messages":[],"x":1}"#).is_err());
        assert!(decode(r#"{"topic_messages":[{"topic":"a b"}]}"#).is_err());
    }

    #[test]
    fn groups_by_size() {
        let data = format!("\"{}\"", "x".repeat(1000));
        let messages: Vec<_> = (1..=10).map(|seq| stored("u", seq, &data)).collect();
        let bodies = encode(&messages, 100, 2500).unwrap();
        assert!(bodies.len() >= 4, "{} bodies", bodies.len());
        assert!(bodies.iter().all(|b| b.len() <= 2500));
        let back: Vec<_> = bodies.iter().flat_map(|b| messages_of(b)).collect();
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
        assert_eq!(messages_of(&one), vec![stored("u", 3, r#"{"a":1}"#)]);
        assert!(messages_of("[]").is_empty());
        assert!(decode("not json").is_err());
        assert!(decode(r#"{"user_id":"u"}"#).is_err());
        assert!(decode(r#"[{"user_id":"u","seq":"x"}]"#).is_err());
    }
}
