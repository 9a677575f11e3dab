//! A real WebSocket client (tokio-tungstenite), as an application would
//! use one, plus a raw HTTP probe for looking at refused upgrades byte for
//! byte.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use edgepush_core::protocol::{MsgFrame, ServerFrame};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`WsClient::connect`] waits for the upgrade and the `hello`:
/// a stall period ([`crate::wait::stall`]).
fn connect_timeout() -> Duration {
    crate::wait::stall()
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An upgrade the node refused: the HTTP answer instead of `101`.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The body, as far as the client read it.
    pub body: String,
}

impl Refused {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// How a client presents its token.
#[derive(Debug, Clone, Copy)]
pub enum TokenIn<'a> {
    /// `Authorization: Bearer <token>`.
    Header(&'a str),
    /// `?token=<token>` (what browsers do).
    Query(&'a str),
    /// No token at all.
    None,
}

/// A connected client that has read its `hello`.
pub struct WsClient {
    ws: Stream,
    /// The connection id from `hello`.
    pub conn_id: String,
    /// The user id from `hello`.
    pub user_id: String,
}

impl WsClient {
    /// Connects to `url` (`ws://.../ws`) with `token` as a bearer header and
    /// returns once the `hello` frame is read.
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
        match Self::connect_raw(url, TokenIn::Header(token), None).await? {
            Ok(client) => Ok(client),
            Err(refused) => bail!(
                "upgrade to {url} refused with {}: {}",
                refused.status,
                refused.body
            ),
        }
    }

    /// Connects with the token presented as `token` and an optional
    /// `?after=`: the client, or the HTTP answer that refused it. Other
    /// failures (no connection, no `hello`) are errors.
    pub async fn connect_raw(
        url: &str,
        token: TokenIn<'_>,
        after: Option<u64>,
    ) -> anyhow::Result<Result<Self, Refused>> {
        let mut query = Vec::new();
        if let TokenIn::Query(t) = token {
            query.push(format!("token={}", encode_query(t)));
        }
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        let full = if query.is_empty() {
            url.to_owned()
        } else {
            format!("{url}?{}", query.join("&"))
        };
        let mut request = full
            .as_str()
            .into_client_request()
            .with_context(|| format!("bad WebSocket URL {full}"))?;
        if let TokenIn::Header(t) = token {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .context("token is not a header value")?,
            );
        }
        let connected =
            tokio::time::timeout(connect_timeout(), tokio_tungstenite::connect_async(request))
                .await
                .with_context(|| {
                    format!(
                        "no upgrade answer from {url} within {:?}",
                        connect_timeout()
                    )
                })?;
        let ws = match connected {
            Ok((ws, _response)) => ws,
            Err(tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Ok(Err(Refused {
                    status: response.status().as_u16(),
                    body,
                }));
            }
            Err(e) => return Err(anyhow!(e).context(format!("connecting to {url}"))),
        };
        let mut client = Self {
            ws,
            conn_id: String::new(),
            user_id: String::new(),
        };
        let hello = tokio::time::timeout(connect_timeout(), client.next_frame())
            .await
            .with_context(|| format!("no hello from {url} within {:?}", connect_timeout()))??;
        match hello {
            ServerFrame::Hello { conn_id, user_id } => {
                client.conn_id = conn_id.to_string();
                client.user_id = user_id.to_string();
                Ok(Ok(client))
            }
            other => bail!("expected hello first, got {other:?}"),
        }
    }

    /// The next server frame within `timeout` (`None` when none came).
    pub async fn frame(&mut self, timeout: Duration) -> anyhow::Result<Option<ServerFrame>> {
        match tokio::time::timeout(timeout, self.next_frame()).await {
            Err(_) => Ok(None),
            Ok(frame) => frame.map(Some),
        }
    }

    /// Sends a client frame.
    pub async fn send_frame(
        &mut self,
        frame: &edgepush_core::protocol::ClientFrame,
    ) -> anyhow::Result<()> {
        self.send_raw(Message::text(frame.to_text())).await
    }

    /// The next server frame; an error when the connection closes or a
    /// frame is not one the protocol defines.
    async fn next_frame(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .ok_or_else(|| anyhow!("connection ended without a close frame"))?
                .context("reading from the WebSocket")?;
            match frame {
                Message::Text(text) => {
                    return ServerFrame::parse(text.as_str())
                        .with_context(|| format!("not a server frame: {}", text.as_str()));
                }
                Message::Close(close) => bail!(
                    "connection closed by the server: {}",
                    describe(close.as_ref())
                ),
                Message::Binary(b) => bail!("unexpected binary frame of {} bytes", b.len()),
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next `msg` frame within `timeout`, `None` when none came.
    /// `subscribed` frames (every connection gets one for the broadcast
    /// topic) are passed over.
    pub async fn next_msg(&mut self, timeout: Duration) -> anyhow::Result<Option<MsgFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => return Ok(None),
                Ok(Ok(ServerFrame::Msg(m))) => return Ok(Some(m)),
                Ok(Ok(ServerFrame::Subscribed { .. })) => {}
                Ok(Ok(ServerFrame::Hello { .. })) => bail!("a second hello frame"),
                Ok(Ok(other)) => bail!("expected a msg frame, got {other:?}"),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Exactly `n` messages, as long as they keep coming: it gives up (with
    /// an error listing what did arrive) only when no message came for
    /// `stall`, however long the whole takes.
    pub async fn collect_msgs(
        &mut self,
        n: usize,
        stall: Duration,
    ) -> anyhow::Result<Vec<MsgFrame>> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match self.next_msg(stall).await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => bail!(
                    "user {} (conn {}) got {} of {n} messages, then none for {stall:?}: seqs {:?}",
                    self.user_id,
                    self.conn_id,
                    got.len(),
                    got.iter().map(|m: &MsgFrame| m.seq).collect::<Vec<_>>()
                ),
                Err(e) => {
                    return Err(e.context(format!(
                        "user {} (conn {}) after {} of {n} messages",
                        self.user_id,
                        self.conn_id,
                        got.len()
                    )));
                }
            }
        }
        Ok(got)
    }

    /// Fails if a message arrives within `grace`.
    pub async fn expect_silence(&mut self, grace: Duration) -> anyhow::Result<()> {
        match self.next_msg(grace).await? {
            None => Ok(()),
            Some(m) => bail!(
                "user {} (conn {}) got an unexpected message: seq {} id {} data {}",
                self.user_id,
                self.conn_id,
                m.seq,
                m.id,
                m.data
            ),
        }
    }

    /// Sends `{"type":"ack","seq":seq}`.
    pub async fn ack(&mut self, seq: u64) -> anyhow::Result<()> {
        let text = serde_json::json!({ "type": "ack", "seq": seq }).to_string();
        self.ws
            .send(Message::text(text))
            .await
            .context("sending an ack")
    }

    /// Sends an ack for every seq of `seqs`, as fast as the socket takes
    /// them (one flush per 256 frames).
    pub async fn ack_burst(&mut self, seqs: impl IntoIterator<Item = u64>) -> anyhow::Result<()> {
        for (i, seq) in seqs.into_iter().enumerate() {
            let text = format!(r#"{{"type":"ack","seq":{seq}}}"#);
            self.ws
                .feed(Message::text(text))
                .await
                .context("sending an ack")?;
            if i % 256 == 255 {
                self.ws.flush().await.context("flushing acks")?;
            }
        }
        self.ws.flush().await.context("flushing acks")
    }

    /// Sends any frame as is (for protocol-violation tests).
    pub async fn send_raw(&mut self, frame: Message) -> anyhow::Result<()> {
        self.ws.send(frame).await.context("sending a frame")
    }

    /// Waits (bounded) for the server to close the connection; returns the
    /// close code (`None` when it closed without a close frame). Messages
    /// that arrive first are skipped.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<Option<u16>> {
        let wait = async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(Message::Close(close))) => {
                        return Some(close.map(|c| u16::from(c.code)));
                    }
                    Some(Ok(_)) => {}
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(code)) => Ok(code),
            Ok(None) => Ok(None),
            Err(_) => bail!("the server did not close within {timeout:?}"),
        }
    }

    /// Closes the connection with a normal close frame and waits (bounded)
    /// for the server's answer.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await.context("sending close")?;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        Ok(())
    }
}

fn describe(close: Option<&CloseFrame>) -> String {
    match close {
        Some(c) => format!("code {} ({})", u16::from(c.code), c.reason.as_str()),
        None => "no close code".into(),
    }
}

/// Percent-encodes `s` for a query string (tokens are base64url and dots,
/// but tests also send garbage).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a probe read: (status, headers lowercased, body).
pub type ProbeAnswer = (u16, Vec<(String, String)>, String);

/// Sends a WebSocket upgrade request by hand to `ws_url` (`ws://host:port/
/// path?query`) with `extra_headers`, and reads the whole answer until the
/// server closes: (status, headers lowercased, body). Only for answers that
/// refuse the upgrade (a `101` would keep the socket open: it is returned
/// as soon as the head is read, with an empty body).
pub async fn upgrade_probe(
    ws_url: &str,
    extra_headers: &[(&str, &str)],
) -> anyhow::Result<ProbeAnswer> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("not a ws:// URL: {ws_url}"))?;
    let (host, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in extra_headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(host).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.starts_with(b"HTTP/1.1 101") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    raw_probe_answer(
        ws_url,
        tokio::time::timeout(connect_timeout(), exchange).await,
    )
}

/// Sends `bytes` as they are to the node of `ws_url` (any bytes: a
/// malformed request, invalid UTF-8) and reads the answer like
/// [`upgrade_probe`]; a server that closes without answering gives status 0.
pub async fn raw_probe(ws_url: &str, bytes: &[u8]) -> anyhow::Result<ProbeAnswer> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("not a ws:// URL: {ws_url}"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let exchange = async {
        let mut stream = TcpStream::connect(host).await?;
        stream.write_all(bytes).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(n) => n,
                // A reset after the answer: keep what came.
                Err(_) if !buf.is_empty() => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.starts_with(b"HTTP/1.1 101") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    let answer = tokio::time::timeout(connect_timeout(), exchange).await;
    if let Ok(Ok(raw)) = &answer
        && raw.is_empty()
    {
        return Ok((0, Vec::new(), String::new()));
    }
    raw_probe_answer(ws_url, answer)
}

fn raw_probe_answer(
    ws_url: &str,
    answer: Result<std::io::Result<Vec<u8>>, tokio::time::error::Elapsed>,
) -> anyhow::Result<ProbeAnswer> {
    let raw = answer
        .with_context(|| {
            format!(
                "no complete answer from {ws_url} within {:?}",
                connect_timeout()
            )
        })?
        .with_context(|| format!("probing {ws_url}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no complete HTTP head in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}
