//! `bench-summary`: the medians and spread of several `bench-run`s.
//!
//! ```text
//! bench-summary docs/benchmarks/run-1 docs/benchmarks/run-2 docs/benchmarks/run-3 --out docs/benchmarks
//! ```
//!
//! Reads `results.json` from each directory and writes `summary.md` to
//! `--out`: every key figure with its median, range and per-run values, and
//! the edgepush / Centrifugo latency ratios of each run
//! ([`edgepush_bench::report::summary`]). `scripts/bench --runs 3` calls it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use edgepush_bench::report::{Results, summary};

#[derive(Parser, Debug)]
#[command(
    name = "bench-summary",
    about = "Medians and spread of several bench runs"
)]
struct Args {
    /// Directories holding a `results.json` each, in run order.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where `summary.md` goes.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for dir in &args.runs {
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let run: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        runs.push(run);
    }
    std::fs::create_dir_all(&args.out)?;
    let out = args.out.join("summary.md");
    std::fs::write(&out, summary(&runs)).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("bench-summary: wrote {}", out.display());
    Ok(())
}
