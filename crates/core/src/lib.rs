//! The shared core of edgepush: what every component agrees on.
//!
//! This crate owns the domain types (user ids, sequence numbers, stored
//! messages), the client and push protocols on the wire, and the *ports*:
//! one trait per concern that the functions and the edge node are written
//! against. Real backends live in their own crates (`edgepush-redis`,
//! `edgepush-mongo`, `edgepush-delivery`); the in-memory backends here serve
//! unit tests and dev mode only.
//!
//! # Layout
//!
//! - [`config`]: lookups that typed configurations are parsed through.
//! - [`id`]: validated identifiers ([`UserId`], [`ConnId`], [`NodeId`],
//!   [`MessageId`]) and [`Seq`].
//! - [`message`]: messages before ([`NewMessage`]) and after
//!   ([`StoredMessage`]) MongoDB has them.
//! - [`topic`]: topic names ([`TopicName`]), namespaces and their options,
//!   subscribe patterns, the `resume` list.
//! - [`subscriptions`]: the server-side subscriptions a connection starts
//!   with (token topics, `$broadcast`, `resume`), for both edges.
//! - [`protocol`]: WebSocket frames, the collect API body, the push batch
//!   bodies (user messages and topic messages).
//! - [`managed`]: the frames only clients of the managed edge (API Gateway)
//!   exchange: `resume`, `ping`, `resumed`, `pong`, `close`.
//! - [`ports`]: the traits [`RouteStore`], [`NodeDirectory`], [`MessageStore`],
//!   [`TopicStore`], [`TopicRoutes`], [`PresenceStore`], [`Pusher`],
//!   [`Handoff`], [`TokenVerifier`] and their error types.
//! - [`memory`]: in-memory backends of the store ports, one file each.
//! - [`presence`]: presence reads over a [`PresenceStore`] and the node
//!   directory (dead nodes' entries left out).
//! - [`publish`]: the collect API's topic publish bodies.

pub mod bearer;
pub mod config;
pub mod id;
pub mod managed;
pub mod memory;
pub mod message;
pub mod ports;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod submit;
pub mod subscriptions;
pub mod topic;
pub mod upgrade;

pub use id::{ConnId, IdError, MessageId, NodeId, UserId};
pub use message::{NewMessage, NewTopicMessage, Seq, StoredMessage, TopicMessage};
pub use ports::{
    AuthError, Handoff, HandoffError, Identity, MessageStore, NodeDirectory, PresenceStore,
    PushError, PushReport, Pusher, RouteError, RouteStore, StoreError, StreamPosition,
    TokenVerifier, TopicRoutes, TopicStore,
};
pub use topic::{Namespaces, TopicName};
