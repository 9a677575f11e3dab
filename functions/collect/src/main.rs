//! The collect Lambda function's entry point: wires configuration, logging
//! and clients, then serves HTTP API / function URL invocations with
//! [`edgepush_collect::handler`].
//!
//! Environment: `EDGEPUSH_API_KEYS`, `EDGEPUSH_MONGODB_URI`,
//! `EDGEPUSH_MONGODB_DATABASE` (optional), `EDGEPUSH_REDIS_URL`,
//! `EDGEPUSH_PUSH_ACCESS_KEY_ID`, `EDGEPUSH_PUSH_SECRET_ACCESS_KEY`,
//! `EDGEPUSH_PUSH_REGION` (default `us-east-1`), `RUST_LOG` (default `info`).
//! Any `EDGEPUSH_*` value may be `ssm:/name`, `secretsmanager:<id>` or
//! `secretsmanager:<id>#<key>`, resolved once here (see
//! [`edgepush_aws::secrets`]).
//!
//! The hand-off ([`HandoffChoice`]): `EDGEPUSH_HANDOFF=sqs` with
//! `EDGEPUSH_QUEUE_URL` sends stored messages to that SQS queue
//! ([`SqsHandoff`]); `direct` (the default without a queue URL) runs
//! dispatch in this process ([`DirectHandoff`]).
//!
//! `collect serve` serves the same API as a long-running HTTP server instead
//! ([`edgepush_collect::server`], on `EDGEPUSH_COLLECT_ADDR`), for
//! deployments without Lambda.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use edgepush_aws::{AwsSettings, HandoffChoice, SqsHandoff};
use edgepush_collect::{Collector, Config, handler, server};
use edgepush_core::Handoff;
use edgepush_dispatch::{DirectHandoff, Dispatcher, process};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let serve = process::long_running("collect", "serve", std::env::args().skip(1))?;
    init_tracing();
    let env = edgepush_aws::resolve_process_env("EDGEPUSH_")
        .await
        .inspect_err(|error| tracing::error!(error = %error, "configuration not resolved"))?;
    let lookup = |name: &str| env.get(name).cloned();
    let config = Config::from_lookup(lookup)
        .inspect_err(|error| tracing::error!(error = %error, "invalid configuration"))?;
    let handoff = HandoffChoice::from_lookup(lookup)
        .inspect_err(|error| tracing::error!(error = %error, "invalid configuration"))?;
    tracing::info!(?config, ?handoff, "starting collect");

    let cluster = lookup("EDGEPUSH_REDIS_CLUSTER");
    let collector = build_collector(config, handoff, cluster.as_deref())
        .await
        .inspect_err(|error| tracing::error!(error = %error, "startup failed"))?;
    if serve {
        return Ok(server::serve(Arc::new(collector), lookup).await?);
    }
    let collector = &collector;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            handler(collector, event).await
        },
    ))
    .await
}

/// Connects MongoDB and builds the chosen hand-off.
async fn build_collector(
    config: Config,
    choice: HandoffChoice,
    redis_cluster: Option<&str>,
) -> Result<Collector, Error> {
    let mut mongo = MongoConfig::new(config.mongodb_uri.clone());
    if let Some(database) = config.mongodb_database.clone() {
        mongo.database = database;
    }
    let store = MongoMessageStore::connect(mongo).await?;

    let handoff: Arc<dyn Handoff> = match choice {
        HandoffChoice::Sqs(sqs) => {
            // The SDK's default chain: the function's role, its region.
            let sdk = AwsSettings::from_lookup(|name| std::env::var(name).ok())
                .load()
                .await;
            Arc::new(SqsHandoff::from_sdk_config(&sdk, sqs))
        }
        HandoffChoice::Direct => {
            let routes = RedisRouteStore::connect(RedisConfig::from_settings(
                config.dispatch.redis_url.clone(),
                redis_cluster,
            )?)
            .await?;
            let dispatcher = Dispatcher {
                routes: Arc::new(routes.clone()),
                nodes: Arc::new(routes),
                pusher: Arc::new(config.dispatch.push.http_pusher()?),
                retry: edgepush_dispatch::RetryPolicy::default(),
            };
            Arc::new(DirectHandoff(Arc::new(dispatcher)))
        }
    };
    Ok(Collector::new(Arc::new(store), handoff, config.api_keys))
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
