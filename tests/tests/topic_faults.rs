//! Fault tests of topics: nothing published is lost.
//!
//! The same faults as `faults.rs` for user messages, during topic traffic:
//! an edge node is SIGKILLed, Redis is flushed (every topic membership and
//! route gone), MongoDB goes down. Subscribers are `edgepush-client`s whose
//! token subscribes them to the topic (a server-side subscription, resumed
//! with `?resume=` after a reconnect); the producer publishes through the
//! collect API, retrying `503`s with the same idempotency key.
//!
//! Each test prints `FAULT <name>: accepted=A delivered=D
//! duplicates_dropped=X lost=L` (summed over subscribers) and fails unless
//! every subscriber holds every accepted message of the topic exactly once,
//! in seq order, with the ids and data collect stored. Every wait follows
//! progress; no duration is asserted.

use anyhow::{Context as _, bail};
use edgepush_tests::fault::{
    Ledger, Tally, Traffic, lock, reconnects, reporting_collect, stop_devices,
};
use edgepush_tests::topics::{
    produce_topic, start_topic_devices, tally_topic, wait_topic_delivered,
};
use edgepush_tests::{Check, MongoServer, NodeProcess, RedisServer, TestEnv, stall, unique, until};
use tokio::time::Instant;

/// Subscribers per test, over two nodes.
const SUBSCRIBERS: usize = 200;
/// Messages published per test.
const MESSAGES: u64 = 100;
/// Publishes in flight at once.
const CONCURRENCY: usize = 4;

fn topic() -> String {
    unique("fault")
}

// 1 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_crash_loses_no_topic_message() -> anyhow::Result<()> {
    let env = TestEnv::shared()?;
    let result = node_crash(&env).await;
    env.cleanup().await;
    result
}

async fn node_crash(env: &TestEnv) -> anyhow::Result<()> {
    let topic = topic();
    let (mut a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, _spy) = reporting_collect(env).await?;
    let users: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| unique(&format!("tc{i}")))
        .collect();
    let devices =
        start_topic_devices(&users, &[a.ws_url(), b.ws_url()], &[&topic], true, 25).await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let produce = produce_topic(
        &collect,
        &topic,
        1..=MESSAGES,
        CONCURRENCY,
        &ledger,
        &traffic,
    );
    let crash = async {
        traffic.wait_accepted(MESSAGES / 2).await?;
        a.kill_9();
        Ok::<u64, anyhow::Error>(traffic.accepted())
    };
    let ((), killed_at) = tokio::try_join!(produce, crash)?;
    let missing = wait_topic_delivered(&devices, &topic, &ledger).await;
    let mut tally = Tally::default();
    tally_topic(&mut tally, &devices, &topic, &ledger);
    eprintln!(
        "topic_node_crash: killed {} after {killed_at} of {MESSAGES} messages; {} reconnects; 503s {}",
        a.node_id(),
        reconnects(&devices),
        traffic.count(503)
    );
    stop_devices(devices).await;
    tally.conclude("topic_node_crash")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    drop(b);
    Ok(())
}

// 2 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_flushall_loses_no_topic_message() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let env = TestEnv::shared()?.with_redis(redis.url());
    let result = flushall(&env, &redis).await;
    env.cleanup().await;
    result
}

async fn flushall(env: &TestEnv, redis: &RedisServer) -> anyhow::Result<()> {
    let topic = topic();
    let (a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, _spy) = reporting_collect(env).await?;
    let users: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| unique(&format!("tf{i}")))
        .collect();
    let devices =
        start_topic_devices(&users, &[a.ws_url(), b.ws_url()], &[&topic], true, 25).await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let produce = produce_topic(
        &collect,
        &topic,
        1..=MESSAGES,
        CONCURRENCY,
        &ledger,
        &traffic,
    );
    let flush = async {
        traffic.wait_accepted(MESSAGES / 2).await?;
        let at = traffic.accepted();
        edgepush_tests::fault::flushall(&redis.url()).await?;
        // The nodes find their liveness gone, register again, and every
        // subscription catches up from the store.
        until(
            "both nodes to register their topic again",
            stall(),
            || async {
                let mut back = 0;
                for node in [&a, &b] {
                    back += node
                        .metric("edgepush_reregistrations_total")
                        .await?
                        .unwrap_or(0.0) as u64;
                }
                Ok(if back >= 2 {
                    Check::Done(())
                } else {
                    Check::Waiting(back)
                })
            },
        )
        .await?;
        Ok::<u64, anyhow::Error>(at)
    };
    let ((), flushed_at) = tokio::try_join!(produce, flush)?;
    let missing = wait_topic_delivered(&devices, &topic, &ledger).await;
    let mut tally = Tally::default();
    tally_topic(&mut tally, &devices, &topic, &ledger);
    eprintln!(
        "topic_redis_flushall: flushed after {flushed_at} of {MESSAGES} messages; {} reconnects; 503s {}",
        reconnects(&devices),
        traffic.count(503)
    );
    stop_devices(devices).await;
    tally.conclude("topic_redis_flushall")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    Ok(())
}

// 3 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_outage_loses_no_topic_message() -> anyhow::Result<()> {
    let mongo = MongoServer::start().await?;
    let env = TestEnv::shared()?.with_mongodb(mongo.uri());
    let result = mongodb_outage(&env, mongo).await;
    env.cleanup().await;
    result
}

async fn mongodb_outage(env: &TestEnv, mut mongo: MongoServer) -> anyhow::Result<()> {
    /// 503s seen during the outage before MongoDB is brought back.
    const REFUSALS: usize = 10;
    let topic = topic();
    let (a, b) = tokio::try_join!(NodeProcess::start_in(env), NodeProcess::start_in(env))?;
    let (collect, _spy) = reporting_collect(env).await?;
    let users: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| unique(&format!("tm{i}")))
        .collect();
    let devices =
        start_topic_devices(&users, &[a.ws_url(), b.ws_url()], &[&topic], true, 25).await?;

    let ledger = Ledger::default();
    let traffic = Traffic::default();
    let produce = produce_topic(
        &collect,
        &topic,
        1..=MESSAGES,
        CONCURRENCY,
        &ledger,
        &traffic,
    );
    let outage = async {
        traffic.wait_accepted(MESSAGES / 2).await?;
        let at = traffic.accepted();
        mongo.kill();
        let killed = Instant::now();
        until(
            &format!("{REFUSALS} answers of 503 while MongoDB is down"),
            stall(),
            || async {
                let refusals = lock(&traffic.responses)
                    .iter()
                    .filter(|r| r.started >= killed && r.status == Some(503))
                    .count();
                Ok(if refusals >= REFUSALS {
                    Check::Done(())
                } else {
                    Check::Waiting(refusals)
                })
            },
        )
        .await?;
        let down = killed.elapsed();
        mongo.restart().await.context("restarting MongoDB")?;
        Ok::<_, anyhow::Error>((at, down))
    };
    let ((), (at, down)) = tokio::try_join!(produce, outage)?;
    let missing = wait_topic_delivered(&devices, &topic, &ledger).await;
    let mut tally = Tally::default();
    tally_topic(&mut tally, &devices, &topic, &ledger);
    eprintln!(
        "topic_mongodb_outage: killed after {at} of {MESSAGES} messages, down {down:.1?}; 503s {}; {} reconnects",
        traffic.count(503),
        reconnects(&devices),
    );
    stop_devices(devices).await;
    tally.conclude("topic_mongodb_outage")?;
    if let Some(missing) = missing {
        bail!("{missing}");
    }
    drop((a, b));
    Ok(())
}
