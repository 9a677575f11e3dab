//! How a client connects: the nodes, the token, where to resume, when to ack
//! and how long to wait between attempts.
//!
//! Every field of [`ClientConfig`] is public so a caller can start from
//! [`ClientConfig::new`] and override what it needs with struct update
//! syntax; [`Client::connect`](crate::Client::connect) validates the whole
//! value once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use edgepush_core::{Seq, TopicName};

use crate::managed::ManagedEdge;
use crate::topics::TopicSubscription;

/// Where the bearer token of each connection attempt comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// One token for the client's whole life. When a node refuses it (HTTP
    /// 401 at the upgrade, or close code 4001) the client stops with
    /// [`Event::Fatal`](crate::Event::Fatal): retrying the same token cannot
    /// succeed.
    Static(String),
    /// Called once per connection attempt, so an expired token is replaced
    /// by a fresh one. A refused token is then retried (with backoff) instead
    /// of being fatal. The function runs on the client's task: it must not
    /// block for long (read a cached token that another task refreshes).
    Fresh(Arc<dyn Fn() -> String + Send + Sync>),
}

impl TokenSource {
    /// A fixed token.
    pub fn fixed(token: impl Into<String>) -> Self {
        Self::Static(token.into())
    }

    /// A token minted (or read from a cache) for every attempt.
    pub fn from_fn(f: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self::Fresh(Arc::new(f))
    }

    /// The token for the next attempt.
    pub(crate) fn token(&self) -> String {
        match self {
            Self::Static(token) => token.clone(),
            Self::Fresh(f) => f(),
        }
    }

    /// Whether a refused token may be replaced by asking again.
    pub(crate) fn is_renewable(&self) -> bool {
        matches!(self, Self::Fresh(_))
    }
}

impl fmt::Debug for TokenSource {
    // Never print a token: configs end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(_) => f.write_str("TokenSource::Static(<redacted>)"),
            Self::Fresh(_) => f.write_str("TokenSource::Fresh(<fn>)"),
        }
    }
}

/// When the client tells the server what it has (`{"type":"ack","seq":N}`).
///
/// An ack covers the messages the application has *taken from the event
/// stream*, not merely the ones the client read from the socket, so a
/// process that dies with messages still queued does not lose them: the
/// server replays from the acked seq when a new process connects without
/// `after`. Within one process the client always resumes with
/// `after = last seq seen`, so acks matter only across restarts and to the
/// server's retention; batching them saves a store write per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// Ack each message as soon as the application has taken it.
    EachMessage,
    /// Ack once `max_messages` messages are unacked, or `max_delay` after
    /// the first unacked one was taken, whichever comes first.
    Batched {
        /// Most messages taken before an ack is sent (0 counts as 1).
        max_messages: u32,
        /// Longest time an unacked message waits for its ack.
        max_delay: Duration,
    },
}

impl Default for AckPolicy {
    /// Batched: up to 64 messages or 1 second.
    fn default() -> Self {
        Self::Batched {
            max_messages: 64,
            max_delay: Duration::from_secs(1),
        }
    }
}

/// How the delay before a reconnect is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// A uniformly random delay between zero and the exponential bound
    /// ("full jitter"), so that thousands of clients cut off by one node
    /// crash do not all come back at the same instant.
    #[default]
    Full,
    /// Exactly the exponential bound; predictable, for tests and tools.
    None,
}

/// Exponential backoff between connection attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The bound of the first delay.
    pub initial: Duration,
    /// The largest bound, however many attempts failed.
    pub max: Duration,
    /// The factor applied to the bound after each failed attempt (values
    /// below 1, and NaN, count as 1).
    pub multiplier: f64,
    /// How the delay is drawn below the bound.
    pub jitter: Jitter,
    /// A connection that stayed up this long counts as healthy even if it
    /// delivered nothing, and resets the backoff; a connection that
    /// delivered a message resets it at once. Without this, a server that
    /// accepts and immediately closes would be hammered.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, full jitter, reset after 10 s up.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The exponential bound after `failures` consecutive failed attempts:
    /// `min(max, initial * multiplier^failures)`.
    pub fn bound(&self, failures: u32) -> Duration {
        let multiplier = if self.multiplier.is_nan() || self.multiplier < 1.0 {
            1.0
        } else {
            self.multiplier
        };
        let exponent = i32::try_from(failures.min(1024)).unwrap_or(1024);
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        let max = self.max.as_secs_f64();
        let bounded = if secs.is_finite() { secs.min(max) } else { max };
        Duration::try_from_secs_f64(bounded).unwrap_or(self.max)
    }

    /// The delay to wait before the next attempt after `failures`
    /// consecutive failed attempts: the [`bound`](Self::bound), jittered.
    pub fn delay(&self, failures: u32) -> Duration {
        let bound = self.bound(failures);
        match self.jitter {
            Jitter::None => bound,
            Jitter::Full => {
                let secs = rand::random_range(0.0..=bound.as_secs_f64());
                Duration::try_from_secs_f64(secs).unwrap_or(bound)
            }
        }
    }
}

/// Everything a [`Client`](crate::Client) needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Edge node endpoints, `ws://host:port/ws` (a query string is kept).
    /// The client starts at a random one so clients spread over the nodes,
    /// and moves round-robin to the next after a failure or a drain.
    pub nodes: Vec<String>,
    /// The bearer token, sent as `Authorization: Bearer <token>`.
    pub token: TokenSource,
    /// The last seq the application already has (from its own storage), for
    /// the first connection. `None` lets the server resume after the seq
    /// this user last acked. Later connections always resume after the
    /// last seq the client has seen.
    pub after: Option<Seq>,
    /// When acks are sent.
    pub ack_every: AckPolicy,
    /// The delay between attempts.
    pub backoff: Backoff,
    /// Longest time from the TCP connect to the server's `hello` frame;
    /// an attempt that takes longer fails and moves to the next node.
    pub connect_timeout: Duration,
    /// Reconnect when nothing at all (not even a ping) came from the node
    /// for this long: the socket is probably half-open. Edge nodes ping
    /// every 20-25 s by default. `None` trusts TCP alone.
    pub idle_timeout: Option<Duration>,
    /// The node of the first attempt, an index into [`nodes`](Self::nodes);
    /// `None` picks one at random, which spreads a fleet of clients over the
    /// nodes.
    pub first_node: Option<usize>,
    /// Events buffered between the client's task and the application. When
    /// the application falls this far behind the client stops reading the
    /// socket, and a node eventually closes it with 4008 (too slow); the
    /// client then resumes where it was.
    pub event_buffer: usize,
    /// Topics the client subscribes to itself, on every connection (more
    /// can be added with [`ClientHandle::subscribe`](crate::ClientHandle::subscribe)).
    pub topics: Vec<TopicSubscription>,
    /// Where the server's subscriptions (the token's topics, and
    /// `$broadcast`) resume on the first connection: the last seq the
    /// application has of each (from its own storage). Later connections
    /// resume after the last seq the client has seen.
    pub resume: Vec<(TopicName, Seq)>,
    /// `Some` when the endpoints are an API Gateway WebSocket API (the
    /// managed edge, `functions/connections`) instead of edge nodes: the
    /// client then speaks first (`resume`), holds seqs that come early and
    /// asks for gaps itself, pings, and reads the server's `close` frames
    /// (see [`crate::managed`] and `docs/protocol.md`, "Managed edge").
    /// Client subscriptions work there (a topic gap reconnects, as on edge
    /// nodes); the token's topics and `$broadcast` are not served there yet.
    pub managed: Option<ManagedEdge>,
}

impl ClientConfig {
    /// A config for `nodes` and `token` with the defaults: no `after`,
    /// [`AckPolicy::default`], [`Backoff::default`], 10 s connect timeout,
    /// 60 s idle timeout, a random first node, 256 buffered events, edge
    /// nodes (not the managed edge).
    pub fn new<I, S>(nodes: I, token: TokenSource) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            token,
            after: None,
            ack_every: AckPolicy::default(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
            first_node: None,
            event_buffer: 256,
            topics: Vec::new(),
            resume: Vec::new(),
            managed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_grows_exponentially_up_to_max() {
        let b = Backoff::default();
        assert_eq!(b.bound(0), Duration::from_millis(100));
        assert_eq!(b.bound(1), Duration::from_millis(200));
        assert_eq!(b.bound(3), Duration::from_millis(800));
        assert_eq!(b.bound(20), Duration::from_secs(10));
        assert_eq!(b.bound(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn odd_multipliers_do_not_panic() {
        for multiplier in [f64::NAN, f64::INFINITY, -3.0, 0.0, 1e300] {
            let b = Backoff {
                multiplier,
                ..Backoff::default()
            };
            assert!(b.bound(50) <= b.max, "multiplier {multiplier}");
            assert!(b.delay(50) <= b.max, "multiplier {multiplier}");
        }
    }

    #[test]
    fn full_jitter_stays_under_the_bound() {
        let b = Backoff::default();
        for failures in 0..10 {
            assert!(b.delay(failures) <= b.bound(failures));
        }
        let fixed = Backoff {
            jitter: Jitter::None,
            ..b
        };
        assert_eq!(fixed.delay(2), Duration::from_millis(400));
    }

    #[test]
    fn tokens_are_not_printed() {
        let text = format!("{:?}", TokenSource::fixed("secret-token"));
        assert!(!text.contains("secret"), "{text}");
    }
}
