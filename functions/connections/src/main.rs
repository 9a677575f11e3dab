//! The connections Lambda function's entry point: wires configuration,
//! logging and stores, then serves API Gateway WebSocket events with
//! [`edgepush_connections::handler`](fn@edgepush_connections::handler).
//!
//! Environment: see [`edgepush_connections::config`]; `RUST_LOG` (default
//! `info`).

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use edgepush_auth::JwtVerifier;
use edgepush_connections::{Config, Connections, RedisConnectionOwners, handler};
use edgepush_core::{MessageStore, TokenVerifier};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_lookup(|name| std::env::var(name).ok())
        .inspect_err(|error| tracing::error!(error = %error, "invalid configuration"))?;
    tracing::info!(?config, "starting connections");

    let connections = build(&config)
        .await
        .inspect_err(|error| tracing::error!(error = %error, "startup failed"))?;
    let connections = &connections;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            handler(connections, event).await
        },
    ))
    .await
}

/// Connects the stores and builds the verifier the configuration asks for.
async fn build(config: &Config) -> Result<Connections, Error> {
    let redis = RedisConfig::from_settings(
        config.redis_url.clone(),
        std::env::var("EDGEPUSH_REDIS_CLUSTER").ok().as_deref(),
    )?;
    let routes = Arc::new(RedisRouteStore::connect(redis.clone()).await?);
    let owners = Arc::new(RedisConnectionOwners::connect(&redis).await?);
    let verifier: Option<Arc<dyn TokenVerifier>> = match &config.auth {
        Some(auth) => Some(Arc::new(JwtVerifier::new(auth.clone())?)),
        None => None,
    };
    let messages: Option<Arc<dyn MessageStore>> = match &config.mongo {
        Some(target) => {
            let mut mongo = MongoConfig::new(target.uri.clone());
            if let Some(database) = &target.database {
                mongo.database = database.clone();
            }
            Some(Arc::new(MongoMessageStore::connect(mongo).await?))
        }
        None => None,
    };
    Ok(Connections {
        routes: routes.clone(),
        nodes: routes,
        owners,
        verifier,
        messages,
        settings: config.settings.clone(),
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
