//! The client's task: one loop of attempts, each a connection that reads
//! frames until it ends, with backoff in between.
//!
//! Where the next attempt goes, by how a connection ended:
//!
//! | ending | next node? | note |
//! |---|---|---|
//! | TCP/handshake failure, timeout, HTTP 503 or other status | yes | |
//! | socket lost, idle timeout, malformed frame | yes | |
//! | close 1012 (draining), 1001 (going away) | yes | |
//! | close 1011, 4008, 1009, 1000, other | no | |
//! | gap in seqs | no | the node replays from `after` |
//! | HTTP 401 or close 4001 | no | fatal with a static token |
//! | managed edge: a `close` frame | as its code | then the socket closes |
//! | managed edge: a `resume` unanswered | yes | [`ManagedEdge::answer_timeout`] |
//!
//! On the managed edge a gap does not end the connection: the early seqs
//! are held and the gap is asked for on the same connection
//! ([`crate::managed`]).
//!
//! The backoff counter resets after a connection that delivered a message
//! or stayed up for [`Backoff::reset_after`].

use std::sync::Arc;
use std::time::Duration;

use edgepush_core::managed::{ManagedServerFrame, PING_FRAME, encode_resume};
use edgepush_core::protocol::{
    CLOSE_BAD_FRAME, CLOSE_BAD_TOKEN, CLOSE_DRAINING, CLOSE_GOING_AWAY, CLOSE_NO_STATUS,
    CLOSE_NORMAL, ClientFrame, MsgFrame, ServerFrame,
};
use edgepush_core::{ConnId, Seq, TopicName};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::{AckPolicy, Backoff, ClientConfig, TokenSource};
use crate::error::ClientError;
use crate::event::{DisconnectReason, Event, TopicEvent};
use crate::managed::{Due, ManagedEdge, ManagedState, Taken};
use crate::node::Node;
use crate::shared::{Command, Counters, Shared};
use crate::topics::TopicSeq;

type Ws = WebSocketStream<TcpStream>;

/// How long a goodbye (last ack, close frame) may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait before a subscription refused as `unavailable` is sent
/// again (the wait is random up to it).
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(2);
/// Most bytes of an HTTP error body quoted in an error.
const MAX_DETAIL: usize = 300;

/// How one attempt ended, and so what the loop does next.
enum Outcome {
    /// Wait, then try again.
    Retry {
        /// Go to the next node.
        move_on: bool,
        /// The connection worked: reset the backoff.
        healthy: bool,
    },
    /// The token was refused and cannot be renewed.
    Fatal(ClientError),
    /// `close()` was called or the handle dropped.
    Stop,
}

/// Why an attempt did not reach the `hello` frame.
enum OpenError {
    /// HTTP 401 at the upgrade.
    Unauthorized(String),
    /// Any other HTTP status at the upgrade (503 draining or store down, ...).
    Status(u16, String),
    /// TCP or WebSocket trouble.
    Transport(String),
    /// The node closed before saying hello.
    Closed(u16, String),
    /// The first frame was not a `hello`.
    Malformed(String),
}

/// How a connection that was up ended.
enum Ended {
    /// Reconnect.
    Reason {
        reason: DisconnectReason,
        move_on: bool,
    },
    /// Stop the client.
    Stopped,
}

/// What to do after a frame on the managed edge.
enum ManagedFlow {
    /// Not a frame of the managed bookkeeping: the common rules apply.
    Pass,
    /// Handled; read on.
    Continue,
    /// The connection ends.
    End(Ended),
}

/// What to do after a `msg` frame.
enum Flow {
    Continue,
    Gap { last: Seq, got: Seq },
    Stop,
}

/// The client's task state.
pub(crate) struct Runner {
    nodes: Vec<Node>,
    token: TokenSource,
    ack: AckPolicy,
    backoff: Backoff,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
    /// The highest seq received: every connection resumes after it.
    last: Option<Seq>,
    /// The highest seq acked, on any connection.
    acked: Option<Seq>,
    /// How many messages the application had taken at the last ack.
    taken_at_ack: u64,
    /// The node of the next attempt.
    next_node: usize,
    /// Subscribe, unsubscribe and publish asked by the handle.
    commands: mpsc::UnboundedReceiver<Command>,
    /// Subscriptions refused as `unavailable`, to send again at a time.
    resubscribe: Vec<(TopicName, Instant)>,
    /// The managed edge's settings, when the endpoints are API Gateway.
    managed: Option<ManagedEdge>,
}

impl Runner {
    pub(crate) fn new(
        config: &ClientConfig,
        nodes: Vec<Node>,
        start: usize,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Event>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        if let Some(after) = config.after {
            shared.set_last_seq(after);
        }
        Self {
            nodes,
            token: config.token.clone(),
            ack: config.ack_every,
            backoff: config.backoff,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            shared,
            tx,
            last: config.after,
            acked: None,
            taken_at_ack: 0,
            next_node: start,
            commands,
            resubscribe: Vec::new(),
            managed: config.managed,
        }
    }

    /// Connects and reconnects until stopped.
    pub(crate) async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut first = true;
        loop {
            if self.shared.cancel.is_cancelled() {
                break;
            }
            if !first {
                Counters::inc(&self.shared.counters.reconnects);
            }
            first = false;
            let index = self.next_node % self.nodes.len().max(1);
            match self.attempt(index).await {
                Outcome::Stop => break,
                Outcome::Fatal(err) => {
                    tracing::warn!(error = %err, "client stopped");
                    self.emit(Event::Fatal(err)).await;
                    break;
                }
                Outcome::Retry { move_on, healthy } => {
                    if move_on {
                        self.next_node = (index + 1) % self.nodes.len().max(1);
                    }
                    if healthy {
                        failures = 0;
                    }
                    let delay = self.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::debug!(?delay, failures, "reconnecting");
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = self.shared.cancel.cancelled() => break,
                    }
                }
            }
        }
        tracing::debug!("client task ended");
    }

    /// One connection, from the TCP connect to its end.
    async fn attempt(&mut self, index: usize) -> Outcome {
        let Some(node) = self.nodes.get(index).cloned() else {
            return Outcome::Stop;
        };
        let token = self.token.token();
        let resume = self.shared.book().resume();
        let request = match self.managed {
            Some(_) => node.managed_request(self.last, &token),
            None => node.request_with(self.last, resume.as_deref(), &token),
        };
        let request = match request {
            Ok(request) => request,
            Err(detail) => return self.refused(&node, detail),
        };
        tracing::debug!(node = %node.url, after = ?self.last, "connecting");
        // The managed edge waits for the client to speak first.
        let first = self.managed.map(|_| encode_resume(self.last));
        let opening = timeout(self.connect_timeout, open(&node, request, first));
        let opened = tokio::select! {
            biased;
            _ = self.shared.cancel.cancelled() => return Outcome::Stop,
            opened = opening => opened,
        };
        let failed = |counters: &Counters| Counters::inc(&counters.connect_failures);
        let (mut ws, conn_id) = match opened {
            Ok(Ok(up)) => up,
            Err(_) => {
                failed(&self.shared.counters);
                tracing::debug!(node = %node.url, "connect timed out");
                return Outcome::Retry {
                    move_on: true,
                    healthy: false,
                };
            }
            Ok(Err(err)) => {
                failed(&self.shared.counters);
                return match err {
                    OpenError::Unauthorized(detail) => self.refused(&node, detail),
                    OpenError::Closed(code, reason) => {
                        tracing::debug!(node = %node.url, code, %reason, "closed before hello");
                        self.after_close(&node, code, reason)
                    }
                    OpenError::Status(status, detail) => {
                        tracing::debug!(node = %node.url, status, %detail, "upgrade refused");
                        Outcome::Retry {
                            move_on: true,
                            healthy: false,
                        }
                    }
                    OpenError::Transport(detail) => {
                        tracing::debug!(node = %node.url, %detail, "connect failed");
                        Outcome::Retry {
                            move_on: true,
                            healthy: false,
                        }
                    }
                    OpenError::Malformed(detail) => {
                        Counters::inc(&self.shared.counters.malformed);
                        tracing::warn!(node = %node.url, %detail, "malformed frame before hello");
                        Outcome::Retry {
                            move_on: true,
                            healthy: false,
                        }
                    }
                };
            }
        };

        let up_since = Instant::now();
        tracing::debug!(node = %node.url, conn = %conn_id, "connected");
        let connected = Event::Connected {
            conn_id,
            node: node.url.clone(),
        };
        if !self.emit(connected).await {
            goodbye(&mut ws, None).await;
            return Outcome::Stop;
        }
        let mut delivered = false;
        let ended = self.session(&mut ws, &mut delivered).await;
        let (reason, move_on) = match ended {
            Ended::Stopped => return Outcome::Stop,
            Ended::Reason { reason, move_on } => (reason, move_on),
        };
        tracing::debug!(node = %node.url, %reason, delivered, "disconnected");
        let healthy = delivered || up_since.elapsed() >= self.backoff.reset_after;
        let closed = match &reason {
            DisconnectReason::Closed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        };
        if !self.emit(Event::Disconnected { reason }).await {
            return Outcome::Stop;
        }
        match closed {
            Some((code, reason)) if code == CLOSE_BAD_TOKEN => {
                self.refused(&node, format!("closed with {code}: {reason}"))
            }
            _ => Outcome::Retry { move_on, healthy },
        }
    }

    /// A node refused the token.
    fn refused(&self, node: &Node, detail: String) -> Outcome {
        if self.token.is_renewable() {
            tracing::warn!(node = %node.url, %detail, "token refused; retrying with a fresh one");
            Outcome::Retry {
                move_on: false,
                healthy: false,
            }
        } else {
            Outcome::Fatal(ClientError::Unauthorized {
                node: node.url.clone(),
                detail,
            })
        }
    }

    /// A close before `hello`: same rules as after it.
    fn after_close(&self, node: &Node, code: u16, reason: String) -> Outcome {
        if code == CLOSE_BAD_TOKEN {
            return self.refused(node, format!("closed with {code}: {reason}"));
        }
        Outcome::Retry {
            move_on: moves_on(code),
            healthy: false,
        }
    }

    /// Reads frames, drops duplicates, detects gaps and acks, until the
    /// connection ends or the client stops.
    async fn session(&mut self, ws: &mut Ws, delivered: &mut bool) -> Ended {
        let shared = Arc::clone(&self.shared);
        let idle_timeout = self.idle_timeout;
        // The managed edge never pings: there the idle timeout runs from
        // the client's own ping to any answer.
        let mut managed = self.managed.map(|m| ManagedState::new(m, Instant::now()));
        let is_managed = managed.is_some();
        let idle_after_frame = move || {
            if is_managed {
                None
            } else {
                idle_timeout.map(|d| Instant::now() + d)
            }
        };
        let mut idle_deadline = idle_after_frame();
        let mut ack_deadline: Option<Instant> = None;
        // Messages taken while no connection was up may be due already.
        if let Err(detail) = self.maybe_ack(ws, &mut ack_deadline).await {
            return lost(detail);
        }
        // Commands made while no connection was up, then the client's own
        // subscriptions, each after its last seq.
        while let Ok(command) = self.commands.try_recv() {
            self.apply(command);
        }
        self.resubscribe.clear();
        let own = self.shared.book().own();
        for (topic, after, token) in own {
            let frame = ClientFrame::Subscribe {
                topic: topic.to_string(),
                after,
                token,
            };
            if let Err(e) = ws.send(Message::text(frame.to_text())).await {
                return lost(e.to_string());
            }
        }
        loop {
            // A deadline for disabled timers; never reached (the branch is
            // switched off), but `sleep_until` needs some instant.
            let far = Instant::now() + Duration::from_secs(3600);
            let resubscribe_at = self.next_resubscribe();
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => {
                    return self.stop(ws).await;
                }
                _ = shared.taken_notify.notified() => {
                    if let Err(detail) = self.maybe_ack(ws, &mut ack_deadline).await {
                        return lost(detail);
                    }
                }
                _ = sleep_until(ack_deadline.unwrap_or(far)), if ack_deadline.is_some() => {
                    ack_deadline = None;
                    if let Some(seq) = self.pending_ack()
                        && let Err(detail) = self.send_ack(ws, seq).await
                    {
                        return lost(detail);
                    }
                }
                _ = sleep_until(idle_deadline.unwrap_or(far)), if idle_deadline.is_some() => {
                    close_with(ws, CLOSE_GOING_AWAY, "idle").await;
                    return Ended::Reason { reason: DisconnectReason::IdleTimeout, move_on: true };
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { continue };
                    if let Some(frame) = self.apply(command)
                        && let Err(e) = ws.send(Message::text(frame.to_text())).await
                    {
                        return lost(e.to_string());
                    }
                }
                _ = sleep_until(resubscribe_at.unwrap_or(far)), if resubscribe_at.is_some() => {
                    if let Err(detail) = self.resubscribe_due(ws).await {
                        return lost(detail);
                    }
                }
                _ = sleep_until(managed.as_ref().map_or(far, ManagedState::next_deadline)), if is_managed => {
                    let Some(state) = managed.as_mut() else { continue };
                    let sent = match state.due(Instant::now(), self.last) {
                        None => Ok(()),
                        Some(Due::Resume(after)) => {
                            Counters::inc(&self.shared.counters.gaps);
                            tracing::debug!(?after, "a gap stayed open; asking for it");
                            ws.send(Message::text(encode_resume(after))).await
                        }
                        Some(Due::Ping) => {
                            if idle_deadline.is_none() {
                                idle_deadline = idle_timeout.map(|d| Instant::now() + d);
                            }
                            ws.send(Message::text(PING_FRAME)).await
                        }
                        Some(Due::Unanswered) => {
                            close_with(ws, CLOSE_GOING_AWAY, "resume unanswered").await;
                            return lost("the server did not answer a resume".to_owned());
                        }
                    };
                    if let Err(e) = sent {
                        return lost(e.to_string());
                    }
                }
                frame = ws.next() => {
                    idle_deadline = idle_after_frame();
                    if let (Some(state), Some(Ok(Message::Text(text)))) = (managed.as_mut(), &frame) {
                        match self.on_managed_text(ws, state, text.as_str(), delivered).await {
                            ManagedFlow::Pass => {}
                            ManagedFlow::Continue => continue,
                            ManagedFlow::End(ended) => return ended,
                        }
                    }
                    match frame {
                        None => return lost("connection ended without a close frame".to_owned()),
                        Some(Err(err)) => return lost(err.to_string()),
                        Some(Ok(Message::Text(text))) => match ServerFrame::parse(text.as_str()) {
                            Ok(ServerFrame::Msg(msg)) if msg.topic.is_some() => match self.on_topic_msg(msg, delivered).await {
                                Flow::Continue => {}
                                Flow::Gap { last, got } => {
                                    close_with(ws, CLOSE_NORMAL, "gap").await;
                                    return Ended::Reason {
                                        reason: DisconnectReason::Gap { last, got },
                                        move_on: false,
                                    };
                                }
                                Flow::Stop => return self.stop(ws).await,
                            },
                            Ok(ServerFrame::Msg(msg)) => match self.on_msg(msg, delivered).await {
                                Flow::Continue => {}
                                Flow::Gap { last, got } => {
                                    close_with(ws, CLOSE_NORMAL, "gap").await;
                                    return Ended::Reason {
                                        reason: DisconnectReason::Gap { last, got },
                                        move_on: false,
                                    };
                                }
                                Flow::Stop => return self.stop(ws).await,
                            },
                            Ok(ServerFrame::Hello { .. }) => {
                                return self.malformed(ws, "a second hello".to_owned()).await;
                            }
                            Ok(other) => {
                                if !self.on_topic_frame(other).await {
                                    return self.stop(ws).await;
                                }
                            }
                            Err(err) => return self.malformed(ws, err.to_string()).await,
                        },
                        Some(Ok(Message::Binary(_))) => {
                            return self.malformed(ws, "a binary frame".to_owned()).await;
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = close_parts(frame);
                            // Let tungstenite send its close reply.
                            let _ = timeout(GOODBYE_TIMEOUT, async { while ws.next().await.is_some() {} }).await;
                            return Ended::Reason {
                                reason: DisconnectReason::Closed { code, reason },
                                move_on: moves_on(code),
                            };
                        }
                        // Pings are answered by tungstenite; pongs and raw frames carry nothing.
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    }

    /// One `msg` frame: drop it, pass it on, or report a gap.
    async fn on_msg(&mut self, msg: MsgFrame, delivered: &mut bool) -> Flow {
        if let Some(last) = self.last {
            if msg.seq <= last {
                Counters::inc(&self.shared.counters.duplicates_dropped);
                tracing::trace!(seq = msg.seq, last, "duplicate dropped");
                return Flow::Continue;
            }
            if msg.seq - last > 1 {
                Counters::inc(&self.shared.counters.gaps);
                tracing::warn!(
                    seq = msg.seq,
                    last,
                    "gap in seqs; reconnecting to get a replay"
                );
                return Flow::Gap { last, got: msg.seq };
            }
        }
        self.accept(msg, delivered).await
    }

    /// A text frame on the managed edge: its own frames (`resumed`,
    /// `pong`, `close`) and the user's `msg`s, held until they follow
    /// without a gap; anything else passes to the common rules.
    async fn on_managed_text(
        &mut self,
        ws: &mut Ws,
        state: &mut ManagedState,
        text: &str,
        delivered: &mut bool,
    ) -> ManagedFlow {
        let now = Instant::now();
        let taken = match ManagedServerFrame::parse(text) {
            Some(Err(err)) => return ManagedFlow::End(self.malformed(ws, err.to_string()).await),
            Some(Ok(ManagedServerFrame::Pong)) => return ManagedFlow::Continue,
            Some(Ok(ManagedServerFrame::Close { code, reason })) => {
                // API Gateway cannot send our close codes: the server posts
                // them, then closes.
                close_with(ws, CLOSE_NORMAL, "closed by the server").await;
                return ManagedFlow::End(Ended::Reason {
                    reason: DisconnectReason::Closed { code, reason },
                    move_on: moves_on(code),
                });
            }
            Some(Ok(ManagedServerFrame::Resumed { after, more, .. })) => {
                if self.last.is_none() {
                    // The first `resumed` names where the stream starts.
                    self.last = Some(after);
                    self.shared.set_last_seq(after);
                }
                let (again, taken) = state.on_resumed(self.last, after, more, now);
                if let Some(flow) = self.take(ws, taken, delivered).await {
                    return flow;
                }
                if let Some(after) = again
                    && let Err(e) = ws.send(Message::text(encode_resume(Some(after)))).await
                {
                    return ManagedFlow::End(lost(e.to_string()));
                }
                return ManagedFlow::Continue;
            }
            None => match ServerFrame::parse(text) {
                Ok(ServerFrame::Msg(msg)) if msg.topic.is_none() => {
                    state.on_msg(self.last, msg, now)
                }
                _ => return ManagedFlow::Pass,
            },
        };
        self.take(ws, taken, delivered)
            .await
            .unwrap_or(ManagedFlow::Continue)
    }

    /// Passes on what the managed bookkeeping let through; `Some` when the
    /// client must stop.
    async fn take(
        &mut self,
        ws: &mut Ws,
        taken: Taken,
        delivered: &mut bool,
    ) -> Option<ManagedFlow> {
        for _ in 0..taken.duplicates {
            Counters::inc(&self.shared.counters.duplicates_dropped);
        }
        for msg in taken.deliver {
            if let Flow::Stop = self.accept(msg, delivered).await {
                return Some(ManagedFlow::End(self.stop(ws).await));
            }
        }
        None
    }

    /// The next message of the stream: pass it on.
    async fn accept(&mut self, msg: MsgFrame, delivered: &mut bool) -> Flow {
        self.last = Some(msg.seq);
        self.shared.set_last_seq(msg.seq);
        Counters::inc(&self.shared.counters.messages);
        *delivered = true;
        if self.emit(Event::Message(msg)).await {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    /// A topic `msg` frame: drop it, pass it on, or report a gap.
    async fn on_topic_msg(&mut self, msg: MsgFrame, delivered: &mut bool) -> Flow {
        let Some(topic) = msg.topic.clone() else {
            return Flow::Continue;
        };
        let verdict = self.shared.book().on_msg(&topic, msg.seq);
        match verdict {
            TopicSeq::Duplicate => {
                Counters::inc(&self.shared.counters.topic_duplicates_dropped);
                Flow::Continue
            }
            TopicSeq::Unknown => Flow::Continue,
            TopicSeq::Gap { last } => {
                Counters::inc(&self.shared.counters.gaps);
                tracing::warn!(topic = %topic, seq = msg.seq, last, "gap in a topic's seqs; reconnecting to get a replay");
                Flow::Gap { last, got: msg.seq }
            }
            TopicSeq::Next => {
                Counters::inc(&self.shared.counters.topic_messages);
                *delivered = true;
                if self.emit(Event::Topic(TopicEvent::Message(msg))).await {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
        }
    }

    /// Any other topic frame; false when the client must stop.
    async fn on_topic_frame(&mut self, frame: ServerFrame) -> bool {
        let event = match frame {
            ServerFrame::Subscribed { topic, seq } => {
                self.shared.book().subscribed(&topic, seq);
                TopicEvent::Subscribed { topic, seq }
            }
            ServerFrame::Unsubscribed { topic } => TopicEvent::Unsubscribed { topic },
            ServerFrame::Published { topic, seq, id } => TopicEvent::Published { topic, seq, id },
            ServerFrame::Presence {
                topic,
                joined,
                left,
            } => TopicEvent::Presence {
                topic,
                joined,
                left,
            },
            ServerFrame::Error {
                op,
                topic,
                code,
                message,
            } => {
                if matches!(op.as_str(), "subscribe" | "connect")
                    && let Ok(name) = TopicName::new(&topic)
                {
                    if code == "unavailable" {
                        // Sent again after a while (and on every reconnect).
                        let wait = RESUBSCRIBE_AFTER.mul_f64(rand::random::<f64>());
                        self.resubscribe.push((name, Instant::now() + wait));
                    } else if code != "already_subscribed" {
                        self.shared.book().remove(&name);
                    }
                }
                TopicEvent::Refused {
                    op,
                    topic,
                    code,
                    message,
                }
            }
            // Handled by the caller.
            ServerFrame::Hello { .. } | ServerFrame::Msg(_) => return true,
        };
        self.emit(Event::Topic(event)).await
    }

    /// Applies a command of the handle to the book; the frame to send now
    /// if connected.
    fn apply(&mut self, command: Command) -> Option<ClientFrame> {
        match command {
            Command::Subscribe(topic, after, token) => {
                if !self
                    .shared
                    .book()
                    .add_own(topic.clone(), after, token.clone())
                {
                    return None;
                }
                Some(ClientFrame::Subscribe {
                    topic: topic.to_string(),
                    after,
                    token,
                })
            }
            Command::Unsubscribe(topic) => {
                self.shared.book().remove(&topic);
                self.resubscribe.retain(|(t, _)| *t != topic);
                Some(ClientFrame::Unsubscribe {
                    topic: topic.to_string(),
                })
            }
            Command::Publish(topic, data, idempotency_key) => Some(ClientFrame::Publish {
                topic: topic.to_string(),
                data,
                idempotency_key,
            }),
        }
    }

    /// When the next refused-as-unavailable subscription is due again.
    fn next_resubscribe(&self) -> Option<Instant> {
        self.resubscribe.iter().map(|(_, at)| *at).min()
    }

    /// Sends the subscriptions that are due again, after their last seq.
    async fn resubscribe_due(&mut self, ws: &mut Ws) -> Result<(), String> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resubscribe)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.resubscribe = later;
        let own = self.shared.book().own();
        for (topic, _) in due {
            if let Some((_, after, token)) = own.iter().find(|(t, _, _)| *t == topic) {
                let frame = ClientFrame::Subscribe {
                    topic: topic.to_string(),
                    after: *after,
                    token: token.clone(),
                };
                ws.send(Message::text(frame.to_text()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// A deliberate end: ack what the application took, close with 1000.
    async fn stop(&mut self, ws: &mut Ws) -> Ended {
        let last_ack = self.pending_ack();
        goodbye(ws, last_ack).await;
        if let Some(seq) = last_ack {
            self.note_ack(seq);
        }
        Ended::Stopped
    }

    /// The node broke the protocol: count it, close with 1008, reconnect.
    async fn malformed(&self, ws: &mut Ws, detail: String) -> Ended {
        Counters::inc(&self.shared.counters.malformed);
        tracing::warn!(%detail, "malformed frame from node; reconnecting");
        close_with(ws, CLOSE_BAD_FRAME, "malformed frame").await;
        Ended::Reason {
            reason: DisconnectReason::Malformed { detail },
            move_on: true,
        }
    }

    /// The seq to ack if the application has taken something not yet acked.
    fn pending_ack(&self) -> Option<Seq> {
        let (taken, _) = self.shared.taken();
        let taken = taken?;
        match self.acked {
            Some(acked) if acked >= taken => None,
            _ => Some(taken),
        }
    }

    /// Acks now if the policy says so, or arms the batch deadline.
    async fn maybe_ack(
        &mut self,
        ws: &mut Ws,
        deadline: &mut Option<Instant>,
    ) -> Result<(), String> {
        let Some(seq) = self.pending_ack() else {
            *deadline = None;
            return Ok(());
        };
        match self.ack {
            AckPolicy::EachMessage => self.send_ack(ws, seq).await,
            AckPolicy::Batched {
                max_messages,
                max_delay,
            } => {
                let (_, count) = self.shared.taken();
                if count.saturating_sub(self.taken_at_ack) >= u64::from(max_messages.max(1)) {
                    *deadline = None;
                    self.send_ack(ws, seq).await
                } else {
                    if deadline.is_none() {
                        *deadline = Some(Instant::now() + max_delay);
                    }
                    Ok(())
                }
            }
        }
    }

    /// Sends `{"type":"ack","seq":seq}`.
    async fn send_ack(&mut self, ws: &mut Ws, seq: Seq) -> Result<(), String> {
        let text = ack_text(seq);
        ws.send(Message::text(text))
            .await
            .map_err(|e| e.to_string())?;
        self.note_ack(seq);
        Ok(())
    }

    fn note_ack(&mut self, seq: Seq) {
        self.acked = Some(seq);
        self.taken_at_ack = self.shared.taken().1;
        Counters::inc(&self.shared.counters.acks_sent);
        tracing::trace!(seq, "acked");
    }

    /// Hands an event to the application; false when the client must stop
    /// (closed, or nobody reads the events any more).
    async fn emit(&self, event: Event) -> bool {
        tokio::select! {
            biased;
            sent = self.tx.send(event) => sent.is_ok(),
            _ = self.shared.cancel.cancelled() => false,
        }
    }
}

/// Opens the TCP connection, upgrades it and waits for `hello`.
async fn open(
    node: &Node,
    request: Request,
    first: Option<String>,
) -> Result<(Ws, ConnId), OpenError> {
    let stream = TcpStream::connect(node.addr())
        .await
        .map_err(|e| OpenError::Transport(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(upgrade_error)?;
    if let Some(first) = first {
        ws.send(Message::text(first))
            .await
            .map_err(|e| OpenError::Transport(e.to_string()))?;
    }
    loop {
        match ws.next().await {
            None => return Err(OpenError::Transport("closed before hello".to_owned())),
            Some(Err(err)) => return Err(OpenError::Transport(err.to_string())),
            Some(Ok(Message::Text(text))) => {
                if let Some(Ok(ManagedServerFrame::Close { code, reason })) =
                    ManagedServerFrame::parse(text.as_str())
                {
                    close_with(&mut ws, CLOSE_NORMAL, "closed by the server").await;
                    return Err(OpenError::Closed(code, reason));
                }
                return match ServerFrame::parse(text.as_str()) {
                    Ok(ServerFrame::Hello { conn_id, .. }) => Ok((ws, conn_id)),
                    Ok(_) => {
                        close_with(&mut ws, CLOSE_BAD_FRAME, "no hello").await;
                        Err(OpenError::Malformed("a frame before hello".to_owned()))
                    }
                    Err(err) => {
                        close_with(&mut ws, CLOSE_BAD_FRAME, "malformed frame").await;
                        Err(OpenError::Malformed(err.to_string()))
                    }
                };
            }
            Some(Ok(Message::Binary(_))) => {
                close_with(&mut ws, CLOSE_BAD_FRAME, "malformed frame").await;
                return Err(OpenError::Malformed("a binary frame".to_owned()));
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = close_parts(frame);
                return Err(OpenError::Closed(code, reason));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Sorts a failed upgrade: 401, another status, or transport trouble.
fn upgrade_error(err: tungstenite::Error) -> OpenError {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let detail = response
                .body()
                .as_deref()
                .map(|body| {
                    let text = String::from_utf8_lossy(body);
                    text.chars().take(MAX_DETAIL).collect::<String>()
                })
                .filter(|text| !text.is_empty())
                .unwrap_or_else(|| format!("HTTP {status}"));
            if status == 401 {
                OpenError::Unauthorized(detail)
            } else {
                OpenError::Status(status, detail)
            }
        }
        other => OpenError::Transport(other.to_string()),
    }
}

/// Whether a close code sends the next attempt to another node.
fn moves_on(code: u16) -> bool {
    matches!(code, CLOSE_DRAINING | CLOSE_GOING_AWAY)
}

fn close_parts(frame: Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
        None => (CLOSE_NO_STATUS, String::new()),
    }
}

fn lost(detail: String) -> Ended {
    Ended::Reason {
        reason: DisconnectReason::Lost { detail },
        move_on: true,
    }
}

fn ack_text(seq: Seq) -> String {
    serde_json::to_string(&ClientFrame::Ack { seq })
        .unwrap_or_else(|_| format!(r#"{{"type":"ack","seq":{seq}}}"#))
}

/// Closes with `code`, best effort and bounded in time.
async fn close_with(ws: &mut Ws, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = timeout(GOODBYE_TIMEOUT, ws.close(Some(frame))).await;
}

/// A deliberate end: the last ack if any, then close 1000.
async fn goodbye(ws: &mut Ws, last_ack: Option<Seq>) {
    let _ = timeout(GOODBYE_TIMEOUT, async {
        if let Some(seq) = last_ack {
            let _ = ws.send(Message::text(ack_text(seq))).await;
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "client closed".into(),
        };
        let _ = ws.close(Some(frame)).await;
    })
    .await;
}
