//! Managed edge: the Lambda function behind an API Gateway WebSocket API's
//! `$connect`, `$disconnect` and `$default` routes.
//!
//! API Gateway can hold the clients' WebSockets instead of edge nodes. This
//! function makes its connections ordinary routes: `$connect` records
//! `user -> connection id -> virtual node` in the route store, where the
//! virtual node `apigw-<apiId>-<stage>` has a node directory entry holding
//! the API's management endpoint
//! (`https://<apiId>.execute-api.<region>.amazonaws.com/<stage>`, refreshed
//! with a long TTL on every `$connect`). Dispatch then finds API Gateway
//! and edge-node routes of a user in one lookup, and posts to the former
//! with `PostToConnection` (`edgepush_dispatch::ManagedEdgePusher`).
//!
//! # Authentication
//!
//! Production attaches the auth function as the API's REQUEST authorizer
//! on `$connect`; it must return the user id in its context under the key
//! [`AUTHORIZER_USER_ID_KEY`] (`userId`), which API Gateway then passes in
//! `requestContext.authorizer.userId` of every event of the connection.
//! Without an authorizer, `$connect` verifies the client's token itself
//! (`Authorization: Bearer <jwt>` or `?token=<jwt>`) when `EDGEPUSH_JWT_*`
//! is configured, and remembers the connection's owner in Redis
//! ([`owners`]) for the later events.
//!
//! # Layout
//!
//! - [`handler`](mod@handler): [`Connections`], the three handlers over the
//!   core ports, and the Lambda [`handler()`](fn@handler).
//! - [`owners`]: connection -> user for connections admitted without an
//!   authorizer ([`RedisConnectionOwners`]).
//! - [`config`]: the binary's typed configuration.
//! - `start`: [`connect`], the handlers' dependencies for a configuration.

pub mod config;
pub mod handler;
pub mod owners;
mod start;

pub use config::{Config, ConfigError};
pub use handler::{
    AUTHORIZER_USER_ID_KEY, Connections, DEFAULT_NODE_TTL, Settings, VIRTUAL_NODE_PREFIX, handler,
    management_endpoint, virtual_node_id,
};
pub use owners::{ConnectionOwners, DEFAULT_OWNER_TTL, RedisConnectionOwners};
pub use start::{ConnectError, connect};
