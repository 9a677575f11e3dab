//! The dispatch Lambda function's entry point: the shared start-up path
//! ([`edgepush_startup::start`]), the typed configuration, the dispatcher
//! ([`edgepush_dispatch::connect`]), then SQS batches with
//! [`edgepush_dispatch::sqs_handler`] or direct invocations with
//! [`edgepush_dispatch::handler`].
//!
//! Environment: `EDGEPUSH_REDIS_URL` (and `EDGEPUSH_REDIS_CLUSTER`),
//! `EDGEPUSH_PUSH_ACCESS_KEY_ID`, `EDGEPUSH_PUSH_SECRET_ACCESS_KEY`,
//! `EDGEPUSH_PUSH_REGION` (default `us-east-1`), `EDGEPUSH_DISPATCH_EVENT`
//! (`sqs`, the default, or `direct`), `RUST_LOG` (default `info`). Any
//! `EDGEPUSH_*` value may be `ssm:/name`, `secretsmanager:<id>` or
//! `secretsmanager:<id>#<key>`, resolved once at start.
//!
//! `dispatch consume` runs the long-running SQS consumer instead
//! ([`edgepush_dispatch::consumer`]: `EDGEPUSH_QUEUE_URL` and
//! `EDGEPUSH_CONSUMER_*`) until SIGTERM or SIGINT, for deployments without
//! Lambda.

use aws_lambda_events::sqs::SqsEvent;
use edgepush_aws::AwsSettings;
use edgepush_dispatch::{Config, DispatchEvent, EventSource, consumer, handler, sqs_handler};
use edgepush_startup::{LogFailure as _, LogStyle};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let consume = edgepush_startup::long_running("dispatch", "consume", std::env::args().skip(1))?;
    let env = edgepush_startup::start(LogStyle::of_function(consume)).await?;
    let config = Config::from_lookup(env.lookup()).log_failure("invalid configuration")?;
    let source = EventSource::from_lookup(env.lookup()).log_failure("invalid configuration")?;
    tracing::info!(?config, ?source, "starting dispatch");

    let aws = AwsSettings::from_lookup(env.lookup()).load().await;
    let dispatcher = edgepush_dispatch::connect(&config, &aws)
        .await
        .log_failure("startup failed")?;
    let dispatcher = &dispatcher;
    if consume {
        let shutdown = edgepush_startup::shutdown_signal();
        return Ok(consumer::serve(dispatcher, env.lookup(), &aws, shutdown)
            .await
            .log_failure("invalid configuration")?);
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
