//! The collect API in the test process: the real [`Collector`] on an axum
//! server on 127.0.0.1:0, over the real MongoDB message store and a real
//! dispatch path (the Redis route store, node directory and the signed
//! HTTP pusher), exactly as a collect deployment without a queue wires it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use edgepush_collect::{ApiKeys, Collector, Topics};
use edgepush_core::Namespaces;
use edgepush_core::protocol::{Accepted, SubmitResponse};
use edgepush_core::{Handoff, HandoffError, StoredMessage, TopicMessage};
use edgepush_delivery::{HttpPusher, PushClientConfig};
use edgepush_dispatch::{DirectHandoff, DispatchReport, Dispatcher, TopicDispatchReport};
use edgepush_mongo::{MongoMessageStore, MongoTopicStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::env::TestEnv;
use crate::tokens::push_credential;

/// The API key the test collect API accepts (`Authorization: Bearer test-key`).
pub const API_KEY: &str = "test-key";
/// The source name of [`API_KEY`].
pub const SOURCE: &str = "test";

/// Where the collect API keeps and routes messages.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The route store and node directory.
    pub redis_url: String,
    /// The message store.
    pub mongodb_uri: String,
    /// The message store's database.
    pub database: String,
    /// The topic namespaces (the nodes of the test must have the same).
    pub namespaces: Namespaces,
}

impl From<&TestEnv> for CollectOptions {
    fn from(env: &TestEnv) -> Self {
        Self {
            redis_url: env.redis_url.clone(),
            mongodb_uri: env.mongodb_uri.clone(),
            database: env.database.clone(),
            namespaces: env.namespaces.clone(),
        }
    }
}

/// A running collect API.
pub struct Collect {
    addr: SocketAddr,
    /// The dispatcher behind the hand-off (its route store, node directory
    /// and pusher are the real ones).
    pub dispatcher: Arc<Dispatcher>,
    /// The collector's own message store.
    pub store: Arc<MongoMessageStore>,
    /// Its topic store.
    pub topic_store: Arc<MongoTopicStore>,
    http: reqwest::Client,
    server: JoinHandle<()>,
}

impl Collect {
    /// Starts one whose hand-off is a [`DirectHandoff`].
    pub async fn start(options: impl Into<CollectOptions>) -> anyhow::Result<Self> {
        Self::start_with(options, |dispatcher| {
            Arc::new(DirectHandoff::new(dispatcher))
        })
        .await
    }

    /// Starts one whose hand-off is what `handoff` makes of the dispatcher
    /// (to observe or break the step between the store write and dispatch).
    pub async fn start_with(
        options: impl Into<CollectOptions>,
        handoff: impl FnOnce(Arc<Dispatcher>) -> Arc<dyn Handoff>,
    ) -> anyhow::Result<Self> {
        let options = options.into();
        let routes = Arc::new(
            RedisRouteStore::connect(RedisConfig::new(options.redis_url.clone()))
                .await
                .with_context(|| {
                    format!("collect: connecting to Redis at {}", options.redis_url)
                })?,
        );
        let store = Arc::new(
            crate::inspect::message_store(&options.mongodb_uri, &options.database)
                .await
                .context("collect: message store")?,
        );
        let pusher = Arc::new(
            HttpPusher::new(PushClientConfig::new(push_credential())).context("collect: pusher")?,
        );
        let dispatcher = Arc::new(Dispatcher {
            routes: routes.clone(),
            nodes: routes.clone(),
            pusher,
            retry: edgepush_dispatch::RetryPolicy::default(),
            topic_routes: routes.clone(),
        });
        let topic_store = Arc::new(
            MongoTopicStore::on(store.database(), store.config().clone())
                .await
                .context("collect: topic store")?,
        );
        let topics = Topics {
            store: topic_store.clone(),
            namespaces: options.namespaces.clone(),
            presence: routes,
            nodes: dispatcher.nodes.clone(),
        };
        let collector = Arc::new(
            Collector::new(
                store.clone(),
                handoff(dispatcher.clone()),
                ApiKeys::single(SOURCE, API_KEY),
            )
            .with_topics(topics),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("collect: binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let app = edgepush_collect::router(collector);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "test collect server failed");
            }
        });
        Ok(Self {
            addr,
            dispatcher,
            store,
            topic_store,
            // No total timeout: collect runs in this process, so an answer
            // comes as soon as the store answers; a fixed budget here failed
            // a test on a loaded machine while collect was still working.
            http: reqwest::Client::builder().build().context("http client")?,
            server,
        })
    }

    /// `http://127.0.0.1:<port>/v1/messages`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, edgepush_collect::MESSAGES_PATH)
    }

    /// POSTs `body` with the test API key: (status, JSON answer).
    pub async fn post(&self, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.post_raw(body.to_string(), Some(API_KEY)).await
    }

    /// `http://127.0.0.1:<port>` and `path`.
    pub fn url_of(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to `path` with the test API key: (status, JSON answer).
    pub async fn post_to(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(self.url_of(path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.context("reading collect's answer")?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// GETs `path` (with its query) with the test API key: (status, JSON).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(self.url_of(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.context("reading collect's answer")?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Publishes `data` to `topic` with `key` and expects `202`: the seq.
    pub async fn publish(&self, topic: &str, data: Value, key: &str) -> anyhow::Result<u64> {
        let path = format!("/v1/topics/{topic}/messages");
        let (status, body) = self
            .post_to(
                &path,
                &serde_json::json!({ "data": data, "idempotency_key": key }),
            )
            .await?;
        if status != 202 {
            bail!("publish to {topic} answered {status} (expected 202): {body}");
        }
        body.get("seq")
            .and_then(Value::as_u64)
            .with_context(|| format!("a 202 without a seq: {body}"))
    }

    /// POSTs raw bytes with `api_key` as bearer (none when `None`): (status,
    /// JSON answer; `Value::Null` when the answer is not JSON).
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        api_key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.context("POST to collect")?;
        let status = response.status().as_u16();
        let text = response.text().await.context("reading collect's answer")?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Submits `data` to `to` and expects `202`; returns the receipts.
    pub async fn send(&self, to: &[&str], data: Value) -> anyhow::Result<Vec<Accepted>> {
        let (status, body) = self
            .post(&serde_json::json!({ "to": to, "data": data }))
            .await?;
        if status != 202 {
            bail!("collect answered {status} (expected 202): {body}");
        }
        let parsed: SubmitResponse =
            serde_json::from_value(body.clone()).with_context(|| format!("202 body {body}"))?;
        Ok(parsed.messages)
    }
}

impl Drop for Collect {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A hand-off that dispatches in process, like [`DirectHandoff`], and keeps
/// each [`DispatchReport`] so a test can see where messages went (and where
/// they did not).
pub struct ReportingHandoff {
    direct: DirectHandoff,
    reports: Mutex<Vec<DispatchReport>>,
    topic_reports: Mutex<Vec<TopicDispatchReport>>,
}

impl ReportingHandoff {
    /// Reports on dispatching with `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            direct: DirectHandoff::new(dispatcher),
            reports: Mutex::new(Vec::new()),
            topic_reports: Mutex::new(Vec::new()),
        }
    }

    /// Every report so far, oldest first.
    pub fn reports(&self) -> Vec<DispatchReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The latest report.
    pub fn last(&self) -> Option<DispatchReport> {
        self.reports().pop()
    }

    /// Every topic dispatch report so far, oldest first.
    pub fn topic_reports(&self) -> Vec<TopicDispatchReport> {
        self.topic_reports
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Handoff for ReportingHandoff {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        let report = self
            .direct
            .dispatcher()
            .dispatch(messages)
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        let undelivered = report.undelivered.len();
        if let Ok(mut reports) = self.reports.lock() {
            reports.push(report);
        }
        // As DirectHandoff: messages a live node did not take fail the
        // hand-off, so collect answers 503 and the caller retries.
        if undelivered > 0 {
            return Err(HandoffError::Unavailable(format!(
                "{undelivered} messages could not be pushed to a live node"
            )));
        }
        Ok(())
    }

    async fn hand_off_topics(&self, messages: &[TopicMessage]) -> Result<(), HandoffError> {
        let report = self
            .direct
            .dispatcher()
            .dispatch_topics(messages)
            .await
            .map_err(|e| HandoffError::Unavailable(e.to_string()))?;
        let undelivered = report.undelivered.len();
        if let Ok(mut reports) = self.topic_reports.lock() {
            reports.push(report);
        }
        if undelivered > 0 {
            return Err(HandoffError::Unavailable(format!(
                "{undelivered} topic messages could not be pushed to a live node"
            )));
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), HandoffError> {
        self.direct.ready().await
    }
}
