//! The managed-edge handlers against real API Gateway WebSocket event
//! payloads (`tests/fixtures/*.json`) and the real stores: Redis
//! (`EDGEPUSH_TEST_REDIS_URL`) for routes, virtual nodes and owners, MongoDB
//! (`EDGEPUSH_TEST_MONGODB_URI`) for acks. Each test uses a key prefix and a
//! database of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use edgepush_auth::{AuthConfig, Claims, JwtVerifier, mint_hs256};
use edgepush_connections::{
    ConnectionOwners, Connections, DEFAULT_NODE_TTL, RedisConnectionOwners, Settings, handler,
};
use edgepush_core::{ConnId, MessageStore, NewMessage, NodeDirectory, NodeId, RouteStore, UserId};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::{TestDatabase, delete_prefix, redis_url, route_names, unique_prefix, user};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const SECRET: &[u8] = b"connections-test-secret-0123456789";
/// The connection id of the fixtures: a real API Gateway id shape.
const FIXTURE_CONN: &str = "L0SM9cOFvHcCIhw=";
const FIXTURE_NODE: &str = "apigw-abcdef1234-prod";
const FIXTURE_ENDPOINT: &str = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod";

fn fixture(name: &str) -> Result<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(serde_json::from_str(&text)?)
}

fn event(value: Value) -> Result<ApiGatewayWebsocketProxyRequest> {
    serde_json::from_value(value).context("the fixture is not an API Gateway WebSocket event")
}

fn without_authorizer(mut value: Value) -> Value {
    if let Some(ctx) = value["requestContext"].as_object_mut() {
        ctx.remove("authorizer");
    }
    value
}

fn with_query_token(mut value: Value, token: &str) -> Value {
    value["queryStringParameters"] = json!({ "token": token });
    value["multiValueQueryStringParameters"] = json!({ "token": [token] });
    value
}

fn token(user: &str, ttl: Duration) -> String {
    mint_hs256(SECRET, &Claims::new(user, ttl))
}

/// Message `k` to `user`.
fn new_message(user: &str, k: u64) -> NewMessage {
    NewMessage {
        to: vec![UserId::new(user).expect("valid user")],
        data: Arc::from(
            serde_json::value::RawValue::from_string(k.to_string()).expect("valid JSON"),
        ),
        source: "test".into(),
        idempotency_key: None,
    }
}

/// The handlers on a private key prefix, and the stores to inspect.
struct Env {
    connections: Connections,
    routes: Arc<RedisRouteStore>,
    owners: Arc<RedisConnectionOwners>,
    redis: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl Env {
    async fn new(test: &str) -> Result<Self> {
        let prefix = unique_prefix(test);
        let config = RedisConfig {
            key_prefix: prefix.clone(),
            route_ttl: Duration::from_secs(600),
            ..RedisConfig::new(redis_url()?)
        };
        let routes = Arc::new(RedisRouteStore::connect(config.clone()).await?);
        let owners = Arc::new(RedisConnectionOwners::connect(&config).await?);
        let redis = redis::Client::open(redis_url()?)?
            .get_multiplexed_async_connection()
            .await?;
        let connections = Connections {
            routes: routes.clone(),
            nodes: routes.clone(),
            owners: owners.clone(),
            verifier: Some(Arc::new(JwtVerifier::new(AuthConfig::hs256(
                SECRET.to_vec(),
            ))?)),
            messages: None,
            settings: Settings {
                region: Some("us-east-1".into()),
                ..Settings::default()
            },
        };
        Ok(Self {
            connections,
            routes,
            owners,
            redis,
            prefix,
        })
    }

    async fn handle(&self, value: Value) -> Result<ApiGatewayProxyResponse> {
        Ok(self.connections.handle(&event(value)?).await)
    }

    async fn routes_of(&self, name: &str) -> Result<Vec<(String, String)>> {
        Ok(route_names(&self.routes.routes_of(&[user(name)]).await?[0]))
    }

    async fn owner(&self, conn: &str) -> Result<Option<String>> {
        Ok(self
            .owners
            .owner(&ConnId::new(conn)?)
            .await?
            .map(|u| u.to_string()))
    }

    /// Every key under this test's prefix.
    async fn keys(&mut self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut self.redis)
            .await?;
        keys.sort();
        Ok(keys)
    }

    async fn cleanup(self) -> Result<()> {
        delete_prefix(&redis_url()?, &self.prefix).await?;
        Ok(())
    }
}

fn body_text(response: &ApiGatewayProxyResponse) -> String {
    match &response.body {
        Some(Body::Text(text)) => text.clone(),
        Some(Body::Binary(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    }
}

fn error_code(response: &ApiGatewayProxyResponse) -> String {
    serde_json::from_str::<Value>(&body_text(response))
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn connect_with_authorizer_context_registers_the_route_and_the_virtual_node() -> Result<()> {
    let mut env = Env::new("connect_authorizer").await?;
    let response = env.handle(fixture("connect.json")?).await?;
    assert_eq!(response.status_code, 200, "{}", body_text(&response));

    assert_eq!(
        env.routes_of("alice").await?,
        [(FIXTURE_CONN.to_owned(), FIXTURE_NODE.to_owned())]
    );
    let node = NodeId::new(FIXTURE_NODE)?;
    let live = env.routes.live_nodes(std::slice::from_ref(&node)).await?;
    assert_eq!(live.get(&node).map(String::as_str), Some(FIXTURE_ENDPOINT));
    // The virtual node's entry has the long TTL, not a heartbeat's seconds.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(edgepush_redis::keys::node_key(&env.prefix, &node))
        .query_async(&mut env.redis)
        .await?;
    let ttl_ms = i64::try_from(DEFAULT_NODE_TTL.as_millis())?;
    ensure!(
        pttl > ttl_ms - 60_000 && pttl <= ttl_ms,
        "virtual node PTTL {pttl} ms, expected about {ttl_ms}"
    );
    // The authorizer names the user in every event: no owner is stored.
    assert_eq!(env.owner(FIXTURE_CONN).await?, None);
    env.cleanup().await
}

#[tokio::test]
async fn connect_with_a_query_token_then_disconnect() -> Result<()> {
    let env = Env::new("connect_query").await?;
    let connect = with_query_token(
        without_authorizer(fixture("connect.json")?),
        &token("bob", Duration::from_secs(300)),
    );
    let response = env.handle(connect).await?;
    assert_eq!(response.status_code, 200, "{}", body_text(&response));
    assert_eq!(
        env.routes_of("bob").await?,
        [(FIXTURE_CONN.to_owned(), FIXTURE_NODE.to_owned())]
    );
    assert!(env.routes_of("alice").await?.is_empty());
    assert_eq!(env.owner(FIXTURE_CONN).await?.as_deref(), Some("bob"));

    // $disconnect carries no user: the remembered owner names it.
    let response = env
        .handle(without_authorizer(fixture("disconnect.json")?))
        .await?;
    assert_eq!(response.status_code, 200);
    assert!(env.routes_of("bob").await?.is_empty(), "route removed");
    assert_eq!(env.owner(FIXTURE_CONN).await?, None, "owner forgotten");
    env.cleanup().await
}

#[tokio::test]
async fn connect_with_a_bearer_header() -> Result<()> {
    let env = Env::new("connect_bearer").await?;
    let mut connect = without_authorizer(fixture("connect.json")?);
    let bearer = format!("Bearer {}", token("carol", Duration::from_secs(300)));
    connect["headers"]["Authorization"] = json!(bearer);
    connect["multiValueHeaders"]["Authorization"] = json!([bearer]);
    let response = env.handle(connect).await?;
    assert_eq!(response.status_code, 200, "{}", body_text(&response));
    assert_eq!(
        env.routes_of("carol").await?,
        [(FIXTURE_CONN.to_owned(), FIXTURE_NODE.to_owned())]
    );
    env.cleanup().await
}

#[tokio::test]
async fn bad_tokens_are_refused_and_register_nothing() -> Result<()> {
    let mut env = Env::new("connect_refused").await?;
    let base = without_authorizer(fixture("connect.json")?);
    let wrong_key = mint_hs256(
        b"another-secret-0123456789abcdef",
        &Claims::new("mallory", Duration::from_secs(300)),
    );
    let mut expired = Claims::new("mallory", Duration::from_secs(300));
    expired.exp = 1_000_000;
    let expired = mint_hs256(SECRET, &expired);
    let cases = [
        ("no token", base.clone(), 401, "missing_token"),
        (
            "wrong key",
            with_query_token(base.clone(), &wrong_key),
            401,
            "invalid_token",
        ),
        (
            "garbage",
            with_query_token(base.clone(), "not-a-jwt"),
            401,
            "invalid_token",
        ),
        (
            "expired",
            with_query_token(base.clone(), &expired),
            401,
            "token_expired",
        ),
    ];
    for (what, value, status, code) in cases {
        let response = env.handle(value).await?;
        assert_eq!(
            response.status_code,
            status,
            "{what}: {}",
            body_text(&response)
        );
        assert_eq!(error_code(&response), code, "{what}");
        assert!(
            response.headers.get("www-authenticate").is_some(),
            "{what}: 401 names the scheme"
        );
    }

    // An authorizer context that does not hold a valid user id.
    let mut bad_context = fixture("connect.json")?;
    bad_context["requestContext"]["authorizer"]["userId"] = json!("no spaces allowed");
    let response = env.handle(bad_context).await?;
    assert_eq!(response.status_code, 403, "{}", body_text(&response));

    // No authorizer and no in-process verifier: refused too.
    let mut authorizer_only = Env::new("connect_refused_no_verifier").await?;
    authorizer_only.connections.verifier = None;
    let response = authorizer_only
        .handle(with_query_token(
            base,
            &token("alice", Duration::from_secs(300)),
        ))
        .await?;
    assert_eq!(response.status_code, 401);

    assert!(
        env.keys().await?.is_empty(),
        "nothing registered: no route, no virtual node, no owner"
    );
    assert!(authorizer_only.keys().await?.is_empty());
    authorizer_only.cleanup().await?;
    env.cleanup().await
}

#[tokio::test]
async fn disconnect_removes_only_its_route() -> Result<()> {
    let env = Env::new("disconnect").await?;
    assert_eq!(env.handle(fixture("connect.json")?).await?.status_code, 200);
    // A second connection of alice, on an edge node.
    env.routes
        .add_route(
            &user("alice"),
            &ConnId::new("edge-conn-1")?,
            &NodeId::new("edge-1")?,
        )
        .await?;

    let response = env.handle(fixture("disconnect.json")?).await?;
    assert_eq!(response.status_code, 200);
    assert_eq!(
        env.routes_of("alice").await?,
        [("edge-conn-1".to_owned(), "edge-1".to_owned())]
    );

    // A disconnect nobody can attribute is answered and changes nothing.
    let response = env
        .handle(without_authorizer(fixture("disconnect.json")?))
        .await?;
    assert_eq!(response.status_code, 200);
    assert_eq!(env.routes_of("alice").await?.len(), 1);
    env.cleanup().await
}

#[tokio::test]
async fn default_route_acks_and_refuses_anything_else() -> Result<()> {
    let db = TestDatabase::shared()?;
    let mut mongo = MongoConfig::new(db.uri());
    mongo.database = db.name().to_owned();
    let store = Arc::new(MongoMessageStore::connect(mongo).await?);

    let mut env = Env::new("default_route").await?;
    // Without a message store, an ack is answered and ignored.
    let response = env.handle(fixture("default-ack.json")?).await?;
    assert_eq!(response.status_code, 200, "{}", body_text(&response));

    env.connections.messages = Some(store.clone());
    // Nothing stored yet: an ack moves nothing.
    let response = env.handle(fixture("default-ack.json")?).await?;
    assert_eq!(response.status_code, 200, "{}", body_text(&response));
    assert_eq!(store.acked(&user("alice")).await?, 0, "nothing was stored");
    for user in ["alice", "dora"] {
        for k in 0..10 {
            store.append(&new_message(user, k)).await?;
        }
    }
    // The first ack of an interval is written (through a fresh connection:
    // the gate of the one above is still closed).
    let mut first = fixture("default-ack.json")?;
    first["requestContext"]["connectionId"] = json!("AckConn1");
    let response = env.handle(first.clone()).await?;
    assert_eq!(response.status_code, 200, "{}", body_text(&response));
    assert_eq!(
        store.acked(&user("alice")).await?,
        3,
        "the ack was recorded"
    );

    // A flood of acks within the interval: coalesced, nothing written; a
    // bogus one among them is clipped to the last stored seq when written.
    for seq in [4, 1_000_000, 5] {
        let mut ack = first.clone();
        ack["body"] = json!(format!(r#"{{"type":"ack","seq":{seq}}}"#));
        assert_eq!(env.handle(ack).await?.status_code, 200);
    }
    assert_eq!(
        store.acked(&user("alice")).await?,
        3,
        "acks within the interval are coalesced"
    );
    // `$disconnect` writes the pending one, clipped.
    let mut bye = fixture("disconnect.json")?;
    bye["requestContext"]["connectionId"] = json!("AckConn1");
    assert_eq!(env.handle(bye).await?.status_code, 200);
    assert_eq!(
        store.acked(&user("alice")).await?,
        10,
        "the bogus ack is clipped to what is stored"
    );
    // A new message after the clipped ack is not hidden.
    store.append(&new_message("alice", 10)).await?;
    let next = store
        .read_after(&user("alice"), store.acked(&user("alice")).await?, 10)
        .await?;
    assert_eq!(next.iter().map(|m| m.seq).collect::<Vec<_>>(), [11]);

    // An ack of a connection admitted by token: the owner names the user.
    let mut connect = with_query_token(
        without_authorizer(fixture("connect.json")?),
        &token("dora", Duration::from_secs(300)),
    );
    connect["requestContext"]["connectionId"] = json!("DoraConn1");
    assert_eq!(env.handle(connect).await?.status_code, 200);
    let mut ack = without_authorizer(fixture("default-ack.json")?);
    ack["requestContext"]["connectionId"] = json!("DoraConn1");
    ack["body"] = json!(r#"{"type":"ack","seq":9}"#);
    assert_eq!(env.handle(ack).await?.status_code, 200);
    assert_eq!(store.acked(&user("dora")).await?, 9);

    // Anything but an ack is a bad request.
    let response = env.handle(fixture("default-bad.json")?).await?;
    assert_eq!(response.status_code, 400);
    assert_eq!(error_code(&response), "bad_request");
    for body in [
        json!("not json"),
        json!(r#"{"type":"ack","seq":-1}"#),
        json!(r#"{"type":"ack"}"#),
        Value::Null,
    ] {
        let mut bad = fixture("default-ack.json")?;
        bad["body"] = body.clone();
        let response = env.handle(bad).await?;
        assert_eq!(response.status_code, 400, "body {body}");
    }
    let mut binary = fixture("default-ack.json")?;
    binary["isBase64Encoded"] = json!(true);
    binary["body"] = json!("eyJ0eXBlIjoiYWNrIiwic2VxIjozfQ==");
    assert_eq!(env.handle(binary).await?.status_code, 400);
    assert_eq!(
        store.acked(&user("alice")).await?,
        10,
        "bad frames ack nothing"
    );

    env.cleanup().await?;
    db.cleanup().await
}

#[tokio::test]
async fn lambda_handler_answers_in_the_api_gateway_shape() -> Result<()> {
    let env = Env::new("lambda_shape").await?;
    let payload = event(fixture("connect.json")?)?;
    let response = handler(
        &env.connections,
        LambdaEvent::new(payload, Context::default()),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let json = serde_json::to_value(&response)?;
    assert_eq!(json["statusCode"], 200, "{json}");

    let payload = event(fixture("default-bad.json")?)?;
    let response = handler(
        &env.connections,
        LambdaEvent::new(payload, Context::default()),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let json = serde_json::to_value(&response)?;
    assert_eq!(json["statusCode"], 400, "{json}");
    let Some(body) = json["body"].as_str() else {
        bail!("the 400 has a text body: {json}");
    };
    assert!(body.contains("bad_request"), "{body}");
    env.cleanup().await
}
