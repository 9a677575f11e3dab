//! The edge node's push API against the real AWS clients: the
//! `aws-sdk-apigatewaymanagement` client and the `aws` CLI, exactly as they
//! would talk to API Gateway.
//!
//! Each test starts a real node in process ([`edge_node::run`] on loopback
//! port 0) on the real stores (Redis from `EDGEPUSH_TEST_REDIS_URL` under a
//! key prefix of its own, MongoDB from `EDGEPUSH_TEST_MONGODB_URI` in a
//! database of its own) and connects a real WebSocket client with a minted
//! HS256 token.
//!
//! The CLI test runs `aws` from `EDGEPUSH_AWS_CLI`, else from `PATH`
//! (awscli v1 or v2 from PyPI).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use edge_node::{AuthMode, NodeConfig, NodeDeps};
use edgepush_auth::{AuthConfig, Claims, JwtVerifier, mint_hs256};
use edgepush_core::protocol::ServerFrame;
use edgepush_delivery::sigv4::PushCredential;
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::{TestDatabase, redis_url, unique, unique_prefix};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &[u8] = b"push-api-test-jwt-secret-0123456789";
const PUSH_KEY_ID: &str = "AKIDPUSHAPITEST";
const PUSH_SECRET: &str = "push-api-test-secret/with+odd=chars";
const REGION: &str = "us-east-1";
const USER_AGENT: &str = "edgepush-push-api-test/1.0 (tokio-tungstenite)";
/// The largest `PostToConnection` body API Gateway accepts.
const MAX_POST: usize = 128 * 1024;
/// Bound on waiting for anything, so a hang fails the test instead of
/// stalling it (not a timing assertion).
const WAIT: Duration = Duration::from_secs(20);

type Client = WebSocketStream<TcpStream>;

/// A node running in this process on the real stores.
struct Node {
    ws_addr: SocketAddr,
    push_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    database: TestDatabase,
}

impl Node {
    async fn start(test: &str) -> Result<Self> {
        let redis = RedisConfig {
            key_prefix: unique_prefix(test),
            route_ttl: Duration::from_secs(600),
            ..RedisConfig::new(redis_url()?)
        };
        let routes = Arc::new(RedisRouteStore::connect(redis).await?);
        let database = TestDatabase::shared()?;
        let mut mongo = MongoConfig::new(database.uri());
        mongo.database = database.name().to_owned();
        let messages = MongoMessageStore::connect(mongo.clone()).await?;
        let topics = edgepush_mongo::MongoTopicStore::on(messages.database(), mongo).await?;
        let auth = AuthConfig::hs256(JWT_SECRET.to_vec());
        let deps = NodeDeps {
            routes: routes.clone(),
            nodes: routes.clone(),
            messages: Arc::new(messages),
            verifier: Arc::new(JwtVerifier::new(auth.clone())?),
            topics: Arc::new(topics),
            topic_routes: routes.clone(),
            presence: routes,
            pusher: Arc::new(edgepush_delivery::HttpPusher::new(
                edgepush_delivery::PushClientConfig::new(PushCredential::new(
                    PUSH_KEY_ID,
                    PUSH_SECRET,
                    REGION,
                )),
            )?),
        };
        let config = NodeConfig::for_local(
            "push-api-test",
            AuthMode::Local(auth),
            PushCredential::new(PUSH_KEY_ID, PUSH_SECRET, REGION),
        );
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let push = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (ws_addr, push_addr) = (ws.local_addr()?, push.local_addr()?);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = edge_node::run(ws, push, config, deps, stopped.cancelled_owned()).await
            {
                tracing::error!(error = %e, "test node failed");
            }
        });
        Ok(Self {
            ws_addr,
            push_addr,
            stop,
            task,
            database,
        })
    }

    /// The push API's URL under a stage, as an API Gateway endpoint looks.
    fn endpoint(&self) -> String {
        format!("http://{}/prod", self.push_addr)
    }

    /// The real SDK client, signing with `secret`.
    fn sdk(&self, secret: &str) -> aws_sdk_apigatewaymanagement::Client {
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version_latest()
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(PUSH_KEY_ID, secret, None, None, "test"))
            .region(Region::new(REGION))
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_apigatewaymanagement::Client::from_conf(config)
    }

    /// A WebSocket client of `user`, and the connection id its `hello` named.
    async fn connect(&self, user: &str) -> Result<(Client, String)> {
        let token = mint_hs256(JWT_SECRET, &Claims::new(user, Duration::from_secs(600)));
        let mut request =
            format!("ws://{}/ws?token={token}", self.ws_addr).into_client_request()?;
        request
            .headers_mut()
            .insert("user-agent", HeaderValue::from_static(USER_AGENT));
        let stream = TcpStream::connect(self.ws_addr).await?;
        let (mut ws, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
                .await
                .context("the upgrade did not finish")?
                .context("upgrade refused")?;
        let hello = next_data(&mut ws).await?;
        let Message::Text(text) = hello else {
            bail!("expected the hello text frame, got {hello:?}");
        };
        match ServerFrame::parse(&text)? {
            ServerFrame::Hello { conn_id, user_id } => {
                ensure!(user_id.as_str() == user, "hello names {user_id}");
                Ok((ws, conn_id.to_string()))
            }
            other => bail!("expected hello, got {other:?}"),
        }
    }

    /// Drains the node and drops its database.
    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .context("the node did not stop")??;
        self.database.cleanup().await
    }
}

/// The next text, binary or close frame (pings and pongs skipped).
async fn next_data(ws: &mut Client) -> Result<Message> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no frame arrived")?
            .context("the socket ended without a close frame")??;
        match frame {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            // Every connection is subscribed to the broadcast topic first.
            Message::Text(t) if t.as_str().starts_with(r#"{"type":"subscribed""#) => continue,
            other => return Ok(other),
        }
    }
}

/// Text and binary payloads with every kind of byte API Gateway may carry.
fn binary_payload() -> Vec<u8> {
    (0..=255u8).chain((0..=255u8).rev()).collect()
}

#[tokio::test]
async fn post_to_connection_delivers_the_exact_bytes() -> Result<()> {
    let node = Node::start("post").await?;
    let (mut ws, conn) = node.connect("alice").await?;
    let sdk = node.sdk(PUSH_SECRET);

    let text = r#"{"type":"notice","text":"héllo ✓ \"quoted\"","n":[1,2,3]}"#;
    sdk.post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(text.as_bytes().to_vec()))
        .send()
        .await
        .context("PostToConnection (text)")?;
    match next_data(&mut ws).await? {
        Message::Text(got) => assert_eq!(got.as_str(), text),
        other => bail!("expected a text frame, got {other:?}"),
    }

    // Bytes that are not UTF-8 arrive as a binary frame, unchanged.
    let binary = binary_payload();
    sdk.post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(binary.clone()))
        .send()
        .await
        .context("PostToConnection (binary)")?;
    match next_data(&mut ws).await? {
        Message::Binary(got) => assert_eq!(got, Bytes::from(binary)),
        other => bail!("expected a binary frame, got {other:?}"),
    }

    // Exactly 128 KiB is still accepted.
    let largest = "x".repeat(MAX_POST);
    sdk.post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(largest.as_bytes().to_vec()))
        .send()
        .await
        .context("PostToConnection (128 KiB)")?;
    match next_data(&mut ws).await? {
        Message::Text(got) => assert_eq!(got.len(), MAX_POST),
        other => bail!("expected a text frame, got {other:?}"),
    }
    node.stop().await
}

#[tokio::test]
async fn get_connection_answers_the_api_gateway_shape() -> Result<()> {
    let node = Node::start("get").await?;
    let before = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (mut ws, conn) = node.connect("bob").await?;
    // Client activity, so the node has something to call last active.
    ws.send(Message::Text(r#"{"type":"ack","seq":0}"#.into()))
        .await?;

    let got = node
        .sdk(PUSH_SECRET)
        .get_connection()
        .connection_id(&conn)
        .send()
        .await
        .context("GetConnection")?;
    let connected_at = got.connected_at().context("connectedAt parsed")?;
    let last_active_at = got.last_active_at().context("lastActiveAt parsed")?;
    let after = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let connected = u64::try_from(connected_at.secs())?;
    ensure!(
        (before..=after).contains(&connected),
        "connectedAt {connected} is not between {before} and {after}"
    );
    ensure!(
        last_active_at.as_nanos() >= connected_at.as_nanos(),
        "lastActiveAt {last_active_at} before connectedAt {connected_at}"
    );
    let identity = got.identity().context("identity parsed")?;
    assert_eq!(identity.source_ip(), Some("127.0.0.1"));
    assert_eq!(identity.user_agent(), Some(USER_AGENT));
    node.stop().await
}

#[tokio::test]
async fn delete_connection_closes_the_socket_with_1000() -> Result<()> {
    let node = Node::start("delete").await?;
    let (mut ws, conn) = node.connect("carol").await?;
    let sdk = node.sdk(PUSH_SECRET);
    sdk.delete_connection()
        .connection_id(&conn)
        .send()
        .await
        .context("DeleteConnection")?;
    match next_data(&mut ws).await? {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Normal),
        other => bail!("expected close 1000, got {other:?}"),
    }

    // Once closed, the connection is gone for every operation.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let result = sdk
            .post_to_connection()
            .connection_id(&conn)
            .data(Blob::new(b"late".to_vec()))
            .send()
            .await;
        match result {
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_gone_exception()) =>
            {
                break;
            }
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => bail!("expected GoneException after the close, got {other:?}"),
        }
    }
    node.stop().await
}

#[tokio::test]
async fn unknown_connections_are_a_typed_gone_exception() -> Result<()> {
    let node = Node::start("gone").await?;
    let sdk = node.sdk(PUSH_SECRET);
    // An API Gateway id shape, which this node never issued.
    let unknown = "L0SM9cOFvHcCIhw=";

    let post = sdk
        .post_to_connection()
        .connection_id(unknown)
        .data(Blob::new(b"x".to_vec()))
        .send()
        .await;
    match post {
        Err(err) => assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_gone_exception()),
            "{err:?}"
        ),
        Ok(_) => bail!("a post to an unknown connection succeeded"),
    }
    let get = sdk.get_connection().connection_id(unknown).send().await;
    match get {
        Err(err) => assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_gone_exception()),
            "{err:?}"
        ),
        Ok(out) => bail!("GetConnection of an unknown connection answered {out:?}"),
    }
    let delete = sdk.delete_connection().connection_id(unknown).send().await;
    match delete {
        Err(err) => assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_gone_exception()),
            "{err:?}"
        ),
        Ok(_) => bail!("DeleteConnection of an unknown connection succeeded"),
    }
    node.stop().await
}

#[tokio::test]
async fn a_body_over_128_kib_is_refused_with_413() -> Result<()> {
    let node = Node::start("too_large").await?;
    let (mut ws, conn) = node.connect("dave").await?;
    let sdk = node.sdk(PUSH_SECRET);
    let result = sdk
        .post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(vec![b'x'; MAX_POST + 1]))
        .send()
        .await;
    let err = match result {
        Ok(_) => bail!("a body over 128 KiB was accepted"),
        Err(err) => err,
    };
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(413),
        "{err:?}"
    );
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_payload_too_large_exception()),
        "{err:?}"
    );

    // Nothing reached the client: the next frame is the one posted now.
    sdk.post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(b"after".to_vec()))
        .send()
        .await?;
    match next_data(&mut ws).await? {
        Message::Text(got) => assert_eq!(got.as_str(), "after"),
        other => bail!("expected the small frame, got {other:?}"),
    }
    node.stop().await
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_403() -> Result<()> {
    let node = Node::start("forbidden").await?;
    let (mut ws, conn) = node.connect("erin").await?;

    let result = node
        .sdk("not-the-push-secret")
        .post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(b"forged".to_vec()))
        .send()
        .await;
    let err = match result {
        Ok(_) => bail!("a wrongly signed post was accepted"),
        Err(err) => err,
    };
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_forbidden_exception()),
        "{err:?}"
    );
    let get = node
        .sdk("not-the-push-secret")
        .get_connection()
        .connection_id(&conn)
        .send()
        .await;
    assert!(get.is_err(), "a wrongly signed GetConnection answered");

    // The forged frame never reached the client.
    node.sdk(PUSH_SECRET)
        .post_to_connection()
        .connection_id(&conn)
        .data(Blob::new(b"genuine".to_vec()))
        .send()
        .await?;
    match next_data(&mut ws).await? {
        Message::Text(got) => assert_eq!(got.as_str(), "genuine"),
        other => bail!("expected the genuine frame, got {other:?}"),
    }
    node.stop().await
}

/// The `aws` executable: `EDGEPUSH_AWS_CLI`, else `aws` on `PATH`.
fn aws_cli() -> Result<PathBuf> {
    edgepush_testkit::program("EDGEPUSH_AWS_CLI", "aws", "`pip install awscli`")
}

#[tokio::test]
async fn the_aws_cli_posts_to_a_connection() -> Result<()> {
    let aws = aws_cli()?;
    let node = Node::start("cli").await?;
    let (mut ws, conn) = node.connect("frank").await?;

    // A config of our own: no profile of the machine leaks in, and
    // `cli_binary_format = raw-in-base64-out` makes awscli v2 send --data as
    // raw text like v1 does (v2 otherwise expects base64; v1 ignores it).
    let dir = std::env::temp_dir().join(unique("edgepush-aws-cli"));
    std::fs::create_dir_all(&dir)?;
    let config_file = dir.join("config");
    std::fs::write(
        &config_file,
        format!("[default]\nregion = {REGION}\ncli_binary_format = raw-in-base64-out\n"),
    )?;
    let data = r#"{"from":"aws cli","text":"hello ✓"}"#;
    let output = tokio::process::Command::new(&aws)
        .args([
            "apigatewaymanagementapi",
            "post-to-connection",
            "--endpoint-url",
            &node.endpoint(),
            "--connection-id",
            &conn,
            "--data",
            data,
        ])
        .env("AWS_ACCESS_KEY_ID", PUSH_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", PUSH_SECRET)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", &config_file)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .context("the aws CLI did not finish")?
        .with_context(|| format!("running {}", aws.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        output.status.success(),
        "aws apigatewaymanagementapi post-to-connection failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match next_data(&mut ws).await? {
        Message::Text(got) => assert_eq!(got.as_str(), data),
        other => bail!("expected the CLI's text frame, got {other:?}"),
    }

    // The CLI reports a gone connection as the API's GoneException.
    let output = tokio::process::Command::new(&aws)
        .args([
            "apigatewaymanagementapi",
            "post-to-connection",
            "--endpoint-url",
            &node.endpoint(),
            "--connection-id",
            "L0SM9cOFvHcCIhw=",
            "--data",
            "x",
        ])
        .env("AWS_ACCESS_KEY_ID", PUSH_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", PUSH_SECRET)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .context("the aws CLI did not finish")??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success(),
        "posting to an unknown connection succeeded"
    );
    ensure!(stderr.contains("GoneException"), "stderr: {stderr}");
    node.stop().await
}
