//! What travels on the wire: WebSocket frames between edge nodes and clients,
//! the collect API's bodies and the push batch API's bodies.
//!
//! The `msg` frame is written by hand into one buffer ([`encode_msg`]) so the
//! edge node serialises a message once and shares the resulting [`Bytes`]
//! with every connection it goes to.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::{ConnId, MessageId, UserId};
use crate::message::{Seq, StoredMessage, TopicMessage};
use crate::topic::TopicName;

/// Close code: the token is bad or has expired.
pub const CLOSE_BAD_TOKEN: u16 = 4001;
/// Close code: the client read too slowly and its send queue overflowed.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code: a frame was larger than the node accepts.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The largest client frame accepted by default, in bytes
/// (`EDGEPUSH_MAX_CLIENT_FRAME` on edge nodes; the managed edge's limit):
/// beyond it the connection is closed with [`CLOSE_TOO_BIG`].
pub const DEFAULT_MAX_CLIENT_FRAME: usize = 4096;
/// Close code: the node is draining; reconnect (to another node).
pub const CLOSE_DRAINING: u16 = 1012;
/// Close code: the client sent a frame the protocol does not define.
pub const CLOSE_BAD_FRAME: u16 = 1008;
/// Close code: the connection was closed through the push API (`DELETE`).
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server goes away (idle timeout).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: an unexpected condition on the server (the message store
/// failed or did not answer in time); the client resumes later.
pub const CLOSE_INTERNAL: u16 = 1011;
/// The code a client reports for a close frame that carried none (RFC 6455
/// "no status received"; never sent).
pub const CLOSE_NO_STATUS: u16 = 1005;

/// A frame from a client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Every message up to `seq` has been delivered to the client.
    Ack {
        /// The highest sequence number the client holds.
        seq: Seq,
    },
    /// Subscribe to a topic (client-side subscription).
    Subscribe {
        /// The topic, validated by the node (a bad one gets an error frame).
        topic: String,
        /// The last seq of the topic the client holds: the node replays
        /// every stored message after it. Absent: start at the latest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Seq>,
        /// A subscribe token the business signed for this user and topic,
        /// when the connection token's patterns do not allow the topic.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Stop receiving a topic.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
    /// Publish to a topic from the client (only where the topic's namespace
    /// allows it).
    Publish {
        /// The topic.
        topic: String,
        /// The payload, any JSON value, stored as sent.
        data: Box<RawValue>,
        /// Makes a retry store nothing twice (scoped to the user).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
}

impl PartialEq for ClientFrame {
    fn eq(&self, other: &Self) -> bool {
        use ClientFrame::*;
        match (self, other) {
            (Ack { seq: a }, Ack { seq: b }) => a == b,
            (
                Subscribe {
                    topic: t1,
                    after: a1,
                    token: k1,
                },
                Subscribe {
                    topic: t2,
                    after: a2,
                    token: k2,
                },
            ) => t1 == t2 && a1 == a2 && k1 == k2,
            (Unsubscribe { topic: a }, Unsubscribe { topic: b }) => a == b,
            (
                Publish {
                    topic: t1,
                    data: d1,
                    idempotency_key: k1,
                },
                Publish {
                    topic: t2,
                    data: d2,
                    idempotency_key: k2,
                },
            ) => t1 == t2 && d1.get() == d2.get() && k1 == k2,
            _ => false,
        }
    }
}

impl Eq for ClientFrame {}

/// The `type` of a client frame, read first.
#[derive(Deserialize)]
struct FrameType<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// The bodies of the client frames, each refusing unknown fields. (serde's
/// internally tagged enums buffer their content, which a [`RawValue`]
/// cannot be read from: so the tag is read first, then the body.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    seq: Seq,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    topic: String,
    #[serde(default)]
    after: Option<Seq>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    topic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    topic: String,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl ClientFrame {
    /// Parses a text frame from a client: a known `type`, its fields and
    /// nothing else.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let FrameType { kind } = serde_json::from_str(text)?;
        Ok(match &*kind {
            "ack" => {
                let b: AckBody = serde_json::from_str(text)?;
                ClientFrame::Ack { seq: b.seq }
            }
            "subscribe" => {
                let b: SubscribeBody = serde_json::from_str(text)?;
                ClientFrame::Subscribe {
                    topic: b.topic,
                    after: b.after,
                    token: b.token,
                }
            }
            "unsubscribe" => {
                let b: UnsubscribeBody = serde_json::from_str(text)?;
                ClientFrame::Unsubscribe { topic: b.topic }
            }
            "publish" => {
                let b: PublishBody = serde_json::from_str(text)?;
                ClientFrame::Publish {
                    topic: b.topic,
                    data: b.data,
                    idempotency_key: b.idempotency_key,
                }
            }
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["ack", "subscribe", "unsubscribe", "publish"],
                ));
            }
        })
    }

    /// The frame as JSON text (what a client sends).
    pub fn to_text(&self) -> String {
        // Plain data with string keys: serialising cannot fail; an empty
        // object (which the node refuses) if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// The `hello` frame, sent once when a connection opens.
pub fn encode_hello(conn_id: &ConnId, user_id: &UserId) -> String {
    // Ids are validated to plain characters, so no escaping is needed; go
    // through serde anyway so this stays correct if that ever changes.
    serde_json::json!({"type": "hello", "conn_id": conn_id, "user_id": user_id}).to_string()
}

/// The `msg` frame for one stored message, serialised once.
pub fn encode_msg(seq: Seq, id: &MessageId, data: &RawValue) -> Bytes {
    encode_msg_unchecked(seq, id.as_str(), data)
}

/// [`encode_msg`] for an id the caller has validated with
/// [`MessageId::validate`] (so it needs no JSON escaping).
pub fn encode_msg_unchecked(seq: Seq, id: &str, data: &RawValue) -> Bytes {
    Bytes::from(msg_text_unchecked(seq, id, data))
}

/// The `msg` frame of [`encode_msg_unchecked`] as a `String` of exactly its
/// length: one allocation, which a WebSocket text frame (and [`Bytes`])
/// takes over as it is, without copying, validating or a second
/// allocation.
pub fn msg_text_unchecked(seq: Seq, id: &str, data: &RawValue) -> String {
    msg_text(None, seq, id, data)
}

/// The `msg` frame of a topic message, serialised once per node and shared
/// by every local subscriber. `topic` and `id` must be validated (topic
/// names and ids need no JSON escaping).
pub fn encode_topic_msg_unchecked(topic: &str, seq: Seq, id: &str, data: &RawValue) -> Bytes {
    Bytes::from(topic_msg_text_unchecked(topic, seq, id, data))
}

/// The frame of [`encode_topic_msg_unchecked`] as a `String` of exactly its
/// length (see [`msg_text_unchecked`]).
pub fn topic_msg_text_unchecked(topic: &str, seq: Seq, id: &str, data: &RawValue) -> String {
    msg_text(Some(topic), seq, id, data)
}

/// The length in bytes of the `msg` frame [`put_msg_unchecked`] writes.
pub fn msg_len_unchecked(seq: Seq, id: &str, data: &RawValue) -> usize {
    let mut digits = [0u8; 20];
    msg_parts(None, seq, id, data, &mut digits)
        .iter()
        .map(|p| p.len())
        .sum()
}

/// Appends the `msg` frame of [`encode_msg_unchecked`] to `out`, which
/// should have room for [`msg_len_unchecked`] more bytes (else it grows):
/// for frames of many messages written into one shared buffer.
pub fn put_msg_unchecked(out: &mut BytesMut, seq: Seq, id: &str, data: &RawValue) {
    let mut digits = [0u8; 20];
    for part in msg_parts(None, seq, id, data, &mut digits) {
        out.put_slice(part.as_bytes());
    }
}

/// A `msg` frame, of a topic's stream or (without `topic`) the user's,
/// written into a `String` whose capacity is exactly its length.
fn msg_text(topic: Option<&str>, seq: Seq, id: &str, data: &RawValue) -> String {
    let mut digits = [0u8; 20];
    let parts = msg_parts(topic, seq, id, data, &mut digits);
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// The pieces of a `msg` frame, in order (`digits` holds the seq's).
fn msg_parts<'a>(
    topic: Option<&'a str>,
    seq: Seq,
    id: &'a str,
    data: &'a RawValue,
    digits: &'a mut [u8; 20],
) -> [&'a str; 11] {
    let (topic_open, topic, topic_close) = match topic {
        Some(topic) => (r#""topic":""#, topic, r#"","#),
        None => ("", "", ""),
    };
    [
        r#"{"type":"msg","#,
        topic_open,
        topic,
        topic_close,
        r#""seq":"#,
        format_u64(seq, digits),
        r#","id":""#,
        id,
        r#"","data":"#,
        data.get(),
        "}",
    ]
}

/// The `msg` frame of a stored topic message.
pub fn encode_topic_msg(m: &TopicMessage) -> Bytes {
    encode_topic_msg_unchecked(m.topic.as_str(), m.seq, m.id.as_str(), &m.data)
}

/// `{"type":"subscribed","topic":...,"seq":<latest>}`: the subscription is
/// in place; `seq` is the latest seq of the topic when it started (the
/// client's position when it gave no `after`).
pub fn encode_subscribed(topic: &TopicName, seq: Seq) -> String {
    serde_json::json!({"type": "subscribed", "topic": topic, "seq": seq}).to_string()
}

/// `{"type":"unsubscribed","topic":...}`: nothing more of the topic comes.
pub fn encode_unsubscribed(topic: &TopicName) -> String {
    serde_json::json!({"type": "unsubscribed", "topic": topic}).to_string()
}

/// `{"type":"published","topic":...,"seq":N,"id":...}`: a client's publish
/// is stored.
pub fn encode_published(m: &TopicMessage) -> String {
    serde_json::json!({"type": "published", "topic": m.topic, "seq": m.seq, "id": m.id}).to_string()
}

/// `{"type":"error","op":...,"topic":...,"code":...,"message":...}`: a
/// request of the client (`op`: `subscribe`, `unsubscribe`, `publish`, or
/// `connect` for a topic of the token) was refused; the connection goes on.
pub fn encode_error(op: &str, topic: &str, code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "op": op, "topic": topic, "code": code, "message": message})
        .to_string()
}

/// `{"type":"presence","topic":...,"joined":[...],"left":[...]}`: users
/// whose first subscription of the topic (on a node) came, or whose last
/// went, during the last interval.
pub fn encode_presence(topic: &str, event: &PresenceEvent) -> Bytes {
    Bytes::from(
        serde_json::json!({"type": "presence", "topic": topic, "joined": event.joined, "left": event.left})
            .to_string(),
    )
}

/// Writes `n` in decimal into `buf` without allocating; returns the digits.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// A `msg` frame as a client reads it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MsgFrame {
    /// The topic, for a topic message; absent for the user's own stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicName>,
    /// The message's sequence number: the user's, or the topic's.
    pub seq: Seq,
    /// The message id.
    pub id: MessageId,
    /// The payload.
    pub data: serde_json::Value,
}

/// Any frame from the server, as a client reads it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// The first frame of every connection.
    Hello {
        /// This connection's id (the push API's connection id).
        conn_id: ConnId,
        /// The user the token named.
        user_id: UserId,
    },
    /// A message for the user, or of a topic (`topic` set).
    Msg(MsgFrame),
    /// A subscription is in place.
    Subscribed {
        /// The topic.
        topic: TopicName,
        /// Its latest seq when the subscription started.
        seq: Seq,
    },
    /// A subscription ended at the client's request.
    Unsubscribed {
        /// The topic.
        topic: TopicName,
    },
    /// A client's publish is stored.
    Published {
        /// The topic.
        topic: TopicName,
        /// Its seq in the topic.
        seq: Seq,
        /// The message id.
        id: MessageId,
    },
    /// A request was refused; the connection goes on.
    Error {
        /// What was asked: `subscribe`, `unsubscribe`, `publish`, `connect`.
        op: String,
        /// The topic named (as sent).
        topic: String,
        /// Why: `bad_topic`, `unknown_namespace`, `forbidden`, `bad_token`,
        /// `too_many_subscriptions`, `not_subscribed`, `unavailable`,
        /// `bad_request`.
        code: String,
        /// For people.
        message: String,
    },
    /// Users joined or left a topic.
    Presence {
        /// The topic.
        topic: TopicName,
        /// Users whose first subscription came.
        joined: Vec<UserId>,
        /// Users whose last subscription went.
        left: Vec<UserId>,
    },
}

impl ServerFrame {
    /// Parses a text frame from the server.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// One recipient's receipt in the collect API's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The recipient.
    pub user_id: UserId,
    /// The recipient's sequence number for the message.
    pub seq: Seq,
    /// The message id.
    pub id: MessageId,
}

/// The collect API's `202` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// One receipt per recipient, in the order of the request's `to` list.
    pub messages: Vec<Accepted>,
}

impl SubmitResponse {
    /// The receipts of the stored copies of a message.
    pub fn from_stored(stored: &[StoredMessage]) -> Self {
        Self {
            messages: stored
                .iter()
                .map(|m| Accepted {
                    user_id: m.user_id.clone(),
                    seq: m.seq,
                    id: m.id.clone(),
                })
                .collect(),
        }
    }
}

/// The body of every error answer of the HTTP APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `unavailable`, ...
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// On a collect `503` after the message may have been stored: the
    /// idempotency key to retry with (the caller's own, or the one collect
    /// chose for a request that had none), so that a retry stores nothing
    /// twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl ErrorBody {
    /// An error body with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                idempotency_key: None,
            },
        }
    }
}

/// One entry of a push batch: a stored message and the connections on the
/// receiving node it goes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushItem {
    /// The connections, all on the node the batch is sent to.
    pub connection_ids: Vec<ConnId>,
    /// The message (one recipient's copy).
    pub message: StoredMessage,
}

/// The body of `POST .../@batch` on an edge node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushBatch {
    /// The deliveries.
    pub items: Vec<PushItem>,
}

/// A push batch read without copying: ids and payloads borrow from the
/// request body, so the edge node's fan-out path allocates once per message
/// (its frame), not once per id. Ids are plain characters, so they never
/// carry JSON escapes; a body that escapes one is refused.
#[derive(Debug, Deserialize)]
pub struct PushBatchRef<'a> {
    /// The deliveries.
    #[serde(borrow)]
    pub items: Vec<PushItemRef<'a>>,
}

/// One entry of a [`PushBatchRef`].
#[derive(Debug, Deserialize)]
pub struct PushItemRef<'a> {
    /// The connections, unvalidated (an unknown or malformed id is "gone").
    #[serde(borrow)]
    pub connection_ids: ConnIdsRef<'a>,
    /// The message.
    #[serde(borrow)]
    pub message: StoredMessageRef<'a>,
}

/// The connection ids of a [`PushItemRef`], borrowed from the body. The
/// first id is held inline, so the common item, one message to one
/// connection (a unicast), costs no allocation; further ids go in a
/// vector.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnIdsRef<'a> {
    first: Option<&'a str>,
    more: Vec<&'a str>,
}

impl<'a> ConnIdsRef<'a> {
    /// The ids, in the order of the body.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }

    /// How many ids there are.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ConnIdsRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ids<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Ids<'a> {
            type Value = ConnIdsRef<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of connection ids")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut ids = ConnIdsRef {
                    first: seq.next_element::<&'de str>()?,
                    more: Vec::new(),
                };
                if ids.first.is_some() {
                    while let Some(id) = seq.next_element::<&'de str>()? {
                        ids.more.push(id);
                    }
                }
                Ok(ids)
            }
        }
        d.deserialize_seq(Ids(std::marker::PhantomData))
    }
}

/// A [`StoredMessage`] borrowed from a request body.
#[derive(Debug, Deserialize)]
pub struct StoredMessageRef<'a> {
    /// The recipient (unvalidated).
    pub user_id: &'a str,
    /// The recipient's seq.
    pub seq: Seq,
    /// The message id; validate with [`MessageId::validate`] before use.
    pub id: &'a str,
    /// The payload.
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// When it was stored.
    #[serde(default)]
    pub created_at_ms: i64,
}

/// Users who joined or left a topic during one interval (on one node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// Users whose first subscription of the topic came.
    #[serde(default)]
    pub joined: Vec<UserId>,
    /// Users whose last subscription of the topic went.
    #[serde(default)]
    pub left: Vec<UserId>,
}

impl PresenceEvent {
    /// Whether nobody joined or left.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

/// One entry of a topic push (`POST .../@topics`): a stored topic message,
/// or a presence event, for every subscriber of the topic on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicPushItem {
    /// The topic.
    pub topic: TopicName,
    /// A stored message of the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<TopicPushMessage>,
    /// A presence event of the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceEvent>,
}

impl TopicPushItem {
    /// The item of a stored message.
    pub fn message(m: &TopicMessage) -> Self {
        Self {
            topic: m.topic.clone(),
            message: Some(TopicPushMessage {
                seq: m.seq,
                id: m.id.clone(),
                data: m.data.clone(),
                created_at_ms: m.created_at_ms,
            }),
            presence: None,
        }
    }

    /// The item of a presence event.
    pub fn presence(topic: TopicName, event: PresenceEvent) -> Self {
        Self {
            topic,
            message: None,
            presence: Some(event),
        }
    }
}

/// A stored topic message in a [`TopicPushItem`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicPushMessage {
    /// The topic's seq.
    pub seq: Seq,
    /// The message id.
    pub id: MessageId,
    /// The payload.
    pub data: std::sync::Arc<RawValue>,
    /// When it was stored.
    #[serde(default)]
    pub created_at_ms: i64,
}

impl PartialEq for TopicPushMessage {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.id == other.id
            && self.data.get() == other.data.get()
            && self.created_at_ms == other.created_at_ms
    }
}

/// The body of `POST .../@topics` on an edge node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicPushBatch {
    /// The items, in order.
    pub items: Vec<TopicPushItem>,
}

/// A topic push read without copying (the node's fan-out path): names, ids
/// and payloads borrow from the request body.
#[derive(Debug, Deserialize)]
pub struct TopicPushBatchRef<'a> {
    /// The items, in order.
    #[serde(borrow)]
    pub items: Vec<TopicPushItemRef<'a>>,
}

/// One entry of a [`TopicPushBatchRef`].
#[derive(Debug, Deserialize)]
pub struct TopicPushItemRef<'a> {
    /// The topic (unvalidated; validate with [`TopicName::validate_internal`]).
    pub topic: &'a str,
    /// A stored message.
    #[serde(default, borrow)]
    pub message: Option<TopicPushMessageRef<'a>>,
    /// A presence event.
    #[serde(default)]
    pub presence: Option<PresenceEvent>,
}

/// A [`TopicPushMessage`] borrowed from a request body.
#[derive(Debug, Deserialize)]
pub struct TopicPushMessageRef<'a> {
    /// The topic's seq.
    pub seq: Seq,
    /// The message id; validate with [`MessageId::validate`].
    pub id: &'a str,
    /// The payload.
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// When it was stored.
    #[serde(default)]
    pub created_at_ms: i64,
}

/// The answer to a topic push.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPushResult {
    /// Frames queued to local subscribers.
    pub delivered: u64,
    /// Topics of the push that have no subscriber on the node (any more).
    #[serde(default)]
    pub absent: Vec<TopicName>,
}

/// The answer to a push batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushBatchResult {
    /// Frames queued to live connections.
    pub delivered: u64,
    /// Connections that are not on the node (any more): their routes are stale.
    pub gone: Vec<ConnId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_frame_is_valid_json_and_round_trips() {
        let id = MessageId::new("m1").unwrap();
        let data = RawValue::from_string(r#"{"text":"hi \"there\"","n":[1,2]}"#.into()).unwrap();
        let bytes = encode_msg(42, &id, &data);
        let frame = ServerFrame::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        match frame {
            ServerFrame::Msg(m) => {
                assert_eq!(m.seq, 42);
                assert_eq!(m.id, id);
                assert_eq!(m.data, serde_json::json!({"text":"hi \"there\"","n":[1,2]}));
            }
            other => panic!("expected msg, got {other:?}"),
        }
    }

    #[test]
    fn numbers_are_formatted_without_allocation() {
        let mut buf = [0u8; 20];
        assert_eq!(format_u64(0, &mut buf), "0");
        assert_eq!(format_u64(1234567890, &mut buf), "1234567890");
        assert_eq!(format_u64(u64::MAX, &mut buf), u64::MAX.to_string());
    }

    #[test]
    fn connection_ids_hold_the_first_inline() {
        // (len, is_empty, the ids) of an item's `connection_ids`.
        let read = |ids: &str| {
            let body = format!(
                r#"{{"items":[{{"connection_ids":{ids},"message":{{"user_id":"u","seq":1,"id":"m","data":1}}}}]}}"#
            );
            let batch: PushBatchRef<'_> = serde_json::from_str(&body).unwrap();
            let ids = &batch.items[0].connection_ids;
            let got: Vec<String> = ids.iter().map(str::to_owned).collect();
            (ids.len(), ids.is_empty(), got)
        };
        assert_eq!(read("[]"), (0, true, vec![]));
        assert_eq!(read(r#"["c1"]"#), (1, false, vec!["c1".to_owned()]));
        let three = read(r#"["c1","c2","c3"]"#);
        assert_eq!(three.0, 3);
        assert_eq!(three.2, ["c1", "c2", "c3"]);
        let not_a_list = r#"{"items":[{"connection_ids":"c1","message":{"user_id":"u","seq":1,"id":"m","data":1}}]}"#;
        assert!(serde_json::from_str::<PushBatchRef<'_>>(not_a_list).is_err());
    }

    #[test]
    fn frames_are_built_at_their_exact_length() {
        let data = RawValue::from_string(r#"{"a":[1,"x"]}"#.to_owned()).unwrap();
        for seq in [0, 9, 10, 123_456, u64::MAX] {
            let text = msg_text_unchecked(seq, "m-1", &data);
            assert_eq!(text.len(), text.capacity(), "seq {seq}");
            assert_eq!(
                text,
                format!(r#"{{"type":"msg","seq":{seq},"id":"m-1","data":{{"a":[1,"x"]}}}}"#)
            );
            let mut shared = BytesMut::new();
            put_msg_unchecked(&mut shared, seq, "m-1", &data);
            put_msg_unchecked(&mut shared, seq, "m-1", &data);
            assert_eq!(shared.len(), 2 * msg_len_unchecked(seq, "m-1", &data));
            assert_eq!(&shared[..text.len()], text.as_bytes());
            let topic = topic_msg_text_unchecked("news", seq, "m-1", &data);
            assert_eq!(topic.len(), topic.capacity(), "seq {seq}");
            assert_eq!(
                topic,
                format!(
                    r#"{{"type":"msg","topic":"news","seq":{seq},"id":"m-1","data":{{"a":[1,"x"]}}}}"#
                )
            );
        }
    }

    #[test]
    fn push_batches_borrow_from_the_body() {
        let msg = StoredMessage {
            user_id: UserId::new("alice").unwrap(),
            seq: 3,
            id: MessageId::new("m1").unwrap(),
            data: std::sync::Arc::from(RawValue::from_string("{\"a\":[1]}".into()).unwrap()),
            created_at_ms: 5,
        };
        let owned = PushBatch {
            items: vec![PushItem {
                connection_ids: vec![ConnId::new("c1").unwrap(), ConnId::new("c2").unwrap()],
                message: msg,
            }],
        };
        let body = serde_json::to_vec(&owned).unwrap();
        let batch: PushBatchRef<'_> = serde_json::from_slice(&body).unwrap();
        let item = &batch.items[0];
        assert_eq!(item.connection_ids.iter().collect::<Vec<_>>(), ["c1", "c2"]);
        assert_eq!(item.connection_ids.len(), 2);
        assert_eq!(
            (item.message.user_id, item.message.seq, item.message.id),
            ("alice", 3, "m1")
        );
        assert_eq!(item.message.data.get(), "{\"a\":[1]}");
        let frame = encode_msg_unchecked(item.message.seq, item.message.id, item.message.data);
        assert_eq!(
            frame,
            encode_msg(3, &MessageId::new("m1").unwrap(), item.message.data)
        );
    }

    #[test]
    fn hello_frame_round_trips() {
        let text = encode_hello(&ConnId::new("c1").unwrap(), &UserId::new("alice").unwrap());
        match ServerFrame::parse(&text).unwrap() {
            ServerFrame::Hello { conn_id, user_id } => {
                assert_eq!(conn_id.as_str(), "c1");
                assert_eq!(user_id.as_str(), "alice");
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    #[test]
    fn topic_frames_round_trip() {
        let m = TopicMessage {
            topic: TopicName::new("chat:room-1").unwrap(),
            seq: 9,
            id: MessageId::new("m9").unwrap(),
            data: std::sync::Arc::from(RawValue::from_string("[1,{\"a\":\"b\"}]".into()).unwrap()),
            created_at_ms: 1,
        };
        let bytes = encode_topic_msg(&m);
        match ServerFrame::parse(std::str::from_utf8(&bytes).unwrap()).unwrap() {
            ServerFrame::Msg(f) => {
                assert_eq!(f.topic.as_ref(), Some(&m.topic));
                assert_eq!((f.seq, f.id.as_str()), (9, "m9"));
                assert_eq!(f.data, serde_json::json!([1, {"a": "b"}]));
            }
            other => panic!("expected msg, got {other:?}"),
        }
        let sub = encode_subscribed(&m.topic, 4);
        assert!(matches!(
            ServerFrame::parse(&sub).unwrap(),
            ServerFrame::Subscribed { seq: 4, .. }
        ));
        let err = encode_error("subscribe", "a b", "bad_topic", "no \"good\"");
        match ServerFrame::parse(&err).unwrap() {
            ServerFrame::Error {
                op,
                topic,
                code,
                message,
            } => {
                assert_eq!(
                    (op.as_str(), topic.as_str(), code.as_str()),
                    ("subscribe", "a b", "bad_topic")
                );
                assert_eq!(message, "no \"good\"");
            }
            other => panic!("expected error, got {other:?}"),
        }
        let event = PresenceEvent {
            joined: vec![UserId::new("a").unwrap()],
            left: vec![],
        };
        let p = encode_presence("chat:room-1", &event);
        assert!(matches!(
            ServerFrame::parse(std::str::from_utf8(&p).unwrap()).unwrap(),
            ServerFrame::Presence { joined, .. } if joined.len() == 1
        ));
        let user_msg = encode_msg(3, &MessageId::new("u").unwrap(), &m.data);
        match ServerFrame::parse(std::str::from_utf8(&user_msg).unwrap()).unwrap() {
            ServerFrame::Msg(f) => assert!(f.topic.is_none()),
            other => panic!("expected msg, got {other:?}"),
        }
    }

    #[test]
    fn topic_pushes_borrow_from_the_body() {
        let m = TopicMessage {
            topic: TopicName::broadcast(),
            seq: 2,
            id: MessageId::new("m2").unwrap(),
            data: std::sync::Arc::from(RawValue::from_string("{\"x\":1}".into()).unwrap()),
            created_at_ms: 5,
        };
        let batch = TopicPushBatch {
            items: vec![
                TopicPushItem::message(&m),
                TopicPushItem::presence(
                    TopicName::new("t").unwrap(),
                    PresenceEvent {
                        joined: vec![],
                        left: vec![UserId::new("b").unwrap()],
                    },
                ),
            ],
        };
        let body = serde_json::to_vec(&batch).unwrap();
        let back: TopicPushBatch = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.items, batch.items);
        let borrowed: TopicPushBatchRef<'_> = serde_json::from_slice(&body).unwrap();
        assert_eq!(borrowed.items[0].topic, "$broadcast");
        let msg = borrowed.items[0].message.as_ref().unwrap();
        assert_eq!((msg.seq, msg.id, msg.data.get()), (2, "m2", "{\"x\":1}"));
        assert!(borrowed.items[1].message.is_none());
        assert_eq!(borrowed.items[1].presence.as_ref().unwrap().left.len(), 1);
    }

    #[test]
    fn client_frames_are_strict() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ack","seq":7}"#).unwrap(),
            ClientFrame::Ack { seq: 7 }
        );
        assert!(ClientFrame::parse(r#"{"type":"ack","seq":-1}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"ack","seq":"7"}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"nope"}"#).is_err());
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe","topic":"a","after":3}"#).unwrap(),
            ClientFrame::Subscribe {
                topic: "a".into(),
                after: Some(3),
                token: None
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"unsubscribe","topic":"a"}"#).unwrap(),
            ClientFrame::Unsubscribe { topic: "a".into() }
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"publish","topic":"a","data":{"b":[1]}}"#).unwrap(),
            ClientFrame::Publish { data, .. } if data.get() == r#"{"b":[1]}"#
        ));
        assert!(ClientFrame::parse(r#"{"type":"subscribe"}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"subscribe","topic":"a","x":1}"#).is_err());
        assert!(ClientFrame::parse("not json").is_err());
        assert!(ClientFrame::parse(r#"{"seq":1}"#).is_err());
        let frames = [
            ClientFrame::Ack { seq: 1 },
            ClientFrame::Subscribe {
                topic: "t".into(),
                after: None,
                token: Some("k".into()),
            },
            ClientFrame::Unsubscribe { topic: "t".into() },
            ClientFrame::Publish {
                topic: "t".into(),
                data: RawValue::from_string("[1]".into()).unwrap(),
                idempotency_key: None,
            },
        ];
        for frame in frames {
            assert_eq!(ClientFrame::parse(&frame.to_text()).unwrap(), frame);
        }
    }
}
