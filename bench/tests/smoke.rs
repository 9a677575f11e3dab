//! Smoke run of the load generator against a real edgepush system: an edge
//! node in process, collect and dispatch in process, on the shared Redis and
//! MongoDB (`EDGEPUSH_TEST_REDIS_URL`, `EDGEPUSH_TEST_MONGODB_URI`).
//!
//! 300 connections (one user each) receive 5 messages each through the
//! whole path (collect -> MongoDB -> dispatch -> Redis -> node). Asserts
//! delivery counts only, never timings.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use edge_node::{AuthMode, NodeConfig, NodeDeps};
use edgepush_auth::AuthConfig;
use edgepush_bench::loadgen::{Protocol, Swarm, SwarmConfig, Users};
use edgepush_bench::publish::{PublishConfig, Publisher, Target};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_tests::{Collect, JWT_SECRET, TestEnv, push_credential, unique};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CONNECTIONS: usize = 300;
const MESSAGES: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_gets_exactly_its_messages() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;

    // An edge node on port 0, on the real stores.
    let routes = Arc::new(
        RedisRouteStore::connect(RedisConfig::new(env.redis_url.clone()))
            .await
            .context("redis")?,
    );
    let messages = edgepush_tests::message_store(&env.mongodb_uri, &env.database).await?;
    let topics =
        edgepush_mongo::MongoTopicStore::on(messages.database(), messages.config().clone()).await?;
    let auth = AuthMode::Local(AuthConfig::hs256(JWT_SECRET.as_bytes().to_vec()));
    let config = NodeConfig::for_local(&unique("bench-node"), auth, push_credential());
    let deps = NodeDeps {
        routes: routes.clone(),
        nodes: routes.clone(),
        messages: Arc::new(messages),
        verifier: edge_node::verifier_for(&config.auth)?,
        topics: Arc::new(topics),
        topic_routes: routes.clone(),
        presence: routes,
        pusher: Arc::new(edgepush_delivery::HttpPusher::new(
            edgepush_delivery::PushClientConfig::new(push_credential()),
        )?),
    };
    let ws = TcpListener::bind("127.0.0.1:0").await?;
    let push = TcpListener::bind("127.0.0.1:0").await?;
    let ws_url = format!("ws://{}/ws", ws.local_addr()?);
    let stop = CancellationToken::new();
    let node = tokio::spawn(edge_node::run(
        ws,
        push,
        config,
        deps,
        stop.clone().cancelled_owned(),
    ));
    let collect = Collect::start(&env).await?;

    // The load generator, as a library.
    let prefix = format!("{}-u", unique("smoke"));
    let mut cfg = SwarmConfig::new(vec![ws_url], Protocol::Edgepush, JWT_SECRET);
    cfg.users = Users::PerConnection {
        prefix: prefix.clone(),
    };
    cfg.rate = 0;
    cfg.max_pending = 64;
    let mut swarm = Swarm::new(cfg).await?;
    swarm.grow(CONNECTIONS).await;
    let report = swarm.report();
    assert_eq!(
        report.connected, CONNECTIONS,
        "every connection opens: {report:?}"
    );

    let base = collect
        .url()
        .strip_suffix("/v1/messages")
        .context("collect URL")?
        .to_owned();
    let publisher = Publisher::new(
        Target::Collect {
            base,
            api_key: edgepush_tests::API_KEY.into(),
            to: (0..CONNECTIONS).map(|i| format!("{prefix}{i}")).collect(),
            per_message: 0,
        },
        None,
    )?;
    let published = publisher
        .run(&PublishConfig {
            count: MESSAGES,
            ..PublishConfig::default()
        })
        .await;
    assert_eq!(
        (published.sent, published.errors),
        (MESSAGES, 0),
        "collect accepts every message: {published:?}"
    );

    let want = CONNECTIONS as u64 * MESSAGES;
    let all = swarm.wait_received(want, Duration::from_secs(60)).await;
    // Give stray duplicates a moment to show up before counting exactly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = swarm.received_per_connection();
    let wrong: Vec<(usize, u32)> = counts
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, n)| u64::from(*n) != MESSAGES)
        .collect();
    assert!(
        all && wrong.is_empty(),
        "every connection gets exactly {MESSAGES} messages; (connection, count) off: {:?} (first 10), total {} of {want}",
        &wrong[..wrong.len().min(10)],
        swarm.received()
    );
    assert_eq!(swarm.report().dropped, 0, "no connection was lost");

    swarm.close(Duration::from_secs(10)).await;
    stop.cancel();
    node.await??;
    env.cleanup().await;
    Ok(())
}
