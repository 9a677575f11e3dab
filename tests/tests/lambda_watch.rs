//! The functions built and run by cargo lambda, the way their users run them:
//! `cargo lambda watch` compiles a function and serves it under a local
//! Lambda Runtime API; the test invokes it through the Invoke API
//! (`POST /2015-03-31/functions/<name>/invocations`) and through its function
//! URL (`/lambda-url/<name>/...`) with real event payloads.
//!
//! Needs `cargo-lambda`: `EDGEPUSH_CARGO_LAMBDA` (path of the binary), or
//! `cargo-lambda` on PATH (`scripts/install-python-tools` prints the venv's
//! bin dir; `scripts/test` puts it on PATH). The collect test also needs
//! `EDGEPUSH_TEST_MONGODB_URI` and `EDGEPUSH_TEST_REDIS_URL`.
//!
//! Watch compiles a function on start, which takes minutes on a cold target
//! directory and much longer on a loaded machine: every wait below follows
//! the watcher's progress (its log growing while cargo compiles) and gives
//! up only when nothing has moved for [`COMPILE_STALL`], and nothing asserts
//! a duration. Tokens are minted only once the function answers, so a slow
//! compile cannot expire them.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use edgepush_auth::{Claims, mint_hs256};
use edgepush_testkit::{free_port, mongodb_uri, redis_url, unique, unique_db};
use edgepush_tests::docker::repo_root;
use serde_json::{Value, json};

/// How long the watcher may go without writing to its log (no compile
/// output) and without answering before a test gives up. One crate of the
/// AWS SDK can take minutes to compile on a loaded 2-core machine without a
/// line of output, so this is long; a function that does compile answers
/// long before.
const COMPILE_STALL: Duration = Duration::from_secs(15 * 60);

/// How long one request may wait before the watcher's progress is looked at
/// again (the watcher holds a request until the function is compiled).
const ATTEMPT: Duration = Duration::from_secs(30);

/// The cargo-lambda binary: `EDGEPUSH_CARGO_LAMBDA`, else `cargo-lambda` on PATH.
fn cargo_lambda() -> Result<PathBuf> {
    edgepush_testkit::program(
        "EDGEPUSH_CARGO_LAMBDA",
        "cargo-lambda",
        "put the output of scripts/install-python-tools on PATH",
    )
}

/// A running `cargo lambda watch`, in its own process group so that the
/// watcher, cargo and the function process all stop together on drop.
struct Watcher {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Watcher {
    /// Starts `cargo lambda watch -p <package>` on a free loopback port, with
    /// `env` for the function, and waits until its Runtime API accepts
    /// connections.
    fn start(package: &str, env: &[(&str, String)]) -> Result<Self> {
        let binary = cargo_lambda()?;
        let log = std::env::temp_dir().join(format!("{}.log", unique(&format!("watch-{package}"))));
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
            let err = out.try_clone()?;
            let mut command = Command::new(&binary);
            command
                .args(["lambda", "watch", "-A", "127.0.0.1", "-P"])
                .arg(port.to_string())
                .args(["-p", package])
                // Other work in the tree must not restart the function mid-test.
                .arg("--ignore-changes")
                .current_dir(repo_root())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            for (key, value) in env {
                command.env(key, value);
            }
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let child = command
                .spawn()
                .with_context(|| format!("spawn {}", binary.display()))?;
            let mut watcher = Watcher {
                child,
                port,
                log: log.clone(),
            };
            match watcher.wait_listening() {
                Ok(()) => return Ok(watcher),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cargo lambda watch did not start")))
    }

    fn wait_listening(&mut self) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut progress = Progress::new(&self.log);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "cargo lambda watch exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            if progress.stalled() {
                bail!(
                    "cargo lambda watch did not listen on {addr} and wrote nothing for {COMPILE_STALL:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a request until the function answers: the first one waits for
    /// the compilation, for as long as the watcher's log keeps growing (see
    /// [`COMPILE_STALL`]). Transport errors and timed-out attempts are
    /// retried while there is progress, 5xx answers (a function failing its
    /// cold start) 30 times.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let mut progress = Progress::new(&self.log);
        let mut server_errors = 0;
        loop {
            let pending = request
                .try_clone()
                .context("request is cloneable")?
                .timeout(ATTEMPT)
                .send();
            // A function that does not compile never answers: stop at the
            // compiler's error instead of waiting for the stall.
            let attempt = tokio::select! {
                attempt = pending => attempt,
                () = build_failed(&self.log) => {
                    bail!("the function does not compile:\n{}", self.log_text())
                }
            };
            match attempt {
                Ok(response) if !response.status().is_server_error() => {
                    let status = response.status().as_u16();
                    let text = response.text().await?;
                    let body = serde_json::from_str(&text)
                        .with_context(|| format!("status {status}, body is not JSON: {text}"))?;
                    return Ok((status, body));
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    server_errors += 1;
                    if server_errors >= 30 {
                        bail!("still {status}: {text}\nwatch log:\n{}", self.log_text());
                    }
                }
                Err(e) if progress.stalled() => {
                    bail!(
                        "no answer and no compile progress for {COMPILE_STALL:?}: {e}\nwatch log:\n{}",
                        self.log_text()
                    )
                }
                Err(_) => {}
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("cargo lambda watch exited ({status}):\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The watcher's progress: its log growing (cargo's `Compiling ...` lines,
/// the function's own output).
struct Progress<'a> {
    log: &'a Path,
    len: u64,
    moved: Instant,
}

impl<'a> Progress<'a> {
    fn new(log: &'a Path) -> Self {
        Self {
            log,
            len: Self::len_of(log),
            moved: Instant::now(),
        }
    }

    fn len_of(log: &Path) -> u64 {
        std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
    }

    /// True once the log has not grown for [`COMPILE_STALL`].
    fn stalled(&mut self) -> bool {
        let len = Self::len_of(self.log);
        if len != self.len {
            self.len = len;
            self.moved = Instant::now();
        }
        self.moved.elapsed() > COMPILE_STALL
    }
}

/// Resolves once the watcher's log shows a compilation error.
async fn build_failed(log: &Path) {
    loop {
        let text = tokio::fs::read_to_string(log).await.unwrap_or_default();
        if text.contains("error: could not compile") {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The whole group: cargo-lambda, the cargo it runs and the function.
        let group = format!("-{}", self.child.id());
        let kill = |signal: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        kill("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        kill("-KILL");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_under_cargo_lambda_watch_answers_the_invoke_api() -> Result<()> {
    let secret = unique("watch-secret-0123456789");
    let mut watcher = Watcher::start(
        "edgepush-auth-fn",
        &[
            ("EDGEPUSH_JWT_ALG", "HS256".to_owned()),
            ("EDGEPUSH_JWT_SECRET", secret.clone()),
            ("RUST_LOG", "info".to_owned()),
        ],
    )?;
    let http = reqwest::Client::new();
    let invoke = watcher.url("/2015-03-31/functions/auth/invocations");

    // The first request waits for the compilation; tokens are minted after
    // it, so however long that takes they are fresh when verified.
    let (status, body) = watcher
        .send(http.post(&invoke).json(&json!({ "token": "not-a-jwt" })))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(false), "{body}");

    let user = unique("watch-user");
    let token = mint_hs256(
        secret.as_bytes(),
        &Claims::new(user.clone(), Duration::from_secs(600)),
    );
    let (status, body) = watcher
        .send(http.post(&invoke).json(&json!({ "token": token })))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(true), "{body}");
    assert_eq!(body["user_id"], json!(user), "{body}");

    // Signed with another secret: refused, as an answer (not a function error).
    let forged = mint_hs256(
        b"another-secret-0123456789",
        &Claims::new(user, Duration::from_secs(600)),
    );
    let (status, body) = watcher
        .send(http.post(&invoke).json(&json!({ "token": forged })))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(false), "{body}");
    assert_eq!(body["error"]["code"], json!("invalid"), "{body}");

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_under_cargo_lambda_watch_answers_its_function_url() -> Result<()> {
    let mongodb_uri = mongodb_uri()?;
    let redis_url = redis_url()?;
    let api_key = unique("watch-key");
    let mut watcher = Watcher::start(
        "edgepush-collect",
        &[
            ("EDGEPUSH_API_KEYS", format!("watch-test:{api_key}")),
            ("EDGEPUSH_MONGODB_URI", mongodb_uri),
            ("EDGEPUSH_MONGODB_DATABASE", unique_db()),
            ("EDGEPUSH_REDIS_URL", redis_url),
            ("EDGEPUSH_PUSH_ACCESS_KEY_ID", "watch-push".to_owned()),
            (
                "EDGEPUSH_PUSH_SECRET_ACCESS_KEY",
                unique("watch-push-secret"),
            ),
            ("RUST_LOG", "info".to_owned()),
        ],
    )?;
    let http = reqwest::Client::new();
    let url = watcher.url("/lambda-url/collect/v1/messages");
    let user = unique("watch-recipient");
    let message = json!({ "to": [user], "data": { "hello": "from cargo lambda watch" } });

    let (status, body) = watcher.send(http.post(&url).json(&message)).await?;
    assert_eq!(status, 401, "no API key must be refused: {body}");

    let (status, body) = watcher
        .send(http.post(&url).bearer_auth(&api_key).json(&message))
        .await?;
    assert_eq!(status, 202, "{body}");
    let accepted = &body["messages"][0];
    assert_eq!(accepted["user_id"], json!(user), "{body}");
    assert_eq!(
        accepted["seq"],
        json!(1),
        "a fresh user's first message: {body}"
    );

    let (status, body) = watcher
        .send(http.post(&url).bearer_auth("wrong-key").json(&message))
        .await?;
    assert_eq!(status, 401, "a wrong key must be refused: {body}");
    Ok(())
}
