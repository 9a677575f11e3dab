//! The topic subscriptions of managed-edge connections (API Gateway
//! WebSocket connections, `functions/connections`), which no edge node
//! holds in memory: the connections function writes them on `subscribe`,
//! dispatch reads them to post a topic message to each subscriber.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>:ms:{<conn>}` | SET | the topics `conn` is subscribed to |
//! | `<prefix>:mt:{<topic>}:<node>` | SET | the connections of virtual node `node` subscribed to `topic` |
//! | `<prefix>:mp:{<conn>}` | HASH | the topics `conn` counts in topic presence: field topic, value its user |
//!
//! Topic presence of a virtual node is the edge nodes' presence layout
//! ([`crate::presence`]: `pc:{<topic>}` per-node counts, `pm:{<topic>}`
//! per user and node), kept by many concurrent function invocations
//! instead of one node process: each join or leave is one script on the
//! topic's two keys (one hash tag, one slot), so the counts stay exact.
//! `mp:{<conn>}` makes each join undone exactly once (by unsubscribe or by
//! the connection's end, whichever takes it first).
//!
//! Both live the route TTL after their last write (a managed connection
//! lasts 2 hours at most). The node's membership of the topic itself is an
//! ordinary [`TopicRoutes`](edgepush_core::TopicRoutes) entry, so fan-out
//! finds the virtual node like any edge node.

use edgepush_core::{ConnId, NodeId, RouteError, TopicName, UserId};
use redis::Value;

use crate::keys::{topic_counts_key, topic_members_key};
use crate::presence::member_field;
use crate::store::{RedisRouteStore, hash_pairs, text_of};

fn conn_topics_key(prefix: &str, conn: &ConnId) -> String {
    format!("{prefix}:ms:{{{conn}}}")
}

fn subscribers_key(prefix: &str, topic: &TopicName, node: &NodeId) -> String {
    format!("{prefix}:mt:{{{topic}}}:{node}")
}

fn presence_topics_key(prefix: &str, conn: &ConnId) -> String {
    format!("{prefix}:mp:{{{conn}}}")
}

/// One join (`ARGV[3]` = 1) or leave (-1) of a topic's presence:
/// `KEYS[1]` the members HASH (field `ARGV[1]` = `user/node`), `KEYS[2]`
/// the per-node counts HASH (field `ARGV[2]` = node, value `"<subs>
/// <users>"`), `ARGV[4]` the keys' TTL in ms.
const TOPIC_PRESENCE: &str = r"
local delta = tonumber(ARGV[3])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
local users = 0
if delta > 0 and n == delta then users = 1 end
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if delta < 0 then users = -1 end
end
local c, u = 0, 0
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if cur then
  local sp = string.find(cur, ' ')
  if sp then
    c = tonumber(string.sub(cur, 1, sp - 1)) or 0
    u = tonumber(string.sub(cur, sp + 1)) or 0
  end
end
c = c + delta
u = u + users
if c <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  if u < 0 then u = 0 end
  redis.call('HSET', KEYS[2], ARGV[2], c .. ' ' .. u)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return c
";

/// Takes one field (`ARGV[1]`) of a HASH: its value, deleted.
const TAKE_FIELD: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
";

/// Takes a whole HASH: its fields and values, deleted.
const TAKE_HASH: &str = r"
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v
";

impl RedisRouteStore {
    /// Records `conn` (of virtual node `node`) as a subscriber of `topic`;
    /// answers how many topics `conn` holds now.
    pub async fn managed_subscribe(
        &self,
        node: &NodeId,
        conn: &ConnId,
        topic: &TopicName,
    ) -> Result<usize, RouteError> {
        let prefix = &self.settings.prefix;
        let ttl = self.settings.route_ttl_ms;
        let (mine, theirs) = (
            conn_topics_key(prefix, conn),
            subscribers_key(prefix, topic, node),
        );
        let mut cmds = Vec::with_capacity(5);
        for (key, member) in [(&mine, topic.as_str()), (&theirs, conn.as_str())] {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(key).arg(member);
            let mut pexpire = redis::cmd("PEXPIRE");
            pexpire.arg(key).arg(ttl);
            cmds.push((key.clone(), sadd));
            cmds.push((key.clone(), pexpire));
        }
        let mut scard = redis::cmd("SCARD");
        scard.arg(&mine);
        cmds.push((mine.clone(), scard));
        let replies = self
            .bounded("managed_subscribe", self.pipelined(cmds))
            .await?;
        match replies.last() {
            Some(Value::Int(n)) => Ok(usize::try_from(*n).unwrap_or(0)),
            other => Err(RouteError::Backend(format!(
                "managed_subscribe: SCARD answered {other:?}"
            ))),
        }
    }

    /// Removes `conn`'s subscription of `topic`; false when it had none.
    pub async fn managed_unsubscribe(
        &self,
        node: &NodeId,
        conn: &ConnId,
        topic: &TopicName,
    ) -> Result<bool, RouteError> {
        let prefix = &self.settings.prefix;
        let mut mine = redis::cmd("SREM");
        mine.arg(conn_topics_key(prefix, conn)).arg(topic.as_str());
        let mut theirs = redis::cmd("SREM");
        theirs
            .arg(subscribers_key(prefix, topic, node))
            .arg(conn.as_str());
        let replies = self
            .bounded(
                "managed_unsubscribe",
                self.pipelined(vec![
                    (conn_topics_key(prefix, conn), mine),
                    (subscribers_key(prefix, topic, node), theirs),
                ]),
            )
            .await?;
        Ok(matches!(replies.first(), Some(Value::Int(n)) if *n > 0))
    }

    /// The topics `conn` is subscribed to.
    pub async fn managed_topics(&self, conn: &ConnId) -> Result<Vec<TopicName>, RouteError> {
        let key = conn_topics_key(&self.settings.prefix, conn);
        let topics = self.set_members("managed_topics", key).await?;
        // `parse_internal`: `$broadcast` is one of them.
        Ok(topics
            .iter()
            .filter_map(|t| TopicName::parse_internal(t).ok())
            .collect())
    }

    /// Forgets every subscription of `conn` (its connection ended).
    pub async fn managed_forget(&self, node: &NodeId, conn: &ConnId) -> Result<(), RouteError> {
        let prefix = &self.settings.prefix;
        let topics = self.managed_topics(conn).await?;
        let mut cmds: Vec<(String, redis::Cmd)> = topics
            .iter()
            .map(|topic| {
                let key = subscribers_key(prefix, topic, node);
                let mut srem = redis::cmd("SREM");
                srem.arg(&key).arg(conn.as_str());
                (key, srem)
            })
            .collect();
        let mine = conn_topics_key(prefix, conn);
        let mut del = redis::cmd("DEL");
        del.arg(&mine);
        cmds.push((mine, del));
        self.bounded("managed_forget", self.pipelined(cmds)).await?;
        Ok(())
    }

    /// The connections of virtual node `node` subscribed to `topic`.
    pub async fn managed_subscribers(
        &self,
        node: &NodeId,
        topic: &TopicName,
    ) -> Result<Vec<ConnId>, RouteError> {
        let key = subscribers_key(&self.settings.prefix, topic, node);
        let conns = self.set_members("managed_subscribers", key).await?;
        Ok(conns.iter().filter_map(|c| ConnId::new(c).ok()).collect())
    }

    /// Counts `conn` (of `user`, on virtual node `node`) in `topic`'s
    /// presence, once however often it is called.
    pub async fn managed_presence_join(
        &self,
        node: &NodeId,
        user: &UserId,
        conn: &ConnId,
        topic: &TopicName,
    ) -> Result<(), RouteError> {
        let key = presence_topics_key(&self.settings.prefix, conn);
        let mut hsetnx = redis::cmd("HSETNX");
        hsetnx.arg(&key).arg(topic.as_str()).arg(user.as_str());
        let mut pexpire = redis::cmd("PEXPIRE");
        pexpire.arg(&key).arg(self.settings.route_ttl_ms);
        let replies = self
            .bounded(
                "managed presence join",
                self.pipelined(vec![(key.clone(), hsetnx), (key, pexpire)]),
            )
            .await?;
        if matches!(replies.first(), Some(Value::Int(1))) {
            self.topic_presence(node, user, topic, 1).await?;
        }
        Ok(())
    }

    /// Takes `conn` out of `topic`'s presence, if it counted there.
    pub async fn managed_presence_leave(
        &self,
        node: &NodeId,
        conn: &ConnId,
        topic: &TopicName,
    ) -> Result<(), RouteError> {
        let key = presence_topics_key(&self.settings.prefix, conn);
        let mut redis = self.conn.clone();
        let user: Option<String> = self
            .bounded(
                "managed presence leave",
                redis::Script::new(TAKE_FIELD)
                    .key(&key)
                    .arg(topic.as_str())
                    .invoke_async(&mut redis),
            )
            .await?;
        if let Some(user) = user.and_then(|u| UserId::new(u).ok()) {
            self.topic_presence(node, &user, topic, -1).await?;
        }
        Ok(())
    }

    /// Takes `conn` out of the presence of every topic it counted in (its
    /// connection ended).
    pub async fn managed_presence_forget(
        &self,
        node: &NodeId,
        conn: &ConnId,
    ) -> Result<(), RouteError> {
        let key = presence_topics_key(&self.settings.prefix, conn);
        let mut redis = self.conn.clone();
        let taken: Value = self
            .bounded(
                "managed presence forget",
                redis::Script::new(TAKE_HASH)
                    .key(&key)
                    .invoke_async(&mut redis),
            )
            .await?;
        let pairs = hash_pairs(taken).map_err(|other| {
            RouteError::Backend(format!(
                "managed presence forget: unexpected reply {other:?}"
            ))
        })?;
        for (topic, user) in pairs {
            let (Some(topic), Some(user)) = (text_of(topic), text_of(user)) else {
                continue;
            };
            let (Ok(topic), Ok(user)) = (TopicName::parse_internal(&topic), UserId::new(user))
            else {
                continue;
            };
            self.topic_presence(node, &user, &topic, -1).await?;
        }
        Ok(())
    }

    /// One join (`delta` 1) or leave (-1) of `user` on `node` in `topic`'s
    /// presence ([`TOPIC_PRESENCE`]).
    async fn topic_presence(
        &self,
        node: &NodeId,
        user: &UserId,
        topic: &TopicName,
        delta: i64,
    ) -> Result<(), RouteError> {
        let prefix = &self.settings.prefix;
        let mut redis = self.conn.clone();
        let _: i64 = self
            .bounded(
                "managed topic presence",
                redis::Script::new(TOPIC_PRESENCE)
                    .key(topic_members_key(prefix, topic))
                    .key(topic_counts_key(prefix, topic))
                    .arg(member_field(user, node))
                    .arg(node.as_str())
                    .arg(delta)
                    .arg(self.settings.route_ttl_ms)
                    .invoke_async(&mut redis),
            )
            .await?;
        Ok(())
    }

    /// The members of the SET at `key`.
    async fn set_members(&self, op: &'static str, key: String) -> Result<Vec<String>, RouteError> {
        let mut smembers = redis::cmd("SMEMBERS");
        smembers.arg(&key);
        let replies = self
            .bounded(op, self.pipelined(vec![(key, smembers)]))
            .await?;
        Ok(members(replies))
    }
}

/// The members of the one SET a pipeline of one `SMEMBERS` answered.
fn members(replies: Vec<Value>) -> Vec<String> {
    match replies.into_iter().next() {
        Some(Value::Array(items)) | Some(Value::Set(items)) => {
            items.into_iter().filter_map(text_of).collect()
        }
        _ => Vec::new(),
    }
}
