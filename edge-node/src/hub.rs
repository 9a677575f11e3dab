//! The hub: this node's map of live connections.
//!
//! `connection id -> Conn`, behind sharded mutexes so that pushes to
//! different connections rarely contend; no lock is held across an
//! `.await`. Dispatch addresses connections by id (the user -> connections
//! view lives in the route store), so the hub keeps no second index.
//!
//! Each connection is one allocation, [`Conn`], shared by the hub and the
//! connection's task: its identity, its send queue and its wake-up. The
//! queue is a `VecDeque` that allocates only when frames are waiting, so an
//! idle connection costs no queue memory at all.
//!
//! A push never waits for a client: [`Hub::deliver`] appends to the queue
//! without blocking, and a full queue marks the connection too slow (it is
//! closed with 4008 and catches up from MongoDB on reconnect). While the
//! connection's session has handed its socket over ([`Conn::go_direct`]),
//! a push of the user's next seq is written to the socket right there,
//! without blocking either (a full socket queues it as above).
//!
//! The hub also enforces the connection caps: [`Hub::insert`] refuses a
//! connection past the node's cap or the user's (per-user counts live in
//! their own sharded map, so a cap check never walks the connections).

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use edgepush_core::protocol::CLOSE_TOO_SLOW;
use edgepush_core::{ConnId, Seq, TopicName, UserId};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::Metrics;

const SHARDS: usize = 64;

/// One shard of the connection map.
type Shard = Mutex<HashMap<ConnId, Arc<Conn>>>;

/// One frame on its way to a connection: its stream (the user's, or a
/// topic's), its seq in that stream (0 for frames that carry none: raw
/// posts, presence events) and the serialised frame, sharing its bytes
/// with every other recipient. Cloning it allocates nothing: the topic
/// name and the frame are reference counted.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    /// The message's seq, so the connection can drop duplicates.
    pub seq: Seq,
    /// The topic of a topic frame; `None` for the user's own stream.
    pub topic: Option<TopicName>,
    /// The frame.
    pub frame: Message,
    /// Whether the push path may write it to an idle session's socket
    /// itself ([`Hub::deliver_to`]): a user frame of a small batch item.
    /// Large fan-outs are queued, so that the frames that pile up behind
    /// them go out several to a write.
    pub direct: bool,
}

/// The mutable part of a connection, under one lock.
#[derive(Debug, Default)]
struct ConnState {
    /// Frames waiting to be written.
    queue: VecDeque<Outbound>,
    /// A close requested by the hub (slow client, `DELETE`, drain).
    close: Option<u16>,
    /// The node lost its routes for a while (route store flushed or
    /// restarted): pushes may have missed this connection, so it must catch
    /// up from the message store.
    resync: bool,
    /// The session waits with nothing held, read or unwritten, its user
    /// stream started: the push path may write the user's next seq to the
    /// socket itself ([`Hub::deliver_to`]) instead of waking the session.
    /// Cleared by the session when it wakes and by every write of its own.
    direct: bool,
    /// The user stream's last seq written: set by the session before it
    /// sets `direct`, advanced by direct writes, read back by the session
    /// when it wakes (its duplicate and gap checks go on from there).
    direct_last: Seq,
    /// What a direct write left unwritten (the socket's buffer was full):
    /// written before anything else ([`Conn::poll_unsent`]).
    unsent: Vec<u8>,
}

/// Why a connection's task was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Frames were moved into the burst.
    Frames,
    /// A direct write left bytes unwritten: flush them.
    Unsent,
    /// Catch up from the message store (and then go on).
    Resync,
    /// Close with this code; queued frames are dropped (the client resumes
    /// from the store).
    Close(u16),
}

/// One live connection, shared by the hub and the connection's task.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The user the token named.
    pub user_id: UserId,
    /// Where the client connects from (the push API's `identity.sourceIp`).
    pub peer: SocketAddr,
    /// The client's `User-Agent`, if it sent one.
    pub user_agent: Option<Box<str>>,
    /// When the connection opened.
    pub connected_at: SystemTime,
    /// Milliseconds since the epoch of the last frame from the client.
    pub last_active_ms: AtomicU64,
    /// The send queue's bound.
    capacity: usize,
    state: Mutex<ConnState>,
    /// Wakes the connection's task when frames or a close are waiting.
    wake: Notify,
    /// The client's socket, once upgraded: read and written by the session
    /// (through the `socket` module's `Socket`), and written directly by the
    /// push path while the session is idle. Here rather than in the
    /// session's task so that the push path reaches it without another
    /// allocation per connection.
    socket: OnceLock<TcpStream>,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        // Every update is a single push/take: a poisoned lock still holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the connection to close with `code` (the first request wins).
    pub(crate) fn close(&self, code: u16) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(code);
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Asks the connection to catch up from the message store.
    pub(crate) fn resync(&self) {
        self.state().resync = true;
        self.wake.notify_one();
    }

    /// Waits until frames, a resync, a close or the rest of a direct write
    /// are waiting; moves up to `max` queued frames into `into`. With
    /// `frames` false only a resync or a close ends the wait (the session
    /// is reading the store and leaves queued frames where they are; its
    /// next write sends the rest of a direct write first).
    pub(crate) async fn next(&self, into: &mut Vec<Outbound>, max: usize, frames: bool) -> Wake {
        loop {
            {
                let mut state = self.state();
                if let Some(code) = state.close {
                    state.queue = VecDeque::new();
                    return Wake::Close(code);
                }
                if state.resync {
                    state.resync = false;
                    return Wake::Resync;
                }
                if frames && !state.unsent.is_empty() {
                    return Wake::Unsent;
                }
                if frames && !state.queue.is_empty() {
                    let n = state.queue.len().min(max);
                    into.extend(state.queue.drain(..n));
                    if state.queue.is_empty() && state.queue.capacity() > 16 {
                        // Give back the memory a burst took.
                        state.queue = VecDeque::new();
                    }
                    return Wake::Frames;
                }
            }
            self.wake.notified().await;
        }
    }

    /// Hands the upgraded socket over (once; a second socket is refused).
    pub(crate) fn attach(&self, socket: TcpStream) -> Result<(), TcpStream> {
        self.socket.set(socket)
    }

    /// The upgraded socket, if attached.
    pub(crate) fn socket(&self) -> Option<&TcpStream> {
        self.socket.get()
    }

    /// Lets the push path write the user's frames after `last` directly,
    /// unless something waits for the session already (then it is woken
    /// for that, as before). The session calls this right before it waits,
    /// with everything it wrote flushed.
    pub(crate) fn go_direct(&self, last: Seq) {
        let mut state = self.state();
        if state.queue.is_empty()
            && state.close.is_none()
            && !state.resync
            && state.unsent.is_empty()
            && self.socket.get().is_some()
        {
            state.direct = true;
            state.direct_last = last;
        }
    }

    /// Ends direct writes (the session woke); returns the user stream's
    /// last seq written, for the session to go on from.
    pub(crate) fn take_back(&self) -> Seq {
        let mut state = self.state();
        state.direct = false;
        state.direct_last
    }

    /// Before the session writes: ends direct writes and writes what a
    /// direct write left unwritten. Ready once nothing is left.
    pub(crate) fn poll_unsent(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(tcp) = self.socket.get() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            {
                let mut state = self.state();
                state.direct = false;
                if state.unsent.is_empty() {
                    if state.unsent.capacity() > 0 {
                        state.unsent = Vec::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                match tcp.try_write(&state.unsent) {
                    Ok(n) => {
                        state.unsent.drain(..n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            ready!(tcp.poll_write_ready(cx))?;
        }
    }

    /// Frames queued, and bytes a direct write left unwritten.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> (usize, usize) {
        let state = self.state();
        (state.queue.len(), state.unsent.len())
    }

    /// The close code asked for, if any.
    #[cfg(test)]
    pub(crate) fn close_requested(&self) -> Option<u16> {
        self.state().close
    }
}

/// What a delivery to one connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued.
    Queued,
    /// The connection is not on this node.
    Gone,
    /// The queue was full, or the connection is closing: it catches up
    /// from the message store when it reconnects.
    TooSlow,
}

/// Why the hub refused a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CapExceeded {
    /// The node holds its most connections.
    Node(usize),
    /// The user holds their most connections on this node.
    User(usize),
}

/// The connection caps [`Hub::insert`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// Most connections on the node.
    pub node: usize,
    /// Most connections of one user on the node.
    pub user: usize,
    /// Frames one connection may have queued.
    pub queue: usize,
}

/// What a new connection brings to the hub.
#[derive(Debug)]
pub(crate) struct ConnInit {
    /// The user the token named.
    pub user_id: UserId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's `User-Agent`.
    pub user_agent: Option<Box<str>>,
}

/// The node's live connections.
pub(crate) struct Hub {
    shards: Box<[Shard]>,
    /// Open connections per user, sharded like the connections (by user).
    users: Box<[Mutex<HashMap<UserId, usize>>]>,
    /// Open connections in all.
    count: AtomicUsize,
    metrics: Arc<Metrics>,
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, no allocation, good enough to spread random ids.
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

impl Hub {
    /// An empty hub.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            metrics,
        }
    }

    fn users_of(&self, user: &UserId) -> MutexGuard<'_, HashMap<UserId, usize>> {
        self.users[shard_of(user.as_str())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<ConnId, Arc<Conn>>> {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection, unless the node or its user already holds as many
    /// as `caps` allow.
    pub(crate) fn insert(
        &self,
        conn_id: ConnId,
        init: ConnInit,
        caps: Caps,
    ) -> Result<Arc<Conn>, CapExceeded> {
        // Reserve a place on the node, then one for the user; give back the
        // first if the second fails.
        if self.count.fetch_add(1, Ordering::AcqRel) >= caps.node {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(CapExceeded::Node(caps.node));
        }
        {
            let mut users = self.users_of(&init.user_id);
            let held = users.entry(init.user_id.clone()).or_insert(0);
            if *held >= caps.user {
                if *held == 0 {
                    users.remove(&init.user_id);
                }
                drop(users);
                self.count.fetch_sub(1, Ordering::AcqRel);
                return Err(CapExceeded::User(caps.user));
            }
            *held += 1;
        }
        let conn = Arc::new(Conn {
            user_id: init.user_id,
            peer: init.peer,
            user_agent: init.user_agent,
            connected_at: SystemTime::now(),
            last_active_ms: AtomicU64::new(edgepush_core::message::now_ms() as u64),
            capacity: caps.queue.max(1),
            state: Mutex::new(ConnState::default()),
            wake: Notify::new(),
            socket: OnceLock::new(),
        });
        self.shard(conn_id.as_str()).insert(conn_id, conn.clone());
        Ok(conn)
    }

    /// Removes a connection; returns whether it was there.
    pub(crate) fn remove(&self, conn_id: &ConnId) -> bool {
        let Some(conn) = self.shard(conn_id.as_str()).remove(conn_id) else {
            return false;
        };
        self.count.fetch_sub(1, Ordering::AcqRel);
        let mut users = self.users_of(&conn.user_id);
        if let Some(held) = users.get_mut(&conn.user_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                users.remove(&conn.user_id);
            }
        }
        true
    }

    /// The connection `conn_id`, if it is on this node.
    pub(crate) fn get(&self, conn_id: &ConnId) -> Option<Arc<Conn>> {
        self.shard(conn_id.as_str()).get(conn_id).cloned()
    }

    /// The connection `conn_id` if it is on this node and, with `user`,
    /// that user's.
    pub(crate) fn get_of(&self, conn_id: &str, user: Option<&str>) -> Option<Arc<Conn>> {
        let conn = self.shard(conn_id).get(conn_id).cloned()?;
        user.is_none_or(|u| u == conn.user_id.as_str())
            .then_some(conn)
    }

    /// Queues `out` for `conn_id` without waiting (and, once the
    /// connection's queue has been used, without allocating). With `user`,
    /// a connection of another user counts as gone: a push batch delivers a
    /// message only to connections of the message's user.
    pub(crate) fn deliver(&self, conn_id: &str, user: Option<&str>, out: Outbound) -> Delivery {
        match self.get_of(conn_id, user) {
            Some(conn) => self.deliver_to(&conn, out),
            None => Delivery::Gone,
        }
    }

    /// Queues `out` for `conn` without waiting (a topic fan-out holds the
    /// subscriber's handle already).
    pub(crate) fn deliver_to(&self, conn: &Conn, out: Outbound) -> Delivery {
        let mut state = conn.state();
        if state.close.is_some() {
            return Delivery::TooSlow;
        }
        if state.queue.len() >= conn.capacity {
            state.close = Some(CLOSE_TOO_SLOW);
            state.queue = VecDeque::new();
            drop(state);
            conn.wake.notify_one();
            self.metrics.slow_clients.fetch_add(1, Ordering::Relaxed);
            return Delivery::TooSlow;
        }
        if state.direct {
            match write_direct(&mut state, conn.socket.get(), &out) {
                Direct::Duplicate => return Delivery::Queued,
                Direct::Queue => state.direct = false,
                written @ (Direct::Written | Direct::Partly) => {
                    drop(state);
                    self.metrics.frames_written.fetch_add(1, Ordering::Relaxed);
                    self.metrics.direct_writes.fetch_add(1, Ordering::Relaxed);
                    if matches!(written, Direct::Partly) {
                        // The session writes the rest.
                        conn.wake.notify_one();
                    }
                    return Delivery::Queued;
                }
            }
        }
        state.queue.push_back(out);
        drop(state);
        conn.wake.notify_one();
        Delivery::Queued
    }

    /// Every (user, connection) on this node.
    pub(crate) fn routes(&self) -> Vec<(UserId, ConnId)> {
        let mut out = Vec::new();
        for shard in 0..SHARDS {
            self.routes_in(shard, &mut out);
        }
        out
    }

    /// How many shards [`routes_in`](Self::routes_in) takes.
    pub(crate) const SHARDS: usize = SHARDS;

    /// Appends the (user, connection) pairs of shard `shard` to `out`.
    pub(crate) fn routes_in(&self, shard: usize, out: &mut Vec<(UserId, ConnId)>) {
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(
            shard
                .iter()
                .map(|(c, conn)| (conn.user_id.clone(), c.clone())),
        );
    }

    /// Asks every connection to catch up from the message store.
    pub(crate) fn resync_all(&self) {
        for conn in self.all() {
            conn.resync();
        }
    }

    /// Calls `f` with every connection, one shard at a time (the broadcast
    /// fan-out); returns how many there were.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Conn)) -> usize {
        let mut count = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for conn in shard.values() {
                f(conn);
                count += 1;
            }
        }
        count
    }

    /// The connections of shard `shard` with their ids and open times (the
    /// presence refresh).
    pub(crate) fn conns_in(&self, shard: usize, out: &mut Vec<(ConnId, Arc<Conn>)>) {
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(shard.iter().map(|(c, conn)| (c.clone(), conn.clone())));
    }

    fn all(&self) -> Vec<Arc<Conn>> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            out.extend(
                shard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned(),
            );
        }
        out
    }

    /// Asks every connection to close with `code`.
    pub(crate) fn close_all(&self, code: u16) {
        for shard in self.shards.iter() {
            let conns: Vec<Arc<Conn>> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for conn in conns {
                conn.close(code);
            }
        }
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// What a direct write came to.
enum Direct {
    /// The whole frame is in the socket.
    Written,
    /// The seq was written already: nothing to do.
    Duplicate,
    /// Part of the frame is in the socket, the rest in `unsent`.
    Partly,
    /// Not for the direct path (another stream, a gap, a frame without
    /// seq, a full socket): queue it for the session.
    Queue,
}

/// Writes `out` to `socket` if it is the user stream's next seq and the
/// socket takes at least part of it. The frame's header is built on the
/// stack and written with its shared payload in one `writev`: nothing is
/// allocated unless the socket takes only part of the frame.
fn write_direct(state: &mut ConnState, socket: Option<&TcpStream>, out: &Outbound) -> Direct {
    let Some(socket) = socket else {
        return Direct::Queue;
    };
    if !out.direct || out.topic.is_some() || out.seq == 0 || !state.queue.is_empty() {
        return Direct::Queue;
    }
    if out.seq <= state.direct_last {
        return Direct::Duplicate;
    }
    if out.seq != state.direct_last + 1 {
        return Direct::Queue;
    }
    let (opcode, payload): (u8, &[u8]) = match &out.frame {
        Message::Text(text) => (0x1, text.as_bytes()),
        Message::Binary(bytes) => (0x2, bytes),
        _ => return Direct::Queue,
    };
    let mut header = [0u8; 10];
    let header = frame_header(&mut header, opcode, payload.len());
    let total = header.len() + payload.len();
    match socket.try_write_vectored(&[IoSlice::new(header), IoSlice::new(payload)]) {
        Ok(0) | Err(_) => Direct::Queue,
        Ok(n) => {
            state.direct_last = out.seq;
            if n < total {
                state.direct = false;
                let (h, p) = (header.len(), payload.len());
                state.unsent.reserve(total - n);
                if n < h {
                    state.unsent.extend_from_slice(&header[n..]);
                    state.unsent.extend_from_slice(payload);
                } else {
                    state.unsent.extend_from_slice(&payload[n - h..p]);
                }
                Direct::Partly
            } else {
                Direct::Written
            }
        }
    }
}

/// A server frame's header (final, unmasked) for a payload of `len`
/// bytes, in `buf`.
fn frame_header(buf: &mut [u8; 10], opcode: u8, len: usize) -> &[u8] {
    buf[0] = 0x80 | opcode;
    if len < 126 {
        buf[1] = len as u8;
        &buf[..2]
    } else if let Ok(len) = u16::try_from(len) {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        &buf[..4]
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        &buf[..10]
    }
}

#[cfg(test)]
mod tests {
    use edgepush_core::protocol::{CLOSE_DRAINING, CLOSE_NORMAL};

    use super::*;

    fn init(user: &str) -> ConnInit {
        ConnInit {
            user_id: UserId::new(user).unwrap(),
            peer: "127.0.0.1:1".parse().unwrap(),
            user_agent: None,
        }
    }

    fn caps(queue: usize) -> Caps {
        Caps {
            node: 100,
            user: 100,
            queue,
        }
    }

    fn out(seq: Seq) -> Outbound {
        Outbound {
            seq,
            topic: None,
            frame: Message::Text("{}".into()),
            direct: true,
        }
    }

    #[test]
    fn frame_headers_take_the_length_form_the_payload_needs() {
        let mut buf = [0u8; 10];
        assert_eq!(frame_header(&mut buf, 0x1, 125), [0x81, 125]);
        assert_eq!(frame_header(&mut buf, 0x1, 126), [0x81, 126, 0, 126]);
        assert_eq!(frame_header(&mut buf, 0x2, 65_535), [0x82, 126, 0xff, 0xff]);
        assert_eq!(
            frame_header(&mut buf, 0x1, 65_536),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn connections_come_and_go() {
        let hub = Hub::new(Arc::default());
        let (c1, c2) = (ConnId::new("c1").unwrap(), ConnId::new("c2").unwrap());
        let _a = hub.insert(c1.clone(), init("alice"), caps(4)).unwrap();
        let _b = hub.insert(c2.clone(), init("alice"), caps(4)).unwrap();
        assert_eq!(hub.len(), 2);
        assert!(hub.remove(&c1));
        assert!(!hub.remove(&c1));
        assert!(hub.get(&c1).is_none());
        assert_eq!(hub.routes(), vec![(UserId::new("alice").unwrap(), c2)]);
    }

    #[test]
    fn caps_refuse_past_the_node_and_the_user_limit() {
        let hub = Hub::new(Arc::default());
        let caps = Caps {
            node: 3,
            user: 2,
            queue: 4,
        };
        let id = |s: &str| ConnId::new(s).unwrap();
        hub.insert(id("a1"), init("alice"), caps).unwrap();
        hub.insert(id("a2"), init("alice"), caps).unwrap();
        assert_eq!(
            hub.insert(id("a3"), init("alice"), caps).unwrap_err(),
            CapExceeded::User(2)
        );
        hub.insert(id("b1"), init("bob"), caps).unwrap();
        assert_eq!(
            hub.insert(id("c1"), init("carol"), caps).unwrap_err(),
            CapExceeded::Node(3)
        );
        assert_eq!(hub.len(), 3);
        // A place freed is a place taken again.
        assert!(hub.remove(&id("a1")));
        hub.insert(id("a3"), init("alice"), caps).unwrap();
        assert!(hub.remove(&id("b1")));
        hub.insert(id("c1"), init("carol"), caps).unwrap();
        assert_eq!(hub.len(), 3);
    }

    #[test]
    fn a_batch_delivers_only_to_connections_of_the_message_user() {
        let hub = Hub::new(Arc::default());
        let c = ConnId::new("c").unwrap();
        let _conn = hub.insert(c.clone(), init("bob"), caps(4)).unwrap();
        assert_eq!(hub.deliver("c", Some("mallory"), out(1)), Delivery::Gone);
        assert_eq!(hub.deliver("c", Some("bob"), out(1)), Delivery::Queued);
        assert_eq!(hub.deliver("c", None, out(0)), Delivery::Queued);
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_bounded_bursts() {
        let hub = Hub::new(Arc::default());
        let c = ConnId::new("c").unwrap();
        let conn = hub.insert(c.clone(), init("bob"), caps(10)).unwrap();
        for seq in 1..=5 {
            assert_eq!(hub.deliver(c.as_str(), None, out(seq)), Delivery::Queued);
        }
        let mut burst = Vec::new();
        assert_eq!(conn.next(&mut burst, 3, true).await, Wake::Frames);
        assert_eq!(burst.iter().map(|o| o.seq).collect::<Vec<_>>(), [1, 2, 3]);
        burst.clear();
        assert_eq!(conn.next(&mut burst, 3, true).await, Wake::Frames);
        assert_eq!(burst.iter().map(|o| o.seq).collect::<Vec<_>>(), [4, 5]);
        // While the session reads the store, frames wait in the queue but a
        // close still wakes it.
        assert_eq!(hub.deliver(c.as_str(), None, out(6)), Delivery::Queued);
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            conn.next(&mut burst, 3, false),
        )
        .await;
        assert!(
            waiting.is_err(),
            "frames must not wake a session that reads the store"
        );
        conn.close(CLOSE_NORMAL);
        assert_eq!(
            conn.next(&mut burst, 3, false).await,
            Wake::Close(CLOSE_NORMAL)
        );
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_connection_as_too_slow() {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(metrics.clone());
        let c = ConnId::new("c").unwrap();
        let conn = hub.insert(c.clone(), init("bob"), caps(2)).unwrap();
        assert_eq!(hub.deliver(c.as_str(), None, out(1)), Delivery::Queued);
        assert_eq!(hub.deliver(c.as_str(), None, out(2)), Delivery::Queued);
        assert_eq!(hub.deliver(c.as_str(), None, out(3)), Delivery::TooSlow);
        assert_eq!(conn.close_requested(), Some(CLOSE_TOO_SLOW));
        assert_eq!(metrics.slow_clients.load(Ordering::Relaxed), 1);
        // Once closing, nothing more is queued and the task sees the close.
        assert_eq!(hub.deliver(c.as_str(), None, out(4)), Delivery::TooSlow);
        let mut burst = Vec::new();
        assert_eq!(
            conn.next(&mut burst, 10, true).await,
            Wake::Close(CLOSE_TOO_SLOW)
        );
        assert!(burst.is_empty());
        assert_eq!(hub.deliver("nope", None, out(1)), Delivery::Gone);
    }

    #[tokio::test]
    async fn a_resync_wakes_a_waiting_task_once() {
        let hub = Hub::new(Arc::default());
        let conn = hub
            .insert(ConnId::new("c").unwrap(), init("bob"), caps(2))
            .unwrap();
        hub.resync_all();
        let mut burst = Vec::new();
        assert_eq!(conn.next(&mut burst, 8, true).await, Wake::Resync);
        assert_eq!(hub.deliver("c", None, out(1)), Delivery::Queued);
        assert_eq!(conn.next(&mut burst, 8, true).await, Wake::Frames);
    }

    #[tokio::test]
    async fn a_close_wakes_a_waiting_task() {
        let hub = Hub::new(Arc::default());
        let conn = hub
            .insert(ConnId::new("c").unwrap(), init("bob"), caps(2))
            .unwrap();
        let waiter = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.next(&mut Vec::new(), 8, true).await })
        };
        tokio::task::yield_now().await;
        hub.close_all(CLOSE_DRAINING);
        assert_eq!(waiter.await.unwrap(), Wake::Close(CLOSE_DRAINING));
    }
}
