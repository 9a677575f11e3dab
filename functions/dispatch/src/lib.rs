//! The dispatch function: routes stored messages to the edge nodes that hold
//! their recipients' connections.
//!
//! Dispatch is stateless. For a batch of stored messages it asks the route
//! store where every recipient is connected (one round trip), asks the node
//! directory which of those nodes are alive (one round trip), groups the
//! deliveries by node and sends each node one push batch, all nodes at once.
//! Connections a node reports as gone have their routes removed.
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
//! - [`config`]: the typed configuration of the binary, read once at start.
//! - [`consumer`]: `dispatch consume`, the long-running SQS consumer that
//!   runs [`sqs_handler`] outside Lambda (docker compose, ECS, Kubernetes).
//! - [`process`]: the mode argument and the stop signals of a long-running
//!   process (`dispatch consume`, `collect serve`).

pub mod apigw;
pub mod config;
pub mod consumer;
mod dispatcher;
mod handoff;
pub mod lambda;
pub mod process;
pub mod sqs;

pub use apigw::{ConnectionPoster, ManagedEdgePusher, PostToConnectionError, SdkConnectionPoster};
pub use config::{Config, ConfigError, PushConfig};
pub use dispatcher::{
    DispatchReport, Dispatcher, NodeBatch, Plan, RetryPolicy, is_retryable, nodes_of, plan,
    recipients,
};
pub use handoff::DirectHandoff;
pub use lambda::{DispatchEvent, handler};
pub use sqs::{EventSource, sqs_handler};

#[cfg(test)]
mod tests;
