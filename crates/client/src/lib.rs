//! A WebSocket client for edgepush that does the protocol's bookkeeping, so
//! an application sees every message exactly once, in order.
//!
//! It connects to one of several edge nodes (`GET /ws` with
//! `Authorization: Bearer <token>`), reads the node's `hello` and `msg`
//! frames, and:
//!
//! - **resumes**: every reconnect asks for `after=<last seq seen>`, so the
//!   node replays what was missed; the first connect uses
//!   [`ClientConfig::after`], or lets the node resume from the last ack;
//! - **drops duplicates**: a `msg` whose seq is not above the last one seen
//!   is counted and dropped (delivery is at least once; replays overlap);
//! - **detects gaps**: a seq that skips ahead (which the server promises
//!   never happens) makes it reconnect with `after=<last>` to get a replay;
//! - **acks** what the application has taken from the stream, per
//!   [`AckPolicy`];
//! - **fails over**: round-robin over the nodes from a random start, moving
//!   on after a failure or a drain (close 1012), with exponential backoff and
//!   full jitter ([`Backoff`]) reset by a connection that worked;
//! - **stops** with [`Event::Fatal`] when a static token is refused (HTTP
//!   401 or close 4001); a [`TokenSource::Fresh`] token is fetched anew and
//!   retried instead;
//! - **keeps topics**: per topic the last seq seen, duplicates dropped and
//!   gaps detected like the user's stream; on every reconnect the server's
//!   subscriptions (the token's topics, `$broadcast`) resume with
//!   `?resume=topic~seq,...` and the client's own ones are sent again as
//!   `subscribe` frames with `after` ([`ClientHandle::subscribe`],
//!   [`ClientConfig::topics`], [`Event::Topic`]);
//! - **speaks the managed edge** too ([`ClientConfig::managed`]): behind an
//!   API Gateway WebSocket API it sends `resume` first, holds seqs that come
//!   early (live posts may overtake each other there) and asks for a gap
//!   that stays open with `resume` after its last contiguous seq.
//!
//! Malformed frames never panic: they are counted in [`Stats::malformed`]
//! and the client reconnects.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use edgepush_client::{AckPolicy, Client, ClientConfig, Event, TokenSource};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = ClientConfig {
//!         // Resume after what this app already stored, if anything.
//!         after: Some(41),
//!         ack_every: AckPolicy::Batched {
//!             max_messages: 32,
//!             max_delay: Duration::from_millis(500),
//!         },
//!         ..ClientConfig::new(
//!             ["ws://10.0.0.1:8080/ws", "ws://10.0.0.2:8080/ws"],
//!             // Asked again for every attempt, so expired tokens are replaced.
//!             TokenSource::from_fn(|| std::env::var("EDGEPUSH_TOKEN").unwrap_or_default()),
//!         )
//!     };
//!     let mut client = Client::connect(config)?;
//!     while let Some(event) = client.recv().await {
//!         match event {
//!             Event::Message(msg) => println!("#{} {}: {}", msg.seq, msg.id, msg.data),
//!             Event::Topic(event) => println!("topic: {event:?}"),
//!             Event::Connected { conn_id, node } => println!("connected to {node} as {conn_id}"),
//!             Event::Disconnected { reason } => println!("disconnected: {reason}"),
//!             Event::Fatal(err) => return Err(err.into()),
//!         }
//!         if client.stats().messages >= 100 {
//!             // Acks what was taken, closes with 1000; the stream then ends.
//!             client.close();
//!         }
//!     }
//!     println!("stats: {:?}, last seq {:?}", client.stats(), client.last_seq());
//!     Ok(())
//! }
//! ```
//!
//! [`ClientHandle`] is also a [`futures_util::Stream`] of [`Event`]s, for
//! `StreamExt` combinators.
//!
//! # Layout
//!
//! - [`config`] holds [`ClientConfig`], [`TokenSource`], [`AckPolicy`],
//!   [`Backoff`].
//! - [`event`] holds [`Event`], [`TopicEvent`], [`DisconnectReason`].
//! - [`topics`] holds [`TopicSubscription`] and the per-topic positions.
//! - [`managed`] holds [`ManagedEdge`] and the bookkeeping of the managed
//!   edge (API Gateway WebSocket APIs): resume first, hold early seqs, ask
//!   for gaps.
//! - [`error`] holds [`ClientError`].
//! - `client` (private): [`Client`], [`ClientHandle`], [`ClientControl`],
//!   the application's side.
//! - `task` (private): the reconnect loop; its module doc has the table of
//!   which ending moves to the next node.
//! - `shared` (private): what the task and the handle share, and [`Stats`].
//! - `node` (private): one node's address and its upgrade request.

mod client;
pub mod config;
pub mod error;
pub mod event;
pub mod managed;
mod node;
mod shared;
mod task;
pub mod topics;

pub use client::{Client, ClientControl, ClientHandle};
pub use config::{AckPolicy, Backoff, ClientConfig, Jitter, TokenSource};
pub use edgepush_core::protocol::MsgFrame;
pub use edgepush_core::{Seq, TopicName};
pub use error::ClientError;
pub use event::{DisconnectReason, Event, TopicEvent};
pub use managed::ManagedEdge;
pub use shared::Stats;
pub use topics::TopicSubscription;
