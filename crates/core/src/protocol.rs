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
use crate::message::{Seq, StoredMessage};

/// Close code: the token is bad or has expired.
pub const CLOSE_BAD_TOKEN: u16 = 4001;
/// Close code: the client read too slowly and its send queue overflowed.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code: a frame was larger than the node accepts.
pub const CLOSE_TOO_BIG: u16 = 1009;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Every message up to `seq` has been delivered to the client.
    Ack {
        /// The highest sequence number the client holds.
        seq: Seq,
    },
}

impl ClientFrame {
    /// Parses a text frame from a client.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
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
    let data = data.get();
    let mut buf = BytesMut::with_capacity(40 + id.len() + data.len() + 20);
    buf.put_slice(b"{\"type\":\"msg\",\"seq\":");
    let mut digits = [0u8; 20];
    buf.put_slice(format_u64(seq, &mut digits));
    buf.put_slice(b",\"id\":\"");
    buf.put_slice(id.as_bytes());
    buf.put_slice(b"\",\"data\":");
    buf.put_slice(data.as_bytes());
    buf.put_u8(b'}');
    buf.freeze()
}

/// Writes `n` in decimal into `buf` without allocating; returns the digits.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// A `msg` frame as a client reads it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MsgFrame {
    /// The user's sequence number of the message.
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
    /// A message for the user.
    Msg(MsgFrame),
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
    pub connection_ids: Vec<&'a str>,
    /// The message.
    #[serde(borrow)]
    pub message: StoredMessageRef<'a>,
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
        assert_eq!(format_u64(0, &mut buf), b"0");
        assert_eq!(format_u64(1234567890, &mut buf), b"1234567890");
        assert_eq!(
            format_u64(u64::MAX, &mut buf),
            u64::MAX.to_string().as_bytes()
        );
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
        assert_eq!(item.connection_ids, ["c1", "c2"]);
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
    fn client_frames_are_strict() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ack","seq":7}"#).unwrap(),
            ClientFrame::Ack { seq: 7 }
        );
        assert!(ClientFrame::parse(r#"{"type":"ack","seq":-1}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"ack","seq":"7"}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"nope"}"#).is_err());
        assert!(ClientFrame::parse("not json").is_err());
    }
}
