//! Edge nodes as child processes of dev mode (`edgepush-dev serve`, the same wiring as `edge-node serve`), so a
//! node can be killed from a terminal (`kill -9 <pid>`) while the demo
//! console shows its clients moving to the other node without losing
//! anything.
//!
//! Each node is supervised: when its process ends (killed, crashed, or
//! drained by a SIGTERM) it is started again after a second, on the same
//! ports and with the same node id, so the demo can be repeated. Stopping
//! sends SIGTERM to every node (they drain: clients get 1012) and waits.
//! The nodes share dev mode's Redis and MongoDB, which is why this needs
//! real stores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::ConsoleNode;

/// How long to wait for a node to answer `/readyz` before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a draining node may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to run the nodes.
#[derive(Debug, Clone)]
pub struct NodeProcessConfig {
    /// The binary whose `serve` subcommand runs one edge node (dev mode's own).
    pub binary: PathBuf,
    /// `EDGEPUSH_REDIS_URL` of every node.
    pub redis_url: String,
    /// `EDGEPUSH_MONGODB_URI` of every node.
    pub mongodb_uri: String,
    /// `EDGEPUSH_MONGODB_DATABASE` (dev mode's, so collect and the nodes share it).
    pub mongodb_database: String,
    /// The push credential dispatch signs with.
    pub push_access_key_id: String,
    /// Its secret.
    pub push_secret: String,
    /// The HS256 secret of client tokens.
    pub jwt_secret: String,
    /// `(ws port, push port)` of each node; 0 picks a free port.
    pub ports: Vec<(u16, u16)>,
    /// Pause before a node that ended is started again.
    pub restart_after: Duration,
    /// More variables of every node (e.g. `EDGEPUSH_TOPIC_NAMESPACES`).
    pub env: Vec<(String, String)>,
}

/// Why the nodes could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No free port could be found.
    #[error("finding a free port: {0}")]
    Port(#[source] std::io::Error),
    /// The binary could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A node did not become ready.
    #[error("node {name} did not become ready: {detail}")]
    NotReady {
        /// The node id.
        name: String,
        /// What happened.
        detail: String,
    },
}

/// One supervised node.
#[derive(Debug)]
struct Supervised {
    name: String,
    ws_addr: SocketAddr,
    push_addr: SocketAddr,
    pid: Arc<AtomicU32>,
}

/// The running nodes.
#[derive(Debug)]
pub struct NodeProcesses {
    nodes: Vec<Supervised>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeProcesses {
    /// Starts every node, waits until each answers `/readyz`, and keeps
    /// them running until `stop` is cancelled.
    pub async fn start(
        config: NodeProcessConfig,
        stop: CancellationToken,
    ) -> Result<Self, ProcessError> {
        let mut nodes = Vec::new();
        let mut tasks = Vec::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        for (i, (ws_port, push_port)) in free_ports(&config.ports)?.into_iter().enumerate() {
            let name = format!("dev-{}", i + 1);
            let ws_addr = SocketAddr::from(([127, 0, 0, 1], ws_port));
            let push_addr = SocketAddr::from(([127, 0, 0, 1], push_port));
            let command = NodeCommand {
                config: config.clone(),
                name: name.clone(),
                ws_addr,
                push_addr,
            };
            let mut child = command.spawn()?;
            let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
            wait_ready(&http, &name, push_addr, &mut child).await?;
            tracing::info!(node = %name, pid = pid.load(Ordering::Relaxed), %ws_addr, "node process ready");
            tasks.push(tokio::spawn(supervise(
                command,
                child,
                Arc::clone(&pid),
                stop.clone(),
            )));
            nodes.push(Supervised {
                name,
                ws_addr,
                push_addr,
                pid,
            });
        }
        Ok(Self { nodes, tasks })
    }

    /// The nodes' WebSocket addresses.
    pub fn ws_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.ws_addr).collect()
    }

    /// The nodes' push API addresses.
    pub fn push_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.push_addr).collect()
    }

    /// The current process id of each node (0 while one is down).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .map(|n| n.pid.load(Ordering::Relaxed))
            .collect()
    }

    /// The nodes as the console lists them.
    pub fn console_nodes(&self) -> Vec<ConsoleNode> {
        self.nodes
            .iter()
            .map(|n| ConsoleNode {
                name: n.name.clone(),
                ws_url: format!("ws://{}/ws", n.ws_addr),
                push_url: format!("http://{}", n.push_addr),
                pid: Some(Arc::clone(&n.pid)),
            })
            .collect()
    }

    /// The supervisor tasks: they end once `stop` is cancelled and every
    /// node has drained.
    pub fn into_tasks(self) -> Vec<JoinHandle<()>> {
        self.tasks
    }
}

/// How to start one node.
#[derive(Debug, Clone)]
struct NodeCommand {
    config: NodeProcessConfig,
    name: String,
    ws_addr: SocketAddr,
    push_addr: SocketAddr,
}

impl NodeCommand {
    fn spawn(&self) -> Result<Child, ProcessError> {
        let c = &self.config;
        Command::new(&c.binary)
            .arg("serve")
            .env("EDGEPUSH_NODE_ID", &self.name)
            .env("EDGEPUSH_WS_ADDR", self.ws_addr.to_string())
            .env("EDGEPUSH_PUSH_ADDR", self.push_addr.to_string())
            .env("EDGEPUSH_REDIS_URL", &c.redis_url)
            .env("EDGEPUSH_MONGODB_URI", &c.mongodb_uri)
            .env("EDGEPUSH_MONGODB_DATABASE", &c.mongodb_database)
            .env("EDGEPUSH_PUSH_ACCESS_KEY_ID", &c.push_access_key_id)
            .env("EDGEPUSH_PUSH_SECRET_ACCESS_KEY", &c.push_secret)
            .env("EDGEPUSH_JWT_SECRET", &c.jwt_secret)
            .env("EDGEPUSH_AUTH_MODE", "local")
            .env("EDGEPUSH_JWT_ALG", "HS256")
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // A dev process that dies must not leave its nodes behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                binary: c.binary.display().to_string(),
                source,
            })
    }
}

/// Keeps one node running until `stop`, then drains it.
async fn supervise(
    command: NodeCommand,
    mut child: Child,
    pid: Arc<AtomicU32>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                pid.store(0, Ordering::Relaxed);
                tracing::warn!(node = %command.name, status = %describe(status), "node process ended; starting it again");
                tokio::select! {
                    _ = sleep(command.config.restart_after) => {}
                    _ = stop.cancelled() => return,
                }
                match command.spawn() {
                    Ok(next) => {
                        pid.store(next.id().unwrap_or(0), Ordering::Relaxed);
                        tracing::info!(node = %command.name, pid = pid.load(Ordering::Relaxed), "node process started again");
                        child = next;
                    }
                    Err(error) => {
                        tracing::error!(node = %command.name, %error, "could not start the node again");
                        return;
                    }
                }
            }
            _ = stop.cancelled() => {
                drain(&command.name, &mut child).await;
                pid.store(0, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// SIGTERM (the node drains: its clients get 1012), then SIGKILL if it
/// takes too long.
async fn drain(name: &str, child: &mut Child) {
    if let Some(id) = child.id() {
        let sent = Command::new("kill")
            .args(["-TERM", &id.to_string()])
            .status()
            .await;
        if let Err(error) = sent {
            tracing::warn!(node = %name, %error, "could not send SIGTERM; killing");
            let _ = child.start_kill();
        }
    }
    match timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => {
            tracing::info!(node = %name, status = %describe(status), "node process stopped")
        }
        Err(_) => {
            tracing::warn!(node = %name, "node did not drain in time; killing");
            let _ = child.kill().await;
        }
    }
}

/// Polls `/readyz` until it answers 200; fails when the process ends first.
async fn wait_ready(
    http: &reqwest::Client,
    name: &str,
    push_addr: SocketAddr,
    child: &mut Child,
) -> Result<(), ProcessError> {
    let url = format!("http://{push_addr}/readyz");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ProcessError::NotReady {
                name: name.to_owned(),
                detail: format!("the process ended ({status}); see its log above"),
            });
        }
        if Instant::now() >= deadline {
            return Err(ProcessError::NotReady {
                name: name.to_owned(),
                detail: format!("{url} did not answer 200 within {READY_TIMEOUT:?}"),
            });
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The ports, with a distinct free one in place of each 0.
///
/// The listeners probing free ports are held until every port is chosen,
/// so no two are the same. A node binds its ports a moment later; another
/// process taking one in between makes that node fail to start, with its
/// error in the log.
fn free_ports(ports: &[(u16, u16)]) -> Result<Vec<(u16, u16)>, ProcessError> {
    let mut held = Vec::new();
    let mut pick = |port: u16| -> Result<u16, ProcessError> {
        if port != 0 {
            return Ok(port);
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(ProcessError::Port)?;
        let port = listener.local_addr().map_err(ProcessError::Port)?.port();
        held.push(listener);
        Ok(port)
    };
    ports
        .iter()
        .map(|(ws, push)| Ok((pick(*ws)?, pick(*push)?)))
        .collect()
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    }
}
