//! Shared by the emulator tests: the endpoint, clients and unique names.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use edgepush_aws::AwsSettings;

/// The variable naming the AWS emulator (LocalStack or moto).
pub(crate) const ENDPOINT_VAR: &str = "EDGEPUSH_TEST_AWS_ENDPOINT";

/// The emulator's URL; fails the test clearly when it is not set.
pub(crate) fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "set {ENDPOINT_VAR} to an AWS emulator (LocalStack or moto), \
             e.g. from `scripts/start-localstack`, or run scripts/test"
        ),
    }
}

/// SDK configuration for the emulator.
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    AwsSettings::for_endpoint(endpoint()).load().await
}

/// A name no other test (or earlier run) uses: `prefix-<pid>-<nanos>-<n>`.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
