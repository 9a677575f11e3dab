//! The `auth` Lambda binary: reads the verifier config from the environment
//! once per cold start, then serves invocations with [`dispatch`]: the
//! `{"token"}` contract and API Gateway authorizer events alike.
//!
//! Any `EDGEPUSH_*` value may be `ssm:/name`, `secretsmanager:<id>` or
//! `secretsmanager:<id>#<key>`, resolved once here (see
//! [`edgepush_aws::secrets`]); with only literal values nothing calls AWS.

use std::sync::Arc;

use edgepush_auth::{AuthConfig, JwtVerifier};
use edgepush_auth_fn::dispatch;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON lines without colours or timestamps: CloudWatch adds the time.
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

    let env = edgepush_aws::resolve_process_env("EDGEPUSH_")
        .await
        .inspect_err(|error| tracing::error!(error = %error, "configuration not resolved"))?;

    // A bad config fails the cold start loudly instead of refusing every
    // token later.
    let verifier = match AuthConfig::from_lookup(|k| env.get(k).cloned()).and_then(|config| {
        tracing::info!(config = ?config, "auth function starting");
        JwtVerifier::new(config)
    }) {
        Ok(verifier) => Arc::new(verifier),
        Err(e) => {
            tracing::error!(error = %e, "invalid auth configuration");
            return Err(e.into());
        }
    };

    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let verifier = Arc::clone(&verifier);
        async move { dispatch(verifier.as_ref(), event).await }
    }))
    .await
}
