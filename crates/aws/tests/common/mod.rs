//! Shared by the emulator tests: the SDK configuration for the emulator
//! (`EDGEPUSH_TEST_AWS_ENDPOINT`, from [`edgepush_testkit`]) and unique names.

#![allow(dead_code)]

use edgepush_aws::AwsSettings;
pub(crate) use edgepush_testkit::unique;

/// The emulator's URL; fails the test (the one policy for a missing server)
/// when it is not set.
pub(crate) fn endpoint() -> String {
    edgepush_testkit::aws_endpoint().unwrap_or_else(|e| panic!("{e:#}"))
}

/// SDK configuration for the emulator.
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    AwsSettings::for_endpoint(endpoint()).load().await
}
