//! The image and the compose stack of `docker/`, built and run here: edge
//! nodes in containers from the image `docker/Dockerfile` builds, drained by
//! `docker stop`; and the whole system from `docker/compose.yml` (with
//! `docker/compose.host.yml`), a message going collect -> SQS -> dispatch ->
//! edge nodes.
//!
//! Run with `scripts/test`: it starts a Docker daemon and makes the local
//! stand-ins of the base images (`DOCKER_HOST`, `EDGEPUSH_DOCKER_*`), besides
//! the shared Redis, MongoDB wire server and AWS emulator
//! (`EDGEPUSH_TEST_AWS_ENDPOINT`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use edgepush_aws::AwsSettings;
use edgepush_testkit::free_port;
use edgepush_tests::docker::{ComposeStack, Container, image};
use edgepush_tests::tokens::{JWT_SECRET, PUSH_ACCESS_KEY_ID, PUSH_REGION, PUSH_SECRET};
use edgepush_tests::{
    Check, Collect, RedisProbe, TestEnv, TokenIn, WsClient, mint, stall, unique, until,
};
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);
/// Close code of a draining node.
const DRAINING: u16 = 1012;

/// Waits until `GET url` answers 200, following the container's progress
/// (its log growing while it connects to its stores), and fails at once,
/// with the logs, when the container stopped.
async fn ready(
    url: &str,
    running: impl Fn() -> anyhow::Result<bool>,
    logs: impl Fn() -> String,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let outcome = until(&format!("GET {url} -> 200"), stall(), || {
        let http = http.clone();
        let running = running();
        let progress = logs().len();
        async move {
            if !running? {
                return Ok(Check::Done(Err(anyhow!("the container stopped"))));
            }
            if let Ok(response) = http.get(url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(Check::Done(Ok(())));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok(Check::Waiting(progress))
        }
    })
    .await;
    outcome
        .and_then(|ready| ready)
        .with_context(|| format!("its logs:\n{}", logs()))
}

/// One edge-node container of `env`'s system on free loopback ports.
struct NodeContainer {
    container: Container,
    node_id: String,
    ws_port: u16,
}

impl NodeContainer {
    async fn start(env: &TestEnv, image: &str) -> anyhow::Result<Self> {
        let node_id = unique("dnode");
        let (ws_port, push_port) = (free_port()?, free_port()?);
        let vars: Vec<(String, String)> = [
            ("RUST_LOG", "info".to_owned()),
            ("EDGEPUSH_NODE_ID", node_id.clone()),
            ("EDGEPUSH_WS_ADDR", format!("127.0.0.1:{ws_port}")),
            ("EDGEPUSH_PUSH_ADDR", format!("127.0.0.1:{push_port}")),
            ("EDGEPUSH_REDIS_URL", env.redis_url.clone()),
            ("EDGEPUSH_MONGODB_URI", env.mongodb_uri.clone()),
            ("EDGEPUSH_MONGODB_DATABASE", env.database.clone()),
            ("EDGEPUSH_JWT_SECRET", JWT_SECRET.to_owned()),
            ("EDGEPUSH_PUSH_ACCESS_KEY_ID", PUSH_ACCESS_KEY_ID.to_owned()),
            ("EDGEPUSH_PUSH_SECRET_ACCESS_KEY", PUSH_SECRET.to_owned()),
            ("EDGEPUSH_PUSH_REGION", PUSH_REGION.to_owned()),
            ("EDGEPUSH_HEARTBEAT_MS", "500".to_owned()),
            ("EDGEPUSH_NODE_TTL_MS", "3000".to_owned()),
            // EDGEPUSH_DRAIN_TIMEOUT_MS is the image's own (below Docker's
            // 10 s grace period): that is what `docker stop` must fit.
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let container = tokio::task::spawn_blocking({
            let name = node_id.clone();
            let image = image.to_owned();
            move || Container::run(&name, &image, &vars, &[])
        })
        .await??;
        let node = Self {
            container,
            node_id,
            ws_port,
        };
        ready(
            &format!("http://127.0.0.1:{push_port}/readyz"),
            || node.container.running(),
            || node.container.logs(),
        )
        .await?;
        Ok(node)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.ws_port)
    }
}

#[tokio::test]
async fn image_nodes_deliver_and_docker_stop_drains_one_without_loss() -> anyhow::Result<()> {
    let image = tokio::task::spawn_blocking(image).await??;
    let env = TestEnv::shared()?;
    let (a, b) = tokio::try_join!(
        NodeContainer::start(&env, &image),
        NodeContainer::start(&env, &image)
    )?;

    // Not root, by the image's own USER.
    let uid = a.container.exec(&["id", "-u"])?;
    ensure!(
        uid != "0" && !uid.is_empty(),
        "the node runs as uid {uid:?}"
    );
    ensure!(
        a.container.inspect("{{.Config.User}}")? == "10001:10001",
        "the image sets USER 10001:10001"
    );

    let collect = Collect::start(&env).await?;
    let redis = RedisProbe::connect(&env.redis_url).await?;
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut on_a = WsClient::connect(&a.ws_url(), &mint(&alice, HOUR)).await?;
    let mut on_b = WsClient::connect(&b.ws_url(), &mint(&bob, HOUR)).await?;

    // A client on each node receives what collect accepted.
    let first = collect.send(&[&alice, &bob], json!({ "n": 1 })).await?;
    ensure!(first.len() == 2, "two receipts: {first:?}");
    let got_a = on_a.collect_msgs(1, stall()).await?;
    let got_b = on_b.collect_msgs(1, stall()).await?;
    ensure!(got_a[0].data == json!({ "n": 1 }) && got_b[0].data == json!({ "n": 1 }));
    let alice_seen = got_a[0].seq;
    ensure!(
        redis
            .routes(&alice)
            .await?
            .values()
            .any(|n| n == &a.node_id),
        "alice's route names node a"
    );

    // docker stop: SIGTERM, 10 s grace. The client hears 1012 and the node
    // exits by itself (0, not 137 from the SIGKILL after the grace period).
    let (closed, code) = tokio::join!(on_a.closed(Duration::from_secs(60)), a.container.stop());
    ensure!(
        closed? == Some(DRAINING),
        "the client of the stopped node is closed with 1012"
    );
    let code = code?;
    let logs = a.container.logs();
    ensure!(
        code == 0,
        "the node exited with {code} (137: killed after the grace period); its logs:\n{logs}"
    );
    ensure!(
        logs.contains("edge node stopped"),
        "the node finished its drain:\n{logs}"
    );
    ensure!(
        !redis
            .routes(&alice)
            .await?
            .values()
            .any(|n| n == &a.node_id),
        "the drained node's routes left Redis"
    );

    // Sent while alice has no connection: kept in MongoDB.
    let missed = collect.send(&[&alice], json!({ "n": 2 })).await?;
    // alice resumes on node b from the last seq she saw and misses nothing.
    let mut resumed = match WsClient::connect_raw(
        &b.ws_url(),
        TokenIn::Header(&mint(&alice, HOUR)),
        Some(alice_seen),
    )
    .await?
    {
        Ok(client) => client,
        Err(refused) => bail!("node b refused alice: {} {}", refused.status, refused.body),
    };
    let later = collect.send(&[&alice, &bob], json!({ "n": 3 })).await?;
    let got = resumed.collect_msgs(2, stall()).await?;
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = missed
        .iter()
        .chain(later.iter())
        .filter(|r| r.user_id.as_str() == alice)
        .map(|r| r.seq)
        .collect();
    ensure!(
        seqs == want,
        "alice got seqs {seqs:?} on node b, want {want:?}"
    );
    ensure!(
        on_b.collect_msgs(1, stall()).await?[0].data == json!({ "n": 3 }),
        "bob, on the node that stayed, got the last message"
    );
    drop(b);
    env.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn compose_stack_delivers_through_localstack_sqs_to_both_edge_nodes() -> anyhow::Result<()> {
    let image = tokio::task::spawn_blocking(image).await??;
    let env = TestEnv::shared()?;
    let endpoint = std::env::var("EDGEPUSH_TEST_AWS_ENDPOINT")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .context(
            "EDGEPUSH_TEST_AWS_ENDPOINT is not set: run scripts/test (it starts LocalStack)",
        )?;

    // A queue of this test's own: the emulator is shared with other tests.
    let sqs = aws_sdk_sqs::Client::new(&AwsSettings::for_endpoint(&endpoint).load().await);
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("edgepush-compose"))
        .send()
        .await
        .context("creating the test's queue")?
        .queue_url()
        .context("no queue URL")?
        .to_owned();

    let project = unique("ep").replace('-', "").to_ascii_lowercase();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let api_key = "compose-test-key";
    let vars: Vec<(String, String)> = [
        ("EDGEPUSH_IMAGE", image.to_owned()),
        ("EP_REDIS_URL", env.redis_url.clone()),
        ("EP_MONGODB_URI", env.mongodb_uri.clone()),
        ("EP_MONGODB_DATABASE", env.database.clone()),
        ("EP_AWS_ENDPOINT", endpoint.clone()),
        ("EP_QUEUE_URL", queue_url.clone()),
        ("EP_API_KEYS", format!("compose:{api_key}")),
        ("EP_JWT_SECRET", JWT_SECRET.to_owned()),
        (
            "EP_PUSH_SECRET",
            "compose-push-secret-0123456789".to_owned(),
        ),
        ("EP_COLLECT_PORT", ports[0].to_string()),
        ("EP_EDGE1_WS_PORT", ports[1].to_string()),
        ("EP_EDGE1_PUSH_PORT", ports[2].to_string()),
        ("EP_EDGE2_WS_PORT", ports[3].to_string()),
        ("EP_EDGE2_PUSH_PORT", ports[4].to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let services = ["collect", "dispatch", "edge-1", "edge-2"];
    let stack = tokio::task::spawn_blocking({
        let project = project.clone();
        move || ComposeStack::up(&project, vars, &services)
    })
    .await??;

    // Every service with a health check reports healthy: the checks of the
    // compose files work inside the image.
    for service in ["collect", "edge-1", "edge-2"] {
        // Progress: the health state and the stack's log growing.
        let health = until(&format!("{service} healthy"), stall(), || async {
            let status = stack.inspect(service, "{{.State.Status}} {{.State.Health.Status}}")?;
            if status.starts_with("exited") || status.starts_with("dead") {
                return Ok(Check::Done(Err(anyhow!("{service} stopped: {status}"))));
            }
            if status == "running healthy" {
                return Ok(Check::Done(Ok(())));
            }
            let progress = (status, stack.logs().len());
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Check::Waiting(progress))
        })
        .await;
        health
            .and_then(|healthy| healthy)
            .with_context(|| format!("the stack's logs:\n{}", stack.logs()))?;
    }
    ensure!(
        stack.inspect("dispatch", "{{.State.Status}}")? == "running",
        "dispatch consumes: {}",
        stack.logs()
    );

    // One user with a device on each edge node.
    let user = unique("carol");
    let token = mint(&user, HOUR);
    let mut on_1 = WsClient::connect(&format!("ws://127.0.0.1:{}/ws", ports[1]), &token).await?;
    let mut on_2 = WsClient::connect(&format!("ws://127.0.0.1:{}/ws", ports[3]), &token).await?;

    // Through collect's HTTP API, as a business system sends.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("http://127.0.0.1:{}/v1/messages", ports[0]))
        .bearer_auth(api_key)
        .json(&json!({ "to": [user], "data": { "text": "through compose" } }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    ensure!(
        status == 202,
        "collect answered {status}: {body}\n{}",
        stack.logs()
    );

    let got_1 = on_1
        .collect_msgs(1, stall())
        .await
        .with_context(|| stack.logs())?;
    let got_2 = on_2
        .collect_msgs(1, stall())
        .await
        .with_context(|| stack.logs())?;
    for got in [&got_1[0], &got_2[0]] {
        ensure!(
            got.data == json!({ "text": "through compose" }),
            "got {}",
            got.data
        );
    }
    ensure!(
        got_1[0].seq == got_2[0].seq && got_1[0].id == got_2[0].id,
        "the same message on both"
    );

    // The queue was the way: dispatch consumed and deleted the record.
    let left = until("the queue to be empty", stall(), || async {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await?;
        let count: BTreeSet<String> = attributes
            .attributes()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        Ok(if count.iter().all(|c| c == "0") {
            Check::Done(())
        } else {
            Check::Waiting(format!("{count:?}"))
        })
    })
    .await;
    left.with_context(|| stack.logs())?;
    let logs = stack.logs();
    ensure!(
        logs.contains("consuming the dispatch queue") && logs.contains("dispatched"),
        "dispatch consumed from the queue; the logs:\n{logs}"
    );

    // Stopping the stack: the nodes drain their clients.
    let (closed, down) = tokio::join!(on_1.closed(Duration::from_secs(60)), async {
        tokio::task::spawn_blocking(move || {
            let out = stack.compose(&["stop"]);
            drop(stack);
            out
        })
        .await
    });
    down??;
    ensure!(
        closed? == Some(DRAINING),
        "compose stop drains edge-1 with 1012"
    );
    sqs.delete_queue().queue_url(&queue_url).send().await?;
    env.cleanup().await;
    Ok(())
}
