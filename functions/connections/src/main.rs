//! The connections Lambda function's entry point: the shared start-up path
//! ([`edgepush_startup::start`]: `ssm:`/`secretsmanager:` values resolved
//! like every other function's), the typed configuration, the stores and
//! the management API client ([`edgepush_connections::connect`]), then API
//! Gateway WebSocket events and the sweep's schedule with
//! [`edgepush_connections::handler`](fn@edgepush_connections::handler).
//!
//! Environment: see [`edgepush_connections::config`]; `RUST_LOG` (default
//! `info`).

use edgepush_aws::AwsSettings;
use edgepush_connections::{Config, ConnectionsEvent, handler};
use edgepush_startup::{LogFailure as _, LogStyle};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = edgepush_startup::start(LogStyle::Lambda).await?;
    let config = Config::from_lookup(env.lookup()).log_failure("invalid configuration")?;
    tracing::info!(?config, "starting connections");

    let aws = AwsSettings::from_lookup(env.lookup()).load().await;
    let connections = edgepush_connections::connect(&config, &aws)
        .await
        .log_failure("startup failed")?;
    let connections = &connections;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ConnectionsEvent>| async move { handler(connections, event).await },
    ))
    .await
}
