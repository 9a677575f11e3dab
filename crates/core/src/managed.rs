//! The managed edge's part of the client protocol: the frames a client of an
//! API Gateway WebSocket API exchanges besides `hello`, `msg` and `ack`.
//!
//! API Gateway holds the socket, and a function may post to a connection
//! only after its `$connect` returned, so on this path the client speaks
//! first and asks for what it wants; the server answers through the
//! management API (`PostToConnection`). The sequence, and why, is in
//! `docs/protocol.md` ("Managed edge").
//!
//! | direction | frame | meaning |
//! |---|---|---|
//! | client -> server | `{"type":"resume"}`, `{"type":"resume","after":N}` | start (the first one: `hello`, then the replay), or fill a gap: replay what is stored after `N` |
//! | client -> server | `{"type":"ping"}` | keepalive (API Gateway closes connections idle for 10 minutes); answered with `pong` |
//! | server -> client | `{"type":"resumed","after":A,"through":T,"more":M}` | the replay after `A` is posted up to `T`; `more`: there is more stored, ask again after your last seq |
//! | server -> client | `{"type":"pong"}` | answer to `ping` |
//! | server -> client | `{"type":"close","code":C,"reason":"..."}` | the server is about to close the connection, with the close code an edge node would have sent (API Gateway cannot send one): 4001 token expired, 1011 store unavailable, 1008 bad frame |

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::message::Seq;
use crate::protocol::ClientFrame;

/// A frame from a client of the managed edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedClientFrame {
    /// Replay what is stored after `after` (`None`: after the `?after=` of
    /// the connect URL, else after the user's acked seq). The first one of
    /// a connection also starts it (`hello`, then live messages).
    Resume {
        /// The last seq the client holds contiguously.
        after: Option<Seq>,
    },
    /// Keepalive; answered with `pong`.
    Ping,
    /// A frame of the common protocol (`ack`, ...).
    Client(ClientFrame),
}

/// The `type` of a frame, read first.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(default)]
    after: Option<Seq>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BareBody {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
}

impl ManagedClientFrame {
    /// Parses a text frame from a client of the managed edge: `resume`,
    /// `ping`, or any frame [`ClientFrame::parse`] accepts; unknown fields
    /// are refused.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let kind = serde_json::from_str::<Kind<'_>>(text).map(|k| k.kind.into_owned());
        match kind.as_deref() {
            Ok("resume") => {
                let body: ResumeBody = serde_json::from_str(text)?;
                Ok(Self::Resume { after: body.after })
            }
            Ok("ping") => {
                let _: BareBody = serde_json::from_str(text)?;
                Ok(Self::Ping)
            }
            // Anything else, including a frame without a type: the common
            // parser says what is wrong with it.
            _ => ClientFrame::parse(text).map(Self::Client),
        }
    }
}

/// `{"type":"resume"}` or `{"type":"resume","after":N}`.
pub fn encode_resume(after: Option<Seq>) -> String {
    match after {
        None => r#"{"type":"resume"}"#.to_owned(),
        Some(after) => format!(r#"{{"type":"resume","after":{after}}}"#),
    }
}

/// The keepalive a client sends.
pub const PING_FRAME: &str = r#"{"type":"ping"}"#;

/// The answer to [`PING_FRAME`].
pub const PONG_FRAME: &str = r#"{"type":"pong"}"#;

/// A managed-edge frame from the server, as a client reads it (the common
/// ones are [`crate::protocol::ServerFrame`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ManagedServerFrame {
    /// The replay asked for by a `resume` is posted.
    Resumed {
        /// Where it started (exclusive).
        after: Seq,
        /// The last seq it posted (`after` when there was nothing).
        through: Seq,
        /// More is stored after `through`: send `resume` again.
        more: bool,
    },
    /// The answer to `ping`.
    Pong,
    /// The server closes the connection right after this frame; treat it
    /// as a close frame with this code.
    Close {
        /// The close code an edge node would have sent.
        code: u16,
        /// Why.
        reason: String,
    },
}

impl ManagedServerFrame {
    /// The frame types this enum covers.
    pub const TYPES: [&'static str; 3] = ["resumed", "pong", "close"];

    /// Parses `text` when its `type` is one of [`Self::TYPES`]; `None` for
    /// any other frame (for [`crate::protocol::ServerFrame::parse`]).
    pub fn parse(text: &str) -> Option<Result<Self, serde_json::Error>> {
        let kind = serde_json::from_str::<Kind<'_>>(text).ok()?;
        Self::TYPES
            .contains(&&*kind.kind)
            .then(|| serde_json::from_str(text))
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Integers, a bool and a string: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse() {
        assert_eq!(
            ManagedClientFrame::parse(r#"{"type":"resume"}"#).unwrap(),
            ManagedClientFrame::Resume { after: None }
        );
        assert_eq!(
            ManagedClientFrame::parse(r#"{"type":"resume","after":42}"#).unwrap(),
            ManagedClientFrame::Resume { after: Some(42) }
        );
        assert_eq!(
            ManagedClientFrame::parse(r#"{"type":"ping"}"#).unwrap(),
            ManagedClientFrame::Ping
        );
        assert_eq!(
            ManagedClientFrame::parse(r#"{"type":"ack","seq":3}"#).unwrap(),
            ManagedClientFrame::Client(ClientFrame::Ack { seq: 3 })
        );
        for text in [
            encode_resume(None),
            encode_resume(Some(7)),
            PING_FRAME.into(),
        ] {
            assert!(ManagedClientFrame::parse(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn bad_client_frames_are_refused() {
        for text in [
            r#"{"type":"resume","after":-1}"#,
            r#"{"type":"resume","after":"3"}"#,
            r#"{"type":"resume","after":1,"x":1}"#,
            r#"{"type":"ping","x":1}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":7}"#,
            r#"{"after":1}"#,
            r#"[]"#,
            "not json",
            "",
        ] {
            assert!(ManagedClientFrame::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = [
            ManagedServerFrame::Resumed {
                after: 3,
                through: 9,
                more: true,
            },
            ManagedServerFrame::Pong,
            ManagedServerFrame::Close {
                code: 4001,
                reason: "token expired".into(),
            },
        ];
        for frame in frames {
            let text = frame.to_text();
            assert_eq!(ManagedServerFrame::parse(&text).unwrap().unwrap(), frame);
        }
        assert_eq!(
            ManagedServerFrame::parse(PONG_FRAME).unwrap().unwrap(),
            ManagedServerFrame::Pong
        );
        assert!(ManagedServerFrame::parse(r#"{"type":"msg","seq":1}"#).is_none());
        assert!(ManagedServerFrame::parse("not json").is_none());
        assert!(
            ManagedServerFrame::parse(r#"{"type":"resumed","after":1}"#)
                .unwrap()
                .is_err()
        );
    }
}
