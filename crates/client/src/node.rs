//! Edge node endpoints: parsed once, turned into an upgrade request per
//! attempt.

use edgepush_core::Seq;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

use crate::error::ClientError;

/// What a query value keeps unescaped: letters, digits and `- . _ ~`, and
/// the separators of a resume list (`,` `~`); `+ = / : @ $` and the rest are
/// escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b',');

/// One configured endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The endpoint as configured; events and errors name it this way.
    pub(crate) url: String,
    /// Host to open the TCP connection to (no brackets around IPv6).
    host: String,
    /// Port to open the TCP connection to.
    port: u16,
}

impl Node {
    /// Checks that `url` is a `ws://` URL with a host.
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => {
                return Err(bad(
                    "wss is not supported by this client; terminate TLS in front of it or use ws",
                ));
            }
            _ => return Err(bad("the scheme must be ws://")),
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let node = Self {
            url: url.to_owned(),
            host,
            port,
        };
        // Building a request checks what `http::Uri` lets through but the
        // WebSocket handshake does not.
        node.request(Some(0), "t").map_err(|reason| bad(&reason))?;
        Ok(node)
    }

    /// Where to open the TCP connection.
    pub(crate) fn addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The URL of one attempt: the endpoint plus `after=<seq>` and
    /// `resume=<topic~seq,...>` (percent-encoded) when known.
    pub(crate) fn url_for(&self, after: Option<Seq>, resume: Option<&str>) -> String {
        let mut url = self.url.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(after) = after {
            url.push_str(&format!("{sep}after={after}"));
            sep = '&';
        }
        if let Some(resume) = resume {
            let encoded = utf8_percent_encode(resume, QUERY_VALUE);
            url.push_str(&format!("{sep}resume={encoded}"));
        }
        url
    }

    /// The upgrade request of one attempt. The error is for people: the
    /// URL or the token cannot be put in a request.
    pub(crate) fn request(&self, after: Option<Seq>, token: &str) -> Result<Request, String> {
        self.request_with(after, None, token)
    }

    /// [`request`](Self::request) with a `resume` list.
    pub(crate) fn request_with(
        &self,
        after: Option<Seq>,
        resume: Option<&str>,
        token: &str,
    ) -> Result<Request, String> {
        self.build(self.url_for(after, resume), token)
    }

    /// The upgrade request of an attempt on the managed edge: the token in
    /// `?token=` as well, because API Gateway refuses a `$connect` that
    /// lacks the authorizer's identity source (the query string by
    /// default) without asking the authorizer.
    pub(crate) fn managed_request(
        &self,
        after: Option<Seq>,
        token: &str,
    ) -> Result<Request, String> {
        let mut url = self.url_for(after, None);
        let sep = if url.contains('?') { '&' } else { '?' };
        url.push_str(&format!(
            "{sep}token={}",
            utf8_percent_encode(token, QUERY_VALUE)
        ));
        self.build(url, token)
    }

    /// A request for `url` with the token in the `Authorization` header.
    fn build(&self, url: String, token: &str) -> Result<Request, String> {
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_is_appended_to_the_query() {
        let node = Node::parse("ws://127.0.0.1:9/ws").unwrap();
        assert_eq!(node.url_for(None, None), "ws://127.0.0.1:9/ws");
        assert_eq!(node.url_for(Some(7), None), "ws://127.0.0.1:9/ws?after=7");
        let node = Node::parse("ws://h/ws?x=1").unwrap();
        assert_eq!(node.url_for(Some(7), None), "ws://h/ws?x=1&after=7");
        assert_eq!(node.addr(), ("h", 80));
    }

    #[test]
    fn resume_lists_are_escaped() {
        let node = Node::parse("ws://h:1/ws").unwrap();
        assert_eq!(
            node.url_for(Some(3), Some("a+b=c/d~1,$broadcast~2")),
            "ws://h:1/ws?after=3&resume=a%2Bb%3Dc%2Fd~1,%24broadcast~2"
        );
        assert_eq!(node.url_for(None, Some("x~1")), "ws://h:1/ws?resume=x~1");
        assert!(node.request_with(None, Some("x:y~1"), "t").is_ok());
    }

    #[test]
    fn the_managed_edge_gets_the_token_in_the_query_too() {
        let node = Node::parse("ws://h:1/prod").unwrap();
        let req = node.managed_request(Some(3), "a.b-c_d").unwrap();
        assert_eq!(req.uri().query(), Some("after=3&token=a.b-c_d"));
        assert_eq!(req.headers()["authorization"], "Bearer a.b-c_d");
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        let node = Node::parse("ws://[::1]:8080/ws").unwrap();
        assert_eq!(node.addr(), ("::1", 8080));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["", "http://h/ws", "wss://h/ws", "ws:///ws", "not a url"] {
            assert!(Node::parse(url).is_err(), "{url:?}");
        }
    }

    #[test]
    fn the_token_goes_in_the_authorization_header() {
        let node = Node::parse("ws://h:1/ws").unwrap();
        let req = node.request(Some(3), "abc").unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer abc");
        assert_eq!(req.uri().query(), Some("after=3"));
        assert!(node.request(None, "bad\ntoken").is_err());
    }
}
