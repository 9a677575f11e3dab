//! What the connections tests share: real API Gateway event fixtures
//! (`tests/fixtures/*.json`), the real stores (Redis at
//! `EDGEPUSH_TEST_REDIS_URL`, MongoDB at `EDGEPUSH_TEST_MONGODB_URI`, a key
//! prefix and a database per test), the real management API client
//! (`SdkConnectionPoster`, the one dispatch posts with) sent to
//! [`ManagementApiStandIn`] (a real HTTP server answering like API
//! Gateway's management API), and the real dispatcher posting through it.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body as LambdaBody;
use edgepush_auth::{AuthConfig, Claims, JwtVerifier, mint_hs256};
use edgepush_connections::{ConnectionRecord, Connections, RedisConnectionRecords, Settings};
use edgepush_core::protocol::PushItem;
use edgepush_core::{
    MessageStore, NewMessage, PushError, PushReport, Pusher, RouteStore, StoredMessage,
};
use edgepush_dispatch::{
    DispatchReport, Dispatcher, ManagedEdgePusher, RetryPolicy, SdkConnectionPoster,
};
use edgepush_mongo::{MongoConfig, MongoMessageStore, MongoTopicStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::{
    ManagementApiStandIn, SeenRequest, TestDatabase, delete_prefix, redis_url, route_names,
    unique_prefix, user,
};
use serde_json::{Value, json};

pub const SECRET: &[u8] = b"connections-test-secret-0123456789";
/// The connection id of the fixtures: a real API Gateway id shape.
pub const FIXTURE_CONN: &str = "L0SM9cOFvHcCIhw=";
pub const FIXTURE_NODE: &str = "apigw-abcdef1234-prod";
pub const FIXTURE_ENDPOINT: &str = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod";

pub fn now_ms() -> i64 {
    edgepush_core::message::now_ms()
}

pub fn fixture(name: &str) -> Result<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn event(value: Value) -> Result<ApiGatewayWebsocketProxyRequest> {
    serde_json::from_value(value).context("the fixture is not an API Gateway WebSocket event")
}

pub fn without_authorizer(mut value: Value) -> Value {
    if let Some(ctx) = value["requestContext"].as_object_mut() {
        ctx.remove("authorizer");
    }
    value
}

/// `value` with the query string `pairs`, in both of API Gateway's forms.
pub fn with_query(mut value: Value, pairs: &[(&str, &str)]) -> Value {
    let single: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let multi: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!([v])))
        .collect();
    value["queryStringParameters"] = Value::Object(single);
    value["multiValueQueryStringParameters"] = Value::Object(multi);
    value
}

pub fn with_query_token(value: Value, token: &str) -> Value {
    with_query(value, &[("token", token)])
}

/// `value` for connection `conn` of `user` (the authorizer context's user).
pub fn for_conn(mut value: Value, conn: &str, user: &str) -> Value {
    value["requestContext"]["connectionId"] = json!(conn);
    if value["requestContext"]["authorizer"].is_object() {
        value["requestContext"]["authorizer"]["userId"] = json!(user);
        value["requestContext"]["authorizer"]["principalId"] = json!(user);
    }
    value
}

pub fn token(user: &str, ttl: Duration) -> String {
    mint_hs256(SECRET, &Claims::new(user, ttl))
}

/// Message `k` to `user`.
pub fn new_message(user_name: &str, k: u64) -> NewMessage {
    NewMessage {
        to: vec![user(user_name)],
        data: Arc::from(
            serde_json::value::RawValue::from_string(format!(r#"{{"k":{k}}}"#))
                .expect("valid JSON"),
        ),
        source: "test".into(),
        idempotency_key: None,
    }
}

pub fn body_text(response: &ApiGatewayProxyResponse) -> String {
    match &response.body {
        Some(LambdaBody::Text(text)) => text.clone(),
        Some(LambdaBody::Binary(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    }
}

pub fn error_code(response: &ApiGatewayProxyResponse) -> String {
    serde_json::from_str::<Value>(&body_text(response))
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn ensure_status(response: &ApiGatewayProxyResponse, status: i64, what: &str) -> Result<()> {
    ensure!(
        response.status_code == status,
        "{what}: status {} (expected {status}): {}",
        response.status_code,
        body_text(response)
    );
    Ok(())
}

/// The connection id a management API request is for (the path's last
/// segment, percent-decoded as API Gateway ids need: `=`, `+`, `/`).
pub fn conn_of(request: &SeenRequest) -> String {
    request
        .path
        .rsplit_once("/@connections/")
        .map(|(_, id)| {
            id.replace("%3D", "=")
                .replace("%2B", "+")
                .replace("%2F", "/")
        })
        .unwrap_or_default()
}

/// A frame the stand-in took for one connection, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Hello {
        user: String,
    },
    Msg(u64),
    TopicMsg(String, u64),
    Subscribed(String, u64),
    Unsubscribed(String),
    Refused {
        op: String,
        code: String,
    },
    Resumed {
        after: u64,
        through: u64,
        more: bool,
    },
    Pong,
    Close(u64),
    Deleted,
    Other(String),
}

impl Seen {
    pub fn decode(request: &SeenRequest) -> Self {
        if request.method == "DELETE" {
            return Self::Deleted;
        }
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Self::Other(text);
        };
        let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
        match v["type"].as_str() {
            Some("hello") => Self::Hello {
                user: v["user_id"].as_str().unwrap_or_default().to_owned(),
            },
            Some("msg") => match v["topic"].as_str() {
                Some(topic) => Self::TopicMsg(topic.to_owned(), n("seq")),
                None => Self::Msg(n("seq")),
            },
            Some("subscribed") => {
                Self::Subscribed(v["topic"].as_str().unwrap_or_default().to_owned(), n("seq"))
            }
            Some("unsubscribed") => {
                Self::Unsubscribed(v["topic"].as_str().unwrap_or_default().to_owned())
            }
            Some("error") => Self::Refused {
                op: v["op"].as_str().unwrap_or_default().to_owned(),
                code: v["code"].as_str().unwrap_or_default().to_owned(),
            },
            Some("resumed") => Self::Resumed {
                after: n("after"),
                through: n("through"),
                more: v["more"].as_bool().unwrap_or(false),
            },
            Some("pong") => Self::Pong,
            Some("close") => Self::Close(n("code")),
            _ => Self::Other(text),
        }
    }
}

/// Edge nodes are not part of these tests: a batch for one is a bug.
pub struct NoEdgeNodes;

#[async_trait::async_trait]
impl Pusher for NoEdgeNodes {
    async fn push(&self, push_url: &str, _items: &[PushItem]) -> Result<PushReport, PushError> {
        Err(PushError::Unreachable {
            url: push_url.to_owned(),
            reason: "no edge node in this test".into(),
        })
    }
}

/// The real management API client, sent to `stand_in` instead of
/// execute-api (the stage path kept).
pub fn poster(stand_in: &ManagementApiStandIn) -> SdkConnectionPoster {
    SdkConnectionPoster::new(stand_in.sdk_config()).with_endpoint_override(stand_in.url())
}

/// The handlers on a private key prefix and database, the stand-in, the
/// dispatcher, and the stores to inspect.
pub struct Env {
    pub connections: Connections,
    pub routes: Arc<RedisRouteStore>,
    pub records: Arc<RedisConnectionRecords>,
    pub messages: Arc<MongoMessageStore>,
    pub topics: Arc<MongoTopicStore>,
    pub api: ManagementApiStandIn,
    pub dispatcher: Dispatcher,
    pub redis: redis::aio::MultiplexedConnection,
    pub prefix: String,
    db: TestDatabase,
}

impl Env {
    pub async fn new(test: &str) -> Result<Self> {
        Self::with_settings(test, Settings::default()).await
    }

    pub async fn with_settings(test: &str, settings: Settings) -> Result<Self> {
        let prefix = unique_prefix(test);
        let config = RedisConfig {
            key_prefix: prefix.clone(),
            route_ttl: Duration::from_secs(600),
            ..RedisConfig::new(redis_url()?)
        };
        let routes = Arc::new(RedisRouteStore::connect(config.clone()).await?);
        let records = Arc::new(RedisConnectionRecords::connect(&config).await?);
        let redis = redis::Client::open(redis_url()?)?
            .get_multiplexed_async_connection()
            .await?;
        let db = TestDatabase::shared()?;
        let mut mongo = MongoConfig::new(db.uri());
        mongo.database = db.name().to_owned();
        let messages = Arc::new(MongoMessageStore::connect(mongo.clone()).await?);
        let topics = Arc::new(MongoTopicStore::connect(mongo).await?);
        let api = ManagementApiStandIn::start().await?;
        let poster = Arc::new(poster(&api));
        let connections = Connections {
            routes: routes.clone(),
            nodes: routes.clone(),
            records: records.clone(),
            verifier: Some(Arc::new(JwtVerifier::new(AuthConfig::hs256(
                SECRET.to_vec(),
            ))?)),
            messages: messages.clone(),
            poster: poster.clone(),
            topics: topics.clone(),
            topic_routes: routes.clone(),
            subscriptions: routes.clone(),
            settings: Settings {
                region: Some("us-east-1".into()),
                ..settings
            },
        };
        let dispatcher = Dispatcher {
            routes: routes.clone(),
            nodes: routes.clone(),
            topic_routes: routes.clone(),
            pusher: Arc::new(
                ManagedEdgePusher::new(Arc::new(NoEdgeNodes), poster)
                    .with_topic_subscribers(routes.clone()),
            ),
            // Quick retries, so a post that keeps failing is given up soon.
            retry: RetryPolicy {
                first_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                give_up_after: Duration::from_millis(200),
            },
        };
        Ok(Self {
            connections,
            routes,
            records,
            messages,
            topics,
            api,
            dispatcher,
            redis,
            prefix,
            db,
        })
    }

    pub async fn handle(&self, value: Value) -> Result<ApiGatewayProxyResponse> {
        Ok(self.connections.handle(&event(value)?).await)
    }

    /// `$connect` of `conn` for `user` through the authorizer context (with
    /// `exp` when given), with `?after=` when given, connected now.
    pub async fn connect(
        &self,
        conn: &str,
        user: &str,
        exp: Option<u64>,
        after: Option<u64>,
    ) -> Result<ApiGatewayProxyResponse> {
        let mut value = for_conn(fixture("connect.json")?, conn, user);
        value["requestContext"]["connectedAt"] = json!(now_ms());
        if let Some(exp) = exp {
            value["requestContext"]["authorizer"]["exp"] = json!(exp);
        }
        if let Some(after) = after {
            value = with_query(value, &[("after", &after.to_string())]);
        }
        self.handle(value).await
    }

    /// A `$default` frame `body` from `conn` of `user`.
    pub async fn frame(
        &self,
        conn: &str,
        user: &str,
        body: &str,
    ) -> Result<ApiGatewayProxyResponse> {
        let mut value = for_conn(fixture("default-ack.json")?, conn, user);
        value["body"] = json!(body);
        self.handle(value).await
    }

    /// [`connect`](Self::connect), which must be admitted.
    pub async fn admit(
        &self,
        conn: &str,
        user: &str,
        exp: Option<u64>,
        after: Option<u64>,
    ) -> Result<()> {
        let response = self.connect(conn, user, exp, after).await?;
        ensure_status(&response, 200, &format!("$connect of {conn}"))
    }

    /// [`frame`](Self::frame), which must be answered 200.
    pub async fn send(&self, conn: &str, user: &str, body: &str) -> Result<()> {
        let response = self.frame(conn, user, body).await?;
        ensure_status(&response, 200, &format!("{body} from {conn}"))
    }

    /// `$disconnect` of `conn` of `user`.
    pub async fn disconnect(&self, conn: &str, user: &str) -> Result<ApiGatewayProxyResponse> {
        self.handle(for_conn(fixture("disconnect.json")?, conn, user))
            .await
    }

    /// Stores `count` messages for `name`; they get the next seqs.
    pub async fn store(&self, name: &str, count: u64) -> Result<Vec<StoredMessage>> {
        let mut stored = Vec::new();
        for k in 0..count {
            stored.extend(self.messages.append(&new_message(name, k)).await?);
        }
        Ok(stored)
    }

    /// Dispatches `messages` as dispatch does after collect stored them.
    pub async fn dispatch(&self, messages: &[StoredMessage]) -> Result<DispatchReport> {
        Ok(self.dispatcher.dispatch(messages).await?)
    }

    pub async fn routes_of(&self, name: &str) -> Result<Vec<(String, String)>> {
        Ok(route_names(&self.routes.routes_of(&[user(name)]).await?[0]))
    }

    /// The managed-edge subscriptions (the route store's Redis).
    pub fn subscriptions(&self) -> &RedisRouteStore {
        &self.routes
    }

    /// The record of `conn`, if any.
    pub async fn record(&self, conn: &str) -> Result<Option<ConnectionRecord>> {
        Ok(self
            .connections
            .records
            .record(&edgepush_core::ConnId::new(conn)?)
            .await?)
    }

    /// What the stand-in took for `conn` (answered 2xx), in order.
    pub fn seen(&self, conn: &str) -> Vec<Seen> {
        self.api
            .seen()
            .iter()
            .filter(|r| r.status < 300 && conn_of(r) == conn)
            .map(Seen::decode)
            .collect()
    }

    /// Every key under this test's prefix.
    pub async fn keys(&mut self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut self.redis)
            .await?;
        keys.sort();
        Ok(keys)
    }

    pub async fn cleanup(self) -> Result<()> {
        delete_prefix(&redis_url()?, &self.prefix).await?;
        self.db.cleanup().await
    }
}

/// What a client following the managed path's rules shows of `frames`:
/// drops seqs it has, holds early ones until the gap before them is
/// filled. Returns the seqs shown, in order, and the seqs still held.
pub fn as_a_client_shows(after: u64, frames: &[Seen]) -> (Vec<u64>, Vec<u64>) {
    let mut last = after;
    let mut held = std::collections::BTreeSet::new();
    let mut shown = Vec::new();
    for frame in frames {
        if let Seen::Msg(seq) = *frame {
            if seq > last {
                held.insert(seq);
            }
            while held.remove(&(last + 1)) {
                last += 1;
                shown.push(last);
            }
        }
    }
    (shown, held.into_iter().collect())
}

/// The seqs of the `msg` frames in `frames`.
pub fn msgs(frames: &[Seen]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Seen::Msg(seq) => Some(*seq),
            _ => None,
        })
        .collect()
}
