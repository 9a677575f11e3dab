//! Managed edge in dispatch: users with edge-node routes and API Gateway
//! routes at once, over the real Redis route store
//! (`EDGEPUSH_TEST_REDIS_URL`, one key prefix per test), with recording
//! fakes of the edge pusher and the connection poster, and with the real
//! SDK-backed poster against a real HTTP server that answers like API
//! Gateway.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use bytes::Bytes;
use edgepush_core::protocol::{PushItem, encode_msg};
use edgepush_core::{
    ConnId, MessageId, NodeDirectory, PushError, PushReport, Pusher, RouteStore, StoredMessage,
};
use edgepush_dispatch::{
    ConnectionPoster, DispatchReport, Dispatcher, ManagedEdgePusher, PostToConnectionError,
    RetryPolicy, SdkConnectionPoster,
};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::{
    ManagementApiStandIn, conn, node, redis_url, route_names, unique_prefix, user,
};
use serde_json::Value;
use serde_json::value::RawValue;

const EDGE_NODE: &str = "edge-1";
const EDGE_URL: &str = "http://10.0.3.7:9101";
const APIGW_NODE: &str = "apigw-abcdef1234-prod";
const APIGW_ENDPOINT: &str = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod";
/// Real API Gateway connection id shapes.
const APIGW_CONN: &str = "L0SM9cOFvHcCIhw=";
const APIGW_CONN_2: &str = "L0SQ-d7CvHcCF6g=";
const EDGE_CONN: &str = "0badcafe00000001";

fn stored(to: &str, seq: u64, id: &str) -> Result<StoredMessage> {
    Ok(StoredMessage {
        user_id: user(to),
        seq,
        id: MessageId::new(id)?,
        data: Arc::from(RawValue::from_string(format!(
            r#"{{"text":"hello {id}","n":[1,2]}}"#
        ))?),
        created_at_ms: 1_707_478_951_123,
    })
}

fn frame(message: &StoredMessage) -> Bytes {
    encode_msg(message.seq, &message.id, &message.data)
}

/// Alice on an edge node and on API Gateway (twice); the virtual node and
/// the edge node both alive.
async fn topology(test: &str) -> Result<Arc<RedisRouteStore>> {
    let config = RedisConfig {
        key_prefix: unique_prefix(test),
        route_ttl: Duration::from_secs(600),
        ..RedisConfig::new(redis_url()?)
    };
    let store = Arc::new(RedisRouteStore::connect(config).await?);
    let ttl = Duration::from_secs(600);
    store.heartbeat(&node(EDGE_NODE), EDGE_URL, ttl).await?;
    store
        .heartbeat(&node(APIGW_NODE), APIGW_ENDPOINT, ttl)
        .await?;
    store
        .add_route(&user("alice"), &conn(EDGE_CONN), &node(EDGE_NODE))
        .await?;
    store
        .add_route(&user("alice"), &conn(APIGW_CONN), &node(APIGW_NODE))
        .await?;
    store
        .add_route(&user("alice"), &conn(APIGW_CONN_2), &node(APIGW_NODE))
        .await?;
    Ok(store)
}

async fn routes_of(store: &RedisRouteStore, name: &str) -> Result<Vec<(String, String)>> {
    Ok(route_names(&store.routes_of(&[user(name)]).await?[0]))
}

/// Records edge batches; every connection is live.
#[derive(Default)]
struct RecordingPusher {
    calls: Mutex<Vec<(String, Vec<PushItem>)>>,
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, push_url: &str, items: &[PushItem]) -> Result<PushReport, PushError> {
        let delivered = items.iter().map(|i| i.connection_ids.len() as u64).sum();
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((push_url.to_owned(), items.to_vec()));
        }
        Ok(PushReport {
            delivered,
            gone: Vec::new(),
        })
    }
}

/// Records posts; answers Gone for the connections in `gone` and fails
/// for those in `failing`.
#[derive(Default)]
struct RecordingPoster {
    posts: Mutex<Vec<(String, String, Bytes)>>,
    gone: HashSet<String>,
    failing: HashSet<String>,
}

impl RecordingPoster {
    fn posts(&self) -> Vec<(String, String, Bytes)> {
        self.posts.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ConnectionPoster for RecordingPoster {
    async fn post_to_connection(
        &self,
        endpoint: &str,
        connection: &ConnId,
        data: Bytes,
    ) -> Result<(), PostToConnectionError> {
        if let Ok(mut posts) = self.posts.lock() {
            posts.push((endpoint.to_owned(), connection.to_string(), data));
        }
        if self.gone.contains(connection.as_str()) {
            return Err(PostToConnectionError::Gone);
        }
        if self.failing.contains(connection.as_str()) {
            return Err(PostToConnectionError::Failed {
                status: Some(500),
                reason: "internal failure".into(),
            });
        }
        Ok(())
    }

    async fn delete_connection(
        &self,
        _endpoint: &str,
        _connection: &ConnId,
    ) -> Result<(), PostToConnectionError> {
        // Dispatch never closes connections.
        Err(PostToConnectionError::Failed {
            status: None,
            reason: "dispatch must not close connections".into(),
        })
    }
}

fn dispatcher(
    store: &Arc<RedisRouteStore>,
    pusher: Arc<dyn Pusher>,
    poster: Arc<dyn ConnectionPoster>,
) -> Dispatcher {
    Dispatcher {
        routes: store.clone(),
        nodes: store.clone(),
        topic_routes: store.clone(),
        pusher: Arc::new(ManagedEdgePusher::new(pusher, poster)),
        // Quick retries, so a test of an endpoint that keeps failing ends
        // soon (the count of attempts is not asserted, only their order).
        retry: RetryPolicy {
            first_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            give_up_after: Duration::from_millis(200),
        },
    }
}

#[tokio::test]
async fn one_message_reaches_edge_and_api_gateway_connections() -> Result<()> {
    let store = topology("apigw_both").await?;
    let pusher = Arc::new(RecordingPusher::default());
    let poster = Arc::new(RecordingPoster::default());
    let message = stored("alice", 1, "m1")?;

    let report = dispatcher(&store, pusher.clone(), poster.clone())
        .dispatch(std::slice::from_ref(&message))
        .await?;

    assert_eq!(
        report,
        DispatchReport {
            messages: 1,
            delivered: 3,
            ..DispatchReport::default()
        }
    );
    // The edge node got its batch, as before.
    let calls = pusher.calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, EDGE_URL);
    assert_eq!(calls[0].1.len(), 1);
    assert_eq!(calls[0].1[0].connection_ids, vec![conn(EDGE_CONN)]);
    assert_eq!(calls[0].1[0].message, message);
    // API Gateway got one post per connection, with the edge node's frame.
    let mut posts = poster.posts();
    posts.sort_by(|a, b| a.1.cmp(&b.1));
    let expected = frame(&message);
    assert_eq!(
        posts,
        vec![
            (
                APIGW_ENDPOINT.to_owned(),
                APIGW_CONN.to_owned(),
                expected.clone()
            ),
            (APIGW_ENDPOINT.to_owned(), APIGW_CONN_2.to_owned(), expected),
        ]
    );
    let text = std::str::from_utf8(&posts[0].2)?;
    let json: serde_json::Value = serde_json::from_str(text)?;
    assert_eq!(json["type"], "msg");
    assert_eq!(json["seq"], 1);
    assert_eq!(json["data"]["text"], "hello m1");
    Ok(())
}

#[tokio::test]
async fn posts_to_one_connection_keep_the_messages_order() -> Result<()> {
    let store = topology("apigw_order").await?;
    let poster = Arc::new(RecordingPoster::default());
    let messages = [
        stored("alice", 1, "m1")?,
        stored("alice", 2, "m2")?,
        stored("alice", 3, "m3")?,
    ];
    let report = dispatcher(&store, Arc::new(RecordingPusher::default()), poster.clone())
        .dispatch(&messages)
        .await?;
    assert_eq!(report.delivered, 9, "3 messages x (1 edge + 2 API Gateway)");
    for c in [APIGW_CONN, APIGW_CONN_2] {
        let seqs: Vec<u64> = poster
            .posts()
            .iter()
            .filter(|p| p.1 == c)
            .map(|p| {
                serde_json::from_slice::<serde_json::Value>(&p.2)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3], "posts to {c} in seq order");
    }
    Ok(())
}

#[tokio::test]
async fn a_gone_api_gateway_connection_loses_only_its_route() -> Result<()> {
    let store = topology("apigw_gone").await?;
    let poster = Arc::new(RecordingPoster {
        gone: HashSet::from([APIGW_CONN.to_owned()]),
        ..RecordingPoster::default()
    });
    let report = dispatcher(&store, Arc::new(RecordingPusher::default()), poster.clone())
        .dispatch(&[stored("alice", 1, "m1")?, stored("alice", 2, "m2")?])
        .await?;

    assert_eq!(report.gone_removed, 1);
    assert_eq!(
        report.delivered, 4,
        "edge x2 + the live API Gateway connection x2"
    );
    assert_eq!(
        poster.posts().iter().filter(|p| p.1 == APIGW_CONN).count(),
        1,
        "nothing more is posted to a gone connection"
    );
    assert_eq!(
        routes_of(&store, "alice").await?,
        [
            (EDGE_CONN.to_owned(), EDGE_NODE.to_owned()),
            (APIGW_CONN_2.to_owned(), APIGW_NODE.to_owned()),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn an_endpoint_that_fails_entirely_counts_as_a_failed_node() -> Result<()> {
    let store = topology("apigw_failing").await?;
    let poster = Arc::new(RecordingPoster {
        failing: HashSet::from([APIGW_CONN.to_owned(), APIGW_CONN_2.to_owned()]),
        ..RecordingPoster::default()
    });
    let report = dispatcher(&store, Arc::new(RecordingPusher::default()), poster.clone())
        .dispatch(&[stored("alice", 1, "m1")?, stored("alice", 2, "m2")?])
        .await?;
    assert_eq!(report.failed_nodes, 1);
    assert_eq!(report.delivered, 2, "the edge node still got both");
    assert_eq!(report.gone_removed, 0);
    assert!(report.retries >= 1, "a 500 is retried: {report:?}");
    assert_eq!(
        report.undelivered,
        [0, 1],
        "the live endpoint took neither message: both must be dispatched again"
    );
    let posts = poster.posts();
    assert_eq!(
        posts.len(),
        2 * (report.retries + 1),
        "each attempt posts once per connection"
    );
    for (_, conn, body) in &posts {
        let frame: Value = serde_json::from_slice(body)?;
        assert_eq!(
            frame["seq"], 1,
            "{conn}: each connection stops at its first failure, so seq 2 never overtakes seq 1"
        );
    }
    assert_eq!(
        routes_of(&store, "alice").await?.len(),
        3,
        "no route removed"
    );
    Ok(())
}

#[tokio::test]
async fn the_sdk_poster_turns_a_real_410_into_a_removed_route() -> Result<()> {
    let store = topology("apigw_sdk_gone").await?;
    store
        .add_route(&user("bob"), &conn("gone-Hw0CvHcC="), &node(APIGW_NODE))
        .await?;
    store
        .add_route(&user("bob"), &conn("live-Hw1CvHcC="), &node(APIGW_NODE))
        .await?;
    let stand_in = ManagementApiStandIn::start().await?;

    // The real client, with static credentials, sent to the stand-in
    // instead of execute-api (the stage path is kept).
    let poster = Arc::new(
        SdkConnectionPoster::new(stand_in.sdk_config()).with_endpoint_override(stand_in.url()),
    );
    let message = stored("bob", 5, "m5")?;
    let report = dispatcher(&store, Arc::new(RecordingPusher::default()), poster)
        .dispatch(std::slice::from_ref(&message))
        .await
        .context("dispatch")?;

    assert_eq!(report.gone_removed, 1, "{report:?}");
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(report.failed_nodes, 0, "{report:?}");
    assert_eq!(
        routes_of(&store, "bob").await?,
        [("live-Hw1CvHcC=".to_owned(), APIGW_NODE.to_owned())],
        "the gone connection's route is removed, the live one kept"
    );

    let mut seen = stand_in.seen();
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].path, "/prod/@connections/gone-Hw0CvHcC%3D");
    assert_eq!(seen[1].path, "/prod/@connections/live-Hw1CvHcC%3D");
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.body, frame(&message), "the msg frame, byte for byte");
        assert!(
            s.authorization
                .starts_with("AWS4-HMAC-SHA256 Credential=AKIDMANAGEDEDGE/")
                && s.authorization
                    .contains("/us-east-1/execute-api/aws4_request"),
            "SigV4 for execute-api: {}",
            s.authorization
        );
    }
    Ok(())
}
