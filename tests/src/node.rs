//! One `edge-node serve` process, configured the way an operator would: by
//! environment variables.
//!
//! [`NodeProcess::start`] picks free loopback ports, a unique node id and
//! short heartbeat/liveness timers, starts the binary and waits (bounded)
//! until `/readyz` answers 200, showing the node's log when it does not.
//! The process is SIGKILLed when the handle is dropped.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::time::Instant;

use crate::env::TestEnv;
use crate::tokens::{JWT_SECRET, PUSH_ACCESS_KEY_ID, PUSH_REGION, PUSH_SECRET};
use edgepush_testkit::free_port;
use edgepush_testkit::servers::{TempDir, tail};

/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`NodeProcess::terminate`] waits for a drain to finish.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `edge-node` binary: `EDGEPUSH_EDGE_NODE_BIN` when set, else built
/// once per test process with `cargo build -p edge-node --bin edge-node`
/// (quick when it is up to date) and taken from the target directory
/// (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn edge_node_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn locate_or_build() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("EDGEPUSH_EDGE_NODE_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("EDGEPUSH_EDGE_NODE_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "-p", "edge-node", "--bin", "edge-node"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .context("running cargo build -p edge-node")?;
    if !output.status.success() {
        bail!(
            "cargo build -p edge-node --bin edge-node failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => root.join(PathBuf::from(dir)),
        None => root.join("target"),
    };
    let bin = target.join("debug").join("edge-node");
    if !bin.is_file() {
        bail!("built edge-node, but {} is not there", bin.display());
    }
    Ok(bin)
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `EDGEPUSH_REDIS_URL`.
    pub redis_url: String,
    /// `EDGEPUSH_MONGODB_URI`.
    pub mongodb_uri: String,
    /// `EDGEPUSH_MONGODB_DATABASE`: the test's own database.
    pub database: String,
    /// `EDGEPUSH_NODE_ID`: unique per node.
    pub node_id: String,
    /// `EDGEPUSH_HEARTBEAT_MS`: short, so liveness tests are quick.
    pub heartbeat_ms: u64,
    /// `EDGEPUSH_NODE_TTL_MS`: a killed node is dead this long after its
    /// last heartbeat. Several heartbeats long, so a busy machine does not
    /// make a live node look dead.
    pub node_ttl_ms: u64,
    /// More variables (they override the ones above).
    pub env: Vec<(String, String)>,
    /// The address the node listens on (clients and push API alike):
    /// loopback by default; a test host's address for a node in a network
    /// namespace.
    pub host: IpAddr,
    /// A command the node runs under, e.g. `ip netns exec <ns>` (it must
    /// exec the node, so that the node keeps its process id).
    pub wrap: Vec<String>,
}

impl NodeOptions {
    /// A node of `env`'s system with a fresh id and short timers.
    pub fn new(env: &TestEnv) -> Self {
        Self {
            redis_url: env.redis_url.clone(),
            mongodb_uri: env.mongodb_uri.clone(),
            database: env.database.clone(),
            node_id: crate::unique("node"),
            heartbeat_ms: 500,
            node_ttl_ms: 3000,
            env: vec![(
                edgepush_core::Namespaces::ENV.to_owned(),
                env.namespaces.to_json(),
            )],
            host: IpAddr::from([127, 0, 0, 1]),
            wrap: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running `edge-node serve` process.
pub struct NodeProcess {
    child: Option<Child>,
    node_id: String,
    ws_addr: SocketAddr,
    push_addr: SocketAddr,
    log: PathBuf,
    /// What it was started with, for [`restart`](Self::restart).
    bin: PathBuf,
    options: NodeOptions,
    http: reqwest::Client,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

impl NodeProcess {
    /// Starts a node of `env`'s system with default options.
    pub async fn start_in(env: &TestEnv) -> anyhow::Result<Self> {
        Self::start(NodeOptions::new(env)).await
    }

    /// Starts a node and waits until `/readyz` answers 200. Retries with
    /// other ports if the chosen ones were taken in the meantime.
    pub async fn start(options: NodeOptions) -> anyhow::Result<Self> {
        let bin = tokio::task::spawn_blocking(edge_node_bin)
            .await
            .context("locating edge-node")??;
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(&bin, &options).await {
                Ok(node) => return Ok(node),
                Err(StartError::PortTaken(e)) => last_error = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("could not start a node")))
    }

    async fn try_start(bin: &Path, options: &NodeOptions) -> Result<Self, StartError> {
        let dir = TempDir::new("node")?;
        let ws_addr = SocketAddr::new(options.host, free_port()?);
        let push_addr = SocketAddr::new(options.host, free_port()?);
        let log = dir.path().join("node.log");
        let child = spawn(bin, options, ws_addr, push_addr, &log)?;
        let mut node = Self {
            child: Some(child),
            node_id: options.node_id.clone(),
            ws_addr,
            push_addr,
            log,
            bin: bin.to_path_buf(),
            options: options.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("http client")?,
            _dir: dir,
        };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/readyz", self.push_url());
        loop {
            if let Ok(resp) = self.http.get(&url).send().await
                && resp.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.log_tail();
                let err = anyhow!(
                    "edge-node {} exited with {status} before it was ready; its log:\n{log}",
                    self.node_id
                );
                return Err(if log.contains("bind") && log.contains("in use") {
                    StartError::PortTaken(err)
                } else {
                    StartError::Other(err)
                });
            }
            if Instant::now() >= deadline {
                self.kill_9();
                return Err(StartError::Other(anyhow!(
                    "edge-node {} was not ready (GET {url} != 200) within {READY_TIMEOUT:?}; its log:\n{}",
                    self.node_id,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's id (in routes and in its liveness key).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.ws_addr)
    }

    /// The client listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The push listener's address.
    pub fn push_addr(&self) -> SocketAddr {
        self.push_addr
    }

    /// `http://127.0.0.1:<port>`: push API, health, metrics.
    pub fn push_url(&self) -> String {
        format!("http://{}", self.push_addr)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last 8 KiB of the node's log (stdout and stderr).
    pub fn log_tail(&self) -> String {
        tail(&self.log, 8 * 1024)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        tail(&self.log, usize::MAX)
    }

    /// Starts the node again (killing it first if it runs), with the same id,
    /// ports and options, as a supervisor restarts a crashed task; waits
    /// until it is ready. Its connection ids start afresh (a new boot id).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill_9();
        // The ports were just released; a few tries if the kernel is slow
        // to let them go.
        let mut last = None;
        for _ in 0..20 {
            self.child = Some(spawn(
                &self.bin,
                &self.options,
                self.ws_addr,
                self.push_addr,
                &self.log,
            )?);
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(StartError::PortTaken(e)) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("could not restart {}", self.node_id)))
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the node with SIGSTOP (a stall: a long GC pause, a starved VM),
    /// until [`resume`](Self::resume).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Continues a paused node (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the node is not running")?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .with_context(|| format!("running kill {signal}"))?;
        if !status.success() {
            bail!("kill {signal} {pid} failed: {status}");
        }
        Ok(())
    }

    /// Kills the node with SIGKILL, as a crash would: no drain, no cleanup.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful drain) and waits, bounded, for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("edge-node {} is not running", self.node_id);
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kill -TERM {} failed: {status}", child.id());
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for edge-node")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "edge-node {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.node_id,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` on the push listener: (status, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.push_url()))
            .send()
            .await
            .with_context(|| format!("GET {path} on {}", self.node_id))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            bail!("GET /metrics on {} answered {status}: {body}", self.node_id);
        }
        Ok(body)
    }

    /// The value of metric `name` (its first sample), if exposed.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let text = self.metrics().await?;
        Ok(parse_metric(&text, name))
    }
}

/// The first sample of `name` in Prometheus text.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = match rest.chars().next()? {
                '{' => &rest[rest.find('}')? + 1..],
                ' ' => rest,
                _ => return None,
            };
            rest.split_whitespace().next()?.parse().ok()
        })
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill_9();
        // For a look after the fact: EDGEPUSH_TEST_KEEP_LOGS=<dir> keeps
        // every node's log there, named by node id.
        if let Some(dir) = std::env::var_os("EDGEPUSH_TEST_KEEP_LOGS").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.log, dir.join(format!("{}.log", self.node_id)));
        }
    }
}

/// Spawns `bin serve` as `options` say, on `ws_addr` and `push_addr`,
/// appending its output to `log`.
fn spawn(
    bin: &Path,
    options: &NodeOptions,
    ws_addr: SocketAddr,
    push_addr: SocketAddr,
    log: &Path,
) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .context("opening the node's log")?;
    let rust_log = std::env::var("EDGEPUSH_TEST_NODE_LOG").unwrap_or_else(|_| "info".into());
    let mut command = match options.wrap.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin);
            command
        }
        None => Command::new(bin),
    };
    command
        .arg("serve")
        .env("RUST_LOG", rust_log)
        .env("EDGEPUSH_NODE_ID", &options.node_id)
        .env("EDGEPUSH_WS_ADDR", ws_addr.to_string())
        .env("EDGEPUSH_PUSH_ADDR", push_addr.to_string())
        .env("EDGEPUSH_REDIS_URL", &options.redis_url)
        .env("EDGEPUSH_MONGODB_URI", &options.mongodb_uri)
        .env("EDGEPUSH_MONGODB_DATABASE", &options.database)
        .env("EDGEPUSH_AUTH_MODE", "local")
        .env("EDGEPUSH_JWT_SECRET", JWT_SECRET)
        .env("EDGEPUSH_PUSH_ACCESS_KEY_ID", PUSH_ACCESS_KEY_ID)
        .env("EDGEPUSH_PUSH_SECRET_ACCESS_KEY", PUSH_SECRET)
        .env("EDGEPUSH_PUSH_REGION", PUSH_REGION)
        .env("EDGEPUSH_HEARTBEAT_MS", options.heartbeat_ms.to_string())
        .env("EDGEPUSH_NODE_TTL_MS", options.node_ttl_ms.to_string())
        .env("EDGEPUSH_DRAIN_TIMEOUT_MS", "5000")
        .env_remove("EDGEPUSH_PUSH_URL")
        .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("log file")?)
        .stderr(log_file);
    command
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_metric;

    #[test]
    fn parses_labelled_and_plain_samples() {
        let text = "# HELP a x\n# TYPE a counter\na_total{node=\"n\"} 3\nb 4.5\n";
        assert_eq!(parse_metric(text, "a_total"), Some(3.0));
        assert_eq!(parse_metric(text, "b"), Some(4.5));
        assert_eq!(parse_metric(text, "a"), None);
    }
}
