//! The application's side of a client: [`Client::connect`] starts the task,
//! [`ClientHandle`] is its event stream and its controls.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use edgepush_core::{Seq, TopicName};
use futures_util::Stream;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::event::Event;
use crate::node::Node;
use crate::shared::{Command, Shared, Stats};
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
        let shared = Arc::new(Shared::with_book(TopicBook::new(
            &config.topics,
            &config.resume,
        )));
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
