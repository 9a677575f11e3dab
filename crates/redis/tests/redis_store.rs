//! The Redis route store against a real Redis: what is peculiar to this
//! adapter. The rules every route store and node directory keeps are
//! checked by the contract suites in `contract.rs`; here are the key layout
//! (hashes deleted with their last field, TTLs), keys lost or corrupted
//! behind the store's back, liveness that never touches routes, the prefix
//! check, and outages.
//!
//! Most tests use the shared Redis named by `EDGEPUSH_TEST_REDIS_URL`, each
//! under a key prefix of its own. The outage test starts (and kills) a
//! private `redis-server` ([`edgepush_testkit::RedisServer`]).

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::TEST_ROUTE_TTL;
use edgepush_core::ports::Heartbeat;
use edgepush_core::{NodeDirectory, NodeId, RouteError, RouteStore, UserId};
use edgepush_redis::keys::{node_key, route_key};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::wait::{Check, stall, until};
use edgepush_testkit::{
    RedisServer, conn, delete_prefix, free_port, node, pairs, redis_url, route_names as names,
    unique_prefix, user,
};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// A store on the shared Redis, and a raw connection to look behind it.
struct Fixture {
    store: RedisRouteStore,
    raw: MultiplexedConnection,
    url: String,
    prefix: String,
}

impl Fixture {
    async fn new(test: &str) -> Result<Self> {
        let url = redis_url()?;
        let prefix = unique_prefix(test);
        let store = RedisRouteStore::connect(RedisConfig {
            key_prefix: prefix.clone(),
            route_ttl: TEST_ROUTE_TTL,
            ..RedisConfig::new(&url)
        })
        .await
        .with_context(|| format!("connect to {url}"))?;
        let raw = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self {
            store,
            raw,
            url,
            prefix,
        })
    }

    fn route_key(&self, u: &UserId) -> String {
        route_key(&self.prefix, u)
    }

    fn node_key(&self, n: &NodeId) -> String {
        node_key(&self.prefix, n)
    }

    /// Deletes every key under this test's prefix.
    async fn cleanup(self) -> Result<()> {
        delete_prefix(&self.url, &self.prefix).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_route_hash_goes_with_its_last_field() -> Result<()> {
    let f = Fixture::new("lastfield").await?;
    let (alice, carol) = (user("alice"), user("carol"));
    let n = node("edge-1");
    f.store
        .add_routes(
            &[(alice.clone(), conn("a1")), (carol.clone(), conn("c1"))],
            &n,
        )
        .await?;
    let mut raw = f.raw.clone();
    let exists: bool = raw.exists(f.route_key(&carol)).await?;
    assert!(exists, "carol's route hash should exist");
    f.store
        .remove_routes(&[(carol.clone(), conn("c1"))])
        .await?;
    let exists: bool = raw.exists(f.route_key(&carol)).await?;
    assert!(
        !exists,
        "carol's route hash should be deleted with its last field"
    );
    let exists: bool = raw.exists(f.route_key(&alice)).await?;
    assert!(exists, "alice's route hash is untouched");
    f.cleanup().await
}

#[tokio::test]
async fn route_hashes_have_a_ttl_refreshed_on_add() -> Result<()> {
    let f = Fixture::new("ttl").await?;
    let u = user("ttl-user");
    let key = f.route_key(&u);
    let mut raw = f.raw.clone();

    f.store.add_route(&u, &conn("c1"), &node("n")).await?;
    let pttl: i64 = raw.pttl(&key).await?;
    let max = i64::try_from(TEST_ROUTE_TTL.as_millis())?;
    assert!(
        pttl > 0 && pttl <= max,
        "route hash PTTL {pttl} not in (0, {max}]"
    );

    // Shorten it by hand: the next add must push it back up.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(5_000)
        .query_async(&mut raw)
        .await?;
    f.store
        .add_routes(&[(u.clone(), conn("c2"))], &node("n"))
        .await?;
    let pttl: i64 = raw.pttl(&key).await?;
    assert!(
        pttl > 5_000,
        "add_routes did not refresh the TTL (PTTL {pttl})"
    );
    f.cleanup().await
}

#[tokio::test]
async fn a_silent_node_dies_without_touching_routes() -> Result<()> {
    let f = Fixture::new("expiry").await?;
    let (dying, steady) = (node("dying"), node("steady"));
    let u = user("u1");
    f.store.add_route(&u, &conn("c-dying"), &dying).await?;
    f.store.add_route(&u, &conn("c-steady"), &steady).await?;
    f.store
        .heartbeat(&steady, "http://steady", Duration::from_secs(60))
        .await?;
    f.store
        .heartbeat(&dying, "http://dying", Duration::from_millis(300))
        .await?;
    let both = [dying.clone(), steady.clone()];

    // No more heartbeats from `dying`: it must be reported dead.
    // Nothing measurable moves while the TTL runs out: the wait gives up
    // after the stall period, which only a key that never expires reaches.
    until("the silent node to be reported dead", stall(), || async {
        Ok(if f.store.live_nodes(&both).await?.contains_key(&dying) {
            Check::Waiting(())
        } else {
            Check::Done(())
        })
    })
    .await?;

    // Its routes are untouched: readers filter them by liveness.
    let got = f.store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(
        names(&got[0]),
        pairs(&[("c-dying", "dying"), ("c-steady", "steady")])
    );
    let mut raw = f.raw.clone();
    let exists: bool = raw.exists(f.node_key(&dying)).await?;
    assert!(!exists, "the node key expired");
    f.cleanup().await
}

#[tokio::test]
async fn a_lost_node_key_is_recreated_by_the_next_heartbeat() -> Result<()> {
    let f = Fixture::new("lost").await?;
    let n = node("edge-lost");
    let ttl = Duration::from_secs(30);
    f.store.heartbeat(&n, "http://x", ttl).await?;
    assert_eq!(
        f.store.heartbeat(&n, "http://x", ttl).await?,
        Heartbeat::Refreshed
    );
    let mut raw = f.raw.clone();
    let pttl: i64 = raw.pttl(f.node_key(&n)).await?;
    assert!(pttl > 0 && pttl <= 30_000, "node key PTTL {pttl}");

    // What FLUSHALL or a Redis restart does to this node's entry.
    let deleted: i64 = raw.del(f.node_key(&n)).await?;
    assert_eq!(deleted, 1);

    assert_eq!(
        f.store.heartbeat(&n, "http://x", ttl).await?,
        Heartbeat::Recreated
    );
    assert_eq!(
        f.store.heartbeat(&n, "http://x", ttl).await?,
        Heartbeat::Refreshed
    );
    f.cleanup().await
}

#[tokio::test]
async fn corrupt_route_fields_are_skipped() -> Result<()> {
    let f = Fixture::new("corrupt").await?;
    let u = user("victim");
    let other = user("bystander");
    f.store.add_route(&u, &conn("good"), &node("n1")).await?;
    f.store
        .add_route(&other, &conn("fine"), &node("n2"))
        .await?;

    // What someone with redis-cli could write into the hash.
    let mut raw = f.raw.clone();
    let key = f.route_key(&u);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("bad conn id!")
        .arg("n1")
        .arg("c-ok")
        .arg("bad node {id}")
        .arg("c-empty-node")
        .arg("")
        .arg(&b"\xff\xfe"[..])
        .arg("n1")
        .query_async(&mut raw)
        .await?;
    let fields: i64 = raw.hlen(&key).await?;
    assert_eq!(fields, 5);

    let got = f.store.routes_of(&[u.clone(), other.clone()]).await?;
    assert_eq!(names(&got[0]), pairs(&[("good", "n1")]));
    assert_eq!(names(&got[1]), pairs(&[("fine", "n2")]));
    f.cleanup().await
}

#[tokio::test]
async fn a_prefix_with_braces_is_refused() -> Result<()> {
    let cfg = RedisConfig {
        key_prefix: "ep{x}".into(),
        ..RedisConfig::new(redis_url()?)
    };
    match RedisRouteStore::connect(cfg).await {
        Err(RouteError::Backend(msg)) => assert!(msg.contains("prefix"), "{msg}"),
        other => panic!("expected a Backend error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable() -> Result<()> {
    let port = free_port()?;
    let result =
        RedisRouteStore::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}"))).await;
    match result {
        Err(RouteError::Unavailable(msg)) => assert!(msg.contains("connect"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}

fn is_unavailable<T: std::fmt::Debug>(r: Result<T, RouteError>) -> bool {
    matches!(r, Err(RouteError::Unavailable(_)))
}

#[tokio::test]
async fn the_store_survives_a_redis_restart() -> Result<()> {
    let mut server = RedisServer::start().await?;
    let cfg = RedisConfig {
        key_prefix: unique_prefix("restart"),
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..RedisConfig::new(server.url())
    };
    let store = RedisRouteStore::connect(cfg).await?;
    let (u, n) = (user("u"), node("n"));
    store.add_route(&u, &conn("c1"), &n).await?;
    assert_eq!(
        store
            .heartbeat(&n, "http://n", Duration::from_secs(60))
            .await?,
        Heartbeat::Recreated
    );

    server.kill();
    // While Redis is down every operation answers Unavailable (and does not
    // hang: each is bounded by the command timeout).
    for _ in 0..3 {
        assert!(is_unavailable(store.ping().await), "ping while down");
        assert!(is_unavailable(
            store.routes_of(std::slice::from_ref(&u)).await
        ));
        assert!(is_unavailable(store.add_route(&u, &conn("c2"), &n).await));
        assert!(is_unavailable(
            store
                .heartbeat(&n, "http://n", Duration::from_secs(60))
                .await
        ));
        assert!(is_unavailable(
            store.live_nodes(std::slice::from_ref(&n)).await
        ));
    }

    server.restart().await?;
    // The same store recovers by itself.
    let recovered = until(
        "the store to recover after the restart",
        stall(),
        || async {
            Ok(match store.ping().await {
                Ok(()) => Check::Done(Ok(())),
                Err(RouteError::Unavailable(_)) => Check::Waiting(()),
                Err(e) => Check::Done(Err(e)),
            })
        },
    )
    .await?;
    if let Err(e) = recovered {
        bail!("store did not recover after the restart: {e}");
    }
    // The restarted server lost everything: the heartbeat notices.
    assert_eq!(
        store
            .heartbeat(&n, "http://n", Duration::from_secs(60))
            .await?,
        Heartbeat::Recreated
    );
    assert!(store.routes_of(std::slice::from_ref(&u)).await?[0].is_empty());
    store.add_route(&u, &conn("c3"), &n).await?;
    let got = store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(names(&got[0]), pairs(&[("c3", "n")]));
    Ok(())
}
