//! Unit tests: dispatcher, hand-off and Lambda handler over the in-memory route store and
//! a recording fake pusher.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{DirectHandoff, DispatchEvent, DispatchReport, Dispatcher, handler};
use async_trait::async_trait;
use edgepush_core::memory::{MemoryRouteStore, MemoryTopicRoutes};
use edgepush_core::protocol::PushItem;
use edgepush_core::{
    ConnId, Handoff, MessageId, NodeDirectory, NodeId, PushError, PushReport, Pusher, RouteError,
    RouteStore, StoredMessage, UserId,
};
use edgepush_testkit::SwitchedRoutes;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::value::RawValue;

/// A pusher that records every batch, answers `gone` for the connections it
/// was told are gone, and fails for the URLs it was told to fail for.
#[derive(Default)]
struct RecordingPusher {
    calls: Mutex<Vec<(String, Vec<PushItem>)>>,
    gone: HashSet<String>,
    failing: HashSet<String>,
    /// When set, every push waits here: with two nodes, the test only
    /// finishes if both pushes are in flight at once.
    barrier: Option<tokio::sync::Barrier>,
}

impl RecordingPusher {
    fn calls(&self) -> Vec<(String, Vec<PushItem>)> {
        let mut calls = self.calls.lock().unwrap().clone();
        calls.sort_by(|a, b| a.0.cmp(&b.0));
        calls
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, push_url: &str, items: &[PushItem]) -> Result<PushReport, PushError> {
        if let Some(barrier) = &self.barrier {
            barrier.wait().await;
        }
        self.calls
            .lock()
            .unwrap()
            .push((push_url.to_owned(), items.to_vec()));
        if self.failing.contains(push_url) {
            return Err(PushError::Unreachable {
                url: push_url.to_owned(),
                reason: "connection refused".into(),
            });
        }
        let mut report = PushReport::default();
        for conn in items.iter().flat_map(|i| &i.connection_ids) {
            if self.gone.contains(conn.as_str()) {
                if !report.gone.contains(conn) {
                    report.gone.push(conn.clone());
                }
            } else {
                report.delivered += 1;
            }
        }
        Ok(report)
    }
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn conn(s: &str) -> ConnId {
    ConnId::new(s).unwrap()
}
fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn stored(to: &str, seq: u64, id: &str) -> StoredMessage {
    StoredMessage {
        user_id: user(to),
        seq,
        id: MessageId::new(id).unwrap(),
        data: Arc::from(RawValue::from_string(format!("{{\"m\":\"{id}\"}}")).unwrap()),
        created_at_ms: 1_700_000_000_000,
    }
}

const TTL: Duration = Duration::from_secs(600);

/// alice: a1 on n1 (live), a2 on n2 (live), a3 on dead; bob: b1 on n1;
/// carol: c1 on dead only; dave: no routes.
async fn topology() -> Arc<MemoryRouteStore> {
    let routes = Arc::new(MemoryRouteStore::new());
    routes
        .heartbeat(&node("n1"), "http://n1", TTL)
        .await
        .unwrap();
    routes
        .heartbeat(&node("n2"), "http://n2", TTL)
        .await
        .unwrap();
    routes
        .add_route(&user("alice"), &conn("a1"), &node("n1"))
        .await
        .unwrap();
    routes
        .add_route(&user("alice"), &conn("a2"), &node("n2"))
        .await
        .unwrap();
    routes
        .add_route(&user("alice"), &conn("a3"), &node("dead"))
        .await
        .unwrap();
    routes
        .add_route(&user("bob"), &conn("b1"), &node("n1"))
        .await
        .unwrap();
    routes
        .add_route(&user("carol"), &conn("c1"), &node("dead"))
        .await
        .unwrap();
    routes
}

fn dispatcher(routes: &Arc<MemoryRouteStore>, pusher: &Arc<RecordingPusher>) -> Dispatcher {
    Dispatcher {
        routes: routes.clone(),
        nodes: routes.clone(),
        pusher: pusher.clone(),
        retry: crate::RetryPolicy::never(),
        topic_routes: Arc::new(MemoryTopicRoutes::default()),
    }
}

/// (message id, connection ids) of each item of a batch, sorted.
fn shape(items: &[PushItem]) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = items
        .iter()
        .map(|i| {
            let mut conns: Vec<String> = i.connection_ids.iter().map(|c| c.to_string()).collect();
            conns.sort();
            (
                i.message.user_id.to_string(),
                i.message.id.to_string(),
                conns,
            )
        })
        .collect();
    out.sort();
    out
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[tokio::test]
async fn pushes_one_batch_per_live_node_grouped_by_message() {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher::default());
    let messages = [
        stored("alice", 1, "m1"),
        stored("bob", 1, "m1"),
        stored("carol", 1, "m1"),
        stored("dave", 1, "m1"),
        stored("alice", 2, "m2"),
    ];

    let report = dispatcher(&routes, &pusher)
        .dispatch(&messages)
        .await
        .unwrap();

    let calls = pusher.calls();
    assert_eq!(
        calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["http://n1", "http://n2"],
        "one batch per live node, none to the dead node"
    );
    assert_eq!(
        shape(&calls[0].1),
        [
            (s("alice"), s("m1"), vec![s("a1")]),
            (s("alice"), s("m2"), vec![s("a1")]),
            (s("bob"), s("m1"), vec![s("b1")]),
        ]
    );
    assert_eq!(
        shape(&calls[1].1),
        [
            (s("alice"), s("m1"), vec![s("a2")]),
            (s("alice"), s("m2"), vec![s("a2")]),
        ]
    );
    assert_eq!(
        report,
        DispatchReport {
            messages: 5,
            delivered: 5,
            offline_users: 2, // carol (dead node only) and dave (no route)
            skipped_dead_routes: 2,
            gone_removed: 0,
            failed_nodes: 0,
            ..DispatchReport::default()
        }
    );
    // Routes on dead nodes are left alone.
    let left = routes.routes_of(&[user("carol")]).await.unwrap();
    assert_eq!(left[0], vec![(conn("c1"), node("dead"))]);
}

#[tokio::test]
async fn a_users_connections_on_one_node_share_one_item() {
    let routes = topology().await;
    routes
        .add_route(&user("bob"), &conn("b2"), &node("n1"))
        .await
        .unwrap();
    let pusher = Arc::new(RecordingPusher::default());

    dispatcher(&routes, &pusher)
        .dispatch(&[stored("bob", 7, "m7")])
        .await
        .unwrap();

    let calls = pusher.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        shape(&calls[0].1),
        [(s("bob"), s("m7"), vec![s("b1"), s("b2")])]
    );
    assert_eq!(calls[0].1[0].message.seq, 7);
}

#[tokio::test]
async fn gone_connections_lose_their_routes() {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher {
        gone: HashSet::from([s("a2"), s("b1")]),
        ..RecordingPusher::default()
    });

    let report = dispatcher(&routes, &pusher)
        .dispatch(&[stored("alice", 1, "m1"), stored("bob", 1, "m1")])
        .await
        .unwrap();

    assert_eq!(report.gone_removed, 2);
    assert_eq!(report.delivered, 1, "only a1 was live");
    let left = routes
        .routes_of(&[user("alice"), user("bob")])
        .await
        .unwrap();
    let mut alice: Vec<_> = left[0].iter().map(|(c, _)| c.to_string()).collect();
    alice.sort();
    assert_eq!(alice, ["a1", "a3"], "a2 removed, the dead-node route kept");
    assert!(left[1].is_empty(), "b1 removed");
}

#[tokio::test]
async fn a_failing_node_does_not_stop_the_others() {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher {
        failing: HashSet::from([s("http://n1")]),
        ..RecordingPusher::default()
    });

    let report = dispatcher(&routes, &pusher)
        .dispatch(&[stored("alice", 1, "m1"), stored("bob", 1, "m1")])
        .await
        .unwrap();

    assert_eq!(report.failed_nodes, 1);
    assert_eq!(report.delivered, 1, "a2 on n2 still delivered");
    assert_eq!(pusher.calls().len(), 2, "both nodes were tried");
}

#[tokio::test]
async fn nodes_are_pushed_concurrently() {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher {
        barrier: Some(tokio::sync::Barrier::new(2)),
        ..RecordingPusher::default()
    });
    let d = dispatcher(&routes, &pusher);
    // Each push waits until the other has started; sequential pushes would
    // never get past the first. The timeout only turns a hang into a failure.
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        d.dispatch(&[stored("alice", 1, "m1")]),
    )
    .await
    .expect("pushes to n1 and n2 must be in flight at the same time")
    .unwrap();
    assert_eq!(report.delivered, 2);
}

#[tokio::test]
async fn nothing_to_do_touches_nothing() {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher::default());
    let d = dispatcher(&routes, &pusher);

    let report = d.dispatch(&[]).await.unwrap();
    assert_eq!(report, DispatchReport::default());

    let report = d.dispatch(&[stored("dave", 1, "m1")]).await.unwrap();
    assert_eq!(report.offline_users, 1);
    assert!(pusher.calls().is_empty());
}

/// A route store that is down.
struct DownRoutes;

#[async_trait]
impl RouteStore for DownRoutes {
    async fn add_route(&self, _: &UserId, _: &ConnId, _: &NodeId) -> Result<(), RouteError> {
        Err(RouteError::Unavailable("down".into()))
    }
    async fn add_routes(&self, _: &[(UserId, ConnId)], _: &NodeId) -> Result<(), RouteError> {
        Err(RouteError::Unavailable("down".into()))
    }
    async fn remove_routes(&self, _: &[(UserId, ConnId)]) -> Result<(), RouteError> {
        Err(RouteError::Unavailable("down".into()))
    }
    async fn routes_of(&self, _: &[UserId]) -> Result<Vec<Vec<(ConnId, NodeId)>>, RouteError> {
        Err(RouteError::Unavailable("down".into()))
    }
    async fn ping(&self) -> Result<(), RouteError> {
        Err(RouteError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn direct_handoff_dispatches_and_reports_readiness() {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher::default());
    let handoff = DirectHandoff::new(Arc::new(dispatcher(&routes, &pusher)));
    handoff.ready().await.unwrap();
    handoff.hand_off(&[stored("bob", 1, "m1")]).await.unwrap();
    assert_eq!(pusher.calls().len(), 1);

    let down = DirectHandoff::new(Arc::new(Dispatcher {
        routes: Arc::new(DownRoutes),
        nodes: routes.clone(),
        pusher: pusher.clone(),
        retry: crate::RetryPolicy::never(),
        topic_routes: Arc::new(MemoryTopicRoutes::default()),
    }));
    assert!(down.ready().await.is_err());
    assert!(down.hand_off(&[stored("bob", 2, "m2")]).await.is_err());
    assert_eq!(pusher.calls().len(), 1, "nothing pushed without routes");
}

#[tokio::test]
async fn direct_handoff_asks_the_route_store_at_every_readiness_check() {
    let topology = topology().await;
    let pusher = Arc::new(RecordingPusher::default());
    let routes = Arc::new(SwitchedRoutes::new(topology.clone()));
    let handoff = DirectHandoff::new(Arc::new(Dispatcher {
        routes: routes.clone(),
        nodes: topology,
        pusher: pusher.clone(),
        retry: crate::RetryPolicy::never(),
        topic_routes: Arc::new(MemoryTopicRoutes::default()),
    }));
    handoff.ready().await.unwrap();
    handoff.ready().await.unwrap();
    assert_eq!(routes.pings(), 2);

    // Down: the very next check says so (collect then stores nothing).
    routes.set_down(true);
    assert!(handoff.ready().await.is_err());
    assert!(handoff.hand_off(&[stored("bob", 1, "m1")]).await.is_err());
    assert_eq!(routes.pings(), 3);

    routes.set_down(false);
    handoff.ready().await.unwrap();
    handoff.hand_off(&[stored("bob", 2, "m2")]).await.unwrap();
    assert_eq!(pusher.calls().len(), 1);
}

#[tokio::test]
async fn lambda_handler_returns_the_report() -> anyhow::Result<()> {
    let routes = topology().await;
    let pusher = Arc::new(RecordingPusher::default());
    let d = dispatcher(&routes, &pusher);

    // The event as Lambda delivers it: JSON, parsed by the runtime.
    let event: DispatchEvent = serde_json::from_value(serde_json::json!({
        "messages": [
            {"user_id": "bob", "seq": 3, "id": "m3", "data": {"text": "hi"}, "created_at_ms": 1},
            {"user_id": "dave", "seq": 1, "id": "m3", "data": {"text": "hi"}, "created_at_ms": 1}
        ]
    }))?;
    let report = handler(&d, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    assert_eq!(report.messages, 2);
    assert_eq!(report.delivered, 1);
    assert_eq!(report.offline_users, 1);
    let calls = pusher.calls();
    assert_eq!(calls[0].1[0].message.data.get(), r#"{"text":"hi"}"#);

    let down = Dispatcher {
        routes: Arc::new(DownRoutes),
        nodes: routes.clone(),
        pusher: pusher.clone(),
        retry: crate::RetryPolicy::never(),
        topic_routes: Arc::new(MemoryTopicRoutes::default()),
    };
    let event = DispatchEvent {
        messages: vec![stored("bob", 4, "m4")],
        topic_messages: Vec::new(),
    };
    assert!(
        handler(&down, LambdaEvent::new(event, Context::default()))
            .await
            .is_err(),
        "a route store failure fails the invocation so it is retried"
    );
    Ok(())
}
