//! The errors a client reports: a config it cannot use, or a token the
//! nodes refuse.

/// Why a client cannot start, or why it stopped for good.
///
/// Transient trouble (a node down, a refused connection, a 503, a drain, a
/// malformed frame) is never an error: the client reconnects and reports it
/// as [`Event::Disconnected`](crate::Event::Disconnected) and in its
/// [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The config lists no node to connect to.
    #[error("no edge node configured")]
    NoNodes,
    /// A node endpoint is not a usable `ws://` URL.
    #[error("bad node url {url:?}: {reason}")]
    BadUrl {
        /// The endpoint as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`Client::connect`](crate::Client::connect) was called outside a
    /// tokio runtime, so there is nowhere to run the client's task.
    #[error("Client::connect must be called from inside a tokio runtime")]
    NoRuntime,
    /// A topic name (or a publish's data) a node would refuse.
    #[error("bad topic {topic:?}: {reason}")]
    BadTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// The client has stopped; nothing can be asked of it any more.
    #[error("the client has stopped")]
    Stopped,
    /// A node refused the (static) token: HTTP 401 at the upgrade, close
    /// code 4001, or a token that cannot be sent in a header at all.
    #[error("token refused by {node}: {detail}")]
    Unauthorized {
        /// The endpoint that refused it.
        node: String,
        /// The node's explanation, if it gave one.
        detail: String,
    },
}
