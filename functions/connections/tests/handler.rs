//! The managed-edge handlers' routes against real API Gateway WebSocket
//! event payloads (`tests/fixtures/*.json`) and the real stores: Redis
//! (`EDGEPUSH_TEST_REDIS_URL`) for routes, virtual nodes and connection
//! records, MongoDB (`EDGEPUSH_TEST_MONGODB_URI`) for acks and replays, and
//! the testkit's management API stand-in for what the function posts. Each
//! test uses a key prefix and a database of its own.

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::*;
use edgepush_auth::{Claims, mint_hs256};
use edgepush_connections::{DEFAULT_NODE_TTL, handler};
use edgepush_core::{ConnId, NodeDirectory, NodeId, RouteStore};
use edgepush_testkit::user;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

#[tokio::test]
async fn connect_admits_and_the_first_resume_makes_the_route() -> Result<()> {
    let mut env = Env::new("connect_authorizer").await?;
    let response = env.handle(fixture("connect.json")?).await?;
    ensure_status(&response, 200, "$connect")?;

    // Admitted, but no route yet: nothing may be posted before the client
    // speaks (API Gateway refuses posts before `$connect` returned).
    assert!(env.routes_of("alice").await?.is_empty());
    let record = env.record(FIXTURE_CONN).await?.expect("a record");
    assert_eq!(record.user.as_str(), "alice");
    assert!(!record.started);

    let node = NodeId::new(FIXTURE_NODE)?;
    let live = env.routes.live_nodes(std::slice::from_ref(&node)).await?;
    assert_eq!(live.get(&node).map(String::as_str), Some(FIXTURE_ENDPOINT));
    // The virtual node's entry has the long TTL, not a heartbeat's seconds.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(edgepush_redis::keys::node_key(&env.prefix, &node))
        .query_async(&mut env.redis)
        .await?;
    let ttl_ms = i64::try_from(DEFAULT_NODE_TTL.as_millis())?;
    ensure!(
        pttl > ttl_ms - 60_000 && pttl <= ttl_ms,
        "virtual node PTTL {pttl} ms, expected about {ttl_ms}"
    );

    let response = env
        .frame(FIXTURE_CONN, "alice", r#"{"type":"resume"}"#)
        .await?;
    ensure_status(&response, 200, "resume")?;
    assert_eq!(
        env.routes_of("alice").await?,
        [(FIXTURE_CONN.to_owned(), FIXTURE_NODE.to_owned())]
    );
    assert_eq!(
        env.seen(FIXTURE_CONN),
        [
            Seen::Hello {
                user: "alice".into()
            },
            Seen::Resumed {
                after: 0,
                through: 0,
                more: false
            }
        ]
    );
    // The posts went to the stage path, signed.
    let posts = env.api.seen();
    assert!(
        posts
            .iter()
            .all(|r| r.path.starts_with("/prod/@connections/"))
    );
    assert!(
        posts
            .iter()
            .all(|r| r.authorization.starts_with("AWS4-HMAC-SHA256"))
    );
    env.cleanup().await
}

#[tokio::test]
async fn connect_with_a_query_token_then_disconnect() -> Result<()> {
    let mut env = Env::new("connect_query").await?;
    let connect = with_query_token(
        without_authorizer(fixture("connect.json")?),
        &token("bob", Duration::from_secs(300)),
    );
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    // Later events carry no user: the record names it.
    let mut resume = without_authorizer(fixture("default-ack.json")?);
    resume["body"] = json!(r#"{"type":"resume"}"#);
    ensure_status(&env.handle(resume).await?, 200, "resume")?;
    assert_eq!(
        env.routes_of("bob").await?,
        [(FIXTURE_CONN.to_owned(), FIXTURE_NODE.to_owned())]
    );
    assert!(env.routes_of("alice").await?.is_empty());
    assert_eq!(
        env.seen(FIXTURE_CONN).first(),
        Some(&Seen::Hello { user: "bob".into() })
    );

    let response = env
        .handle(without_authorizer(fixture("disconnect.json")?))
        .await?;
    ensure_status(&response, 200, "$disconnect")?;
    assert!(env.routes_of("bob").await?.is_empty(), "route removed");
    // Only the virtual node (and the set of swept nodes) is left.
    let keys = env.keys().await?;
    ensure!(
        keys.iter()
            .all(|k| k.ends_with(":mn") || k.contains(FIXTURE_NODE)),
        "record and indexes forgotten: {keys:?}"
    );
    ensure!(
        !keys
            .iter()
            .any(|k| k.contains(":mx:") || k.contains(":mu:")),
        "{keys:?}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn connect_with_a_bearer_header() -> Result<()> {
    let env = Env::new("connect_bearer").await?;
    let mut connect = without_authorizer(fixture("connect.json")?);
    let bearer = format!("Bearer {}", token("carol", Duration::from_secs(300)));
    connect["headers"]["Authorization"] = json!(bearer);
    connect["multiValueHeaders"]["Authorization"] = json!([bearer]);
    ensure_status(&env.handle(connect).await?, 200, "$connect")?;
    let record = env.record(FIXTURE_CONN).await?.expect("a record");
    assert_eq!(record.user.as_str(), "carol");
    // The token's exp is the connection's end.
    assert!(record.expires_at.is_some());
    env.cleanup().await
}

#[tokio::test]
async fn bad_tokens_and_bad_requests_are_refused_and_register_nothing() -> Result<()> {
    let mut env = Env::new("connect_refused").await?;
    let base = without_authorizer(fixture("connect.json")?);
    let wrong_key = mint_hs256(
        b"another-secret-0123456789abcdef",
        &Claims::new("mallory", Duration::from_secs(300)),
    );
    let mut expired = Claims::new("mallory", Duration::from_secs(300));
    expired.exp = 1_000_000;
    let expired = mint_hs256(SECRET, &expired);
    let mut subscribe_only = Claims::new("mallory", Duration::from_secs(300));
    subscribe_only.topic = Some("vip:lounge".into());
    let subscribe_only = mint_hs256(SECRET, &subscribe_only);
    let cases = [
        (
            "a subscribe token",
            with_query_token(base.clone(), &subscribe_only),
            "invalid_token",
        ),
        ("no token", base.clone(), "missing_token"),
        (
            "wrong key",
            with_query_token(base.clone(), &wrong_key),
            "invalid_token",
        ),
        (
            "garbage",
            with_query_token(base.clone(), "not-a-jwt"),
            "invalid_token",
        ),
        (
            "expired",
            with_query_token(base.clone(), &expired),
            "token_expired",
        ),
    ];
    for (what, value, code) in cases {
        let response = env.handle(value).await?;
        ensure_status(&response, 401, what)?;
        assert_eq!(error_code(&response), code, "{what}");
        assert!(
            response.headers.get("www-authenticate").is_some(),
            "{what}: 401 names the scheme"
        );
    }

    // An authorizer context that does not hold a valid user id, or an
    // expiry that is not a time.
    let mut bad_context = fixture("connect.json")?;
    bad_context["requestContext"]["authorizer"]["userId"] = json!("no spaces allowed");
    ensure_status(&env.handle(bad_context).await?, 403, "bad user id")?;
    let mut bad_exp = fixture("connect.json")?;
    bad_exp["requestContext"]["authorizer"]["exp"] = json!("soon");
    ensure_status(&env.handle(bad_exp).await?, 403, "bad exp")?;
    // An authorizer context whose token has expired already.
    let mut gone_exp = fixture("connect.json")?;
    gone_exp["requestContext"]["authorizer"]["exp"] = json!(1_000_000);
    let response = env.handle(gone_exp).await?;
    ensure_status(&response, 401, "expired exp")?;
    assert_eq!(error_code(&response), "token_expired");
    // A bad `after`.
    for after in ["-1", "x", "1.5"] {
        let value = with_query(fixture("connect.json")?, &[("after", after)]);
        let response = env.handle(value).await?;
        ensure_status(&response, 400, after)?;
        assert_eq!(error_code(&response), "bad_request");
    }

    // No authorizer and no in-process verifier: refused too.
    let mut authorizer_only = Env::new("connect_refused_no_verifier").await?;
    authorizer_only.connections.verifier = None;
    let response = authorizer_only
        .handle(with_query_token(
            base,
            &token("alice", Duration::from_secs(300)),
        ))
        .await?;
    ensure_status(&response, 401, "no verifier")?;

    assert!(
        env.keys().await?.is_empty(),
        "nothing registered: no route, no virtual node, no record"
    );
    assert!(authorizer_only.keys().await?.is_empty());
    assert!(env.api.seen().is_empty(), "nothing posted");
    authorizer_only.cleanup().await?;
    env.cleanup().await
}

#[tokio::test]
async fn disconnect_removes_only_its_route() -> Result<()> {
    let env = Env::new("disconnect").await?;
    ensure_status(
        &env.handle(fixture("connect.json")?).await?,
        200,
        "$connect",
    )?;
    env.send(FIXTURE_CONN, "alice", r#"{"type":"resume"}"#)
        .await?;
    // A second connection of alice, on an edge node.
    env.routes
        .add_route(
            &user("alice"),
            &ConnId::new("edge-conn-1")?,
            &NodeId::new("edge-1")?,
        )
        .await?;

    ensure_status(
        &env.handle(fixture("disconnect.json")?).await?,
        200,
        "$disconnect",
    )?;
    assert_eq!(
        env.routes_of("alice").await?,
        [("edge-conn-1".to_owned(), "edge-1".to_owned())]
    );

    // A disconnect nobody can attribute is answered and changes nothing.
    let response = env
        .handle(without_authorizer(fixture("disconnect.json")?))
        .await?;
    ensure_status(&response, 200, "unknown $disconnect")?;
    assert_eq!(env.routes_of("alice").await?.len(), 1);
    env.cleanup().await
}

#[tokio::test]
async fn default_route_answers_ping_and_refuses_what_is_not_in_the_protocol() -> Result<()> {
    let env = Env::new("default_route").await?;
    ensure_status(
        &env.handle(fixture("connect.json")?).await?,
        200,
        "$connect",
    )?;

    env.send(FIXTURE_CONN, "alice", r#"{"type":"ping"}"#)
        .await?;
    assert_eq!(env.seen(FIXTURE_CONN), [Seen::Pong]);

    // A publish from a client: refused in words, the connection goes on.
    let response = env
        .frame(
            FIXTURE_CONN,
            "alice",
            r#"{"type":"publish","topic":"news","data":1}"#,
        )
        .await?;
    ensure_status(&response, 400, "publish")?;
    assert!(
        body_text(&response).contains("publish"),
        "{}",
        body_text(&response)
    );
    assert_eq!(env.seen(FIXTURE_CONN), [Seen::Pong], "nothing posted");
    // A subscription the token does not allow: an error frame (topics:
    // tests/topics.rs).
    env.send(
        FIXTURE_CONN,
        "alice",
        r#"{"type":"subscribe","topic":"news"}"#,
    )
    .await?;
    assert_eq!(
        env.seen(FIXTURE_CONN).last(),
        Some(&Seen::Refused {
            op: "subscribe".into(),
            code: "forbidden".into()
        })
    );

    // Frames outside the protocol: 400, and the connection is closed with
    // 1008 as an edge node would (a close frame, then DELETE).
    let response = env.handle(fixture("default-bad.json")?).await?;
    ensure_status(&response, 400, "default-bad.json")?;
    assert_eq!(error_code(&response), "bad_request");
    assert_eq!(
        env.seen(FIXTURE_CONN)[2..],
        [Seen::Close(1008), Seen::Deleted]
    );
    for body in [
        json!("not json"),
        json!(r#"{"type":"ack","seq":-1}"#),
        json!(r#"{"type":"ack"}"#),
        json!(r#"{"type":"resume","after":"3"}"#),
        json!(r#"{"type":"resume","x":1}"#),
        Value::Null,
    ] {
        let mut bad = fixture("default-ack.json")?;
        bad["body"] = body.clone();
        ensure_status(&env.handle(bad).await?, 400, &format!("body {body}"))?;
    }
    let mut binary = fixture("default-ack.json")?;
    binary["isBase64Encoded"] = json!(true);
    binary["body"] = json!("eyJ0eXBlIjoiYWNrIiwic2VxIjozfQ==");
    ensure_status(&env.handle(binary).await?, 400, "binary")?;
    env.cleanup().await
}

#[tokio::test]
async fn a_resume_of_a_connection_redis_forgot_closes_it() -> Result<()> {
    let env = Env::new("unknown_conn").await?;
    // No `$connect` came through this store (Redis lost the record).
    let response = env
        .frame("ForgottenC0nn=", "alice", r#"{"type":"resume"}"#)
        .await?;
    ensure_status(&response, 200, "resume")?;
    assert_eq!(
        env.seen("ForgottenC0nn="),
        [Seen::Close(1011), Seen::Deleted],
        "closed so its client reconnects through $connect"
    );
    assert!(env.routes_of("alice").await?.is_empty());
    env.cleanup().await
}

#[tokio::test]
async fn lambda_handler_answers_in_the_api_gateway_shape() -> Result<()> {
    let env = Env::new("lambda_shape").await?;
    let call = |payload: Value| {
        let connections = env.connections.clone();
        async move {
            let event = serde_json::from_value(payload)?;
            handler(&connections, LambdaEvent::new(event, Context::default()))
                .await
                .map_err(|e| anyhow::anyhow!(e))
                .and_then(|answer| Ok(serde_json::to_value(&answer)?))
        }
    };
    let json = call(fixture("connect.json")?).await?;
    assert_eq!(json["statusCode"], 200, "{json}");

    let json = call(fixture("default-bad.json")?).await?;
    assert_eq!(json["statusCode"], 400, "{json}");
    let Some(body) = json["body"].as_str() else {
        bail!("the 400 has a text body: {json}");
    };
    assert!(body.contains("bad_request"), "{body}");

    // The schedule runs the sweep: nothing is due yet.
    let scheduled = fixture("scheduled.json")?;
    let json = call(scheduled).await?;
    assert_eq!(json["expired_closed"], 0, "{json}");
    assert_eq!(json["incomplete"], false, "{json}");
    env.cleanup().await
}
