//! edgepush's measuring instruments.
//!
//! The numbers in `docs/benchmarks/` come from here: a WebSocket load
//! generator that speaks both edgepush's protocol and Centrifugo's (so the
//! same code measures both), a publisher that embeds send timestamps, and
//! helpers that read a server's memory and CPU from `/proc`.
//!
//! # Layout
//!
//! - [`loadgen`]: [`Swarm`](loadgen::Swarm), many WebSocket connections
//!   from many loopback source addresses, opened in waves, counting and
//!   timing what they receive.
//! - [`frames`]: the few bytes of each server frame the generator reads
//!   (message counts and embedded timestamps), without a JSON parser.
//! - [`tokens`]: HS256 tokens for edgepush and for Centrifugo.
//! - [`publish`]: [`Publisher`](publish::Publisher): paced publishing to
//!   edgepush collect, an edge node's batch push API, or Centrifugo's HTTP API.
//! - [`procfs`]: RSS and CPU time of a process.
//! - [`latency`]: the shared HDR histogram and its summary.
//! - [`ceiling`]: the store's ceiling: message-shaped documents inserted
//!   by plain `insert` commands, no edgepush in the loop.
//! - [`report`]: results of a `bench-run`, rendered as JSON, markdown and SVG.
//!
//! The binaries: `loadgen` and `publish` (the instruments on the command
//! line), `alloc-count` (allocations per delivered message, edge node in
//! process) and `bench-run` (every scenario, driven by `scripts/bench`).

pub mod ceiling;
pub mod frames;
pub mod latency;
pub mod loadgen;
pub mod procfs;
pub mod publish;
pub mod report;
pub mod tokens;

/// Nanoseconds since the Unix epoch, now: the clock every timestamp embedded
/// in a benchmark message is read from (all processes share the machine's
/// clock, so sender and receiver agree).
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
