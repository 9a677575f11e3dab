//! Topics on the managed edge: subscriptions through `$default` with the
//! edge nodes' permission rules, replay after `after` from the topic log,
//! and delivery of live topic messages through the management API by the
//! real topic fan-out (`Dispatcher::dispatch_topics`). Real API Gateway
//! event fixtures, real Redis and MongoDB, the management API stand-in.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::*;
use edgepush_auth::{Claims, mint_hs256};
use edgepush_connections::Settings;
use edgepush_core::{Namespaces, NewTopicMessage, TopicMessage, TopicName, TopicStore};
use serde_json::json;

fn namespaces() -> Result<Namespaces> {
    let json = r#"{"": {}, "chat": {}}"#;
    Ok(Namespaces::from_lookup(|name| {
        (name == Namespaces::ENV).then(|| json.to_owned())
    })?)
}

async fn publish(env: &Env, topic: &str, count: u64) -> Result<Vec<TopicMessage>> {
    let mut stored = Vec::new();
    for k in 0..count {
        stored.extend(
            env.topics
                .publish(&NewTopicMessage {
                    topics: vec![(TopicName::new(topic)?, Duration::from_secs(3600))],
                    data: Arc::from(serde_json::value::RawValue::from_string(format!(
                        r#"{{"k":{k}}}"#
                    ))?),
                    source: "test".into(),
                    idempotency_key: None,
                })
                .await?,
        );
    }
    Ok(stored)
}

/// The topic frames `frames` hold, in order.
fn topic_frames(frames: &[Seen]) -> Vec<Seen> {
    frames
        .iter()
        .filter(|f| {
            matches!(
                f,
                Seen::TopicMsg(..)
                    | Seen::Subscribed(..)
                    | Seen::Unsubscribed(_)
                    | Seen::Refused { .. }
            )
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn topics_on_the_managed_edge_subscribe_replay_fan_out_and_refuse() -> Result<()> {
    let env = Env::with_settings(
        "topics_managed",
        Settings {
            namespaces: namespaces()?,
            max_subscriptions: 2,
            ..Settings::default()
        },
    )
    .await?;
    let room = "chat:room-1";
    // A connection admitted by its token, whose `subscribe` claim allows
    // `chat:*` only.
    let conn = "JoC0nn-1=";
    let mut claims = Claims::new("jo", Duration::from_secs(3600));
    claims.subscribe = vec!["chat:*".into()];
    let connect = with_query_token(
        for_conn(without_authorizer(fixture("connect.json")?), conn, ""),
        &mint_hs256(SECRET, &claims),
    );
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    env.send(conn, "jo", r#"{"type":"resume"}"#).await?;

    // Three published before; subscribe after the first: 2 and 3 replayed.
    publish(&env, room, 3).await?;
    env.send(
        conn,
        "jo",
        &json!({"type": "subscribe", "topic": room, "after": 1}).to_string(),
    )
    .await?;
    // Live ones through the real fan-out.
    let live = publish(&env, room, 2).await?;
    let report = env.dispatcher.dispatch_topics(&live).await?;
    assert_eq!((report.nodes, report.delivered), (1, 2), "{report:?}");
    assert_eq!(
        topic_frames(&env.seen(conn)),
        [
            Seen::TopicMsg(room.into(), 2),
            Seen::TopicMsg(room.into(), 3),
            Seen::Subscribed(room.into(), 3),
            Seen::TopicMsg(room.into(), 4),
            Seen::TopicMsg(room.into(), 5),
        ]
    );

    // The edge nodes' refusals, as error frames; the connection goes on.
    let before = env.seen(conn).len();
    for (frame, code) in [
        (json!({"type": "subscribe", "topic": "news"}), "forbidden"),
        (
            json!({"type": "subscribe", "topic": "vip:lounge"}),
            "unknown_namespace",
        ),
        (
            json!({"type": "subscribe", "topic": "bad topic"}),
            "bad_topic",
        ),
        (
            json!({"type": "subscribe", "topic": room}),
            "already_subscribed",
        ),
        (
            json!({"type": "subscribe", "topic": "news", "token": "not-a-jwt"}),
            "bad_token",
        ),
        (
            json!({"type": "unsubscribe", "topic": "chat:other"}),
            "not_subscribed",
        ),
    ] {
        env.send(conn, "jo", &frame.to_string()).await?;
        let last = env.seen(conn).last().cloned();
        assert_eq!(
            last,
            Some(Seen::Refused {
                op: frame["type"].as_str().unwrap_or_default().to_owned(),
                code: code.into()
            }),
            "{frame}"
        );
    }
    assert_eq!(env.seen(conn).len(), before + 6);

    // A subscribe token for this user and topic opens `news`; a third
    // subscription is over the cap.
    let mut grant = Claims::new("jo", Duration::from_secs(300));
    grant.topic = Some("news".into());
    let grant = mint_hs256(SECRET, &grant);
    env.send(
        conn,
        "jo",
        &json!({"type": "subscribe", "topic": "news", "token": grant}).to_string(),
    )
    .await?;
    assert_eq!(
        env.seen(conn).last(),
        Some(&Seen::Subscribed("news".into(), 0))
    );
    env.send(
        conn,
        "jo",
        &json!({"type": "subscribe", "topic": "chat:room-2"}).to_string(),
    )
    .await?;
    assert_eq!(
        env.seen(conn).last(),
        Some(&Seen::Refused {
            op: "subscribe".into(),
            code: "too_many_subscriptions".into()
        })
    );

    // Unsubscribed: nothing more of the topic comes.
    env.send(
        conn,
        "jo",
        &json!({"type": "unsubscribe", "topic": room}).to_string(),
    )
    .await?;
    assert_eq!(
        env.seen(conn).last(),
        Some(&Seen::Unsubscribed(room.into()))
    );
    let after_unsubscribe = env.seen(conn).len();
    let more = publish(&env, room, 1).await?;
    let report = env.dispatcher.dispatch_topics(&more).await?;
    assert_eq!(report.delivered, 0, "{report:?}");
    assert_eq!(env.seen(conn).len(), after_unsubscribe);

    // `$disconnect` forgets the subscriptions.
    ensure_status(&env.disconnect(conn, "jo").await?, 200, "$disconnect")?;
    assert!(
        env.subscriptions()
            .managed_topics(&edgepush_core::ConnId::new(conn)?)
            .await?
            .is_empty()
    );

    // Patterns also come through the authorizer's context (a JSON string).
    let other = "JoC0nn-2=";
    let mut connect = for_conn(fixture("connect.json")?, other, "jo");
    connect["requestContext"]["authorizer"]["subscribe"] = json!(r#"["chat:*"]"#);
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    env.send(
        other,
        "jo",
        &json!({"type": "subscribe", "topic": room}).to_string(),
    )
    .await?;
    assert_eq!(
        env.seen(other).last(),
        Some(&Seen::Subscribed(room.into(), 6))
    );
    env.cleanup().await
}
