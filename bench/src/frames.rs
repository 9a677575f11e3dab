//! The few bytes of a server frame the load generator needs: is it a
//! message, and what send timestamp does it carry.
//!
//! Benchmark messages carry `{"t":<unix nanos>, ...}` as their data. The
//! generator finds the `"t":` key by scanning instead of parsing JSON, the
//! same way for both protocols, so parsing cost does not tilt a comparison
//! and a 19,000-connection generator stays light.

/// What an edgepush server frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeFrame<'a> {
    /// `{"type":"hello","conn_id":...}`: the connection is ready.
    Hello {
        /// The connection's id (the push API's connection id).
        conn_id: &'a str,
    },
    /// `{"type":"msg",...}`: one message, with its embedded send time.
    Msg {
        /// The `t` of the message's data, if it has one.
        t: Option<u64>,
    },
    /// Anything else.
    Other,
}

/// Classifies an edgepush text frame.
pub fn edgepush(text: &str) -> EdgeFrame<'_> {
    if text.starts_with(r#"{"type":"msg""#) {
        let data = text.find(r#""data":"#).map_or("", |i| &text[i..]);
        return EdgeFrame::Msg { t: find_t(data) };
    }
    if text.starts_with(r#"{"type":"hello""#)
        && let Some(conn_id) = string_value(text, r#""conn_id":""#)
    {
        return EdgeFrame::Hello { conn_id };
    }
    EdgeFrame::Other
}

/// One reply or push in a Centrifugo frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CentrifugoEvent {
    /// `{}`: the server's ping; the client must answer `{}`.
    Ping,
    /// The reply to the connect command.
    Connected,
    /// An error reply (for example a refused token).
    Error,
    /// A publication pushed in a channel.
    Publication {
        /// The `t` of the publication's data, if it has one.
        t: Option<u64>,
    },
    /// Anything else.
    Other,
}

/// Calls `f` for every reply or push in a Centrifugo JSON-protocol frame
/// (one frame may carry several, separated by newlines).
pub fn centrifugo(text: &str, mut f: impl FnMut(CentrifugoEvent)) {
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let event = if line == "{}" {
            CentrifugoEvent::Ping
        } else if let Some(i) = line.find(r#""pub":"#) {
            CentrifugoEvent::Publication {
                t: find_t(&line[i..]),
            }
        } else if line.contains(r#""connect":"#) {
            CentrifugoEvent::Connected
        } else if line.contains(r#""error":"#) {
            CentrifugoEvent::Error
        } else {
            CentrifugoEvent::Other
        };
        f(event);
    }
}

/// The unsigned integer after the first `"t":` in `s`.
pub fn find_t(s: &str) -> Option<u64> {
    let i = s.find(r#""t":"#)? + 4;
    let digits = s[i..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The string after `key` (which ends with the opening quote), up to the
/// closing quote.
fn string_value<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let start = s.find(key)? + key.len();
    let len = s[start..].find('"')?;
    Some(&s[start..start + len])
}

/// The data of a benchmark message: `{"t":<now>}`, padded with a `"p"`
/// string so the whole data is about `size` bytes.
pub fn payload(t: u64, size: usize) -> String {
    let mut s = format!(r#"{{"t":{t}"#);
    let base = s.len() + r#","p":""}"#.len();
    if size > base {
        s.push_str(r#","p":""#);
        s.extend(std::iter::repeat_n('x', size - base));
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_edgepush_frames() {
        assert_eq!(
            edgepush(r#"{"type":"hello","conn_id":"ab12","user_id":"u1"}"#),
            EdgeFrame::Hello { conn_id: "ab12" }
        );
        assert_eq!(
            edgepush(r#"{"type":"msg","seq":3,"id":"m","data":{"t":123456789,"p":"xx"}}"#),
            EdgeFrame::Msg { t: Some(123456789) }
        );
        assert_eq!(
            edgepush(r#"{"type":"msg","seq":3,"id":"m","data":{"text":"hi"}}"#),
            EdgeFrame::Msg { t: None }
        );
        assert_eq!(edgepush("{}"), EdgeFrame::Other);
    }

    #[test]
    fn reads_centrifugo_frames_with_several_pushes() {
        let mut seen = Vec::new();
        centrifugo(
            "{\"push\":{\"channel\":\"b\",\"pub\":{\"data\":{\"t\":5},\"offset\":1}}}\n{\"push\":{\"channel\":\"b\",\"pub\":{\"data\":{\"t\":6}}}}",
            |e| seen.push(e),
        );
        assert_eq!(
            seen,
            vec![
                CentrifugoEvent::Publication { t: Some(5) },
                CentrifugoEvent::Publication { t: Some(6) }
            ]
        );
        let mut seen = Vec::new();
        centrifugo(
            r#"{"id":1,"connect":{"client":"c","version":"6.9.1"}}"#,
            |e| seen.push(e),
        );
        centrifugo("{}", |e| seen.push(e));
        centrifugo(
            r#"{"id":1,"error":{"code":109,"message":"token expired"}}"#,
            |e| seen.push(e),
        );
        assert_eq!(
            seen,
            vec![
                CentrifugoEvent::Connected,
                CentrifugoEvent::Ping,
                CentrifugoEvent::Error
            ]
        );
    }

    #[test]
    fn payloads_have_the_asked_size_and_round_trip() {
        let p = payload(42, 100);
        assert_eq!(p.len(), 100);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["t"], 42);
        assert_eq!(find_t(&p), Some(42));
        let small = payload(7, 1);
        assert_eq!(small, r#"{"t":7}"#);
    }
}
