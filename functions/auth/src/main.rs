//! The `auth` Lambda binary: the shared start-up path
//! ([`edgepush_startup::start`]), the verifier configuration read once per
//! cold start, then invocations served with [`dispatch`]: the `{"token"}`
//! contract and API Gateway authorizer events alike.
//!
//! Any `EDGEPUSH_*` value may be `ssm:/name`, `secretsmanager:<id>` or
//! `secretsmanager:<id>#<key>`, resolved once at start; with only literal
//! values nothing calls AWS.

use std::sync::Arc;

use edgepush_auth::{AuthConfig, JwtVerifier};
use edgepush_auth_fn::dispatch;
use edgepush_startup::{LogFailure as _, LogStyle};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = edgepush_startup::start(LogStyle::Lambda).await?;
    // A bad config fails the cold start loudly instead of refusing every
    // token later.
    let config = AuthConfig::from_lookup(env.lookup()).log_failure("invalid auth configuration")?;
    tracing::info!(config = ?config, "auth function starting");
    let verifier = Arc::new(JwtVerifier::new(config).log_failure("invalid auth configuration")?);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let verifier = Arc::clone(&verifier);
        async move { dispatch(verifier.as_ref(), event).await }
    }))
    .await
}
