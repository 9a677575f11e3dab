//! The Rust client (`edgepush-client`, managed mode) against the managed
//! edge, over a real WebSocket.
//!
//! What is real: the client and its socket, the connections handlers, Redis,
//! MongoDB, the management API client (the SDK dispatch and the handlers
//! post with), the HTTP server standing in for the management API, and the
//! dispatcher posting live messages. What stands in for API Gateway itself
//! is [`ApiGateway`] below, as small as it can be: it accepts the upgrade
//! only when `$connect` answers 200 (the event built from the request, as
//! API Gateway builds it), hands every client frame to `$default` and the
//! end of the socket to `$disconnect`, and writes to the socket what the
//! management API stand-in was posted for the connection, in the order it
//! took the posts (a `DELETE` closes the socket).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use common::*;
use edgepush_client::{AckPolicy, Client, ClientConfig, Event, ManagedEdge, Seq, TokenSource};
use edgepush_connections::Settings;
use edgepush_testkit::wait::{self, Check};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, http};

/// Lines the gateway keeps for the test to read.
type Log = Arc<Mutex<Vec<String>>>;

/// A WebSocket endpoint in front of the handlers, the way API Gateway is.
struct ApiGateway {
    url: String,
    /// Every client frame handed to `$default`, in order.
    frames: Log,
    /// The query string of every upgrade request.
    queries: Log,
    task: tokio::task::JoinHandle<()>,
}

impl ApiGateway {
    async fn start(env: Arc<Env>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/prod", listener.local_addr()?);
        let frames: Log = Arc::default();
        let queries: Log = Arc::default();
        let log = (frames.clone(), queries.clone());
        let task = tokio::spawn(async move {
            static IDS: AtomicU64 = AtomicU64::new(0);
            while let Ok((stream, _)) = listener.accept().await {
                let conn = format!("KimC0nn{}=", IDS.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(serve(env.clone(), stream, conn, log.clone()));
            }
        });
        Ok(Self {
            url,
            frames,
            queries,
            task,
        })
    }
}

impl Drop for ApiGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `$connect` event of an upgrade request, as API Gateway builds it:
/// no authorizer (the handler verifies the token), the request's headers
/// and query string.
fn connect_event(request: &Request, conn: &str) -> serde_json::Value {
    let mut value = for_conn(
        without_authorizer(fixture("connect.json").expect("fixture")),
        conn,
        "",
    );
    if let Some(auth) = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        value["headers"]["Authorization"] = json!(auth);
        value["multiValueHeaders"]["Authorization"] = json!([auth]);
    }
    let pairs: Vec<(String, String)> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    with_query(value, &pairs)
}

/// One connection: `$connect` decides the upgrade; then client frames go
/// to `$default` and the stand-in's posts for `conn` to the socket.
async fn serve(
    env: Arc<Env>,
    stream: tokio::net::TcpStream,
    conn: String,
    (frames, queries): (Log, Log),
) {
    let handlers = env.clone();
    let id = conn.clone();
    // The handshake's own error type (an HTTP response) is large.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request, response: Response| {
        if let Ok(mut queries) = queries.lock() {
            queries.push(request.uri().query().unwrap_or_default().to_owned());
        }
        let event = connect_event(request, &id);
        // The handshake callback is synchronous; the handler is not.
        let answer = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(handlers.handle(event))
        });
        match answer {
            Ok(answer) if answer.status_code == 200 => Ok(response),
            Ok(answer) => {
                let mut refusal = ErrorResponse::new(Some(body_text(&answer)));
                *refusal.status_mut() =
                    http::StatusCode::from_u16(u16::try_from(answer.status_code).unwrap_or(500))
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                Err(refusal)
            }
            Err(_) => Err(ErrorResponse::new(None)),
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    // The management API's side: what was posted to this connection.
    let poster_env = env.clone();
    let id = conn.clone();
    let forward = tokio::spawn(async move {
        let mut next = 0;
        loop {
            let seen = poster_env.api.seen();
            for request in seen.iter().skip(next) {
                if request.status >= 300 || conn_of(request) != id {
                    continue;
                }
                if request.method == "DELETE" {
                    let _ = sink.close().await;
                    return;
                }
                let text = String::from_utf8_lossy(&request.body).into_owned();
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            next = seen.len();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // The client's side: every frame to `$default`, the end to `$disconnect`.
    while let Some(Ok(message)) = source.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        if let Ok(mut frames) = frames.lock() {
            frames.push(text.as_str().to_owned());
        }
        let mut event = for_conn(
            without_authorizer(fixture("default-ack.json").expect("fixture")),
            &conn,
            "",
        );
        event["body"] = json!(text.as_str());
        let _ = env.handle(event).await;
    }
    forward.abort();
    let _ = env
        .handle(for_conn(
            without_authorizer(fixture("disconnect.json").expect("fixture")),
            &conn,
            "",
        ))
        .await;
}

/// Waits until the client has shown `last`, following its progress.
async fn reach(got: &Mutex<Vec<Seq>>, last: Seq) -> Result<()> {
    let what = format!("the client to show seq {last}");
    wait::until(&what, wait::stall(), || async {
        let now = got.lock().map(|g| g.clone()).unwrap_or_default();
        Ok(if now.last() >= Some(&last) {
            Check::Done(())
        } else {
            Check::Waiting(now.len())
        })
    })
    .await
}

/// The client resumes after the seq it holds, through several replay
/// pages, shows live messages in seq order though their posts crossed, and
/// repairs a lost post by itself with a gap request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_resumes_orders_and_repairs_gaps_on_the_managed_edge() -> Result<()> {
    let env = Arc::new(
        Env::with_settings(
            "client_managed",
            Settings {
                replay_page: 8,
                ..Settings::default()
            },
        )
        .await?,
    );
    let gateway = ApiGateway::start(env.clone()).await?;
    // The app holds 1..=10; 20 more came while it was away.
    env.store("kim", 30).await?;

    let config = ClientConfig {
        after: Some(10),
        ack_every: AckPolicy::EachMessage,
        managed: Some(ManagedEdge {
            gap_wait: Duration::from_millis(300),
            ..ManagedEdge::default()
        }),
        ..ClientConfig::new(
            [gateway.url.clone()],
            TokenSource::fixed(token("kim", Duration::from_secs(3600))),
        )
    };
    let mut client = Client::connect(config)?;
    let got: Arc<Mutex<Vec<Seq>>> = Arc::default();
    let sink = got.clone();
    let reader = tokio::spawn(async move {
        while let Some(event) = client.recv().await {
            if let Event::Message(msg) = event
                && let Ok(mut got) = sink.lock()
            {
                got.push(msg.seq);
            }
        }
    });
    let seqs = || got.lock().map(|g| g.clone()).unwrap_or_default();
    reach(&got, 30).await?;

    // Live, crossing: 32's post lands before 31's.
    let live = env.store("kim", 2).await?;
    env.dispatch(&live[1..]).await?;
    env.dispatch(&live[..1]).await?;
    reach(&got, 32).await?;

    // Lost: API Gateway fails 33's post until dispatch gives up; 34 comes.
    let live = env.store("kim", 2).await?;
    env.api.fail_posts_containing(r#""seq":33,"#);
    let lost = env.dispatch(&live[..1]).await?;
    ensure!(lost.delivered == 0, "{lost:?}");
    env.api.heal();
    env.dispatch(&live[1..]).await?;
    reach(&got, 34).await?;

    assert_eq!(seqs(), (11..=34).collect::<Vec<_>>(), "each once, in order");
    let upgrades = gateway
        .queries
        .lock()
        .map(|q| q.clone())
        .unwrap_or_default();
    ensure!(
        upgrades.iter().all(|q| q.contains("token=")),
        "the token in the query, where API Gateway's authorizer looks: {upgrades:?}"
    );
    let frames = gateway.frames.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(
        frames.first().map(String::as_str),
        Some(r#"{"type":"resume","after":10}"#)
    );
    ensure!(
        frames
            .iter()
            .any(|f| f == r#"{"type":"resume","after":32}"#),
        "the gap request after the last contiguous seq: {frames:?}"
    );
    // Paging: the client asked again after each page with `more`.
    for after in [18, 26] {
        let page = format!(r#"{{"type":"resume","after":{after}}}"#);
        ensure!(frames.contains(&page), "{page} in {frames:?}");
    }
    // Acks went through `$default` and were recorded.
    wait::until("the acks to be written", wait::stall(), || async {
        let acked =
            edgepush_core::MessageStore::acked(&*env.messages, &edgepush_testkit::user("kim"))
                .await?;
        Ok(if acked >= 11 {
            Check::Done(())
        } else {
            Check::Waiting(acked)
        })
    })
    .await?;

    reader.abort();
    let _ = reader.await;
    drop(gateway);
    // The database goes with the last handle on the environment (the
    // gateway's tasks end with the runtime); the keys go now.
    edgepush_testkit::delete_prefix(&edgepush_testkit::redis_url()?, &env.prefix).await?;
    Ok(())
}
