//! The Redis route store on a real Redis Cluster: what is peculiar to
//! cluster mode. The contract suites run on a cluster too (`contract.rs`);
//! here are the slot layout (our slot function agrees with the cluster's,
//! keys spread over every primary, pipelines grouped by slot), keys lost
//! behind the store's back, and a cluster that dies or was never there.
//!
//! Each test starts its own three-primary cluster
//! ([`edgepush_testkit::RedisCluster`]) and kills it when it ends.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::TEST_ROUTE_TTL;
use edgepush_core::ports::Heartbeat;
use edgepush_core::ports::{PresenceWrite, TopicPresenceWrite};
use edgepush_core::{
    ConnId, NodeDirectory, NodeId, PresenceStore, RouteError, RouteStore, TopicName, TopicRoutes,
    UserId,
};
use edgepush_redis::keys::{node_key, route_key, slot};
use edgepush_redis::{RedisConfig, RedisConnection, RedisRouteStore};
use edgepush_testkit::{RedisCluster, conn, free_ports, node, unique_prefix, user};
use redis::AsyncCommands;

fn config(cluster: &RedisCluster, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: prefix.to_owned(),
        route_ttl: TEST_ROUTE_TTL,
        // Only the first node as seed: the rest is discovered.
        ..RedisConfig::cluster([cluster.url(cluster.ports()[0])])
    }
}

/// A cluster-aware raw connection, to look behind the store.
async fn raw(cluster: &RedisCluster) -> Result<RedisConnection> {
    Ok(RedisConnection::connect(&RedisConfig::cluster(cluster.urls())).await?)
}

fn is_unavailable<T>(r: &Result<T, RouteError>) -> bool {
    matches!(r, Err(RouteError::Unavailable(_)))
}

#[tokio::test]
async fn route_keys_spread_over_every_primary_by_slot() -> Result<()> {
    let cluster = RedisCluster::start().await?;
    let prefix = unique_prefix("cluster-routes");
    let store = RedisRouteStore::connect(config(&cluster, &prefix)).await?;
    let mut raw = raw(&cluster).await?;
    assert!(format!("{store:?}").contains("cluster: true"));

    // Our slot function agrees with the cluster's.
    for name in ["alice", "bob", "tenant:42@example.com", "u-0017"] {
        let key = route_key(&prefix, &user(name));
        let theirs: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut raw)
            .await?;
        assert_eq!(slot(key.as_bytes()), theirs, "{key}");
    }

    // 300 users, two connections each on two nodes, written interleaved in
    // one call (more than one chunk), so every pipeline spans many slots.
    let users: Vec<UserId> = (0..300).map(|i| user(&format!("u-{i:04}"))).collect();
    let slots: HashSet<u16> = users
        .iter()
        .map(|u| slot(route_key(&prefix, u).as_bytes()))
        .collect();
    assert!(slots.len() > 250, "users should spread over many slots");
    let first: Vec<(UserId, ConnId)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), conn(&format!("a{i}"))))
        .collect();
    let mut second: Vec<(UserId, ConnId)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), conn(&format!("b{i}"))))
        .collect();
    second.reverse();
    store.add_routes(&first, &node("edge-1")).await?;
    store.add_routes(&second, &node("edge-2")).await?;

    // Every primary holds some of the route hashes, each with its TTL.
    let counts = cluster.key_counts().await?;
    assert_eq!(counts.iter().sum::<i64>(), 300, "{counts:?}");
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    for u in users.iter().step_by(50) {
        let pttl: i64 = raw.pttl(route_key(&prefix, u)).await?;
        assert!(pttl > 0 && pttl <= 600_000, "PTTL {pttl} of {u}");
    }
    let got = store.routes_of(&users).await?;
    assert!(
        got.iter().all(|r| r.len() == 2),
        "every user has both routes"
    );

    // Removing every route of the first 100 users deletes their hashes,
    // wherever they live.
    let removed: Vec<(UserId, ConnId)> = first
        .iter()
        .chain(&second)
        .filter(|(u, _)| users[..100].contains(u))
        .cloned()
        .collect();
    store.remove_routes(&removed).await?;
    let gone: bool = raw.exists(route_key(&prefix, &users[0])).await?;
    assert!(!gone, "a hash without fields should be deleted");
    assert_eq!(cluster.key_counts().await?.iter().sum::<i64>(), 200);
    Ok(())
}

#[tokio::test]
async fn topic_routes_and_presence_work_across_slots() -> Result<()> {
    let cluster = RedisCluster::start().await?;
    let prefix = unique_prefix("cluster-topics");
    let store = RedisRouteStore::connect(config(&cluster, &prefix)).await?;
    let topics: Vec<TopicName> = (0..200)
        .map(|i| TopicName::new(format!("room:{i}")).expect("topic"))
        .collect();
    let (n1, n2) = (node("edge-1"), node("edge-2"));
    store.add_topics(&n1, &topics).await?;
    store.add_topics(&n2, &topics[..100]).await?;
    let got = store.nodes_of(&topics).await?;
    for (i, nodes) in got.iter().enumerate() {
        let mut nodes = nodes.clone();
        nodes.sort();
        let want = if i < 100 {
            vec![n1.clone(), n2.clone()]
        } else {
            vec![n1.clone()]
        };
        assert_eq!(nodes, want, "members of topic {i}");
    }
    store.remove_topics(&n1, &topics).await?;
    assert!(
        store
            .nodes_of(&topics[100..])
            .await?
            .iter()
            .all(Vec::is_empty)
    );

    // Presence: users and topics in many slots, in one write.
    let users: Vec<UserId> = (0..100).map(|i| user(&format!("p-{i}"))).collect();
    let write = PresenceWrite {
        connections: users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), conn(&format!("c{i}")), Some(i as i64)))
            .collect(),
        topics: topics[..50]
            .iter()
            .map(|t| TopicPresenceWrite {
                topic: t.clone(),
                totals: Some((2, 2)),
                members: users[..2].iter().map(|u| (u.clone(), 1)).collect(),
            })
            .collect(),
    };
    store.write(&n1, &write).await?;
    let conns = store.user_connections(&users).await?;
    assert!(conns.iter().all(|c| c.len() == 1));
    assert_eq!(store.topic_nodes(&topics[49]).await?[0].connections, 2);
    assert_eq!(store.topic_members(&topics[7], 0, 10).await?.0.len(), 2);
    Ok(())
}

#[tokio::test]
async fn node_keys_spread_over_the_primaries_and_a_dead_cluster_is_unavailable() -> Result<()> {
    let mut cluster = RedisCluster::start().await?;
    let prefix = unique_prefix("cluster-nodes");
    let store = RedisRouteStore::connect(RedisConfig {
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..config(&cluster, &prefix)
    })
    .await?;
    let mut raw = raw(&cluster).await?;
    let ttl = Duration::from_secs(60);

    let nodes: Vec<NodeId> = (0..30).map(|i| node(&format!("edge-{i}"))).collect();
    for (i, n) in nodes.iter().enumerate() {
        store
            .heartbeat(n, &format!("http://10.0.0.{i}:8081"), ttl)
            .await?;
    }
    assert!(cluster.key_counts().await?.iter().all(|&c| c > 0));
    assert_eq!(store.live_nodes(&nodes).await?.len(), 30);

    // A key lost behind the store's back, wherever it lives.
    let deleted: i64 = raw.del(node_key(&prefix, &nodes[10])).await?;
    assert_eq!(deleted, 1);
    let live = store.live_nodes(&nodes).await?;
    assert_eq!(live.len(), 29);
    assert!(!live.contains_key(&nodes[10]));
    assert_eq!(
        store.heartbeat(&nodes[10], "http://back", ttl).await?,
        Heartbeat::Recreated
    );
    store.ping().await?;

    // With the cluster gone, operations answer Unavailable.
    cluster.kill();
    let u = user("u");
    for _ in 0..2 {
        let pinged = store.ping().await;
        assert!(is_unavailable(&pinged), "ping: {pinged:?}");
        let routes = store.routes_of(&[u.clone(), user("v")]).await;
        assert!(is_unavailable(&routes), "routes_of: {routes:?}");
        let beat = store.heartbeat(&nodes[20], "http://x", ttl).await;
        assert!(is_unavailable(&beat), "heartbeat: {beat:?}");
        let live = store.live_nodes(&nodes).await;
        assert!(is_unavailable(&live), "live_nodes: {live:?}");
        let added = store.add_route(&u, &conn("c"), &nodes[20]).await;
        assert!(is_unavailable(&added), "add_route: {added:?}");
    }
    Ok(())
}

#[tokio::test]
async fn connecting_to_a_dead_cluster_is_unavailable() -> Result<()> {
    let urls: Vec<String> = free_ports(2)?
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    match RedisRouteStore::connect(RedisConfig::cluster(urls)).await {
        Err(RouteError::Unavailable(msg)) => ensure!(msg.contains("connect"), "{msg}"),
        other => bail!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}
