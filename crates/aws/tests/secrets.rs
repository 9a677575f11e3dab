//! `SecretSource` and `resolve_lookup` against real SSM Parameter Store and
//! Secrets Manager emulators (LocalStack, or moto):
//! `EDGEPUSH_TEST_AWS_ENDPOINT` names it (`scripts/start-localstack`).

mod common;

use std::collections::HashMap;

use anyhow::Context as _;
use aws_sdk_ssm::types::ParameterType;
use edgepush_aws::{SecretError, SecretSource, resolve_lookup};

/// Creates a SecureString parameter and a JSON secret with unique names;
/// returns (parameter name, secret name).
async fn fixtures(config: &aws_config::SdkConfig) -> anyhow::Result<(String, String)> {
    let parameter = format!("/{}/jwt-secret", common::unique("edgepush-test"));
    aws_sdk_ssm::Client::new(config)
        .put_parameter()
        .name(&parameter)
        .value("jwt-from-ssm")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .context("PutParameter")?;
    let secret = format!("{}/api-keys", common::unique("edgepush-test"));
    aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(&secret)
        .secret_string(r#"{"api_keys":"billing:key-from-sm","port":6379}"#)
        .send()
        .await
        .context("CreateSecret")?;
    Ok((parameter, secret))
}

fn map_lookup(pairs: Vec<(&str, String)>) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    move |name| map.get(name).cloned()
}

#[tokio::test]
async fn resolves_ssm_secretsmanager_keys_and_literals() -> anyhow::Result<()> {
    let config = common::sdk_config().await;
    let (parameter, secret) = fixtures(&config).await?;
    let env = map_lookup(vec![
        ("EDGEPUSH_JWT_SECRET", format!("ssm:{parameter}")),
        ("EDGEPUSH_WHOLE_SECRET", format!("secretsmanager:{secret}")),
        (
            "EDGEPUSH_API_KEYS",
            format!("secretsmanager:{secret}#api_keys"),
        ),
        ("EDGEPUSH_PORT", format!("secretsmanager:{secret}#port")),
        ("EDGEPUSH_REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
        ("EDGEPUSH_ALSO_JWT", format!("ssm:{parameter}")),
    ]);
    let names = [
        "EDGEPUSH_JWT_SECRET",
        "EDGEPUSH_WHOLE_SECRET",
        "EDGEPUSH_API_KEYS",
        "EDGEPUSH_PORT",
        "EDGEPUSH_REDIS_URL",
        "EDGEPUSH_ALSO_JWT",
        "EDGEPUSH_UNSET",
    ];

    let source = SecretSource::from_config(&config);
    let map = source.resolve_lookup(&env, &names).await?;
    assert_eq!(map["EDGEPUSH_JWT_SECRET"], "jwt-from-ssm");
    assert_eq!(map["EDGEPUSH_ALSO_JWT"], "jwt-from-ssm");
    assert_eq!(
        map["EDGEPUSH_WHOLE_SECRET"],
        r#"{"api_keys":"billing:key-from-sm","port":6379}"#
    );
    assert_eq!(map["EDGEPUSH_API_KEYS"], "billing:key-from-sm");
    assert_eq!(map["EDGEPUSH_PORT"], "6379");
    assert_eq!(map["EDGEPUSH_REDIS_URL"], "redis://127.0.0.1:6379");
    assert!(!map.contains_key("EDGEPUSH_UNSET"));
    assert_eq!(map.len(), 6);

    // One value on its own.
    assert_eq!(
        source
            .resolve("EDGEPUSH_JWT_SECRET", &format!("ssm:{parameter}"))
            .await?,
        "jwt-from-ssm"
    );
    Ok(())
}

#[tokio::test]
async fn the_free_function_reads_the_aws_settings_from_the_same_lookup() -> anyhow::Result<()> {
    let config = common::sdk_config().await;
    let (parameter, secret) = fixtures(&config).await?;
    let env = map_lookup(vec![
        ("AWS_ENDPOINT_URL", common::endpoint()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("EDGEPUSH_JWT_SECRET", format!("ssm:{parameter}")),
        (
            "EDGEPUSH_API_KEYS",
            format!("secretsmanager:{secret}#api_keys"),
        ),
    ]);
    let map = resolve_lookup(&env, &["EDGEPUSH_JWT_SECRET", "EDGEPUSH_API_KEYS"]).await?;
    assert_eq!(map["EDGEPUSH_JWT_SECRET"], "jwt-from-ssm");
    assert_eq!(map["EDGEPUSH_API_KEYS"], "billing:key-from-sm");
    Ok(())
}

#[tokio::test]
async fn missing_parameters_and_secrets_are_clear_errors() -> anyhow::Result<()> {
    let config = common::sdk_config().await;
    let (_, secret) = fixtures(&config).await?;
    let source = SecretSource::from_config(&config);

    let missing_parameter = format!("ssm:/{}/nope", common::unique("edgepush-missing"));
    let env = map_lookup(vec![
        ("EDGEPUSH_OK", "literal".to_owned()),
        ("EDGEPUSH_JWT_SECRET", missing_parameter.clone()),
    ]);
    let err = source
        .resolve_lookup(&env, &["EDGEPUSH_OK", "EDGEPUSH_JWT_SECRET"])
        .await
        .expect_err("the parameter does not exist");
    assert_eq!(
        err,
        SecretError::NotFound {
            variable: "EDGEPUSH_JWT_SECRET".into(),
            reference: missing_parameter.clone(),
        }
    );
    let shown = err.to_string();
    assert!(
        shown.contains("EDGEPUSH_JWT_SECRET") && shown.contains(&missing_parameter),
        "the message names the variable and the parameter: {shown}"
    );

    let missing_secret = format!("secretsmanager:{}", common::unique("edgepush-missing"));
    let err = source
        .resolve("EDGEPUSH_API_KEYS", &missing_secret)
        .await
        .expect_err("the secret does not exist");
    assert!(matches!(err, SecretError::NotFound { .. }), "{err}");

    let missing_key = format!("secretsmanager:{secret}#nope");
    let err = source
        .resolve("EDGEPUSH_API_KEYS", &missing_key)
        .await
        .expect_err("the key does not exist");
    assert!(matches!(err, SecretError::NoValue { .. }), "{err}");
    assert!(
        !err.to_string().contains("key-from-sm"),
        "no secret in: {err}"
    );
    Ok(())
}

/// What `localstack/init/ready.d/10-edgepush.sh` creates (scripts/start-localstack
/// runs it on the emulator): the values resolve as the functions would read
/// them, and the hand-off queue sends its failures to the DLQ.
#[tokio::test]
async fn the_init_script_resources_are_there() -> anyhow::Result<()> {
    let config = common::sdk_config().await;
    let hint = "run localstack/init/ready.d/10-edgepush.sh against the emulator \
                (scripts/start-localstack does)";
    let env = map_lookup(vec![
        ("EDGEPUSH_JWT_SECRET", "ssm:/edgepush/jwt-secret".to_owned()),
        (
            "EDGEPUSH_PUSH_SECRET_ACCESS_KEY",
            "ssm:/edgepush/push-secret".to_owned(),
        ),
        (
            "EDGEPUSH_API_KEYS",
            "secretsmanager:edgepush/api-keys#api_keys".to_owned(),
        ),
    ]);
    let map = SecretSource::from_config(&config)
        .resolve_lookup(
            &env,
            &[
                "EDGEPUSH_JWT_SECRET",
                "EDGEPUSH_PUSH_SECRET_ACCESS_KEY",
                "EDGEPUSH_API_KEYS",
            ],
        )
        .await
        .context(hint)?;
    assert_eq!(map.len(), 3);
    assert_eq!(map["EDGEPUSH_PUSH_SECRET_ACCESS_KEY"], "dev-push-secret");
    assert!(map["EDGEPUSH_API_KEYS"].contains(':'), "name:key form");

    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .get_queue_url()
        .queue_name("edgepush-dispatch")
        .send()
        .await
        .context(hint)?
        .queue_url()
        .context("no queue URL")?
        .to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await?;
    let redrive = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
        .context("edgepush-dispatch has no RedrivePolicy")?;
    let redrive: serde_json::Value = serde_json::from_str(redrive)?;
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(":edgepush-dispatch-dlq")),
        "{redrive}"
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );
    Ok(())
}
