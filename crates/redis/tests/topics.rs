//! Topic routes and presence of `RedisRouteStore` against a real Redis
//! (`EDGEPUSH_TEST_REDIS_URL`), each test under a key prefix of its own:
//! what is this adapter's own (key layout, expiry of members, deletion of
//! empty hashes); the ports' rules are in the contract suites
//! (`contract.rs`).

use std::time::Duration;

use anyhow::{Result, ensure};
use edgepush_core::ports::{PresenceWrite, TopicPresenceWrite};
use edgepush_core::{ConnId, PresenceStore, TopicName, TopicRoutes, UserId};
use edgepush_redis::keys::{topic_key, topic_members_key};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::{delete_prefix, node, redis_url, unique_prefix, user};
use redis::AsyncCommands;

async fn connect(prefix: &str, ttl: Duration) -> Result<RedisRouteStore> {
    Ok(RedisRouteStore::connect(RedisConfig {
        key_prefix: prefix.to_owned(),
        route_ttl: ttl,
        ..RedisConfig::new(redis_url()?)
    })
    .await?)
}

fn t(s: &str) -> TopicName {
    TopicName::parse_internal(s).expect("topic")
}

#[tokio::test]
async fn topic_memberships_come_go_and_expire_per_node() -> Result<()> {
    let prefix = unique_prefix("topics");
    let store = connect(&prefix, Duration::from_secs(600)).await?;
    let topics: Vec<TopicName> = (0..1500).map(|i| t(&format!("room:{i}"))).collect();
    store.add_topics(&node("a"), &topics).await?;
    store
        .add_topics(&node("b"), &[topics[3].clone(), t("$broadcast")])
        .await?;
    let got = store
        .nodes_of(&[
            topics[3].clone(),
            topics[1499].clone(),
            t("none"),
            t("$broadcast"),
        ])
        .await?;
    let mut first = got[0].clone();
    first.sort();
    assert_eq!(first, vec![node("a"), node("b")]);
    assert_eq!(got[1], vec![node("a")]);
    assert!(got[2].is_empty());
    assert_eq!(got[3], vec![node("b")]);
    store.remove_topics(&node("a"), &topics[..1000]).await?;
    assert_eq!(store.nodes_of(&topics[3..4]).await?, vec![vec![node("b")]]);
    assert!(store.nodes_of(&topics[..1]).await?[0].is_empty());
    assert!(store.nodes_of(&[]).await?.is_empty());

    // A node that stops refreshing drops out on its own, while another
    // node keeps the key alive.
    let short = connect(&prefix, Duration::from_millis(300)).await?;
    short.add_topics(&node("c"), &topics[1499..]).await?;
    tokio::time::sleep(Duration::from_millis(450)).await;
    store.add_topics(&node("a"), &topics[1499..]).await?;
    assert_eq!(
        store.nodes_of(&topics[1499..]).await?,
        vec![vec![node("a")]]
    );
    let client = redis::Client::open(redis_url()?)?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let members: Vec<String> = raw.zrange(topic_key(&prefix, &topics[1499]), 0, -1).await?;
    assert_eq!(
        members,
        vec!["a".to_owned()],
        "expired members are collected"
    );
    let pttl: i64 = raw.pttl(topic_key(&prefix, &topics[1499])).await?;
    ensure!(pttl > 0 && pttl <= 600_000, "PTTL {pttl}");
    delete_prefix(&redis_url()?, &prefix).await?;
    Ok(())
}

#[tokio::test]
async fn presence_is_written_read_paged_and_forgotten() -> Result<()> {
    let prefix = unique_prefix("presence");
    let store = connect(&prefix, Duration::from_secs(600)).await?;
    let room = t("chat:room");
    let users: Vec<UserId> = (0..250).map(|i| user(&format!("user-{i}"))).collect();
    let write = PresenceWrite {
        connections: vec![
            (user("alice"), ConnId::new("c1")?, Some(100)),
            (user("alice"), ConnId::new("c2")?, Some(50)),
        ],
        topics: vec![TopicPresenceWrite {
            topic: room.clone(),
            totals: Some((260, 250)),
            members: users.iter().map(|x| (x.clone(), 1)).collect(),
        }],
    };
    store.write(&node("a"), &write).await?;
    store
        .write(
            &node("b"),
            &PresenceWrite {
                connections: vec![(user("alice"), ConnId::new("c3")?, Some(70))],
                topics: vec![TopicPresenceWrite {
                    topic: room.clone(),
                    totals: Some((1, 1)),
                    members: vec![(users[0].clone(), 1)],
                }],
            },
        )
        .await?;
    let alice = store
        .user_connections(&[user("alice"), user("nobody")])
        .await?;
    assert_eq!(alice[0].len(), 3);
    assert!(alice[1].is_empty());
    let mut nodes = store.topic_nodes(&room).await?;
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(
        nodes
            .iter()
            .map(|s| (s.node.as_str(), s.connections, s.users))
            .collect::<Vec<_>>(),
        [("a", 260, 250), ("b", 1, 1)]
    );
    // Every member entry once, over the pages.
    let mut cursor = 0;
    let mut seen = std::collections::HashSet::new();
    loop {
        let (page, next) = store.topic_members(&room, cursor, 50).await?;
        for m in page {
            seen.insert((m.user.to_string(), m.node.to_string()));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 251);

    // Connections close, members leave, a dead node's entries are forgotten.
    store
        .write(
            &node("a"),
            &PresenceWrite {
                connections: vec![(user("alice"), ConnId::new("c1")?, None)],
                topics: vec![TopicPresenceWrite {
                    topic: room.clone(),
                    totals: None,
                    members: users.iter().map(|x| (x.clone(), 0)).collect(),
                }],
            },
        )
        .await?;
    assert_eq!(store.user_connections(&[user("alice")]).await?[0].len(), 2);
    assert_eq!(store.topic_nodes(&room).await?.len(), 1);
    store
        .forget(&room, &[(users[0].clone(), node("b"))], &[node("b")])
        .await?;
    assert!(store.topic_nodes(&room).await?.is_empty());
    let (page, next) = store.topic_members(&room, 0, 50).await?;
    assert!(page.is_empty() && next == 0);
    let client = redis::Client::open(redis_url()?)?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let exists: bool = raw.exists(topic_members_key(&prefix, &room)).await?;
    assert!(!exists, "an empty hash is deleted");
    delete_prefix(&redis_url()?, &prefix).await?;
    Ok(())
}
