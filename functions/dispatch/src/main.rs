//! The dispatch Lambda function's entry point: wires configuration, logging
//! and clients, then serves SQS batches with
//! [`edgepush_dispatch::sqs_handler`] or direct invocations with
//! [`edgepush_dispatch::handler`].
//!
//! Environment: `EDGEPUSH_REDIS_URL`, `EDGEPUSH_PUSH_ACCESS_KEY_ID`,
//! `EDGEPUSH_PUSH_SECRET_ACCESS_KEY`, `EDGEPUSH_PUSH_REGION` (default
//! `us-east-1`), `EDGEPUSH_DISPATCH_EVENT` (`sqs`, the default, or
//! `direct`), `RUST_LOG` (default `info`). Any `EDGEPUSH_*` value may be
//! `ssm:/name`, `secretsmanager:<id>` or `secretsmanager:<id>#<key>`,
//! resolved once here (see [`edgepush_aws::secrets`]).
//!
//! `dispatch consume` runs the long-running SQS consumer instead
//! ([`edgepush_dispatch::consumer`]: `EDGEPUSH_QUEUE_URL`, and the AWS SDK's
//! variables), for deployments without Lambda.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use edgepush_dispatch::{
    Config, DispatchEvent, Dispatcher, EventSource, ManagedEdgePusher, SdkConnectionPoster,
    consumer, handler, process, sqs_handler,
};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let consume = process::long_running("dispatch", "consume", std::env::args().skip(1))?;
    init_tracing();
    let env = edgepush_aws::resolve_process_env("EDGEPUSH_")
        .await
        .inspect_err(|error| tracing::error!(error = %error, "configuration not resolved"))?;
    let lookup = |name: &str| env.get(name).cloned();
    let config = Config::from_lookup(lookup)
        .inspect_err(|error| tracing::error!(error = %error, "invalid configuration"))?;
    let source = EventSource::from_lookup(lookup)
        .inspect_err(|error| tracing::error!(error = %error, "invalid configuration"))?;
    tracing::info!(?config, ?source, "starting dispatch");

    let cluster = lookup("EDGEPUSH_REDIS_CLUSTER");
    let dispatcher = build_dispatcher(&config, cluster.as_deref())
        .await
        .inspect_err(|error| tracing::error!(error = %error, "startup failed"))?;
    let dispatcher = &dispatcher;
    if consume {
        // The SDK's own variables (AWS_ENDPOINT_URL, AWS_REGION, ...).
        let aws = edgepush_aws::AwsSettings::from_lookup(|name| std::env::var(name).ok());
        return Ok(consumer::serve(dispatcher, lookup, &aws).await?);
    }
    match source {
        EventSource::Sqs => {
            lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
                sqs_handler(dispatcher, event).await
            }))
            .await
        }
        EventSource::Direct => {
            lambda_runtime::run(service_fn(
                move |event: LambdaEvent<DispatchEvent>| async move {
                    handler(dispatcher, event).await
                },
            ))
            .await
        }
    }
}

/// Connects the route store and builds the push client: edge nodes get
/// signed batches, API Gateway WebSocket connections (managed edge) get
/// `PostToConnection` with the function's own AWS credentials.
async fn build_dispatcher(config: &Config, cluster: Option<&str>) -> Result<Dispatcher, Error> {
    let redis = RedisConfig::from_settings(config.redis_url.clone(), cluster)?;
    let routes = RedisRouteStore::connect(redis).await?;
    let pusher = ManagedEdgePusher::new(
        Arc::new(config.push.http_pusher()?),
        Arc::new(SdkConnectionPoster::from_env().await),
    );
    Ok(Dispatcher {
        routes: Arc::new(routes.clone()),
        nodes: Arc::new(routes),
        pusher: Arc::new(pusher),
        retry: edgepush_dispatch::RetryPolicy::default(),
    })
}

/// JSON logs without colours or timestamps (CloudWatch adds its own),
/// filtered by `RUST_LOG`.
fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_current_span(false)
        .init();
}
