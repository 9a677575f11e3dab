//! Unit tests of collect's topic side over the in-memory stores and failing
//! fakes: publish (one topic, many, broadcast), every refusal of bad input
//! (names, namespaces, malformed JSON, wrong types, sizes, keys, methods),
//! reused idempotency keys, a store or presence store that is down, and
//! presence reads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::memory::{MemoryPresence, MemoryRouteStore, MemoryTopicStore};
use edgepush_core::ports::{
    ConnPresence, PresenceWrite, TopicMember, TopicNodePresence, TopicPresenceWrite,
};
use edgepush_core::{
    ConnId, Namespaces, NewTopicMessage, NodeDirectory, NodeId, PresenceStore, RouteError, Seq,
    StoreError, TopicMessage, TopicName, TopicStore, UserId,
};
use http::Method;
use serde_json::{Value, json};

use crate::tests::{KEY, KEYS, RecordingHandoff, STORE_CASES, error_of, request};
use crate::{CollectResponse, Collector, Limits, Topics};

struct Fixture {
    topics: Arc<MemoryTopicStore>,
    presence: Arc<MemoryPresence>,
    nodes: Arc<MemoryRouteStore>,
    handoff: Arc<RecordingHandoff>,
    collector: Collector,
}

fn fixture_with(handoff: RecordingHandoff) -> Fixture {
    let topics = Arc::new(MemoryTopicStore::new());
    let presence = Arc::new(MemoryPresence::new());
    let nodes = Arc::new(MemoryRouteStore::new());
    let handoff = Arc::new(handoff);
    let namespaces =
        Namespaces::from_json(r#"{"": {}, "chat": {"presence": true, "retention_secs": 60}}"#)
            .unwrap();
    let collector = Collector {
        store: Arc::new(edgepush_core::memory::MemoryMessageStore::new()),
        handoff: handoff.clone(),
        api_keys: KEYS.parse().unwrap(),
        limits: Limits::default(),
        topics: Some(Topics {
            store: topics.clone(),
            namespaces,
            presence: presence.clone(),
            nodes: nodes.clone(),
        }),
    };
    Fixture {
        topics,
        presence,
        nodes,
        handoff,
        collector,
    }
}

fn fixture() -> Fixture {
    fixture_with(RecordingHandoff::default())
}

async fn call(f: &Fixture, method: Method, path: &str, body: &str) -> (CollectResponse, Value) {
    let mut req = request(
        method,
        path,
        Some(&format!("Bearer {KEY}")),
        body.to_owned(),
    );
    if let Some((p, q)) = path.split_once('?') {
        req.path = p.to_owned();
        req.query = Some(q.to_owned());
    }
    let response = f.collector.handle(req).await;
    let json = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response, json)
}

#[tokio::test]
async fn publishes_answer_after_the_store_and_are_idempotent() {
    let f = fixture();
    let (r, body) = call(
        &f,
        Method::POST,
        "/v1/topics/chat:room%2F1/messages",
        r#"{"data":{"n":1},"idempotency_key":"k"}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (body["topic"].as_str(), body["seq"].as_u64()),
        (Some("chat:room/1"), Some(1))
    );
    let (again, body2) = call(
        &f,
        Method::POST,
        "/v1/topics/chat:room/1/messages",
        r#"{"data":{"n":1},"idempotency_key":"k"}"#,
    )
    .await;
    assert_eq!((again.status, body2), (202, body));
    assert_eq!(f.topics.len(), 1, "a retry stores nothing");
    assert_eq!(
        f.handoff.handed_topics.lock().unwrap().len(),
        2,
        "both handed off"
    );

    let (r, body) = call(
        &f,
        Method::POST,
        "/v1/publish",
        r#"{"topics":["news","chat:room/1","news"],"data":[1]}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let receipts: Vec<(&str, u64)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["topic"].as_str().unwrap(), m["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        receipts,
        [("news", 1), ("chat:room/1", 2)],
        "in `topics` order"
    );

    let (r, body) = call(&f, Method::POST, "/v1/broadcast", r#"{"data":"all"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (body["topic"].as_str(), body["seq"].as_u64()),
        (Some("$broadcast"), Some(1))
    );
    let b = f
        .topics
        .read_after(&TopicName::broadcast(), 0, 10)
        .await
        .unwrap();
    assert_eq!(b[0].data.get(), r#""all""#);
}

#[tokio::test]
async fn bad_publishes_are_refused_and_store_nothing() {
    let f = fixture();
    for (path, body, status, code) in [
        (
            "/v1/topics/a%20b/messages",
            r#"{"data":1}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/topics/nowhere:x/messages",
            r#"{"data":1}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/topics/news/messages",
            r#"{"data":1,"topics":["x"]}"#,
            400,
            "bad_request",
        ),
        ("/v1/topics/news/messages", "[]", 400, "bad_request"),
        (
            "/v1/publish",
            r#"{"topics":[],"data":1}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/publish",
            r#"{"topics":["$broadcast"],"data":1}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/broadcast",
            r#"{"data":1,"idempotency_key":""}"#,
            400,
            "bad_request",
        ),
        ("/v1/topics/news", r#"{"data":1}"#, 404, "not_found"),
    ] {
        let (r, _) = call(&f, Method::POST, path, body).await;
        assert_eq!(
            (r.status, error_of(&r).0.as_str()),
            (status, code),
            "{path} {body}"
        );
    }
    let (r, _) = call(&f, Method::GET, "/v1/broadcast", "").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let (r, _) = call(&f, Method::POST, "/v1/topics/chat:x/presence", "").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    let unauthenticated = f
        .collector
        .handle(request(
            Method::POST,
            "/v1/broadcast",
            None,
            r#"{"data":1}"#,
        ))
        .await;
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(f.topics.len(), 0);
    assert!(f.handoff.handed_topics.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failures_answer_503_with_the_key_to_retry_with() {
    let f = fixture_with(RecordingHandoff {
        fail: true,
        ..RecordingHandoff::default()
    });
    let (r, body) = call(
        &f,
        Method::POST,
        "/v1/topics/news/messages",
        r#"{"data":1}"#,
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let key = body["error"]["idempotency_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("auto-"), "{key}");
    assert_eq!(f.topics.len(), 1, "stored before the hand-off failed");
    let not_ready = fixture_with(RecordingHandoff {
        not_ready: true,
        ..RecordingHandoff::default()
    });
    let (r, _) = call(&not_ready, Method::POST, "/v1/broadcast", r#"{"data":1}"#).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        not_ready.topics.len(),
        0,
        "nothing stored when dispatch is not ready"
    );

    let mut without = fixture();
    without.collector.topics = None;
    let (r, _) = call(&without, Method::POST, "/v1/broadcast", r#"{"data":1}"#).await;
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (501, "not_implemented")
    );
}

#[tokio::test]
async fn presence_is_read_with_dead_nodes_left_out() {
    let f = fixture();
    let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    f.nodes
        .heartbeat(&a, "http://a", Duration::from_secs(60))
        .await
        .unwrap();
    let alice = UserId::new("alice").unwrap();
    let room = TopicName::new("chat:room").unwrap();
    for node in [&a, &b] {
        f.presence
            .write(
                node,
                &PresenceWrite {
                    connections: vec![(
                        alice.clone(),
                        ConnId::new(format!("c-{node}")).unwrap(),
                        Some(5),
                    )],
                    topics: vec![TopicPresenceWrite {
                        topic: room.clone(),
                        totals: Some((1, 1)),
                        members: vec![(alice.clone(), 1)],
                    }],
                },
            )
            .await
            .unwrap();
    }
    let (r, body) = call(&f, Method::GET, "/v1/users/alice/presence", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        body,
        json!({"user_id": "alice", "online": true, "connections": 1, "since_ms": 5})
    );
    let (_, body) = call(&f, Method::GET, "/v1/presence?users=alice,bob", "").await;
    assert_eq!(
        body["users"][1],
        json!({"user_id": "bob", "online": false, "connections": 0})
    );
    let (_, body) = call(&f, Method::GET, "/v1/topics/chat:room/presence", "").await;
    assert_eq!(
        body,
        json!({"topic": "chat:room", "connections": 1, "users": 1, "nodes": 1})
    );
    let (_, body) = call(&f, Method::GET, "/v1/topics/chat:room/members?limit=10", "").await;
    assert_eq!(
        body["members"],
        json!([{"user_id": "alice", "connections": 1}])
    );

    for (path, status) in [
        ("/v1/topics/news/presence", 404),
        ("/v1/topics/nowhere:x/presence", 400),
        ("/v1/topics/chat:room/members?limit=5000", 400),
        ("/v1/topics/chat:room/members?cursor=x", 400),
        ("/v1/presence", 400),
        ("/v1/users/a%20b/presence", 400),
    ] {
        let (r, _) = call(&f, Method::GET, path, "").await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
    }
    let many = (0..101)
        .map(|i| format!("u{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (r, _) = call(&f, Method::GET, &format!("/v1/presence?users={many}"), "").await;
    assert_eq!(r.status, 400);
}

/// The three publish paths, with a valid body for each.
const PUBLISH_PATHS: [(&str, &str); 3] = [
    ("/v1/topics/chat:room/messages", r#"{"data":1}"#),
    ("/v1/publish", r#"{"topics":["chat:room"],"data":1}"#),
    ("/v1/broadcast", r#"{"data":1}"#),
];

#[tokio::test]
async fn every_bad_publish_body_is_a_400_naming_the_fault_and_stores_nothing() {
    let f = fixture();
    let long_key = "k".repeat(129);
    let big_data = format!("\"{}\"", "x".repeat(64 * 1024));
    // Faults every publish path shares: (what, body, part of the message).
    let shared: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", r#"{"data":1,"#.into(), "malformed JSON"),
        ("empty body", String::new(), "malformed JSON"),
        (
            "trailing garbage",
            r#"{"data":1} x"#.into(),
            "malformed JSON",
        ),
        ("an array", "[1]".into(), "JSON object"),
        ("a string", r#""hi""#.into(), "JSON object"),
        ("null", "null".into(), "JSON object"),
        ("missing data", "{}".into(), "missing field `data`"),
        (
            "unknown field",
            r#"{"data":1,"to":["a"]}"#.into(),
            "unknown field",
        ),
        (
            "numeric key",
            r#"{"data":1,"idempotency_key":7}"#.into(),
            "invalid type",
        ),
        (
            "empty key",
            r#"{"data":1,"idempotency_key":""}"#.into(),
            "idempotency",
        ),
        (
            "over-long key",
            format!(r#"{{"data":1,"idempotency_key":"{long_key}"}}"#),
            "idempotency",
        ),
        (
            "data over 64 KiB",
            format!(r#"{{"data":{big_data}}}"#),
            "data",
        ),
    ];
    for (path, _) in PUBLISH_PATHS {
        for (what, body, says) in &shared {
            // `/v1/publish` needs `topics` as well: add it, so that the
            // fault under test is the one refused.
            let body = if path == "/v1/publish" && body.starts_with("{\"data\"") {
                body.replacen('{', r#"{"topics":["chat:room"],"#, 1)
            } else if path == "/v1/publish" && body == "{}" {
                r#"{"topics":["chat:room"]}"#.to_owned()
            } else {
                body.clone()
            };
            let (r, _) = call(&f, Method::POST, path, &body).await;
            let (code, message) = error_of(&r);
            assert_eq!(
                (r.status, code.as_str()),
                (400, "bad_request"),
                "{path}: {what}"
            );
            assert!(message.contains(says), "{path}: {what}: {message}");
        }
    }

    // Faults of the topic names, in the path and in `topics`.
    let long_topic = format!("chat:{}", "t".repeat(124));
    let many: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let names: Vec<(&str, String, String, &str)> = vec![
        (
            "a space",
            "/v1/topics/a%20b/messages".into(),
            r#"["a b"]"#.into(),
            "not a valid topic",
        ),
        (
            "a `$`",
            "/v1/topics/$broadcast/messages".into(),
            r#"["$broadcast"]"#.into(),
            "not a valid topic",
        ),
        (
            "over 128 bytes",
            format!("/v1/topics/{long_topic}/messages"),
            format!(r#"["{long_topic}"]"#),
            "longer than 128",
        ),
        (
            "not UTF-8",
            "/v1/topics/a%FF/messages".into(),
            r#"["a\u00ff"]"#.into(),
            "not a valid topic",
        ),
        (
            "unknown namespace",
            "/v1/topics/nowhere:x/messages".into(),
            r#"["nowhere:x"]"#.into(),
            "not configured",
        ),
        (
            "a blank name",
            "/v1/topics/%20/messages".into(),
            r#"[""]"#.into(),
            "not a valid topic",
        ),
    ];
    for (what, path, list, says) in &names {
        let (r, _) = call(&f, Method::POST, path, r#"{"data":1}"#).await;
        let (code, message) = error_of(&r);
        assert_eq!(
            (r.status, code.as_str()),
            (400, "bad_request"),
            "path with {what}"
        );
        assert!(message.contains(says), "path with {what}: {message}");
        let body = format!(
            r#"{{"topics":["news",{}],"data":1}}"#,
            &list[1..list.len() - 1]
        );
        let (r, _) = call(&f, Method::POST, "/v1/publish", &body).await;
        let (code, message) = error_of(&r);
        assert_eq!(
            (r.status, code.as_str()),
            (400, "bad_request"),
            "`topics` with {what}"
        );
        assert!(
            message.contains("`topics[1]`") && message.contains(says),
            "{what}: {message}"
        );
    }
    // Wrong types and sizes of `topics`.
    for (what, body, says) in [
        (
            "missing topics",
            r#"{"data":1}"#.to_owned(),
            "missing field `topics`",
        ),
        (
            "topics a string",
            r#"{"topics":"news","data":1}"#.to_owned(),
            "invalid type",
        ),
        (
            "topics of numbers",
            r#"{"topics":[1],"data":1}"#.to_owned(),
            "invalid type",
        ),
        (
            "no topics",
            r#"{"topics":[],"data":1}"#.to_owned(),
            "at least one",
        ),
        (
            "1,001 topics",
            format!(
                r#"{{"topics":{},"data":1}}"#,
                serde_json::to_string(&many).unwrap()
            ),
            "at most 1000",
        ),
    ] {
        let (r, _) = call(&f, Method::POST, "/v1/publish", &body).await;
        let (code, message) = error_of(&r);
        assert_eq!((r.status, code.as_str()), (400, "bad_request"), "{what}");
        assert!(message.contains(says), "{what}: {message}");
    }
    assert_eq!(f.topics.len(), 0, "nothing stored");
    assert!(
        f.handoff.handed_topics.lock().unwrap().is_empty(),
        "nothing handed off"
    );
}

#[tokio::test]
async fn oversize_bodies_are_413_on_every_publish_path() {
    let f = fixture();
    let huge = format!(r#"{{"data":"{}"}}"#, "x".repeat(1024 * 1024));
    for (path, _) in PUBLISH_PATHS {
        let (r, _) = call(&f, Method::POST, path, &huge).await;
        assert_eq!(
            (r.status, error_of(&r).0.as_str()),
            (413, "too_large"),
            "{path}"
        );
    }
    // Data of exactly the limit is accepted on each.
    let data = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    for (path, body) in PUBLISH_PATHS {
        let body = body.replace("1}", &format!("{data}}}"));
        let (r, _) = call(&f, Method::POST, path, &body).await;
        assert_eq!(r.status, 202, "{path}: {}", r.body);
    }
    assert_eq!(f.topics.len(), 3);
}

#[tokio::test]
async fn every_topic_path_refuses_callers_without_a_valid_key_and_other_methods() {
    let f = fixture();
    let paths = [
        (Method::POST, "/v1/topics/chat:room/messages"),
        (Method::POST, "/v1/publish"),
        (Method::POST, "/v1/broadcast"),
        (Method::GET, "/v1/users/alice/presence"),
        (Method::GET, "/v1/presence"),
        (Method::GET, "/v1/topics/chat:room/presence"),
        (Method::GET, "/v1/topics/chat:room/members"),
    ];
    for (method, path) in paths {
        for auth in [None, Some("Bearer nope"), Some("Basic dGVzdA==")] {
            let r = f
                .collector
                .handle(request(method.clone(), path, auth, r#"{"data":1}"#))
                .await;
            assert_eq!(
                (r.status, error_of(&r).0.as_str()),
                (401, "unauthorized"),
                "{path} {auth:?}"
            );
        }
        let other = if method == Method::GET {
            Method::DELETE
        } else {
            Method::PUT
        };
        let (r, _) = call(&f, other, path, "").await;
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.header("allow"), Some(method.as_str()), "{path}");
    }
    assert_eq!(f.topics.len(), 0);
}

#[tokio::test]
async fn a_reused_idempotency_key_stores_once_per_source_and_topic() {
    let f = fixture();
    let one = r#"{"data":"first","idempotency_key":"order-1"}"#;
    let (first, receipt) = call(&f, Method::POST, "/v1/topics/chat:room/messages", one).await;
    assert_eq!(first.status, 202);
    // The same key with other data: the first copy stands.
    let (r, again) = call(
        &f,
        Method::POST,
        "/v1/topics/chat:room/messages",
        r#"{"data":"second","idempotency_key":"order-1"}"#,
    )
    .await;
    assert_eq!((r.status, &again), (202, &receipt));
    let stored = f
        .topics
        .read_after(&TopicName::new("chat:room").unwrap(), 0, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.get(), r#""first""#);

    // A batch with the key completes the other topics, reusing the copy
    // already stored (as a retry after a partial write does).
    let (r, batch) = call(
        &f,
        Method::POST,
        "/v1/publish",
        r#"{"topics":["news","chat:room"],"data":"first","idempotency_key":"order-1"}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(batch["messages"][1], receipt);
    assert_eq!(
        (
            batch["messages"][0]["topic"].as_str(),
            batch["messages"][0]["seq"].as_u64()
        ),
        (Some("news"), Some(1))
    );
    assert_eq!(f.topics.len(), 2);

    // Another source's key is its own.
    let r = f
        .collector
        .handle(request(
            Method::POST,
            "/v1/topics/chat:room/messages",
            Some("Bearer test-key-ops"),
            one,
        ))
        .await;
    assert_eq!(r.status, 202);
    let other: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(other["seq"].as_u64(), Some(2));
    assert_ne!(other["id"], receipt["id"]);

    // Broadcasts: the key is kept the same way.
    let b = r#"{"data":1,"idempotency_key":"b-1"}"#;
    let (_, b1) = call(&f, Method::POST, "/v1/broadcast", b).await;
    let (_, b2) = call(&f, Method::POST, "/v1/broadcast", b).await;
    assert_eq!((b1["seq"].as_u64(), &b1), (Some(1), &b2));
    assert_eq!(f.topics.len(), 4);
}

#[tokio::test]
async fn a_retry_with_the_key_of_a_failed_hand_off_stores_nothing_twice() {
    let f = fixture_with(RecordingHandoff {
        fail: true,
        ..RecordingHandoff::default()
    });
    let (r, body) = call(
        &f,
        Method::POST,
        "/v1/publish",
        r#"{"topics":["news","chat:a"],"data":1}"#,
    )
    .await;
    assert_eq!(r.status, 503);
    let (_, message) = error_of(&r);
    assert!(
        message.contains("stored") && message.contains("idempotency_key"),
        "{message}"
    );
    let key = body["error"]["idempotency_key"].as_str().unwrap();
    assert_eq!(f.topics.len(), 2);
    let retry = format!(r#"{{"topics":["news","chat:a"],"data":1,"idempotency_key":"{key}"}}"#);
    let (r, _) = call(&f, Method::POST, "/v1/publish", &retry).await;
    assert_eq!(r.status, 503, "the hand-off still fails");
    assert_eq!(f.topics.len(), 2, "the retry stored nothing new");
    assert_eq!(
        f.handoff.handed_topics.lock().unwrap().len(),
        2,
        "both tries handed off"
    );
}

/// A topic store whose publishes fail with the error `make` builds.
struct FailingTopicStore {
    make: fn() -> StoreError,
}

#[async_trait]
impl TopicStore for FailingTopicStore {
    async fn publish(&self, _: &NewTopicMessage) -> Result<Vec<TopicMessage>, StoreError> {
        Err((self.make)())
    }
    async fn read_after(
        &self,
        _: &TopicName,
        _: Seq,
        _: usize,
    ) -> Result<Vec<TopicMessage>, StoreError> {
        Err((self.make)())
    }
    async fn last_seq(&self, _: &TopicName) -> Result<Seq, StoreError> {
        Err((self.make)())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err((self.make)())
    }
}

#[tokio::test]
async fn a_topic_store_that_is_down_is_503_or_500_with_the_key_and_nothing_is_handed_off() {
    for (make, status, code) in STORE_CASES {
        let mut f = fixture();
        if let Some(topics) = f.collector.topics.as_mut() {
            topics.store = Arc::new(FailingTopicStore { make });
        }
        for (path, body) in PUBLISH_PATHS {
            let body = body.replacen('{', r#"{"idempotency_key":"k-1","#, 1);
            let (r, json) = call(&f, Method::POST, path, &body).await;
            let (got, message) = error_of(&r);
            assert_eq!((r.status, got.as_str()), (status, code), "{path}");
            assert!(
                !message.contains("mongo-0"),
                "no backend details: {message}"
            );
            assert_eq!(json["error"]["idempotency_key"], "k-1", "{path}");
            if status == 503 {
                assert_eq!(r.header("retry-after"), Some("1"), "{path}");
            }
        }
        assert!(f.handoff.handed_topics.lock().unwrap().is_empty());
    }
}

/// A presence error, and the status and code it must produce.
type PresenceCase = (fn() -> RouteError, u16, &'static str);

/// A presence store that is down: every call fails with `make`'s error.
struct FailingPresence {
    make: fn() -> RouteError,
}

#[async_trait]
impl PresenceStore for FailingPresence {
    async fn write(&self, _: &NodeId, _: &PresenceWrite) -> Result<(), RouteError> {
        Err((self.make)())
    }
    async fn user_connections(&self, _: &[UserId]) -> Result<Vec<Vec<ConnPresence>>, RouteError> {
        Err((self.make)())
    }
    async fn topic_nodes(&self, _: &TopicName) -> Result<Vec<TopicNodePresence>, RouteError> {
        Err((self.make)())
    }
    async fn topic_members(
        &self,
        _: &TopicName,
        _: u64,
        _: usize,
    ) -> Result<(Vec<TopicMember>, u64), RouteError> {
        Err((self.make)())
    }
    async fn forget(
        &self,
        _: &TopicName,
        _: &[(UserId, NodeId)],
        _: &[NodeId],
    ) -> Result<(), RouteError> {
        Err((self.make)())
    }
}

#[tokio::test]
async fn a_presence_store_that_is_down_is_503_or_500_on_every_read() {
    let cases: [PresenceCase; 2] = [
        (
            || RouteError::Unavailable("connection refused".into()),
            503,
            "unavailable",
        ),
        (
            || RouteError::Backend("WRONGTYPE at redis-0.internal".into()),
            500,
            "internal",
        ),
    ];
    for (make, status, code) in cases {
        let mut f = fixture();
        if let Some(topics) = f.collector.topics.as_mut() {
            topics.presence = Arc::new(FailingPresence { make });
        }
        for path in [
            "/v1/users/alice/presence",
            "/v1/presence?users=alice,bob",
            "/v1/topics/chat:room/presence",
            "/v1/topics/chat:room/members",
        ] {
            let (r, _) = call(&f, Method::GET, path, "").await;
            let (got, message) = error_of(&r);
            assert_eq!(
                (r.status, got.as_str()),
                (status, code),
                "{path}: {message}"
            );
            assert!(
                !message.contains("redis-0") && !message.contains("refused"),
                "no backend details: {message}"
            );
        }
    }
}
