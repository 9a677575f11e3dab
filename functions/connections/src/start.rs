//! The handlers' dependencies for a configuration, built one way for the
//! binary and for the tests that check it.

use std::sync::Arc;

use edgepush_auth::JwtVerifier;
use edgepush_core::protocol::{PushItem, TopicPushItem, TopicPushResult};
use edgepush_core::{PushError, PushReport, Pusher, RouteError, StoreError, TokenVerifier};
use edgepush_dispatch::{Dispatcher, ManagedEdgePusher, RetryPolicy, SdkConnectionPoster};
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
    /// The edge nodes' push client could not be built.
    #[error("push client: {0}")]
    Push(#[from] edgepush_delivery::BuildError),
}

/// The edge-node pusher of a deployment without the push credential
/// (`EDGEPUSH_PUSH_*` unset: API Gateway connections only): a client
/// publish to a topic with edge-node subscribers is refused `unavailable`
/// rather than dropped.
struct NoPushCredential;

#[async_trait::async_trait]
impl Pusher for NoPushCredential {
    async fn push(&self, push_url: &str, _: &[PushItem]) -> Result<PushReport, PushError> {
        Err(Self::refused(push_url))
    }

    async fn push_topics(
        &self,
        push_url: &str,
        _: &[TopicPushItem],
    ) -> Result<TopicPushResult, PushError> {
        Err(Self::refused(push_url))
    }
}

impl NoPushCredential {
    fn refused(url: &str) -> PushError {
        PushError::Refused {
            url: url.to_owned(),
            status: 501,
            body: "the connections function has no push credential for edge nodes (set EDGEPUSH_PUSH_ACCESS_KEY_ID and EDGEPUSH_PUSH_SECRET_ACCESS_KEY)".into(),
        }
    }
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
    let poster = Arc::new(SdkConnectionPoster::from_sdk_config(aws));
    // Client publishes fan out as dispatch does: edge nodes with signed
    // batches when the push credential is configured, API Gateway
    // connections through the management API.
    let edge: Arc<dyn Pusher> = match &config.push {
        Some(push) => Arc::new(push.http_pusher()?),
        None => Arc::new(NoPushCredential),
    };
    let fanout = Dispatcher {
        routes: routes.clone(),
        nodes: routes.clone(),
        topic_routes: routes.clone(),
        pusher: Arc::new(
            ManagedEdgePusher::new(edge, poster.clone()).with_topic_subscribers(routes.clone()),
        ),
        retry: RetryPolicy::default(),
    };
    Ok(Connections {
        routes: routes.clone(),
        nodes: routes.clone(),
        topics,
        topic_routes: routes.clone(),
        presence: routes.clone(),
        subscriptions: routes,
        records,
        verifier,
        messages,
        poster,
        fanout: Arc::new(fanout),
        settings: config.settings.clone(),
    })
}
