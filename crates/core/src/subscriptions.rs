//! The server-side subscriptions of a connection: what its token's
//! `topics` claim and `subscribe` patterns and its URL's `resume` list
//! start, decided the same way on edge nodes and on the managed edge.
//!
//! A module of its own because it writes `error` frames: [`crate::topic`]
//! knows names and namespaces, [`crate::protocol`] frames, and this uses
//! both.

use crate::id::Seq;
use crate::protocol::encode_error;
use crate::topic::{Namespaces, TopicName, TopicPattern};

/// The server-side subscriptions of a connection, decided at connect the
/// same way on edge nodes and on the managed edge ([`server_side`]).
#[derive(Debug, Default)]
pub struct ServerSide {
    /// The token's topics that are valid, configured and within the cap,
    /// each with the position the client resumes after (`None`: the
    /// latest).
    pub topics: Vec<(TopicName, Option<Seq>)>,
    /// Where the broadcast stream resumes (`None`: the latest).
    pub broadcast_after: Option<Seq>,
    /// The token's valid subscribe patterns.
    pub patterns: Vec<TopicPattern>,
    /// `error` frames (`"op":"connect"`) for what could not be taken: bad
    /// topics or patterns of the token, topics in unknown namespaces or
    /// over the cap, `resume` entries naming no server-side topic. The
    /// connection is admitted all the same; they follow `hello`.
    pub notices: Vec<String>,
}

/// The server-side subscriptions of a connection whose token claims
/// `topics` and `subscribe` patterns and whose URL gave `resume`: every
/// refusal becomes a notice, at most `max` topics are taken (broadcast not
/// counted).
pub fn server_side(
    topics: &[String],
    subscribe: &[String],
    resume: Vec<(TopicName, Seq)>,
    namespaces: &Namespaces,
    max: usize,
) -> ServerSide {
    let mut out = ServerSide::default();
    for raw in topics {
        let topic = match TopicName::new(raw) {
            Ok(topic) => topic,
            Err(e) => {
                out.notices
                    .push(encode_error("connect", raw, "bad_topic", &e.to_string()));
                continue;
            }
        };
        if namespaces.options(&topic).is_none() {
            let message = format!("the namespace {:?} is not configured", topic.namespace());
            out.notices
                .push(encode_error("connect", raw, "unknown_namespace", &message));
            continue;
        }
        if out.topics.iter().any(|(t, _)| *t == topic) {
            continue;
        }
        if out.topics.len() >= max {
            let message = format!("a connection may hold at most {max} subscriptions");
            out.notices.push(encode_error(
                "connect",
                raw,
                "too_many_subscriptions",
                &message,
            ));
            continue;
        }
        out.topics.push((topic, None));
    }
    for (topic, seq) in resume {
        if topic.is_broadcast() {
            out.broadcast_after = Some(seq);
        } else if let Some(slot) = out.topics.iter_mut().find(|(t, _)| *t == topic) {
            slot.1 = Some(seq);
        } else {
            out.notices.push(encode_error(
                "connect",
                topic.as_str(),
                "not_subscribed",
                "resume names a topic the token does not subscribe to; send a subscribe frame for it",
            ));
        }
    }
    for raw in subscribe {
        match TopicPattern::new(raw.as_str()) {
            Ok(pattern) => out.patterns.push(pattern),
            Err(e) => out.notices.push(encode_error(
                "connect",
                raw,
                "bad_topic",
                &format!("the token's subscribe pattern is not valid: {e}"),
            )),
        }
    }
    out
}
