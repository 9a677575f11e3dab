//! One client's session, from the `hello` frame to the end: the loop that
//! writes what the client is owed, per stream in seq order and once, and
//! reads what the client sends.
//!
//! A connection carries several streams: the user's own messages, the
//! broadcast topic (every connection is subscribed), the topics of its
//! token, and the topics it subscribed to itself. Each stream has its own
//! position (the last seq written); frames of different streams share the
//! connection's one queue.
//!
//! [`Session::run`] is a single `select!` over four things, so that nothing
//! the session waits for can stop it from hearing the others:
//!
//! - the connection's queue in the hub (frames pushed by dispatch, a resync
//!   after route loss, a close asked by the hub);
//! - the store job in flight (see [`crate::replay`]): where a stream
//!   starts, replay pages, gap fills, a client publish; one at a time, the
//!   others wait in order;
//! - the client's socket (acks, subscribe, unsubscribe, publish, close, a
//!   vanished peer);
//! - the ping timer (pings, idle timeout, token expiry).
//!
//! While a store job is in flight the session leaves queued frames in the
//! queue, and still reads the socket and pings: a client that leaves during
//! a slow replay ends the session at once (its queued read is cancelled
//! before it reaches the store), and a client that stays hears pings, so
//! neither side mistakes a slow store for a dead peer.
//!
//! Ordering: per stream, the session remembers the last seq it wrote. A
//! queued frame at or below it is a duplicate and is dropped; a frame beyond
//! `last + 1` waits while the gap is read from the store. So the client sees
//! every seq of every stream once, in order, however pushes race.
//!
//! Hand-over: at the end of each round, when nothing is held, read or
//! unwritten and the user stream has started, the session flushes and
//! hands its socket to the push path ([`Conn::go_direct`]): the user's
//! next seqs are then written by whoever pushes them (see
//! [`crate::socket`]) and the session sleeps on. Whatever wakes it takes
//! the socket back first ([`Conn::take_back`]) and goes on from the last
//! seq written.
//!
//! Topic requests never close the connection: a refused subscription or
//! publish gets an `error` frame naming why, and the session goes on.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgepush_core::protocol::{self, ClientFrame};
use edgepush_core::topic::{ClientPublish, TopicPattern};
use edgepush_core::{ConnId, Identity, Seq, TopicName};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::hub::{Conn, Outbound, Wake};
use crate::metrics::Metrics;
use crate::replay::{Read, Start, StoreRead, Target};
use crate::socket::Socket;
use crate::state::NodeState;

/// The client's WebSocket.
pub(crate) type Ws = WebSocketStream<Socket>;

/// Frames taken from the queue per round, at most: bounds the time one
/// connection holds its task before the next `select!` round.
const BURST: usize = 64;

/// Close reason when a burst of writes outlived the write timeout (the
/// queue-overflow path says "too slow"); both count as slow clients.
pub(crate) const WRITE_TIMED_OUT: &str = "too slow: writes timed out";

/// Longest idempotency key of a client publish, as the collect API's.
const MAX_IDEMPOTENCY_KEY: usize = 128;

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

/// A text frame of JSON bytes (binary if they were somehow not UTF-8).
pub(crate) fn text_frame(bytes: bytes::Bytes) -> Message {
    // The encoders write JSON text from validated strings: always UTF-8.
    // Checked before the bytes are handed over: a clone to keep them for
    // the fallback would allocate (it makes the buffer a shared one).
    if std::str::from_utf8(&bytes).is_err() {
        return Message::Binary(bytes);
    }
    match Utf8Bytes::try_from(bytes) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(bytes::Bytes::new()),
    }
}

/// A text frame that takes `text`'s buffer over: no copy, no check, no
/// second allocation when `text` is exactly as long as its capacity (the
/// protocol's frame encoders build them so).
pub(crate) fn text_frame_from_string(text: String) -> Message {
    Message::Text(Utf8Bytes::from(text))
}

/// One stream's position.
#[derive(Debug, Default, Clone, Copy)]
struct Stream {
    /// The highest seq written to the client. Meaningful once `started`.
    last: Seq,
    /// Whether the start of the stream is known (its first store job
    /// answered): before, nothing of it is written.
    started: bool,
    /// A resync came before the start: catch up again once started.
    resync_after_start: bool,
}

/// What woke the session's loop.
enum Event {
    /// The connection's queue in the hub.
    Wake(Wake),
    /// The store job in flight.
    Read(Read),
    /// The client's socket.
    Incoming(Option<Result<Message, tungstenite::Error>>),
    /// The ping timer.
    Ping,
}

/// What the job in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    /// Where a stream starts (then its replay).
    Start,
    /// A catch-up or gap fill of a started stream.
    CatchUp,
    /// A client publish.
    Publish,
}

pub(crate) use edgepush_core::subscriptions::ServerSide;

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
    /// The user's own stream.
    user: Stream,
    /// The broadcast stream.
    broadcast: Stream,
    /// Topic subscriptions (token and client ones).
    topics: HashMap<TopicName, Stream>,
    /// Topics the client may subscribe to without a subscribe token.
    patterns: Vec<TopicPattern>,
    /// Frames taken from the queue and not written yet: a gap or a stream
    /// start in front of them is being read from the store.
    held: VecDeque<Outbound>,
    /// The store job in flight, if any, and what it is.
    read: Option<(StoreRead, JobKind)>,
    /// Store jobs waiting for the one in flight, in order.
    jobs: VecDeque<(Target, Start, JobKind)>,
    /// Error frames to send after `hello`.
    notices: Vec<String>,
}

impl Session {
    /// A session for an admitted connection that asked to start its own
    /// stream after `after` (`None`: after the user's acked seq), with the
    /// server-side subscriptions `server`.
    pub(crate) fn new(
        state: Arc<NodeState>,
        conn_id: ConnId,
        conn: Arc<Conn>,
        identity: &Identity,
        after: Option<Seq>,
        server: ServerSide,
    ) -> Self {
        let mut jobs = VecDeque::with_capacity(2 + server.topics.len());
        let new = |after| Start::New {
            after,
            token: None,
            join: false,
        };
        jobs.push_back((Target::User, new(after), JobKind::Start));
        jobs.push_back((
            Target::Topic(TopicName::broadcast()),
            new(server.broadcast_after),
            JobKind::Start,
        ));
        let mut topics = HashMap::with_capacity(server.topics.len());
        for (topic, after) in server.topics {
            topics.insert(topic.clone(), Stream::default());
            jobs.push_back((Target::Topic(topic), new(after), JobKind::Start));
        }
        Self {
            state,
            conn_id,
            conn,
            expires_at: identity.expires_at,
            user: Stream::default(),
            broadcast: Stream::default(),
            topics,
            patterns: server.patterns,
            held: VecDeque::new(),
            read: None,
            jobs,
            notices: server.notices,
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
        for notice in std::mem::take(&mut self.notices) {
            if let Err(end) = self.send_text(ws, notice).await {
                return end;
            }
        }
        let mut ping = tokio::time::interval(ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_heard = Instant::now();
        let mut burst: Vec<Outbound> = Vec::new();
        let conn = self.conn.clone();

        loop {
            self.next_job();
            let reading = self.read.is_some();
            // Queued frames are taken only when nothing is held back and no
            // job is in flight; closes and resyncs are always heard.
            let take_frames = !reading && self.held.is_empty();
            let event = tokio::select! {
                wake = conn.next(&mut burst, BURST, take_frames) => Event::Wake(wake),
                done = async { self.read.as_mut().expect("guarded by `reading`").0.next().await }, if reading => Event::Read(done),
                incoming = ws.next() => Event::Incoming(incoming),
                _ = ping.tick() => Event::Ping,
            };
            // The push path may have written the user's frames meanwhile:
            // go on from the last of them.
            let direct_last = conn.take_back();
            if self.user.started && direct_last > self.user.last {
                self.user.last = direct_last;
            }
            match event {
                Event::Wake(Wake::Close(code)) => {
                    let reason = match code {
                        protocol::CLOSE_TOO_SLOW => "too slow",
                        protocol::CLOSE_DRAINING => "node draining",
                        _ => "closed by server",
                    };
                    return End::Close(code, reason);
                }
                Event::Wake(Wake::Resync) => self.resync(),
                Event::Wake(Wake::Frames) => {
                    self.held.extend(burst.drain(..));
                    if burst.capacity() > BURST {
                        burst = Vec::new();
                    }
                }
                // Flushed below, before anything else is written.
                Event::Wake(Wake::Unsent) => {}
                Event::Read(done) => {
                    Metrics::inc(&self.state.metrics.store_reads);
                    if let Err(end) = self.on_read(ws, done).await {
                        return end;
                    }
                }
                Event::Incoming(incoming) => {
                    last_heard = Instant::now();
                    conn.last_active_ms
                        .store(edgepush_core::message::now_ms() as u64, Ordering::Relaxed);
                    if let Err(end) = self.on_incoming(ws, incoming).await {
                        return end;
                    }
                }
                Event::Ping => {
                    if last_heard.elapsed() >= idle_timeout {
                        return End::Close(protocol::CLOSE_GOING_AWAY, "idle timeout");
                    }
                    let now_secs = (edgepush_core::message::now_ms() / 1000) as u64;
                    if self.expires_at.is_some_and(|exp| exp <= now_secs) {
                        return End::Close(protocol::CLOSE_BAD_TOKEN, "token expired");
                    }
                    if let Err(end) =
                        timed(write_timeout, ws.send(Message::Ping(bytes::Bytes::new()))).await
                    {
                        return end;
                    }
                }
            }
            self.next_job();
            if self.read.is_none()
                && let Err(end) = self.write_held(ws).await
            {
                return end;
            }
            // Idle, with everything written: the push path may write the
            // user's next frames itself until something wakes the session.
            // (Only a hand-over leaves bytes unwritten, so a session whose
            // user stream has not started has nothing to flush here.)
            if self.user.started
                && self.read.is_none()
                && self.jobs.is_empty()
                && self.held.is_empty()
            {
                if let Err(end) = timed(write_timeout, ws.flush()).await {
                    return end;
                }
                conn.go_direct(self.user.last);
            }
        }
    }

    /// Leaves every topic (the connection is closing): out of the topic
    /// index, presence told, memberships released when the node has no
    /// subscriber left.
    pub(crate) fn leave_all(&mut self) {
        let topics: Vec<TopicName> = self.topics.keys().cloned().collect();
        for topic in topics {
            self.leave(&topic);
        }
    }

    /// Starts the next waiting job when none is in flight. An empty queue
    /// gives its buffer back: the start jobs' slots (about 200 B) would
    /// otherwise stay with every idle connection for its whole life.
    fn next_job(&mut self) {
        if self.read.is_some() {
            return;
        }
        if let Some((target, start, kind)) = self.jobs.pop_front() {
            let read = StoreRead::new(&self.state, &self.conn_id, &self.conn, target, start);
            self.read = Some((read, kind));
        } else if self.jobs.capacity() > 0 {
            self.jobs = VecDeque::new();
        }
    }

    /// The stream of `target`, if the connection has it.
    fn stream(&mut self, target: &Target) -> Option<&mut Stream> {
        match target {
            Target::User => Some(&mut self.user),
            Target::Topic(t) if t.is_broadcast() => Some(&mut self.broadcast),
            Target::Topic(t) => self.topics.get_mut(t),
        }
    }

    /// The stream a queued frame belongs to.
    fn stream_of(&mut self, topic: &Option<TopicName>) -> Option<&mut Stream> {
        match topic {
            None => Some(&mut self.user),
            Some(t) if t.is_broadcast() => Some(&mut self.broadcast),
            Some(t) => self.topics.get_mut(t),
        }
    }

    /// Catch up from the store (pushes may have missed this connection while
    /// its routes were gone): every started stream after the jobs in line,
    /// every other one right after its start.
    fn resync(&mut self) {
        let mut targets = vec![Target::User, Target::Topic(TopicName::broadcast())];
        targets.extend(self.topics.keys().cloned().map(Target::Topic));
        for target in targets {
            let Some(stream) = self.stream(&target) else {
                continue;
            };
            if stream.started {
                let last = stream.last;
                self.jobs
                    .push_back((target, Start::Resume { last }, JobKind::CatchUp));
            } else {
                stream.resync_after_start = true;
            }
        }
    }

    /// What the store job answered.
    async fn on_read(&mut self, ws: &mut Ws, done: Read) -> Result<(), End> {
        let Some((read, kind)) = self.read.as_ref() else {
            return Ok(());
        };
        let target = read.target.clone();
        let kind = *kind;
        match done {
            Read::Failed(e) => {
                self.read = None;
                Metrics::inc(&self.state.metrics.errors);
                let client_start = kind == JobKind::Start
                    && matches!(&target, Target::Topic(t) if !t.is_broadcast());
                if client_start {
                    // A subscription that could not start: refused, and the
                    // connection goes on.
                    tracing::warn!(user = %self.conn.user_id, error = %e, "a topic subscription could not start");
                    return self
                        .refuse(
                            ws,
                            &target,
                            kind,
                            "unavailable",
                            "the message store is unavailable; subscribe again later",
                        )
                        .await;
                }
                tracing::warn!(user = %self.conn.user_id, error = %e, "store read failed; closing so the client resumes later");
                Err(End::Close(
                    protocol::CLOSE_INTERNAL,
                    "message store unavailable; reconnect",
                ))
            }
            Read::Started { start, latest } => {
                let Some(stream) = self.stream(&target) else {
                    return Ok(());
                };
                // A catch-up keeps its place; only the first start sets it.
                if stream.started {
                    return Ok(());
                }
                stream.last = start;
                stream.started = true;
                let again = std::mem::take(&mut stream.resync_after_start);
                if again {
                    self.jobs.push_back((
                        target.clone(),
                        Start::Resume { last: start },
                        JobKind::CatchUp,
                    ));
                }
                if let Target::Topic(topic) = &target {
                    Metrics::inc(&self.state.metrics.subscriptions_total);
                    self.send_text(ws, protocol::encode_subscribed(topic, latest))
                        .await?;
                }
                Ok(())
            }
            Read::Page(frames) => {
                let Some(stream) = self.stream(&target) else {
                    return Ok(());
                };
                let mut last = stream.last;
                let mut burst = Burst::new(ws, self.state.config.write_timeout);
                for (seq, frame) in frames {
                    if seq > last {
                        burst.feed(text_frame(frame)).await?;
                        last = seq;
                    }
                }
                if let Some(stream) = self.stream(&target) {
                    stream.last = last;
                }
                burst.flush(&self.state.metrics).await?;
                if let Some((read, _)) = self.read.as_mut() {
                    read.advance(last);
                }
                Ok(())
            }
            Read::Done => {
                self.read = None;
                Ok(())
            }
            Read::Refused { code, message } => {
                self.read = None;
                self.refuse(ws, &target, kind, code, &message).await
            }
            Read::Published(m) => {
                self.read = None;
                Metrics::inc(&self.state.metrics.client_publishes);
                self.send_text(ws, protocol::encode_published(&m)).await
            }
        }
    }

    /// A topic job was refused: an error frame, and a subscription that
    /// could not start is undone.
    async fn refuse(
        &mut self,
        ws: &mut Ws,
        target: &Target,
        kind: JobKind,
        code: &str,
        message: &str,
    ) -> Result<(), End> {
        let Target::Topic(topic) = target else {
            return Ok(());
        };
        let op = if kind == JobKind::Publish {
            "publish"
        } else {
            "subscribe"
        };
        if kind == JobKind::Start && self.topics.remove(topic).is_some() {
            self.forget(topic);
        }
        Metrics::inc(&self.state.metrics.topic_refusals);
        self.send_text(
            ws,
            protocol::encode_error(op, topic.as_str(), code, message),
        )
        .await
    }

    /// Writes the held frames in one burst with one flush: drops seqs the
    /// client has, and stops at a gap, starting a read of the gap.
    async fn write_held(&mut self, ws: &mut Ws) -> Result<(), End> {
        if self.held.is_empty() {
            return Ok(());
        }
        let mut burst = Burst::new(ws, self.state.config.write_timeout);
        /// What to do with the frame in front.
        enum Next {
            Drop,
            Gap(Seq),
            Write,
        }
        while let Some(out) = self.held.front() {
            let (seq, topic) = (out.seq, out.topic.clone());
            let next = match self.stream_of(&topic) {
                // Not (or no longer) subscribed.
                None => Next::Drop,
                // Cannot happen: a stream starts before its frames are
                // written (its start job runs first). Dropped, not held
                // forever, if it ever did.
                Some(stream) if !stream.started => Next::Drop,
                // A frame outside the seq (a presence event, a raw post).
                Some(_) if seq == 0 => Next::Write,
                Some(stream) if seq <= stream.last => Next::Drop,
                Some(stream) if seq > stream.last + 1 => Next::Gap(stream.last),
                Some(stream) => {
                    stream.last = seq;
                    Next::Write
                }
            };
            match next {
                Next::Drop => {
                    self.held.pop_front();
                }
                Next::Gap(last) => {
                    // An earlier seq went astray or is still in flight: read
                    // the gap; the held frames go out after it.
                    let target = topic.map_or(Target::User, Target::Topic);
                    let gap = Start::Gap {
                        last,
                        upto: seq - 1,
                    };
                    let read = StoreRead::new(&self.state, &self.conn_id, &self.conn, target, gap);
                    self.read = Some((read, JobKind::CatchUp));
                    break;
                }
                Next::Write => {
                    let Some(out) = self.held.pop_front() else {
                        break;
                    };
                    burst.feed(out.frame).await?;
                }
            }
        }
        burst.flush(&self.state.metrics).await?;
        if self.held.is_empty() && self.held.capacity() > BURST {
            self.held = VecDeque::new();
        }
        Ok(())
    }

    /// Sends one text frame now.
    async fn send_text(&mut self, ws: &mut Ws, text: String) -> Result<(), End> {
        timed(
            self.state.config.write_timeout,
            ws.send(Message::Text(text.into())),
        )
        .await
    }

    /// A frame (or the end) from the client.
    ///
    /// The rare answers (a refusal, an unsubscribe) are boxed: their
    /// futures are larger than the rest of this one, and this one's largest
    /// state sets the size of every connection task for its whole life
    /// (acks, the frequent case, do not await at all).
    async fn on_incoming(
        &mut self,
        ws: &mut Ws,
        incoming: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        let metrics = &self.state.metrics;
        match incoming {
            None => Err(End::Lost),
            Some(Err(tungstenite::Error::Capacity(_))) => {
                Metrics::inc(&metrics.errors);
                Err(End::Close(protocol::CLOSE_TOO_BIG, "frame too big"))
            }
            Some(Err(_)) => Err(End::Lost),
            Some(Ok(Message::Text(text))) => match ClientFrame::parse(&text) {
                Ok(ClientFrame::Ack { seq }) => {
                    Metrics::inc(&metrics.acks);
                    // Only what this connection was sent counts: the ack can
                    // never pass what is stored.
                    if self.user.started {
                        self.state
                            .acks
                            .record(&self.conn.user_id, seq.min(self.user.last));
                    }
                    Ok(())
                }
                Ok(ClientFrame::Subscribe {
                    topic,
                    after,
                    token,
                }) => match self.subscribe(&topic, after, token) {
                    Ok(()) => Ok(()),
                    Err((code, message)) => {
                        Box::pin(self.refuse_now(ws, "subscribe", &topic, code, &message)).await
                    }
                },
                Ok(ClientFrame::Unsubscribe { topic }) => {
                    Box::pin(self.unsubscribe(ws, &topic)).await
                }
                Ok(ClientFrame::Publish {
                    topic,
                    data,
                    idempotency_key,
                }) => match self.publish(&topic, data, idempotency_key) {
                    Ok(()) => Ok(()),
                    Err((code, message)) => {
                        Box::pin(self.refuse_now(ws, "publish", &topic, code, &message)).await
                    }
                },
                Err(_) => {
                    Metrics::inc(&metrics.errors);
                    Err(End::Close(protocol::CLOSE_BAD_FRAME, "unknown frame"))
                }
            },
            Some(Ok(Message::Binary(_))) => {
                Metrics::inc(&metrics.errors);
                Err(End::Close(
                    protocol::CLOSE_BAD_FRAME,
                    "binary frames are not accepted",
                ))
            }
            Some(Ok(Message::Close(_))) => Err(End::Lost),
            // Pings are answered by tungstenite; pongs and raw frames carry nothing.
            Some(Ok(_)) => Ok(()),
        }
    }

    /// An error frame for a request refused before any store work.
    async fn refuse_now(
        &mut self,
        ws: &mut Ws,
        op: &str,
        topic: &str,
        code: &str,
        message: &str,
    ) -> Result<(), End> {
        Metrics::inc(&self.state.metrics.topic_refusals);
        // Only the first 200 bytes of the topic as sent are echoed.
        let shown: String = topic.chars().take(200).collect();
        self.send_text(ws, protocol::encode_error(op, &shown, code, message))
            .await
    }

    /// A client subscription: checked here, started by a store job.
    fn subscribe(
        &mut self,
        raw: &str,
        after: Option<Seq>,
        token: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let topic = TopicName::new(raw).map_err(|e| ("bad_topic", e.to_string()))?;
        if self.state.config.namespaces.options(&topic).is_none() {
            return Err((
                "unknown_namespace",
                format!("the namespace {:?} is not configured", topic.namespace()),
            ));
        }
        if self.topics.contains_key(&topic) {
            return Err((
                "already_subscribed",
                "this connection is subscribed to the topic already".into(),
            ));
        }
        let max = self.state.config.max_subscriptions;
        if self.topics.len() >= max {
            return Err((
                "too_many_subscriptions",
                format!("a connection may hold at most {max} subscriptions"),
            ));
        }
        let granted = self.patterns.iter().any(|p| p.matches(&topic));
        let token = match (granted, token) {
            (true, _) => None,
            (false, Some(token)) => Some(token),
            (false, None) => {
                return Err((
                    "forbidden",
                    "the connection token does not allow this topic; send a subscribe token".into(),
                ));
            }
        };
        self.topics.insert(topic.clone(), Stream::default());
        self.jobs.push_back((
            Target::Topic(topic),
            Start::New {
                after,
                token,
                join: true,
            },
            JobKind::Start,
        ));
        Ok(())
    }

    /// A client unsubscription: answered at once.
    async fn unsubscribe(&mut self, ws: &mut Ws, raw: &str) -> Result<(), End> {
        let topic = match TopicName::new(raw) {
            Ok(topic) => topic,
            Err(e) => {
                return self
                    .refuse_now(ws, "unsubscribe", raw, "bad_topic", &e.to_string())
                    .await;
            }
        };
        if self.topics.remove(&topic).is_none() {
            return self
                .refuse_now(
                    ws,
                    "unsubscribe",
                    raw,
                    "not_subscribed",
                    "this connection is not subscribed to the topic",
                )
                .await;
        }
        self.forget(&topic);
        self.send_text(ws, protocol::encode_unsubscribed(&topic))
            .await
    }

    /// A client publish: checked here, stored and fanned out by a store job.
    fn publish(
        &mut self,
        raw: &str,
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let topic = TopicName::new(raw).map_err(|e| ("bad_topic", e.to_string()))?;
        let Some(options) = self.state.config.namespaces.options(&topic) else {
            return Err((
                "unknown_namespace",
                format!("the namespace {:?} is not configured", topic.namespace()),
            ));
        };
        let subscribed = self.topics.get(&topic).is_some_and(|s| s.started);
        if options.client_publish != ClientPublish::Subscribers || !subscribed {
            return Err((
                "forbidden",
                "clients may publish only to topics they are subscribed to, in namespaces that allow it".into(),
            ));
        }
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
        {
            return Err((
                "bad_request",
                format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
            ));
        }
        self.jobs.push_back((
            Target::Topic(topic),
            Start::Publish {
                data,
                idempotency_key,
            },
            JobKind::Publish,
        ));
        Ok(())
    }

    /// Drops everything of `topic` in this session (its stream is gone
    /// already): its job in flight and waiting, its held frames, its place
    /// in the topic index.
    fn forget(&mut self, topic: &TopicName) {
        let target = Target::Topic(topic.clone());
        if self.read.as_ref().is_some_and(|(r, _)| r.target == target) {
            self.read = None;
        }
        self.jobs.retain(|(t, _, _)| *t != target);
        self.held.retain(|o| o.topic.as_ref() != Some(topic));
        self.leave(topic);
    }

    /// Out of the topic index (if it joined), presence told, membership
    /// released when it was the node's last subscriber.
    fn leave(&self, topic: &TopicName) {
        self.state
            .leave_topic(topic, &self.conn_id, &self.conn.user_id);
    }
}
