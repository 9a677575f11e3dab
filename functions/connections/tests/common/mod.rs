//! What the connections tests share: real API Gateway event fixtures
//! (`tests/fixtures/*.json`), the real stores (Redis at
//! `EDGEPUSH_TEST_REDIS_URL`, MongoDB at `EDGEPUSH_TEST_MONGODB_URI`, a key
//! prefix and a database per test), the real management API client
//! (`SdkConnectionPoster`, the one dispatch posts with) pointed at a real
//! HTTP server standing in for API Gateway's management API, and the real
//! dispatcher posting through it.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body as LambdaBody;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use edgepush_auth::{AuthConfig, Claims, JwtVerifier, mint_hs256};
use edgepush_connections::{Connections, RedisConnectionRecords, Settings};
use edgepush_core::protocol::PushItem;
use edgepush_core::{
    MessageStore, NewMessage, PushError, PushReport, Pusher, RouteStore, StoredMessage, UserId,
};
use edgepush_dispatch::{Dispatcher, ManagedEdgePusher, RetryPolicy, SdkConnectionPoster};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const SECRET: &[u8] = b"connections-test-secret-0123456789";
/// The connection id of the fixtures: a real API Gateway id shape.
pub const FIXTURE_CONN: &str = "L0SM9cOFvHcCIhw=";
pub const FIXTURE_NODE: &str = "apigw-abcdef1234-prod";
pub const FIXTURE_ENDPOINT: &str = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod";

pub fn redis_url() -> String {
    match std::env::var("EDGEPUSH_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("set EDGEPUSH_TEST_REDIS_URL, or run scripts/test"),
    }
}

pub fn mongodb_uri() -> String {
    match std::env::var("EDGEPUSH_TEST_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => uri,
        _ => panic!("set EDGEPUSH_TEST_MONGODB_URI, or run scripts/test"),
    }
}

/// A name no other test (or run) uses.
pub fn unique(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{test}_{}_{nanos:08x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
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

pub fn token(user: &str, ttl: Duration) -> String {
    mint_hs256(SECRET, &Claims::new(user, ttl))
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

/// Message `k` to `user`.
pub fn new_message(user: &str, k: u64) -> NewMessage {
    NewMessage {
        to: vec![UserId::new(user).expect("valid user")],
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

/// What the stand-in received for one connection, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Hello { user: String },
    Msg(u64),
    Resumed { after: u64, through: u64, more: bool },
    Pong,
    Close(u64),
    Deleted,
    Other(String),
}

impl Seen {
    fn decode(method: &str, body: &[u8]) -> Self {
        if method == "DELETE" {
            return Self::Deleted;
        }
        let text = String::from_utf8_lossy(body).into_owned();
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Self::Other(text);
        };
        let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
        match v["type"].as_str() {
            Some("hello") => Self::Hello {
                user: v["user_id"].as_str().unwrap_or_default().to_owned(),
            },
            Some("msg") => Self::Msg(n("seq")),
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

/// One request the stand-in answered.
#[derive(Debug, Clone)]
pub struct Request_ {
    pub method: String,
    pub path: String,
    pub conn: String,
    pub authorization: String,
    pub seen: Seen,
}

/// What the stand-in does besides answering 200/204.
#[derive(Default)]
struct Script {
    /// Connections answered with 410 GoneException.
    gone: HashSet<String>,
    /// Posts of these seqs are answered 500 (API Gateway failing).
    failing_seqs: HashSet<u64>,
    /// The post of seq `k` is held until a post of seq `v` was answered.
    hold_until: HashMap<u64, u64>,
    /// The post of this seq is held until the test releases it.
    pause_at: Option<u64>,
}

/// A real HTTP server answering like API Gateway's management API: `POST
/// /<stage>/@connections/<id>` 200, `DELETE` 204, 410 +
/// `x-amzn-errortype: GoneException` for gone connections. It records what
/// it answered, in the order it answered (the order a client would see
/// the frames).
pub struct ManagementApi {
    pub addr: SocketAddr,
    answered: Arc<Mutex<Vec<Request_>>>,
    script: Arc<Mutex<Script>>,
    progress: Arc<Notify>,
    paused: Arc<Notify>,
    release: Arc<Notify>,
}

impl ManagementApi {
    pub async fn start() -> Result<Self> {
        let answered: Arc<Mutex<Vec<Request_>>> = Arc::default();
        let script: Arc<Mutex<Script>> = Arc::default();
        let progress = Arc::new(Notify::new());
        let paused = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let state = (
            answered.clone(),
            script.clone(),
            progress.clone(),
            paused.clone(),
            release.clone(),
        );
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (answered, script, progress, paused, release) = state.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let path = parts.uri.path().to_owned();
                let method = parts.method.to_string();
                let conn = path
                    .rsplit_once("/@connections/")
                    .map(|(_, id)| id.replace("%3D", "=").replace("%2B", "+"))
                    .unwrap_or_default();
                let authorization = parts
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let seen = Seen::decode(&method, &body);
                let seq = match seen {
                    Seen::Msg(seq) => Some(seq),
                    _ => None,
                };
                let (gone, failing, hold, pause) = {
                    let s = script.lock().expect("script");
                    (
                        s.gone.contains(&conn),
                        seq.is_some_and(|q| s.failing_seqs.contains(&q)),
                        seq.and_then(|q| s.hold_until.get(&q).copied()),
                        seq.is_some() && seq == s.pause_at,
                    )
                };
                if let Some(until) = hold {
                    loop {
                        let notified = progress.notified();
                        let done = answered
                            .lock()
                            .expect("answered")
                            .iter()
                            .any(|r| r.conn == conn && r.seen == Seen::Msg(until));
                        if done {
                            break;
                        }
                        notified.await;
                    }
                }
                if pause {
                    let released = release.notified();
                    paused.notify_one();
                    released.await;
                }
                let builder = Response::builder().header("content-type", "application/json");
                let response = if gone {
                    builder
                        .status(StatusCode::GONE)
                        .header("x-amzn-errortype", "GoneException")
                        .header("x-amzn-requestid", "c0ffee00-0000-4000-8000-000000000001")
                        .body(Body::from(r#"{"message":null}"#))
                } else if failing {
                    builder
                        .status(StatusCode::INTERNAL_SERVER_ERROR)
                        .header("x-amzn-errortype", "InternalServerErrorException")
                        .body(Body::from(r#"{"message":"Internal server error"}"#))
                } else {
                    answered.lock().expect("answered").push(Request_ {
                        method: method.clone(),
                        path,
                        conn,
                        authorization,
                        seen,
                    });
                    progress.notify_waiters();
                    if method == "DELETE" {
                        builder.status(StatusCode::NO_CONTENT).body(Body::empty())
                    } else {
                        builder.status(StatusCode::OK).body(Body::empty())
                    }
                };
                response.unwrap_or_else(|_| Response::new(Body::empty()))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            answered,
            script,
            progress,
            paused,
            release,
        })
    }

    /// The real SDK client, with static credentials, sent here.
    pub fn poster(&self) -> SdkConnectionPoster {
        let base = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version_latest()
            .credentials_provider(Credentials::new(
                "AKIDMANAGEDEDGE",
                "managed-edge-secret",
                None,
                None,
                "test",
            ))
            .region(Region::new("us-east-1"))
            .retry_config(RetryConfig::disabled())
            .build();
        SdkConnectionPoster::new(base).with_endpoint_override(format!("http://{}", self.addr))
    }

    /// Everything answered so far.
    pub fn answered(&self) -> Vec<Request_> {
        self.answered.lock().expect("answered").clone()
    }

    /// What `conn` got, in order.
    pub fn seen(&self, conn: &str) -> Vec<Seen> {
        self.answered()
            .into_iter()
            .filter(|r| r.conn == conn)
            .map(|r| r.seen)
            .collect()
    }

    pub fn gone(&self, conn: &str) {
        self.script.lock().expect("script").gone.insert(conn.into());
    }

    pub fn fail_seq(&self, seq: u64) {
        self.script
            .lock()
            .expect("script")
            .failing_seqs
            .insert(seq);
    }

    pub fn heal_seq(&self, seq: u64) {
        self.script
            .lock()
            .expect("script")
            .failing_seqs
            .remove(&seq);
    }

    pub fn hold_until(&self, seq: u64, until: u64) {
        self.script
            .lock()
            .expect("script")
            .hold_until
            .insert(seq, until);
    }

    /// Holds the post of `seq` until [`release`](Self::release).
    pub fn pause_at(&self, seq: u64) {
        self.script.lock().expect("script").pause_at = Some(seq);
    }

    /// Waits until the post of the paused seq has arrived.
    pub async fn paused(&self) -> Result<()> {
        tokio::time::timeout(Duration::from_secs(60), self.paused.notified())
            .await
            .context("the paused post never came")
    }

    pub fn release(&self) {
        self.script.lock().expect("script").pause_at = None;
        self.release.notify_one();
    }
}

/// Edge nodes are not part of these tests: a batch for one is a bug.
pub struct NoEdgeNodes;

#[async_trait]
impl Pusher for NoEdgeNodes {
    async fn push(&self, push_url: &str, _items: &[PushItem]) -> Result<PushReport, PushError> {
        Err(PushError::Unreachable {
            url: push_url.to_owned(),
            reason: "no edge node in this test".into(),
        })
    }
}

/// The handlers on a private key prefix and database, the stand-in, and
/// the stores to inspect.
pub struct Env {
    pub connections: Connections,
    pub routes: Arc<RedisRouteStore>,
    pub records: Arc<RedisConnectionRecords>,
    pub messages: Arc<MongoMessageStore>,
    pub api: ManagementApi,
    pub dispatcher: Dispatcher,
    redis: redis::aio::MultiplexedConnection,
    pub prefix: String,
    db_name: String,
}

impl Env {
    pub async fn new(test: &str) -> Result<Self> {
        Self::with_settings(test, Settings::default()).await
    }

    pub async fn with_settings(test: &str, settings: Settings) -> Result<Self> {
        let prefix = format!("eptest:{}", unique(test));
        let config = RedisConfig {
            key_prefix: prefix.clone(),
            route_ttl: Duration::from_secs(600),
            ..RedisConfig::new(redis_url())
        };
        let routes = Arc::new(RedisRouteStore::connect(config.clone()).await?);
        let records = Arc::new(RedisConnectionRecords::connect(&config).await?);
        let redis = redis::Client::open(redis_url())?
            .get_multiplexed_async_connection()
            .await?;
        let db_name = unique("ept_conn");
        let mut mongo = MongoConfig::new(mongodb_uri());
        mongo.database = db_name.clone();
        let messages = Arc::new(MongoMessageStore::connect(mongo).await?);
        let api = ManagementApi::start().await?;
        let poster = Arc::new(api.poster());
        let connections = Connections {
            routes: routes.clone(),
            nodes: routes.clone(),
            records: records.clone(),
            verifier: Some(Arc::new(JwtVerifier::new(AuthConfig::hs256(
                SECRET.to_vec(),
            ))?)),
            messages: messages.clone(),
            poster: poster.clone(),
            settings: Settings {
                region: Some("us-east-1".into()),
                ..settings
            },
        };
        let dispatcher = Dispatcher {
            routes: routes.clone(),
            nodes: routes.clone(),
            pusher: Arc::new(ManagedEdgePusher::new(Arc::new(NoEdgeNodes), poster)),
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
            api,
            dispatcher,
            redis,
            prefix,
            db_name,
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
        let mut value = fixture("connect.json")?;
        value["requestContext"]["connectionId"] = json!(conn);
        value["requestContext"]["connectedAt"] = json!(now_ms());
        value["requestContext"]["authorizer"]["userId"] = json!(user);
        value["requestContext"]["authorizer"]["principalId"] = json!(user);
        if let Some(exp) = exp {
            value["requestContext"]["authorizer"]["exp"] = json!(exp);
        }
        if let Some(after) = after {
            value = with_query(value, &[("after", &after.to_string())]);
        }
        self.handle(value).await
    }

    /// A `$default` frame `body` from `conn` of `user`.
    pub async fn frame(&self, conn: &str, user: &str, body: &str) -> Result<ApiGatewayProxyResponse> {
        let mut value = fixture("default-ack.json")?;
        value["requestContext"]["connectionId"] = json!(conn);
        value["requestContext"]["authorizer"]["userId"] = json!(user);
        value["requestContext"]["authorizer"]["principalId"] = json!(user);
        value["body"] = json!(body);
        self.handle(value).await
    }

    /// `$disconnect` of `conn` of `user`.
    pub async fn disconnect(&self, conn: &str, user: &str) -> Result<ApiGatewayProxyResponse> {
        let mut value = fixture("disconnect.json")?;
        value["requestContext"]["connectionId"] = json!(conn);
        value["requestContext"]["authorizer"]["userId"] = json!(user);
        value["requestContext"]["authorizer"]["principalId"] = json!(user);
        self.handle(value).await
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
    pub async fn dispatch(&self, messages: &[StoredMessage]) -> Result<edgepush_dispatch::DispatchReport> {
        Ok(self.dispatcher.dispatch(messages).await?)
    }

    pub async fn routes_of(&self, name: &str) -> Result<Vec<(String, String)>> {
        let routes = self.routes.routes_of(&[user(name)]).await?;
        let mut out: Vec<(String, String)> = routes
            .into_iter()
            .flatten()
            .map(|(c, n)| (c.to_string(), n.to_string()))
            .collect();
        out.sort();
        Ok(out)
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

    pub async fn cleanup(mut self) -> Result<()> {
        let keys = self.keys().await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut self.redis)
                .await?;
        }
        let client = mongodb::Client::with_uri_str(mongodb_uri()).await?;
        client.database(&self.db_name).drop().await?;
        Ok(())
    }
}

/// What a client following the protocol shows of `frames`: drops seqs it
/// has, holds early ones until the gap before them is filled. Returns the
/// seqs shown, in order, and the seqs still held.
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

pub fn ensure_status(response: &ApiGatewayProxyResponse, status: i64, what: &str) -> Result<()> {
    if response.status_code != status {
        bail!(
            "{what}: status {} (expected {status}): {}",
            response.status_code,
            body_text(response)
        );
    }
    Ok(())
}
