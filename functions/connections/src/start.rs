//! The handlers' dependencies for a configuration, built one way for the
//! binary and for the tests that check it.

use std::sync::Arc;

use edgepush_auth::JwtVerifier;
use edgepush_core::{MessageStore, RouteError, StoreError, TokenVerifier};
use edgepush_mongo::MongoMessageStore;
use edgepush_redis::RedisRouteStore;

use crate::{Config, Connections, RedisConnectionOwners};

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

/// Connects the stores of `config` and builds the verifier it asks for.
pub async fn connect(config: &Config) -> Result<Connections, ConnectError> {
    let routes = Arc::new(RedisRouteStore::connect(config.redis.clone()).await?);
    let owners = Arc::new(RedisConnectionOwners::connect(&config.redis).await?);
    let verifier: Option<Arc<dyn TokenVerifier>> = match &config.auth {
        Some(auth) => Some(Arc::new(JwtVerifier::new(auth.clone())?)),
        None => None,
    };
    let messages: Option<Arc<dyn MessageStore>> = match &config.mongo {
        Some(mongo) => Some(Arc::new(MongoMessageStore::connect(mongo.clone()).await?)),
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
