//! The results of a `bench-run`: one JSON document, rendered as a markdown
//! table (with edgepush/Centrifugo ratios) and an SVG plot of memory per
//! connection and latency against connections.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;

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
    /// CPU seconds per process meanwhile (name, seconds).
    pub cpu_s: Vec<(String, f64)>,
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
            let cpu: Vec<String> = r.cpu_s.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
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
                cpu.join(", ")
            );
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

    /// The SVG plot: memory per idle connection (left) and unicast latency
    /// p50/p99 (right) against connections, one line per system.
    pub fn svg(&self) -> String {
        let (w, h) = (960.0, 420.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"##
        );
        let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
        let systems = [("edgepush", "#1f77b4"), ("centrifugo", "#d62728")];
        let mem: Vec<Line<'_>> = systems
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
            320.0,
            "Memory per idle connection (KiB)",
            &mem,
            &[],
        );
        let mut lat = Vec::new();
        let mut dashed = Vec::new();
        for (name, color) in systems {
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
            320.0,
            "Unicast round latency (ms): p50 solid, p99 dashed",
            &lat,
            &dashed,
        );
        let _ = writeln!(
            s,
            r##"<text x="60" y="405">x: connections held. Source: docs/benchmarks/results.json</text>"##
        );
        let mut lx = 600.0;
        for (name, color) in systems {
            let _ = writeln!(
                s,
                r##"<rect x="{lx}" y="395" width="14" height="4" fill="{color}"/><text x="{}" y="402">{name}</text>"##,
                lx + 18.0
            );
            lx += 120.0;
        }
        s.push_str("</svg>\n");
        s
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
    }
}
