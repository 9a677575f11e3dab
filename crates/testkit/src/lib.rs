//! Test helpers shared by every edgepush crate, so that each exists once.
//!
//! This crate owns the **contract suites** of the ports (one per port of
//! [`edgepush_core::ports`], run against the in-memory and the real
//! backends) and what every test needs around them: the `EDGEPUSH_TEST_*`
//! lookups and the one policy for a missing server (the test fails), names
//! no other test uses, private servers to break, and cleanup. It is a
//! dev-dependency only; nothing in a release build links it.
//!
//! # Layout
//!
//! - [`contract`]: the suites ([`contract::message_store`],
//!   [`contract::route_store`], [`contract::node_directory`],
//!   [`contract::topic_store`], [`contract::topic_routes`],
//!   [`contract::presence_store`]), how to run one and how to add one for a
//!   new port.
//! - [`ids`]: ids from literals, routes as plain names.
//! - [`env`](mod@env): `EDGEPUSH_TEST_REDIS_URL` / `_MONGODB_URI` / `_AWS_ENDPOINT`,
//!   [`unique`] names, free ports, [`program`]s to run, [`rss_kib`].
//! - [`wait`]: waits that follow progress ([`wait::until`], [`wait::stall`]),
//!   never a budget a slower machine could miss.
//! - [`switched`]: [`SwitchedRoutes`], a route store a test can take
//!   down, counting its calls.
//! - [`servers`]: private [`RedisServer`] and (feature `mongodb`)
//!   [`MongoServer`] instances tests may kill and
//!   restart, [`TempDir`](servers::TempDir).
//! - `cluster` (feature `redis`): a private three-primary `RedisCluster`.
//! - `testdb` (feature `mongodb`): `TestDatabase`, a database of one test's
//!   own, dropped at the end.
//! - `redis_keys` (feature `redis`): `delete_prefix`, removing a test's keys.
//! - `stand_in` (feature `http`): `ManagementApiStandIn`, a real HTTP server
//!   answering like API Gateway's management API and recording requests.
//!
//! # Features
//!
//! `mongodb` and `redis` add the helpers that need those drivers, and `http`
//! the stand-in that needs axum, so a crate whose tests need none of them
//! does not build them.

pub mod contract;
pub mod env;
pub mod ids;
pub mod servers;
pub mod switched;
pub mod wait;

#[cfg(feature = "redis")]
pub mod cluster;
#[cfg(feature = "redis")]
pub mod redis_keys;
#[cfg(feature = "http")]
pub mod stand_in;
#[cfg(feature = "mongodb")]
pub mod testdb;

#[cfg(feature = "redis")]
pub use cluster::RedisCluster;
pub use env::{
    aws_endpoint, free_port, free_ports, mongodb_uri, on_path, program, redis_url, required,
    rss_kib, unique, unique_db, unique_prefix,
};
pub use ids::{conn, node, pairs, route_names, user};
#[cfg(feature = "redis")]
pub use redis_keys::delete_prefix;
#[cfg(feature = "mongodb")]
pub use servers::MongoServer;
pub use servers::RedisServer;
#[cfg(feature = "http")]
pub use stand_in::{ManagementApiStandIn, SeenRequest};
pub use switched::SwitchedRoutes;
#[cfg(feature = "mongodb")]
pub use testdb::{TestDatabase, drop_database};
