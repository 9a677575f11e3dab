//! The collect Lambda function's entry point: the shared start-up path
//! ([`edgepush_startup::start`]), the typed configuration, the collector
//! ([`edgepush_collect::connect`]), then HTTP API / function URL
//! invocations through `lambda_http` ([`edgepush_collect::lambda::run`]).
//!
//! Environment: `EDGEPUSH_API_KEYS`, `EDGEPUSH_MONGODB_URI`,
//! `EDGEPUSH_MONGODB_DATABASE` (optional), `EDGEPUSH_REDIS_URL` (and
//! `EDGEPUSH_REDIS_CLUSTER`), `EDGEPUSH_PUSH_ACCESS_KEY_ID`,
//! `EDGEPUSH_PUSH_SECRET_ACCESS_KEY`, `EDGEPUSH_PUSH_REGION` (default
//! `us-east-1`), `RUST_LOG` (default `info`). Any `EDGEPUSH_*` value may be
//! `ssm:/name`, `secretsmanager:<id>` or `secretsmanager:<id>#<key>`,
//! resolved once at start.
//!
//! The hand-off ([`HandoffChoice`]): `EDGEPUSH_HANDOFF=sqs` with
//! `EDGEPUSH_QUEUE_URL` sends stored messages to that SQS queue; `direct`
//! (the default without a queue URL) runs dispatch in this process.
//!
//! `collect serve` serves the same API as a long-running HTTP server instead
//! ([`edgepush_collect::server`], on `EDGEPUSH_COLLECT_ADDR`) until SIGTERM
//! or SIGINT, for deployments without Lambda.

use std::sync::Arc;

use edgepush_aws::{AwsSettings, HandoffChoice};
use edgepush_collect::{Config, server};
use edgepush_startup::{LogFailure as _, LogStyle};
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let serve = edgepush_startup::long_running("collect", "serve", std::env::args().skip(1))?;
    let env = edgepush_startup::start(LogStyle::of_function(serve)).await?;
    let config = Config::from_lookup(env.lookup()).log_failure("invalid configuration")?;
    let handoff = HandoffChoice::from_lookup(env.lookup()).log_failure("invalid configuration")?;
    tracing::info!(?config, ?handoff, "starting collect");

    let aws = AwsSettings::from_lookup(env.lookup()).load().await;
    let collector = edgepush_collect::connect(&config, &handoff, &aws)
        .await
        .log_failure("startup failed")?;
    if serve {
        let shutdown = edgepush_startup::shutdown_signal();
        return Ok(server::serve(Arc::new(collector), env.lookup(), shutdown).await?);
    }
    edgepush_collect::lambda::run(Arc::new(collector)).await
}
