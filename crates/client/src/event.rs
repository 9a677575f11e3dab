//! What the client's stream yields.

use std::fmt;

use edgepush_core::protocol::MsgFrame;
use edgepush_core::{ConnId, MessageId, Seq, TopicName, UserId};

use crate::error::ClientError;

/// One item of the client's event stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new message of the user's own stream, in seq order, each seq at
    /// most once.
    Message(MsgFrame),
    /// Something about a topic: a message (per topic in seq order, each seq
    /// at most once), a subscription in place or refused, a presence event.
    Topic(TopicEvent),
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

/// What happened to a topic.
#[derive(Debug, Clone)]
pub enum TopicEvent {
    /// A subscription is in place: the server's (token topics, broadcast)
    /// or one the client asked for. `seq` is the topic's latest seq when it
    /// started.
    Subscribed {
        /// The topic.
        topic: TopicName,
        /// Its latest seq then.
        seq: Seq,
    },
    /// A message of a topic (`msg.topic` is set).
    Message(MsgFrame),
    /// A subscription ended at the client's request.
    Unsubscribed {
        /// The topic.
        topic: TopicName,
    },
    /// A request was refused. A refused subscription is dropped, except
    /// one refused as `unavailable`, which the client sends again.
    Refused {
        /// `subscribe`, `unsubscribe`, `publish` or `connect`.
        op: String,
        /// The topic as named.
        topic: String,
        /// The node's code (`forbidden`, `bad_token`, `unknown_namespace`,
        /// `bad_topic`, `too_many_subscriptions`, `unavailable`, ...).
        code: String,
        /// The node's explanation.
        message: String,
    },
    /// A publish of this client is stored.
    Published {
        /// The topic.
        topic: TopicName,
        /// Its seq there.
        seq: Seq,
        /// The message id.
        id: MessageId,
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
    /// A message skipped seqs (of the user's stream, or of a topic); the
    /// client reconnects with `after = last` so the node replays what is
    /// missing.
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
