//! The push API's signing against real clients and a real HTTP server.
//!
//! A tiny axum server, started per test on port 0, plays the edge node: it
//! runs [`verify`] on each raw request and records what it got. The real AWS
//! SDK client (`aws-sdk-apigatewaymanagement`) and [`HttpPusher`] call it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use edgepush_core::protocol::{PushBatch, PushBatchResult, PushItem};
use edgepush_core::{ConnId, MessageId, PushError, Pusher, StoredMessage, UserId};
use edgepush_delivery::{
    CredentialSet, HttpPusher, PostError, PushClientConfig, PushCredential, VerifyError, verify,
};

const KEY_ID: &str = "AKIDPUSHTEST";
const SECRET: &str = "push-secret/with+odd=chars";
const REGION: &str = "us-east-1";

fn credential(secret: &str) -> PushCredential {
    PushCredential::new(KEY_ID, secret, REGION)
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, exactly as received.
    target: String,
    verified: Result<(), VerifyError>,
    body: Bytes,
}

/// How the server answers.
#[derive(Clone)]
enum Reply {
    /// Like an edge node: 403 when the signature is bad, else per route.
    Node,
    /// Always this status and body, whatever the request.
    Fixed(u16, String),
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(reply: Reply) -> Result<Self> {
        let creds = CredentialSet::from(credential(SECRET));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = (creds, reply, seen.clone());
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (creds, reply, seen) = state.clone();
            async move { handle(req, &creds, &reply, &seen).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, seen, task })
    }

    fn url(&self, stage: &str) -> String {
        format!("http://{}{stage}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn only_request(&self) -> Result<Seen> {
        let seen = self.seen();
        match seen.as_slice() {
            [one] => Ok(one.clone()),
            other => bail!("expected exactly one request, got {}", other.len()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Body>,
    creds: &CredentialSet,
    reply: &Reply,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(body) => body,
        Err(_) => return answer(400, "", "unreadable body"),
    };
    let verified = verify(
        creds,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        SystemTime::now(),
    );
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    if let Ok(mut seen) = seen.lock() {
        seen.push(Seen {
            method: parts.method.to_string(),
            target: target.clone(),
            verified: verified.clone(),
            body: body.clone(),
        });
    }

    if let Reply::Fixed(status, text) = reply {
        return answer(*status, "", text);
    }
    if let Err(e) = verified {
        let json = serde_json::json!({ "message": e.to_string() }).to_string();
        return answer(403, "ForbiddenException", &json);
    }
    let path = parts.uri.path();
    if path.ends_with("/@batch") {
        let Ok(batch) = serde_json::from_slice::<PushBatch>(&body) else {
            return answer(400, "", "bad batch");
        };
        // Connections named gone-* are "not on this node".
        let mut result = PushBatchResult::default();
        for item in &batch.items {
            for conn in &item.connection_ids {
                if conn.as_str().starts_with("gone-") {
                    result.gone.push(conn.clone());
                } else {
                    result.delivered += 1;
                }
            }
        }
        let json = serde_json::to_string(&result).unwrap_or_default();
        return answer(200, "", &json);
    }
    if path.contains("/@connections/gone") {
        return answer(410, "GoneException", r#"{"message":"gone"}"#);
    }
    match parts.method.as_str() {
        "GET" => answer(
            200,
            "",
            r#"{"connectedAt":"2024-05-06T07:08:09Z","lastActiveAt":"2024-05-06T07:08:10Z","identity":{"sourceIp":"127.0.0.1","userAgent":"test"}}"#,
        ),
        "DELETE" => answer(204, "", ""),
        _ => answer(200, "", ""),
    }
}

fn answer(status: u16, error_type: &str, body: &str) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    if !error_type.is_empty() {
        builder = builder.header("x-amzn-errortype", error_type);
    }
    builder
        .body(Body::from(body.to_owned()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The real AWS SDK client pointed at `endpoint` (with a stage path).
fn sdk_client(endpoint: String, secret: &str) -> aws_sdk_apigatewaymanagement::Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(KEY_ID, secret, None, None, "test"))
        .region(Region::new(REGION))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

/// Every byte value, so any re-encoding of the body would show.
fn binary_payload() -> Vec<u8> {
    (0..=255u8).chain((0..=255u8).rev()).collect()
}

fn pusher(secret: &str) -> Result<HttpPusher> {
    Ok(HttpPusher::new(PushClientConfig::new(credential(secret)))?)
}

fn items() -> Result<Vec<PushItem>> {
    let message = StoredMessage {
        user_id: UserId::new("alice")?,
        seq: 7,
        id: MessageId::new("m-1")?,
        data: Arc::from(serde_json::value::RawValue::from_string(
            r#"{"text":"hi"}"#.into(),
        )?),
        created_at_ms: 1_714_979_289_000,
    };
    Ok(vec![PushItem {
        connection_ids: vec![
            ConnId::new("c-1")?,
            ConnId::new("c-2")?,
            ConnId::new("gone-3")?,
        ],
        message,
    }])
}

#[tokio::test]
async fn sdk_post_to_connection_verifies_and_body_arrives_exact() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let client = sdk_client(server.url("/prod"), SECRET);
    let payload = binary_payload();
    client
        .post_to_connection()
        .connection_id("abc==")
        .data(Blob::new(payload.clone()))
        .send()
        .await
        .context("the SDK's post_to_connection")?;

    let seen = server.only_request()?;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/prod/@connections/abc%3D%3D");
    assert_eq!(seen.verified, Ok(()));
    assert_eq!(seen.body.as_ref(), payload.as_slice());
    Ok(())
}

#[tokio::test]
async fn sdk_get_and_delete_verify() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let client = sdk_client(server.url("/prod"), SECRET);
    let got = client
        .get_connection()
        .connection_id("a+b:c@d")
        .send()
        .await
        .context("the SDK's get_connection")?;
    assert!(got.connected_at().is_some());
    client
        .delete_connection()
        .connection_id("a+b:c@d")
        .send()
        .await
        .context("the SDK's delete_connection")?;

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.target, "/prod/@connections/a%2Bb%3Ac%40d");
        assert_eq!(s.verified, Ok(()), "{} {}", s.method, s.target);
    }
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[1].method, "DELETE");
    Ok(())
}

#[tokio::test]
async fn sdk_with_wrong_secret_fails_verification() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let client = sdk_client(server.url("/prod"), "not-the-secret");
    let result = client
        .post_to_connection()
        .connection_id("abc==")
        .data(Blob::new(b"hello".to_vec()))
        .send()
        .await;
    let err = match result {
        Ok(_) => bail!("a wrongly signed post was accepted"),
        Err(err) => err,
    };
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_forbidden_exception()),
        "{err:?}"
    );
    let seen = server.only_request()?;
    assert_eq!(seen.verified, Err(VerifyError::BadSignature));
    Ok(())
}

#[tokio::test]
async fn sdk_sees_gone_connections_as_gone() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let client = sdk_client(server.url("/prod"), SECRET);
    let result = client
        .post_to_connection()
        .connection_id("gone-1")
        .data(Blob::new(b"x".to_vec()))
        .send()
        .await;
    match result {
        Ok(_) => bail!("a post to a gone connection succeeded"),
        Err(err) => assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_gone_exception()),
            "{err:?}"
        ),
    }
    Ok(())
}

#[tokio::test]
async fn pusher_batch_verifies_and_reports() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let pusher = pusher(SECRET)?;
    for stage in ["", "/prod", "/prod/"] {
        let report = pusher.push(&server.url(stage), &items()?).await?;
        assert_eq!(report.delivered, 2);
        assert_eq!(report.gone, vec![ConnId::new("gone-3")?]);
    }

    let seen = server.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/@batch", "/prod/@batch", "/prod/@batch"]);
    for s in &seen {
        assert_eq!(s.verified, Ok(()));
        let batch: PushBatch = serde_json::from_slice(&s.body)?;
        assert_eq!(batch.items.len(), 1);
        assert_eq!(batch.items[0].message, items()?[0].message);
    }
    Ok(())
}

#[tokio::test]
async fn pusher_with_wrong_secret_is_refused() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let err = match pusher("wrong")?.push(&server.url("/prod"), &items()?).await {
        Ok(report) => bail!("accepted: {report:?}"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, PushError::Refused { status: 403, body, .. } if body.contains("signature does not match")),
        "{err:?}"
    );
    assert_eq!(
        server.only_request()?.verified,
        Err(VerifyError::BadSignature)
    );
    Ok(())
}

#[tokio::test]
async fn pusher_error_statuses_are_refused() -> Result<()> {
    for (status, text) in [(401, "no entry".to_owned()), (500, "x".repeat(5000))] {
        let server = Server::start(Reply::Fixed(status, text.clone())).await?;
        match pusher(SECRET)?.push(&server.url("/prod"), &items()?).await {
            Err(PushError::Refused {
                status: got,
                body,
                url,
            }) => {
                assert_eq!(got, status);
                assert_eq!(body, text.chars().take(200).collect::<String>());
                assert_eq!(url, server.url("/prod"));
            }
            other => bail!("status {status}: expected Refused, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn pusher_unreadable_answer_is_refused() -> Result<()> {
    let server = Server::start(Reply::Fixed(200, "not json".into())).await?;
    match pusher(SECRET)?.push(&server.url(""), &items()?).await {
        Err(PushError::Refused { status: 200, .. }) => Ok(()),
        other => bail!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn pusher_closed_port_is_unreachable() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    let url = format!("http://{addr}/prod");
    match pusher(SECRET)?.push(&url, &items()?).await {
        Err(PushError::Unreachable { url: got, reason }) => {
            assert_eq!(got, url);
            assert!(!reason.is_empty());
            Ok(())
        }
        other => bail!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn pusher_timeout_is_unreachable() -> Result<()> {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut config = PushClientConfig::new(credential(SECRET));
    config.timeout = Duration::from_millis(300);
    let pusher = HttpPusher::new(config)?;
    let result = pusher.push(&format!("http://{addr}"), &items()?).await;
    hold.abort();
    match result {
        Err(PushError::Unreachable { .. }) => Ok(()),
        other => bail!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn pusher_post_to_connection_verifies_and_maps_gone() -> Result<()> {
    let server = Server::start(Reply::Node).await?;
    let pusher = pusher(SECRET)?;
    let payload = Bytes::from(binary_payload());
    pusher
        .post_to_connection(
            &server.url("/prod/"),
            &ConnId::new("abc==")?,
            payload.clone(),
        )
        .await?;
    let seen = server.only_request()?;
    // Encoded exactly as the SDK encodes it.
    assert_eq!(seen.target, "/prod/@connections/abc%3D%3D");
    assert_eq!(seen.verified, Ok(()));
    assert_eq!(seen.body, payload);

    let gone = pusher
        .post_to_connection(
            &server.url("/prod"),
            &ConnId::new("gone-9")?,
            Bytes::from_static(b"x"),
        )
        .await;
    assert!(matches!(gone, Err(PostError::Gone)), "{gone:?}");

    let refused = self::pusher("wrong")?
        .post_to_connection(
            &server.url("/prod"),
            &ConnId::new("c1")?,
            Bytes::from_static(b"x"),
        )
        .await;
    assert!(
        matches!(refused, Err(PostError::Refused { status: 403, .. })),
        "{refused:?}"
    );
    Ok(())
}
