//! The collect API's submission body (`POST /v1/messages`): its limits and
//! its validation, one pure function from bytes to a [`Submission`] or the
//! text of a `400`, so that collect, its fuzz target and any other front end
//! share it.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::id::UserId;

/// Bounds on what one submission may ask for. They protect the store and the
/// edge nodes: a message is stored once per recipient and every copy travels
/// to every connection of its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in `to` (before duplicates are removed).
    pub max_recipients: usize,
    /// Most bytes of `data`, as JSON text. Keeps every `msg` frame under the
    /// API Gateway WebSocket limit of 128 KiB.
    pub max_data_bytes: usize,
    /// Most bytes of the whole request body, checked before parsing.
    pub max_body_bytes: usize,
    /// Most bytes of an idempotency key (it is stored and indexed).
    pub max_idempotency_key_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_recipients: 1000,
            max_data_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_idempotency_key_len: 128,
        }
    }
}

/// The body as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    to: Vec<String>,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A validated submission.
#[derive(Debug)]
pub struct Submission {
    /// Recipients, validated and deduplicated, first occurrence kept.
    pub to: Vec<UserId>,
    /// The caller's JSON text, untouched.
    pub data: Box<RawValue>,
    /// The caller's idempotency key, if any (non-empty, bounded).
    pub idempotency_key: Option<String>,
}

impl Submission {
    /// Parses and validates `body` (any bytes) against `limits`; the error
    /// is the text of the `400` answer. Never panics.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Self, String> {
        let raw: SubmitBody = parse_object(body, "submission")?;

        if raw.to.is_empty() {
            return Err("`to` must name at least one recipient".into());
        }
        if raw.to.len() > limits.max_recipients {
            return Err(format!(
                "`to` has {} entries; at most {} are allowed",
                raw.to.len(),
                limits.max_recipients
            ));
        }
        let mut to = Vec::with_capacity(raw.to.len());
        let mut seen = HashSet::with_capacity(raw.to.len());
        for (index, name) in raw.to.iter().enumerate() {
            let user = match UserId::new(name) {
                Ok(user) => user,
                Err(e) => return Err(format!("`to[{index}]` is not a valid user id: {e}")),
            };
            if seen.insert(user.clone()) {
                to.push(user);
            }
        }
        check_payload(&raw.data, raw.idempotency_key.as_deref(), limits)?;
        Ok(Self {
            to,
            data: raw.data,
            idempotency_key: raw.idempotency_key,
        })
    }
}

/// Parses `body` (any bytes) as the JSON object `T`; the error is the text
/// of a `400`, naming `what` the body should have been. Never panics.
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, String> {
    // serde accepts a JSON array for a struct; only an object is a body.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err("the body must be a JSON object".into()),
            Err(e) => Err(format!("malformed JSON: {e}")),
        };
    }
    match serde_json::from_slice(body) {
        Ok(raw) => Ok(raw),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(format!("invalid {what}: {e}"))
        }
        Err(e) => Err(format!("malformed JSON: {e}")),
    }
}

/// Checks the parts every submission and publication share: the size of
/// `data` and the idempotency key.
pub(crate) fn check_payload(
    data: &RawValue,
    idempotency_key: Option<&str>,
    limits: &Limits,
) -> Result<(), String> {
    let data_len = data.get().len();
    if data_len > limits.max_data_bytes {
        return Err(format!(
            "`data` is {data_len} bytes of JSON; at most {} are allowed",
            limits.max_data_bytes
        ));
    }
    if let Some(key) = idempotency_key {
        if key.is_empty() {
            return Err("`idempotency_key` must not be empty".into());
        }
        if key.len() > limits.max_idempotency_key_len {
            return Err(format!(
                "`idempotency_key` is longer than {} bytes",
                limits.max_idempotency_key_len
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated() {
        let limits = Limits::default();
        let ok = Submission::parse(br#"{"to":["a","b","a"],"data":{"x":1}}"#, &limits).unwrap();
        assert_eq!(ok.to.len(), 2);
        assert_eq!(ok.data.get(), r#"{"x":1}"#);
        for bad in [
            &b"[]"[..],
            b"",
            b"{",
            br#"{"to":[],"data":1}"#,
            br#"{"to":["a"]}"#,
            br#"{"to":["a b"],"data":1}"#,
            br#"{"to":["a"],"data":1,"idempotency_key":""}"#,
            br#"{"to":["a"],"data":1,"extra":2}"#,
            b"\xff\xfe",
        ] {
            assert!(Submission::parse(bad, &limits).is_err(), "{bad:?}");
        }
    }
}
