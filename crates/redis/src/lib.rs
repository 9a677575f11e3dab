//! Redis backends of the route store, node directory, topic routes and
//! presence ports.
//!
//! [`RedisRouteStore`] implements [`edgepush_core::RouteStore`] (where a
//! user's connections are), [`edgepush_core::NodeDirectory`] (which edge
//! nodes are alive), [`edgepush_core::TopicRoutes`] (which nodes have
//! subscribers of a topic, in [`topic_routes`]) and
//! [`edgepush_core::PresenceStore`] (who is online and subscribed, in
//! [`presence`]), and keeps the topic subscriptions of managed-edge
//! connections (in [`managed`]), on one shared, self-healing connection.
//!
//! # Key layout
//!
//! `<prefix>` is [`RedisConfig::key_prefix`] (default `ep`). Every key holds
//! exactly one hash tag, so the layout works unchanged on Redis Cluster:
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `<prefix>:r:{<user id>}` | HASH | field = connection id, value = node id holding it | [`RedisConfig::route_ttl`] (default 24 h), refreshed on each add |
//! | `<prefix>:n:{<node id>}` | STRING | the node's push URL | the heartbeat's TTL (seconds) |
//! | `<prefix>:t:{<topic>}` | ZSET | member node id, score the ms its membership expires | route TTL, refreshed by the nodes |
//! | `<prefix>:pu:{<user id>}` | HASH | connection id -> `"<node> <connected at ms>"` | route TTL |
//! | `<prefix>:pc:{<topic>}` | HASH | node id -> `"<subscriptions> <users>"` | route TTL |
//! | `<prefix>:pm:{<topic>}` | HASH | `"<user>/<node>"` -> subscriptions | route TTL |
//! | `<prefix>:ms:{<conn>}`, `<prefix>:mt:{<topic>}:<node>` | SET | managed-edge subscriptions: a connection's topics, a topic's connections on a virtual node | route TTL |
//!
//! Example: `ep:r:{alice}` = `{ "c-7f3a": "edge-1", "c-91bc": "edge-2" }`,
//! `ep:n:{edge-1}` = `"http://10.0.3.7:8081"`.
//!
//! Routes are hints: a route whose node key has expired belongs to a dead
//! node and readers ignore it, so a node death costs one key expiry, never a
//! sweep over every user key. The long route TTL only collects garbage.
//!
//! # Commands
//!
//! - `add_route(s)`: pipelined `HSET` (all of a user's fields at once) +
//!   `PEXPIRE` per user, at most [`ROUTE_CHUNK`] routes per pipeline.
//! - `remove_routes`: pipelined `HDEL`, chunked the same way.
//! - `routes_of`: one pipeline of `HGETALL`s (one round trip; on a cluster
//!   one per slot group, concurrently).
//! - `heartbeat`: `SET key url XX PX ttl`; on a nil answer (the entry was
//!   lost) `SET key url PX ttl` and report [`Heartbeat::Recreated`] so the
//!   node re-registers its routes.
//! - `live_nodes`: one pipeline of `GET`s (not `MGET`: keys of different
//!   nodes sit in different cluster slots). `remove_node`: `DEL`.
//! - `ping`: `PING`.
//!
//! # Redis Cluster
//!
//! With [`RedisConfig::cluster`] set (`EDGEPUSH_REDIS_CLUSTER=1`, see
//! [`RedisConfig::from_lookup`]) the store talks to a Redis Cluster
//! (ElastiCache in cluster mode) through the `redis` crate's cluster client,
//! which follows the slot map and its redirects. That client routes a whole
//! pipeline by its first key and refuses one whose keys span slots, so the
//! pipelines above are split by hash slot ([`keys::slot`]) and the parts are
//! sent concurrently, replies put back in input order: one round trip per
//! slot group. Single commands are routed by their key; `PING` goes to every
//! primary. [`RedisConnection`] is the same single-or-cluster handle, for
//! other users of [`RedisConfig`].
//!
//! # Failure behaviour
//!
//! Every operation is bounded by [`RedisConfig::command_timeout`] and fails
//! with [`RouteError::Unavailable`](edgepush_core::RouteError::Unavailable)
//! while Redis is unreachable; the connection is re-established by the next
//! operations once Redis is back.
//!
//! # Tests
//!
//! `tests/contract.rs` runs the `RouteStore` and `NodeDirectory` contract
//! suites (`edgepush-testkit`) on a real Redis and a real Redis Cluster;
//! `tests/redis_store.rs` and `tests/redis_cluster.rs` cover what is this
//! adapter's own: key layout and TTLs, lost and corrupt keys, slots, outages.
//!
//! [`Heartbeat::Recreated`]: edgepush_core::ports::Heartbeat::Recreated

pub mod config;
pub mod connection;
pub mod keys;
pub mod managed;
pub mod presence;
mod store;
pub mod topic_routes;

pub use config::RedisConfig;
pub use connection::RedisConnection;
pub use store::{ROUTE_CHUNK, RedisRouteStore};
