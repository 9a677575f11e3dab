//! The HTTP/1.1 upgrade request of a client, read by hand.
//!
//! The node reads the request head itself (instead of letting tungstenite's
//! synchronous callback do it) so it can verify the token asynchronously —
//! in process or by calling the auth function — and answer `401` *before*
//! the upgrade, with nothing registered anywhere.

use bytes::BytesMut;
pub(crate) use edgepush_core::upgrade::UpgradeRequest;
use edgepush_core::upgrade::{HeadError, parse_head};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// Why an upgrade request was refused before a token was looked at.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The socket failed or closed before a full request head arrived.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The request head was larger than allowed.
    #[error("request head too large")]
    TooLarge,
    /// The bytes were not an HTTP/1.1 request.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Reads one request head from `stream`. Returns the request and any bytes
/// that arrived after the head (the client's first frames, if it did not
/// wait for our answer).
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(UpgradeRequest, Vec<u8>), HandshakeError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(HandshakeError::TooLarge);
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match parse_head(&buf) {
            Ok(None) => continue,
            Ok(Some((parsed, len))) => {
                let rest = buf[len..].to_vec();
                return Ok((parsed, rest));
            }
            Err(HeadError::Malformed(reason)) => return Err(HandshakeError::Malformed(reason)),
        }
    }
}

/// Writes a complete non-upgrade answer with a JSON error body and closes.
pub(crate) async fn write_error<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    reason: &str,
    code: &str,
    message: &str,
    extra_headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let body = serde_json::to_string(&edgepush_core::protocol::ErrorBody::new(code, message))
        .unwrap_or_else(|_| "{}".to_owned());
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Writes the `101 Switching Protocols` answer to `key`.
pub(crate) async fn write_switching<S: AsyncWrite + Unpin>(
    stream: &mut S,
    key: &str,
) -> std::io::Result<()> {
    let accept = derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &str) -> Result<(UpgradeRequest, Vec<u8>), HandshakeError> {
        let mut stream = raw.as_bytes();
        read_request(&mut stream).await
    }

    #[tokio::test]
    async fn parses_an_upgrade_with_query_and_headers() {
        let (req, rest) = parse(
            "GET /ws?token=a%2Eb.c&after=17 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: t\r\n\r\nXY",
        )
        .await
        .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws");
        assert_eq!(req.token(), Some("a.b.c"));
        assert_eq!(req.query_after.as_deref(), Some("17"));
        assert!(req.is_websocket_upgrade());
        assert_eq!(rest, b"XY");
    }

    #[tokio::test]
    async fn bearer_header_wins_over_query() {
        let (req, _) = parse("GET /ws?token=q HTTP/1.1\r\nAuthorization: Bearer h\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(req.token(), Some("h"));
        assert!(!req.is_websocket_upgrade());
    }

    #[tokio::test]
    async fn refuses_garbage_and_huge_heads() {
        assert!(matches!(
            parse("\x00\x01 nope\r\n\r\n").await,
            Err(HandshakeError::Malformed(_))
        ));
        let huge = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge).await, Err(HandshakeError::TooLarge)));
        assert!(matches!(
            parse("GET /ws HTTP/1.1\r\n").await,
            Err(HandshakeError::Io(_))
        ));
    }
}
