//! The dispatch function: routes stored messages to the edge nodes that hold
//! their recipients' connections.
//!
//! Dispatch is stateless. For a batch of stored messages it asks the route
//! store where every recipient is connected (one round trip), asks the node
//! directory which of those nodes are alive (one round trip), groups the
//! deliveries by node and sends each node one push batch, all nodes at once.
//! Connections a node reports as gone have their routes removed.
//!
//! Topic messages go the same way with one item per node per message,
//! whatever the number of subscribers there ([`Dispatcher::dispatch_topics`],
//! built on `edgepush-fanout`).
//!
//! Nothing here can lose a message: every message handed to dispatch is
//! already in MongoDB, so a connection that misses a push (dead node, failed
//! push, no route) catches up when it resumes with `after=<seq>`.
//!
//! # Layout
//!
//! - [`Dispatcher`]: the routing and fan-out logic, over the core ports only.
//! - [`DirectHandoff`]: the [`Handoff`](edgepush_core::Handoff) that calls a
//!   [`Dispatcher`] in-process (dev mode, and collect without a queue).
//! - [`lambda`]: the Lambda event and handler.
//! - [`sqs`]: the handler of SQS batches (partial batch failures), and
//!   [`EventSource`], which of the two handlers `main.rs` serves.
//! - [`apigw`]: [`ManagedEdgePusher`], which posts batches for API Gateway
//!   connections one connection at a time; `apigw_sdk`: the SDK poster it
//!   uses in production.
//! - [`config`]: the typed configuration, read once at start.
//! - [`start`]: [`connect`], the dispatcher of a deployment, built the same
//!   way by the dispatch binary and by collect's in-process hand-off.
//! - [`consumer`]: `dispatch consume`, the long-running SQS consumer that
//!   runs [`sqs_handler`] outside Lambda (docker compose, ECS, Kubernetes).
//!
//! Feature `aws` (default): the SDK poster, the SQS handler, the consumer
//! and [`connect`]. Without it (dev mode) no AWS SDK is compiled.

pub mod apigw;
#[cfg(feature = "aws")]
mod apigw_sdk;
pub mod config;
#[cfg(feature = "aws")]
pub mod consumer;
mod dispatcher;
mod handoff;
pub mod lambda;
#[cfg(feature = "aws")]
pub mod sqs;
#[cfg(feature = "aws")]
pub mod start;

pub use apigw::{
    ConnectionPoster, ManagedEdgePusher, PostToConnectionError, TopicSubscribers,
    VIRTUAL_NODE_PREFIX, virtual_node_id, virtual_node_of_endpoint,
};
#[cfg(feature = "aws")]
pub use apigw_sdk::SdkConnectionPoster;
pub use config::{Config, ConfigError, PushConfig};
pub use dispatcher::{
    DispatchReport, Dispatcher, NodeBatch, Plan, RetryPolicy, TopicDispatchReport, is_retryable,
    nodes_of, plan, recipients,
};
pub use handoff::DirectHandoff;
pub use lambda::{DispatchEvent, handler};
#[cfg(feature = "aws")]
pub use sqs::{EventSource, sqs_handler};
#[cfg(feature = "aws")]
pub use start::{ConnectError, connect};

#[cfg(test)]
mod tests;
