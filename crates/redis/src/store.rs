//! [`RedisRouteStore`]: the route store and node directory on Redis.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edgepush_core::ports::Heartbeat;
use edgepush_core::{ConnId, NodeDirectory, NodeId, RouteError, RouteStore, UserId};
use futures_util::future::try_join_all;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};

use crate::config::RedisConfig;
use crate::connection::{RedisConnection, map_err};
use crate::keys::{check_prefix, node_key, route_key, slot};

/// Most routes written or deleted by one pipeline: a node re-registering a
/// million connections sends many moderate requests rather than one that
/// blocks Redis (single-threaded) and our timeout.
pub const ROUTE_CHUNK: usize = 1000;

/// What every clone of a store shares.
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) route_ttl_ms: u64,
    command_timeout: Duration,
    /// For logs and errors only: credentials removed.
    url: String,
}

/// The Redis backend of [`RouteStore`] and [`NodeDirectory`].
///
/// Cheap to clone: clones share one multiplexed connection (kept alive and
/// re-established by the `redis` crate's `ConnectionManager`, or its cluster
/// client on a Redis Cluster) and one copy of the settings. Every operation is bounded by
/// [`RedisConfig::command_timeout`] and answers [`RouteError::Unavailable`]
/// while Redis is down or slow; once Redis is back the next operations
/// reconnect by themselves.
#[derive(Clone)]
pub struct RedisRouteStore {
    /// A single server or a cluster; every method works on both.
    pub(crate) conn: RedisConnection,
    pub(crate) settings: Arc<Settings>,
}

impl fmt::Debug for RedisRouteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRouteStore")
            .field("url", &self.settings.url)
            .field("prefix", &self.settings.prefix)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisRouteStore {
    /// Connects to Redis as `config` says.
    ///
    /// Fails with [`RouteError::Unavailable`] when Redis cannot be reached
    /// within about [`RedisConfig::connect_timeout`], and with
    /// [`RouteError::Backend`] when the configuration itself is wrong (a
    /// malformed URL, a key prefix holding `{` or `}`, refused credentials).
    pub async fn connect(config: RedisConfig) -> Result<Self, RouteError> {
        let url = config.redacted_url();
        check_prefix(&config.key_prefix).map_err(|e| RouteError::Backend(e.to_string()))?;
        let conn = RedisConnection::connect(&config).await?;
        tracing::info!(
            redis = %url,
            cluster = config.cluster,
            prefix = %config.key_prefix,
            "connected to Redis"
        );
        let route_ttl_ms = u64::try_from(config.route_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(Self {
            conn,
            settings: Arc::new(Settings {
                prefix: config.key_prefix,
                route_ttl_ms,
                command_timeout: config.command_timeout,
                url,
            }),
        })
    }

    /// Runs `fut` (an operation on Redis) within the command timeout and
    /// translates its errors.
    pub(crate) async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, RouteError> {
        let s = &self.settings;
        match tokio::time::timeout(s.command_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(op, &s.url, e)),
            Err(_) => Err(RouteError::Unavailable(format!(
                "{op}: no answer from Redis at {} within {:?}",
                s.url, s.command_timeout
            ))),
        }
    }

    /// Sends `cmds` pipelined, each with the key it touches, and returns one
    /// reply per command, in order.
    ///
    /// On a single server that is one pipeline (one round trip). A cluster
    /// refuses a pipeline whose keys span hash slots (the `redis` crate
    /// routes a whole pipeline by its first key), so there the commands are
    /// grouped by slot, keeping their order within a group, and the groups'
    /// pipelines are sent concurrently: one round trip per slot group, all
    /// in flight at once over the per-node multiplexed connections.
    pub(crate) async fn pipelined(&self, cmds: Vec<(String, Cmd)>) -> RedisResult<Vec<Value>> {
        let count = cmds.len();
        if !self.conn.is_cluster() {
            let mut pipe = redis::pipe();
            for (_, cmd) in cmds {
                pipe.add_command(cmd);
            }
            let mut conn = self.conn.clone();
            let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
            return check_count(replies, count);
        }
        let mut group_of_slot: HashMap<u16, usize> = HashMap::new();
        let mut groups: Vec<(Pipeline, Vec<usize>)> = Vec::new();
        for (i, (key, cmd)) in cmds.into_iter().enumerate() {
            let g = *group_of_slot
                .entry(slot(key.as_bytes()))
                .or_insert_with(|| {
                    groups.push((redis::pipe(), Vec::new()));
                    groups.len() - 1
                });
            groups[g].0.add_command(cmd);
            groups[g].1.push(i);
        }
        let sent = groups.iter().map(|(pipe, positions)| {
            let mut conn = self.conn.clone();
            async move {
                let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                Ok::<_, RedisError>((positions, check_count(replies, positions.len())?))
            }
        });
        let mut ordered = vec![Value::Nil; count];
        for (positions, replies) in try_join_all(sent).await? {
            for (&i, reply) in positions.iter().zip(replies) {
                ordered[i] = reply;
            }
        }
        Ok(ordered)
    }

    /// Writes `routes` (all held by `node`) in pipelines of at most
    /// [`ROUTE_CHUNK`] routes: per user one `HSET` of all its fields and one
    /// `PEXPIRE` refreshing the hash's TTL.
    async fn write_routes(
        &self,
        routes: &[(&UserId, &ConnId)],
        node: &NodeId,
    ) -> Result<(), RouteError> {
        for chunk in routes.chunks(ROUTE_CHUNK) {
            let mut cmds = Vec::new();
            for (user, conns) in group_by_user(chunk) {
                let key = route_key(&self.settings.prefix, user);
                let mut hset = redis::cmd("HSET");
                hset.arg(&key);
                for conn in conns {
                    hset.arg(conn.as_str()).arg(node.as_str());
                }
                let mut pexpire = redis::cmd("PEXPIRE");
                pexpire.arg(&key).arg(self.settings.route_ttl_ms);
                cmds.push((key.clone(), hset));
                cmds.push((key, pexpire));
            }
            self.bounded("add_routes", self.pipelined(cmds)).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl RouteStore for RedisRouteStore {
    async fn add_route(
        &self,
        user: &UserId,
        conn: &ConnId,
        node: &NodeId,
    ) -> Result<(), RouteError> {
        self.write_routes(&[(user, conn)], node).await
    }

    async fn add_routes(
        &self,
        routes: &[(UserId, ConnId)],
        node: &NodeId,
    ) -> Result<(), RouteError> {
        let routes: Vec<(&UserId, &ConnId)> = routes.iter().map(|(u, c)| (u, c)).collect();
        self.write_routes(&routes, node).await
    }

    async fn remove_routes(&self, routes: &[(UserId, ConnId)]) -> Result<(), RouteError> {
        for chunk in routes.chunks(ROUTE_CHUNK) {
            let chunk: Vec<(&UserId, &ConnId)> = chunk.iter().map(|(u, c)| (u, c)).collect();
            let mut cmds = Vec::new();
            for (user, conns) in group_by_user(&chunk) {
                // Redis deletes the hash with its last field.
                let key = route_key(&self.settings.prefix, user);
                let mut hdel = redis::cmd("HDEL");
                hdel.arg(&key);
                for conn in conns {
                    hdel.arg(conn.as_str());
                }
                cmds.push((key, hdel));
            }
            self.bounded("remove_routes", self.pipelined(cmds)).await?;
        }
        Ok(())
    }

    async fn routes_of(&self, users: &[UserId]) -> Result<Vec<Vec<(ConnId, NodeId)>>, RouteError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = users
            .iter()
            .map(|user| {
                let key = route_key(&self.settings.prefix, user);
                let mut hgetall = redis::cmd("HGETALL");
                hgetall.arg(&key);
                (key, hgetall)
            })
            .collect();
        let replies = self.bounded("routes_of", self.pipelined(cmds)).await?;
        users
            .iter()
            .zip(replies)
            .map(|(user, reply)| parse_routes(user, reply))
            .collect()
    }

    async fn ping(&self) -> Result<(), RouteError> {
        let mut conn = self.conn.clone();
        self.bounded("ping", redis::cmd("PING").exec_async(&mut conn))
            .await
    }
}

#[async_trait]
impl NodeDirectory for RedisRouteStore {
    async fn heartbeat(
        &self,
        node: &NodeId,
        push_url: &str,
        ttl: Duration,
    ) -> Result<Heartbeat, RouteError> {
        let key = node_key(&self.settings.prefix, node);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let beat = async {
            // Refresh only an existing entry: a nil answer tells us the
            // entry was lost (first start, expiry, FLUSHALL, Redis restart)
            // and the node's routes may be gone with it.
            let refreshed: Value = redis::cmd("SET")
                .arg(&key)
                .arg(push_url)
                .arg("XX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await?;
            if refreshed != Value::Nil {
                return Ok(Heartbeat::Refreshed);
            }
            redis::cmd("SET")
                .arg(&key)
                .arg(push_url)
                .arg("PX")
                .arg(ttl_ms)
                .exec_async(&mut conn)
                .await?;
            Ok(Heartbeat::Recreated)
        };
        let outcome = self.bounded("heartbeat", beat).await?;
        if outcome == Heartbeat::Recreated {
            tracing::debug!(node = %node, "node liveness entry (re)created");
        }
        Ok(outcome)
    }

    async fn live_nodes(&self, nodes: &[NodeId]) -> Result<HashMap<NodeId, String>, RouteError> {
        if nodes.is_empty() {
            return Ok(HashMap::new());
        }
        // Pipelined GETs rather than one MGET: in a cluster each node key
        // lives in its own slot, and MGET across slots is refused.
        let cmds = nodes
            .iter()
            .map(|node| {
                let key = node_key(&self.settings.prefix, node);
                let mut get = redis::cmd("GET");
                get.arg(&key);
                (key, get)
            })
            .collect();
        let replies = self.bounded("live_nodes", self.pipelined(cmds)).await?;
        let mut live = HashMap::with_capacity(nodes.len());
        for (node, reply) in nodes.iter().zip(replies) {
            match reply {
                Value::Nil => {}
                other => match bytes_of(other).map(String::from_utf8) {
                    Some(Ok(url)) => {
                        live.insert(node.clone(), url);
                    }
                    _ => {
                        tracing::warn!(node = %node, "ignoring node entry that is not a UTF-8 string")
                    }
                },
            }
        }
        Ok(live)
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), RouteError> {
        let mut conn = self.conn.clone();
        self.bounded(
            "remove_node",
            redis::cmd("DEL")
                .arg(node_key(&self.settings.prefix, node))
                .exec_async(&mut conn),
        )
        .await
    }
}

/// `routes` grouped by user, users in order of first appearance, so each
/// user's key is written by one command.
fn group_by_user<'a>(routes: &[(&'a UserId, &'a ConnId)]) -> Vec<(&'a UserId, Vec<&'a ConnId>)> {
    let mut index: HashMap<&UserId, usize> = HashMap::new();
    let mut groups: Vec<(&UserId, Vec<&ConnId>)> = Vec::new();
    for &(user, conn) in routes {
        match index.get(user) {
            Some(&i) => groups[i].1.push(conn),
            None => {
                index.insert(user, groups.len());
                groups.push((user, vec![conn]));
            }
        }
    }
    groups
}

/// The routes in one `HGETALL` reply (a flat array in RESP2, a map in
/// RESP3). A field whose connection id or node id is not a valid id is
/// skipped with a warning: one corrupt entry must not hide a user's other
/// routes.
fn parse_routes(user: &UserId, reply: Value) -> Result<Vec<(ConnId, NodeId)>, RouteError> {
    let pairs = hash_pairs(reply).map_err(|other| {
        RouteError::Backend(format!(
            "routes_of: unexpected reply for user {user}: {other:?}"
        ))
    })?;
    let mut routes = Vec::with_capacity(pairs.len());
    for (field, value) in pairs {
        let conn = text_of(field).map(ConnId::new);
        let node = text_of(value).map(NodeId::new);
        match (conn, node) {
            (Some(Ok(conn)), Some(Ok(node))) => routes.push((conn, node)),
            (conn, node) => tracing::warn!(
                user = %user,
                conn = ?conn,
                node = ?node,
                "skipping a route field that does not hold valid ids"
            ),
        }
    }
    Ok(routes)
}

/// The (field, value) pairs of an `HGETALL` reply: a flat array in RESP2, a
/// map in RESP3, nil for a missing key. Any other reply is handed back.
pub(crate) fn hash_pairs(reply: Value) -> Result<Vec<(Value, Value)>, Value> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => Ok(pairs),
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut pairs = Vec::with_capacity(items.len() / 2);
            while let (Some(field), Some(value)) = (items.next(), items.next()) {
                pairs.push((field, value));
            }
            Ok(pairs)
        }
        other => Err(other),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// A string reply as text (lossy: a non-UTF-8 byte becomes U+FFFD, which no
/// id accepts, so the caller's validation refuses it).
pub(crate) fn text_of(value: Value) -> Option<String> {
    bytes_of(value).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `replies` if there is one per command sent (`sent`), else a protocol
/// error (reported as [`RouteError::Backend`]).
fn check_count(replies: Vec<Value>, sent: usize) -> RedisResult<Vec<Value>> {
    if replies.len() == sent {
        return Ok(replies);
    }
    Err(RedisError::from((
        ErrorKind::ClientError,
        "pipeline answered with the wrong number of replies",
        format!("{} replies to {sent} commands", replies.len()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).expect("valid user id")
    }

    fn conn(s: &str) -> ConnId {
        ConnId::new(s).expect("valid conn id")
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn grouping_keeps_first_appearance_order() {
        let (a, b) = (user("a"), user("b"));
        let (c1, c2, c3) = (conn("1"), conn("2"), conn("3"));
        let routes = [(&b, &c1), (&a, &c2), (&b, &c3)];
        let groups = group_by_user(&routes);
        assert_eq!(groups, vec![(&b, vec![&c1, &c3]), (&a, vec![&c2])]);
    }

    #[test]
    fn hgetall_replies_parse_in_both_protocols_and_skip_bad_fields() {
        let u = user("u");
        let resp2 = Value::Array(vec![
            bulk("c1"),
            bulk("n1"),
            bulk("bad conn"),
            bulk("n1"),
            bulk("c2"),
            Value::BulkString(vec![0xff]),
            bulk("c3"),
            bulk("n2"),
        ]);
        let routes = parse_routes(&u, resp2).expect("parsed");
        let names: Vec<(&str, &str)> = routes
            .iter()
            .map(|(c, n)| (c.as_str(), n.as_str()))
            .collect();
        assert_eq!(names, vec![("c1", "n1"), ("c3", "n2")]);

        let resp3 = Value::Map(vec![(bulk("c9"), bulk("n9"))]);
        assert_eq!(parse_routes(&u, resp3).expect("parsed").len(), 1);
        assert!(parse_routes(&u, Value::Nil).expect("parsed").is_empty());
        assert!(matches!(
            parse_routes(&u, Value::Int(3)),
            Err(RouteError::Backend(_))
        ));
    }
}
