//! The ports: one trait per concern, each with a documented contract.
//!
//! Functions and the edge node are written against these traits only. Each
//! real backend lives in a crate of its own (so a function links only the
//! drivers it uses); [`crate::memory`] holds the in-memory backends.
//!
//! # Contracts
//!
//! The store ports' docs list, under "Contract", every rule their callers
//! rely on. Each rule is a check in that port's contract suite
//! (`edgepush_testkit::contract`, in `crates/testkit`), and every backend
//! runs the suite: the in-memory ones in `crates/testkit/tests/memory.rs`,
//! MongoDB in `crates/mongo/tests/contract.rs`, Redis and Redis Cluster in
//! `crates/redis/tests/contract.rs`. A rule added here gets its check there;
//! a new port gets a suite (see the `contract` module's docs for how).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::{ConnId, NodeId, UserId};
use crate::message::{NewMessage, NewTopicMessage, Seq, StoredMessage, TopicMessage};
use crate::protocol::{PushItem, TopicPushItem, TopicPushResult};
use crate::topic::TopicName;

/// A backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or timed out: retry later (HTTP 503).
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    /// Too many concurrent writers fought over the same user's sequence.
    #[error("message store contention: {0}")]
    Contention(String),
    /// Anything else the backend reported.
    #[error("message store error: {0}")]
    Backend(String),
}

/// Where a user's stream stands in the message store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamPosition {
    /// The highest seq known to be stored for the user (0 when none). It may
    /// lag behind the truly highest stored seq for a moment (a writer that
    /// crashed between its insert and its counter update), never run ahead.
    pub last_seq: Seq,
    /// The highest seq the user acknowledged, never above `last_seq`.
    pub acked_seq: Seq,
}

/// The durable message log, one sequence per user (MongoDB in production).
///
/// Contract (suite: `edgepush_testkit::contract::message_store`; each rule
/// is named after its check):
/// - *Seqs start at 1 per user* (`seqs_start_at_one_per_user`): the first
///   copy stored for a user has seq 1. [`append`](Self::append) answers one
///   copy per recipient in the order of `to`; the copies of one append share
///   one message id and keep the caller's payload text byte for byte.
/// - *Without gaps* (`seqs_increase_without_gaps`): each copy gets its
///   recipient's next seq, strictly increasing without gaps, and reads back
///   exactly as `append` returned it.
/// - *Also when writers race* (`racing_appends_get_every_seq_once`): appends
///   from several handles (processes) at once still hand out each seq once.
/// - *Durable before answering*: `append` returns only once the backend has
///   acknowledged the write of every recipient's copy (not observable from
///   outside the backend, so not in the suite).
/// - *Idempotent* (`an_idempotent_retry_returns_the_first_copies`):
///   appending again with the same `(source, idempotency_key)` stores
///   nothing new and returns the copies stored the first time; the key is
///   scoped by `source`, and another key is another message.
/// - *Also when duplicates race* (`racing_duplicates_return_the_same_copies`):
///   every concurrent duplicate returns the same copies, one per recipient.
/// - *Retries complete partial appends*: a failed append may have stored
///   some recipients' copies; retrying with the same idempotency key
///   completes it without duplicates (backend-specific crash tests).
/// - *A short page is the end of the log*
///   (`a_short_page_means_the_end_of_the_log`):
///   [`read_after`](Self::read_after) answers in seq order with exactly
///   `limit` copies while more follow; a page shorter than `limit` means the
///   log has nothing more after it, and callers (replay, gap fill) stop
///   there. So a backend that cannot read a stored copy fails the read
///   instead of skipping it.
/// - *Nothing outside the log* (`read_after_outside_the_log_is_empty`):
///   `limit` 0, `after` at or past the last seq (up to `u64::MAX`) or a user
///   with nothing stored read nothing; a read never returns another user's
///   copies.
/// - *Acks only move forward* (`acks_only_move_forward`): [`ack`](Self::ack)
///   never moves the acked seq backwards and answers the acked seq after
///   the call.
/// - *Delivered acks too* (`acks_of_delivered_seqs_only_move_forward`):
///   [`ack_delivered`](Self::ack_delivered) of seqs that were stored
///   keeps the same rules as `ack`.
/// - *Acks are clipped to the log* (`acks_are_clipped_to_the_last_stored_seq`):
///   an ack never moves the acked seq past [`StreamPosition::last_seq`], and
///   an ack with nothing stored records nothing: no client can acknowledge
///   (and so hide from the user's other devices) what was never stored.
/// - *Positions follow appends* (`position_follows_appends_and_acks`):
///   [`position`](Self::position) is `(0, 0)` for a user with nothing
///   stored and reports a copy's seq as `last_seq` once its append returned
///   (a replay reads up to it), on every handle.
/// - *Ping* (`ping_answers`): [`ping`](Self::ping) succeeds while the
///   backend answers.
/// - *Outages*: a backend that cannot be reached or times out answers
///   [`StoreError::Unavailable`] (backend-specific outage tests).
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores one copy of `msg` per recipient; see the trait's contract.
    async fn append(&self, msg: &NewMessage) -> Result<Vec<StoredMessage>, StoreError>;

    /// Up to `limit` of `user`'s messages with `seq > after`, in seq order.
    async fn read_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Records that `user` holds everything up to `seq`, clipped to the
    /// user's last stored seq; only moves forward. Returns the acked seq
    /// after the call.
    async fn ack(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError>;

    /// [`ack`](Self::ack) of a seq the caller knows was stored: one it
    /// delivered to a client of `user` (an edge node clips each client's
    /// acks to what it sent that connection). The backend may skip
    /// checking it against the log; a store whose end of the log costs
    /// reads to find (`edgepush-mongo` on FerretDB) records it in one
    /// write. Never call it with a seq a client merely claimed.
    async fn ack_delivered(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError> {
        self.ack(user, seq).await
    }

    /// The user's last stored and acked seqs, in one read.
    async fn position(&self, user: &UserId) -> Result<StreamPosition, StoreError>;

    /// The highest seq `user` has acknowledged (0 when none).
    async fn acked(&self, user: &UserId) -> Result<Seq, StoreError> {
        Ok(self.position(user).await?.acked_seq)
    }

    /// Succeeds when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finishes what the store does in the background after its appends
    /// answered (`edgepush-mongo` on FerretDB: seq counters left lagging),
    /// for a process about to exit; returns once that is written or has
    /// failed. Appends after it work as before. A store with nothing in
    /// the background has nothing to do (the default).
    async fn settle(&self) {}
}

/// The route store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The backend cannot be reached or timed out.
    #[error("route store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("route store error: {0}")]
    Backend(String),
}

/// Where a user's connections are: user -> { connection -> node } (Redis).
///
/// Routes are hints. A route may outlive its connection (a node crashed);
/// readers must check the node's liveness in [`NodeDirectory`] and treat a
/// push answered "gone" as a stale route to remove.
///
/// Contract (suite: `edgepush_testkit::contract::route_store`):
/// - *Read back as written* (`added_routes_are_read_back`): routes added by
///   [`add_route`](Self::add_route) or [`add_routes`](Self::add_routes) are
///   listed by [`routes_of`](Self::routes_of), each once, with the node
///   holding the connection.
/// - *Many users in one call* (`routes_of_answers_every_user_asked_in_order`):
///   `routes_of` answers one entry per user asked, in the order asked (a
///   user without routes gets an empty list, a user asked twice is answered
///   twice), in one round trip.
/// - *Moves* (`a_re_added_connection_points_to_its_new_node`): adding a
///   connection again with another node moves it there.
/// - *Removal* (`remove_routes_forgets_only_the_given_routes`):
///   [`remove_routes`](Self::remove_routes) forgets exactly the routes
///   named, of any number of users; routes that do not exist are ignored.
/// - *Bulk* (`thousands_of_routes_are_added_and_removed_in_one_call`):
///   thousands of routes (re-registration after a route store loss) are
///   written and removed in one call each.
/// - *Concurrent writers* (`routes_added_concurrently_all_land`).
/// - *Ping* (`ping_answers`); *outages* answer [`RouteError::Unavailable`]
///   (backend-specific outage tests).
#[async_trait]
pub trait RouteStore: Send + Sync + 'static {
    /// Records that `conn` of `user` is held by `node`.
    async fn add_route(
        &self,
        user: &UserId,
        conn: &ConnId,
        node: &NodeId,
    ) -> Result<(), RouteError>;

    /// Records many routes of one node at once (re-registration after a
    /// route store loss).
    async fn add_routes(
        &self,
        routes: &[(UserId, ConnId)],
        node: &NodeId,
    ) -> Result<(), RouteError>;

    /// Forgets the given routes (closed connections, stale routes).
    async fn remove_routes(&self, routes: &[(UserId, ConnId)]) -> Result<(), RouteError>;

    /// Every route of every user in `users`, in one round trip: the result
    /// has one entry per input user, in the same order.
    async fn routes_of(&self, users: &[UserId]) -> Result<Vec<Vec<(ConnId, NodeId)>>, RouteError>;

    /// Succeeds when the backend answers.
    async fn ping(&self) -> Result<(), RouteError>;
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The node's liveness entry was there and has been refreshed.
    Refreshed,
    /// The entry was missing (expired, or the store lost its data) and has
    /// been created again: the node must re-register its routes.
    Recreated,
}

/// Which edge nodes are alive and where their push API listens (Redis keys
/// with a short TTL, refreshed by each node's heartbeat).
///
/// Contract (suite: `edgepush_testkit::contract::node_directory`):
/// - *Heartbeats report re-creation*
///   (`the_first_heartbeat_creates_and_later_ones_refresh`): a node's first
///   [`heartbeat`](Self::heartbeat) answers [`Heartbeat::Recreated`], later
///   ones [`Heartbeat::Refreshed`] while the entry lives; a heartbeat with
///   another push URL moves the node there.
/// - *Liveness of the nodes asked*
///   (`live_nodes_reports_the_live_nodes_among_those_asked`):
///   [`live_nodes`](Self::live_nodes) gives the push URL of every live node
///   among those asked, nothing for the others.
/// - *Silence is death* (`a_silent_node_is_dead_once_its_ttl_passed`): a
///   node that stops heartbeating is reported dead once `ttl` has passed,
///   without anyone touching its users' routes; its next heartbeat answers
///   [`Heartbeat::Recreated`] (as after a route store loss), so the node
///   registers its routes again.
/// - *Removal* (`remove_node_marks_it_dead_now`):
///   [`remove_node`](Self::remove_node) reports the node dead at once, and
///   is harmless when repeated.
/// - *Outages* answer [`RouteError::Unavailable`] (backend-specific tests).
#[async_trait]
pub trait NodeDirectory: Send + Sync + 'static {
    /// Marks `node` alive for `ttl`, reachable at `push_url`.
    async fn heartbeat(
        &self,
        node: &NodeId,
        push_url: &str,
        ttl: Duration,
    ) -> Result<Heartbeat, RouteError>;

    /// The push URLs of the nodes among `nodes` that are alive.
    async fn live_nodes(&self, nodes: &[NodeId]) -> Result<HashMap<NodeId, String>, RouteError>;

    /// Marks `node` dead now (graceful shutdown).
    async fn remove_node(&self, node: &NodeId) -> Result<(), RouteError>;
}

/// A push to a node failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// The node could not be reached or did not answer in time.
    #[error("push to {url} failed: {reason}")]
    Unreachable {
        /// The node's push URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("push to {url} refused with status {status}: {body}")]
    Refused {
        /// The node's push URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
}

/// What a node did with a push batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Frames queued to live connections.
    pub delivered: u64,
    /// Connections that are not on the node: their routes are stale.
    pub gone: Vec<ConnId>,
}

/// Delivers messages to connections on one edge node (the push API's batch
/// endpoint in production).
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    /// Sends `items` to the node whose push API is at `push_url`, in order:
    /// a pusher that splits them into several requests (to fit the node's
    /// body cap) sends those one after another.
    async fn push(&self, push_url: &str, items: &[PushItem]) -> Result<PushReport, PushError>;

    /// Sends topic messages (and presence events) to the node at `push_url`:
    /// one item per message, whatever the number of subscribers there, in
    /// order. The node fans each out to its local subscribers.
    ///
    /// The default refuses (status 501): a pusher that cannot reach topic
    /// subscribers says so instead of dropping the items.
    async fn push_topics(
        &self,
        push_url: &str,
        items: &[TopicPushItem],
    ) -> Result<TopicPushResult, PushError> {
        let _ = items;
        Err(PushError::Refused {
            url: push_url.to_owned(),
            status: 501,
            body: "this pusher does not deliver topic messages".to_owned(),
        })
    }
}

/// Handing stored messages to dispatch failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The path to dispatch is down: the caller should answer 503.
    #[error("handoff unavailable: {0}")]
    Unavailable(String),
}

/// How collect passes stored messages on to dispatch: a direct call in dev
/// mode and tests, a queue in AWS.
///
/// Contract: [`hand_off`](Self::hand_off) returns `Ok` once dispatch has the
/// messages (delivered, or durably queued for delivery).
#[async_trait]
pub trait Handoff: Send + Sync + 'static {
    /// Passes `messages` on to dispatch.
    async fn hand_off(&self, messages: &[StoredMessage]) -> Result<(), HandoffError>;

    /// Succeeds when a hand-off would currently be accepted; collect checks
    /// this before writing so a dead dispatch path stores nothing.
    async fn ready(&self) -> Result<(), HandoffError>;

    /// Passes stored topic messages on to dispatch, with the same contract
    /// as [`hand_off`](Self::hand_off). The default refuses: a hand-off
    /// that cannot carry topic messages makes collect answer 503 rather
    /// than accept what it cannot deliver.
    async fn hand_off_topics(&self, messages: &[TopicMessage]) -> Result<(), HandoffError> {
        let _ = messages;
        Err(HandoffError::Unavailable(
            "this hand-off does not carry topic messages".to_owned(),
        ))
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub user_id: UserId,
    /// The `exp` claim, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The `topics` claim of a connection token: topics the connection is
    /// subscribed to at connect (server-side subscriptions). Unvalidated:
    /// the edge node answers a bad one with an error frame naming it.
    pub topics: Vec<String>,
    /// The `subscribe` claim of a connection token: topic patterns
    /// ([`TopicPattern`](crate::topic::TopicPattern), `*` for any run of
    /// characters) the client may subscribe to on its own. Unvalidated.
    pub subscribe: Vec<String>,
    /// The `topic` claim: set only on a *subscribe token*, which a business
    /// signs to let one user subscribe to this one topic. A token carrying
    /// it cannot open a connection.
    pub topic: Option<String>,
}

impl Identity {
    /// An identity with no topic claims.
    pub fn new(user_id: UserId, expires_at: Option<u64>) -> Self {
        Self {
            user_id,
            expires_at,
            topics: Vec::new(),
            subscribe: Vec::new(),
            topic: None,
        }
    }
}

/// A token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing token")]
    Missing,
    /// The token is malformed, wrongly signed, of the wrong algorithm, or
    /// carries the wrong issuer or audience.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf` in the future).
    #[error("token not yet valid")]
    NotYetValid,
    /// The verifier itself could not be reached (remote auth).
    #[error("auth service unavailable: {0}")]
    Unavailable(String),
}

/// Verifies a client token and says which user it speaks for (the auth
/// function, in-process or remote).
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token`.
    async fn verify(&self, token: &str) -> Result<Identity, AuthError>;
}

/// The durable per-topic log (MongoDB in production): the topic
/// counterpart of [`MessageStore`].
///
/// Contract (suite: `edgepush_testkit::contract::topic_store`; each rule
/// is named after its check):
/// - *Each topic its own gap-free seq* (`each_topic_gets_its_next_seq`):
///   each copy of a [`publish`](Self::publish) gets its topic's next
///   sequence number, from 1, strictly increasing without gaps, whatever
///   other topics hold; the copies come in the order of the publication's
///   topics, share one message id and keep the caller's payload text.
/// - *Also when writers race* (`concurrent_publishes_get_gap_free_seqs`):
///   publishes from several handles (processes) at once still hand out
///   each seq once.
/// - *Durable before answering*: `publish` returns only once the backend
///   has acknowledged the write of every topic's copy (not observable from
///   outside the backend, so not in the suite).
/// - *Idempotent* (`an_idempotent_retry_returns_the_first_copies`):
///   publishing again with the same `(source, idempotency_key)` stores
///   nothing new and returns the copies stored the first time; the key is
///   scoped by `source`, and another key is another message.
/// - *Also when duplicates race* (`racing_duplicates_return_the_same_copies`):
///   every concurrent duplicate returns the same copies, one per topic.
/// - *Retries complete partial publishes*: a failed publish may have stored
///   some topics' copies; retrying with the same key completes it without
///   duplicates (backend-specific crash tests).
/// - *A short page is the end of the log*
///   (`a_short_page_means_the_end_of_the_log`):
///   [`read_after`](Self::read_after) answers in seq order with exactly
///   `limit` copies while more follow; a page shorter than `limit` means
///   nothing more is stored after it (replay and gap fill stop there).
/// - *Nothing outside the log* (`read_after_outside_the_log_is_empty`):
///   `limit` 0, `after` at or past the last seq (up to `u64::MAX`) or a
///   topic with nothing stored read nothing; a read never returns another
///   topic's copies.
/// - *The last seq follows publishes* (`last_seq_follows_publishes`):
///   [`last_seq`](Self::last_seq) is 0 for a topic with nothing stored and
///   the seq of the last copy once its publish returned, on every handle;
///   it never runs ahead of what is stored and never goes back (retention
///   deletes old copies, not the counter: backend-specific retention tests).
/// - *Ping* (`ping_answers`): [`ping`](Self::ping) succeeds while the
///   backend answers; *outages* answer [`StoreError::Unavailable`]
///   (backend-specific outage tests).
#[async_trait]
pub trait TopicStore: Send + Sync + 'static {
    /// Stores one copy of `msg` per topic; see the trait's contract.
    async fn publish(&self, msg: &NewTopicMessage) -> Result<Vec<TopicMessage>, StoreError>;

    /// Up to `limit` of `topic`'s messages with `seq > after`, in seq order.
    async fn read_after(
        &self,
        topic: &TopicName,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<TopicMessage>, StoreError>;

    /// The highest seq known to be stored for `topic` (0 when none).
    async fn last_seq(&self, topic: &TopicName) -> Result<Seq, StoreError>;

    /// Succeeds when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Which nodes have subscribers of a topic: topic -> { node } (Redis).
///
/// Memberships are hints, like routes: a member may have died (readers
/// check [`NodeDirectory`]), and a member may have no subscriber left (the
/// node answers a push with the topic as absent).
///
/// Contract (suite: `edgepush_testkit::contract::topic_routes`):
/// - *Read back as written* (`added_memberships_are_read_back`):
///   [`add_topics`](Self::add_topics) makes `node` a member of each topic;
///   [`nodes_of`](Self::nodes_of) lists every member once, also when a node
///   added a topic again.
/// - *Many topics in one call* (`nodes_of_answers_every_topic_asked_in_order`):
///   `nodes_of` answers one list per topic asked, in the order asked (empty
///   for a topic without members, twice for a topic asked twice), in one
///   round trip.
/// - *Removal* (`remove_topics_forgets_only_the_given_memberships`):
///   [`remove_topics`](Self::remove_topics) forgets the named node's
///   membership of the named topics and nothing else; memberships that do
///   not exist are ignored.
/// - *Bulk* (`thousands_of_memberships_are_added_and_removed_in_one_call`):
///   a node's whole index (re-registration after a route store loss) is
///   written and removed in one call each.
/// - *Concurrent writers* (`memberships_added_concurrently_all_land`).
/// - *Freshness*: a membership lasts the store's route TTL after its last
///   add, and `nodes_of` answers only fresh members; a node adds again
///   before that (backend-specific expiry tests).
#[async_trait]
pub trait TopicRoutes: Send + Sync + 'static {
    /// Records that `node` has at least one subscriber of each of `topics`.
    async fn add_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError>;

    /// Forgets `node`'s membership of each of `topics`.
    async fn remove_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError>;

    /// The fresh members of each topic, one entry per input topic, in order.
    async fn nodes_of(&self, topics: &[TopicName]) -> Result<Vec<Vec<NodeId>>, RouteError>;
}

/// One connection in its user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPresence {
    /// The connection.
    pub conn: ConnId,
    /// The node holding it.
    pub node: NodeId,
    /// When it opened, milliseconds since the Unix epoch.
    pub connected_at_ms: i64,
}

/// One node's share of a topic's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNodePresence {
    /// The node.
    pub node: NodeId,
    /// Subscriptions of the topic on the node.
    pub connections: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// One (user, node) entry of a topic's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMember {
    /// The user.
    pub user: UserId,
    /// The node the user's subscriptions are on.
    pub node: NodeId,
    /// How many of the user's connections there are subscribed.
    pub connections: u64,
}

/// A node's changes to one topic's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPresenceWrite {
    /// The topic.
    pub topic: TopicName,
    /// The node's (subscriptions, distinct users) now; `None` when none is
    /// left.
    pub totals: Option<(u64, u64)>,
    /// Users whose subscription count on the node changed, with the count
    /// now (0: the user has none left there).
    pub members: Vec<(UserId, u64)>,
}

/// A node's presence changes, written in one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceWrite {
    /// Connections that opened (`Some(connected_at_ms)`) or closed (`None`).
    pub connections: Vec<(UserId, ConnId, Option<i64>)>,
    /// Topic presence changes.
    pub topics: Vec<TopicPresenceWrite>,
}

impl PresenceWrite {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty() && self.topics.is_empty()
    }
}

/// Who is online and who is subscribed (Redis), written by the nodes that
/// hold the connections and read by the collect API.
///
/// Entries carry the node that wrote them; they are hints like routes:
/// readers drop entries of nodes that are not live ([`NodeDirectory`]), so
/// a crashed node's connections leave presence within its liveness TTL,
/// and may [`forget`](Self::forget) them.
///
/// Contract (suite: `edgepush_testkit::contract::presence_store`):
/// - *Connections read back per user*
///   (`written_connections_are_read_back_per_user`):
///   [`user_connections`](Self::user_connections) answers one list per user
///   asked, in order: every connection written as opened for that user, by
///   any node, with its node and opening time; empty for a user with none.
/// - *Closes leave presence* (`a_closed_connection_leaves_presence`): a
///   connection written as closed (`None`) is no longer listed; the user's
///   other connections are.
/// - *Topic shares per node* (`topic_shares_are_per_node`):
///   [`topic_nodes`](Self::topic_nodes) lists each node's last written
///   share of the topic; a share written as `None` is gone, and no other
///   topic's share is listed.
/// - *Member pages list every entry* (`member_pages_list_every_entry`):
///   [`topic_members`](Self::topic_members) pages, followed from cursor 0
///   until the cursor comes back 0, list every (user, node) entry (maybe
///   more than once) with its count as last written; a count written as 0
///   takes the entry out.
/// - *Forget* (`forget_removes_only_the_named_entries`):
///   [`forget`](Self::forget) removes the named (user, node) entries and the
///   named nodes' shares of the topic, and nothing else.
/// - *Freshness*: entries live for the store's route TTL after their last
///   write; a node writes its live entries again before that
///   (backend-specific expiry tests).
/// - *Bounded reads*: every read is bounded by the user's connections, by
///   the number of nodes, or by the page size asked for.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Writes `node`'s changes.
    async fn write(&self, node: &NodeId, changes: &PresenceWrite) -> Result<(), RouteError>;

    /// The connections of each user, one entry per input user, in order.
    async fn user_connections(
        &self,
        users: &[UserId],
    ) -> Result<Vec<Vec<ConnPresence>>, RouteError>;

    /// Every node's share of `topic`'s presence.
    async fn topic_nodes(&self, topic: &TopicName) -> Result<Vec<TopicNodePresence>, RouteError>;

    /// A page of `topic`'s member entries: about `count` of them from
    /// `cursor` (0 to start), and the cursor of the next page (0 at the end).
    async fn topic_members(
        &self,
        topic: &TopicName,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<TopicMember>, u64), RouteError>;

    /// Removes entries of dead nodes seen by a reader: `members` of
    /// `topic`, and the nodes' shares of it.
    async fn forget(
        &self,
        topic: &TopicName,
        members: &[(UserId, NodeId)],
        nodes: &[NodeId],
    ) -> Result<(), RouteError>;
}
