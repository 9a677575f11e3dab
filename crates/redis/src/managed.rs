//! The topic subscriptions of managed-edge connections (API Gateway
//! WebSocket connections, `functions/connections`), which no edge node
//! holds in memory: the connections function writes them on `subscribe`,
//! dispatch reads them to post a topic message to each subscriber.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>:ms:{<conn>}` | SET | the topics `conn` is subscribed to |
//! | `<prefix>:mt:{<topic>}:<node>` | SET | the connections of virtual node `node` subscribed to `topic` |
//!
//! Both live the route TTL after their last write (a managed connection
//! lasts 2 hours at most). The node's membership of the topic itself is an
//! ordinary [`TopicRoutes`](edgepush_core::TopicRoutes) entry, so fan-out
//! finds the virtual node like any edge node.

use edgepush_core::{ConnId, NodeId, RouteError, TopicName};
use redis::Value;

use crate::store::{RedisRouteStore, text_of};

fn conn_topics_key(prefix: &str, conn: &ConnId) -> String {
    format!("{prefix}:ms:{{{conn}}}")
}

fn subscribers_key(prefix: &str, topic: &TopicName, node: &NodeId) -> String {
    format!("{prefix}:mt:{{{topic}}}:{node}")
}

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
        Ok(topics
            .iter()
            .filter_map(|t| TopicName::new(t).ok())
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
