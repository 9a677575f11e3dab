//! Unit tests of collect over the in-memory message store and a recording
//! fake hand-off: every refusal, the store and hand-off failure paths, the
//! happy path, the Lambda adapter (with event fixtures) and the dev router.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use bytes::Bytes;
use edgepush_core::memory::MemoryMessageStore;
use edgepush_core::protocol::{ErrorBody, SubmitResponse};
use edgepush_core::{
    Handoff, HandoffError, MessageStore, NewMessage, Seq, StoreError, StoredMessage,
    StreamPosition, UserId,
};
use http::Method;
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

use crate::{ApiKeys, CollectRequest, CollectResponse, Collector, Limits};

pub(crate) const KEYS: &str = "billing:test-key-billing,ops:test-key-ops";
pub(crate) const KEY: &str = "test-key-billing";

/// A hand-off that records what it was given and fails on demand.
#[derive(Default)]
pub(crate) struct RecordingHandoff {
    pub(crate) not_ready: bool,
    pub(crate) fail: bool,
    pub(crate) ready_calls: AtomicUsize,
    pub(crate) handed: Mutex<Vec<Vec<StoredMessage>>>,
    pub(crate) handed_topics: Mutex<Vec<Vec<edgepush_core::TopicMessage>>>,
}

impl RecordingHandoff {
    fn handed(&self) -> Vec<Vec<StoredMessage>> {
        self.handed.lock().unwrap().clone()
    }
}

#[async_trait]
impl Handoff for RecordingHandoff {
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError> {
        self.handed.lock().unwrap().push(messages.to_vec());
        if self.fail {
            return Err(HandoffError::Unavailable("queue down".into()));
        }
        Ok(())
    }

    async fn hand_off_topics(
        &self,
        messages: &[edgepush_core::TopicMessage],
    ) -> Result<(), HandoffError> {
        self.handed_topics.lock().unwrap().push(messages.to_vec());
        if self.fail {
            return Err(HandoffError::Unavailable("queue down".into()));
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), HandoffError> {
        self.ready_calls.fetch_add(1, Ordering::SeqCst);
        if self.not_ready {
            return Err(HandoffError::Unavailable("redis down".into()));
        }
        Ok(())
    }
}

/// A store whose appends fail with the error `make` builds.
struct FailingStore {
    make: fn() -> StoreError,
    appends: AtomicUsize,
}

#[async_trait]
impl MessageStore for FailingStore {
    async fn append(&self, _: &NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        Err((self.make)())
    }
    async fn read_after(
        &self,
        _: &UserId,
        _: Seq,
        _: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Err((self.make)())
    }
    async fn ack(&self, _: &UserId, _: Seq) -> Result<Seq, StoreError> {
        Err((self.make)())
    }
    async fn position(&self, _: &UserId) -> Result<StreamPosition, StoreError> {
        Err((self.make)())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err((self.make)())
    }
}

struct Fixture {
    store: Arc<MemoryMessageStore>,
    handoff: Arc<RecordingHandoff>,
    collector: Arc<Collector>,
}

fn fixture_with(handoff: RecordingHandoff) -> Fixture {
    let store = Arc::new(MemoryMessageStore::new());
    let handoff = Arc::new(handoff);
    let collector = Arc::new(Collector {
        store: store.clone(),
        handoff: handoff.clone(),
        api_keys: KEYS.parse().unwrap(),
        limits: Limits::default(),
        topics: None,
    });
    Fixture {
        store,
        handoff,
        collector,
    }
}

fn fixture() -> Fixture {
    fixture_with(RecordingHandoff::default())
}

pub(crate) fn request(
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: impl Into<Bytes>,
) -> CollectRequest {
    CollectRequest {
        method,
        path: path.into(),
        query: None,
        authorization: auth.map(str::to_owned),
        body: body.into(),
    }
}

fn post(body: impl Into<Bytes>) -> CollectRequest {
    request(
        Method::POST,
        "/v1/messages",
        Some(&format!("Bearer {KEY}")),
        body,
    )
}

/// The error code and message of an error response, checking its shape.
pub(crate) fn error_of(response: &CollectResponse) -> (String, String) {
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: ErrorBody = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {}", response.body));
    (body.error.code, body.error.message)
}

fn accepted(response: &CollectResponse) -> SubmitResponse {
    assert_eq!(response.status, 202, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_str(&response.body).unwrap()
}

fn users(response: &SubmitResponse) -> Vec<&str> {
    response
        .messages
        .iter()
        .map(|m| m.user_id.as_str())
        .collect()
}

#[tokio::test]
async fn every_bad_body_is_a_400_and_stores_nothing() {
    let long_key = "k".repeat(129);
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let big_data = format!("\"{}\"", "x".repeat(64 * 1024));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed JSON",
            "{\"to\":[\"a\"],".into(),
            "malformed JSON",
        ),
        ("empty body", String::new(), "malformed JSON"),
        (
            "trailing garbage",
            r#"{"to":["a"],"data":1} x"#.into(),
            "malformed JSON",
        ),
        ("an array", r#"[["a"], 1]"#.into(), "JSON object"),
        ("a string", r#""hello""#.into(), "JSON object"),
        ("missing to", r#"{"data":1}"#.into(), "missing field `to`"),
        (
            "missing data",
            r#"{"to":["a"]}"#.into(),
            "missing field `data`",
        ),
        (
            "to not an array",
            r#"{"to":"alice","data":1}"#.into(),
            "invalid type",
        ),
        (
            "to of numbers",
            r#"{"to":[1],"data":1}"#.into(),
            "invalid type",
        ),
        (
            "key not a string",
            r#"{"to":["a"],"data":1,"idempotency_key":5}"#.into(),
            "invalid type",
        ),
        (
            "unknown field",
            r#"{"to":["a"],"data":1,"prio":9}"#.into(),
            "unknown field `prio`",
        ),
        (
            "duplicate field",
            r#"{"to":["a"],"to":["b"],"data":1}"#.into(),
            "duplicate field",
        ),
        (
            "empty to",
            r#"{"to":[],"data":1}"#.into(),
            "at least one recipient",
        ),
        (
            "too many recipients",
            serde_json::json!({"to": many, "data": 1}).to_string(),
            "at most 1000",
        ),
        (
            "invalid user id",
            r#"{"to":["ok","b a d"],"data":1}"#.into(),
            "`to[1]`",
        ),
        ("empty user id", r#"{"to":[""],"data":1}"#.into(), "`to[0]`"),
        (
            "data too big",
            format!(r#"{{"to":["a"],"data":{big_data}}}"#),
            "`data` is",
        ),
        (
            "empty idempotency key",
            r#"{"to":["a"],"data":1,"idempotency_key":""}"#.into(),
            "must not be empty",
        ),
        (
            "long idempotency key",
            format!(r#"{{"to":["a"],"data":1,"idempotency_key":"{long_key}"}}"#),
            "longer than 128",
        ),
    ];
    let f = fixture();
    for (name, body, says) in cases {
        let response = f.collector.handle(post(body)).await;
        assert_eq!(response.status, 400, "{name}: {}", response.body);
        let (code, message) = error_of(&response);
        assert_eq!(code, "bad_request", "{name}");
        assert!(
            message.contains(says),
            "{name}: {message:?} should say {says:?}"
        );
    }
    assert_eq!(f.store.len(), 0, "nothing stored");
    assert!(f.handoff.handed().is_empty(), "nothing handed off");
    assert_eq!(
        f.handoff.ready_calls.load(Ordering::SeqCst),
        0,
        "refused before any I/O"
    );
}

#[tokio::test]
async fn data_of_exactly_the_limit_is_accepted() {
    let f = fixture();
    // 64 KiB of JSON text: the quotes count.
    let data = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    let response = f
        .collector
        .handle(post(format!(r#"{{"to":["a"],"data":{data}}}"#)))
        .await;
    accepted(&response);
}

#[tokio::test]
async fn callers_without_a_valid_key_get_401() {
    let f = fixture();
    let body = r#"{"to":["a"],"data":1}"#;
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic dGVzdA=="),
        Some("Bearer "),
    ] {
        let response = f
            .collector
            .handle(request(Method::POST, "/v1/messages", auth, body))
            .await;
        assert_eq!(response.status, 401, "{auth:?}");
        assert_eq!(error_of(&response).0, "unauthorized");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        assert!(!response.body.contains("nope"), "the key is not echoed");
    }
    // Authentication comes before everything else about the body.
    let response = f
        .collector
        .handle(request(Method::POST, "/v1/messages", None, "not json"))
        .await;
    assert_eq!(response.status, 401);
    let response = f
        .collector
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some("Bearer nope"),
            vec![b' '; 2 << 20],
        ))
        .await;
    assert_eq!(response.status, 401, "401 before 413");
    assert_eq!(f.store.len(), 0);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let f = fixture();
    let mut body = br#"{"to":["a"],"data":"#.to_vec();
    body.resize(1024 * 1024 + 1, b' ');
    let response = f.collector.handle(post(body)).await;
    assert_eq!(response.status, 413);
    assert_eq!(error_of(&response).0, "too_large");
    assert_eq!(f.store.len(), 0);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let f = fixture();
    let response = f
        .collector
        .handle(request(
            Method::POST,
            "/v1/nope",
            Some("Bearer test-key-billing"),
            "",
        ))
        .await;
    assert_eq!(response.status, 404);
    assert_eq!(error_of(&response).0, "not_found");

    let response = f
        .collector
        .handle(request(
            Method::GET,
            "/v1/messages",
            Some("Bearer test-key-billing"),
            "",
        ))
        .await;
    assert_eq!(response.status, 405);
    assert_eq!(error_of(&response).0, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("POST"));
}

#[tokio::test]
async fn accepted_messages_get_one_receipt_per_recipient_in_order() {
    let f = fixture();
    let data = r#"{"b": 1,  "a":[1, 2.50], "s":"\u00e9"}"#;
    let body = format!(r#"{{"to":["carol","alice","carol","bob","alice"],"data":{data}}}"#);
    let response = accepted(&f.collector.handle(post(body)).await);

    assert_eq!(
        users(&response),
        ["carol", "alice", "bob"],
        "duplicates collapsed"
    );
    assert!(response.messages.iter().all(|m| m.seq == 1));
    let id = &response.messages[0].id;
    assert!(
        response.messages.iter().all(|m| &m.id == id),
        "one message id"
    );
    assert_eq!(f.store.len(), 3);

    let handed = f.handoff.handed();
    assert_eq!(handed.len(), 1);
    let handed_users: Vec<&str> = handed[0].iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(handed_users, ["carol", "alice", "bob"]);
    assert_eq!(
        handed[0][0].data.get(),
        data,
        "data kept as the caller's text"
    );

    let second = accepted(
        &f.collector
            .handle(post(r#"{"to":["alice"],"data":null}"#))
            .await,
    );
    assert_eq!(second.messages[0].seq, 2);
    assert_ne!(&second.messages[0].id, id);
}

#[tokio::test]
async fn idempotent_retries_return_the_same_answer() {
    let f = fixture();
    let body = r#"{"to":["alice","bob"],"data":{"n":1},"idempotency_key":"order-77"}"#;
    let first = f.collector.handle(post(body)).await;
    accepted(&first);
    let again = f.collector.handle(post(body)).await;
    assert_eq!(again, first, "same status, headers and body");
    assert_eq!(f.store.len(), 2, "stored once");
    assert_eq!(
        f.handoff.handed().len(),
        2,
        "handed off again: delivery is at least once"
    );

    // The same key from another source is another message.
    let other = f
        .collector
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some("Bearer test-key-ops"),
            body,
        ))
        .await;
    let other = accepted(&other);
    assert_ne!(other.messages[0].id, accepted(&first).messages[0].id);
    assert_eq!(other.messages[0].seq, 2);
    assert_eq!(f.store.len(), 4);
}

/// A store error, and the status and code it must produce.
pub(crate) type StoreCase = (fn() -> StoreError, u16, &'static str);

/// Every kind of store failure, with its answer (the backend detail
/// `mongo-0` must not reach the caller).
pub(crate) const STORE_CASES: [StoreCase; 3] = [
    (
        || StoreError::Unavailable("no primary".into()),
        503,
        "unavailable",
    ),
    (
        || StoreError::Contention("seq race".into()),
        503,
        "unavailable",
    ),
    (
        || StoreError::Backend("disk full on mongo-0.internal".into()),
        500,
        "internal",
    ),
];

#[tokio::test]
async fn store_failures_are_503_or_500_and_nothing_is_handed_off() {
    for (make, status, code) in STORE_CASES {
        let handoff = Arc::new(RecordingHandoff::default());
        let store = Arc::new(FailingStore {
            make,
            appends: AtomicUsize::new(0),
        });
        let collector = Collector::new(store.clone(), handoff.clone(), KEYS.parse().unwrap());
        let response = collector.handle(post(r#"{"to":["a"],"data":1}"#)).await;
        assert_eq!(response.status, status, "{}", response.body);
        let (got_code, message) = error_of(&response);
        assert_eq!(got_code, code);
        assert!(
            !message.contains("mongo-0"),
            "no backend details: {message}"
        );
        if status == 503 {
            assert_eq!(response.header("retry-after"), Some("1"));
        }
        assert_eq!(store.appends.load(Ordering::SeqCst), 1);
        assert!(handoff.handed().is_empty(), "hand-off not called");
    }
}

#[tokio::test]
async fn an_unready_handoff_stores_nothing() {
    let f = fixture_with(RecordingHandoff {
        not_ready: true,
        ..RecordingHandoff::default()
    });
    let response = f.collector.handle(post(r#"{"to":["a"],"data":1}"#)).await;
    assert_eq!(response.status, 503);
    assert_eq!(error_of(&response).0, "unavailable");
    assert_eq!(f.store.len(), 0, "nothing stored");
    assert!(f.handoff.handed().is_empty());
}

#[tokio::test]
async fn a_failed_handoff_after_storing_says_retry_is_safe() {
    let f = fixture_with(RecordingHandoff {
        fail: true,
        ..RecordingHandoff::default()
    });
    let body = r#"{"to":["a"],"data":1,"idempotency_key":"k1"}"#;
    let response = f.collector.handle(post(body)).await;
    assert_eq!(response.status, 503);
    let (code, message) = error_of(&response);
    assert_eq!(code, "unavailable");
    assert!(
        message.contains("stored") && message.contains("idempotency_key"),
        "{message}"
    );
    assert_eq!(f.store.len(), 1, "the message is stored");
    let _ = f.collector.handle(post(body)).await;
    assert_eq!(f.store.len(), 1, "a retry stores nothing twice");
}

// --- Lambda face (lambda_http + the router) --------------------------------

fn fixture_request(fixture: &str) -> ApiGatewayV2httpRequest {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Invokes the function's handler as the Lambda runtime does, with the
/// event as API Gateway sends it.
async fn invoke(f: &Fixture, request: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let app = crate::lambda::app(f.collector.clone());
    let event = LambdaEvent::new(LambdaRequest::ApiGatewayV2(request), Context::default());
    let answer = match crate::lambda::handler(app, event).await {
        Ok(answer) => answer,
        Err(e) => panic!("the invocation failed: {e}"),
    };
    // What the Lambda runtime sends back to API Gateway.
    let json = serde_json::to_value(&answer).expect("the answer serialises");
    serde_json::from_value(json).expect("an HTTP API response")
}

fn text_body(response: &ApiGatewayV2httpResponse) -> Value {
    match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    }
}

#[tokio::test]
async fn lambda_http_api_event_is_accepted() {
    let f = fixture();
    let response = invoke(&f, fixture_request("http-api-submit.json")).await;
    assert_eq!(response.status_code, 202);
    assert!(!response.is_base64_encoded);
    assert_eq!(response.headers["content-type"], "application/json");
    let body = text_body(&response);
    let receipts: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(receipts, ["alice", "bob"]);
    let handed = f.handoff.handed();
    assert_eq!(
        handed[0][0].data.get(),
        r#"{"invoice":"INV-1042","total": 19.99}"#
    );

    // The fixture carries an idempotency key: replaying the event is safe.
    let again = invoke(&f, fixture_request("http-api-submit.json")).await;
    assert_eq!(text_body(&again), body);
    assert_eq!(f.store.len(), 2);
}

#[tokio::test]
async fn lambda_function_url_event_with_base64_body_is_accepted() {
    let f = fixture();
    let response = invoke(&f, fixture_request("function-url-submit-base64.json")).await;
    assert_eq!(response.status_code, 202, "{:?}", response.body);
    assert_eq!(text_body(&response)["messages"][0]["user_id"], "carol");
    let handed = f.handoff.handed();
    let data: Value = serde_json::from_str(handed[0][0].data.get()).unwrap();
    assert_eq!(data["text"], "héllo ✓");
}

#[tokio::test]
async fn lambda_named_stage_without_key_is_401() {
    let f = fixture();
    let response = invoke(&f, fixture_request("http-api-named-stage-no-auth.json")).await;
    assert_eq!(
        response.status_code, 401,
        "the stage prefix is stripped, not a 404"
    );
    assert_eq!(response.headers["www-authenticate"], "Bearer");
    assert_eq!(text_body(&response)["error"]["code"], "unauthorized");
    assert_eq!(f.store.len(), 0);
}

#[tokio::test]
async fn lambda_get_is_405() {
    let f = fixture();
    let response = invoke(&f, fixture_request("http-api-get-messages.json")).await;
    assert_eq!(response.status_code, 405);
    assert_eq!(response.headers["allow"], "POST");
    assert_eq!(text_body(&response)["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn lambda_header_names_are_case_insensitive() {
    let f = fixture();
    // This fixture spells the header `Authorization`: were it missed, the
    // answer would be 401.
    let mut request = fixture_request("http-api-get-messages.json");
    assert!(
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/http-api-get-messages.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .contains("\"Authorization\"")
    );
    request.request_context.http.method = Method::POST;
    request.body = Some(r#"{"to":["dave"],"data":1}"#.into());
    let response = invoke(&f, request).await;
    assert_eq!(response.status_code, 202, "{:?}", response.body);
    assert_eq!(f.store.len(), 1);
}

#[tokio::test]
async fn lambda_bad_base64_is_400() {
    let f = fixture();
    let mut request = fixture_request("function-url-submit-base64.json");
    request.body = Some("%%% not base64 %%%".into());
    let response = invoke(&f, request).await;
    assert_eq!(response.status_code, 400);
    assert_eq!(text_body(&response)["error"]["code"], "bad_request");
    assert_eq!(f.store.len(), 0);
}

#[tokio::test]
async fn lambda_query_strings_and_the_default_stage_reach_the_api() {
    let f = fixture();
    let mut request = fixture_request("http-api-submit.json");
    request.raw_query_string = Some("trace=1&x=%2F".into());
    let response = invoke(&f, request).await;
    assert_eq!(response.status_code, 202, "{:?}", response.body);
}

// --- dev router -----------------------------------------------------------

#[tokio::test]
async fn dev_router_serves_the_same_api() -> anyhow::Result<()> {
    let f = fixture();
    let store = f.store.clone();
    let app = crate::router(f.collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/v1/messages");
    let client = reqwest::Client::new();

    let response = client
        .post(&url)
        .header("authorization", format!("Bearer {KEY}"))
        .body(r#"{"to":["alice","alice","bob"],"data":[1,2,3]}"#)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: SubmitResponse = response.json().await?;
    assert_eq!(users(&body), ["alice", "bob"]);
    assert_eq!(store.len(), 2);

    // A body far past the limit: a JSON 413, not axum's own answer.
    let response = client
        .post(&url)
        .header("authorization", format!("Bearer {KEY}"))
        .body(vec![b' '; 3 << 20])
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 413);
    let body: ErrorBody = response.json().await?;
    assert_eq!(body.error.code, "too_large");

    let response = client
        .post(format!("http://{addr}/elsewhere"))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 404);
    let body: ErrorBody = response.json().await?;
    assert_eq!(body.error.code, "not_found");

    let response = client.post(&url).body("{}").send().await?;
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(store.len(), 2);

    server.abort();
    Ok(())
}

#[test]
fn api_keys_single_matches() {
    let keys = ApiKeys::single("dev", "k");
    assert_eq!(keys.source_of("k"), Some("dev"));
}
