//! What the handlers remember about each API Gateway connection between
//! its events.
//!
//! API Gateway passes a connection's id with every event, but only
//! `$connect` carries the client's request (its token, its `?after=`), and
//! only an authorizer's context is repeated in the later events. So
//! `$connect` writes a [`ConnectionRecord`]: who holds the connection, until
//! when its token is good, where it asked to resume, on which virtual node;
//! `$default` reads it for every frame, and `$disconnect` removes it.
//!
//! Beside the records the store keeps the two indexes the guarantee needs:
//!
//! - per user and virtual node, the user's open connections, for the
//!   per-user connection cap ([`ConnectionRecords::admit`]);
//! - per virtual node, every connection by the time it must be looked at
//!   again: its token's expiry, or API Gateway's 2-hour lifetime for one
//!   without expiry ([`ConnectionRecords::due`]), for the sweep that closes
//!   connections whose token expired and forgets the ones whose
//!   `$disconnect` never came.
//!
//! And the ack gate that coalesces acks ([`ConnectionRecords::throttle_ack`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::{ConnId, NodeId, RouteError, Seq, UserId};
use edgepush_redis::RedisConnection;

/// A record lives this long by default: API Gateway closes every WebSocket
/// connection after at most 2 hours, so it never expires while its
/// connection lives.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(3 * 60 * 60);

/// API Gateway's longest connection lifetime (plus a margin): a connection
/// older than this is gone, whether or not its `$disconnect` came.
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60 + 10 * 60);

/// One connection, as `$connect` admitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The user holding it.
    pub user: UserId,
    /// The virtual node (API and stage) it belongs to.
    pub node: NodeId,
    /// The token's `exp` (seconds since the Unix epoch), when known: the
    /// connection is closed with 4001 at that time.
    pub expires_at: Option<u64>,
    /// The `?after=` of the connect URL: where the first `resume` without
    /// `after` starts.
    pub after: Option<Seq>,
    /// When `$connect` ran (milliseconds since the Unix epoch).
    pub connected_at_ms: i64,
    /// Whether the first `resume` came: from then on the connection is a
    /// route and dispatch posts to it.
    pub started: bool,
    /// The token's `subscribe` claim: topic patterns the client may
    /// subscribe to on its own (unvalidated, as edge nodes keep them).
    pub subscribe: Vec<String>,
}

impl ConnectionRecord {
    /// When the sweep must look at this connection again: its token's
    /// expiry, or else the end of API Gateway's lifetime limit.
    pub fn due_ms(&self) -> i64 {
        let lifetime_end = self
            .connected_at_ms
            .saturating_add(i64::try_from(MAX_CONNECTION_LIFETIME.as_millis()).unwrap_or(i64::MAX));
        match self.expires_at {
            Some(exp) => i64::try_from(exp)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000)
                .min(lifetime_end),
            None => lifetime_end,
        }
    }

    /// Whether the token has expired at `now_ms` (as edge nodes judge it:
    /// `exp <= now`, in whole seconds).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at
            .is_some_and(|exp| i64::try_from(exp).unwrap_or(i64::MAX) <= now_ms / 1000)
    }
}

/// What [`ConnectionRecords::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Recorded; the user now holds this many connections on the node.
    Admitted(usize),
    /// Refused: the user holds this many already (the cap).
    Full(usize),
}

/// The connections' records and indexes. A port, with the Redis backend
/// [`RedisConnectionRecords`].
#[async_trait]
pub trait ConnectionRecords: Send + Sync + 'static {
    /// Records `conn` unless its user already holds `cap` connections on
    /// its node (connections past [`MAX_CONNECTION_LIFETIME`] do not count),
    /// and indexes it for the sweep. The record lives for `ttl`.
    async fn admit(
        &self,
        conn: &ConnId,
        record: &ConnectionRecord,
        cap: usize,
        ttl: Duration,
    ) -> Result<Admission, RouteError>;

    /// The record of `conn`, if there is one.
    async fn record(&self, conn: &ConnId) -> Result<Option<ConnectionRecord>, RouteError>;

    /// Marks `conn` as started; true for the one call that did it (the
    /// first `resume`), false after that or when there is no record.
    async fn start(&self, conn: &ConnId) -> Result<bool, RouteError>;

    /// Forgets `conn`: its record, its place in the user's connections and
    /// in the sweep index, its ack gate.
    async fn forget(&self, conn: &ConnId, record: &ConnectionRecord) -> Result<(), RouteError>;

    /// The virtual nodes that have connections in the sweep index.
    async fn swept_nodes(&self) -> Result<Vec<NodeId>, RouteError>;

    /// Up to `limit` connections of `node` due at `now_ms` (their token
    /// expired, or their lifetime ended), earliest first.
    async fn due(
        &self,
        node: &NodeId,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ConnId>, RouteError>;

    /// Takes `conn` out of `node`'s sweep index (its record is gone).
    async fn unindex(&self, node: &NodeId, conn: &ConnId) -> Result<(), RouteError>;

    /// Coalesces the acks of `conn`: answers the seq to write now (the
    /// highest acked since the last write) at most once per `interval`, and
    /// `None` while the interval runs, keeping `seq` as pending.
    async fn throttle_ack(
        &self,
        conn: &ConnId,
        seq: Seq,
        interval: Duration,
    ) -> Result<Option<Seq>, RouteError>;

    /// Takes the pending ack of `conn`, if any (at `$disconnect`).
    async fn take_pending_ack(&self, conn: &ConnId) -> Result<Option<Seq>, RouteError>;
}

/// The ack gate as one script, so that concurrent `$default` invocations of
/// one connection agree: `KEYS[1]` is the gate (set while an interval
/// runs), `KEYS[2]` the pending seq; `ARGV` = seq, interval ms, pending TTL
/// ms. Answers the seq to write, or `false`.
const ACK_GATE: &str = r"
local seq = tonumber(ARGV[1])
local pending = tonumber(redis.call('GET', KEYS[2]) or '0')
if pending > seq then seq = pending end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[2])
  return tostring(seq)
end
redis.call('SET', KEYS[2], tostring(seq), 'PX', ARGV[3])
return false
";

/// The cap as one script on the user's connection set (`KEYS[1]`, a ZSET
/// of connection id -> end of its lifetime): drops ended connections, then
/// adds `ARGV[1]` (end `ARGV[2]`) unless `ARGV[4]` are there already;
/// `ARGV[3]` = now, `ARGV[5]` = the set's TTL. Answers the count after, or
/// minus the count held when full. A connection admitted again (a retried
/// `$connect`) is not counted twice.
const ADMIT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local held = redis.call('ZCARD', KEYS[1])
  if held >= tonumber(ARGV[4]) then return -held end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return redis.call('ZCARD', KEYS[1])
";

/// Record fields (short: there is one hash per connection).
mod field {
    pub(super) const USER: &str = "u";
    pub(super) const NODE: &str = "n";
    pub(super) const EXPIRES_AT: &str = "x";
    pub(super) const AFTER: &str = "a";
    pub(super) const CONNECTED_AT: &str = "c";
    pub(super) const STARTED: &str = "s";
    pub(super) const SUBSCRIBE: &str = "p";
}

/// The Redis backend of [`ConnectionRecords`]. Keys, each with one hash
/// tag so that it works unchanged on Redis Cluster, under the route store's
/// prefix:
///
/// | key | type | what |
/// |---|---|---|
/// | `<prefix>:o:{<conn>}` | HASH | the record (`u` user, `n` node, `x` exp, `a` after, `c` connected at, `s` started, `p` subscribe patterns as JSON), with a TTL |
/// | `<prefix>:ag:{<conn>}`, `<prefix>:ap:{<conn>}` | STRING | the ack gate and the pending ack |
/// | `<prefix>:mu:{<user>}:<node>` | ZSET | the user's connections on the node, by end of lifetime (the cap) |
/// | `<prefix>:mx:{<node>}` | ZSET | the node's connections by when they are due (the sweep) |
/// | `<prefix>:mn` | SET | the virtual nodes with a sweep index |
#[derive(Clone)]
pub struct RedisConnectionRecords {
    /// Shared, self-healing connection (one server or a cluster).
    conn: RedisConnection,
    /// Key prefix, the same as the route store's.
    prefix: String,
    /// Bound on every command, so a dead Redis fails fast.
    command_timeout: Duration,
}

impl fmt::Debug for RedisConnectionRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectionRecords")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisConnectionRecords {
    /// Connects to the Redis of `config` (its URL, key prefix and timeouts).
    pub async fn connect(config: &edgepush_redis::RedisConfig) -> Result<Self, RouteError> {
        let conn = RedisConnection::connect(config).await?;
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            command_timeout: config.command_timeout,
        })
    }

    /// The key of `conn`'s record.
    pub fn key(&self, conn: &ConnId) -> String {
        format!("{}:o:{{{}}}", self.prefix, conn)
    }

    /// The keys of `conn`'s ack gate and pending ack (one hash tag: one
    /// cluster slot, as the script needs).
    fn ack_keys(&self, conn: &ConnId) -> (String, String) {
        (
            format!("{}:ag:{{{}}}", self.prefix, conn),
            format!("{}:ap:{{{}}}", self.prefix, conn),
        )
    }

    /// The key of `user`'s connections on `node`.
    fn user_key(&self, user: &UserId, node: &NodeId) -> String {
        format!("{}:mu:{{{}}}:{}", self.prefix, user, node)
    }

    /// The key of `node`'s sweep index.
    fn due_key(&self, node: &NodeId) -> String {
        format!("{}:mx:{{{}}}", self.prefix, node)
    }

    /// The key of the set of swept nodes.
    fn nodes_key(&self) -> String {
        format!("{}:mn", self.prefix)
    }

    /// Runs `cmd` within the command timeout, translating errors.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, RouteError> {
        let mut redis = self.conn.clone();
        self.bounded(op, cmd.query_async(&mut redis)).await
    }

    /// Runs `fut` within the command timeout, translating errors.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RouteError> {
        match tokio::time::timeout(self.command_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e))
                if e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout() =>
            {
                Err(RouteError::Unavailable(format!("{op}: {e}")))
            }
            Ok(Err(e)) => Err(RouteError::Backend(format!("{op}: {e}"))),
            Err(_) => Err(RouteError::Unavailable(format!(
                "{op}: no answer from Redis within {:?}",
                self.command_timeout
            ))),
        }
    }
}

/// Parses a stored number field.
fn number<T: std::str::FromStr>(
    fields: &std::collections::HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, RouteError> {
    fields
        .get(name)
        .map(|s| {
            s.parse()
                .map_err(|_| RouteError::Backend(format!("record field {name} is {s:?}")))
        })
        .transpose()
}

#[async_trait]
impl ConnectionRecords for RedisConnectionRecords {
    async fn admit(
        &self,
        conn: &ConnId,
        record: &ConnectionRecord,
        cap: usize,
        ttl: Duration,
    ) -> Result<Admission, RouteError> {
        let lifetime_end = record
            .connected_at_ms
            .saturating_add(i64::try_from(MAX_CONNECTION_LIFETIME.as_millis()).unwrap_or(i64::MAX));
        let user_key = self.user_key(&record.user, &record.node);
        let mut redis = self.conn.clone();
        let count: i64 = self
            .bounded("admit", async {
                redis::Script::new(ADMIT)
                    .key(&user_key)
                    .arg(conn.as_str())
                    .arg(lifetime_end)
                    .arg(edgepush_core::message::now_ms())
                    .arg(cap)
                    .arg(millis(ttl))
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        if count < 0 {
            return Ok(Admission::Full(usize::try_from(-count).unwrap_or(cap)));
        }

        let mut hset = redis::cmd("HSET");
        hset.arg(self.key(conn))
            .arg(field::USER)
            .arg(record.user.as_str())
            .arg(field::NODE)
            .arg(record.node.as_str())
            .arg(field::CONNECTED_AT)
            .arg(record.connected_at_ms);
        if let Some(exp) = record.expires_at {
            hset.arg(field::EXPIRES_AT).arg(exp);
        }
        if let Some(after) = record.after {
            hset.arg(field::AFTER).arg(after);
        }
        if record.started {
            hset.arg(field::STARTED).arg(1);
        }
        if !record.subscribe.is_empty() {
            // A list of strings: serialising cannot fail.
            let patterns = serde_json::to_string(&record.subscribe).unwrap_or_default();
            hset.arg(field::SUBSCRIBE).arg(patterns);
        }
        let written = async {
            self.run::<()>("write record", redis::cmd("DEL").arg(self.key(conn)))
                .await?;
            self.run::<()>("write record", &hset).await?;
            self.run::<()>(
                "write record",
                redis::cmd("PEXPIRE").arg(self.key(conn)).arg(millis(ttl)),
            )
            .await?;
            self.run::<()>(
                "index connection",
                redis::cmd("ZADD")
                    .arg(self.due_key(&record.node))
                    .arg(record.due_ms())
                    .arg(conn.as_str()),
            )
            .await?;
            self.run::<()>(
                "index node",
                redis::cmd("SADD")
                    .arg(self.nodes_key())
                    .arg(record.node.as_str()),
            )
            .await
        };
        if let Err(e) = written.await {
            // Give the place under the cap back; the client will retry.
            let _ = self
                .run::<()>(
                    "admit rollback",
                    redis::cmd("ZREM").arg(&user_key).arg(conn.as_str()),
                )
                .await;
            return Err(e);
        }
        Ok(Admission::Admitted(usize::try_from(count).unwrap_or(0)))
    }

    async fn record(&self, conn: &ConnId) -> Result<Option<ConnectionRecord>, RouteError> {
        let fields: std::collections::HashMap<String, String> = self
            .run("read record", redis::cmd("HGETALL").arg(self.key(conn)))
            .await?;
        let (Some(user), Some(node)) = (fields.get(field::USER), fields.get(field::NODE)) else {
            return Ok(None);
        };
        let bad = |what: &str, e: edgepush_core::IdError| {
            RouteError::Backend(format!("stored {what} is invalid: {e}"))
        };
        Ok(Some(ConnectionRecord {
            user: UserId::new(user).map_err(|e| bad("user", e))?,
            node: NodeId::new(node).map_err(|e| bad("node", e))?,
            expires_at: number(&fields, field::EXPIRES_AT)?,
            after: number(&fields, field::AFTER)?,
            connected_at_ms: number(&fields, field::CONNECTED_AT)?.unwrap_or(0),
            started: fields.contains_key(field::STARTED),
            subscribe: match fields.get(field::SUBSCRIBE) {
                None => Vec::new(),
                Some(raw) => serde_json::from_str(raw).map_err(|e| {
                    RouteError::Backend(format!("stored subscribe patterns are invalid: {e}"))
                })?,
            },
        }))
    }

    async fn start(&self, conn: &ConnId) -> Result<bool, RouteError> {
        // HSETNX on a missing hash would create one: check the user field
        // in the same script.
        const START: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[2], '1')
";
        let key = self.key(conn);
        let mut redis = self.conn.clone();
        let set: i64 = self
            .bounded("start", async {
                redis::Script::new(START)
                    .key(&key)
                    .arg(field::USER)
                    .arg(field::STARTED)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        Ok(set == 1)
    }

    async fn forget(&self, conn: &ConnId, record: &ConnectionRecord) -> Result<(), RouteError> {
        let (gate, pending) = self.ack_keys(conn);
        // Separate commands: the keys live in different cluster slots.
        self.run::<()>(
            "forget record",
            redis::cmd("DEL")
                .arg(self.key(conn))
                .arg(&gate)
                .arg(&pending),
        )
        .await?;
        self.run::<()>(
            "forget connection",
            redis::cmd("ZREM")
                .arg(self.user_key(&record.user, &record.node))
                .arg(conn.as_str()),
        )
        .await?;
        self.unindex(&record.node, conn).await
    }

    async fn swept_nodes(&self) -> Result<Vec<NodeId>, RouteError> {
        let raw: Vec<String> = self
            .run("swept nodes", redis::cmd("SMEMBERS").arg(self.nodes_key()))
            .await?;
        Ok(raw.iter().filter_map(|s| NodeId::new(s).ok()).collect())
    }

    async fn due(
        &self,
        node: &NodeId,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ConnId>, RouteError> {
        let raw: Vec<String> = self
            .run(
                "due connections",
                redis::cmd("ZRANGE")
                    .arg(self.due_key(node))
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        Ok(raw.iter().filter_map(|s| ConnId::new(s).ok()).collect())
    }

    async fn unindex(&self, node: &NodeId, conn: &ConnId) -> Result<(), RouteError> {
        self.run::<()>(
            "unindex connection",
            redis::cmd("ZREM")
                .arg(self.due_key(node))
                .arg(conn.as_str()),
        )
        .await
    }

    async fn throttle_ack(
        &self,
        conn: &ConnId,
        seq: Seq,
        interval: Duration,
    ) -> Result<Option<Seq>, RouteError> {
        let (gate, pending) = self.ack_keys(conn);
        let mut redis = self.conn.clone();
        let answer: Option<String> = self
            .bounded("ack gate", async move {
                redis::Script::new(ACK_GATE)
                    .key(&gate)
                    .key(&pending)
                    .arg(seq)
                    .arg(millis(interval))
                    .arg(millis(DEFAULT_RECORD_TTL))
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        answer
            .map(|s| {
                s.parse::<Seq>()
                    .map_err(|e| RouteError::Backend(format!("ack gate answered {s:?}: {e}")))
            })
            .transpose()
    }

    async fn take_pending_ack(&self, conn: &ConnId) -> Result<Option<Seq>, RouteError> {
        let (_, pending) = self.ack_keys(conn);
        let raw: Option<String> = self
            .run("take pending ack", redis::cmd("GETDEL").arg(&pending))
            .await?;
        Ok(raw.and_then(|s| s.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_at: Option<u64>) -> ConnectionRecord {
        ConnectionRecord {
            user: UserId::new("alice").unwrap(),
            node: NodeId::new("apigw-a-prod").unwrap(),
            expires_at,
            after: None,
            connected_at_ms: 1_000_000,
            started: false,
            subscribe: Vec::new(),
        }
    }

    #[test]
    fn due_is_the_expiry_or_the_end_of_the_lifetime() {
        let lifetime_end = 1_000_000 + MAX_CONNECTION_LIFETIME.as_millis() as i64;
        assert_eq!(record(None).due_ms(), lifetime_end);
        assert_eq!(record(Some(1_500)).due_ms(), 1_500_000);
        assert_eq!(record(Some(u64::MAX)).due_ms(), lifetime_end);
    }

    #[test]
    fn expiry_is_judged_in_whole_seconds() {
        let r = record(Some(1_500));
        assert!(!r.expired(1_499_999));
        assert!(r.expired(1_500_000));
        assert!(!record(None).expired(i64::MAX));
    }
}
