//! Collect's direct hand-off reaches API Gateway connections (managed
//! edge) the way the dispatch function does: `PostToConnection` per
//! connection, signed with the process's AWS credentials. It used to push
//! them a plain edge-node batch (`POST <endpoint>/@batch`), which API
//! Gateway does not have, so a user connected through API Gateway got
//! nothing and collect answered 503.
//!
//! The collector is built the way `main.rs` builds it (`Config`,
//! `HandoffChoice`, `AwsSettings`, `edgepush_collect::connect`) from an
//! environment of pairs, on the real MongoDB wire server
//! (`EDGEPUSH_TEST_MONGODB_URI`) and Redis (`EDGEPUSH_TEST_REDIS_URL`); a
//! real HTTP server stands in for the management API (the SDK is sent to it
//! through `AWS_ENDPOINT_URL`, the stage path kept).

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use edgepush_aws::{AwsSettings, HandoffChoice};
use edgepush_collect::{CollectRequest, Config, MESSAGES_PATH};
use edgepush_core::config::lookup_from_pairs;
use edgepush_core::protocol::SubmitResponse;
use edgepush_core::{ConnId, NodeDirectory, NodeId, RouteStore, UserId};
use edgepush_redis::RedisRouteStore;
use edgepush_testkit::{ManagementApiStandIn, TestDatabase, redis_url, unique};
use http::Method;

/// A real API Gateway connection id shape.
const APIGW_CONN: &str = "L0SM9cOFvHcCIhw=";
const API_KEY: &str = "collect-apigw-test-key";

#[tokio::test]
async fn the_direct_hand_off_posts_to_api_gateway_connections() -> Result<()> {
    let stand_in = ManagementApiStandIn::start().await?;
    let database = TestDatabase::shared()?;
    let pairs = [
        ("EDGEPUSH_API_KEYS", format!("billing:{API_KEY}")),
        ("EDGEPUSH_MONGODB_URI", database.uri().to_owned()),
        ("EDGEPUSH_MONGODB_DATABASE", database.name().to_owned()),
        ("EDGEPUSH_REDIS_URL", redis_url()?),
        ("EDGEPUSH_PUSH_ACCESS_KEY_ID", "AKIDPUSH".to_owned()),
        ("EDGEPUSH_PUSH_SECRET_ACCESS_KEY", "push-secret".to_owned()),
        ("AWS_ENDPOINT_URL", stand_in.url()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIDMANAGEDEDGE".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "managed-edge-secret".to_owned()),
    ];
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lookup = lookup_from_pairs(&pairs);

    // What main.rs does.
    let config = Config::from_lookup(&lookup).context("configuration")?;
    let handoff = HandoffChoice::from_lookup(&lookup).context("hand-off")?;
    assert_eq!(
        handoff,
        HandoffChoice::Direct,
        "no queue: dispatch in-process"
    );
    let aws = AwsSettings::from_lookup(&lookup).load().await;
    let collector = edgepush_collect::connect(&config, &handoff, &aws)
        .await
        .context("connect")?;

    // A user connected through API Gateway only: the connections function
    // registers the API's stage as a virtual node with its management
    // endpoint, and the connection as a route on it.
    let api_id = unique("t");
    let node = NodeId::new(format!("apigw-{api_id}-prod"))?;
    let endpoint = format!("https://{api_id}.execute-api.us-east-1.amazonaws.com/prod");
    let user = unique("apigw-user");
    let routes = RedisRouteStore::connect(config.dispatch.redis.clone()).await?;
    routes
        .heartbeat(&node, &endpoint, Duration::from_secs(600))
        .await?;
    routes
        .add_route(&UserId::new(&user)?, &ConnId::new(APIGW_CONN)?, &node)
        .await?;

    let response = collector
        .handle(CollectRequest {
            method: Method::POST,
            path: MESSAGES_PATH.to_owned(),
            query: None,
            authorization: Some(format!("Bearer {API_KEY}")),
            body: Bytes::from(format!(
                r#"{{"to":["{user}"],"data":{{"text":"hello"}},"idempotency_key":"apigw-1"}}"#
            )),
        })
        .await;
    assert_eq!(response.status, 202, "{}", response.body);
    let receipt: SubmitResponse = serde_json::from_str(&response.body)?;
    let message = &receipt.messages[0];

    let seen = stand_in.seen();
    assert_eq!(seen.len(), 1, "one PostToConnection: {seen:?}");
    let post = &seen[0];
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.path, "/prod/@connections/L0SM9cOFvHcCIhw%3D",
        "the management API's path under the stage, not an edge node's /@batch"
    );
    assert!(
        post.authorization
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDMANAGEDEDGE/")
            && post
                .authorization
                .contains("/us-east-1/execute-api/aws4_request"),
        "signed with the process's AWS credentials: {}",
        post.authorization
    );
    let frame: serde_json::Value = serde_json::from_slice(&post.body)?;
    assert_eq!(frame["type"], "msg");
    assert_eq!(frame["seq"], message.seq);
    assert_eq!(frame["id"], message.id.as_str());
    assert_eq!(frame["data"]["text"], "hello");

    database.cleanup().await?;
    Ok(())
}
