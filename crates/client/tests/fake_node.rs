//! The client's logic against a fake edge node that the test drives frame
//! by frame: resume queries, duplicate dropping, gaps, failover on drain,
//! backoff after drops and refusals, fatal 401, malformed frames and acks.
//!
//! Every wait is bounded ([`WAIT`]); nothing asserts a timing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use edgepush_client::{
    AckPolicy, Backoff, Client, ClientConfig, ClientError, ClientHandle, DisconnectReason, Event,
    Jitter, TokenSource,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The longest any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// One upgrade request the fake node received.
struct Incoming {
    /// The request's query string.
    query: Option<String>,
    /// The `Authorization` header.
    auth: Option<String>,
    /// The socket, when the node accepted the upgrade.
    ws: Option<Ws>,
}

/// A fake edge node on 127.0.0.1: every upgrade request is reported to the
/// test, accepted or refused with a scripted HTTP status.
struct FakeNode {
    url: String,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// Statuses for the next requests, in order; when empty, `refuse_all`.
    refusals: Arc<Mutex<VecDeque<u16>>>,
}

impl FakeNode {
    /// Starts a node that accepts every upgrade (`refuse_all: None`) or
    /// refuses every one with that status.
    async fn start(refuse_all: Option<u16>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws", listener.local_addr()?);
        let (tx, incoming) = mpsc::unbounded_channel();
        let refusals = Arc::new(Mutex::new(VecDeque::new()));
        let script = Arc::clone(&refusals);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let refusal = script
                    .lock()
                    .ok()
                    .and_then(|mut q| q.pop_front())
                    .or(refuse_all);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let seen = Arc::new(Mutex::new((None, None)));
                    let record = Arc::clone(&seen);
                    // The callback's signature is tungstenite's, large error and all.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &Request, resp: Response| {
                        let query = req.uri().query().map(str::to_owned);
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        if let Ok(mut seen) = record.lock() {
                            *seen = (query, auth);
                        }
                        match refusal {
                            None => Ok(resp),
                            Some(status) => {
                                let mut err = ErrorResponse::new(Some(format!(
                                    r#"{{"error":{{"code":"refused","message":"status {status}"}}}}"#
                                )));
                                *err.status_mut() =
                                    http::StatusCode::from_u16(status).unwrap_or_default();
                                Err(err)
                            }
                        }
                    };
                    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
                        .await
                        .ok();
                    let (query, auth) = seen.lock().map(|s| s.clone()).unwrap_or_default();
                    let _ = tx.send(Incoming { query, auth, ws });
                });
            }
        });
        Ok(Self {
            url,
            incoming,
            refusals,
        })
    }

    /// Refuses the next requests with these statuses, then goes back to normal.
    fn refuse_next(&self, statuses: &[u16]) {
        if let Ok(mut q) = self.refusals.lock() {
            q.extend(statuses);
        }
    }

    /// The next upgrade request.
    async fn next(&mut self) -> Result<Incoming> {
        timeout(WAIT, self.incoming.recv())
            .await
            .context("no connection attempt reached the fake node in time")?
            .ok_or_else(|| anyhow!("fake node stopped"))
    }

    /// The next upgrade request, which must have been accepted.
    async fn accept(&mut self) -> Result<(Option<String>, Ws)> {
        let incoming = self.next().await?;
        let ws = incoming.ws.context("the upgrade failed")?;
        Ok((incoming.query, ws))
    }
}

/// Fast, deterministic backoff: tests assert attempts, never timings.
fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(20),
        multiplier: 2.0,
        jitter: Jitter::None,
        reset_after: Duration::from_secs(10),
    }
}

fn config(nodes: &[&FakeNode], token: TokenSource) -> ClientConfig {
    ClientConfig {
        backoff: quick_backoff(),
        connect_timeout: Duration::from_secs(5),
        ack_every: AckPolicy::EachMessage,
        ..ClientConfig::new(nodes.iter().map(|n| n.url.clone()), token)
    }
}

async fn send(ws: &mut Ws, text: String) -> Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

async fn hello(ws: &mut Ws, conn: &str) -> Result<()> {
    send(
        ws,
        format!(r#"{{"type":"hello","conn_id":"{conn}","user_id":"alice"}}"#),
    )
    .await
}

async fn msg(ws: &mut Ws, seq: u64) -> Result<()> {
    send(
        ws,
        format!(r#"{{"type":"msg","seq":{seq},"id":"m{seq}","data":{{"n":{seq}}}}}"#),
    )
    .await
}

async fn close(ws: &mut Ws, code: u16, reason: &'static str) -> Result<()> {
    ws.close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
    .await?;
    // Read until the client's reply so the close handshake completes.
    let _ = timeout(WAIT, async { while ws.next().await.is_some() {} }).await;
    Ok(())
}

/// The next frame the client sent that is not a ping or pong.
async fn client_frame(ws: &mut Ws) -> Result<Message> {
    loop {
        match timeout(WAIT, ws.next()).await {
            Err(_) => bail!("the client sent nothing in time"),
            Ok(None) => bail!("the client closed the socket"),
            Ok(Some(Err(e))) => bail!("socket error: {e}"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(m))) => return Ok(m),
        }
    }
}

async fn expect_ack(ws: &mut Ws, seq: u64) -> Result<()> {
    match client_frame(ws).await? {
        Message::Text(text) => {
            let v: serde_json::Value = serde_json::from_str(text.as_str())?;
            assert_eq!(v, serde_json::json!({"type": "ack", "seq": seq}));
            Ok(())
        }
        other => bail!("expected an ack, got {other:?}"),
    }
}

async fn event(client: &mut ClientHandle) -> Result<Event> {
    timeout(WAIT, client.recv())
        .await
        .context("no event in time")?
        .ok_or_else(|| anyhow!("the event stream ended"))
}

async fn expect_connected(client: &mut ClientHandle, conn: &str) -> Result<String> {
    match event(client).await? {
        Event::Connected { conn_id, node } => {
            assert_eq!(conn_id.as_str(), conn);
            Ok(node)
        }
        other => bail!("expected Connected, got {other:?}"),
    }
}

async fn expect_message(client: &mut ClientHandle, seq: u64) -> Result<()> {
    match event(client).await? {
        Event::Message(m) => {
            assert_eq!(m.seq, seq);
            assert_eq!(m.id.as_str(), format!("m{seq}"));
            assert_eq!(m.data, serde_json::json!({"n": seq}));
            Ok(())
        }
        other => bail!("expected message {seq}, got {other:?}"),
    }
}

async fn expect_disconnected(client: &mut ClientHandle) -> Result<DisconnectReason> {
    match event(client).await? {
        Event::Disconnected { reason } => Ok(reason),
        other => bail!("expected Disconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn duplicates_are_dropped_and_counted() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let mut client = Client::connect(config(&[&node], TokenSource::fixed("tok")))?;
    let incoming = node.next().await?;
    assert_eq!(incoming.auth.as_deref(), Some("Bearer tok"));
    assert_eq!(incoming.query, None, "no after configured, none sent");
    let mut ws = incoming.ws.context("upgrade failed")?;
    hello(&mut ws, "c1").await?;
    for seq in [1, 2, 2, 1, 3, 3] {
        msg(&mut ws, seq).await?;
    }
    expect_connected(&mut client, "c1").await?;
    for seq in 1..=3 {
        expect_message(&mut client, seq).await?;
    }
    // The trailing duplicate 3 is processed after 3 itself; wait for it.
    timeout(WAIT, async {
        while client.stats().duplicates_dropped < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("duplicates not counted")?;
    let stats = client.stats();
    assert_eq!(stats.duplicates_dropped, 3);
    assert_eq!(stats.messages, 3);
    assert_eq!(client.last_seq(), Some(3));
    // Nothing more was delivered: the next event is the one we cause.
    msg(&mut ws, 4).await?;
    expect_message(&mut client, 4).await?;
    Ok(())
}

#[tokio::test]
async fn configured_after_is_used_on_the_first_connect() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let cfg = ClientConfig {
        after: Some(41),
        ..config(&[&node], TokenSource::fixed("tok"))
    };
    let mut client = Client::connect(cfg)?;
    assert_eq!(client.last_seq(), Some(41));
    let (query, mut ws) = node.accept().await?;
    assert_eq!(query.as_deref(), Some("after=41"));
    hello(&mut ws, "c1").await?;
    // A replay overlapping what the app has is dropped.
    msg(&mut ws, 41).await?;
    msg(&mut ws, 42).await?;
    expect_connected(&mut client, "c1").await?;
    expect_message(&mut client, 42).await?;
    assert_eq!(client.stats().duplicates_dropped, 1);
    Ok(())
}

#[tokio::test]
async fn drain_moves_to_the_next_node_and_resumes_after_the_last_seq() -> Result<()> {
    let mut a = FakeNode::start(None).await?;
    let mut b = FakeNode::start(None).await?;
    let urls = [a.url.clone(), b.url.clone()];
    let mut client = Client::connect(config(&[&a, &b], TokenSource::fixed("tok")))?;

    // The first node is picked at random; find out which.
    let (first, incoming) = timeout(WAIT, async {
        tokio::select! {
            Some(i) = a.incoming.recv() => (0, i),
            Some(i) = b.incoming.recv() => (1, i),
        }
    })
    .await
    .context("no first connection")?;
    assert_eq!(incoming.query, None);
    let mut ws = incoming.ws.context("upgrade failed")?;
    hello(&mut ws, "c1").await?;
    for seq in 1..=3 {
        msg(&mut ws, seq).await?;
    }
    assert_eq!(expect_connected(&mut client, "c1").await?, urls[first]);
    for seq in 1..=3 {
        expect_message(&mut client, seq).await?;
    }
    close(&mut ws, 1012, "draining").await?;
    assert_eq!(
        expect_disconnected(&mut client).await?,
        DisconnectReason::Closed {
            code: 1012,
            reason: "draining".into()
        }
    );

    let (drained, next) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let (query, mut ws2) = next.accept().await?;
    assert_eq!(query.as_deref(), Some("after=3"));
    assert!(
        drained.incoming.try_recv().is_err(),
        "the drained node must not be retried first"
    );
    hello(&mut ws2, "c2").await?;
    msg(&mut ws2, 4).await?;
    assert_eq!(expect_connected(&mut client, "c2").await?, urls[1 - first]);
    expect_message(&mut client, 4).await?;
    assert_eq!(client.stats().reconnects, 1);
    Ok(())
}

#[tokio::test]
async fn a_dropped_socket_and_refusals_are_retried_with_backoff() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let mut client = Client::connect(config(&[&node], TokenSource::fixed("tok")))?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    msg(&mut ws, 1).await?;
    expect_connected(&mut client, "c1").await?;
    expect_message(&mut client, 1).await?;

    // The next two attempts are refused with 503, then one is accepted.
    node.refuse_next(&[503, 503]);
    drop(ws);
    assert!(matches!(
        expect_disconnected(&mut client).await?,
        DisconnectReason::Lost { .. }
    ));
    for attempt in 0..2 {
        let refused = node.next().await?;
        assert!(refused.ws.is_none(), "attempt {attempt} should be refused");
        assert_eq!(refused.query.as_deref(), Some("after=1"));
    }
    let (query, mut ws) = node.accept().await?;
    assert_eq!(query.as_deref(), Some("after=1"));
    hello(&mut ws, "c2").await?;
    msg(&mut ws, 2).await?;
    expect_connected(&mut client, "c2").await?;
    expect_message(&mut client, 2).await?;
    let stats = client.stats();
    assert_eq!(stats.reconnects, 3);
    assert_eq!(stats.connect_failures, 2);
    Ok(())
}

#[tokio::test]
async fn unauthorized_with_a_static_token_is_fatal_and_ends_the_stream() -> Result<()> {
    let mut node = FakeNode::start(Some(401)).await?;
    let mut client = Client::connect(config(&[&node], TokenSource::fixed("bad")))?;
    match event(&mut client).await? {
        Event::Fatal(ClientError::Unauthorized { node: url, detail }) => {
            assert_eq!(url, node.url);
            assert!(detail.contains("refused"), "{detail}");
        }
        other => bail!("expected Fatal(Unauthorized), got {other:?}"),
    }
    let end = timeout(WAIT, client.recv())
        .await
        .context("stream did not end")?;
    assert!(
        end.is_none(),
        "the stream must end after Fatal, got {end:?}"
    );
    let first = node.next().await?;
    assert_eq!(first.auth.as_deref(), Some("Bearer bad"));
    assert!(
        node.incoming.try_recv().is_err(),
        "a refused static token must not be retried"
    );
    Ok(())
}

#[tokio::test]
async fn close_4001_with_a_token_function_retries_with_a_fresh_token() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let minted = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = Arc::clone(&minted);
    let token = TokenSource::from_fn(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        format!("t{n}")
    });
    let mut client = Client::connect(config(&[&node], token))?;
    let first = node.next().await?;
    assert_eq!(first.auth.as_deref(), Some("Bearer t1"));
    let mut ws = first.ws.context("upgrade failed")?;
    hello(&mut ws, "c1").await?;
    expect_connected(&mut client, "c1").await?;
    close(&mut ws, 4001, "token expired").await?;
    assert!(matches!(
        expect_disconnected(&mut client).await?,
        DisconnectReason::Closed { code: 4001, .. }
    ));
    let second = node.next().await?;
    assert_eq!(second.auth.as_deref(), Some("Bearer t2"));
    let mut ws = second.ws.context("upgrade failed")?;
    hello(&mut ws, "c2").await?;
    expect_connected(&mut client, "c2").await?;
    Ok(())
}

#[tokio::test]
async fn a_malformed_frame_causes_a_reconnect() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let mut client = Client::connect(config(&[&node], TokenSource::fixed("tok")))?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    msg(&mut ws, 1).await?;
    send(&mut ws, r#"{"type":"msg","seq":"two"}"#.to_owned()).await?;
    expect_connected(&mut client, "c1").await?;
    expect_message(&mut client, 1).await?;
    // The client closes with 1008 (after an ack of 1, if it got to send it).
    loop {
        match client_frame(&mut ws).await? {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Message::Text(_) => {}
            other => bail!("expected a 1008 close, got {other:?}"),
        }
    }
    assert!(matches!(
        expect_disconnected(&mut client).await?,
        DisconnectReason::Malformed { .. }
    ));
    let (query, mut ws) = node.accept().await?;
    assert_eq!(query.as_deref(), Some("after=1"));
    // Garbage before hello is malformed too.
    send(&mut ws, "not json".to_owned()).await?;
    let (query, mut ws) = node.accept().await?;
    assert_eq!(query.as_deref(), Some("after=1"));
    hello(&mut ws, "c3").await?;
    msg(&mut ws, 2).await?;
    expect_connected(&mut client, "c3").await?;
    expect_message(&mut client, 2).await?;
    assert_eq!(client.stats().malformed, 2);
    Ok(())
}

#[tokio::test]
async fn a_gap_reconnects_with_after_the_last_seq() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let mut client = Client::connect(config(&[&node], TokenSource::fixed("tok")))?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    msg(&mut ws, 1).await?;
    msg(&mut ws, 3).await?;
    expect_connected(&mut client, "c1").await?;
    expect_message(&mut client, 1).await?;
    assert_eq!(
        expect_disconnected(&mut client).await?,
        DisconnectReason::Gap { last: 1, got: 3 }
    );
    let (query, mut ws) = node.accept().await?;
    assert_eq!(query.as_deref(), Some("after=1"));
    hello(&mut ws, "c2").await?;
    msg(&mut ws, 2).await?;
    msg(&mut ws, 3).await?;
    expect_connected(&mut client, "c2").await?;
    expect_message(&mut client, 2).await?;
    expect_message(&mut client, 3).await?;
    assert_eq!(client.stats().gaps, 1);
    Ok(())
}

#[tokio::test]
async fn each_message_is_acked_with_its_seq() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let cfg = ClientConfig {
        after: Some(4),
        ..config(&[&node], TokenSource::fixed("tok"))
    };
    let mut client = Client::connect(cfg)?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    expect_connected(&mut client, "c1").await?;
    for seq in 5..=7 {
        msg(&mut ws, seq).await?;
        expect_message(&mut client, seq).await?;
        expect_ack(&mut ws, seq).await?;
    }
    assert_eq!(client.stats().acks_sent, 3);
    Ok(())
}

#[tokio::test]
async fn batched_acks_cover_the_batch_and_close_flushes_the_rest() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let cfg = ClientConfig {
        ack_every: AckPolicy::Batched {
            max_messages: 3,
            max_delay: Duration::from_secs(3600),
        },
        ..config(&[&node], TokenSource::fixed("tok"))
    };
    let mut client = Client::connect(cfg)?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    expect_connected(&mut client, "c1").await?;
    for seq in 1..=4 {
        msg(&mut ws, seq).await?;
    }
    for seq in 1..=3 {
        expect_message(&mut client, seq).await?;
    }
    // One ack for the batch of three...
    expect_ack(&mut ws, 3).await?;
    expect_message(&mut client, 4).await?;
    // ...and the fourth is acked by close(), before the close frame.
    client.close();
    expect_ack(&mut ws, 4).await?;
    match client_frame(&mut ws).await? {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
        other => bail!("expected a 1000 close, got {other:?}"),
    }
    let end = timeout(WAIT, client.recv())
        .await
        .context("stream did not end")?;
    assert!(
        end.is_none(),
        "the stream must end after close, got {end:?}"
    );
    assert_eq!(client.stats().acks_sent, 2);
    Ok(())
}

#[tokio::test]
async fn bad_configs_are_refused() -> Result<()> {
    let none: [&str; 0] = [];
    let err = Client::connect(ClientConfig::new(none, TokenSource::fixed("t"))).err();
    assert_eq!(err, Some(ClientError::NoNodes));
    let err = Client::connect(ClientConfig::new(["http://x/ws"], TokenSource::fixed("t"))).err();
    assert!(matches!(err, Some(ClientError::BadUrl { .. })), "{err:?}");
    Ok(())
}

#[test]
fn connect_outside_a_runtime_is_an_error() {
    let err = Client::connect(ClientConfig::new(
        ["ws://127.0.0.1:1/ws"],
        TokenSource::fixed("t"),
    ))
    .err();
    assert_eq!(err, Some(ClientError::NoRuntime));
}

#[tokio::test]
async fn a_batch_that_stays_small_is_acked_after_its_delay() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let cfg = ClientConfig {
        ack_every: AckPolicy::Batched {
            max_messages: 100,
            max_delay: Duration::from_millis(10),
        },
        ..config(&[&node], TokenSource::fixed("tok"))
    };
    let mut client = Client::connect(cfg)?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    expect_connected(&mut client, "c1").await?;
    msg(&mut ws, 1).await?;
    msg(&mut ws, 2).await?;
    expect_message(&mut client, 1).await?;
    expect_message(&mut client, 2).await?;
    // Whether the timer fired once or twice, the last ack covers both.
    let mut acked = 0;
    while acked < 2 {
        match client_frame(&mut ws).await? {
            Message::Text(text) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str())?;
                assert_eq!(v["type"], "ack");
                acked = v["seq"].as_u64().context("seq")?;
            }
            other => bail!("expected an ack, got {other:?}"),
        }
    }
    assert_eq!(acked, 2);
    Ok(())
}

#[tokio::test]
async fn a_silent_node_is_left_after_the_idle_timeout() -> Result<()> {
    let mut node = FakeNode::start(None).await?;
    let cfg = ClientConfig {
        idle_timeout: Some(Duration::from_millis(50)),
        ..config(&[&node], TokenSource::fixed("tok"))
    };
    let mut client = Client::connect(cfg)?;
    let (_, mut ws) = node.accept().await?;
    hello(&mut ws, "c1").await?;
    msg(&mut ws, 1).await?;
    expect_connected(&mut client, "c1").await?;
    expect_message(&mut client, 1).await?;
    assert_eq!(
        expect_disconnected(&mut client).await?,
        DisconnectReason::IdleTimeout
    );
    let (query, _ws) = node.accept().await?;
    assert_eq!(query.as_deref(), Some("after=1"));
    drop(ws);
    Ok(())
}
