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
//!   [`MessageId`]).
//! - [`message`]: messages before ([`NewMessage`]) and after
//!   ([`StoredMessage`]) MongoDB has them.
//! - [`protocol`]: WebSocket frames, the collect API body, the push batch body.
//! - [`managed`]: the frames only clients of the managed edge (API Gateway)
//!   exchange: `resume`, `ping`, `resumed`, `pong`, `close`.
//! - [`ports`]: the traits [`RouteStore`], [`NodeDirectory`], [`MessageStore`],
//!   [`Pusher`], [`Handoff`], [`TokenVerifier`] and their error types.
//! - [`memory`]: in-memory backends of the store ports.

pub mod bearer;
pub mod config;
pub mod id;
pub mod managed;
pub mod memory;
pub mod message;
pub mod ports;
pub mod protocol;
pub mod submit;
pub mod upgrade;

pub use id::{ConnId, IdError, MessageId, NodeId, UserId};
pub use message::{NewMessage, Seq, StoredMessage};
pub use ports::{
    AuthError, Handoff, HandoffError, Identity, MessageStore, NodeDirectory, PushError, PushReport,
    Pusher, RouteError, RouteStore, StoreError, StreamPosition, TokenVerifier,
};
