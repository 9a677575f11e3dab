//! The Redis key layout, in one place.
//!
//! Every key carries exactly one hash tag (`{...}`): the user id for route
//! and user presence keys, the node id for liveness keys, the topic for
//! topic keys. In Redis Cluster all of one user's (or topic's) keys
//! therefore live in one slot, and keys of different users spread over the
//! cluster. Ids and topic names cannot contain `{` or `}` (see
//! [`edgepush_core::id`], [`edgepush_core::topic`]), and the prefix is
//! checked not to, so the tag is always the id.

use edgepush_core::{NodeId, TopicName, UserId};

/// Why a key prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key prefix must not contain '{{' or '}}' (they would steal the hash tag): {0:?}")]
pub struct BadPrefix(pub String);

/// Checks that `prefix` leaves the hash tag to the id.
pub fn check_prefix(prefix: &str) -> Result<(), BadPrefix> {
    if prefix.contains(['{', '}']) {
        return Err(BadPrefix(prefix.to_owned()));
    }
    Ok(())
}

/// The HASH of `user`'s routes: field connection id, value node id.
pub fn route_key(prefix: &str, user: &UserId) -> String {
    format!("{prefix}:r:{{{user}}}")
}

/// The STRING saying `node` is alive: its push URL, with a short TTL.
pub fn node_key(prefix: &str, node: &NodeId) -> String {
    format!("{prefix}:n:{{{node}}}")
}

/// The ZSET of the nodes with subscribers of `topic`: member node id, score
/// the time (ms since the epoch) the membership expires.
pub fn topic_key(prefix: &str, topic: &TopicName) -> String {
    format!("{prefix}:t:{{{topic}}}")
}

/// The HASH of `user`'s connections for presence: field connection id,
/// value `"<node> <connected at, ms since the epoch>"`.
pub fn user_presence_key(prefix: &str, user: &UserId) -> String {
    format!("{prefix}:pu:{{{user}}}")
}

/// The HASH of each node's share of `topic`'s presence: field node id, value
/// `"<subscriptions> <distinct users>"`.
pub fn topic_counts_key(prefix: &str, topic: &TopicName) -> String {
    format!("{prefix}:pc:{{{topic}}}")
}

/// The HASH of `topic`'s members: field `"<user>/<node>"` (`/` is in no user
/// or node id), value the user's subscriptions there.
pub fn topic_members_key(prefix: &str, topic: &TopicName) -> String {
    format!("{prefix}:pm:{{{topic}}}")
}

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// text between the first `{` and the next `}`, when not empty) or else of
/// the whole key, modulo [`SLOTS`]. The store groups pipelined commands by
/// it, since a cluster refuses a pipeline whose keys span slots. (The
/// `redis` crate computes the same value but does not export it.)
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).expect("valid user id")
    }

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("valid node id")
    }

    #[test]
    fn route_keys_tag_the_user() {
        assert_eq!(route_key("ep", &user("alice")), "ep:r:{alice}");
        assert_eq!(
            route_key("prod:eu", &user("tenant:42@example.com")),
            "prod:eu:r:{tenant:42@example.com}"
        );
    }

    #[test]
    fn node_keys_tag_the_node() {
        assert_eq!(node_key("ep", &node("edge-1")), "ep:n:{edge-1}");
        assert_eq!(node_key("", &node("n")), ":n:{n}");
    }

    #[test]
    fn route_and_node_keys_never_collide() {
        // A user and a node with the same name get different keys.
        assert_ne!(route_key("ep", &user("x")), node_key("ep", &node("x")));
    }

    #[test]
    fn slots_match_redis_cluster() {
        // The check value of CRC-16/XMODEM, and examples from the Redis
        // Cluster specification and the redis crate's tests.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"{"), crc16_xmodem(b"{") % SLOTS);
        assert_eq!(slot(b""), 0);
        // A user's route key lands in the slot of the user id.
        assert_eq!(
            slot(route_key("ep", &user("alice")).as_bytes()),
            slot(b"alice")
        );
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(check_prefix("ep").is_ok());
        assert!(check_prefix("test:1234:ab").is_ok());
        assert_eq!(check_prefix("e{p"), Err(BadPrefix("e{p".into())));
        assert!(check_prefix("ep}").is_err());
    }
}
