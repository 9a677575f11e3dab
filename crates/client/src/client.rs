//! The application's side of a client: [`Client::connect`] starts the task,
//! [`ClientHandle`] is its event stream and its controls.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use edgepush_core::{Seq, TopicName};
use futures_util::Stream;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::event::Event;
use crate::node::Node;
use crate::task::Runner;
use crate::topics::{TopicBook, TopicSubscription};

/// Entry point: `Client::connect(config)`.
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Validates `config` and starts the client's task on the current tokio
    /// runtime. The task connects, reconnects and yields [`Event`]s through
    /// the returned handle until [`ClientHandle::close`] is called, the
    /// handle is dropped, or the token is refused for good.
    pub fn connect(config: ClientConfig) -> Result<ClientHandle, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::NoNodes);
        }
        let nodes = config
            .nodes
            .iter()
            .map(|url| Node::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        for sub in &config.topics {
            TopicName::new(&sub.topic).map_err(|e| ClientError::BadTopic {
                topic: sub.topic.clone(),
                reason: e.to_string(),
            })?;
        }
        let (tx, rx) = mpsc::channel(config.event_buffer.max(1));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            book: Mutex::new(TopicBook::new(&config.topics, &config.resume)),
            ..Shared::default()
        });
        // A random first node spreads a fleet of clients over the nodes.
        let start = match config.first_node {
            Some(index) => index % nodes.len(),
            None => rand::random_range(0..nodes.len()),
        };
        let runner = Runner::new(&config, nodes, start, Arc::clone(&shared), tx, command_rx);
        runtime.spawn(
            runner
                .run()
                .instrument(tracing::debug_span!("edgepush_client")),
        );
        Ok(ClientHandle {
            rx,
            control: ClientControl { shared, commands },
        })
    }
}

/// Counters of a client's life, read with [`ClientHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// New messages passed to the application.
    pub messages: u64,
    /// Messages dropped because their seq was not above the last one seen
    /// (a replay overlapping live delivery, or at-least-once redelivery).
    pub duplicates_dropped: u64,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    /// Messages that skipped seqs (which the server promises never happens);
    /// each one caused a reconnect to get the missing ones replayed.
    pub gaps: u64,
    /// Frames that broke the protocol; each one caused a reconnect.
    pub malformed: u64,
    /// Attempts that did not reach the node's `hello` (refused, unreachable,
    /// timed out, HTTP error).
    pub connect_failures: u64,
    /// Ack frames sent.
    pub acks_sent: u64,
    /// New topic messages passed to the application.
    pub topic_messages: u64,
    /// Topic messages dropped because their seq was not above the topic's
    /// last one seen.
    pub topic_duplicates_dropped: u64,
}

/// The atomics behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) acks_sent: AtomicU64,
    pub(crate) topic_messages: AtomicU64,
    pub(crate) topic_duplicates_dropped: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            messages: get(&self.messages),
            duplicates_dropped: get(&self.duplicates_dropped),
            reconnects: get(&self.reconnects),
            gaps: get(&self.gaps),
            malformed: get(&self.malformed),
            connect_failures: get(&self.connect_failures),
            acks_sent: get(&self.acks_sent),
            topic_messages: get(&self.topic_messages),
            topic_duplicates_dropped: get(&self.topic_duplicates_dropped),
        }
    }
}

/// State shared by the task and the handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    /// The highest seq the task has received (what it resumes after).
    last_seq: Mutex<Option<Seq>>,
    /// The highest seq the application has taken from the stream (what
    /// may be acked), and how many messages it has taken in all.
    taken: Mutex<(Option<Seq>, u64)>,
    /// Wakes the task when the application takes a message, so it can ack.
    pub(crate) taken_notify: Notify,
    /// Stops the task.
    pub(crate) cancel: CancellationToken,
    /// Every topic of the client and its last seq; the task keeps it.
    pub(crate) book: Mutex<TopicBook>,
}

impl Shared {
    pub(crate) fn set_last_seq(&self, seq: Seq) {
        *self.last_seq.lock().unwrap_or_else(PoisonError::into_inner) = Some(seq);
    }

    pub(crate) fn last_seq(&self) -> Option<Seq> {
        *self.last_seq.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The topic book, locked.
    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, TopicBook> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The highest seq taken by the application, and the count taken.
    pub(crate) fn taken(&self) -> (Option<Seq>, u64) {
        *self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark_taken(&self, seq: Seq) {
        {
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            taken.0 = Some(taken.0.map_or(seq, |t| t.max(seq)));
            taken.1 = taken.1.saturating_add(1);
        }
        self.taken_notify.notify_one();
    }
}

/// A running client: a [`Stream`] of [`Event`]s plus its controls.
///
/// Dropping the handle stops the client as [`close`](Self::close) does.
#[derive(Debug)]
pub struct ClientHandle {
    rx: mpsc::Receiver<Event>,
    control: ClientControl,
}

impl ClientHandle {
    /// The next event; `None` once the client has stopped and every event
    /// before that was read. The same as `StreamExt::next`.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.control.stats()
    }

    /// The highest seq received so far, or the configured `after` before
    /// the first message. Persist the seq of the last message you handled
    /// instead if you resume from your own storage.
    pub fn last_seq(&self) -> Option<Seq> {
        self.control.last_seq()
    }

    /// Stops the client: it acks what the application has taken, closes
    /// the connection with 1000, and the stream ends once drained.
    pub fn close(&self) {
        self.control.close();
    }

    /// A cloneable control (stats, last seq, close) for another task.
    pub fn control(&self) -> ClientControl {
        self.control.clone()
    }

    /// Subscribes to `sub.topic` (now if connected, else on the next
    /// connection), and again on every reconnect after the last seq seen.
    pub fn subscribe(&self, sub: TopicSubscription) -> Result<(), ClientError> {
        self.control.subscribe(sub)
    }

    /// Unsubscribes from `topic`; its position is forgotten.
    pub fn unsubscribe(&self, topic: &str) -> Result<(), ClientError> {
        self.control.unsubscribe(topic)
    }

    /// Publishes `data` (JSON text) to `topic` from this client, where the
    /// topic's namespace allows it; the answer comes as
    /// [`TopicEvent::Published`](crate::TopicEvent::Published) or
    /// [`TopicEvent::Refused`](crate::TopicEvent::Refused).
    pub fn publish(
        &self,
        topic: &str,
        data: &str,
        idempotency_key: Option<String>,
    ) -> Result<(), ClientError> {
        self.control.publish(topic, data, idempotency_key)
    }

    /// The last seq received of `topic`.
    pub fn topic_position(&self, topic: &str) -> Option<Seq> {
        self.control.topic_position(topic)
    }
}

impl Stream for ClientHandle {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Event::Message(msg))) = &polled {
            // Taking a message is what makes it ackable.
            self.control.shared.mark_taken(msg.seq);
        }
        polled
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.control.shared.cancel.cancel();
    }
}

/// What the handle asks of the client's task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Subscribe to a topic.
    Subscribe(TopicName, Option<Seq>, Option<String>),
    /// Unsubscribe from a topic.
    Unsubscribe(TopicName),
    /// Publish to a topic.
    Publish(TopicName, Box<RawValue>, Option<String>),
}

/// Stats, last seq, topics and close of a client, for tasks other than the
/// one reading its events.
#[derive(Debug, Clone)]
pub struct ClientControl {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl ClientControl {
    /// See [`ClientHandle::stats`].
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// See [`ClientHandle::last_seq`].
    pub fn last_seq(&self) -> Option<Seq> {
        self.shared.last_seq()
    }

    /// See [`ClientHandle::close`].
    pub fn close(&self) {
        self.shared.cancel.cancel();
    }

    /// See [`ClientHandle::subscribe`].
    pub fn subscribe(&self, sub: TopicSubscription) -> Result<(), ClientError> {
        let topic = topic_of(&sub.topic)?;
        self.send(Command::Subscribe(topic, sub.after, sub.token))
    }

    /// See [`ClientHandle::unsubscribe`].
    pub fn unsubscribe(&self, topic: &str) -> Result<(), ClientError> {
        self.send(Command::Unsubscribe(topic_of(topic)?))
    }

    /// See [`ClientHandle::publish`].
    pub fn publish(
        &self,
        topic: &str,
        data: &str,
        idempotency_key: Option<String>,
    ) -> Result<(), ClientError> {
        let data = RawValue::from_string(data.to_owned()).map_err(|e| ClientError::BadTopic {
            topic: topic.to_owned(),
            reason: format!("the data is not JSON: {e}"),
        })?;
        self.send(Command::Publish(topic_of(topic)?, data, idempotency_key))
    }

    /// See [`ClientHandle::topic_position`].
    pub fn topic_position(&self, topic: &str) -> Option<Seq> {
        let topic = TopicName::parse_internal(topic).ok()?;
        self.shared.book().position(&topic)
    }

    /// Every topic of the client with its last seq received.
    pub fn topic_positions(&self) -> Vec<(TopicName, Option<Seq>)> {
        self.shared.book().positions()
    }

    fn send(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .map_err(|_| ClientError::Stopped)
    }
}

/// A topic name a client may use.
fn topic_of(topic: &str) -> Result<TopicName, ClientError> {
    TopicName::new(topic).map_err(|e| ClientError::BadTopic {
        topic: topic.to_owned(),
        reason: e.to_string(),
    })
}
