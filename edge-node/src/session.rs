//! One client's session, from the `hello` frame to the end: the loop that
//! writes what the client is owed, in seq order and once, and reads what the
//! client sends.
//!
//! [`Session::run`] is a single `select!` over four things, so that nothing
//! the session waits for can stop it from hearing the others:
//!
//! - the connection's queue in the hub (frames pushed by dispatch, a resync
//!   after route loss, a close asked by the hub);
//! - a store read in flight (see [`crate::replay`]): the stream position at
//!   the start, replay pages, gap fills;
//! - the client's socket (acks, close, a vanished peer);
//! - the ping timer (pings, idle timeout, token expiry).
//!
//! While a store read is in flight the session leaves queued frames in the
//! queue, and still reads the socket and pings: a client that leaves during
//! a slow replay ends the session at once (its queued read is cancelled
//! before it reaches the store), and a client that stays hears pings, so
//! neither side mistakes a slow store for a dead peer.
//!
//! Ordering: the session remembers the last seq it wrote (`last`). A queued
//! frame at or below it is a duplicate and is dropped; a frame beyond
//! `last + 1` waits while the gap is read from the store. So the client sees
//! every seq once, in order, however pushes race.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgepush_core::protocol::{self, ClientFrame};
use edgepush_core::{ConnId, Identity, Seq, StoredMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::hub::{Conn, Outbound, Wake};
use crate::metrics::Metrics;
use crate::replay::{Read, StoreRead};
use crate::state::NodeState;

/// The client's WebSocket.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Frames taken from the queue per round, at most: bounds the time one
/// connection holds its task before the next `select!` round.
const BURST: usize = 64;

/// Close reason when a burst of writes outlived the write timeout (the
/// queue-overflow path says "too slow"); both count as slow clients.
pub(crate) const WRITE_TIMED_OUT: &str = "too slow: writes timed out";

/// Why a session ended, and the close frame to send if any.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    /// Send a close frame with this code and reason.
    Close(u16, &'static str),
    /// The client closed or the socket broke: nothing to send.
    Lost,
}

/// Runs `fut` (a write to the socket) within `limit`: a socket error ends
/// the session as lost, a timeout closes it as too slow.
pub(crate) async fn timed<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, tungstenite::Error>>,
) -> Result<T, End> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(End::Lost),
        Err(_) => Err(End::Close(protocol::CLOSE_TOO_SLOW, WRITE_TIMED_OUT)),
    }
}

/// A burst of writes to the client: frames fed one after the other, then
/// one flush, each step within the write timeout ([`timed`]).
struct Burst<'w> {
    ws: &'w mut Ws,
    limit: Duration,
    written: u64,
}

impl<'w> Burst<'w> {
    fn new(ws: &'w mut Ws, limit: Duration) -> Self {
        Self {
            ws,
            limit,
            written: 0,
        }
    }

    /// Queues `frame` in the socket's buffer.
    async fn feed(&mut self, frame: Message) -> Result<(), End> {
        timed(self.limit, self.ws.feed(frame)).await?;
        self.written += 1;
        Ok(())
    }

    /// Flushes what was fed, if anything, and counts it.
    async fn flush(self, metrics: &Metrics) -> Result<(), End> {
        if self.written > 0 {
            timed(self.limit, self.ws.flush()).await?;
            metrics
                .frames_written
                .fetch_add(self.written, Ordering::Relaxed);
        }
        Ok(())
    }
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

/// One client's session; see the module docs.
pub(crate) struct Session {
    /// The node.
    state: Arc<NodeState>,
    /// This connection's id.
    conn_id: ConnId,
    /// Its place in the hub: queue, wake-up, identity.
    conn: Arc<Conn>,
    /// The token's `exp`: the session closes with 4001 past it.
    expires_at: Option<u64>,
    /// The highest seq written to the client. Meaningful once `started`.
    last: Seq,
    /// Whether the start of the stream is known (the first store read
    /// answered): before, nothing is written and acks are ignored.
    started: bool,
    /// Frames taken from the queue and not written yet: a gap in front of
    /// them is being read from the store.
    held: VecDeque<Outbound>,
    /// The store read in flight, if any.
    read: Option<StoreRead>,
    /// A resync arrived while a read was in flight: catch up again after it.
    resync_pending: bool,
}

impl Session {
    /// A session for an admitted connection that asked to start after
    /// `after` (`None`: after the user's acked seq).
    pub(crate) fn new(
        state: Arc<NodeState>,
        conn_id: ConnId,
        conn: Arc<Conn>,
        identity: &Identity,
        after: Option<Seq>,
    ) -> Self {
        let read = Some(StoreRead::start(&state, &conn.user_id, after));
        Self {
            state,
            conn_id,
            conn,
            expires_at: identity.expires_at,
            last: 0,
            started: false,
            held: VecDeque::new(),
            read,
            resync_pending: false,
        }
    }

    /// Sends `hello`, then serves the client until the session ends.
    pub(crate) async fn run(&mut self, ws: &mut Ws) -> End {
        let config = &self.state.config;
        let (write_timeout, ping_interval, idle_timeout) = (
            config.write_timeout,
            config.ping_interval,
            config.idle_timeout,
        );
        let hello = protocol::encode_hello(&self.conn_id, &self.conn.user_id);
        if let Err(end) = timed(write_timeout, ws.send(Message::Text(hello.into()))).await {
            return end;
        }
        let mut ping = tokio::time::interval(ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_heard = Instant::now();
        let mut burst: Vec<Outbound> = Vec::new();
        let conn = self.conn.clone();

        loop {
            let reading = self.read.is_some();
            // Queued frames are taken only when nothing is held back and no
            // read is in flight; closes and resyncs are always heard.
            let take_frames = !reading && self.held.is_empty();
            tokio::select! {
                wake = conn.next(&mut burst, BURST, take_frames) => {
                    match wake {
                        Wake::Close(code) => {
                            let reason = match code {
                                protocol::CLOSE_TOO_SLOW => "too slow",
                                protocol::CLOSE_DRAINING => "node draining",
                                _ => "closed by server",
                            };
                            return End::Close(code, reason);
                        }
                        Wake::Resync => self.resync(),
                        Wake::Frames => {
                            self.held.extend(burst.drain(..));
                            if burst.capacity() > BURST {
                                burst = Vec::new();
                            }
                        }
                    }
                }
                done = async { self.read.as_mut().expect("guarded by `reading`").next().await }, if reading => {
                    Metrics::inc(&self.state.metrics.store_reads);
                    if let Err(end) = self.on_read(ws, done).await {
                        return end;
                    }
                }
                incoming = ws.next() => {
                    last_heard = Instant::now();
                    conn.last_active_ms.store(edgepush_core::message::now_ms() as u64, Ordering::Relaxed);
                    if let Some(end) = self.on_incoming(incoming) {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        return End::Close(protocol::CLOSE_GOING_AWAY, "idle timeout");
                    }
                    let now_secs = (edgepush_core::message::now_ms() / 1000) as u64;
                    if self.expires_at.is_some_and(|exp| exp <= now_secs) {
                        return End::Close(protocol::CLOSE_BAD_TOKEN, "token expired");
                    }
                    if let Err(end) = timed(write_timeout, ws.send(Message::Ping(bytes::Bytes::new()))).await {
                        return end;
                    }
                }
            }
            if self.read.is_none()
                && let Err(end) = self.write_held(ws).await
            {
                return end;
            }
        }
    }

    /// Catch up from the store (pushes may have missed this connection while
    /// its route was gone), now or after the read in flight.
    fn resync(&mut self) {
        if self.read.is_some() || !self.started {
            self.resync_pending = true;
        } else {
            self.read = Some(StoreRead::resume(
                &self.state,
                &self.conn.user_id,
                self.last,
            ));
        }
    }

    /// What the store answered.
    async fn on_read(&mut self, ws: &mut Ws, done: Read) -> Result<(), End> {
        let state = &self.state;
        let messages = match done {
            Read::Failed(e) => {
                Metrics::inc(&state.metrics.errors);
                tracing::warn!(user = %self.conn.user_id, error = %e, "store read failed; closing so the client resumes later");
                return Err(End::Close(
                    protocol::CLOSE_INTERNAL,
                    "message store unavailable; reconnect",
                ));
            }
            Read::Started { start } => {
                // A resume keeps its place; only the first read sets it.
                if !self.started {
                    self.last = start;
                    self.started = true;
                }
                return Ok(());
            }
            Read::Page(messages) => messages,
            Read::Done => {
                self.read = None;
                if std::mem::take(&mut self.resync_pending) {
                    self.read = Some(StoreRead::resume(state, &self.conn.user_id, self.last));
                }
                return Ok(());
            }
        };
        let mut burst = Burst::new(ws, state.config.write_timeout);
        for m in &messages {
            if m.seq > self.last {
                burst.feed(frame_of(m)).await?;
                self.last = m.seq;
            }
        }
        burst.flush(&state.metrics).await?;
        if let Some(read) = self.read.as_mut() {
            read.advance(self.last);
        }
        Ok(())
    }

    /// Writes the held frames in one burst with one flush: drops seqs the
    /// client has, and stops at a gap, starting a read of the gap.
    async fn write_held(&mut self, ws: &mut Ws) -> Result<(), End> {
        if self.held.is_empty() {
            return Ok(());
        }
        let mut burst = Burst::new(ws, self.state.config.write_timeout);
        while let Some(out) = self.held.front() {
            if out.seq != 0 {
                if out.seq <= self.last {
                    self.held.pop_front();
                    continue;
                }
                if out.seq > self.last + 1 {
                    // An earlier seq went astray or is still in flight: read
                    // the gap; the held frames go out after it.
                    self.read = Some(StoreRead::gap(
                        &self.state,
                        &self.conn.user_id,
                        self.last,
                        out.seq - 1,
                    ));
                    break;
                }
                self.last = out.seq;
            }
            let Some(out) = self.held.pop_front() else {
                break;
            };
            burst.feed(out.frame).await?;
        }
        burst.flush(&self.state.metrics).await?;
        if self.held.is_empty() && self.held.capacity() > BURST {
            self.held = VecDeque::new();
        }
        Ok(())
    }

    /// A frame (or the end) from the client.
    fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, tungstenite::Error>>,
    ) -> Option<End> {
        let metrics = &self.state.metrics;
        match incoming {
            None => Some(End::Lost),
            Some(Err(tungstenite::Error::Capacity(_))) => {
                Metrics::inc(&metrics.errors);
                Some(End::Close(protocol::CLOSE_TOO_BIG, "frame too big"))
            }
            Some(Err(_)) => Some(End::Lost),
            Some(Ok(Message::Text(text))) => match ClientFrame::parse(&text) {
                Ok(ClientFrame::Ack { seq }) => {
                    Metrics::inc(&metrics.acks);
                    // Only what this connection was sent counts: the ack can
                    // never pass what is stored.
                    if self.started {
                        self.state
                            .acks
                            .record(&self.conn.user_id, seq.min(self.last));
                    }
                    None
                }
                Err(_) => {
                    Metrics::inc(&metrics.errors);
                    Some(End::Close(protocol::CLOSE_BAD_FRAME, "unknown frame"))
                }
            },
            Some(Ok(Message::Binary(_))) => {
                Metrics::inc(&metrics.errors);
                Some(End::Close(
                    protocol::CLOSE_BAD_FRAME,
                    "binary frames are not accepted",
                ))
            }
            Some(Ok(Message::Close(_))) => Some(End::Lost),
            // Pings are answered by tungstenite; pongs and raw frames carry nothing.
            Some(Ok(_)) => None,
        }
    }
}
