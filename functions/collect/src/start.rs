//! The collector of a deployment (feature `aws`): the message store of the
//! configuration and the hand-off it chooses, built one way for the binary
//! and for the tests that check it.

use std::sync::Arc;

use edgepush_aws::{HandoffChoice, SqsHandoff};
use edgepush_core::{Handoff, StoreError};
use edgepush_dispatch::DirectHandoff;
use edgepush_mongo::MongoMessageStore;

use crate::{Collector, Config};

/// The collector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// MongoDB could not be reached.
    #[error("message store: {0}")]
    Store(#[from] StoreError),
    /// The in-process dispatcher could not be built.
    #[error(transparent)]
    Dispatch(#[from] edgepush_dispatch::ConnectError),
}

/// Connects MongoDB and builds the hand-off `choice` names: SQS through the
/// AWS configuration `aws`, or dispatch in this process, built exactly as
/// the dispatch function builds it ([`edgepush_dispatch::connect`]: edge
/// nodes and API Gateway connections alike).
pub async fn connect(
    config: &Config,
    choice: &HandoffChoice,
    aws: &aws_config::SdkConfig,
) -> Result<Collector, ConnectError> {
    let store = MongoMessageStore::connect(config.mongo.clone()).await?;
    let handoff: Arc<dyn Handoff> = match choice {
        HandoffChoice::Sqs(sqs) => Arc::new(SqsHandoff::from_sdk_config(aws, sqs.clone())),
        HandoffChoice::Direct => {
            let dispatcher = edgepush_dispatch::connect(&config.dispatch, aws).await?;
            Arc::new(DirectHandoff(Arc::new(dispatcher)))
        }
    };
    Ok(Collector::new(
        Arc::new(store),
        handoff,
        config.api_keys.clone(),
    ))
}
