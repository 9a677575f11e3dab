//! Presence, as this node writes it: connections opened and closed (who is
//! online) and subscriptions of topics whose namespace keeps presence (who
//! is subscribed), coalesced into one store write per interval, and the
//! join/leave events of namespaces that ask for them.
//!
//! Sessions and the admission note each change ([`PresenceTracker`]: a map
//! insert, no store call); the writer task ([`run`]) takes the changes every
//! [`presence_interval`] and:
//!
//! 1. reads each touched topic's counts now from the topic index, and
//!    writes the node's share, the changed members and the connections in
//!    one [`PresenceStore::write`];
//! 2. for namespaces with `join_leave`, sends one `presence` event per
//!    topic to its subscribers on every node (through the topic fan-out):
//!    `joined` the users whose subscriptions on this node went from none to
//!    some during the interval, `left` those that went from some to none.
//!
//! A user who leaves and comes back within an interval (a reload, a
//! reconnect storm) changes nothing and sends nothing: events are per node
//! and interval, never per connection. A node that crashes sends no
//! `left`: its entries drop out of presence reads once its liveness
//! expires.
//!
//! [`presence_interval`]: crate::config::NodeConfig::presence_interval
//! [`PresenceStore::write`]: edgepush_core::PresenceStore::write

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use edgepush_core::ports::{PresenceWrite, TopicPresenceWrite};
use edgepush_core::protocol::{PresenceEvent, TopicPushItem};
use edgepush_core::{ConnId, PresenceStore, TopicName, UserId};
use edgepush_fanout::TopicDispatcher;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::topics::TopicIndex;

/// What the presence writer works with, borrowed from the node's state
/// (which holds the [`PresenceTracker`], so this module sits below it).
pub(crate) struct PresenceParts<'a> {
    /// The changes waiting for the next write.
    pub(crate) tracker: &'a PresenceTracker,
    /// Which presence is kept (users, namespaces, join/leave events).
    pub(crate) config: &'a NodeConfig,
    /// The live connections (the refresh of user presence).
    pub(crate) hub: &'a Hub,
    /// The local subscribers of each topic (counts per user).
    pub(crate) topics: &'a TopicIndex,
    /// Where presence is written.
    pub(crate) store: &'a dyn PresenceStore,
    /// Sends join/leave events to the nodes with subscribers.
    pub(crate) fanout: &'a TopicDispatcher,
    /// Counters for `/metrics`.
    pub(crate) metrics: &'a Metrics,
}

/// Changes since the last write.
#[derive(Debug, Default)]
struct Pending {
    /// Connection -> (user, opened at ms; `None`: closed).
    conns: HashMap<ConnId, (UserId, Option<i64>)>,
    /// Topic -> user -> the user's subscriptions when first touched in
    /// this interval.
    topics: HashMap<TopicName, HashMap<UserId, u64>>,
}

/// The changes waiting for the next write.
#[derive(Debug, Default)]
pub(crate) struct PresenceTracker {
    pending: Mutex<Pending>,
}

impl PresenceTracker {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection of `user` opened at `at_ms`.
    pub(crate) fn opened(&self, conn: &ConnId, user: &UserId, at_ms: i64) {
        self.pending()
            .conns
            .insert(conn.clone(), (user.clone(), Some(at_ms)));
    }

    /// A connection of `user` closed.
    pub(crate) fn closed(&self, conn: &ConnId, user: &UserId) {
        self.pending()
            .conns
            .insert(conn.clone(), (user.clone(), None));
    }

    /// `user`'s subscriptions of `topic` changed; `before` is what they
    /// were just before.
    pub(crate) fn touched(&self, topic: &TopicName, user: &UserId, before: u64) {
        self.pending()
            .topics
            .entry(topic.clone())
            .or_default()
            .entry(user.clone())
            .or_insert(before);
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }

    /// Whether a change waits.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        let p = self.pending();
        p.conns.is_empty() && p.topics.is_empty()
    }
}

/// Writes what changed, and sends the events; see the module docs.
pub(crate) async fn flush(state: &PresenceParts<'_>) {
    let pending = state.tracker.take();
    if pending.conns.is_empty() && pending.topics.is_empty() {
        return;
    }
    let mut write = PresenceWrite::default();
    if state.config.user_presence {
        write.connections = pending
            .conns
            .into_iter()
            .map(|(conn, (user, at))| (user, conn, at))
            .collect();
    }
    let mut events: Vec<TopicPushItem> = Vec::new();
    for (topic, before) in pending.topics {
        let users: Vec<UserId> = before.keys().cloned().collect();
        let (totals, now) = state.topics.presence_of(&topic, &users);
        let join_leave = state
            .config
            .namespaces
            .options(&topic)
            .is_some_and(|o| o.join_leave);
        let mut event = PresenceEvent::default();
        let mut members = Vec::with_capacity(users.len());
        for (user, count) in users.into_iter().zip(now) {
            let was = before[&user];
            if join_leave {
                if was == 0 && count > 0 {
                    event.joined.push(user.clone());
                } else if was > 0 && count == 0 {
                    event.left.push(user.clone());
                }
            }
            if was != count {
                members.push((user, count));
            }
        }
        write.topics.push(TopicPresenceWrite {
            topic: topic.clone(),
            totals,
            members,
        });
        if !event.is_empty() {
            events.push(TopicPushItem::presence(topic, event));
        }
    }
    write_presence(state, &write).await;
    if !events.is_empty() {
        state
            .metrics
            .presence_events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // Best effort, like the events themselves: a subscriber that misses
        // one reads presence through the collect API.
        if let Err(e) = state.fanout.dispatch(&events).await {
            Metrics::inc(&state.metrics.errors);
            tracing::warn!(events = events.len(), error = %e, "could not send presence events");
        }
    }
}

/// Writes `write`, counting it; a failure is logged (the next refresh of
/// the entries repairs the store).
pub(crate) async fn write_presence(state: &PresenceParts<'_>, write: &PresenceWrite) {
    if write.is_empty() {
        return;
    }
    match state.store.write(&state.config.node_id, write).await {
        Ok(()) => Metrics::inc(&state.metrics.presence_writes),
        Err(e) => {
            Metrics::inc(&state.metrics.errors);
            tracing::warn!(error = %e, "writing presence failed; the refresh writes it again");
        }
    }
}

/// The presence entries of hub and topic index shard `shard`, written
/// again so they outlive their TTL (the heartbeat's rotation).
pub(crate) async fn refresh_shard(state: &PresenceParts<'_>, shard: usize) {
    let mut write = PresenceWrite::default();
    if state.config.user_presence {
        let mut conns = Vec::new();
        state.hub.conns_in(shard, &mut conns);
        write.connections = conns
            .into_iter()
            .map(|(id, conn)| {
                let at = conn
                    .connected_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                (conn.user_id.clone(), id, Some(at))
            })
            .collect();
    }
    write.topics.extend(state.topics.presence_in(shard));
    write_presence(state, &write).await;
}

/// Writes every interval until `stop`, then once more.
pub(crate) async fn run(state: PresenceParts<'_>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.presence_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => flush(&state).await,
        }
    }
    flush(&state).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_coalesce_per_connection_and_topic_user() {
        let tracker = PresenceTracker::default();
        let (c, u) = (ConnId::new("c").unwrap(), UserId::new("u").unwrap());
        let t = TopicName::new("t").unwrap();
        tracker.opened(&c, &u, 5);
        tracker.closed(&c, &u);
        for before in [0, 1, 2, 1] {
            tracker.touched(&t, &u, before);
        }
        let p = tracker.take();
        assert_eq!(p.conns[&c], (u.clone(), None), "the last word wins");
        assert_eq!(p.topics[&t][&u], 0, "the count at the interval's start");
        assert!(tracker.is_empty());
    }
}
