//! The WebSocket upgrade request of a client, parsed from bytes: the parts
//! an edge node uses (path, method, the `token` and `after` query
//! parameters, the upgrade and authorization headers). Pure and
//! panic-free on any input, so the edge node's handshake and its fuzz
//! target share it.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The most headers accepted.
pub const MAX_HEADERS: usize = 32;

/// Why bytes are not an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.1 request head (or a header that is not UTF-8).
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// The parts of an upgrade request the node uses.
#[derive(Debug, Default)]
pub struct UpgradeRequest {
    /// `GET`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The `token` query parameter, decoded.
    pub query_token: Option<String>,
    /// The `after` query parameter, raw.
    pub query_after: Option<String>,
    /// The `resume` query parameter, decoded: where the server-side topic
    /// subscriptions resume (see [`crate::topic::parse_resume`]).
    pub query_resume: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Upgrade` header.
    pub upgrade: Option<String>,
    /// The `Connection` header.
    pub connection: Option<String>,
    /// The `Sec-WebSocket-Key` header.
    pub ws_key: Option<String>,
    /// The `Sec-WebSocket-Version` header.
    pub ws_version: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

impl UpgradeRequest {
    /// The bearer token from the `Authorization` header, else from `?token=`.
    pub fn token(&self) -> Option<&str> {
        if let Some(token) = self
            .authorization
            .as_deref()
            .and_then(crate::bearer::bearer_token)
        {
            return Some(token);
        }
        self.query_token.as_deref().filter(|t| !t.is_empty())
    }

    /// Whether the headers ask for a WebSocket upgrade (RFC 6455 §4.2.1).
    pub fn is_websocket_upgrade(&self) -> bool {
        let has = |h: &Option<String>, word: &str| {
            h.as_deref()
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(word)))
        };
        has(&self.upgrade, "websocket") && has(&self.connection, "upgrade") && self.ws_key.is_some()
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the request and the length of the head (bytes after it
/// are the client's first frames).
pub fn parse_head(buf: &[u8]) -> Result<Option<(UpgradeRequest, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some((extract(&req)?, len))),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

fn extract(req: &httparse::Request<'_, '_>) -> Result<UpgradeRequest, HeadError> {
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut out = UpgradeRequest {
        method: req.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        ..UpgradeRequest::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "token" => out.query_token = Some(v.into_owned()),
            "after" => out.query_after = Some(v.into_owned()),
            "resume" => out.query_resume = Some(v.into_owned()),
            _ => {}
        }
    }
    for h in req.headers.iter() {
        let value = || {
            std::str::from_utf8(h.value)
                .map(|s| s.trim().to_owned())
                .map_err(|_| HeadError::Malformed(format!("header {} is not UTF-8", h.name)))
        };
        let name = h.name;
        if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(value()?);
        } else if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade = Some(value()?);
        } else if name.eq_ignore_ascii_case("connection") {
            out.connection = Some(value()?);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.ws_key = Some(value()?);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = Some(value()?);
        } else if name.eq_ignore_ascii_case("user-agent") {
            out.user_agent = Some(value()?);
        }
    }
    Ok(out)
}

fn decode(v: &str) -> Cow<'_, str> {
    // `+` means space in form encoding; tokens never hold spaces, so only
    // percent-escapes matter.
    percent_decode_str(v).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_first() {
        let raw = b"GET /ws?token=q&after=3&resume=a%2Bb~1,%24broadcast~2 HTTP/1.1\r\nAuthorization: Bearer h\r\n\r\nXY";
        let (req, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.token(), Some("h"));
        assert_eq!(req.query_after.as_deref(), Some("3"));
        assert_eq!(req.query_resume.as_deref(), Some("a+b~1,$broadcast~2"));
        assert_eq!(&raw[len..], b"XY");
        let (req, _) =
            parse_head(b"GET /ws?token=q HTTP/1.1\r\nAuthorization: Bearer\xc3\xa4x\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            req.token(),
            Some("q"),
            "a scheme that is not Bearer falls back to the query"
        );
        assert!(parse_head(b"GET /ws HTTP/1.1\r\n").unwrap().is_none());
        assert!(parse_head(b"GET /ws HTTP/1.1\r\nX: \xff\r\n\r\n").is_ok());
        assert!(parse_head(b"GET /ws HTTP/1.1\r\nAuthorization: \xff\r\n\r\n").is_err());
    }
}
