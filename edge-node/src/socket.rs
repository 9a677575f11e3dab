//! The client's socket as the session's WebSocket sees it.
//!
//! The socket itself lives in the connection's [`Conn`], so that the push
//! path can write to it too: while the session waits with nothing held or
//! unwritten, a push of the user's next seq is written straight to the
//! socket by the task that received it ([`crate::hub::Hub::deliver_to`]),
//! without waking the session. At 20 messages a second to 1,000
//! connections that wake-up (the task scheduled, its `select!` polled
//! again, the frame handed through the queue and tungstenite) was about
//! two fifths of the node's CPU per delivery; the `writev` is the rest.
//!
//! [`Socket`] is what tungstenite reads and writes. Every write of the
//! session goes through [`Conn::poll_unsent`] first: it ends the direct
//! writes and writes whatever a direct write left unwritten, so the bytes
//! of two frames never interleave. The session hands over again
//! ([`Conn::go_direct`]) only after a flush, when tungstenite holds
//! nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::hub::Conn;

/// The socket of a connection, borrowed from its [`Conn`].
pub(crate) struct Socket {
    /// The connection; its socket is attached before the session starts.
    conn: Arc<Conn>,
}

impl Socket {
    /// The socket attached to `conn` ([`Conn::attach`]).
    pub(crate) fn new(conn: Arc<Conn>) -> Self {
        Self { conn }
    }

    fn tcp(&self) -> io::Result<&tokio::net::TcpStream> {
        self.conn
            .socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no socket attached"))
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = self.tcp()?;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.conn.poll_unsent(cx))?;
        let tcp = self.tcp()?;
        loop {
            match tcp.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.poll_unsent(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.conn.poll_unsent(cx))?;
        let tcp = self.tcp()?;
        Poll::Ready(socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use edgepush_core::{ConnId, Seq, UserId};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::hub::{Caps, ConnInit, Delivery, Hub, Outbound, Wake};
    use crate::metrics::Metrics;

    /// A connected pair on loopback: the node's side and the client's.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    /// A hub holding one connection of `bob`, with `socket` attached.
    fn hub_with(socket: TcpStream, metrics: Arc<Metrics>) -> (Hub, Arc<Conn>) {
        let hub = Hub::new(metrics);
        let init = ConnInit {
            user_id: UserId::new("bob").unwrap(),
            peer: "127.0.0.1:1".parse().unwrap(),
            user_agent: None,
        };
        let caps = Caps {
            node: 10,
            user: 10,
            queue: 10,
        };
        let conn = hub.insert(ConnId::new("c").unwrap(), init, caps).unwrap();
        conn.attach(socket).unwrap();
        (hub, conn)
    }

    fn msg(seq: Seq, text: String) -> Outbound {
        Outbound {
            seq,
            topic: None,
            frame: Message::Text(text.into()),
            direct: true,
        }
    }

    /// Reads `n` text frames as a WebSocket client would (a malformed
    /// frame fails the read).
    async fn read_texts(client: TcpStream, n: usize) -> Vec<String> {
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut out = Vec::new();
        while out.len() < n {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => out.push(text.to_string()),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn an_idle_session_gets_its_next_seqs_written_directly() {
        let (node, client) = socket_pair().await;
        let metrics = Arc::new(Metrics::default());
        let (hub, conn) = hub_with(node, metrics.clone());
        // Before the session hands over, a push is queued.
        assert_eq!(
            hub.deliver("c", None, msg(1, "one".into())),
            Delivery::Queued
        );
        assert_eq!(conn.waiting(), (1, 0));
        let mut burst = Vec::new();
        assert_eq!(conn.next(&mut burst, 8, true).await, Wake::Frames);

        // The session wrote seq 1 and waits: seqs 2 and 3 go straight to
        // the socket (a payload of each header length), a repeat of 3 is
        // dropped.
        conn.go_direct(1);
        let long = "x".repeat(300);
        let longest = "y".repeat(70_000);
        assert_eq!(
            hub.deliver("c", None, msg(2, long.clone())),
            Delivery::Queued
        );
        assert_eq!(
            hub.deliver("c", None, msg(3, longest.clone())),
            Delivery::Queued
        );
        assert_eq!(
            hub.deliver("c", None, msg(3, "again".into())),
            Delivery::Queued
        );
        assert_eq!(conn.waiting(), (0, 0));
        assert_eq!(metrics.direct_writes.load(Ordering::Relaxed), 2);

        // A gap (5 before 4) is the session's to fill: 5 is queued, and so
        // is everything after it, even the seq that was missing.
        assert_eq!(
            hub.deliver("c", None, msg(5, "five".into())),
            Delivery::Queued
        );
        assert_eq!(
            hub.deliver("c", None, msg(4, "four".into())),
            Delivery::Queued
        );
        assert_eq!(conn.waiting(), (2, 0));
        assert_eq!(metrics.direct_writes.load(Ordering::Relaxed), 2);
        // The session wakes and goes on from the last seq written.
        assert_eq!(conn.take_back(), 3);
        burst.clear();
        assert_eq!(conn.next(&mut burst, 8, true).await, Wake::Frames);
        assert_eq!(burst.iter().map(|o| o.seq).collect::<Vec<_>>(), [5, 4]);

        assert_eq!(read_texts(client, 2).await, [long, longest]);
    }

    #[tokio::test]
    async fn large_fan_outs_other_streams_and_unnumbered_frames_wait_for_the_session() {
        let (node, _client) = socket_pair().await;
        let metrics = Arc::new(Metrics::default());
        let (hub, conn) = hub_with(node, metrics.clone());
        conn.go_direct(0);
        // A frame of a large fan-out is queued (its session writes the
        // frames that pile up several to a write).
        let mut large = msg(1, "large".into());
        large.direct = false;
        assert_eq!(hub.deliver("c", None, large), Delivery::Queued);
        assert_eq!(conn.waiting(), (1, 0));
        let mut burst = Vec::new();
        conn.next(&mut burst, 8, true).await;
        conn.go_direct(0);
        let topic = Outbound {
            seq: 1,
            topic: Some(edgepush_core::TopicName::new("news").unwrap()),
            frame: Message::Text("t".into()),
            direct: true,
        };
        assert_eq!(hub.deliver_to(&conn, topic), Delivery::Queued);
        assert_eq!(conn.waiting(), (1, 0));
        burst.clear();
        conn.next(&mut burst, 8, true).await;
        // A frame outside the seq (a raw post, a presence event) too.
        conn.go_direct(0);
        assert_eq!(
            hub.deliver("c", None, msg(0, "raw".into())),
            Delivery::Queued
        );
        // Direct writes stopped with the first frame queued: order holds.
        assert_eq!(hub.deliver("c", None, msg(1, "u".into())), Delivery::Queued);
        assert_eq!(conn.waiting(), (2, 0));
        conn.go_direct(0);
        assert_eq!(metrics.direct_writes.load(Ordering::Relaxed), 0);
        // A close stops them too.
        burst.clear();
        conn.next(&mut burst, 8, true).await;
        conn.go_direct(0);
        conn.close(4000);
        assert_eq!(
            hub.deliver("c", None, msg(1, "u".into())),
            Delivery::TooSlow
        );
        assert_eq!(metrics.direct_writes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_frame_the_socket_took_in_part_is_finished_before_the_next() {
        let (node, client) = socket_pair().await;
        // Small buffers on both ends, so that a large frame cannot fit.
        node.set_nodelay(true).unwrap();
        socket2::SockRef::from(&node)
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let (hub, conn) = hub_with(node, metrics.clone());
        conn.go_direct(0);
        let big: String = (0..400_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        assert_eq!(
            hub.deliver("c", None, msg(1, big.clone())),
            Delivery::Queued
        );
        let (queued, unsent) = conn.waiting();
        assert_eq!(queued, 0);
        assert!(
            unsent > 0 && unsent < big.len(),
            "the socket took part of the frame: {unsent} bytes left"
        );
        // Direct writes stopped: the next frame waits for the session.
        assert_eq!(
            hub.deliver("c", None, msg(2, "next".into())),
            Delivery::Queued
        );
        assert_eq!(conn.waiting().0, 1);

        // The session wakes for the rest, and writes it before its own.
        let reader = tokio::spawn(read_texts(client, 2));
        let mut burst = Vec::new();
        assert_eq!(conn.next(&mut burst, 8, true).await, Wake::Unsent);
        assert_eq!(conn.take_back(), 1);
        let mut ws =
            WebSocketStream::from_raw_socket(Socket::new(conn.clone()), Role::Server, None).await;
        ws.flush().await.unwrap();
        assert_eq!(conn.waiting(), (1, 0));
        assert_eq!(conn.next(&mut burst, 8, true).await, Wake::Frames);
        for out in burst.drain(..) {
            ws.send(out.frame).await.unwrap();
        }
        assert_eq!(conn.waiting(), (0, 0));
        assert_eq!(reader.await.unwrap(), [big, "next".to_owned()]);
    }
}
