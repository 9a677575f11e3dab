//! The collector of a deployment (feature `aws`): the message and topic
//! stores of the configuration, the presence store, and the hand-off it
//! chooses, built one way for the binary and for the tests that check it.

use std::sync::Arc;

use edgepush_aws::{HandoffChoice, SqsHandoff};
use edgepush_core::{Handoff, RouteError, StoreError};
use edgepush_dispatch::DirectHandoff;
use edgepush_mongo::{MongoMessageStore, MongoTopicStore};
use edgepush_redis::RedisRouteStore;

use crate::{Collector, Config, Topics};

/// The collector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// MongoDB could not be reached.
    #[error("message store: {0}")]
    Store(#[from] StoreError),
    /// Redis (presence reads, which nodes are live) could not be reached.
    #[error("redis: {0}")]
    Routes(#[from] RouteError),
    /// The in-process dispatcher could not be built.
    #[error(transparent)]
    Dispatch(#[from] edgepush_dispatch::ConnectError),
}

/// Connects MongoDB (messages, topic messages) and Redis (presence, live
/// nodes), and builds the hand-off `choice` names: SQS through the
/// AWS configuration `aws`, or dispatch in this process, built exactly as
/// the dispatch function builds it ([`edgepush_dispatch::connect`]: edge
/// nodes and API Gateway connections alike).
pub async fn connect(
    config: &Config,
    choice: &HandoffChoice,
    aws: &aws_config::SdkConfig,
) -> Result<Collector, ConnectError> {
    let store = MongoMessageStore::connect(config.mongo.clone()).await?;
    let topic_store = MongoTopicStore::on(store.database(), config.mongo.clone()).await?;
    let routes = Arc::new(RedisRouteStore::connect(config.dispatch.redis.clone()).await?);
    let topics = Topics {
        store: Arc::new(topic_store),
        namespaces: config.namespaces.clone(),
        presence: routes.clone(),
        nodes: routes,
    };
    let handoff: Arc<dyn Handoff> = match choice {
        HandoffChoice::Sqs(sqs) => Arc::new(SqsHandoff::from_sdk_config(aws, sqs.clone())),
        HandoffChoice::Direct => {
            let dispatcher = edgepush_dispatch::connect(&config.dispatch, aws).await?;
            Arc::new(DirectHandoff::new(Arc::new(dispatcher)))
        }
    };
    Ok(Collector::new(Arc::new(store), handoff, config.api_keys.clone()).with_topics(topics))
}
