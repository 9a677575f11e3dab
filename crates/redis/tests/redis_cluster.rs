//! Integration tests of `RedisRouteStore` against a real Redis Cluster.
//!
//! Each test starts its own three-primary cluster: three `redis-server`
//! processes (`EDGEPUSH_REDIS_SERVER_BIN`, default `redis-server` on PATH)
//! joined by `redis-cli --cluster create` (`EDGEPUSH_REDIS_CLI_BIN`, default
//! the `redis-cli` next to the server binary, else on PATH), and kills them
//! when it ends.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use edgepush_core::ports::Heartbeat;
use edgepush_core::ports::{PresenceWrite, TopicPresenceWrite};
use edgepush_core::{
    ConnId, NodeDirectory, NodeId, PresenceStore, RouteError, RouteStore, TopicName, TopicRoutes,
    UserId,
};
use edgepush_redis::keys::{node_key, route_key, slot};
use edgepush_redis::{RedisConfig, RedisConnection, RedisRouteStore};
use redis::AsyncCommands;

const TEST_ROUTE_TTL: Duration = Duration::from_secs(600);

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn conn(s: &str) -> ConnId {
    ConnId::new(s).expect("valid conn id")
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

/// Something unique to this process and call, for directories and prefixes.
fn unique(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{test}-{}-{nanos}-{n}", std::process::id())
}

/// Ports on 127.0.0.1 that nothing listens on, all different (bound
/// together, then released).
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn server_bin() -> String {
    std::env::var("EDGEPUSH_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// `redis-cli`: as configured, else beside the server binary, else on PATH.
fn cli_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("EDGEPUSH_REDIS_CLI_BIN") {
        return bin.into();
    }
    let server = PathBuf::from(server_bin());
    match server.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && dir.join("redis-cli").exists() => {
            dir.join("redis-cli")
        }
        _ => "redis-cli".into(),
    }
}

/// A private three-primary Redis Cluster; its processes are killed and its
/// directory removed on drop.
struct Cluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl Cluster {
    async fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(unique("edgepush-redis-cluster"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // Client ports and cluster bus ports, all chosen (the default bus
        // port, client port + 10000, may be above 65535).
        let all = free_ports(6)?;
        let (ports, bus_ports) = all.split_at(3);
        let mut cluster = Self {
            children: Vec::new(),
            ports: ports.to_vec(),
            dir,
        };
        for (&port, &bus) in ports.iter().zip(bus_ports) {
            let child = spawn_node(&cluster.dir, port, bus)?;
            cluster.children.push(child);
        }
        for port in cluster.ports.clone() {
            cluster.wait_for_ping(port).await?;
        }
        cluster.create()?;
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    fn url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|&p| self.url(p)).collect()
    }

    /// A plain (non-cluster) connection to the node on `port`.
    async fn node_conn(&self, port: u16) -> Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url(port))?
            .get_multiplexed_async_connection()
            .await?)
    }

    async fn wait_for_ping(&mut self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for child in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!("redis-server exited early: {status}");
                }
            }
            if let Ok(mut c) = self.node_conn(port).await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server on {port} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Joins the nodes into one cluster, slots split evenly.
    fn create(&self) -> Result<()> {
        let cli = cli_bin();
        let mut cmd = Command::new(&cli);
        cmd.arg("--cluster").arg("create");
        for &port in &self.ports {
            cmd.arg(format!("127.0.0.1:{port}"));
        }
        let out = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {} (set EDGEPUSH_REDIS_CLI_BIN)", cli.display()))?;
        ensure!(
            out.status.success(),
            "redis-cli --cluster create failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Waits until every node reports `cluster_state:ok` and knows all three.
    async fn wait_until_ok(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ok = 0;
            for &port in &self.ports {
                let mut c = self.node_conn(port).await?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await?;
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    ok += 1;
                }
            }
            if ok == self.ports.len() {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "cluster never reached state ok");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many keys each node holds.
    async fn key_counts(&self) -> Result<Vec<i64>> {
        let mut counts = Vec::new();
        for &port in &self.ports {
            let mut c = self.node_conn(port).await?;
            counts.push(redis::cmd("DBSIZE").query_async(&mut c).await?);
        }
        Ok(counts)
    }

    /// A cluster-aware raw connection, to look behind the store.
    async fn raw(&self) -> Result<RedisConnection> {
        Ok(RedisConnection::connect(&RedisConfig::cluster(self.urls())).await?)
    }

    fn kill(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_node(dir: &Path, port: u16, bus: u16) -> Result<Child> {
    let bin = server_bin();
    let nodes_conf = dir.join(format!("nodes-{port}.conf"));
    Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
        ])
        .arg("--cluster-config-file")
        .arg(&nodes_conf)
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {bin} (set EDGEPUSH_REDIS_SERVER_BIN)"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(cluster: &Cluster, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: prefix.to_owned(),
        route_ttl: TEST_ROUTE_TTL,
        // Only the first node as seed: the rest is discovered.
        ..RedisConfig::cluster([cluster.url(cluster.ports[0])])
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

fn is_unavailable<T>(r: &Result<T, RouteError>) -> bool {
    matches!(r, Err(RouteError::Unavailable(_)))
}

#[tokio::test]
async fn routes_work_across_slots_and_primaries() -> Result<()> {
    let cluster = Cluster::start().await?;
    let prefix = unique("eptest:cluster-routes");
    let store = RedisRouteStore::connect(config(&cluster, &prefix)).await?;
    let mut raw = cluster.raw().await?;
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
    let (n1, n2) = (node("edge-1"), node("edge-2"));
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
    store.add_routes(&first, &n1).await?;
    store.add_routes(&second, &n2).await?;
    store.add_route(&users[7], &conn("c7"), &n2).await?;

    // Every primary holds some of the route hashes.
    let counts = cluster.key_counts().await?;
    assert_eq!(counts.iter().sum::<i64>(), 300, "{counts:?}");
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");

    // Order preserved: reversed users, an unknown user, a duplicate.
    let mut asked: Vec<UserId> = users.iter().rev().cloned().collect();
    asked.insert(10, user("nobody"));
    asked.push(users[7].clone());
    let got = store.routes_of(&asked).await?;
    assert_eq!(got.len(), asked.len());
    for (u, routes) in asked.iter().zip(&got) {
        let Some(i) = users.iter().position(|x| x == u) else {
            assert!(routes.is_empty(), "{u} has routes");
            continue;
        };
        let mut want = vec![
            (format!("a{i}"), "edge-1".to_owned()),
            (format!("b{i}"), "edge-2".to_owned()),
        ];
        if i == 7 {
            want.push(("c7".to_owned(), "edge-2".to_owned()));
        }
        want.sort();
        assert_eq!(names(routes), want, "routes of {u}");
    }

    // TTL set on every hash (spot check on a few, wherever they live).
    for u in users.iter().step_by(50) {
        let pttl: i64 = raw.pttl(route_key(&prefix, u)).await?;
        assert!(pttl > 0 && pttl <= 600_000, "PTTL {pttl} of {u}");
    }

    // Remove every "a" route, and for the first 100 users the "b" route too:
    // their hashes disappear with their last field.
    let mut removed: Vec<(UserId, ConnId)> = first.clone();
    removed.extend(
        second
            .iter()
            .filter(|(u, _)| users[..100].contains(u))
            .cloned(),
    );
    removed.push((user("nobody"), conn("x")));
    store.remove_routes(&removed).await?;
    let got = store.routes_of(&users).await?;
    for (i, routes) in got.iter().enumerate() {
        let mut want = Vec::new();
        if i >= 100 {
            want.push((format!("b{i}"), "edge-2".to_owned()));
        }
        if i == 7 {
            want.push(("c7".to_owned(), "edge-2".to_owned()));
        }
        assert_eq!(names(routes), want, "routes of user {i} after removal");
    }
    let gone: bool = raw.exists(route_key(&prefix, &users[0])).await?;
    assert!(!gone, "a hash without fields should be deleted");
    assert_eq!(cluster.key_counts().await?.iter().sum::<i64>(), 201);

    assert!(store.routes_of(&[]).await?.is_empty());
    store.ping().await?;
    Ok(())
}

#[tokio::test]
async fn topic_routes_and_presence_work_across_slots() -> Result<()> {
    let cluster = Cluster::start().await?;
    let prefix = unique("eptest:cluster-topics");
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
async fn liveness_works_across_slots_and_fails_fast_when_the_cluster_dies() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let prefix = unique("eptest:cluster-nodes");
    let store = RedisRouteStore::connect(RedisConfig {
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..config(&cluster, &prefix)
    })
    .await?;
    let mut raw = cluster.raw().await?;
    let ttl = Duration::from_secs(60);

    let nodes: Vec<NodeId> = (0..30).map(|i| node(&format!("edge-{i}"))).collect();
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            store
                .heartbeat(n, &format!("http://10.0.0.{i}:8081"), ttl)
                .await?,
            Heartbeat::Recreated,
            "first heartbeat of {n}"
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            store
                .heartbeat(n, &format!("http://10.0.1.{i}:8081"), ttl)
                .await?,
            Heartbeat::Refreshed,
            "second heartbeat of {n}"
        );
    }
    assert!(cluster.key_counts().await?.iter().all(|&c| c > 0));

    let mut asked = nodes.clone();
    asked.push(node("never-seen"));
    let live = store.live_nodes(&asked).await?;
    let want: HashMap<NodeId, String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), format!("http://10.0.1.{i}:8081")))
        .collect();
    assert_eq!(live, want);

    // remove_node, and a key lost behind the store's back.
    for n in &nodes[..10] {
        store.remove_node(n).await?;
    }
    let deleted: i64 = raw.del(node_key(&prefix, &nodes[10])).await?;
    assert_eq!(deleted, 1);
    let live = store.live_nodes(&nodes).await?;
    assert_eq!(live.len(), 19);
    assert!(nodes[..11].iter().all(|n| !live.contains_key(n)));
    assert_eq!(
        store.heartbeat(&nodes[10], "http://back", ttl).await?,
        Heartbeat::Recreated
    );
    assert_eq!(
        store.heartbeat(&nodes[10], "http://back", ttl).await?,
        Heartbeat::Refreshed
    );

    // A silent node expires.
    let dying = node("dying");
    store
        .heartbeat(&dying, "http://dying", Duration::from_millis(300))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .live_nodes(std::slice::from_ref(&dying))
        .await?
        .contains_key(&dying)
    {
        ensure!(
            Instant::now() < deadline,
            "300 ms node key alive after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let ports = free_ports(2)?;
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    match RedisRouteStore::connect(RedisConfig::cluster(urls)).await {
        Err(RouteError::Unavailable(msg)) => ensure!(msg.contains("connect"), "{msg}"),
        other => bail!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}
