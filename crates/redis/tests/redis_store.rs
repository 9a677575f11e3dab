//! Integration tests of `RedisRouteStore` against a real Redis.
//!
//! Most tests use the shared dev Redis named by `EDGEPUSH_TEST_REDIS_URL`,
//! each under a key prefix of its own. The outage test starts (and kills) a
//! private `redis-server` (`EDGEPUSH_REDIS_SERVER_BIN`, default
//! `redis-server` on PATH).

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use edgepush_core::ports::Heartbeat;
use edgepush_core::{ConnId, NodeDirectory, NodeId, RouteError, RouteStore, UserId};
use edgepush_redis::keys::{node_key, route_key};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// Route TTL used by the tests: long enough for any test, short enough that
/// keys left by a failed test disappear by themselves.
const TEST_ROUTE_TTL: Duration = Duration::from_secs(600);

fn redis_url() -> String {
    match std::env::var("EDGEPUSH_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("set EDGEPUSH_TEST_REDIS_URL, or run scripts/test"),
    }
}

/// A key prefix no other test (or test run) uses.
fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("eptest:{test}:{}:{nanos}:{n}", std::process::id())
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn conn(s: &str) -> ConnId {
    ConnId::new(s).expect("valid conn id")
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

fn config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: prefix.to_owned(),
        route_ttl: TEST_ROUTE_TTL,
        ..RedisConfig::new(url)
    }
}

/// A store on the shared dev Redis, and a raw connection to look behind it.
struct Fixture {
    store: RedisRouteStore,
    raw: MultiplexedConnection,
    prefix: String,
}

impl Fixture {
    async fn new(test: &str) -> Result<Self> {
        let url = redis_url();
        let prefix = unique_prefix(test);
        let store = RedisRouteStore::connect(config(&url, &prefix))
            .await
            .with_context(|| format!("connect to {url}"))?;
        let raw = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self { store, raw, prefix })
    }

    fn route_key(&self, u: &UserId) -> String {
        route_key(&self.prefix, u)
    }

    fn node_key(&self, n: &NodeId) -> String {
        node_key(&self.prefix, n)
    }

    /// Deletes every key under this test's prefix.
    async fn cleanup(mut self) -> Result<()> {
        let pattern = format!("{}:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.raw)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if !keys.is_empty() {
            let _: () = self.raw.del(keys).await?;
        }
        Ok(())
    }
}

/// One user's routes as a sorted list of (conn, node) names.
fn names(routes: &[(ConnId, NodeId)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = routes
        .iter()
        .map(|(c, n)| (c.to_string(), n.to_string()))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(c, n)| ((*c).to_owned(), (*n).to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn routes_round_trip_across_users_and_nodes() -> Result<()> {
    let f = Fixture::new("roundtrip").await?;
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let (n1, n2) = (node("edge-1"), node("edge-2"));

    f.store
        .add_routes(
            &[
                (alice.clone(), conn("a1")),
                (bob.clone(), conn("b1")),
                (alice.clone(), conn("a2")),
            ],
            &n1,
        )
        .await?;
    f.store.add_route(&alice, &conn("a3"), &n2).await?;
    f.store.add_route(&carol, &conn("c1"), &n2).await?;

    // Input order is kept, unknown users get an empty list, and a user
    // named twice is answered twice.
    let got = f
        .store
        .routes_of(&[
            carol.clone(),
            dave.clone(),
            alice.clone(),
            bob.clone(),
            carol.clone(),
        ])
        .await?;
    assert_eq!(got.len(), 5);
    assert_eq!(names(&got[0]), pairs(&[("c1", "edge-2")]));
    assert!(got[1].is_empty());
    assert_eq!(
        names(&got[2]),
        pairs(&[("a1", "edge-1"), ("a2", "edge-1"), ("a3", "edge-2")])
    );
    assert_eq!(names(&got[3]), pairs(&[("b1", "edge-1")]));
    assert_eq!(got[4], got[0]);

    f.store
        .remove_routes(&[
            (alice.clone(), conn("a1")),
            (carol.clone(), conn("c1")),
            (bob.clone(), conn("no-such-conn")),
        ])
        .await?;
    let got = f
        .store
        .routes_of(&[alice.clone(), bob.clone(), carol.clone()])
        .await?;
    assert_eq!(names(&got[0]), pairs(&[("a2", "edge-1"), ("a3", "edge-2")]));
    assert_eq!(names(&got[1]), pairs(&[("b1", "edge-1")]));
    assert!(got[2].is_empty());

    // The last field gone, the hash is gone too.
    let mut raw = f.raw.clone();
    let exists: bool = raw.exists(f.route_key(&carol)).await?;
    assert!(
        !exists,
        "carol's route hash should be deleted with its last field"
    );

    assert!(f.store.routes_of(&[]).await?.is_empty());
    f.store.ping().await?;
    f.cleanup().await
}

#[tokio::test]
async fn a_moved_connection_points_to_its_new_node() -> Result<()> {
    let f = Fixture::new("moved").await?;
    let u = user("u");
    f.store.add_route(&u, &conn("c"), &node("old")).await?;
    f.store.add_route(&u, &conn("c"), &node("new")).await?;
    let got = f.store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(names(&got[0]), pairs(&[("c", "new")]));
    f.cleanup().await
}

#[tokio::test]
async fn large_inputs_are_written_and_removed_in_chunks() -> Result<()> {
    let f = Fixture::new("chunks").await?;
    let users = [user("x"), user("y"), user("z")];
    let routes: Vec<(UserId, ConnId)> = (0..2500)
        .map(|i| (users[i % 3].clone(), conn(&format!("c{i}"))))
        .collect();
    f.store.add_routes(&routes, &node("n")).await?;
    let got = f.store.routes_of(&users).await?;
    let counts: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![834, 833, 833]);

    f.store.remove_routes(&routes[..2400]).await?;
    let got = f.store.routes_of(&users).await?;
    let total: usize = got.iter().map(Vec::len).sum();
    assert_eq!(total, 100);
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
async fn heartbeat_creates_then_refreshes() -> Result<()> {
    let f = Fixture::new("heartbeat").await?;
    let n = node("edge-hb");
    let ttl = Duration::from_secs(30);

    assert_eq!(
        f.store.heartbeat(&n, "http://10.0.0.1:8081", ttl).await?,
        Heartbeat::Recreated
    );
    assert_eq!(
        f.store.heartbeat(&n, "http://10.0.0.1:8082", ttl).await?,
        Heartbeat::Refreshed
    );
    // The refresh also moved the URL.
    let live = f.store.live_nodes(&[n.clone(), node("never-seen")]).await?;
    assert_eq!(
        live,
        HashMap::from([(n.clone(), "http://10.0.0.1:8082".to_owned())])
    );
    let mut raw = f.raw.clone();
    let pttl: i64 = raw.pttl(f.node_key(&n)).await?;
    assert!(pttl > 0 && pttl <= 30_000, "node key PTTL {pttl}");
    assert!(f.store.live_nodes(&[]).await?.is_empty());
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
    assert_eq!(
        f.store
            .heartbeat(&dying, "http://dying", Duration::from_millis(300))
            .await?,
        Heartbeat::Recreated
    );
    let both = [dying.clone(), steady.clone()];
    assert!(f.store.live_nodes(&both).await?.contains_key(&dying));

    // No more heartbeats from `dying`: it must be reported dead.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = f.store.live_nodes(&both).await?;
        if !live.contains_key(&dying) {
            assert_eq!(live.get(&steady).map(String::as_str), Some("http://steady"));
            break;
        }
        if Instant::now() > deadline {
            bail!("node with a 300 ms TTL still alive after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its routes are untouched: readers filter them by liveness.
    let got = f.store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(
        names(&got[0]),
        pairs(&[("c-dying", "dying"), ("c-steady", "steady")])
    );
    // And its next heartbeat says the entry had been lost.
    assert_eq!(
        f.store
            .heartbeat(&dying, "http://dying", Duration::from_secs(60))
            .await?,
        Heartbeat::Recreated
    );
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

    // What FLUSHALL or a Redis restart does to this node's entry.
    let mut raw = f.raw.clone();
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
async fn remove_node_marks_it_dead_now() -> Result<()> {
    let f = Fixture::new("removenode").await?;
    let (gone, kept) = (node("gone"), node("kept"));
    let ttl = Duration::from_secs(60);
    f.store.heartbeat(&gone, "http://gone", ttl).await?;
    f.store.heartbeat(&kept, "http://kept", ttl).await?;

    f.store.remove_node(&gone).await?;
    let live = f.store.live_nodes(&[gone.clone(), kept.clone()]).await?;
    assert_eq!(
        live,
        HashMap::from([(kept.clone(), "http://kept".to_owned())])
    );
    // Removing twice is fine.
    f.store.remove_node(&gone).await?;
    assert_eq!(
        f.store.heartbeat(&gone, "http://gone", ttl).await?,
        Heartbeat::Recreated
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
async fn clones_share_the_store_across_tasks() -> Result<()> {
    let f = Fixture::new("clones").await?;
    let u = user("popular");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = f.store.clone();
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            store
                .add_route(&u, &conn(&format!("c{i}")), &node("n"))
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let got = f.store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(got[0].len(), 20);
    f.cleanup().await
}

#[tokio::test]
async fn a_prefix_with_braces_is_refused() {
    let cfg = RedisConfig {
        key_prefix: "ep{x}".into(),
        ..RedisConfig::new(redis_url())
    };
    match RedisRouteStore::connect(cfg).await {
        Err(RouteError::Backend(msg)) => assert!(msg.contains("prefix"), "{msg}"),
        other => panic!("expected a Backend error, got {other:?}"),
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable() {
    let port = free_port();
    let started = Instant::now();
    let result =
        RedisRouteStore::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}"))).await;
    match result {
        Err(RouteError::Unavailable(msg)) => assert!(msg.contains("connect"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Not a timing assertion: a guard against the 30 s hangs this replaces.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "connect took {:?}",
        started.elapsed()
    );
}

/// A private redis-server, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> Result<Self> {
        let bin =
            std::env::var("EDGEPUSH_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {bin} (set EDGEPUSH_REDIS_SERVER_BIN)"))?;
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits until the server answers PING.
    async fn ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited early: {status}");
            }
            let client = redis::Client::open(self.url())?;
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server on {} never became ready",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_unavailable<T: std::fmt::Debug>(r: Result<T, RouteError>) -> bool {
    matches!(r, Err(RouteError::Unavailable(_)))
}

#[tokio::test]
async fn the_store_survives_a_redis_restart() -> Result<()> {
    let port = free_port();
    let mut server = RedisServer::start(port)?;
    server.ready().await?;
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

    server.kill()?;
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

    let mut server = RedisServer::start(port)?;
    server.ready().await?;
    // The same store recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(RouteError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("store did not recover after the restart: {e}"),
        }
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
    drop(server);
    Ok(())
}
