//! The `auth` Lambda binary: reads the verifier config from the environment
//! once per cold start, then serves invocations with [`handler`].

use std::sync::Arc;

use edgepush_auth::{AuthConfig, JwtVerifier};
use edgepush_auth_fn::{AuthRequest, handler};
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

    // A bad config fails the cold start loudly instead of refusing every
    // token later.
    let verifier = match AuthConfig::from_lookup(|k| std::env::var(k).ok()).and_then(|config| {
        tracing::info!(config = ?config, "auth function starting");
        JwtVerifier::new(config)
    }) {
        Ok(verifier) => Arc::new(verifier),
        Err(e) => {
            tracing::error!(error = %e, "invalid auth configuration");
            return Err(e.into());
        }
    };

    lambda_runtime::run(service_fn(move |event: LambdaEvent<AuthRequest>| {
        let verifier = Arc::clone(&verifier);
        async move { handler(verifier.as_ref(), event).await }
    }))
    .await
}
