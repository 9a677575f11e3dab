//! One client connection, from the upgrade request to the close frame.
//!
//! [`serve`] reads the upgrade request, verifies the token, registers the
//! connection in the hub and its route in the route store, answers `101`,
//! replays what the client missed from the message store, and then runs the
//! connection's loop: frames queued by the push API go out in bursts (`feed`
//! then one `flush`), acks come in, pings keep the socket honest, and a kick
//! (slow client, `DELETE`, drain) closes it with the right code.
//!
//! Ordering: the connection remembers the last seq it wrote. A queued frame
//! at or below it is a duplicate (it was replayed already) and is dropped; a
//! frame beyond `last + 1` means an earlier message went elsewhere or is
//! still in flight, and the gap is filled from the message store first. So
//! the client sees every seq once, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgepush_core::protocol::{self, ClientFrame};
use edgepush_core::{AuthError, ConnId, Identity, Seq, StoredMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::handshake::{self, HandshakeError, UpgradeRequest};
use crate::hub::{Conn, ConnInit, Outbound, Wake};
use crate::metrics::Metrics;
use crate::server::Shared;

/// A refusal answered before the upgrade.
struct Refusal {
    status: u16,
    reason: &'static str,
    code: &'static str,
    message: String,
    headers: &'static [(&'static str, &'static str)],
}

impl Refusal {
    fn new(
        status: u16,
        reason: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            reason,
            code,
            message: message.into(),
            headers: &[],
        }
    }

    fn from_auth(err: &AuthError) -> Self {
        let unauthorized = |code, msg: String| Refusal {
            headers: &[("www-authenticate", "Bearer")],
            ..Refusal::new(401, "Unauthorized", code, msg)
        };
        match err {
            AuthError::Missing => unauthorized("missing_token", err.to_string()),
            AuthError::Expired => unauthorized("token_expired", err.to_string()),
            AuthError::NotYetValid => unauthorized("token_not_yet_valid", err.to_string()),
            AuthError::Invalid(_) => unauthorized("invalid_token", err.to_string()),
            AuthError::Unavailable(_) => Refusal::new(
                503,
                "Service Unavailable",
                "unavailable",
                "token verification is unavailable; retry",
            ),
        }
    }
}

/// Why a connection ended, and the close code to send if any.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Send a close frame with this code.
    Close(u16, &'static str),
    /// The client closed or the socket broke: nothing to send.
    Lost,
}

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let read = timeout(
        shared.config.handshake_timeout,
        Box::pin(handshake::read_request(&mut stream)),
    )
    .await;
    let (mut req, rest) = match read {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(HandshakeError::TooLarge)) => {
            Metrics::inc(&shared.metrics.handshake_failed);
            let _ = handshake::write_error(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "bad_request",
                "request head too large",
                &[],
            )
            .await;
            return;
        }
        Ok(Err(HandshakeError::Malformed(reason))) => {
            Metrics::inc(&shared.metrics.handshake_failed);
            let _ = handshake::write_error(
                &mut stream,
                400,
                "Bad Request",
                "bad_request",
                &reason,
                &[],
            )
            .await;
            return;
        }
        Ok(Err(HandshakeError::Io(_))) | Err(_) => {
            Metrics::inc(&shared.metrics.handshake_failed);
            return;
        }
    };

    // Boxed: the admission future (token verification, store calls) is
    // large and lives only during the handshake; boxing keeps it out of the
    // connection task, which lives as long as the connection.
    let admitted = match Box::pin(admit(&shared, &req, peer)).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if refusal.status == 401 {
                Metrics::inc(&shared.metrics.handshake_unauthorized);
            } else {
                Metrics::inc(&shared.metrics.handshake_failed);
            }
            tracing::debug!(%peer, status = refusal.status, code = refusal.code, "upgrade refused");
            let _ = handshake::write_error(
                &mut stream,
                refusal.status,
                refusal.reason,
                refusal.code,
                &refusal.message,
                refusal.headers,
            )
            .await;
            return;
        }
    };
    let Admitted {
        conn_id,
        conn,
        identity,
        after,
    } = admitted;

    let key = req.ws_key.take().unwrap_or_default();
    // The request's strings are not needed any more: dropping them here
    // keeps them out of the connection task's state for its whole life.
    drop(req);
    if handshake::write_switching(&mut stream, &key).await.is_err() {
        finish(&shared, &conn_id, &conn).await;
        return;
    }
    shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&shared.metrics.connections_total);
    tracing::debug!(%peer, conn = %conn_id, user = %conn.user_id, "connected");

    let mut ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(shared.ws_config))
            .await;
    let end = run(&shared, &mut ws, &conn_id, &conn, &identity, after).await;
    if let End::Close(_, WRITE_TIMED_OUT) = end {
        // Queue overflows are counted by the hub when they happen.
        Metrics::inc(&shared.metrics.slow_clients);
    }
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
    }
    shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    finish(&shared, &conn_id, &conn).await;
    tracing::debug!(conn = %conn_id, ?end, "closed");
}

/// Forgets a connection: out of the hub, and out of the route store unless
/// the node is draining (then the drain removes every route in one go).
async fn finish(shared: &Shared, conn_id: &ConnId, conn: &Conn) {
    shared.hub.remove(conn_id);
    if shared.draining.load(Ordering::Acquire) {
        return;
    }
    let route = [(conn.user_id.clone(), conn_id.clone())];
    if let Err(e) = shared.deps.routes.remove_routes(&route).await {
        Metrics::inc(&shared.metrics.errors);
        tracing::warn!(conn = %conn_id, error = %e, "could not remove route; it expires or is dropped as gone");
    }
}

struct Admitted {
    conn_id: ConnId,
    conn: Arc<Conn>,
    identity: Identity,
    after: Seq,
}

/// Everything that can refuse a connection, in order; on success the
/// connection is in the hub and its route in the route store.
async fn admit(
    shared: &Arc<Shared>,
    req: &UpgradeRequest,
    peer: SocketAddr,
) -> Result<Admitted, Refusal> {
    if req.path != "/ws" {
        return Err(Refusal::new(
            404,
            "Not Found",
            "not_found",
            "the WebSocket endpoint is /ws",
        ));
    }
    if req.method != "GET" {
        return Err(Refusal::new(
            405,
            "Method Not Allowed",
            "method_not_allowed",
            "use GET",
        ));
    }
    if !req.is_websocket_upgrade() || req.ws_version.as_deref() != Some("13") {
        return Err(Refusal {
            headers: &[("upgrade", "websocket"), ("sec-websocket-version", "13")],
            ..Refusal::new(
                426,
                "Upgrade Required",
                "upgrade_required",
                "a WebSocket (version 13) upgrade is required",
            )
        });
    }
    if shared.draining.load(Ordering::Acquire) {
        return Err(Refusal::new(
            503,
            "Service Unavailable",
            "draining",
            "node is draining; connect to another node",
        ));
    }
    let explicit_after = match req.query_after.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<Seq>().map_err(|_| {
            Refusal::new(
                400,
                "Bad Request",
                "bad_request",
                "after must be a non-negative integer",
            )
        })?),
    };
    let token = req
        .token()
        .ok_or_else(|| Refusal::from_auth(&AuthError::Missing))?;
    let identity = shared
        .deps
        .verifier
        .verify(token)
        .await
        .map_err(|e| Refusal::from_auth(&e))?;
    // Where the client's stream starts: what it says it has, else what it
    // acknowledged. Refuse rather than guess: guessing could skip messages.
    let after = match explicit_after {
        Some(after) => after,
        None => shared
            .deps
            .messages
            .acked(&identity.user_id)
            .await
            .map_err(|e| {
                Metrics::inc(&shared.metrics.errors);
                tracing::warn!(error = %e, "message store unavailable at connect");
                Refusal::new(
                    503,
                    "Service Unavailable",
                    "unavailable",
                    "message store unavailable; retry",
                )
            })?,
    };

    let conn_id = shared.next_conn_id();
    let conn = shared.hub.insert(
        conn_id.clone(),
        ConnInit {
            user_id: identity.user_id.clone(),
            peer,
            user_agent: req.user_agent.as_deref().map(Box::from),
        },
        shared.config.send_queue,
    );
    if let Err(e) = shared
        .deps
        .routes
        .add_route(&identity.user_id, &conn_id, &shared.config.node_id)
        .await
    {
        shared.hub.remove(&conn_id);
        Metrics::inc(&shared.metrics.errors);
        tracing::warn!(error = %e, "route store unavailable at connect");
        return Err(Refusal::new(
            503,
            "Service Unavailable",
            "unavailable",
            "route store unavailable; retry",
        ));
    }
    Ok(Admitted {
        conn_id,
        conn,
        identity,
        after,
    })
}

type Ws = WebSocketStream<TcpStream>;

/// The close reason when a burst of writes outlived the write timeout (the
/// queue-overflow path says "too slow"); both count as slow clients.
const WRITE_TIMED_OUT: &str = "too slow: writes timed out";

/// Frames written per burst, at most: bounds the time one connection holds
/// its task before the next `select!` round.
const BURST: usize = 64;

/// The connection's loop; returns how it ended.
async fn run(
    shared: &Arc<Shared>,
    ws: &mut Ws,
    conn_id: &ConnId,
    conn: &Arc<Conn>,
    identity: &Identity,
    after: Seq,
) -> End {
    let config = &shared.config;
    let hello = protocol::encode_hello(conn_id, &conn.user_id);
    if send_burst(ws, config.write_timeout, [Message::Text(hello.into())])
        .await
        .is_err()
    {
        return End::Lost;
    }
    // Replay what the client missed.
    let mut last = after;
    if let Err(end) = catch_up(shared, ws, conn, &mut last).await {
        return end;
    }

    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut burst: Vec<Outbound> = Vec::new();

    loop {
        tokio::select! {
            wake = conn.next(&mut burst, BURST) => {
                match wake {
                    Wake::Close(code) => {
                        let reason = match code {
                            protocol::CLOSE_TOO_SLOW => "too slow",
                            protocol::CLOSE_DRAINING => "node draining",
                            _ => "closed by server",
                        };
                        return End::Close(code, reason);
                    }
                    Wake::Resync => {
                        // Pushes may have missed us while our route was gone.
                        if let Err(end) = catch_up(shared, ws, conn, &mut last).await {
                            return end;
                        }
                        continue;
                    }
                    Wake::Frames => {}
                }
                if let Err(end) = write_queued(shared, ws, conn, &mut burst, &mut last).await {
                    return end;
                }
                if burst.capacity() > BURST {
                    burst = Vec::new();
                }
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                conn.last_active_ms.store(edgepush_core::message::now_ms() as u64, Ordering::Relaxed);
                match incoming {
                    None => return End::Lost,
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        Metrics::inc(&shared.metrics.errors);
                        return End::Close(protocol::CLOSE_TOO_BIG, "frame too big");
                    }
                    Some(Err(_)) => return End::Lost,
                    Some(Ok(Message::Text(text))) => match ClientFrame::parse(&text) {
                        Ok(ClientFrame::Ack { seq }) => {
                            Metrics::inc(&shared.metrics.acks);
                            record_ack(shared, conn, seq.min(last));
                        }
                        Err(_) => {
                            Metrics::inc(&shared.metrics.errors);
                            return End::Close(protocol::CLOSE_BAD_FRAME, "unknown frame");
                        }
                    },
                    Some(Ok(Message::Binary(_))) => {
                        Metrics::inc(&shared.metrics.errors);
                        return End::Close(protocol::CLOSE_BAD_FRAME, "binary frames are not accepted");
                    }
                    Some(Ok(Message::Close(_))) => return End::Lost,
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= config.idle_timeout {
                    return End::Close(1001, "idle timeout");
                }
                let now_secs = (edgepush_core::message::now_ms() / 1000) as u64;
                if identity.expires_at.is_some_and(|exp| exp <= now_secs) {
                    return End::Close(protocol::CLOSE_BAD_TOKEN, "token expired");
                }
                if send_burst(ws, config.write_timeout, [Message::Ping(bytes::Bytes::new())]).await.is_err() {
                    return End::Lost;
                }
            }
        }
    }
}

/// Writes every stored message after `last`, page by page (bounded memory).
async fn catch_up(shared: &Shared, ws: &mut Ws, conn: &Conn, last: &mut Seq) -> Result<(), End> {
    // Boxed: the store call's future is large and rarely alive.
    while Box::pin(fill(shared, ws, conn, last, Seq::MAX)).await? {}
    Ok(())
}

/// Writes the frames in `burst` (and whatever else is queued, up to a
/// bound) with one flush: drops seqs the client already has, fills a gap
/// from the message store before a later seq.
async fn write_queued(
    shared: &Shared,
    ws: &mut Ws,
    conn: &Conn,
    burst: &mut Vec<Outbound>,
    last: &mut Seq,
) -> Result<(), End> {
    let mut written = 0u64;
    let mut taken = 0usize;
    let mut items = std::mem::take(burst);
    let mut i = 0;
    loop {
        let out = if i < items.len() {
            i += 1;
            items[i - 1].clone()
        } else if taken < BURST {
            match conn.try_next() {
                Some(out) => {
                    taken += 1;
                    out
                }
                None => break,
            }
        } else {
            break;
        };
        if out.seq != 0 {
            if out.seq <= *last {
                continue;
            }
            if out.seq > *last + 1 {
                // An earlier seq went astray or is still in flight: write
                // what we have, then fill the gap from the store.
                flush_counted(shared, ws, &mut written).await?;
                while *last + 1 < out.seq {
                    if !Box::pin(fill(shared, ws, conn, last, out.seq - 1)).await? {
                        // Nothing more below this seq in the store
                        // (retention removed it): go on.
                        break;
                    }
                }
                if out.seq <= *last {
                    continue;
                }
            }
            *last = out.seq;
        }
        feed(shared, ws, out.frame).await?;
        written += 1;
    }
    items.clear();
    *burst = items;
    flush_counted(shared, ws, &mut written).await
}

async fn feed(shared: &Shared, ws: &mut Ws, frame: Message) -> Result<(), End> {
    match timeout(shared.config.write_timeout, ws.feed(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Lost),
        Err(_) => Err(End::Close(protocol::CLOSE_TOO_SLOW, WRITE_TIMED_OUT)),
    }
}

async fn flush_counted(shared: &Shared, ws: &mut Ws, written: &mut u64) -> Result<(), End> {
    match timeout(shared.config.write_timeout, ws.flush()).await {
        Ok(Ok(())) => {
            shared
                .metrics
                .frames_written
                .fetch_add(*written, Ordering::Relaxed);
            *written = 0;
            Ok(())
        }
        Ok(Err(_)) => Err(End::Lost),
        Err(_) => Err(End::Close(protocol::CLOSE_TOO_SLOW, WRITE_TIMED_OUT)),
    }
}

/// Writes `frames` with one flush, within `limit`.
async fn send_burst(
    ws: &mut Ws,
    limit: Duration,
    frames: impl IntoIterator<Item = Message>,
) -> Result<(), End> {
    let write = async {
        for frame in frames {
            ws.feed(frame).await?;
        }
        ws.flush().await
    };
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Lost),
        Err(_) => Err(End::Close(protocol::CLOSE_TOO_SLOW, WRITE_TIMED_OUT)),
    }
}

/// Writes one page of stored messages after `last` (at most up to `upto`);
/// returns whether a full page was written (there may be more).
async fn fill(
    shared: &Shared,
    ws: &mut Ws,
    conn: &Conn,
    last: &mut Seq,
    upto: Seq,
) -> Result<bool, End> {
    let page = shared.config.replay_page;
    let want = usize::try_from(upto.saturating_sub(*last))
        .unwrap_or(usize::MAX)
        .min(page);
    if want == 0 {
        return Ok(false);
    }
    let messages = shared
        .deps
        .messages
        .read_after(&conn.user_id, *last, want)
        .await
        .map_err(|e| {
            Metrics::inc(&shared.metrics.errors);
            tracing::warn!(user = %conn.user_id, error = %e, "replay failed; closing so the client resumes later");
            End::Close(1011, "message store unavailable; reconnect")
        })?;
    let full = messages.len() == want;
    let mut frames = Vec::with_capacity(messages.len());
    for m in &messages {
        if m.seq > *last && m.seq <= upto {
            frames.push(frame_of(m));
            *last = m.seq;
        }
    }
    if !frames.is_empty() {
        let n = frames.len() as u64;
        send_burst(ws, shared.config.write_timeout, frames).await?;
        shared
            .metrics
            .frames_written
            .fetch_add(n, Ordering::Relaxed);
    }
    Ok(full)
}

/// The `msg` frame of a stored message.
pub(crate) fn frame_of(m: &StoredMessage) -> Message {
    text_frame(protocol::encode_msg(m.seq, &m.id, &m.data))
}

/// A text frame of JSON bytes (binary if they were somehow not UTF-8).
pub(crate) fn text_frame(bytes: bytes::Bytes) -> Message {
    // encode_msg writes JSON text from validated strings: always UTF-8.
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(bytes),
    }
}

fn record_ack(shared: &Arc<Shared>, conn: &Conn, seq: Seq) {
    if seq == 0 {
        return;
    }
    let shared = shared.clone();
    let user = conn.user_id.clone();
    tokio::spawn(async move {
        if let Err(e) = shared.deps.messages.ack(&user, seq).await {
            Metrics::inc(&shared.metrics.errors);
            tracing::warn!(%user, seq, error = %e, "could not record ack");
        }
    });
}
