//! What the client's stream yields.

use std::fmt;

use edgepush_core::protocol::MsgFrame;
use edgepush_core::{ConnId, Seq};

use crate::error::ClientError;

/// One item of the client's event stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new message, in seq order, each seq at most once.
    Message(MsgFrame),
    /// A connection is up: the node answered with its `hello` frame.
    Connected {
        /// The node's id for this connection (its push API connection id).
        conn_id: ConnId,
        /// The endpoint, as configured.
        node: String,
    },
    /// A connection that was up has ended; the client reconnects unless a
    /// [`Event::Fatal`] follows.
    Disconnected {
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// The client has stopped for good; the stream ends after this.
    Fatal(ClientError),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The node sent a close frame (1005 when it carried no code): 1012
    /// draining, 1011 store unavailable, 4008 too slow, 4001 bad token, ...
    Closed {
        /// The close code.
        code: u16,
        /// The node's reason text.
        reason: String,
    },
    /// The socket broke or ended without a close frame.
    Lost {
        /// What the transport said.
        detail: String,
    },
    /// The node sent something the protocol does not allow; the client
    /// closed the connection (code 1008).
    Malformed {
        /// What was wrong.
        detail: String,
    },
    /// A message skipped seqs; the client reconnects with `after = last` so
    /// the node replays what is missing.
    Gap {
        /// The last seq the client had.
        last: Seq,
        /// The seq that arrived.
        got: Seq,
    },
    /// Nothing (not even a ping) came from the node for the idle timeout.
    IdleTimeout,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { code, reason } => write!(f, "closed by node ({code} {reason})"),
            Self::Lost { detail } => write!(f, "connection lost: {detail}"),
            Self::Malformed { detail } => write!(f, "malformed frame: {detail}"),
            Self::Gap { last, got } => write!(f, "gap: had seq {last}, got {got}"),
            Self::IdleTimeout => f.write_str("nothing heard from the node for the idle timeout"),
        }
    }
}
