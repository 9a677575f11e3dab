//! The load generator: a [`Swarm`] of WebSocket connections.
//!
//! A swarm opens connections to one or more WebSocket URLs (connection `i`
//! goes to URL `i % urls`), in waves at a configured rate with a bound on
//! handshakes in flight (the kernel's accept backlog is small), each from a
//! loopback source address picked in rotation (so more than the ~28,000
//! ephemeral ports of one address pair can be used), each with its own
//! HS256 token. It then counts the messages every connection receives and
//! records their publish-to-receive latency from the send time embedded in
//! the data (see [`frames`]).
//!
//! Memory per generator connection is kept small (a 1 KiB read buffer, no
//! write buffer, one small slot of counters), so one process can hold about
//! 19,000 connections within the 20,000 descriptors it may open.
//!
//! Protocols:
//! - [`Protocol::Edgepush`]: `GET /ws` with `Authorization: Bearer <jwt>`;
//!   ready on the `hello` frame (which names the connection id).
//! - [`Protocol::Centrifugo`]: Centrifugo v6's JSON protocol: a `connect`
//!   command with a token whose `channels` claim subscribes the connection
//!   on the server side; ready on the connect reply; `{}` pings answered
//!   with `{}` pongs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::frames::{self, CentrifugoEvent, EdgeFrame};
use crate::latency::{Latency, LatencySummary};

/// Which server protocol the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// edgepush's client protocol.
    Edgepush,
    /// Centrifugo v6's JSON protocol over WebSocket.
    Centrifugo,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edgepush" => Ok(Self::Edgepush),
            "centrifugo" => Ok(Self::Centrifugo),
            other => Err(format!(
                "unknown protocol {other:?}: edgepush or centrifugo"
            )),
        }
    }
}

/// Which user each connection authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// Connection `i` is user `<prefix><first_user + i>`.
    PerConnection {
        /// For example `u`.
        prefix: String,
    },
    /// Every connection is this one user (a fan-out to one user's devices).
    Single(String),
}

/// A rotation of IPv4 source addresses: connection `i` binds to
/// `first + i % count` (any 127.0.0.0/8 address binds on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// The first address.
    pub first: Ipv4Addr,
    /// How many consecutive addresses.
    pub count: u32,
}

impl Sources {
    /// The source address of connection `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let offset = (i as u64 % u64::from(self.count.max(1))) as u32;
        Ipv4Addr::from(u32::from(self.first).wrapping_add(offset))
    }
}

impl FromStr for Sources {
    type Err = String;
    /// `127.1.0.1+64`: 64 addresses from 127.1.0.1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, count) = s.split_once('+').unwrap_or((s, "1"));
        Ok(Self {
            first: ip
                .parse()
                .map_err(|e| format!("source address {ip:?}: {e}"))?,
            count: count
                .parse()
                .map_err(|e| format!("source address count {count:?}: {e}"))?,
        })
    }
}

/// What a swarm does.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// WebSocket URLs (`ws://127.0.0.1:9001/ws`); connection `i` uses
    /// `urls[i % len]`.
    pub urls: Vec<String>,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The HS256 secret tokens are signed with.
    pub secret: Vec<u8>,
    /// Who each connection is.
    pub users: Users,
    /// The number of the first connection's user (`u<first_user>`), so
    /// several generator processes can name disjoint users.
    pub first_user: usize,
    /// Centrifugo: the channel every connection subscribes to; `None` gives
    /// each connection a channel named after its user.
    pub channel: Option<String>,
    /// edgepush: a topic every connection's token subscribes it to (the
    /// `topics` claim); `None`: the user's own stream (and broadcast) only.
    pub topic: Option<String>,
    /// Source addresses to bind before connecting; `None` lets the kernel
    /// pick (one address: at most ~28,000 connections per destination).
    pub sources: Option<Sources>,
    /// New connections per second; 0 means as fast as handshakes complete.
    pub rate: u32,
    /// Handshakes in flight at most.
    pub max_pending: usize,
    /// WebSocket read buffer per connection, in bytes.
    pub read_buffer: usize,
    /// Time allowed for TCP connect, upgrade and the first frame.
    pub handshake_timeout: Duration,
    /// Extra attempts for a connection that failed to open.
    pub retries: u32,
    /// Lifetime of the minted tokens.
    pub token_ttl: Duration,
    /// Print a progress line on stderr while connecting.
    pub progress: bool,
}

impl SwarmConfig {
    /// A configuration with defaults: one user per connection (`u<k>`),
    /// 2,000 connections/s, 256 handshakes in flight, 1 KiB buffers.
    pub fn new(urls: Vec<String>, protocol: Protocol, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            urls,
            protocol,
            secret: secret.into(),
            users: Users::PerConnection { prefix: "u".into() },
            first_user: 0,
            channel: None,
            topic: None,
            sources: None,
            rate: 2_000,
            max_pending: 256,
            read_buffer: 1024,
            handshake_timeout: Duration::from_secs(20),
            retries: 2,
            token_ttl: Duration::from_secs(6 * 3600),
            progress: false,
        }
    }

    /// The user of connection `i`.
    pub fn user_of(&self, i: usize) -> String {
        match &self.users {
            Users::PerConnection { prefix } => format!("{prefix}{}", self.first_user + i),
            Users::Single(user) => user.clone(),
        }
    }
}

/// The swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// No URL was given.
    #[error("no WebSocket URL given")]
    NoUrl,
    /// A URL is not a `ws://host:port/...` URL that resolves.
    #[error("bad WebSocket URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// What one connection keeps where the swarm can read it.
#[derive(Debug, Default)]
pub struct Slot {
    /// Messages received.
    received: AtomicU32,
    /// The server's id of the connection (edgepush's `hello`), once ready.
    conn_id: OnceLock<Box<str>>,
}

/// State shared by the swarm and its connection tasks.
struct Shared {
    config: SwarmConfig,
    /// Resolved destination and request URI per URL.
    targets: Vec<(SocketAddr, String)>,
    ws_config: WebSocketConfig,
    ready: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    received: AtomicU64,
    latency: Latency,
    first_error: Mutex<Option<String>>,
    last_drop: Mutex<Option<String>>,
    stop: CancellationToken,
}

impl Shared {
    fn note_error(&self, slot: &Mutex<Option<String>>, text: String) {
        let mut e = slot.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() {
            *e = Some(text);
        }
    }
}

/// Many WebSocket connections and what they received.
pub struct Swarm {
    shared: Arc<Shared>,
    slots: Vec<Arc<Slot>>,
    tasks: TaskTracker,
}

/// A summary of a swarm, for reports.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SwarmReport {
    /// Connections open now.
    pub connected: usize,
    /// Connections that never opened (after retries).
    pub failed: usize,
    /// Connections that opened and were later lost.
    pub dropped: usize,
    /// Messages received by all connections.
    pub received: u64,
    /// Publish-to-receive latency of the messages that carried a timestamp.
    pub latency: LatencySummary,
    /// The first connect error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Why the first lost connection ended, if any was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_drop: Option<String>,
}

impl Swarm {
    /// A swarm with no connections yet; resolves the URLs.
    pub async fn new(config: SwarmConfig) -> Result<Self, SwarmError> {
        if config.urls.is_empty() {
            return Err(SwarmError::NoUrl);
        }
        let mut targets = Vec::new();
        for url in &config.urls {
            let bad = |reason: String| SwarmError::BadUrl {
                url: url.clone(),
                reason,
            };
            let uri: tungstenite::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
            let host = uri.host().ok_or_else(|| bad("no host".into()))?;
            let port = uri.port_u16().unwrap_or(80);
            let addr = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| bad(e.to_string()))?
                .next()
                .ok_or_else(|| bad("does not resolve".into()))?;
            targets.push((addr, url.clone()));
        }
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer)
            .write_buffer_size(0)
            .max_write_buffer_size(64 * 1024);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                targets,
                ws_config,
                ready: AtomicUsize::new(0),
                failed: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                received: AtomicU64::new(0),
                latency: Latency::new(),
                first_error: Mutex::new(None),
                last_drop: Mutex::new(None),
                stop: CancellationToken::new(),
            }),
            slots: Vec::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SwarmConfig {
        &self.shared.config
    }

    /// Opens connections until `target` were attempted in total, at the
    /// configured rate; returns once each has opened or failed.
    pub async fn grow(&mut self, target: usize) {
        let start = self.slots.len();
        if target <= start {
            return;
        }
        let cfg = &self.shared.config;
        let pending = Arc::new(Semaphore::new(cfg.max_pending.max(1)));
        let began = Instant::now();
        let mut progress = Progress::new(cfg.progress, target);
        for i in start..target {
            if cfg.rate > 0 {
                let due = began + Duration::from_secs_f64((i - start) as f64 / f64::from(cfg.rate));
                tokio::time::sleep_until(due).await;
            }
            let Ok(permit) = pending.clone().acquire_owned().await else {
                break;
            };
            let slot = Arc::new(Slot::default());
            self.slots.push(slot.clone());
            self.tasks
                .spawn(connection(self.shared.clone(), i, slot, permit));
            progress.maybe_print(&self.shared);
        }
        while self.settled() < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
            progress.maybe_print(&self.shared);
        }
        progress.done(&self.shared);
    }

    /// Connections that opened or failed so far.
    fn settled(&self) -> usize {
        self.shared.ready.load(Ordering::Acquire) + self.shared.failed.load(Ordering::Acquire)
    }

    /// Connections attempted.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no connection was attempted.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Connections open now.
    pub fn connected(&self) -> usize {
        self.shared
            .ready
            .load(Ordering::Acquire)
            .saturating_sub(self.shared.dropped.load(Ordering::Acquire))
    }

    /// Messages received by all connections.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Acquire)
    }

    /// Messages received by each connection, in connection order.
    pub fn received_per_connection(&self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|s| s.received.load(Ordering::Acquire))
            .collect()
    }

    /// The server's connection id of each connection (edgepush), `None`
    /// for connections that are not open.
    pub fn conn_ids(&self) -> Vec<Option<String>> {
        self.slots
            .iter()
            .map(|s| s.conn_id.get().map(|c| c.to_string()))
            .collect()
    }

    /// Waits until `total` messages were received in all, or `limit`
    /// passes; returns whether they were.
    pub async fn wait_received(&self, total: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.received() >= total {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The latency histogram (reset it between phases).
    pub fn latency(&self) -> &Latency {
        &self.shared.latency
    }

    /// A summary of the swarm now.
    pub fn report(&self) -> SwarmReport {
        let s = &self.shared;
        SwarmReport {
            connected: self.connected(),
            failed: s.failed.load(Ordering::Acquire),
            dropped: s.dropped.load(Ordering::Acquire),
            received: self.received(),
            latency: s.latency.summary(),
            first_error: s
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            first_drop: s
                .last_drop
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Closes every connection and waits (at most `limit`) for the tasks.
    pub async fn close(self, limit: Duration) {
        self.shared.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
    }
}

/// The `connected 12000/19000, 3200/s, errors 0` line.
struct Progress {
    on: bool,
    target: usize,
    began: Instant,
    last: Instant,
    last_ready: usize,
}

impl Progress {
    fn new(on: bool, target: usize) -> Self {
        let now = Instant::now();
        Self {
            on,
            target,
            began: now,
            last: now,
            last_ready: 0,
        }
    }

    fn line(&self, shared: &Shared, rate: f64) -> String {
        format!(
            "connected {}/{}, {:.0}/s, errors {}",
            shared
                .ready
                .load(Ordering::Acquire)
                .saturating_sub(shared.dropped.load(Ordering::Acquire)),
            self.target,
            rate,
            shared.failed.load(Ordering::Acquire),
        )
    }

    fn maybe_print(&mut self, shared: &Shared) {
        if !self.on || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        let ready = shared.ready.load(Ordering::Acquire);
        let rate = (ready - self.last_ready.min(ready)) as f64 / self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.last_ready = ready;
        eprintln!("{}", self.line(shared, rate));
    }

    fn done(&self, shared: &Shared) {
        if self.on {
            let ready = shared.ready.load(Ordering::Acquire) as f64;
            let rate = ready / self.began.elapsed().as_secs_f64().max(1e-3);
            eprintln!("{} (done)", self.line(shared, rate));
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Why a connection could not open.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("tcp: {0}")]
    Tcp(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("closed before it was ready")]
    Closed,
    #[error("timed out")]
    Timeout,
}

/// One connection's life: open (with retries), then read until stopped.
async fn connection(shared: Arc<Shared>, i: usize, slot: Arc<Slot>, permit: OwnedSemaphorePermit) {
    let cfg = &shared.config;
    let mut opened = None;
    for attempt in 0..=cfg.retries {
        if shared.stop.is_cancelled() {
            break;
        }
        let result =
            match tokio::time::timeout(cfg.handshake_timeout, open(&shared, i, &slot)).await {
                Ok(r) => r,
                Err(_) => Err(OpenError::Timeout),
            };
        match result {
            Ok(ws) => {
                opened = Some(ws);
                break;
            }
            Err(e) => {
                if attempt == cfg.retries {
                    shared.note_error(&shared.first_error, format!("connection {i}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200 * (u64::from(attempt) + 1))).await;
            }
        }
    }
    drop(permit);
    let Some(mut ws) = opened else {
        shared.failed.fetch_add(1, Ordering::AcqRel);
        return;
    };
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let end = read_loop(&shared, i, &slot, &mut ws).await;
    match end {
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }
        Some(why) => {
            shared.dropped.fetch_add(1, Ordering::AcqRel);
            shared.note_error(&shared.last_drop, format!("connection {i}: {why}"));
        }
    }
}

/// Reads until the swarm stops (`None`) or the connection ends (`Some(why)`).
async fn read_loop(shared: &Shared, i: usize, slot: &Slot, ws: &mut Ws) -> Option<String> {
    loop {
        let frame = tokio::select! {
            _ = shared.stop.cancelled() => return None,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                if handle_text(shared, i, slot, &text) {
                    // Centrifugo ping: answer with a pong.
                    if let Err(e) = ws.send(Message::text("{}")).await {
                        return Some(format!("pong failed: {e}"));
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Some(match frame {
                    Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by server".into(),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Some(format!("read failed: {e}")),
            None => return Some("socket closed".into()),
        }
    }
}

/// Counts and times the messages in one text frame; returns whether it
/// asked for a pong (Centrifugo's `{}` ping).
fn handle_text(shared: &Shared, i: usize, slot: &Slot, text: &str) -> bool {
    let mut count = 0u32;
    let mut ping = false;
    let now = crate::unix_nanos();
    match shared.config.protocol {
        Protocol::Edgepush => {
            if let EdgeFrame::Msg { t } = frames::edgepush(text) {
                count += 1;
                if let Some(t) = t {
                    shared.latency.record(i, t, now);
                }
            }
        }
        Protocol::Centrifugo => frames::centrifugo(text, |event| match event {
            CentrifugoEvent::Publication { t } => {
                count += 1;
                if let Some(t) = t {
                    shared.latency.record(i, t, now);
                }
            }
            CentrifugoEvent::Ping => ping = true,
            _ => {}
        }),
    }
    if count > 0 {
        slot.received.fetch_add(count, Ordering::AcqRel);
        shared
            .received
            .fetch_add(u64::from(count), Ordering::AcqRel);
    }
    ping
}

/// Opens connection `i` and waits until it is ready.
async fn open(shared: &Shared, i: usize, slot: &Slot) -> Result<Ws, OpenError> {
    let cfg = &shared.config;
    let (dest, url) = &shared.targets[i % shared.targets.len()];
    let socket = match dest {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A port of this source address in TIME_WAIT from an earlier run may be
    // bound again.
    socket.set_reuseaddr(true)?;
    if let (Some(sources), SocketAddr::V4(_)) = (&cfg.sources, dest) {
        socket.bind(SocketAddr::new(IpAddr::V4(sources.addr(i)), 0))?;
    }
    let stream = socket.connect(*dest).await?;
    stream.set_nodelay(true)?;
    let user = cfg.user_of(i);
    let mut request = url.as_str().into_client_request()?;
    if cfg.protocol == Protocol::Edgepush {
        let token = match &cfg.topic {
            Some(topic) => crate::tokens::edgepush_with_topics(
                &cfg.secret,
                &user,
                std::slice::from_ref(topic),
                cfg.token_ttl,
            ),
            None => crate::tokens::edgepush(&cfg.secret, &user, cfg.token_ttl),
        };
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| OpenError::Refused(format!("token header: {e}")))?;
        request.headers_mut().insert("authorization", value);
    }
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(shared.ws_config))
            .await?;
    match cfg.protocol {
        Protocol::Edgepush => loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let EdgeFrame::Hello { conn_id } = frames::edgepush(&text) {
                        let _ = slot.conn_id.set(conn_id.into());
                        return Ok(ws);
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(OpenError::Refused(format!("{f:?}")));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(OpenError::Closed),
            }
        },
        Protocol::Centrifugo => {
            let channels = vec![cfg.channel.clone().unwrap_or_else(|| user.clone())];
            let token = crate::tokens::centrifugo(&cfg.secret, &user, &channels, cfg.token_ttl);
            let connect =
                serde_json::json!({"id": 1, "connect": {"token": token, "name": "edgepush-bench"}});
            ws.send(Message::text(connect.to_string())).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let mut outcome = None;
                        frames::centrifugo(&text, |e| match e {
                            CentrifugoEvent::Connected => outcome = Some(Ok(())),
                            CentrifugoEvent::Error => outcome = Some(Err(text.to_string())),
                            _ => {}
                        });
                        match outcome {
                            Some(Ok(())) => return Ok(ws),
                            Some(Err(reply)) => return Err(OpenError::Refused(reply)),
                            None => {}
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        return Err(OpenError::Refused(format!("{f:?}")));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(OpenError::Closed),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_over_the_range() {
        let s: Sources = "127.1.0.250+10".parse().unwrap();
        assert_eq!(s.addr(0), Ipv4Addr::new(127, 1, 0, 250));
        assert_eq!(s.addr(7), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(s.addr(10), Ipv4Addr::new(127, 1, 0, 250));
        assert!("nope+3".parse::<Sources>().is_err());
    }

    #[test]
    fn users_are_numbered_from_the_offset() {
        let mut cfg = SwarmConfig::new(vec!["ws://127.0.0.1:1/ws".into()], Protocol::Edgepush, "s");
        cfg.first_user = 100;
        assert_eq!(cfg.user_of(5), "u105");
        cfg.users = Users::Single("alice".into());
        assert_eq!(cfg.user_of(5), "alice");
    }
}
