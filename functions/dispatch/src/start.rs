//! The dispatcher of a deployment, built one way for every binary that
//! dispatches: the dispatch function, and collect when it hands off
//! in-process (feature `aws`).
//!
//! Routes and liveness in Redis; edge nodes get signed batches
//! ([`HttpPusher`](edgepush_delivery::HttpPusher)), API Gateway connections
//! (managed edge) get `PostToConnection` with the process's own AWS
//! credentials ([`SdkConnectionPoster`]), both behind one
//! [`ManagedEdgePusher`].

use std::sync::Arc;

use edgepush_core::RouteError;
use edgepush_delivery::BuildError;
use edgepush_redis::RedisRouteStore;

use crate::{Config, Dispatcher, ManagedEdgePusher, RetryPolicy, SdkConnectionPoster};

/// The dispatcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Redis could not be reached.
    #[error("route store: {0}")]
    Routes(#[from] RouteError),
    /// The push client could not be built.
    #[error("push client: {0}")]
    Push(#[from] BuildError),
}

/// Connects the route store of `config` and builds the managed-edge pusher
/// on the AWS configuration `aws` (credentials and region; its endpoint URL,
/// when set, receives the `PostToConnection` calls).
pub async fn connect(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> Result<Dispatcher, ConnectError> {
    let routes = Arc::new(RedisRouteStore::connect(config.redis.clone()).await?);
    let pusher = ManagedEdgePusher::new(
        Arc::new(config.push.http_pusher()?),
        Arc::new(SdkConnectionPoster::from_sdk_config(aws)),
    )
    .with_topic_subscribers(routes.clone());
    Ok(Dispatcher {
        routes: routes.clone(),
        nodes: routes.clone(),
        pusher: Arc::new(pusher),
        retry: RetryPolicy::default(),
        topic_routes: routes,
    })
}
