//! The rest of the topic contract on the managed edge, as on edge nodes:
//! the token's `topics` claim and `?resume=` (server-side subscriptions at
//! the first `resume`), `$broadcast` to every managed connection, client
//! `publish` frames, and presence of managed connections (per user and per
//! topic, left at `$disconnect` and by the sweep). Real API Gateway event
//! fixtures, real Redis and MongoDB, the management API stand-in, the real
//! topic fan-out (`Dispatcher::dispatch_topics`, as dispatch runs it for
//! collect's publish and broadcast).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use edgepush_auth::{Claims, mint_hs256};
use edgepush_connections::Settings;
use edgepush_core::{TopicName, TopicStore, UserId, presence};
use serde_json::{Value, json};

/// `$connect` of `conn` with a token of `claims` in the query string,
/// plus the query `extra` (e.g. `resume`).
fn connect_event(conn: &str, claims: &Claims, extra: &[(&str, &str)]) -> Result<Value> {
    let token = mint_hs256(SECRET, claims);
    let mut pairs = vec![("token", token.as_str())];
    pairs.extend_from_slice(extra);
    Ok(with_query(
        for_conn(without_authorizer(fixture("connect.json")?), conn, ""),
        &pairs,
    ))
}

fn refused(op: &str, code: &str) -> Seen {
    Seen::Refused {
        op: op.into(),
        code: code.into(),
    }
}

const BROADCAST: &str = "$broadcast";

#[tokio::test]
async fn token_topics_start_at_the_first_resume_after_their_resume_positions() -> Result<()> {
    let env = Env::with_settings(
        "managed_token_topics",
        Settings {
            namespaces: namespaces(r#"{"": {}, "chat": {}}"#)?,
            max_subscriptions: 2,
            ..Settings::default()
        },
    )
    .await?;
    publish(&env, "news", 3).await?;
    publish(&env, "chat:a", 2).await?;
    publish_to(&env, TopicName::broadcast(), 2).await?;

    // The token subscribes five topics: two fit, one is over the cap, one
    // is in an unknown namespace, one is not a name; `resume` positions
    // `news` and broadcast, and names a topic the token does not hold.
    let conn = "TokC0nn-1=";
    let mut claims = Claims::new("tom", Duration::from_secs(3600));
    claims.topics = vec![
        "news".into(),
        "chat:a".into(),
        "chat:b".into(),
        "vip:x".into(),
        "bad topic".into(),
    ];
    claims.subscribe = vec!["chat:*".into(), "bad pattern".into()];
    let connect = connect_event(conn, &claims, &[("resume", "news~1,$broadcast~1,other~4")])?;
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    // Nothing comes before the client speaks.
    assert!(env.seen(conn).is_empty());
    env.send(conn, "tom", r#"{"type":"resume"}"#).await?;
    assert_eq!(
        env.seen(conn),
        [
            Seen::Hello { user: "tom".into() },
            refused("connect", "too_many_subscriptions"),
            refused("connect", "unknown_namespace"),
            refused("connect", "bad_topic"),
            refused("connect", "not_subscribed"),
            refused("connect", "bad_topic"),
            Seen::TopicMsg(BROADCAST.into(), 2),
            Seen::Subscribed(BROADCAST.into(), 2),
            Seen::TopicMsg("news".into(), 2),
            Seen::TopicMsg("news".into(), 3),
            Seen::Subscribed("news".into(), 3),
            Seen::Subscribed("chat:a".into(), 2),
            Seen::Resumed {
                after: 0,
                through: 0,
                more: false
            },
        ]
    );
    // A later resume starts nothing again.
    env.send(conn, "tom", r#"{"type":"resume","after":0}"#)
        .await?;
    assert_eq!(
        env.seen(conn).last(),
        Some(&Seen::Resumed {
            after: 0,
            through: 0,
            more: false
        })
    );
    assert_eq!(env.seen(conn).len(), 14);

    // Live messages of the token's topics and of broadcast.
    let mut live = publish(&env, "news", 1).await?;
    live.extend(publish_to(&env, TopicName::broadcast(), 1).await?);
    live.extend(publish(&env, "chat:b", 1).await?);
    let report = env.dispatcher.dispatch_topics(&live).await?;
    assert_eq!((report.nodes, report.delivered), (1, 2), "{report:?}");
    assert_eq!(
        env.seen(conn)[14..],
        [
            Seen::TopicMsg("news".into(), 4),
            Seen::TopicMsg(BROADCAST.into(), 3),
        ]
    );
    // The token's topics count against the cap (broadcast does not).
    env.send(
        conn,
        "tom",
        &json!({"type": "subscribe", "topic": "chat:c"}).to_string(),
    )
    .await?;
    assert_eq!(
        env.seen(conn).last(),
        Some(&refused("subscribe", "too_many_subscriptions"))
    );
    // Broadcast cannot be unsubscribed or named by a client.
    env.send(
        conn,
        "tom",
        &json!({"type": "unsubscribe", "topic": BROADCAST}).to_string(),
    )
    .await?;
    assert_eq!(
        env.seen(conn).last(),
        Some(&refused("unsubscribe", "bad_topic"))
    );

    // A bad `resume` is refused before the upgrade, as on an edge node.
    for bad in ["news", "news~x", "bad topic~1", "news~-1", "news~1,~2"] {
        let connect = connect_event("TokC0nn-bad=", &claims, &[("resume", bad)])?;
        let response = env.handle(connect).await?;
        ensure_status(&response, 400, bad)?;
        assert_eq!(error_code(&response), "bad_request", "{bad}");
        assert!(
            body_text(&response).contains("resume must be topic~seq entries"),
            "{bad}: {}",
            body_text(&response)
        );
        assert!(env.record("TokC0nn-bad=").await?.is_none(), "{bad}");
    }

    // The token's topics through the authorizer's context (a JSON string),
    // without a position: they start at their latest.
    let other = "TokC0nn-2=";
    let mut connect = for_conn(fixture("connect.json")?, other, "tom");
    connect["requestContext"]["authorizer"]["topics"] = json!(r#"["news"]"#);
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    env.send(other, "tom", r#"{"type":"resume"}"#).await?;
    assert_eq!(
        env.seen(other)[1..3],
        [
            Seen::Subscribed(BROADCAST.into(), 3),
            Seen::Subscribed("news".into(), 4),
        ]
    );
    // A context that is not a list of strings is refused.
    let mut connect = for_conn(fixture("connect.json")?, "TokC0nn-3=", "tom");
    connect["requestContext"]["authorizer"]["topics"] = json!("news");
    let response = env.handle(connect).await?;
    ensure_status(&response, 403, "topics not a list")?;
    env.cleanup().await
}

#[tokio::test]
async fn broadcast_reaches_every_managed_connection() -> Result<()> {
    let env = Env::new("managed_broadcast").await?;
    let conns = [
        ("BcC0nn-1=", "ann"),
        ("BcC0nn-2=", "ann"),
        ("BcC0nn-3=", "ben"),
    ];
    for (conn, user) in conns {
        env.admit(conn, user, None, None).await?;
        env.send(conn, user, r#"{"type":"resume"}"#).await?;
        assert!(
            env.seen(conn)
                .contains(&Seen::Subscribed(BROADCAST.into(), 0)),
            "{conn}"
        );
    }
    // A connection that never resumed is not a subscriber yet.
    env.admit("BcC0nn-quiet=", "ben", None, None).await?;

    // One publish, one batch for the virtual node, a post per connection.
    let first = publish_to(&env, TopicName::broadcast(), 1).await?;
    let report = env.dispatcher.dispatch_topics(&first).await?;
    assert_eq!((report.nodes, report.delivered), (1, 3), "{report:?}");
    for (conn, _) in conns {
        assert_eq!(
            env.seen(conn).last(),
            Some(&Seen::TopicMsg(BROADCAST.into(), 1)),
            "{conn}"
        );
    }
    assert!(env.seen("BcC0nn-quiet=").is_empty());

    // A connection that left gets nothing more; one that comes back with
    // `?resume=$broadcast~1` gets what it missed, then live ones.
    ensure_status(
        &env.disconnect(conns[2].0, "ben").await?,
        200,
        "$disconnect",
    )?;
    let missed = publish_to(&env, TopicName::broadcast(), 2).await?;
    let report = env.dispatcher.dispatch_topics(&missed).await?;
    assert_eq!(report.delivered, 4, "{report:?}");
    let back = "BcC0nn-back=";
    let mut connect = for_conn(fixture("connect.json")?, back, "ben");
    connect = with_query(connect, &[("resume", "$broadcast~1")]);
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    env.send(back, "ben", r#"{"type":"resume"}"#).await?;
    let live = publish_to(&env, TopicName::broadcast(), 1).await?;
    env.dispatcher.dispatch_topics(&live).await?;
    let broadcast: Vec<Seen> = env
        .seen(back)
        .into_iter()
        .filter(|s| matches!(s, Seen::TopicMsg(..) | Seen::Subscribed(..)))
        .collect();
    assert_eq!(
        broadcast,
        [
            Seen::TopicMsg(BROADCAST.into(), 2),
            Seen::TopicMsg(BROADCAST.into(), 3),
            Seen::Subscribed(BROADCAST.into(), 3),
            Seen::TopicMsg(BROADCAST.into(), 4),
        ]
    );
    env.cleanup().await
}

#[tokio::test]
async fn client_publish_is_answered_as_on_edge_nodes() -> Result<()> {
    let env = Env::with_settings(
        "managed_publish",
        Settings {
            namespaces: namespaces(
                r#"{"": {}, "chat": {}, "feed": {"client_publish": "subscribers"}}"#,
            )?,
            ..Settings::default()
        },
    )
    .await?;
    let (writer, reader) = ("PubC0nn-w=", "PubC0nn-r=");
    for conn in [writer, reader] {
        let mut connect = for_conn(fixture("connect.json")?, conn, "pia");
        connect["requestContext"]["authorizer"]["subscribe"] = json!(r#"["feed:*", "chat:*"]"#);
        ensure_status(&env.handle(connect).await?, 200, "$connect")?;
        env.send(conn, "pia", r#"{"type":"resume"}"#).await?;
        for topic in ["feed:1", "chat:1"] {
            env.send(
                conn,
                "pia",
                &json!({"type": "subscribe", "topic": topic}).to_string(),
            )
            .await?;
        }
    }
    let frame =
        json!({"type": "publish", "topic": "feed:1", "data": {"x": 1}, "idempotency_key": "k-1"})
            .to_string();
    env.send(writer, "pia", &frame).await?;
    // Stored under `client:<user>`, fanned out to both subscribers (the
    // writer too, as on an edge node), then answered.
    let writer_seen = env.seen(writer);
    assert_eq!(
        writer_seen[writer_seen.len() - 2..],
        [
            Seen::TopicMsg("feed:1".into(), 1),
            Seen::Published("feed:1".into(), 1),
        ]
    );
    assert_eq!(
        env.seen(reader).last(),
        Some(&Seen::TopicMsg("feed:1".into(), 1))
    );
    let stored = env
        .topics
        .read_after(&TopicName::new("feed:1")?, 0, 10)
        .await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.get(), r#"{"x":1}"#);
    // A retry with the same key stores nothing more and gets the same seq.
    env.send(writer, "pia", &frame).await?;
    assert_eq!(
        env.seen(writer).last(),
        Some(&Seen::Published("feed:1".into(), 1))
    );
    assert_eq!(env.topics.last_seq(&TopicName::new("feed:1")?).await?, 1);

    // The edge nodes' refusals, as error frames; the connection goes on.
    let long_key = "k".repeat(129);
    for (frame, code) in [
        (
            json!({"type": "publish", "topic": "chat:1", "data": 1}),
            "forbidden",
        ),
        (
            json!({"type": "publish", "topic": "feed:2", "data": 1}),
            "forbidden",
        ),
        (
            json!({"type": "publish", "topic": "vip:1", "data": 1}),
            "unknown_namespace",
        ),
        (
            json!({"type": "publish", "topic": "bad topic", "data": 1}),
            "bad_topic",
        ),
        (
            json!({"type": "publish", "topic": "feed:1", "data": 1, "idempotency_key": ""}),
            "bad_request",
        ),
        (
            json!({"type": "publish", "topic": "feed:1", "data": 1, "idempotency_key": long_key}),
            "bad_request",
        ),
    ] {
        env.send(writer, "pia", &frame.to_string()).await?;
        assert_eq!(
            env.seen(writer).last(),
            Some(&refused("publish", code)),
            "{frame}"
        );
    }
    assert_eq!(env.topics.last_seq(&TopicName::new("feed:1")?).await?, 1);
    assert_eq!(env.topics.last_seq(&TopicName::new("chat:1")?).await?, 0);
    env.send(writer, "pia", r#"{"type":"ping"}"#).await?;
    assert_eq!(env.seen(writer).last(), Some(&Seen::Pong));
    // A publish over the 4 KiB client frame: closed with 1009, as on an
    // edge node; nothing stored.
    let big = json!({"type": "publish", "topic": "feed:1", "data": "x".repeat(5000)}).to_string();
    let response = env.frame(writer, "pia", &big).await?;
    ensure_status(&response, 400, "publish over 4 KiB")?;
    assert_eq!(
        env.seen(writer)[env.seen(writer).len() - 2..],
        [Seen::Close(1009), Seen::Deleted]
    );
    assert_eq!(env.topics.last_seq(&TopicName::new("feed:1")?).await?, 1);
    // A publish without `data` is not a protocol frame: closed with 1008,
    // as an edge node closes it.
    let response = env
        .frame(writer, "pia", r#"{"type":"publish","topic":"feed:1"}"#)
        .await?;
    ensure_status(&response, 400, "publish without data")?;
    assert_eq!(
        env.seen(writer)[env.seen(writer).len() - 2..],
        [Seen::Close(1008), Seen::Deleted]
    );
    env.cleanup().await
}

#[tokio::test]
async fn managed_connections_count_in_presence_until_disconnect_or_sweep() -> Result<()> {
    let env = Env::with_settings(
        "managed_presence",
        Settings {
            namespaces: namespaces(r#"{"": {}, "room": {"presence": true}}"#)?,
            ..Settings::default()
        },
    )
    .await?;
    let users = |names: &[&str]| -> Result<Vec<UserId>> {
        names.iter().map(|n| Ok(UserId::new(*n)?)).collect()
    };
    let who = users(&["alice", "bob", "carol"])?;
    let online = |env: &Env| {
        let routes = env.routes.clone();
        let who = who.clone();
        async move {
            let read = presence::users(&*routes, &*routes, &who).await?;
            anyhow::Ok(
                read.iter()
                    .map(|p| (p.user_id.to_string(), p.connections, p.since_ms.is_some()))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let room = TopicName::new("room:1")?;
    let counts = |env: &Env| {
        let routes = env.routes.clone();
        let room = room.clone();
        async move {
            let c = presence::topic_counts(&*routes, &*routes, &room).await?;
            anyhow::Ok((c.connections, c.users, c.nodes))
        }
    };

    // alice on two connections (patterns), bob on one (the token's topic).
    let (a1, a2, b1) = ("PrC0nn-a1=", "PrC0nn-a2=", "PrC0nn-b1=");
    let before = now_ms();
    for conn in [a1, a2] {
        let mut connect = for_conn(fixture("connect.json")?, conn, "alice");
        connect["requestContext"]["authorizer"]["subscribe"] = json!(r#"["room:*"]"#);
        ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    }
    let mut connect = for_conn(fixture("connect.json")?, b1, "bob");
    connect["requestContext"]["authorizer"]["topics"] = json!(r#"["room:1"]"#);
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    // Admitted but not started: not online yet (no route, no stream).
    assert_eq!(
        online(&env).await?,
        [
            ("alice".into(), 0, false),
            ("bob".into(), 0, false),
            ("carol".into(), 0, false)
        ]
    );
    for (conn, user) in [(a1, "alice"), (a2, "alice"), (b1, "bob")] {
        env.send(conn, user, r#"{"type":"resume"}"#).await?;
    }
    assert_eq!(
        online(&env).await?,
        [
            ("alice".into(), 2, true),
            ("bob".into(), 1, true),
            ("carol".into(), 0, false)
        ]
    );
    let since = presence::users(&*env.routes, &*env.routes, &who[..1]).await?[0].since_ms;
    assert!(
        since.is_some_and(|s| s >= before && s <= now_ms()),
        "{since:?}"
    );
    // bob's token topic counts at once; alice's subscriptions as they come.
    assert_eq!(counts(&env).await?, (1, 1, 1));
    for conn in [a1, a2] {
        env.send(
            conn,
            "alice",
            &json!({"type": "subscribe", "topic": "room:1"}).to_string(),
        )
        .await?;
    }
    assert_eq!(counts(&env).await?, (3, 2, 1));
    let page = presence::topic_members(&*env.routes, &*env.routes, &room, None, 100).await?;
    let mut members: Vec<(String, u64)> = page
        .members
        .iter()
        .map(|m| (m.user_id.to_string(), m.connections))
        .collect();
    members.sort();
    assert_eq!(members, [("alice".into(), 2), ("bob".into(), 1)]);
    // A refused second subscribe counts nothing; an unsubscribe leaves.
    env.send(
        a1,
        "alice",
        &json!({"type": "subscribe", "topic": "room:1"}).to_string(),
    )
    .await?;
    assert_eq!(counts(&env).await?, (3, 2, 1));
    env.send(
        a2,
        "alice",
        &json!({"type": "unsubscribe", "topic": "room:1"}).to_string(),
    )
    .await?;
    assert_eq!(counts(&env).await?, (2, 2, 1));
    env.send(
        a2,
        "alice",
        &json!({"type": "unsubscribe", "topic": "room:1"}).to_string(),
    )
    .await?;
    assert_eq!(counts(&env).await?, (2, 2, 1), "a second unsubscribe");

    // `$disconnect` leaves user and topic presence.
    ensure_status(&env.disconnect(a1, "alice").await?, 200, "$disconnect")?;
    assert_eq!(
        online(&env).await?,
        [
            ("alice".into(), 1, true),
            ("bob".into(), 1, true),
            ("carol".into(), 0, false)
        ]
    );
    assert_eq!(counts(&env).await?, (1, 1, 1));
    // A `$disconnect` that comes twice changes nothing.
    ensure_status(&env.disconnect(a1, "alice").await?, 200, "$disconnect")?;
    assert_eq!(counts(&env).await?, (1, 1, 1));

    // Connections whose `$disconnect` never came leave with the sweep (at
    // API Gateway's lifetime limit).
    let report = env
        .connections
        .sweep(now_ms() + 3 * 60 * 60 * 1000, None)
        .await?;
    assert_eq!(report.stale_forgotten, 2, "{report:?}");
    assert_eq!(
        online(&env).await?,
        [
            ("alice".into(), 0, false),
            ("bob".into(), 0, false),
            ("carol".into(), 0, false)
        ]
    );
    assert_eq!(counts(&env).await?, (0, 0, 0));
    let page = presence::topic_members(&*env.routes, &*env.routes, &room, None, 100).await?;
    assert!(page.members.is_empty(), "{page:?}");
    env.cleanup().await
}
