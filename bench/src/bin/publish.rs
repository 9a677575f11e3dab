//! `publish`: post timestamped messages at a paced rate to edgepush collect
//! or Centrifugo's HTTP API; prints one JSON report line (achieved rate,
//! errors, request latency).
//!
//! ```text
//! publish --collect http://127.0.0.1:8080 --api-key dev-key --to u1 --count 1000 --rate 200
//! publish --centrifugo http://127.0.0.1:8000 --api-key KEY --channel bench --count 1000 --rate 200
//! ```

use anyhow::Context as _;
use clap::Parser;
use edgepush_bench::publish::{PublishConfig, Publisher, Target};

#[derive(Parser, Debug)]
#[command(
    name = "publish",
    about = "Timestamped publishing to edgepush collect or Centrifugo"
)]
struct Args {
    /// edgepush collect base URL (`POST <url>/v1/messages`).
    #[arg(long, conflicts_with = "centrifugo")]
    collect: Option<String>,
    /// Centrifugo base URL (`POST <url>/api/publish`).
    #[arg(long)]
    centrifugo: Option<String>,
    /// Collect API key (Bearer) or Centrifugo API key (X-API-Key).
    #[arg(long, env = "PUBLISH_API_KEY")]
    api_key: String,
    /// Collect: recipients of every message.
    #[arg(long, value_delimiter = ',')]
    to: Vec<String>,
    /// Collect: send message k to the k-th recipient (round robin) alone
    /// (`--per-message 1`).
    #[arg(long, conflicts_with = "per_message")]
    rotate: bool,
    /// Collect: send each message to the next N recipients of `--to` in
    /// rotation instead of to all of them.
    #[arg(long)]
    per_message: Option<usize>,
    /// Centrifugo: the channel.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Bytes of data per message.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = match (&args.collect, &args.centrifugo) {
        (Some(base), _) => {
            anyhow::ensure!(!args.to.is_empty(), "--collect needs --to");
            Target::Collect {
                base: base.trim_end_matches('/').to_owned(),
                api_key: args.api_key.clone(),
                to: args.to.clone(),
                per_message: match (args.rotate, args.per_message) {
                    (true, _) => 1,
                    (false, n) => n.unwrap_or(0),
                },
            }
        }
        (None, Some(base)) => Target::Centrifugo {
            base: base.trim_end_matches('/').to_owned(),
            api_key: args.api_key.clone(),
            channel: args.channel.clone(),
        },
        (None, None) => anyhow::bail!("give --collect or --centrifugo"),
    };
    let publisher = Publisher::new(target, None).context("publisher")?;
    let report = publisher
        .run(&PublishConfig {
            count: args.count,
            rate: args.rate,
            concurrency: args.concurrency,
            payload_bytes: args.payload_bytes,
            max_secs: 0.0,
        })
        .await;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string(&report)?);
    }
    if report.errors > 0 {
        eprintln!(
            "publish: {} errors; first: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
