//! Topic fan-out, shared by the dispatch function and the edge nodes.
//!
//! A topic message (or a presence event) goes to every live node that has
//! a subscriber of its topic, as **one item per node**, however many
//! subscribers that node has: the node serialises the frame once and shares
//! it with its local subscribers. [`dispatch_topics`] does that over the
//! ports only ([`TopicRoutes`](edgepush_core::TopicRoutes),
//! [`NodeDirectory`](edgepush_core::NodeDirectory),
//! [`Pusher`](edgepush_core::Pusher)), so dispatch (stored messages from
//! collect) and the edge nodes (client publishes, presence events) use the
//! same code.
//!
//! # Layout
//!
//! - [`retry`]: [`RetryPolicy`], [`is_retryable`] and [`push_with_retries`]:
//!   how a push to a live node is retried (also used by dispatch for user
//!   messages).
//! - [`topics`]: [`plan`] (pure: items, memberships, live nodes -> one batch
//!   per node), [`dispatch_topics`] and its [`TopicDispatchReport`],
//!   [`TopicDispatcher`] (the ports bundled).

pub mod retry;
pub mod topics;

pub use retry::{Pushed, RetryPolicy, is_retryable, push_with_retries};
pub use topics::{TopicDispatchReport, TopicDispatcher, TopicNodeBatch, dispatch_topics, plan};
