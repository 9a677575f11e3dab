//! Network faults for the tests: a test host in a network namespace that can
//! be cut off from part of the network, TCP relays into it, and a proxy that
//! fails requests on demand.
//!
//! - [`TestHost`]: a network namespace joined to this one by a veth pair
//!   (`10.231.<n>.1` here, `10.231.<n>.2` there). A node runs inside it
//!   with [`TestHost::wrap`]; [`TestHost::block_port`] drops every packet
//!   to one of its ports (iptables inside the namespace), so its push API
//!   can be unreachable while its clients stay connected. Needs root, `ip`
//!   (iproute2) and `iptables`; `scripts/test` installs both.
//! - [`TcpRelay`]: forwards connections from one address to another, so a
//!   node in a namespace reaches the Redis and MongoDB that listen on this
//!   namespace's loopback.
//! - [`FlakyProxy`]: a TCP proxy in front of a push API that, while told to
//!   fail, answers every request `500` and cuts the connections it was
//!   relaying.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A test host: a network namespace of this test's own; removed on drop.
pub struct TestHost {
    name: String,
    /// Its address, as this namespace reaches it.
    pub addr: Ipv4Addr,
    /// This namespace's address, as it reaches us.
    pub gateway: Ipv4Addr,
}

impl TestHost {
    /// Creates the namespace, the veth pair and their addresses. Fails with
    /// what is missing when the machine cannot (not root, no `ip`).
    pub fn create() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // A subnet per host of this process; the pid keeps parallel test
        // processes apart.
        let n = (std::process::id() % 200) as u8;
        let k = NEXT.fetch_add(1, Ordering::Relaxed) as u8;
        let name = format!("ept-{}-{k}", std::process::id());
        let (outer, inner) = (format!("epo{n}x{k}"), format!("epi{n}x{k}"));
        let gateway = Ipv4Addr::new(10, 231, n, 4 * k + 1);
        let addr = Ipv4Addr::new(10, 231, n, 4 * k + 2);
        run("ip", &["netns", "add", &name]).context(
            "creating a network namespace (the test needs root and iproute2; scripts/test \
             installs it)",
        )?;
        let host = Self {
            name: name.clone(),
            addr,
            gateway,
        };
        let cidr = |ip: Ipv4Addr| format!("{ip}/30");
        run(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
        )?;
        run("ip", &["link", "set", &inner, "netns", &name])?;
        run("ip", &["addr", "add", &cidr(gateway), "dev", &outer])?;
        run("ip", &["link", "set", &outer, "up"])?;
        host.exec("ip", &["addr", "add", &cidr(addr), "dev", &inner])?;
        host.exec("ip", &["link", "set", &inner, "up"])?;
        host.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn wrap(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Its address as an [`IpAddr`].
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }

    /// Drops every TCP packet to `port` on the host (a cut as a broken
    /// switch makes it: no reset, no answer).
    pub fn block_port(&self, port: u16) -> anyhow::Result<()> {
        let port = port.to_string();
        self.exec("iptables", &rule("-A", &port))
            .context("adding an iptables rule (the test needs iptables; scripts/test installs it)")
    }

    /// Undoes [`block_port`](Self::block_port).
    pub fn unblock_port(&self, port: u16) -> anyhow::Result<()> {
        let port = port.to_string();
        self.exec("iptables", &rule("-D", &port))
    }
}

/// The iptables arguments that add (`-A`) or delete (`-D`) the drop rule.
fn rule<'a>(action: &'a str, port: &'a str) -> [&'a str; 8] {
    [action, "INPUT", "-p", "tcp", "--dport", port, "-j", "DROP"]
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Forwards every connection to `listen` on to `target`; stops on drop.
pub struct TcpRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Starts a relay on `ip` (a free port) to `target`.
    pub async fn start(ip: IpAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .with_context(|| format!("binding a relay on {ip}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy in front of a push API that can be told to fail.
pub struct FlakyProxy {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// Where it relays to, once known (the node starts after the proxy, as
    /// it must be told the proxy's URL).
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    failing: Arc<AtomicBool>,
    /// Bumped on every change of mode: relayed connections end with it.
    epoch: watch::Sender<u64>,
    /// Requests answered 500.
    refused: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FlakyProxy {
    /// Starts a proxy that relays (once given a [`target`](Self::set_target))
    /// until told to fail.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let (epoch, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let (failing, refused, epoch) = (failing.clone(), refused.clone(), epoch.clone());
            let target = target.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let (failing, refused) = (failing.clone(), refused.clone());
                    let to = *target.lock().unwrap_or_else(|e| e.into_inner());
                    let mut changed = epoch.subscribe();
                    tokio::spawn(async move {
                        if failing.load(Ordering::Acquire) {
                            answer_500(inbound, &refused).await;
                            return;
                        }
                        let Some(to) = to else {
                            return;
                        };
                        let Ok(outbound) = TcpStream::connect(to).await else {
                            return;
                        };
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            // A change of mode cuts relayed connections, so
                            // pooled keep-alive connections see it at once.
                            _ = changed.changed() => {}
                        }
                    });
                }
            }
        });
        Ok(Self {
            addr,
            target,
            failing,
            epoch,
            refused,
            task,
        })
    }

    /// Where to relay to.
    pub fn set_target(&self, to: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
    }

    /// `http://<addr>`: the push URL to advertise.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts or stops failing every request with `500`.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Release);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// How many requests were answered `500`.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (and whatever body came with it) and answers
/// `500`, closing the connection.
async fn answer_500(mut stream: TcpStream, refused: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    // Read until the end of the head, bounded; the body need not be read
    // (the connection closes).
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    refused.fetch_add(1, Ordering::AcqRel);
    let body = r#"{"error":{"code":"internal","message":"injected failure"}}"#;
    let answer = format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}
