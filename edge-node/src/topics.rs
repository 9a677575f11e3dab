//! The topic index: this node's subscribers of each topic, the fan-out of a
//! topic message to them, and what the registrar and presence need to know.
//!
//! `topic -> TopicEntry`, behind sharded mutexes like the hub. An entry
//! holds its subscribers' handles (a fan-out queues to them without looking
//! anything up), the highest seq of the topic this node has seen (`seen`),
//! whether the node is registered as a member of the topic in the route
//! store, and, for namespaces with presence, each user's subscription count.
//!
//! Broadcast is not in the map: every connection of the hub is subscribed
//! to it, so its fan-out walks the hub; the index keeps only its `seen` and
//! `registered`.
//!
//! # `seen`, and where a subscription starts
//!
//! A subscription without `after` starts at the topic's latest seq. The
//! index answers that without a store read when it can: a fan-out raises
//! `seen` *before* it queues to the subscribers, under the entry's lock, and
//! a subscriber joins under the same lock. So a subscriber that reads
//! `seen` after it joined has every message above it coming: queued live
//! (pushed after it joined), or filled from the store as a gap (pushed
//! before it was registered, or never). An entry made afresh has no `seen`:
//! the first subscriber reads the store (after the registration), and its
//! answer becomes `seen`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use edgepush_core::ports::TopicPresenceWrite;
use edgepush_core::{ConnId, Seq, TopicName, UserId};

use crate::hub::{Conn, Delivery, Hub, Outbound};

const SHARDS: usize = 64;

/// One topic's local state.
#[derive(Debug)]
struct TopicEntry {
    /// The topic (the map's key again: a fan-out tags every frame with it,
    /// a reference count, no allocation).
    name: TopicName,
    /// The subscribers on this node.
    subs: HashMap<ConnId, Arc<Conn>>,
    /// Per user, their subscriptions (namespaces with presence only).
    users: Option<HashMap<UserId, u64>>,
    /// The highest seq of the topic fanned out here or read from the store
    /// since the entry was made.
    seen: Option<Seq>,
    /// Whether the node's membership of the topic is in the route store.
    registered: bool,
}

/// Broadcast's local state (its subscribers are the hub).
#[derive(Debug, Default)]
struct BroadcastState {
    seen: Option<Seq>,
    registered: bool,
}

/// What a fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FanOut {
    /// Frames queued.
    pub delivered: u64,
    /// Subscribers closed as too slow (queue full).
    pub too_slow: u64,
}

/// The node's topic index; see the module docs.
pub(crate) struct TopicIndex {
    shards: Box<[Mutex<HashMap<TopicName, TopicEntry>>]>,
    broadcast: Mutex<BroadcastState>,
}

fn shard_of(topic: &str) -> usize {
    // FNV-1a, as the hub.
    let mut h: u32 = 0x811c_9dc5;
    for b in topic.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for TopicIndex {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            broadcast: Mutex::new(BroadcastState::default()),
        }
    }
}

impl TopicIndex {
    /// How many shards [`topics_in`](Self::topics_in) takes.
    pub(crate) const SHARDS: usize = SHARDS;

    fn shard(&self, topic: &str) -> MutexGuard<'_, HashMap<TopicName, TopicEntry>> {
        lock(&self.shards[shard_of(topic)])
    }

    /// Adds `conn` as a subscriber of `topic` (not broadcast). With
    /// `presence`, counts the user's subscriptions; returns the user's count
    /// before (0 without presence).
    pub(crate) fn subscribe(
        &self,
        topic: &TopicName,
        conn_id: &ConnId,
        conn: &Arc<Conn>,
        presence: bool,
    ) -> u64 {
        let mut shard = self.shard(topic.as_str());
        let entry = shard.entry(topic.clone()).or_insert_with(|| TopicEntry {
            name: topic.clone(),
            subs: HashMap::new(),
            users: None,
            seen: None,
            registered: false,
        });
        if entry.subs.insert(conn_id.clone(), conn.clone()).is_some() {
            return entry
                .users
                .as_ref()
                .and_then(|u| u.get(&conn.user_id).copied())
                .unwrap_or(0);
        }
        if !presence {
            return 0;
        }
        let count = entry
            .users
            .get_or_insert_with(HashMap::new)
            .entry(conn.user_id.clone())
            .or_insert(0);
        *count += 1;
        *count - 1
    }

    /// Removes `conn_id` of `user` from `topic`'s subscribers. Returns
    /// `None` when it was not one; else the user's count before (0 without
    /// presence) and whether the topic has no subscriber left (the registrar
    /// then decides whether to drop the membership).
    pub(crate) fn unsubscribe(
        &self,
        topic: &TopicName,
        conn_id: &ConnId,
        user: &UserId,
    ) -> Option<(u64, bool)> {
        let mut shard = self.shard(topic.as_str());
        let entry = shard.get_mut(topic)?;
        entry.subs.remove(conn_id)?;
        let before = match entry.users.as_mut() {
            Some(users) => match users.get_mut(user) {
                Some(count) => {
                    let before = *count;
                    *count -= 1;
                    if *count == 0 {
                        users.remove(user);
                    }
                    before
                }
                None => 0,
            },
            None => 0,
        };
        Some((before, entry.subs.is_empty()))
    }

    /// The highest seq of `topic` seen here, if known.
    pub(crate) fn seen(&self, topic: &TopicName) -> Option<Seq> {
        if topic.is_broadcast() {
            return lock(&self.broadcast).seen;
        }
        self.shard(topic.as_str()).get(topic).and_then(|e| e.seen)
    }

    /// Raises `topic`'s `seen` to `seq` (a store read after registration).
    pub(crate) fn raise_seen(&self, topic: &TopicName, seq: Seq) {
        let raise = |seen: &mut Option<Seq>| *seen = Some(seen.map_or(seq, |s| s.max(seq)));
        if topic.is_broadcast() {
            raise(&mut lock(&self.broadcast).seen);
            return;
        }
        if let Some(entry) = self.shard(topic.as_str()).get_mut(topic) {
            raise(&mut entry.seen);
        }
    }

    /// Queues the frame `out` makes to every local subscriber of the topic
    /// named `topic` (raising `seen` to `seq` first, under the same lock):
    /// `None` when the topic has no subscriber here. `out` is built once;
    /// each subscriber gets a reference-counted clone.
    pub(crate) fn fan_out(
        &self,
        hub: &Hub,
        topic: &str,
        seq: Seq,
        make: impl FnOnce(&TopicName) -> Outbound,
    ) -> Option<FanOut> {
        let mut result = FanOut::default();
        let mut count = |d: Delivery| match d {
            Delivery::Queued => result.delivered += 1,
            Delivery::TooSlow => result.too_slow += 1,
            Delivery::Gone => {}
        };
        if topic == edgepush_core::topic::BROADCAST {
            let out = make(&TopicName::broadcast());
            {
                // Broadcast's state outlives its subscribers, so `seen` is
                // raised only while the membership is registered: a push
                // that lands after the last connection released it (the
                // removal from the route store is still in flight) must not
                // leave a `seen` that the pushes missed since would make
                // stale, for the next connection to start at without a
                // store read.
                let mut b = lock(&self.broadcast);
                if seq > 0 && b.registered {
                    b.seen = Some(b.seen.map_or(seq, |s| s.max(seq)));
                }
            }
            if hub.len() == 0 {
                return None;
            }
            hub.for_each(|conn| count(hub.deliver_to(conn, out.clone())));
            return Some(result);
        }
        let mut shard = self.shard(topic);
        let entry = shard.get_mut(topic)?;
        if entry.subs.is_empty() {
            return None;
        }
        if seq > 0 {
            entry.seen = Some(entry.seen.map_or(seq, |s| s.max(seq)));
        }
        let out = make(&entry.name);
        for conn in entry.subs.values() {
            count(hub.deliver_to(conn, out.clone()));
        }
        Some(result)
    }

    /// Whether `topic`'s membership is in the route store (as far as the
    /// node knows).
    pub(crate) fn is_registered(&self, topic: &TopicName) -> bool {
        if topic.is_broadcast() {
            return lock(&self.broadcast).registered;
        }
        self.shard(topic.as_str())
            .get(topic)
            .is_some_and(|e| e.registered)
    }

    /// Records that `topic`'s membership was written (`true`) or is to be
    /// written again (`false`). Returns whether the topic still has an
    /// entry (for broadcast: always).
    pub(crate) fn set_registered(&self, topic: &TopicName, registered: bool) -> bool {
        if topic.is_broadcast() {
            lock(&self.broadcast).registered = registered;
            return true;
        }
        match self.shard(topic.as_str()).get_mut(topic) {
            Some(entry) => {
                entry.registered = registered;
                true
            }
            None => false,
        }
    }

    /// Drops `topic`'s entry if it has no subscriber (broadcast: if `hub` is
    /// empty); returns whether its membership was registered, so must be
    /// removed from the route store.
    pub(crate) fn drop_if_empty(&self, topic: &TopicName, hub: &Hub) -> bool {
        if topic.is_broadcast() {
            let mut b = lock(&self.broadcast);
            if hub.len() > 0 {
                return false;
            }
            b.seen = None;
            return std::mem::take(&mut b.registered);
        }
        let mut shard = self.shard(topic.as_str());
        match shard.get(topic) {
            Some(entry) if entry.subs.is_empty() => {
                let registered = entry.registered;
                shard.remove(topic);
                registered
            }
            _ => false,
        }
    }

    /// Every topic with subscribers here (broadcast included when the hub is
    /// not empty); with `unregister`, marks them all as not registered (the
    /// route store lost them).
    pub(crate) fn all_topics(&self, hub: &Hub, unregister: bool) -> Vec<TopicName> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for (topic, entry) in shard.iter_mut() {
                if !entry.subs.is_empty() {
                    out.push(topic.clone());
                }
                if unregister {
                    entry.registered = false;
                }
            }
        }
        let mut b = lock(&self.broadcast);
        if unregister {
            b.registered = false;
        }
        if hub.len() > 0 {
            out.push(TopicName::broadcast());
        }
        out
    }

    /// The registered topics of shard `shard` (the refresh rotation);
    /// broadcast goes with shard 0.
    pub(crate) fn registered_in(&self, shard: usize, out: &mut Vec<TopicName>) {
        if let Some(s) = self.shards.get(shard) {
            out.extend(
                lock(s)
                    .iter()
                    .filter(|(_, e)| e.registered)
                    .map(|(t, _)| t.clone()),
            );
        }
        if shard == 0 && lock(&self.broadcast).registered {
            out.push(TopicName::broadcast());
        }
    }

    /// For presence: the topic's (subscriptions, distinct users) here, and
    /// the counts of `users` (0 for a user with none), in order. `None`
    /// totals when the topic has no subscriber here.
    pub(crate) fn presence_of(
        &self,
        topic: &TopicName,
        users: &[UserId],
    ) -> (Option<(u64, u64)>, Vec<u64>) {
        let shard = self.shard(topic.as_str());
        let Some(entry) = shard.get(topic).filter(|e| !e.subs.is_empty()) else {
            return (None, vec![0; users.len()]);
        };
        let counts = entry.users.as_ref();
        let of = |u: &UserId| counts.and_then(|c| c.get(u).copied()).unwrap_or(0);
        (
            Some((
                entry.subs.len() as u64,
                counts.map_or(0, |c| c.len() as u64),
            )),
            users.iter().map(of).collect(),
        )
    }

    /// For the presence refresh: the whole presence of every topic of shard
    /// `shard` that counts users (totals, every user's count).
    pub(crate) fn presence_in(&self, shard: usize) -> Vec<TopicPresenceWrite> {
        let Some(s) = self.shards.get(shard) else {
            return Vec::new();
        };
        lock(s)
            .iter()
            .filter(|(_, e)| !e.subs.is_empty())
            .filter_map(|(t, e)| {
                let users = e.users.as_ref()?;
                Some(TopicPresenceWrite {
                    topic: t.clone(),
                    totals: Some((e.subs.len() as u64, users.len() as u64)),
                    members: users.iter().map(|(u, c)| (u.clone(), *c)).collect(),
                })
            })
            .collect()
    }

    /// Local subscriptions over all topics (broadcast not counted).
    pub(crate) fn subscriptions(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| lock(s).values().map(|e| e.subs.len() as u64).sum::<u64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::hub::{Caps, ConnInit};

    fn conn(hub: &Hub, id: &str, user: &str) -> (ConnId, Arc<Conn>) {
        let id = ConnId::new(id).unwrap();
        let c = hub
            .insert(
                id.clone(),
                ConnInit {
                    user_id: UserId::new(user).unwrap(),
                    peer: "127.0.0.1:1".parse().unwrap(),
                    user_agent: None,
                },
                Caps {
                    node: 100,
                    user: 100,
                    queue: 4,
                },
            )
            .unwrap();
        (id, c)
    }

    fn frame(topic: &TopicName, seq: Seq) -> Outbound {
        Outbound {
            seq,
            topic: Some(topic.clone()),
            frame: Message::Text("{}".into()),
            direct: false,
        }
    }

    #[tokio::test]
    async fn one_frame_fans_out_to_every_subscriber_and_raises_seen() {
        let hub = Hub::new(Arc::default());
        let index = TopicIndex::default();
        let t = TopicName::new("room").unwrap();
        let (a, ca) = conn(&hub, "a", "alice");
        let (b, cb) = conn(&hub, "b", "alice");
        let (c, cc) = conn(&hub, "c", "bob");
        assert_eq!(index.subscribe(&t, &a, &ca, true), 0);
        assert_eq!(index.subscribe(&t, &b, &cb, true), 1, "alice's second");
        assert_eq!(index.subscribe(&t, &c, &cc, true), 0);
        assert!(index.fan_out(&hub, "none", 1, |t| frame(t, 1)).is_none());
        let done = index.fan_out(&hub, "room", 7, |t| frame(t, 7)).unwrap();
        assert_eq!(done.delivered, 3);
        assert_eq!(index.seen(&t), Some(7));
        index.raise_seen(&t, 5);
        assert_eq!(index.seen(&t), Some(7), "seen never goes back");
        let (totals, counts) = index.presence_of(&t, &[UserId::new("alice").unwrap()]);
        assert_eq!((totals, counts), (Some((3, 2)), vec![2]));
        let mut burst = Vec::new();
        ca.next(&mut burst, 8, true).await;
        assert_eq!(burst[0].topic.as_ref(), Some(&t));
        assert_eq!(burst[0].seq, 7);

        assert_eq!(index.unsubscribe(&t, &a, &ca.user_id), Some((2, false)));
        assert_eq!(index.unsubscribe(&t, &a, &ca.user_id), None, "only once");
        assert_eq!(index.unsubscribe(&t, &b, &cb.user_id), Some((1, false)));
        index.set_registered(&t, true);
        assert!(!index.drop_if_empty(&t, &hub), "bob is still there");
        assert_eq!(index.unsubscribe(&t, &c, &cc.user_id), Some((1, true)));
        assert!(index.drop_if_empty(&t, &hub), "was registered: remove it");
        assert_eq!(index.seen(&t), None, "a new entry starts afresh");
        assert_eq!(index.subscriptions(), 0);
        let _ = SystemTime::now();
    }

    #[tokio::test]
    async fn broadcast_reaches_every_connection() {
        let hub = Hub::new(Arc::default());
        let index = TopicIndex::default();
        let conns: Vec<_> = (0..5).map(|i| conn(&hub, &format!("c{i}"), "u")).collect();
        let b = TopicName::broadcast();
        index.set_registered(&b, true);
        let done = index
            .fan_out(&hub, "$broadcast", 3, |t| frame(t, 3))
            .unwrap();
        assert_eq!(done.delivered, 5);
        assert_eq!(index.seen(&b), Some(3));
        let all = index.all_topics(&hub, true);
        assert_eq!(all, vec![b.clone()]);
        for (id, _) in &conns {
            hub.remove(id);
        }
        index.set_registered(&b, true);
        assert!(index.drop_if_empty(&b, &hub));
        assert_eq!(index.seen(&b), None);
        // A push that lands after the release (its removal from the route
        // store in flight) leaves no `seen` behind: the next connection
        // reads where broadcast is from the store, and gets what was
        // broadcast meanwhile.
        assert!(
            index
                .fan_out(&hub, "$broadcast", 4, |t| frame(t, 4))
                .is_none()
        );
        assert_eq!(index.seen(&b), None);
    }
}
