//! The results of a `bench-run`: one JSON document, rendered as a markdown
//! table (with edgepush/Centrifugo ratios) and an SVG plot: memory per
//! connection and unicast latency against connections, latency percentiles
//! at a steady rate, and collect throughput, each beside Centrifugo's.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::latency::{LatencySummary, MessageSpread};

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// When (Unix seconds).
    pub unix_time: u64,
    /// The machine, and what else ran on it.
    pub machine: Machine,
    /// Whether this was a `--quick` smoke run (small N).
    pub quick: bool,
    /// Idle connections: RSS per connection at each N, and the latency of
    /// a unicast round to all N at that size.
    pub memory: Vec<MemoryRow>,
    /// Fan-out throughput: one message to N connections (or N users).
    pub fanout: Vec<FanoutRow>,
    /// Publish-to-receive latency at a steady rate.
    pub latency: Vec<LatencyRow>,
    /// Accepted messages per second through the write path.
    #[serde(default)]
    pub collect: Vec<CollectRow>,
    /// Raw inserts into the MongoDB wire server, no edgepush in the loop:
    /// the most copies per second the store takes.
    #[serde(default)]
    pub store: Vec<StoreRow>,
    /// Allocations per delivered message (edge node in process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<serde_json::Value>,
    /// The many-process run (100,000 connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub big: Option<BigRun>,
    /// Caveats worth reading next to the figures.
    pub notes: Vec<String>,
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory, KiB.
    pub mem_total_kib: u64,
    /// `uname -r`-like kernel version.
    pub kernel: String,
    /// Load average over the last minute when the run started (other
    /// engineers' compiles share the machine).
    pub loadavg_at_start: f64,
}

/// One size of the idle-connection scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryRow {
    /// `edgepush` or `centrifugo`.
    pub system: String,
    /// Connections held (open).
    pub connections: usize,
    /// Server RSS with no connection, KiB.
    pub rss_0_kib: u64,
    /// Server RSS with `connections` held idle, KiB.
    pub rss_n_kib: u64,
    /// (RSS_N - RSS_0) / N, bytes.
    pub bytes_per_conn: f64,
    /// The load generator's own bytes per connection.
    pub loadgen_bytes_per_conn: f64,
    /// Kernel TCP buffer memory of the machine, KiB (both ends of every
    /// loopback connection).
    pub kernel_tcp_mem_kib: u64,
    /// Connections that failed to open.
    pub failed: usize,
    /// A unicast round (one message to each of the N users), latency.
    pub unicast_latency: LatencySummary,
    /// Deliveries per second of that round.
    pub unicast_deliveries_per_s: f64,
}

/// One fan-out throughput measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutRow {
    /// `edgepush` or `centrifugo`.
    pub system: String,
    /// `fanout` (one user's / one channel's N connections) or `unicast`
    /// (N users, one message each).
    pub mode: String,
    /// How it was published (`batch push API`, `/api/publish`, ...).
    pub path: String,
    /// Connections.
    pub connections: usize,
    /// Messages published.
    pub messages: u64,
    /// Messages received by all connections.
    pub deliveries: u64,
    /// From the first publish to the last receipt, seconds.
    pub elapsed_s: f64,
    /// deliveries / elapsed.
    pub deliveries_per_s: f64,
    /// CPU seconds the server process used meanwhile.
    pub server_cpu_s: f64,
    /// CPU seconds the load generator (and publisher) used meanwhile.
    pub loadgen_cpu_s: f64,
    /// deliveries / server CPU second: throughput per core.
    pub deliveries_per_server_cpu_s: f64,
    /// Publish-to-receive latency (under burst: includes queueing).
    pub latency: LatencySummary,
}

/// The path of the end-to-end row that publishes as fast as collect
/// accepts: its rate is a result, not a setting.
pub const SUSTAINED: &str =
    "sustained: collect as fast as it accepts (32 in flight), 1 user per message";

/// One steady-rate latency measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyRow {
    /// `edgepush` or `centrifugo`.
    pub system: String,
    /// The path a message takes.
    pub path: String,
    /// Connections receiving.
    pub connections: usize,
    /// Messages per second published.
    pub rate: f64,
    /// Messages published.
    pub messages: u64,
    /// Messages received in all.
    pub deliveries: u64,
    /// Publish errors.
    pub errors: u64,
    /// Publish-to-receive latency.
    pub latency: LatencySummary,
    /// Where a message's time went (absent in results of older runs).
    #[serde(default)]
    pub stages: Stages,
    /// CPU seconds per process meanwhile (name, seconds).
    pub cpu_s: Vec<(String, f64)>,
}

/// Where the time of a steady-rate row's messages went, one sample per
/// message, measured from outside the server: its publish request
/// answered (the server parsed, checked and queued or stored it), its first
/// connection reading it, its last one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// Publish request sent to answer received.
    pub answered: LatencySummary,
    /// Sent to first and to last delivery.
    #[serde(flatten)]
    pub spread: MessageSpread,
}

/// Messages accepted per second through one system's write path, as fast as
/// it answers with a fixed number of requests in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CollectRow {
    /// `edgepush` or `centrifugo`.
    pub system: String,
    /// The API and what it writes to.
    pub path: String,
    /// Where the messages are kept (the MongoDB wire server and its
    /// backend; Redis for Centrifugo's history).
    pub store: String,
    /// Recipients (users, channels) per message.
    pub recipients: usize,
    /// Distinct recipients the messages rotate over.
    pub users: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Messages accepted.
    pub messages: u64,
    /// Requests refused or failed.
    pub errors: u64,
    /// Seconds from the first request to the last answer.
    pub elapsed_s: f64,
    /// Messages accepted per second.
    pub messages_per_s: f64,
    /// Copies (message x recipient) stored per second.
    pub copies_per_s: f64,
    /// From sending a request to its answer.
    pub request_latency: LatencySummary,
    /// CPU seconds of each process (and its children) during the run.
    pub cpu_s: Vec<(String, f64)>,
    /// The 1-minute load average when the run started.
    pub loadavg_1m: f64,
}

/// Message-shaped documents inserted per second into the MongoDB wire
/// server by plain `insert` commands, with no edgepush in the loop: the
/// ceiling collect's copies per second are set against.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreRow {
    /// What the MongoDB wire server is (and its backend).
    pub store: String,
    /// The collection written to.
    pub collection: String,
    /// The collection's indexes, by name, as the server lists them.
    pub indexes: Vec<String>,
    /// Documents per `insert` command (unordered).
    pub docs_per_insert: usize,
    /// Commands in flight.
    pub concurrency: usize,
    /// Documents inserted.
    pub docs: u64,
    /// Seconds from the first command to the last answer.
    pub elapsed_s: f64,
    /// Documents inserted per second.
    pub docs_per_s: f64,
    /// CPU seconds of each process (and its children) during the run.
    pub cpu_s: Vec<(String, f64)>,
    /// The 1-minute load average when the run started.
    pub loadavg_1m: f64,
}

/// The many-process idle run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BigRun {
    /// Node processes.
    pub nodes: usize,
    /// Load-generator processes.
    pub loadgens: usize,
    /// Connections open at once, in all.
    pub connections: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Sum of the nodes' RSS at 0, KiB.
    pub rss_0_kib: u64,
    /// Sum of the nodes' RSS with every connection held, KiB.
    pub rss_n_kib: u64,
    /// (RSS_N - RSS_0) / N, bytes.
    pub bytes_per_conn: f64,
    /// Kernel TCP buffer memory of the machine, KiB.
    pub kernel_tcp_mem_kib: u64,
    /// A probe message to every connection: deliveries.
    pub probe_deliveries: u64,
    /// Its latency.
    pub probe_latency: LatencySummary,
}

/// CPU seconds per process as a table cell: `name 1.23, other 0.45`.
fn cpu_list(cpu_s: &[(String, f64)]) -> String {
    let cells: Vec<String> = cpu_s.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
    cells.join(", ")
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn ratio(ours: f64, theirs: f64, lower_is_better: bool) -> String {
    if ours <= 0.0 || theirs <= 0.0 {
        return "–".into();
    }
    let r = ours / theirs;
    let better = if lower_is_better { r < 1.0 } else { r > 1.0 };
    format!(
        "{r:.2} ({})",
        if better {
            "edgepush ahead"
        } else {
            "Centrifugo ahead"
        }
    )
}

impl Results {
    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# edgepush vs Centrifugo v6.9.1: results\n");
        let _ = writeln!(
            s,
            "Machine: {} CPUs, {:.1} GiB, kernel {}; load average {:.2} at start (the machine is shared with other engineers' compiles). {}\n",
            m.cpus,
            m.mem_total_kib as f64 / 1048576.0,
            m.kernel,
            m.loadavg_at_start,
            if self.quick {
                "**Quick run (small N): a smoke run, not a measurement.**"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "Written by `scripts/bench` (`bench-run`); raw data in `results.json`. Ratios are edgepush / Centrifugo.\n"
        );

        let _ = writeln!(s, "## Memory per idle connection\n");
        let _ = writeln!(
            s,
            "| N | edgepush B/conn | Centrifugo B/conn | ratio | edgepush RSS 0 → N (MiB) | Centrifugo RSS 0 → N (MiB) | kernel TCP buffers (MiB, machine) |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---|---|---|---:|");
        for n in self.sizes(|r| &r.memory, |r| r.connections) {
            let e = self
                .memory
                .iter()
                .find(|r| r.system == "edgepush" && r.connections == n);
            let c = self
                .memory
                .iter()
                .find(|r| r.system == "centrifugo" && r.connections == n);
            let bpc = |r: Option<&MemoryRow>| {
                r.map_or("–".into(), |r| format!("{:.0}", r.bytes_per_conn))
            };
            let rss = |r: Option<&MemoryRow>| {
                r.map_or("–".into(), |r| {
                    format!(
                        "{:.1} → {:.1}",
                        r.rss_0_kib as f64 / 1024.0,
                        r.rss_n_kib as f64 / 1024.0
                    )
                })
            };
            let _ = writeln!(
                s,
                "| {n} | {} | {} | {} | {} | {} | {} |",
                bpc(e),
                bpc(c),
                ratio(
                    e.map_or(0.0, |r| r.bytes_per_conn),
                    c.map_or(0.0, |r| r.bytes_per_conn),
                    true
                ),
                rss(e),
                rss(c),
                e.or(c).map_or("–".into(), |r| format!(
                    "{:.1}",
                    r.kernel_tcp_mem_kib as f64 / 1024.0
                )),
            );
        }

        let _ = writeln!(
            s,
            "\n## Unicast round at each size (one message to each of N users; latency p50 / p99 / p999 ms)\n"
        );
        let _ = writeln!(
            s,
            "| N | edgepush | Centrifugo | edgepush deliveries/s | Centrifugo deliveries/s |"
        );
        let _ = writeln!(s, "|---:|---|---|---:|---:|");
        for n in self.sizes(|r| &r.memory, |r| r.connections) {
            let e = self
                .memory
                .iter()
                .find(|r| r.system == "edgepush" && r.connections == n);
            let c = self
                .memory
                .iter()
                .find(|r| r.system == "centrifugo" && r.connections == n);
            let lat = |r: Option<&MemoryRow>| {
                r.map_or("–".into(), |r| {
                    let l = &r.unicast_latency;
                    format!("{} / {} / {}", ms(l.p50_us), ms(l.p99_us), ms(l.p999_us))
                })
            };
            let dps = |r: Option<&MemoryRow>| {
                r.map_or("–".into(), |r| {
                    format!("{:.0}", r.unicast_deliveries_per_s)
                })
            };
            let _ = writeln!(
                s,
                "| {n} | {} | {} | {} | {} |",
                lat(e),
                lat(c),
                dps(e),
                dps(c)
            );
        }

        let _ = writeln!(
            s,
            "\n## Fan-out throughput (CPU seconds of each process beside each figure; 2 cores shared by generator and server)\n"
        );
        let _ = writeln!(
            s,
            "| mode | N | system | path | messages | deliveries | deliveries/s | server CPU s | loadgen CPU s | deliveries per server CPU s | ratio (per CPU s) | p50 / p99 ms |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for r in &self.fanout {
            let other = self.fanout.iter().find(|o| {
                o.mode == r.mode && o.connections == r.connections && o.system == "centrifugo"
            });
            let rat = if r.system == "edgepush" {
                other.map_or("–".into(), |o| {
                    ratio(
                        r.deliveries_per_server_cpu_s,
                        o.deliveries_per_server_cpu_s,
                        false,
                    )
                })
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {} | {} / {} |",
                r.mode,
                r.connections,
                r.system,
                r.path,
                r.messages,
                r.deliveries,
                r.deliveries_per_s,
                r.server_cpu_s,
                r.loadgen_cpu_s,
                r.deliveries_per_server_cpu_s,
                rat,
                ms(r.latency.p50_us),
                ms(r.latency.p99_us)
            );
        }

        let _ = writeln!(s, "\n## Publish-to-receive latency at a steady rate\n");
        let _ = writeln!(
            s,
            "| system | path | N | msgs/s | deliveries | errors | p50 ms | p99 ms | p999 ms | max ms | CPU s per process |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &self.latency {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                r.system,
                r.path,
                r.connections,
                r.rate,
                r.deliveries,
                r.errors,
                ms(r.latency.p50_us),
                ms(r.latency.p99_us),
                ms(r.latency.p999_us),
                ms(r.latency.max_us),
                cpu_list(&r.cpu_s)
            );
        }

        if self.latency.iter().any(|r| r.stages.spread.first.count > 0) {
            let _ = writeln!(
                s,
                "\n## Where a message's time goes at a steady rate (one sample per message: publish request answered, first and last connection read it; p50 / p99 ms)\n"
            );
            let _ = writeln!(
                s,
                "| system | path | N | msgs/s | answered | first delivery | last delivery |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
            for r in self
                .latency
                .iter()
                .filter(|r| r.stages.spread.first.count > 0)
            {
                let pair = |l: &LatencySummary| format!("{} / {}", ms(l.p50_us), ms(l.p99_us));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {} | {} | {} |",
                    r.system,
                    r.path,
                    r.connections,
                    r.rate,
                    pair(&r.stages.answered),
                    pair(&r.stages.spread.first),
                    pair(&r.stages.spread.last)
                );
            }
        }

        if !self.collect.is_empty() {
            let _ = writeln!(
                s,
                "\n## Collect throughput: accepted messages per second, as fast as the server answers\n"
            );
            let _ = writeln!(
                s,
                "| system | path | store | recipients per message | in flight | msgs/s | copies/s | ratio (msgs/s) | request p50 / p99 / p999 ms | errors | CPU s per process | load avg |"
            );
            let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---|---|---:|---|---:|");
            for r in &self.collect {
                let other = self.collect.iter().find(|o| {
                    o.system == "centrifugo"
                        && o.recipients == r.recipients
                        && o.concurrency == r.concurrency
                });
                let rat = match (r.system.as_str(), other) {
                    ("edgepush", Some(o)) => ratio(r.messages_per_s, o.messages_per_s, false),
                    _ => String::new(),
                };
                let l = &r.request_latency;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} / {} / {} | {} | {} | {:.2} |",
                    r.system,
                    r.path,
                    r.store,
                    r.recipients,
                    r.concurrency,
                    r.messages_per_s,
                    r.copies_per_s,
                    rat,
                    ms(l.p50_us),
                    ms(l.p99_us),
                    ms(l.p999_us),
                    r.errors,
                    cpu_list(&r.cpu_s),
                    r.loadavg_1m
                );
            }
        }

        if !self.store.is_empty() {
            let _ = writeln!(
                s,
                "\n## Store ceiling: message-shaped documents inserted per second by plain `insert` commands, no edgepush in the loop\n"
            );
            let _ = writeln!(
                s,
                "| store | collection | indexes | docs per insert | in flight | docs/s | CPU s per process | load avg |"
            );
            let _ = writeln!(s, "|---|---|---|---:|---:|---:|---|---:|");
            for r in &self.store {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.0} | {} | {:.2} |",
                    r.store,
                    r.collection,
                    r.indexes.join(", "),
                    r.docs_per_insert,
                    r.concurrency,
                    r.docs_per_s,
                    cpu_list(&r.cpu_s),
                    r.loadavg_1m
                );
            }
        }

        if let Some(a) = &self.allocations {
            let _ = writeln!(
                s,
                "\n## Allocations in the edge node (counting allocator, node in process)\n"
            );
            let _ = writeln!(
                s,
                "```json\n{}\n```",
                serde_json::to_string_pretty(a).unwrap_or_default()
            );
        }
        if let Some(b) = &self.big {
            let _ = writeln!(s, "\n## Many processes\n");
            let _ = writeln!(
                s,
                "{} connections open at once ({} failed) on {} edge-node processes from {} load-generator processes: node RSS {:.1} → {:.1} MiB, {:.0} bytes per connection; kernel TCP buffers {:.1} MiB; a probe message reached {} connections (p50 {} ms, p99 {} ms).",
                b.connections,
                b.failed,
                b.nodes,
                b.loadgens,
                b.rss_0_kib as f64 / 1024.0,
                b.rss_n_kib as f64 / 1024.0,
                b.bytes_per_conn,
                b.kernel_tcp_mem_kib as f64 / 1024.0,
                b.probe_deliveries,
                ms(b.probe_latency.p50_us),
                ms(b.probe_latency.p99_us)
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    fn sizes<T>(&self, rows: impl Fn(&Self) -> &Vec<T>, n: impl Fn(&T) -> usize) -> Vec<usize> {
        let mut v: Vec<usize> = rows(self).iter().map(n).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The SVG plot, four panels, each system in its colour: memory per
    /// idle connection and unicast-round latency p50/p99 against
    /// connections (top); publish-to-receive latency p50/p99/p999 at a
    /// steady rate (the node's push path against Centrifugo's publish) and
    /// accepted messages per second through collect against Centrifugo's
    /// publish with history (bottom).
    pub fn svg(&self) -> String {
        let (w, h) = (960.0, 820.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"##
        );
        let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
        let mem: Vec<Line<'_>> = SYSTEMS
            .iter()
            .map(|(name, color)| {
                let pts = self
                    .memory
                    .iter()
                    .filter(|r| r.system == *name)
                    .map(|r| (r.connections as f64, r.bytes_per_conn / 1024.0))
                    .collect();
                (*name, *color, pts)
            })
            .collect();
        panel(
            &mut s,
            60.0,
            40.0,
            380.0,
            300.0,
            "Memory per idle connection (KiB)",
            &mem,
            &[],
        );
        let mut lat = Vec::new();
        let mut dashed = Vec::new();
        for (name, color) in SYSTEMS {
            let rows: Vec<&MemoryRow> = self.memory.iter().filter(|r| r.system == name).collect();
            lat.push((
                name,
                color,
                rows.iter()
                    .map(|r| {
                        (
                            r.connections as f64,
                            r.unicast_latency.p50_us as f64 / 1000.0,
                        )
                    })
                    .collect(),
            ));
            dashed.push(lat.len());
            lat.push((
                name,
                color,
                rows.iter()
                    .map(|r| {
                        (
                            r.connections as f64,
                            r.unicast_latency.p99_us as f64 / 1000.0,
                        )
                    })
                    .collect(),
            ));
        }
        panel(
            &mut s,
            540.0,
            40.0,
            380.0,
            300.0,
            "Unicast round latency (ms): p50 solid, p99 dashed",
            &lat,
            &dashed,
        );
        let _ = writeln!(s, r##"<text x="60" y="372">x: connections held.</text>"##);

        // Steady-rate latency: the first row of each system that goes
        // through its own push path (edgepush: the node's batch push API;
        // Centrifugo: /api/publish to one channel).
        let steady = |system: &str| {
            self.latency.iter().find(|r| {
                r.system == system
                    && (r.path.contains("batch push")
                        || r.path
                            .contains("/api/publish -> Redis -> N subscribers of 1"))
            })
        };
        let mut groups = Vec::new();
        for (label, pick) in [("p50", 0usize), ("p99", 1), ("p999", 2)] {
            let bars: Vec<(&str, &str, f64)> = SYSTEMS
                .iter()
                .filter_map(|(name, color)| {
                    steady(name).map(|r| {
                        let l = &r.latency;
                        let us = [l.p50_us, l.p99_us, l.p999_us][pick];
                        (*name, *color, us as f64 / 1000.0)
                    })
                })
                .collect();
            groups.push((label.to_owned(), bars));
        }
        let title = steady("edgepush").map_or_else(
            || "Latency at a steady rate (ms)".to_owned(),
            |r| {
                format!(
                    "Latency, {:.0} msg/s to {} connections (ms)",
                    r.rate, r.connections
                )
            },
        );
        bars(&mut s, 60.0, 440.0, 380.0, 300.0, &title, &groups);

        let mut groups = Vec::new();
        let mut runs: Vec<(usize, usize)> = self
            .collect
            .iter()
            .map(|r| (r.recipients, r.concurrency))
            .collect();
        runs.sort_unstable();
        runs.dedup();
        for (n, c) in runs {
            let bars: Vec<(&str, &str, f64)> = SYSTEMS
                .iter()
                .filter_map(|(name, color)| {
                    self.collect
                        .iter()
                        .find(|r| r.system == *name && r.recipients == n && r.concurrency == c)
                        .map(|r| (*name, *color, r.messages_per_s))
                })
                .collect();
            let to = format!("{n} recipient{}", if n == 1 { "" } else { "s" });
            groups.push((format!("{to}\n{c} in flight"), bars));
        }
        bars(
            &mut s,
            540.0,
            440.0,
            380.0,
            300.0,
            "Accepted messages per second (collect / publish)",
            &groups,
        );
        let _ = writeln!(
            s,
            r##"<text x="60" y="800">Source: docs/benchmarks/results.json (results.md has every row, with CPU seconds and load average).</text>"##
        );
        let mut lx = 640.0;
        for (name, color) in SYSTEMS {
            let _ = writeln!(
                s,
                r##"<rect x="{lx}" y="16" width="14" height="4" fill="{color}"/><text x="{}" y="22">{name}</text>"##,
                lx + 18.0
            );
            lx += 120.0;
        }
        s.push_str("</svg>\n");
        s
    }
}

/// One figure followed over several runs.
struct Series {
    section: &'static str,
    row: String,
    unit: &'static str,
    values: Vec<f64>,
}

/// Medians and spread of the key figures of several runs (markdown): one
/// line per figure with its median, its range and every run's value, and
/// for each latency row measured for both systems, the edgepush /
/// Centrifugo ratio of each run at p50, p99 and p999 (below 1: edgepush
/// ahead).
pub fn summary(runs: &[Results]) -> String {
    let mut series: Vec<Series> = Vec::new();
    let mut add = |section: &'static str, row: String, unit: &'static str, v: f64| match series
        .iter_mut()
        .find(|s| s.section == section && s.row == row && s.unit == unit)
    {
        Some(s) => s.values.push(v),
        None => series.push(Series {
            section,
            row,
            unit,
            values: vec![v],
        }),
    };
    for r in runs {
        for m in &r.memory {
            add(
                "memory per idle connection",
                format!("{}, N = {}", m.system, m.connections),
                "B",
                m.bytes_per_conn,
            );
        }
        for f in &r.fanout {
            add(
                "deliveries per server CPU second",
                format!(
                    "{}, {}, N = {} ({})",
                    f.system, f.mode, f.connections, f.path
                ),
                "/s",
                f.deliveries_per_server_cpu_s,
            );
        }
        for l in &r.latency {
            let row = if l.path.starts_with(SUSTAINED) {
                // Runs differ in the rate they reached: a figure.
                let row = format!("{}: {}, N = {}", l.system, l.path, l.connections);
                add("latency", row.clone(), "msgs/s", l.rate);
                row
            } else {
                format!(
                    "{}: {}, N = {}, {:.0} msg/s",
                    l.system, l.path, l.connections, l.rate
                )
            };
            for (unit, us) in [
                ("p50 ms", l.latency.p50_us),
                ("p99 ms", l.latency.p99_us),
                ("p999 ms", l.latency.p999_us),
            ] {
                add("latency", row.clone(), unit, us as f64 / 1000.0);
            }
            if l.stages.spread.first.count > 0 {
                let st = &l.stages;
                for (unit, us) in [
                    ("answered p50 ms", st.answered.p50_us),
                    ("answered p99 ms", st.answered.p99_us),
                    ("first delivery p50 ms", st.spread.first.p50_us),
                    ("first delivery p99 ms", st.spread.first.p99_us),
                    ("last delivery p50 ms", st.spread.last.p50_us),
                    ("last delivery p99 ms", st.spread.last.p99_us),
                ] {
                    add("latency stages", row.clone(), unit, us as f64 / 1000.0);
                }
            }
        }
        for c in &r.collect {
            let row = format!(
                "{}: {} recipient(s) per message, {} in flight ({})",
                c.system, c.recipients, c.concurrency, c.store
            );
            add("collect", row.clone(), "msgs/s", c.messages_per_s);
            add(
                "collect",
                row,
                "request p99 ms",
                c.request_latency.p99_us as f64 / 1000.0,
            );
        }
        for t in &r.store {
            add(
                "store ceiling",
                format!(
                    "{} ({}), {} docs per insert, {} in flight",
                    t.collection, t.store, t.docs_per_insert, t.concurrency
                ),
                "docs/s",
                t.docs_per_s,
            );
        }
        if let Some(a) = &r.allocations {
            for (key, label) in [
                ("fanout_per_delivery", "fan-out"),
                ("unicast_per_delivery", "unicast"),
            ] {
                if let Some(v) = a[key]["allocs_per_unit"].as_f64() {
                    add("allocations per delivery", label.to_owned(), "allocs", v);
                }
            }
        }
        if let Some(b) = &r.big {
            add(
                "many processes",
                format!("{} connections, {} nodes", b.connections, b.nodes),
                "B/conn",
                b.bytes_per_conn,
            );
        }
    }

    let mut s = String::new();
    let loads: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.2}", r.machine.loadavg_at_start))
        .collect();
    let _ = writeln!(s, "# Summary of {} runs\n", runs.len());
    let _ = writeln!(
        s,
        "Load average at the start of each run: {}. Median, range and each run's value, in run order.\n",
        loads.join(", ")
    );
    let _ = writeln!(s, "| figure | row | unit | median | min – max | runs |");
    let _ = writeln!(s, "|---|---|---|---:|---|---|");
    for x in &series {
        let each: Vec<String> = x.values.iter().map(|v| short(*v)).collect();
        let (lo, hi) = x
            .values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} – {} | {} |",
            x.section,
            x.row,
            x.unit,
            short(median(&x.values)),
            short(lo),
            short(hi),
            each.join(", ")
        );
    }

    // Ratios per run for rows both systems have (same N and rate, each
    // through its own push path).
    let mut ratios = String::new();
    for (i, r) in runs.iter().enumerate() {
        for e in r.latency.iter().filter(|l| l.system == "edgepush") {
            let Some(c) = r.latency.iter().find(|c| {
                c.system == "centrifugo"
                    && c.connections == e.connections
                    && c.rate == e.rate
                    && same_shape(&e.path, &c.path)
            }) else {
                continue;
            };
            let q = |a: u64, b: u64| {
                if b == 0 {
                    "–".to_owned()
                } else {
                    format!("{:.2}", a as f64 / b as f64)
                }
            };
            let _ = writeln!(
                ratios,
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                e.path,
                c.path,
                q(e.latency.p50_us, c.latency.p50_us),
                q(e.latency.p99_us, c.latency.p99_us),
                q(e.latency.p999_us, c.latency.p999_us)
            );
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            s,
            "\n## Latency, edgepush / Centrifugo, each run (below 1: edgepush ahead)\n"
        );
        let _ = writeln!(
            s,
            "| run | edgepush path | Centrifugo path | p50 | p99 | p999 |"
        );
        let _ = writeln!(s, "|---:|---|---|---:|---:|---:|");
        s.push_str(&ratios);
    }
    s
}

/// Whether two latency rows measure the same shape of load through each
/// system's own push path: one user's N connections (one channel's N
/// subscribers), or one topic's N subscribers. The end-to-end rows through
/// collect have no Centrifugo counterpart.
fn same_shape(edgepush: &str, centrifugo: &str) -> bool {
    let topic = |p: &str| p.contains("topic") || p.contains("N users");
    !edgepush.starts_with("collect") && topic(edgepush) == topic(centrifugo)
}

/// The median of `values` (the mean of the two middle ones for an even
/// count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The systems plotted, and their colours.
const SYSTEMS: [(&str, &str); 2] = [("edgepush", "#1f77b4"), ("centrifugo", "#d62728")];

/// One group of bars: its label and (system, colour, value) per bar.
type BarGroup<'a> = (String, Vec<(&'a str, &'a str, f64)>);

/// A panel of grouped bars, each labelled with its value.
fn bars(s: &mut String, x0: f64, y0: f64, w: f64, h: f64, title: &str, groups: &[BarGroup<'_>]) {
    let _ = writeln!(
        s,
        r##"<text x="{x0}" y="{}" font-weight="bold">{title}</text>"##,
        y0 - 12.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>"##
    );
    let ymax = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|b| b.2))
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.15;
    if groups.iter().all(|g| g.1.is_empty()) {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">not measured in this run</text>"##,
            x0 + w / 2.0,
            y0 + h / 2.0
        );
        return;
    }
    let slot = w / groups.len().max(1) as f64;
    for (g, (label, group)) in groups.iter().enumerate() {
        let gx = x0 + slot * g as f64;
        let bw = (slot * 0.8 / group.len().max(1) as f64).min(60.0);
        let start = gx + (slot - bw * group.len() as f64) / 2.0;
        for (i, (_, color, v)) in group.iter().enumerate() {
            let bh = v / ymax * h;
            let x = start + bw * i as f64;
            let y = y0 + h - bh;
            let _ = writeln!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"##,
                bw - 4.0,
                x + (bw - 4.0) / 2.0,
                y - 3.0,
                short(*v)
            );
        }
        // A label may take several lines (`\n`).
        for (i, line) in label.lines().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{}" text-anchor="middle">{line}</text>"##,
                gx + slot / 2.0,
                y0 + h + 16.0 + 14.0 * i as f64
            );
        }
    }
}

/// A value in at most 4 significant characters (`1.23`, `45.6`, `7,890`).
fn short(v: f64) -> String {
    if v >= 1000.0 {
        let whole = v.round() as u64;
        let (th, rest) = (whole / 1000, whole % 1000);
        format!("{th},{rest:03}")
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One plotted line: name, colour, (x, y) points.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// One panel of lines with axes; `dashed` lists the indexes drawn dashed.
#[allow(clippy::too_many_arguments)]
fn panel(
    s: &mut String,
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    title: &str,
    lines: &[Line<'_>],
    dashed: &[usize],
) {
    let xmax = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1.0);
    let ymax = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.1;
    let _ = writeln!(
        s,
        r##"<text x="{x0}" y="{}" font-weight="bold">{title}</text>"##,
        y0 - 12.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>"##
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let y = y0 + h - f * h;
        let x = x0 + f * w;
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{:.1}</text>"##,
            x0 + w,
            x0 - 4.0,
            y + 4.0,
            f * ymax
        );
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{}" text-anchor="middle">{:.0}</text>"##,
            y0 + h + 16.0,
            f * xmax
        );
    }
    for (i, (_, color, pts)) in lines.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let mut sorted = pts.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = sorted
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x0 + x / xmax * w, y0 + h - y / ymax * h))
            .collect();
        let dash = if dashed.contains(&i) {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"##,
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r##"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"##);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut r = Results::default();
        for (system, bpc) in [("edgepush", 3000.0), ("centrifugo", 30000.0)] {
            for n in [1000, 5000] {
                r.memory.push(MemoryRow {
                    system: system.into(),
                    connections: n,
                    bytes_per_conn: bpc,
                    unicast_latency: LatencySummary {
                        p50_us: 1500,
                        p99_us: 4000,
                        ..Default::default()
                    },
                    ..Default::default()
                });
            }
        }
        r
    }

    /// The steady-rate rows of both systems (1,000 connections, 20 msg/s,
    /// p50 5 ms) with these p99s and p999 (µs).
    fn steady_rows(edgepush_p99: u64, centrifugo_p99: u64, p999: u64) -> Vec<LatencyRow> {
        [
            (
                "edgepush",
                "node batch push API -> N connections of 1 user",
                edgepush_p99,
            ),
            (
                "centrifugo",
                "/api/publish -> Redis -> N subscribers of 1 channel",
                centrifugo_p99,
            ),
        ]
        .into_iter()
        .map(|(system, path, p99)| LatencyRow {
            system: system.into(),
            path: path.into(),
            connections: 1000,
            rate: 20.0,
            latency: LatencySummary {
                p50_us: 5000,
                p99_us: p99,
                p999_us: p999,
                ..Default::default()
            },
            ..Default::default()
        })
        .collect()
    }

    #[test]
    fn markdown_shows_ratios_per_size() {
        let md = sample().markdown();
        assert!(
            md.contains("| 1000 | 3000 | 30000 | 0.10 (edgepush ahead)"),
            "{md}"
        );
        assert!(md.contains("| 5000 |"));
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let svg = sample().svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches("not measured in this run").count(), 2);
    }

    #[test]
    fn a_summary_gives_medians_ranges_and_ratios_per_run() {
        let runs: Vec<Results> = [(9000, 12000, 0.9), (11000, 10000, 2.5), (8000, 12500, 4.0)]
            .into_iter()
            .map(|(e99, c99, load)| {
                let mut r = sample();
                r.machine.loadavg_at_start = load;
                r.latency.extend(steady_rows(e99, c99, 20000));
                r
            })
            .collect();
        let md = summary(&runs);
        assert!(
            md.contains("Load average at the start of each run: 0.90, 2.50, 4.00"),
            "{md}"
        );
        assert!(
            md.contains("| latency | edgepush: node batch push API -> N connections of 1 user, N = 1000, 20 msg/s | p99 ms | 9.00 | 8.00 – 11.0 | 9.00, 11.0, 8.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| memory per idle connection | edgepush, N = 1000 | B | 3,000 |"),
            "{md}"
        );
        // Run 2 has Centrifugo ahead at p99.
        assert!(md.contains("| 2 | node batch push API"), "{md}");
        assert!(md.contains("| 1.00 | 1.10 | 1.00 |"), "{md}");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn stages_are_shown_per_row_and_summarised_across_runs() {
        let at = |p50_us, p99_us| LatencySummary {
            count: 200,
            p50_us,
            p99_us,
            ..Default::default()
        };
        let runs: Vec<Results> = [1000u64, 3000, 2000]
            .into_iter()
            .map(|answered| {
                let mut r = sample();
                let mut rows = steady_rows(9000, 12000, 15000);
                rows[0].stages = Stages {
                    answered: at(answered, 2 * answered),
                    spread: MessageSpread {
                        first: at(2500, 4000),
                        last: at(8000, 12500),
                    },
                };
                r.latency.extend(rows);
                r
            })
            .collect();
        let md = runs[0].markdown();
        assert!(
            md.contains("| edgepush | node batch push API -> N connections of 1 user | 1000 | 20 | 1.00 / 2.00 | 2.50 / 4.00 | 8.00 / 12.50 |"),
            "{md}"
        );
        // Centrifugo's row had no stages: not in the table.
        let table = md
            .split("## Where a message's time goes")
            .nth(1)
            .unwrap_or_default();
        let table = table.split("\n## ").next().unwrap_or_default();
        assert!(table.contains("| edgepush |"), "{table}");
        assert!(!table.contains("| centrifugo |"), "{table}");
        let md = summary(&runs);
        assert!(
            md.contains("| latency stages | edgepush: node batch push API -> N connections of 1 user, N = 1000, 20 msg/s | answered p50 ms | 2.00 | 1.00 – 3.00 |"),
            "{md}"
        );
    }

    #[test]
    fn store_ceiling_rows_are_shown_and_summarised() {
        let runs: Vec<Results> = [21_000.0, 19_000.0, 25_000.0]
            .into_iter()
            .map(|docs_per_s| {
                let mut r = sample();
                r.store.push(StoreRow {
                    store: "ferretdb on pg".into(),
                    collection: "messages".into(),
                    indexes: vec!["_id_".into(), "user_seq".into()],
                    docs_per_insert: 1000,
                    concurrency: 2,
                    docs: 100_000,
                    elapsed_s: 5.0,
                    docs_per_s,
                    cpu_s: vec![("ferretdb".into(), 3.5)],
                    loadavg_1m: 1.5,
                });
                r
            })
            .collect();
        let md = runs[0].markdown();
        assert!(
            md.contains("| ferretdb on pg | messages | _id_, user_seq | 1000 | 2 | 21000 | ferretdb 3.50 | 1.50 |"),
            "{md}"
        );
        let md = summary(&runs);
        assert!(
            md.contains("| store ceiling | messages (ferretdb on pg), 1000 docs per insert, 2 in flight | docs/s | 21,000 | 19,000 – 25,000 |"),
            "{md}"
        );
        // A run without the scenario has no section.
        assert!(!sample().markdown().contains("Store ceiling"));
    }

    #[test]
    fn sustained_rows_of_different_rates_are_one_row_of_the_summary() {
        let runs: Vec<Results> = [2655.0, 3539.0, 3079.0]
            .into_iter()
            .map(|rate| {
                let mut r = sample();
                r.latency.push(LatencyRow {
                    system: "edgepush".into(),
                    path: SUSTAINED.into(),
                    connections: 1000,
                    rate,
                    latency: LatencySummary {
                        p99_us: (rate * 5.0) as u64,
                        ..Default::default()
                    },
                    ..Default::default()
                });
                r
            })
            .collect();
        let md = summary(&runs);
        let row = format!("| latency | edgepush: {SUSTAINED}, N = 1000 |");
        assert!(
            md.contains(&format!(
                "{row} msgs/s | 3,079 | 2,655 – 3,539 | 2,655, 3,539, 3,079 |"
            )),
            "{md}"
        );
        assert_eq!(md.matches(&format!("{row} p99 ms")).count(), 1, "{md}");
    }

    #[test]
    fn latency_and_collect_are_plotted_beside_centrifugo() {
        let mut r = sample();
        r.latency.extend(steady_rows(9000, 12000, 15000));
        for (system, recipients, concurrency, rate) in [
            ("edgepush", 1, 32, 5200.0),
            ("centrifugo", 1, 32, 9000.0),
            ("edgepush", 1, 64, 7000.0),
            ("centrifugo", 1, 64, 17500.0),
            ("edgepush", 100, 32, 300.0),
        ] {
            r.collect.push(CollectRow {
                system: system.into(),
                recipients,
                concurrency,
                messages_per_s: rate,
                ..Default::default()
            });
        }
        let svg = r.svg();
        assert_eq!(svg.matches("not measured in this run").count(), 0);
        // 3 percentiles x 2 systems + 5 collect bars.
        assert_eq!(svg.matches("<rect x=").count() - 6, 11, "{svg}");
        assert!(svg.contains(">5,200<") && svg.contains(">12.0<"), "{svg}");
        // One group per recipients and in-flight count, labelled on two lines.
        for label in [
            ">1 recipient<",
            ">100 recipients<",
            ">32 in flight<",
            ">64 in flight<",
        ] {
            assert!(svg.contains(label), "{label}: {svg}");
        }
        let md = r.markdown();
        assert!(md.contains("| 1 | 32 | 5200 |"), "{md}");
        // Each edgepush row against Centrifugo's with as many in flight.
        assert!(md.contains("0.58 (Centrifugo ahead)"), "{md}");
        assert!(md.contains("0.40 (Centrifugo ahead)"), "{md}");
    }
}
