//! The collect API's topic publish bodies, validated by pure functions from
//! bytes to a [`Publication`] or the text of a `400` (shared by collect and
//! its fuzz target, like [`crate::submit`]):
//!
//! - `POST /v1/topics/{topic}/messages`: `{"data": ..., "idempotency_key": ...}`
//!   ([`Publication::parse_one`], the topic from the path);
//! - `POST /v1/publish`: `{"topics": [...], "data": ..., "idempotency_key": ...}`
//!   ([`Publication::parse_many`]);
//! - `POST /v1/broadcast`: `{"data": ..., "idempotency_key": ...}`
//!   ([`Publication::parse_broadcast`]).

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::submit::{Limits, check_payload, parse_object};
use crate::topic::{Namespaces, TopicName};

/// `{"data", "idempotency_key"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneBody {
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `{"topics", "data", "idempotency_key"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManyBody {
    topics: Vec<String>,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A validated publication.
#[derive(Debug)]
pub struct Publication {
    /// The topics, validated, in configured namespaces, deduplicated (first
    /// occurrence kept).
    pub topics: Vec<TopicName>,
    /// The caller's JSON text, untouched.
    pub data: Box<RawValue>,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// Checks that `topic` is a topic name in a configured namespace; `at`
/// names it in the error.
pub fn check_topic(raw: &str, namespaces: &Namespaces, at: &str) -> Result<TopicName, String> {
    let topic = TopicName::new(raw).map_err(|e| format!("{at} is not a valid topic: {e}"))?;
    if namespaces.options(&topic).is_none() {
        return Err(format!(
            "{at}: the namespace {:?} is not configured",
            topic.namespace()
        ));
    }
    Ok(topic)
}

impl Publication {
    /// A publication to `topic` (from the path, percent-decoded) of `body`.
    pub fn parse_one(
        topic: &str,
        body: &[u8],
        limits: &Limits,
        namespaces: &Namespaces,
    ) -> Result<Self, String> {
        let topic = check_topic(topic, namespaces, "the topic in the path")?;
        let raw: OneBody = parse_object(body, "publication")?;
        check_payload(&raw.data, raw.idempotency_key.as_deref(), limits)?;
        Ok(Self {
            topics: vec![topic],
            data: raw.data,
            idempotency_key: raw.idempotency_key,
        })
    }

    /// A publication to the topics listed in `body` (at most
    /// [`Limits::max_recipients`]).
    pub fn parse_many(
        body: &[u8],
        limits: &Limits,
        namespaces: &Namespaces,
    ) -> Result<Self, String> {
        let raw: ManyBody = parse_object(body, "publication")?;
        if raw.topics.is_empty() {
            return Err("`topics` must name at least one topic".into());
        }
        if raw.topics.len() > limits.max_recipients {
            return Err(format!(
                "`topics` has {} entries; at most {} are allowed",
                raw.topics.len(),
                limits.max_recipients
            ));
        }
        let mut topics = Vec::with_capacity(raw.topics.len());
        let mut seen = HashSet::with_capacity(raw.topics.len());
        for (index, name) in raw.topics.iter().enumerate() {
            let topic = check_topic(name, namespaces, &format!("`topics[{index}]`"))?;
            if seen.insert(topic.clone()) {
                topics.push(topic);
            }
        }
        check_payload(&raw.data, raw.idempotency_key.as_deref(), limits)?;
        Ok(Self {
            topics,
            data: raw.data,
            idempotency_key: raw.idempotency_key,
        })
    }

    /// A broadcast of `body`: to the broadcast topic.
    pub fn parse_broadcast(body: &[u8], limits: &Limits) -> Result<Self, String> {
        let raw: OneBody = parse_object(body, "broadcast")?;
        check_payload(&raw.data, raw.idempotency_key.as_deref(), limits)?;
        Ok(Self {
            topics: vec![TopicName::broadcast()],
            data: raw.data,
            idempotency_key: raw.idempotency_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespaces {
        Namespaces::from_json(r#"{"": {}, "chat": {}}"#).unwrap()
    }

    #[test]
    fn bodies_are_validated() {
        let limits = Limits::default();
        let one = Publication::parse_one("chat:1", br#"{"data":[1]}"#, &limits, &ns()).unwrap();
        assert_eq!(one.topics[0].as_str(), "chat:1");
        assert_eq!(one.data.get(), "[1]");
        let many = Publication::parse_many(
            br#"{"topics":["a","chat:b","a"],"data":1,"idempotency_key":"k"}"#,
            &limits,
            &ns(),
        )
        .unwrap();
        assert_eq!(many.topics.len(), 2);
        assert_eq!(many.idempotency_key.as_deref(), Some("k"));
        let b = Publication::parse_broadcast(br#"{"data":{}}"#, &limits).unwrap();
        assert!(b.topics[0].is_broadcast());

        assert!(Publication::parse_one("a b", br#"{"data":1}"#, &limits, &ns()).is_err());
        let unknown = Publication::parse_one("other:x", br#"{"data":1}"#, &limits, &ns());
        assert!(unknown.unwrap_err().contains("not configured"));
        for bad in [
            &b"[]"[..],
            b"{",
            br#"{"topics":[],"data":1}"#,
            br#"{"topics":["a"]}"#,
            br#"{"topics":["$broadcast"],"data":1}"#,
            br#"{"topics":["a"],"data":1,"x":1}"#,
            br#"{"topics":["a"],"data":1,"idempotency_key":""}"#,
        ] {
            assert!(
                Publication::parse_many(bad, &limits, &ns()).is_err(),
                "{bad:?}"
            );
        }
        assert!(Publication::parse_broadcast(br#"{"data":1,"topics":["a"]}"#, &limits).is_err());
        let small = Limits {
            max_data_bytes: 3,
            ..Limits::default()
        };
        assert!(Publication::parse_broadcast(br#"{"data":"long"}"#, &small).is_err());
    }
}
