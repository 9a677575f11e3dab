//! Managed edge: the Lambda function behind an API Gateway WebSocket API's
//! `$connect`, `$disconnect` and `$default` routes, and its sweep.
//!
//! API Gateway can hold the clients' WebSockets instead of edge nodes. This
//! function gives its clients the edge nodes' guarantee (every accepted
//! message, once, in seq order, after any time offline) and makes its
//! connections ordinary routes: `$connect` admits a connection and records
//! what its client asked for; the client's first `resume` frame on
//! `$default` posts `hello`, records `user -> connection id -> virtual
//! node` in the route store and replays what the client missed from
//! MongoDB, through the management API; later `resume`s fill gaps. The
//! virtual node `apigw-<apiId>-<stage>` has a node directory entry holding
//! the API's management endpoint
//! (`https://<apiId>.execute-api.<region>.amazonaws.com/<stage>`, refreshed
//! with a long TTL on every `$connect`). Dispatch then finds API Gateway
//! and edge-node routes of a user in one lookup, and posts to the former
//! with `PostToConnection` (`edgepush_dispatch::ManagedEdgePusher`). The
//! exact sequence, and what a client must do, is in `docs/protocol.md`
//! ("Managed edge").
//!
//! # Authentication
//!
//! Production attaches the auth function as the API's REQUEST authorizer
//! on `$connect`; it must return the user id in its context under the key
//! [`AUTHORIZER_USER_ID_KEY`] (`userId`), and the token's expiry under
//! [`AUTHORIZER_EXP_KEY`] (`exp`), which API Gateway then passes in
//! `requestContext.authorizer` of every event of the connection. Without an
//! authorizer, `$connect` verifies the client's token itself
//! (`Authorization: Bearer <jwt>` or `?token=<jwt>`) when `EDGEPUSH_JWT_*`
//! is configured. Either way the connection's [record](records) holds its
//! user and expiry for the later events.
//!
//! # Layout
//!
//! - [`handler`](mod@handler): [`Connections`], `$connect` and `$disconnect`.
//! - [`session`]: `$default`, the client frames (`resume`, `ping`, `ack`).
//! - [`subscriptions`]: the topic frames (`subscribe`, `unsubscribe`).
//! - [`sweep`]: closes connections whose token expired, forgets stale ones.
//! - [`records`]: what is kept per connection between its events, the
//!   per-user cap and the sweep index ([`RedisConnectionRecords`]).
//! - [`lambda`]: the events the function gets and the Lambda
//!   [`handler()`](fn@handler).
//! - [`config`]: the binary's typed configuration.
//! - `start`: [`connect`], the handlers' dependencies for a configuration.

pub mod config;
pub mod handler;
pub mod lambda;
pub mod records;
pub mod session;
mod start;
pub mod subscriptions;
pub mod sweep;

pub use config::{Config, ConfigError};
pub use handler::{
    AUTHORIZER_EXP_KEY, AUTHORIZER_SUBSCRIBE_KEY, AUTHORIZER_USER_ID_KEY, Connections,
    DEFAULT_NODE_TTL, Settings, VIRTUAL_NODE_PREFIX, management_endpoint, virtual_node_id,
};
pub use lambda::{ConnectionsAnswer, ConnectionsEvent, handler};
pub use records::{
    Admission, ConnectionRecord, ConnectionRecords, DEFAULT_RECORD_TTL, RedisConnectionRecords,
};
pub use start::{ConnectError, connect};
pub use sweep::{SweepError, SweepReport};
