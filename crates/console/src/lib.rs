//! The demo console of dev mode: a page at `/console/` on the collect port
//! that connects as a user with the JS client (`clients/js`), shows
//! messages arriving with their seq, sends messages through collect, and
//! shows each edge node's connections and delivery rate live.
//!
//! Dev mode owns the wiring: it merges [`router`] into its collect router
//! and, with `--node-processes`, runs its edge nodes as child processes
//! ([`NodeProcesses`]) so that one can be killed from a terminal while the
//! page moves to the other.
//!
//! Everything here is for dev mode only: the page is handed the dev API key
//! and mints dev tokens on request.
//!
//! # Layout
//!
//! - [`assets`]: the page (HTML, CSS, its script) and the client bundle,
//!   compiled into the binary.
//! - [`api`]: `/console/api/config`, `/console/api/token`, `/console/api/nodes`.
//! - [`metrics`]: reading a node's Prometheus text.
//! - [`processes`]: edge nodes as supervised child processes.

pub mod api;
pub mod assets;
pub mod metrics;
pub mod processes;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use axum::Router;

pub use processes::{NodeProcessConfig, NodeProcesses};

/// One edge node as the console shows it.
#[derive(Debug, Clone)]
pub struct ConsoleNode {
    /// Its id (`dev-1`).
    pub name: String,
    /// The client endpoint, `ws://127.0.0.1:9001/ws`.
    pub ws_url: String,
    /// Its push listener, `http://127.0.0.1:9101`, whose `/metrics` the
    /// console reads.
    pub push_url: String,
    /// The process id when the node runs as its own process (0 while it is
    /// down), so the page can say which process to kill; `None` in process.
    pub pid: Option<Arc<AtomicU32>>,
}

/// What the console serves.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The nodes, in the order the page lists them.
    pub nodes: Vec<ConsoleNode>,
    /// The collect API key the page sends with (dev mode's key).
    pub api_key: String,
    /// The HS256 secret dev tokens are signed with.
    pub jwt_secret: Vec<u8>,
    /// Lifetime of the tokens the page gets.
    pub token_ttl: Duration,
    /// Whether the nodes speak the topic frames (`subscribe`): the page
    /// shows its topic panel only then, and its tokens may subscribe to
    /// any topic (a `subscribe: ["*"]` claim).
    pub topics: bool,
}

/// The console's routes, all under `/console`: merge them into the collect
/// router (`console::router(cfg).merge(collect)`).
pub fn router(config: ConsoleConfig) -> Router {
    api::routes(Arc::new(config)).merge(assets::routes())
}
