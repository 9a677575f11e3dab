//! End-to-end tests of edgepush on real servers: the harness.
//!
//! The tests in `tests/tests/` drive the system the way production does:
//! `edge-node serve` processes holding real WebSocket clients, an in-process
//! collect API over the real MongoDB message store, dispatch over the real
//! Redis route store and the signed HTTP push API. This crate holds what
//! they share, so that later fault tests (node crashes, store outages,
//! drains) reuse the same pieces.
//!
//! # Environment
//!
//! The shared servers, unique names, private servers and their policy
//! (a missing server fails the test) are [`edgepush_testkit`]'s, re-exported
//! here.
//!
//! | variable | used for |
//! |---|---|
//! | `EDGEPUSH_TEST_REDIS_URL` | the shared Redis (required; tests fail clearly when unset) |
//! | `EDGEPUSH_TEST_MONGODB_URI` | the shared MongoDB / FerretDB (required) |
//! | `EDGEPUSH_REDIS_SERVER_BIN` | `redis-server` for private instances (default `redis-server`) |
//! | `EDGEPUSH_FERRETDB_BIN` | FerretDB for private MongoDB instances (else `mongod` on `PATH`) |
//! | `EDGEPUSH_EDGE_NODE_BIN` | a prebuilt `edge-node` binary (else built once with cargo) |
//! | `EDGEPUSH_TEST_NODE_LOG` | `RUST_LOG` of spawned nodes (default `info`) |
//! | `DOCKER_HOST`, `EDGEPUSH_DOCKER_CLI`, `EDGEPUSH_DOCKER_COMPOSE` | the Docker daemon and clients of the image tests |
//! | `EDGEPUSH_DOCKER_RUST_IMAGE`, `EDGEPUSH_DOCKER_RUNTIME_IMAGE` | local stand-ins of the Dockerfile's base images (required by the image tests) |
//! | `EDGEPUSH_TEST_AWS_ENDPOINT` | the AWS emulator (the compose test's SQS queue) |
//!
//! # Isolation
//!
//! Tests share the Redis and MongoDB servers and run in parallel, so every
//! test names its own users, nodes and MongoDB database with [`unique`] and
//! [`TestEnv::shared`] (or [`TestEnv::run`], which also drops the database). Nodes use the default Redis key prefix (`ep`, which
//! `edge-node serve` does not let one change); unique user and node ids keep
//! their keys apart.
//!
//! # Layout
//!
//! - [`env`](mod@env): [`TestEnv`], the servers and database of one test.
//! - [`tokens`]: client tokens, good and bad.
//! - [`node`]: [`NodeProcess`], one `edge-node serve` process.
//! - [`collect`]: [`Collect`], the collect API in process, and
//!   [`ReportingHandoff`].
//! - [`client`]: [`WsClient`], a real WebSocket client.
//! - [`docker`]: the image of `docker/Dockerfile`, containers, the compose
//!   stack of `docker/`.
//! - [`net`]: network faults: test hosts in network namespaces, relays, a
//!   proxy that fails on demand.
//! - [`inspect`]: reading Redis and MongoDB behind the system's back.
//! - [`fault`]: the fault tests' devices, ledger, producer and verdict.
//! - [`topics`]: the same for topics: topic devices, publisher, verdict.
//! - [`wait`]: polling that follows progress ([`until`]) or has a deadline
//!   ([`eventually`]).

pub mod client;
pub mod collect;
pub mod docker;
pub mod env;
pub mod fault;
pub mod inspect;
pub mod net;
pub mod node;
pub mod tokens;
pub mod topics;
pub mod wait;

pub use client::{Refused, TokenIn, WsClient, raw_probe, upgrade_probe};
pub use collect::{API_KEY, Collect, CollectOptions, ReportingHandoff};
pub use edgepush_testkit::{
    MongoServer, RedisServer, drop_database, mongodb_uri, redis_url, rss_kib, unique, unique_db,
};
pub use env::TestEnv;
pub use inspect::{RedisProbe, message_store};
pub use node::{NodeOptions, NodeProcess, edge_node_bin};
pub use tokens::{JWT_SECRET, mint, mint_with, push_credential, subscribe_token};
pub use wait::{Check, eventually, stall, until};
