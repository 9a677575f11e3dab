//! [`RedisCluster`]: a private three-primary Redis Cluster (feature `redis`).
//!
//! Three `redis-server` processes ([`redis_server_bin`]) joined by
//! `redis-cli --cluster create` (`EDGEPUSH_REDIS_CLI_BIN`, default the
//! `redis-cli` next to the server binary, else on `PATH`), killed and their
//! directory removed when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, ensure};

use crate::env::free_ports;
use crate::servers::{Supervised, TempDir, redis_pings, redis_server_bin};
use crate::wait::{Check, stall, until};

/// A private three-primary Redis Cluster on loopback.
pub struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Supervised>,
    // Declared last: removed after the processes are gone.
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts three nodes, joins them with the slots split evenly, and waits
    /// until every node reports `cluster_state:ok` and knows the other two.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("redis-cluster")?;
        // Client ports and cluster bus ports, all chosen (the default bus
        // port, client port + 10000, may be above 65535).
        let all = free_ports(6)?;
        let (ports, bus_ports) = all.split_at(3);
        let mut cluster = Self {
            ports: ports.to_vec(),
            nodes: Vec::new(),
            _dir: dir,
        };
        let dir = cluster._dir.path().to_owned();
        for (&port, &bus) in ports.iter().zip(bus_ports) {
            let mut node = Supervised {
                what: "redis-server (cluster node)",
                program: redis_server_bin(),
                args: [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-config-file",
                    &dir.join(format!("nodes-{port}.conf")).display().to_string(),
                    "--dir",
                    &dir.display().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .map(str::to_owned)
                .to_vec(),
                log: dir.join(format!("redis-{port}.log")),
                child: None,
            };
            node.start(move || redis_pings(port)).await?;
            cluster.nodes.push(node);
        }
        cluster.create()?;
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>` of the node on `port`.
    pub fn url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// The URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|&p| self.url(p)).collect()
    }

    /// The client ports of the nodes.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// A plain (non-cluster) connection to the node on `port`.
    pub async fn node_conn(&self, port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url(port))?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// How many keys each node holds.
    pub async fn key_counts(&self) -> anyhow::Result<Vec<i64>> {
        let mut counts = Vec::new();
        for &port in &self.ports {
            let mut c = self.node_conn(port).await?;
            counts.push(redis::cmd("DBSIZE").query_async(&mut c).await?);
        }
        Ok(counts)
    }

    /// Kills every node with SIGKILL (the whole cluster goes down).
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Joins the nodes into one cluster, slots split evenly.
    fn create(&self) -> anyhow::Result<()> {
        let cli = redis_cli_bin();
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

    /// Waits until every node reports `cluster_state:ok` and knows the
    /// other two, following the nodes' progress (what `CLUSTER INFO` says
    /// of state, known nodes and assigned slots).
    async fn wait_until_ok(&self) -> anyhow::Result<()> {
        until("the cluster to reach state ok", stall(), || async {
            let mut infos = Vec::new();
            for &port in &self.ports {
                let mut c = self.node_conn(port).await?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await?;
                let fields: Vec<String> = info
                    .lines()
                    .filter(|l| {
                        l.starts_with("cluster_state:")
                            || l.starts_with("cluster_known_nodes:")
                            || l.starts_with("cluster_slots_assigned:")
                    })
                    .map(str::to_owned)
                    .collect();
                infos.push(fields);
            }
            let ok = infos.iter().all(|fields| {
                fields.iter().any(|f| f == "cluster_state:ok")
                    && fields.iter().any(|f| f == "cluster_known_nodes:3")
            });
            Ok(if ok {
                Check::Done(())
            } else {
                Check::Waiting(infos)
            })
        })
        .await
    }
}

/// `redis-cli`: `EDGEPUSH_REDIS_CLI_BIN`, else beside the server binary,
/// else on `PATH`.
fn redis_cli_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EDGEPUSH_REDIS_CLI_BIN").filter(|v| !v.is_empty()) {
        return bin.into();
    }
    match redis_server_bin().parent() {
        Some(dir) if !dir.as_os_str().is_empty() && dir.join("redis-cli").exists() => {
            dir.join("redis-cli")
        }
        _ => "redis-cli".into(),
    }
}
