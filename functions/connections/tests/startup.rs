//! The connections function's start-up path resolves `ssm:` and
//! `secretsmanager:` values, as every function does (it used to read the
//! process environment directly, so a reference reached the Redis client
//! and the verifier as it was).
//!
//! The same steps as `main.rs` (the shared start-up path, `Config`,
//! `connect`, the handler), with an environment built from pairs instead of
//! the process's, against a real AWS emulator (`EDGEPUSH_TEST_AWS_ENDPOINT`,
//! LocalStack from scripts/test), the real Redis (`EDGEPUSH_TEST_REDIS_URL`)
//! and MongoDB (`EDGEPUSH_TEST_MONGODB_URI`).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_sdk_ssm::types::ParameterType;
use edgepush_auth::{Claims, mint_hs256};
use edgepush_aws::AwsSettings;
use edgepush_connections::{
    Config, ConnectionRecords as _, ConnectionsAnswer, ConnectionsEvent, RedisConnectionRecords,
    handler,
};
use edgepush_core::ConnId;
use edgepush_startup::Env;
use edgepush_testkit::{TestDatabase, aws_endpoint, redis_url, unique};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

fn connect_event(token: &str) -> Result<ConnectionsEvent> {
    let path = format!("{}/tests/fixtures/connect.json", env!("CARGO_MANIFEST_DIR"));
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    // No authorizer: the function verifies the token itself, with the key
    // that came from Secrets Manager.
    if let Some(context) = value["requestContext"].as_object_mut() {
        context.remove("authorizer");
    }
    value["queryStringParameters"] = json!({ "token": token });
    value["multiValueQueryStringParameters"] = json!({ "token": [token] });
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(value)?;
    Ok(event.into())
}

/// The status of the function's answer to a WebSocket event.
fn status(answer: &ConnectionsAnswer) -> Result<i64> {
    match answer {
        ConnectionsAnswer::WebSocket(response) => Ok(response.status_code),
        other => anyhow::bail!("not a WebSocket answer: {other:?}"),
    }
}

#[tokio::test]
async fn references_are_resolved_before_the_stores_and_the_verifier_see_them() -> Result<()> {
    let endpoint = aws_endpoint()?;
    let redis_url = redis_url()?;
    let jwt_secret = "connections-secret-from-secrets-manager";
    let db = TestDatabase::shared()?;

    // The references: the Redis URL in SSM, the JWT key in a JSON secret.
    let sdk = AwsSettings::for_endpoint(&endpoint).load().await;
    let parameter = format!("/{}/redis-url", unique("edgepush-connections"));
    aws_sdk_ssm::Client::new(&sdk)
        .put_parameter()
        .name(&parameter)
        .value(&redis_url)
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .context("PutParameter")?;
    let secret = unique("edgepush-connections-jwt");
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&secret)
        .secret_string(json!({ "jwt": jwt_secret }).to_string())
        .send()
        .await
        .context("CreateSecret")?;

    let env = Env::from_pairs([
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("EDGEPUSH_REDIS_URL", format!("ssm:{parameter}")),
        ("EDGEPUSH_MONGODB_URI", db.uri().to_owned()),
        ("EDGEPUSH_MONGODB_DATABASE", db.name().to_owned()),
        (
            "EDGEPUSH_JWT_SECRET",
            format!("secretsmanager:{secret}#jwt"),
        ),
    ])
    .resolve()
    .await
    .context("resolving the references")?;
    let config = Config::from_lookup(env.lookup()).context("configuration")?;
    assert_eq!(
        config.redis.url, redis_url,
        "the URL from SSM, not the reference"
    );
    assert!(config.auth.is_some(), "the JWT key turns verification on");

    // The stores and the verifier the function would serve with.
    let aws = AwsSettings::from_lookup(env.lookup()).load().await;
    let connections = edgepush_connections::connect(&config, &aws)
        .await
        .context("connecting with the resolved values")?;
    let user = unique("ssm-user");
    let token = mint_hs256(
        jwt_secret.as_bytes(),
        &Claims::new(&user, Duration::from_secs(300)),
    );
    let response = handler(
        &connections,
        LambdaEvent::new(connect_event(&token)?, Context::default()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        status(&response)? == 200,
        "a token signed with the secret's key is accepted: {response:?}"
    );
    let record = RedisConnectionRecords::connect(&config.redis)
        .await?
        .record(&ConnId::new("L0SM9cOFvHcCIhw=")?)
        .await?
        .context("the connection is recorded in the resolved Redis")?;
    assert_eq!(record.user.as_str(), user);

    // A token signed with another key is refused: the key really is the
    // secret's value.
    let forged = mint_hs256(
        b"not-the-secret-not-the-secret",
        &Claims::new(&user, Duration::from_secs(300)),
    );
    let response = handler(
        &connections,
        LambdaEvent::new(connect_event(&forged)?, Context::default()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(status(&response)?, 401, "{response:?}");
    db.cleanup().await
}

#[tokio::test]
async fn a_missing_parameter_stops_the_start_with_its_name() -> Result<()> {
    let endpoint = aws_endpoint()?;
    let missing = format!("ssm:/{}/nope", unique("edgepush-connections"));
    let err = Env::from_pairs([
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("EDGEPUSH_REDIS_URL", missing),
    ])
    .resolve()
    .await
    .expect_err("the parameter does not exist");
    assert!(err.to_string().contains("EDGEPUSH_REDIS_URL"), "{err}");
    Ok(())
}
