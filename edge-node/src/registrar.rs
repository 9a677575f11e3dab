//! The registrar: one task that writes this node's topic memberships to the
//! route store (topic -> nodes with subscribers), so that dispatch sends
//! the node one item per topic message.
//!
//! Every change goes through it, one batch at a time, in order:
//!
//! - **ensure** (a subscriber joined; the caller waits): topics whose entry
//!   is not registered are added in one call; the caller hears back when
//!   the membership is written, before it reads where its stream starts,
//!   so nothing dispatched after that read misses it.
//! - **release** (a topic's last local subscriber left): if the topic still
//!   has none when the request is handled, its entry is dropped and the
//!   membership removed. A subscriber joining meanwhile queues an ensure
//!   behind it, so a removal never lands after a newer add.
//! - **refresh** (the heartbeat's rotation): registered topics are written
//!   again within a third of the route TTL.
//! - **re-register all** (the route store lost the node's entries): every
//!   topic with subscribers is written again.
//!
//! Requests that arrive together are handled together: a reconnect storm of
//! subscribers to one topic costs one write. A failed removal is kept and
//! tried again with the next batch.

use std::collections::HashSet;

use edgepush_core::{NodeId, RouteError, TopicName, TopicRoutes};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::topics::TopicIndex;

/// What the registrar's task works with, borrowed from the node's state
/// (which holds the [`Registrar`], so this module sits below it).
pub(crate) struct RegistrarParts<'a> {
    /// The requests' receiving end.
    pub(crate) registrar: &'a Registrar,
    /// Which topics have local subscribers, and which are registered.
    pub(crate) topics: &'a TopicIndex,
    /// The live connections (a topic's subscribers are among them).
    pub(crate) hub: &'a Hub,
    /// This node.
    pub(crate) node: &'a NodeId,
    /// Where memberships are written.
    pub(crate) routes: &'a dyn TopicRoutes,
    /// Counters for `/metrics`.
    pub(crate) metrics: &'a Metrics,
}

/// A request to the registrar.
enum Request {
    Ensure(Vec<TopicName>, oneshot::Sender<Result<(), RouteError>>),
    Release(TopicName),
    Refresh(Vec<TopicName>),
    ReregisterAll(oneshot::Sender<Result<(), RouteError>>),
}

/// The handle the node's parts send requests through.
pub(crate) struct Registrar {
    tx: mpsc::UnboundedSender<Request>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
}

impl Default for Registrar {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Registrar {
    /// Waits until each of `topics` is registered (at once when all are).
    pub(crate) async fn ensure(
        &self,
        index: &TopicIndex,
        topics: Vec<TopicName>,
    ) -> Result<(), RouteError> {
        let missing: Vec<TopicName> = topics
            .into_iter()
            .filter(|t| !index.is_registered(t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Ensure(missing, reply))?;
        answer
            .await
            .unwrap_or_else(|_| Err(RouteError::Unavailable("the registrar stopped".into())))
    }

    /// `topic` lost its last local subscriber (maybe: checked when handled).
    pub(crate) fn release(&self, topic: TopicName) {
        let _ = self.send(Request::Release(topic));
    }

    /// Writes `topics` again if they are still registered.
    pub(crate) fn refresh(&self, topics: Vec<TopicName>) {
        if !topics.is_empty() {
            let _ = self.send(Request::Refresh(topics));
        }
    }

    /// Writes every topic with subscribers again; waits until done.
    pub(crate) async fn reregister_all(&self) -> Result<(), RouteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::ReregisterAll(reply))?;
        answer
            .await
            .unwrap_or_else(|_| Err(RouteError::Unavailable("the registrar stopped".into())))
    }

    fn send(&self, request: Request) -> Result<(), RouteError> {
        self.tx
            .send(request)
            .map_err(|_| RouteError::Unavailable("the registrar stopped".into()))
    }
}

/// Most requests handled in one batch.
const BATCH: usize = 4096;

/// The registrar's task: handles requests until `stop`.
pub(crate) async fn run(state: RegistrarParts<'_>, stop: CancellationToken) {
    let Some(mut rx) = state
        .registrar
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let mut failed_removals: HashSet<TopicName> = HashSet::new();
    let mut batch = Vec::with_capacity(64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
            }
        }
        handle(&state, std::mem::take(&mut batch), &mut failed_removals).await;
    }
}

/// Handles one batch of requests; see the module docs.
async fn handle(
    state: &RegistrarParts<'_>,
    batch: Vec<Request>,
    failed_removals: &mut HashSet<TopicName>,
) {
    let mut add: Vec<TopicName> = Vec::new();
    let mut added: HashSet<TopicName> = HashSet::new();
    let mut waiters = Vec::new();
    let mut reregister = Vec::new();
    let mut remove: Vec<TopicName> = failed_removals.drain().collect();
    let mut push_add = |topic: TopicName, add: &mut Vec<TopicName>| {
        if added.insert(topic.clone()) {
            add.push(topic);
        }
    };
    for request in batch {
        match request {
            Request::Ensure(topics, reply) => {
                for topic in topics {
                    if !state.topics.is_registered(&topic) {
                        push_add(topic, &mut add);
                    }
                }
                waiters.push(reply);
            }
            Request::Release(topic) => {
                if state.topics.drop_if_empty(&topic, state.hub) {
                    remove.push(topic);
                }
            }
            Request::Refresh(topics) => {
                for topic in topics {
                    if state.topics.is_registered(&topic) {
                        push_add(topic, &mut add);
                    }
                }
            }
            Request::ReregisterAll(reply) => {
                for topic in state.topics.all_topics(state.hub, true) {
                    push_add(topic, &mut add);
                }
                reregister.push(reply);
            }
        }
    }
    // A topic both added and removed in one batch: its entry was dropped
    // (no subscriber) before an ensure of it came, so the add wins.
    remove.retain(|t| !added.contains(t));
    let node = state.node;
    let routes = state.routes;
    let added_result = if add.is_empty() {
        Ok(())
    } else {
        routes.add_topics(node, &add).await
    };
    match &added_result {
        Ok(()) => {
            for topic in &add {
                // A topic whose last subscriber left while its ensure was
                // in this batch has no entry any more: take it out again.
                if !state.topics.set_registered(topic, true) {
                    remove.push(topic.clone());
                }
            }
            state
                .metrics
                .topic_registrations
                .fetch_add(add.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => {
            Metrics::inc(&state.metrics.errors);
            tracing::warn!(topics = add.len(), error = %e, "registering topic memberships failed");
        }
    }
    if !remove.is_empty()
        && let Err(e) = routes.remove_topics(node, &remove).await
    {
        Metrics::inc(&state.metrics.errors);
        tracing::warn!(topics = remove.len(), error = %e, "removing topic memberships failed; retrying with the next batch");
        failed_removals.extend(remove);
    }
    let answer = |r: &Result<(), RouteError>| match r {
        Ok(()) => Ok(()),
        Err(RouteError::Unavailable(m)) => Err(RouteError::Unavailable(m.clone())),
        Err(RouteError::Backend(m)) => Err(RouteError::Backend(m.clone())),
    };
    for reply in waiters.into_iter().chain(reregister) {
        let _ = reply.send(answer(&added_result));
    }
}
