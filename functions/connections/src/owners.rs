//! Which user holds an API Gateway connection, for the events that do not
//! say.
//!
//! When a REQUEST authorizer admits a connection, API Gateway repeats its
//! context (`userId`) in every later event of that connection, `$disconnect`
//! and `$default` included. When the token is verified in process instead,
//! only `$connect` carries it (in its query string or headers): the user is
//! then remembered here, under the connection id, for the connection's
//! lifetime, so `$disconnect` can remove the right route and acks can be
//! recorded for the right user.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::{ConnId, RouteError, Seq, UserId};
use edgepush_redis::RedisConnection;
use redis::AsyncCommands;

/// The owner of a connection is remembered for this long by default: API
/// Gateway closes every WebSocket connection after at most 2 hours, so an
/// entry never expires while its connection lives.
pub const DEFAULT_OWNER_TTL: Duration = Duration::from_secs(3 * 60 * 60);

/// Connection id -> user id, for connections whose events carry no
/// authorizer context.
#[async_trait]
pub trait ConnectionOwners: Send + Sync + 'static {
    /// Remembers that `user` holds `conn`, for `ttl`.
    async fn remember(&self, conn: &ConnId, user: &UserId, ttl: Duration)
    -> Result<(), RouteError>;

    /// The user holding `conn`, if remembered.
    async fn owner(&self, conn: &ConnId) -> Result<Option<UserId>, RouteError>;

    /// Forgets `conn` (it closed).
    async fn forget(&self, conn: &ConnId) -> Result<(), RouteError>;

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

/// The Redis backend of [`ConnectionOwners`]: one string key per
/// connection, `<prefix>:o:{<connection id>}` = user id, with a TTL. The key
/// holds one hash tag, so it works unchanged on Redis Cluster, next to the
/// route keys of `edgepush-redis` (same prefix).
#[derive(Clone)]
pub struct RedisConnectionOwners {
    /// Shared, self-healing connection (one server or a cluster).
    conn: RedisConnection,
    /// Key prefix, the same as the route store's.
    prefix: String,
    /// Bound on every command, so a dead Redis fails fast.
    command_timeout: Duration,
}

impl fmt::Debug for RedisConnectionOwners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectionOwners")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisConnectionOwners {
    /// Connects to the Redis of `config` (its URL, key prefix and timeouts).
    pub async fn connect(config: &edgepush_redis::RedisConfig) -> Result<Self, RouteError> {
        let conn = RedisConnection::connect(config).await?;
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            command_timeout: config.command_timeout,
        })
    }

    /// The key of `conn`'s owner.
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

#[async_trait]
impl ConnectionOwners for RedisConnectionOwners {
    async fn remember(
        &self,
        conn: &ConnId,
        user: &UserId,
        ttl: Duration,
    ) -> Result<(), RouteError> {
        let key = self.key(conn);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut redis = self.conn.clone();
        self.bounded("remember owner", async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(user.as_str())
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut redis)
                .await
        })
        .await
    }

    async fn owner(&self, conn: &ConnId) -> Result<Option<UserId>, RouteError> {
        let key = self.key(conn);
        let mut redis = self.conn.clone();
        let raw: Option<String> = self
            .bounded("read owner", async move { redis.get(&key).await })
            .await?;
        raw.map(|s| {
            UserId::new(&s)
                .map_err(|e| RouteError::Backend(format!("stored owner is invalid: {e}")))
        })
        .transpose()
    }

    async fn forget(&self, conn: &ConnId) -> Result<(), RouteError> {
        let key = self.key(conn);
        let mut redis = self.conn.clone();
        self.bounded(
            "forget owner",
            async move { redis.del::<_, ()>(&key).await },
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
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut redis = self.conn.clone();
        let answer: Option<String> = self
            .bounded("ack gate", async move {
                redis::Script::new(ACK_GATE)
                    .key(&gate)
                    .key(&pending)
                    .arg(seq)
                    .arg(interval_ms)
                    .arg(DEFAULT_OWNER_TTL.as_millis() as u64)
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
        let mut redis = self.conn.clone();
        let raw: Option<String> = self
            .bounded("take pending ack", async move {
                redis::cmd("GETDEL")
                    .arg(&pending)
                    .query_async(&mut redis)
                    .await
            })
            .await?;
        Ok(raw.and_then(|s| s.parse().ok()))
    }
}
