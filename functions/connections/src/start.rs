//! The handlers' dependencies for a configuration, built one way for the
//! binary and for the tests that check it.

use std::sync::Arc;

use edgepush_auth::JwtVerifier;
use edgepush_core::{RouteError, StoreError, TokenVerifier};
use edgepush_dispatch::SdkConnectionPoster;
use edgepush_mongo::{MongoMessageStore, MongoTopicStore};
use edgepush_redis::RedisRouteStore;

use crate::{Config, Connections, RedisConnectionRecords};

/// The handlers' dependencies could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Redis could not be reached.
    #[error("route store: {0}")]
    Routes(#[from] RouteError),
    /// MongoDB could not be reached.
    #[error("message store: {0}")]
    Store(#[from] StoreError),
    /// The token verifier refused its keys.
    #[error("token verification: {0}")]
    Auth(#[from] edgepush_auth::ConfigError),
}

/// Connects the stores of `config`, builds the verifier it asks for, and
/// the management API client on the AWS configuration `aws` (the
/// function's credentials and region; its endpoint URL, when set, receives
/// the calls), the same client dispatch posts with.
pub async fn connect(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> Result<Connections, ConnectError> {
    let routes = Arc::new(RedisRouteStore::connect(config.redis.clone()).await?);
    let records = Arc::new(RedisConnectionRecords::connect(&config.redis).await?);
    let verifier: Option<Arc<dyn TokenVerifier>> = match &config.auth {
        Some(auth) => Some(Arc::new(JwtVerifier::new(auth.clone())?)),
        None => None,
    };
    let messages = Arc::new(MongoMessageStore::connect(config.mongo.clone()).await?);
    let topics = Arc::new(MongoTopicStore::connect(config.mongo.clone()).await?);
    Ok(Connections {
        routes: routes.clone(),
        nodes: routes.clone(),
        topics,
        topic_routes: routes.clone(),
        subscriptions: routes,
        records,
        verifier,
        messages,
        poster: Arc::new(SdkConnectionPoster::from_sdk_config(aws)),
        settings: config.settings.clone(),
    })
}
