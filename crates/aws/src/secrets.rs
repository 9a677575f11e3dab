//! Configuration values that name a parameter or a secret instead of
//! holding it.
//!
//! Any `EDGEPUSH_*` variable may be set to
//!
//! - `ssm:<parameter name>`, e.g. `ssm:/edgepush/jwt-secret`: the value of
//!   that SSM Parameter Store parameter (`GetParameter`, decrypted, so
//!   `SecureString`s work);
//! - `secretsmanager:<secret id>`: the `SecretString` of that Secrets
//!   Manager secret (name or ARN);
//! - `secretsmanager:<secret id>#<key>`: the field `key` of that secret when
//!   its string is a JSON object (as the console's key/value secrets are);
//! - anything else: the value itself.
//!
//! [`resolve_lookup`] resolves a set of variables once at start-up, each
//! distinct parameter or secret fetched once, and returns a map that the
//! typed `from_lookup` configurations read as if it were the environment.
//! Errors name the variable and the reference, never a value.

use std::collections::HashMap;

use aws_config::SdkConfig;
use futures_util::future::join_all;

use crate::AwsSettings;

pub use edgepush_core::config::{SECRETS_MANAGER_PREFIX, SSM_PREFIX};

/// What a configuration value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// The value itself.
    Literal(&'a str),
    /// An SSM parameter, by name or ARN.
    Ssm(&'a str),
    /// A Secrets Manager secret, by name or ARN, and optionally one key of
    /// its JSON object.
    SecretsManager {
        /// The secret's name or ARN.
        id: &'a str,
        /// The field of the secret's JSON object, if only one is wanted.
        key: Option<&'a str>,
    },
}

impl<'a> SecretRef<'a> {
    /// Reads `value`. A value that starts with a reference prefix is always
    /// a reference (it may still be malformed: see [`SecretSource::resolve`]).
    pub fn parse(value: &'a str) -> Self {
        if let Some(name) = value.strip_prefix(SSM_PREFIX) {
            SecretRef::Ssm(name.trim())
        } else if let Some(rest) = value.strip_prefix(SECRETS_MANAGER_PREFIX) {
            // Secret names and ARNs never contain '#'.
            match rest.rsplit_once('#') {
                Some((id, key)) => SecretRef::SecretsManager {
                    id: id.trim(),
                    key: Some(key.trim()),
                },
                None => SecretRef::SecretsManager {
                    id: rest.trim(),
                    key: None,
                },
            }
        } else {
            SecretRef::Literal(value)
        }
    }

    /// Whether resolving this needs an AWS call.
    pub fn is_reference(&self) -> bool {
        !matches!(self, SecretRef::Literal(_))
    }
}

/// A reference could not be resolved. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The reference is malformed (an empty name, id or key).
    #[error("{variable} = {reference:?} is not a valid reference: {reason}")]
    Invalid {
        /// The variable that holds the reference.
        variable: String,
        /// The reference.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The parameter or secret does not exist.
    #[error("{variable} names {reference:?}, which does not exist")]
    NotFound {
        /// The variable that holds the reference.
        variable: String,
        /// The reference.
        reference: String,
    },
    /// The secret is there but has no usable value (no such JSON key, not a
    /// JSON object, binary, or empty).
    #[error("{variable} names {reference:?}, which has no usable value: {reason}")]
    NoValue {
        /// The variable that holds the reference.
        variable: String,
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The service could not be asked (network, permissions, throttling).
    #[error("{variable}: could not read {reference:?}: {reason}")]
    Unavailable {
        /// The variable that holds the reference.
        variable: String,
        /// The reference.
        reference: String,
        /// What the SDK said.
        reason: String,
    },
}

/// Resolves references through SSM Parameter Store and Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretSource {
    /// Reads `ssm:` references.
    ssm: aws_sdk_ssm::Client,
    /// Reads `secretsmanager:` references.
    secrets: aws_sdk_secretsmanager::Client,
}

/// What one fetch found, before a variable's name is attached.
#[derive(Debug, Clone)]
enum Fetched {
    Value(String),
    NotFound,
    NoValue(String),
    Unavailable(String),
}

impl SecretSource {
    /// A source using these clients.
    pub fn new(ssm: aws_sdk_ssm::Client, secrets: aws_sdk_secretsmanager::Client) -> Self {
        Self { ssm, secrets }
    }

    /// A source with clients built from `config`.
    pub fn from_config(config: &SdkConfig) -> Self {
        Self::new(
            aws_sdk_ssm::Client::new(config),
            aws_sdk_secretsmanager::Client::new(config),
        )
    }

    /// Resolves one value held by `variable` (the name is only for errors).
    pub async fn resolve(&self, variable: &str, value: &str) -> Result<String, SecretError> {
        let reference = SecretRef::parse(value);
        check(variable, value, &reference)?;
        let fetched = match reference {
            SecretRef::Literal(v) => return Ok(v.to_owned()),
            SecretRef::Ssm(name) => self.fetch_parameter(name).await,
            SecretRef::SecretsManager { id, .. } => self.fetch_secret(id).await,
        };
        finish(variable, value, &reference, &fetched)
    }

    /// Resolves every variable of `names` that `env` has (and is not empty):
    /// the result maps each such name to its value, references replaced.
    /// Each distinct parameter or secret is fetched once, all at once.
    pub async fn resolve_lookup(
        &self,
        env: impl Fn(&str) -> Option<String>,
        names: &[&str],
    ) -> Result<HashMap<String, String>, SecretError> {
        let values = collect(&env, names);
        self.resolve_values(&values).await
    }

    /// Resolves `(variable, value)` pairs.
    async fn resolve_values(
        &self,
        values: &[(String, String)],
    ) -> Result<HashMap<String, String>, SecretError> {
        // Check every reference before calling anything.
        let parsed: Vec<(&str, &str, SecretRef<'_>)> = values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str(), SecretRef::parse(value)))
            .collect();
        for (name, value, reference) in &parsed {
            check(name, value, reference)?;
        }

        // Distinct things to fetch: a secret is fetched once whatever keys
        // of it are wanted.
        let mut parameters: Vec<&str> = Vec::new();
        let mut secrets: Vec<&str> = Vec::new();
        for (_, _, reference) in &parsed {
            match *reference {
                SecretRef::Ssm(name) if !parameters.contains(&name) => parameters.push(name),
                SecretRef::SecretsManager { id, .. } if !secrets.contains(&id) => secrets.push(id),
                _ => {}
            }
        }
        let (fetched_parameters, fetched_secrets) = tokio::join!(
            join_all(parameters.iter().map(|name| self.fetch_parameter(name))),
            join_all(secrets.iter().map(|id| self.fetch_secret(id))),
        );
        let parameters: HashMap<&str, Fetched> =
            parameters.into_iter().zip(fetched_parameters).collect();
        let secrets: HashMap<&str, Fetched> = secrets.into_iter().zip(fetched_secrets).collect();

        let mut out = HashMap::with_capacity(parsed.len());
        for (name, value, reference) in &parsed {
            let resolved = match *reference {
                SecretRef::Literal(v) => v.to_owned(),
                SecretRef::Ssm(p) => {
                    finish(name, value, reference, lookup_fetched(&parameters, p))?
                }
                SecretRef::SecretsManager { id, .. } => {
                    finish(name, value, reference, lookup_fetched(&secrets, id))?
                }
            };
            if reference.is_reference() {
                tracing::info!(variable = %name, reference = %value, "configuration value resolved");
            }
            out.insert((*name).to_owned(), resolved);
        }
        Ok(out)
    }

    /// `GetParameter` with decryption.
    async fn fetch_parameter(&self, name: &str) -> Fetched {
        match self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(output) => match output.parameter().and_then(|p| p.value()) {
                Some(value) => Fetched::Value(value.to_owned()),
                None => Fetched::NoValue("the parameter has no value".into()),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Fetched::NotFound
            }
            Err(e) => Fetched::Unavailable(crate::sdk_error::describe(&e)),
        }
    }

    /// `GetSecretValue`: the secret's string (or its binary, when UTF-8).
    async fn fetch_secret(&self, id: &str) -> Fetched {
        match self.secrets.get_secret_value().secret_id(id).send().await {
            Ok(output) => {
                if let Some(s) = output.secret_string() {
                    Fetched::Value(s.to_owned())
                } else if let Some(b) = output.secret_binary() {
                    match std::str::from_utf8(b.as_ref()) {
                        Ok(s) => Fetched::Value(s.to_owned()),
                        Err(_) => Fetched::NoValue("the secret is binary, not UTF-8 text".into()),
                    }
                } else {
                    Fetched::NoValue("the secret has no value".into())
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Fetched::NotFound
            }
            Err(e) => Fetched::Unavailable(crate::sdk_error::describe(&e)),
        }
    }
}

/// The fetch result for `key`; every key was fetched, so a miss is a bug
/// reported as unavailable rather than a panic.
fn lookup_fetched<'m>(map: &'m HashMap<&str, Fetched>, key: &str) -> &'m Fetched {
    const MISSING: &Fetched = &Fetched::Unavailable(String::new());
    map.get(key).unwrap_or(MISSING)
}

/// Refuses references with an empty name, id or key.
fn check(variable: &str, value: &str, reference: &SecretRef<'_>) -> Result<(), SecretError> {
    let reason = match reference {
        SecretRef::Ssm("") => Some("the parameter name is empty"),
        SecretRef::SecretsManager { id: "", .. } => Some("the secret id is empty"),
        SecretRef::SecretsManager { key: Some(""), .. } => Some("the JSON key after '#' is empty"),
        _ => None,
    };
    match reason {
        Some(reason) => Err(SecretError::Invalid {
            variable: variable.to_owned(),
            reference: value.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Turns a fetch into the variable's value, picking the JSON key if asked.
fn finish(
    variable: &str,
    value: &str,
    reference: &SecretRef<'_>,
    fetched: &Fetched,
) -> Result<String, SecretError> {
    let no_value = |reason: String| SecretError::NoValue {
        variable: variable.to_owned(),
        reference: value.to_owned(),
        reason,
    };
    let text = match fetched {
        Fetched::Value(text) => text,
        Fetched::NotFound => {
            return Err(SecretError::NotFound {
                variable: variable.to_owned(),
                reference: value.to_owned(),
            });
        }
        Fetched::NoValue(reason) => return Err(no_value(reason.clone())),
        Fetched::Unavailable(reason) => {
            return Err(SecretError::Unavailable {
                variable: variable.to_owned(),
                reference: value.to_owned(),
                reason: reason.clone(),
            });
        }
    };
    let resolved = match reference {
        SecretRef::SecretsManager { key: Some(key), .. } => {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|_| no_value("the secret is not a JSON object".into()))?;
            match object.get(*key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                Some(_) => return Err(no_value(format!("the key {key:?} is not a scalar"))),
                None => return Err(no_value(format!("the secret has no key {key:?}"))),
            }
        }
        _ => text.clone(),
    };
    if resolved.trim().is_empty() {
        return Err(no_value("the value is empty".into()));
    }
    Ok(resolved)
}

/// The `(name, value)` pairs of `names` that `env` has, empty values left
/// out (the configurations treat them as unset anyway).
fn collect(env: &impl Fn(&str) -> Option<String>, names: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for name in names {
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(value) = env(name).map(|v| v.trim().to_owned())
            && !value.is_empty()
        {
            out.push(((*name).to_owned(), value));
        }
    }
    out
}

/// Resolves the variables `names` read through `env`, for a `main.rs`:
/// resolve once, then hand `|name| map.get(name).cloned()` to the typed
/// configurations.
///
/// When no value is a reference nothing touches AWS (a local run needs no
/// credentials). Otherwise the SDK is configured from the same `env`
/// ([`AwsSettings::from_lookup`]: `AWS_ENDPOINT_URL`, `AWS_REGION`, ...) on
/// top of its default chain.
pub async fn resolve_lookup(
    env: impl Fn(&str) -> Option<String>,
    names: &[&str],
) -> Result<HashMap<String, String>, SecretError> {
    let values = collect(&env, names);
    if !values
        .iter()
        .any(|(_, v)| SecretRef::parse(v).is_reference())
    {
        return Ok(values.into_iter().collect());
    }
    let config = AwsSettings::from_lookup(&env).load().await;
    SecretSource::from_config(&config)
        .resolve_values(&values)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            SecretRef::parse("ssm:/edgepush/jwt-secret"),
            SecretRef::Ssm("/edgepush/jwt-secret")
        );
        assert_eq!(
            SecretRef::parse("secretsmanager:edgepush/api-keys"),
            SecretRef::SecretsManager {
                id: "edgepush/api-keys",
                key: None
            }
        );
        assert_eq!(
            SecretRef::parse(
                "secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:x-AbCd#api_keys"
            ),
            SecretRef::SecretsManager {
                id: "arn:aws:secretsmanager:us-east-1:1:secret:x-AbCd",
                key: Some("api_keys")
            }
        );
        assert_eq!(
            SecretRef::parse("redis://h:6379"),
            SecretRef::Literal("redis://h:6379")
        );
        assert!(
            !SecretRef::parse("SSM:/x").is_reference(),
            "prefixes are exact"
        );
    }

    #[test]
    fn malformed_references_are_refused_by_name() {
        for value in [
            "ssm:",
            "secretsmanager:",
            "secretsmanager:id#",
            "secretsmanager:#k",
        ] {
            let err = check("EDGEPUSH_X", value, &SecretRef::parse(value)).unwrap_err();
            assert!(
                matches!(&err, SecretError::Invalid { variable, .. } if variable == "EDGEPUSH_X"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn json_keys_are_picked_and_errors_hide_values() {
        let fetched = Fetched::Value(r#"{"a":"s3cret","n":5,"o":{}}"#.into());
        let r = |v: &'static str| finish("V", v, &SecretRef::parse(v), &fetched);
        assert_eq!(r("secretsmanager:x#a").unwrap(), "s3cret");
        assert_eq!(r("secretsmanager:x#n").unwrap(), "5");
        for bad in ["secretsmanager:x#o", "secretsmanager:x#missing"] {
            let err = r(bad).unwrap_err();
            assert!(matches!(err, SecretError::NoValue { .. }), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let plain = Fetched::Value("not json".into());
        let v = "secretsmanager:x#a";
        assert!(finish("V", v, &SecretRef::parse(v), &plain).is_err());
    }

    #[tokio::test]
    async fn literals_resolve_without_aws() {
        let env = |name: &str| match name {
            "EDGEPUSH_A" => Some("plain".to_owned()),
            "EDGEPUSH_EMPTY" => Some("  ".to_owned()),
            _ => None,
        };
        let map = resolve_lookup(env, &["EDGEPUSH_A", "EDGEPUSH_EMPTY", "EDGEPUSH_UNSET"])
            .await
            .unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map["EDGEPUSH_A"], "plain");
    }
}
