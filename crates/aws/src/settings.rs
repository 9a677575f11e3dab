//! The AWS SDK configuration, read through a lookup function.
//!
//! In a Lambda function the lookup is the process environment, and the
//! result is what the SDK's default chain would find anyway. Tests pass a
//! closure over a map (or use [`AwsSettings::for_endpoint`]) to point the
//! clients at an emulator without setting process variables.

use std::fmt;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// Names of the variables read by [`AwsSettings::from_lookup`]: the SDK's
/// own, so nothing new to learn.
pub mod env {
    /// Sends every client to this endpoint (LocalStack, moto).
    pub const ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
    /// The region.
    pub const REGION: &str = "AWS_REGION";
    /// The region, as older tools name it.
    pub const DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
    /// Static credentials: the access key id.
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    /// Static credentials: the secret.
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// Static credentials: the session token, when temporary.
    pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
}

/// The region used with an emulator when none is given.
pub const EMULATOR_REGION: &str = "us-east-1";

/// What to override in the SDK's default configuration. Anything left
/// `None` comes from the SDK's default chain (environment, profile,
/// container or instance metadata).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Where every client sends its requests instead of the AWS endpoint;
    /// for emulators.
    pub endpoint_url: Option<String>,
    /// The region, when not the default chain's.
    pub region: Option<String>,
    /// Static credentials `(access key id, secret, session token)`, when
    /// given explicitly; the secret is never shown by `Debug`.
    pub credentials: Option<(String, String, Option<String>)>,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.credentials.as_ref().map(|(id, _, _)| id),
            )
            .finish()
    }
}

impl AwsSettings {
    /// Reads the variables of [`env`](mod@env) through `lookup`; empty values count
    /// as unset. Credentials are taken only when both the key id and the
    /// secret are there.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let credentials = match (get(env::ACCESS_KEY_ID), get(env::SECRET_ACCESS_KEY)) {
            (Some(id), Some(secret)) => Some((id, secret, get(env::SESSION_TOKEN))),
            _ => None,
        };
        Self {
            endpoint_url: get(env::ENDPOINT_URL),
            region: get(env::REGION).or_else(|| get(env::DEFAULT_REGION)),
            credentials,
        }
    }

    /// Settings for an emulator at `endpoint_url`: region `us-east-1` and
    /// the dummy credentials `test`/`test` that LocalStack and moto accept.
    pub fn for_endpoint(endpoint_url: impl Into<String>) -> Self {
        Self {
            endpoint_url: Some(endpoint_url.into()),
            region: Some(EMULATOR_REGION.to_owned()),
            credentials: Some(("test".to_owned(), "test".to_owned(), None)),
        }
    }

    /// Loads the SDK configuration: the default chain with these overrides.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((id, secret, token)) = &self.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                token.clone(),
                None,
                "edgepush-settings",
            ));
        }
        loader.load().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgepush_core::config::lookup_from_pairs as lookup;

    #[test]
    fn reads_the_sdk_variables() {
        let s = AwsSettings::from_lookup(lookup(&[
            (env::ENDPOINT_URL, "http://127.0.0.1:4566"),
            (env::DEFAULT_REGION, "eu-west-1"),
            (env::ACCESS_KEY_ID, "AKID"),
            (env::SECRET_ACCESS_KEY, "very-secret"),
        ]));
        assert_eq!(s.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            s.credentials,
            Some(("AKID".into(), "very-secret".into(), None))
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("AKID"), "{shown}");
    }

    #[test]
    fn half_credentials_and_empty_values_are_ignored() {
        let s = AwsSettings::from_lookup(lookup(&[
            (env::ENDPOINT_URL, " "),
            (env::REGION, "us-west-2"),
            (env::DEFAULT_REGION, "eu-west-1"),
            (env::ACCESS_KEY_ID, "AKID"),
        ]));
        assert_eq!(s.endpoint_url, None);
        assert_eq!(s.region.as_deref(), Some("us-west-2"), "AWS_REGION wins");
        assert_eq!(s.credentials, None);
    }

    #[tokio::test]
    async fn load_applies_the_overrides() {
        let config = AwsSettings::for_endpoint("http://127.0.0.1:1").load().await;
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:1"));
        assert_eq!(config.region().map(|r| r.as_ref()), Some(EMULATOR_REGION));
        assert!(config.credentials_provider().is_some());
    }
}
