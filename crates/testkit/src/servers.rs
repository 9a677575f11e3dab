//! Private servers, one per test that needs to break one: on a free
//! loopback port, with data in a temporary directory, killed with SIGKILL on
//! demand and restarted on the same port (so clients configured with the URL
//! reconnect), and killed when dropped.
//!
//! [`RedisServer`] runs `EDGEPUSH_REDIS_SERVER_BIN` (default `redis-server`);
//! [`MongoServer`] (feature `mongodb`) runs FerretDB or `mongod`. Both are
//! what `scripts/test` installs and names.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::env::free_port;
use crate::wait::{Progress, stall};

/// How often a starting server may exit before it answers (a port still
/// held by the previous instance's sockets clears within a few tries).
const EARLY_EXITS: u32 = 100;

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(crate::unique(&format!("edgepush-test-{tag}")));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    /// The absolute path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last `max` bytes of the file at `path`, as text (for failure messages).
pub fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// SIGKILLs `child` and reaps it.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A process started with a command line that can be started again, its
/// output appended to a log file.
pub(crate) struct Supervised {
    pub(crate) what: &'static str,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
}

impl Supervised {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.what, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Starts the process (again) and waits until `ready` says it answers,
    /// following its progress (its log growing, see [`crate::wait`]):
    /// gives up when it has written nothing for the stall period. Respawns
    /// it when it exits early (its port may still be held by the previous
    /// instance's sockets for a moment), up to [`EARLY_EXITS`] times.
    pub(crate) async fn start<F, Fut>(&mut self, ready: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let what = format!("{} to answer", self.what);
        let mut progress = Progress::new(stall());
        let mut exits = 0;
        self.spawn()?;
        loop {
            if ready().await {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                self.child = None;
                exits += 1;
                if exits > EARLY_EXITS {
                    bail!(
                        "{} exited with {status} while starting, {exits} times; its log:\n{}",
                        self.what,
                        tail(&self.log, 4000)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.spawn()?;
                continue;
            }
            let written = std::fs::metadata(&self.log).map_or(0, |m| m.len());
            if let Err(stuck) = progress.observe(&what, (exits, written)) {
                self.kill();
                bail!("{stuck:#}; its log:\n{}", tail(&self.log, 4000));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private `redis-server` (`EDGEPUSH_REDIS_SERVER_BIN`, default
/// `redis-server`), without persistence.
pub struct RedisServer {
    port: u16,
    process: Supervised,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        let program = redis_server_bin();
        let dir = TempDir::new("redis")?;
        let port = free_port()?;
        let args = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ];
        let mut server = Self {
            port,
            process: Supervised {
                what: "redis-server",
                program,
                args,
                log: dir.path().join("redis.log"),
                child: None,
            },
            _dir: dir,
        };
        server.wait_started().await?;
        Ok(server)
    }

    async fn wait_started(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        self.process.start(move || redis_pings(port)).await
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL (its data is gone: it keeps none on disk).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port (killing it first if it runs) and
    /// waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        self.wait_started().await
    }
}

/// `redis-server`: `EDGEPUSH_REDIS_SERVER_BIN`, else the one on `PATH`.
pub fn redis_server_bin() -> PathBuf {
    std::env::var_os("EDGEPUSH_REDIS_SERVER_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Whether a Redis answers `PING` on 127.0.0.1:`port` (within a second).
pub(crate) async fn redis_pings(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await?;
        Ok::<bool, std::io::Error>(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

/// A private MongoDB-wire server: FerretDB (`EDGEPUSH_FERRETDB_BIN`, on the
/// PostgreSQL of `EDGEPUSH_FERRETDB_POSTGRESQL_URL` when set, else SQLite)
/// or, when that is unset, `mongod` from `PATH`. Data lives in a
/// temporary directory and survives [`restart`](Self::restart).
#[cfg(feature = "mongodb")]
pub struct MongoServer {
    port: u16,
    process: Supervised,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

#[cfg(feature = "mongodb")]
impl MongoServer {
    /// Starts one on a free port and waits until it answers a `ping`.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("mongo")?;
        let port = free_port()?;
        let abs = dir.path().canonicalize()?;
        let (what, program, args): (&'static str, PathBuf, Vec<String>) =
            match std::env::var_os("EDGEPUSH_FERRETDB_BIN").filter(|v| !v.is_empty()) {
                Some(bin) => {
                    let state = abs.join("state");
                    std::fs::create_dir_all(&state)?;
                    // The PostgreSQL backend when scripts/test runs one
                    // (its data outlives a kill of this FerretDB, like a
                    // mongod's files), else SQLite in the temp directory.
                    let backend = match std::env::var("EDGEPUSH_FERRETDB_POSTGRESQL_URL") {
                        Ok(url) if !url.is_empty() => {
                            vec![
                                "--handler=postgresql".into(),
                                format!("--postgresql-url={url}"),
                            ]
                        }
                        _ => {
                            let sqlite = abs.join("sqlite");
                            std::fs::create_dir_all(&sqlite)?;
                            vec![
                                "--handler=sqlite".into(),
                                format!("--sqlite-url=file:{}/", sqlite.display()),
                            ]
                        }
                    };
                    (
                        "ferretdb",
                        PathBuf::from(bin),
                        backend
                            .into_iter()
                            .chain([
                                format!("--listen-addr=127.0.0.1:{port}"),
                                "--telemetry=disable".into(),
                                format!("--state-dir={}", state.display()),
                                "--debug-addr=-".into(),
                                "--log-level=warn".into(),
                            ])
                            .collect(),
                    )
                }
                None => match crate::env::on_path("mongod") {
                    Some(mongod) => {
                        let data = abs.join("db");
                        std::fs::create_dir_all(&data)?;
                        (
                            "mongod",
                            mongod,
                            vec![
                                "--port".into(),
                                port.to_string(),
                                "--bind_ip".into(),
                                "127.0.0.1".into(),
                                "--dbpath".into(),
                                data.display().to_string(),
                            ],
                        )
                    }
                    None => bail!(
                        "no MongoDB server to start privately: set EDGEPUSH_FERRETDB_BIN to a \
                         FerretDB binary (scripts/test installs one), or put mongod on PATH"
                    ),
                },
            };
        let mut server = Self {
            port,
            process: Supervised {
                what,
                program,
                args,
                log: abs.join("server.log"),
                child: None,
            },
            _dir: dir,
        };
        server.wait_started().await?;
        Ok(server)
    }

    async fn wait_started(&mut self) -> anyhow::Result<()> {
        let uri = self.uri();
        self.process.start(move || mongo_pings(uri.clone())).await
    }

    /// `mongodb://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port, on the same data (killing it first
    /// if it runs), and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        self.wait_started().await
    }
}

#[cfg(feature = "mongodb")]
async fn mongo_pings(uri: String) -> bool {
    if TcpStream::connect(uri.trim_start_matches("mongodb://"))
        .await
        .is_err()
    {
        return false;
    }
    let attempt = async {
        let mut options = mongodb::options::ClientOptions::parse(&uri).await?;
        options.server_selection_timeout = Some(Duration::from_secs(1));
        options.connect_timeout = Some(Duration::from_secs(1));
        let client = mongodb::Client::with_options(options)?;
        client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await?;
        Ok::<(), mongodb::error::Error>(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Ok(()))
    )
}
