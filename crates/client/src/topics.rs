//! The client's topic bookkeeping: per topic, the last seq seen (kept across
//! reconnects), and whether the subscription is the server's (the token's
//! topics and broadcast: resumed with `?resume=`) or the client's own (sent
//! again as a `subscribe` frame with `after` on every connection).

use std::collections::BTreeMap;

use edgepush_core::topic::format_resume;
use edgepush_core::{Seq, TopicName};

/// A subscription the client makes itself, and keeps across reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSubscription {
    /// The topic.
    pub topic: String,
    /// The last seq the application already has (from its own storage), for
    /// the first subscription; `None` starts at the latest. Later
    /// subscriptions resume after the last seq the client has seen.
    pub after: Option<Seq>,
    /// A subscribe token the business signed for this user and topic, when
    /// the connection token's patterns do not cover it.
    pub token: Option<String>,
}

impl TopicSubscription {
    /// A subscription to `topic` starting at the latest, without a token.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            after: None,
            token: None,
        }
    }
}

/// Who asked for a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The server, from the token (or broadcast): resumed in the URL.
    Server,
    /// The client: sent again with every connection (the token, if any).
    Client { token: Option<String> },
}

/// One topic's state.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    /// The last seq received; `None` until a `subscribed` frame or a
    /// message said.
    last: Option<Seq>,
}

/// What a topic `msg` frame came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicSeq {
    /// New: pass it on.
    Next,
    /// At or below the last seq: drop it.
    Duplicate,
    /// Skips seqs (the server promises it never does): reconnect.
    Gap { last: Seq },
    /// Not a topic of this client (any more): drop it.
    Unknown,
}

/// Every topic of a client.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicBook {
    topics: BTreeMap<TopicName, Entry>,
}

impl TopicBook {
    /// The book of a new client: its own subscriptions, and where the
    /// server's resume (`resume` entries of topics it does not subscribe to
    /// itself).
    pub(crate) fn new(own: &[TopicSubscription], resume: &[(TopicName, Seq)]) -> Self {
        let mut book = Self::default();
        for (topic, seq) in resume {
            book.topics.insert(
                topic.clone(),
                Entry {
                    kind: Kind::Server,
                    last: Some(*seq),
                },
            );
        }
        for sub in own {
            if let Ok(topic) = TopicName::new(&sub.topic) {
                book.topics.insert(
                    topic,
                    Entry {
                        kind: Kind::Client {
                            token: sub.token.clone(),
                        },
                        last: sub.after,
                    },
                );
            }
        }
        book
    }

    /// The `resume` list of the next connection: the server's topics whose
    /// position is known.
    pub(crate) fn resume(&self) -> Option<String> {
        let entries: Vec<(&TopicName, Seq)> = self
            .topics
            .iter()
            .filter(|(_, e)| e.kind == Kind::Server)
            .filter_map(|(t, e)| Some((t, e.last?)))
            .collect();
        (!entries.is_empty()).then(|| format_resume(entries))
    }

    /// The `subscribe` frames of the next connection: `(topic, after,
    /// token)` of the client's own subscriptions.
    pub(crate) fn own(&self) -> Vec<(TopicName, Option<Seq>, Option<String>)> {
        self.topics
            .iter()
            .filter_map(|(t, e)| match &e.kind {
                Kind::Client { token } => Some((t.clone(), e.last, token.clone())),
                Kind::Server => None,
            })
            .collect()
    }

    /// A subscription of the client's own; `false` when it is one already.
    pub(crate) fn add_own(
        &mut self,
        topic: TopicName,
        after: Option<Seq>,
        token: Option<String>,
    ) -> bool {
        if self.topics.contains_key(&topic) {
            return false;
        }
        self.topics.insert(
            topic,
            Entry {
                kind: Kind::Client { token },
                last: after,
            },
        );
        true
    }

    /// Forgets `topic` (unsubscribed, or refused for good).
    pub(crate) fn remove(&mut self, topic: &TopicName) -> bool {
        self.topics.remove(topic).is_some()
    }

    /// A `subscribed` frame: a topic the client did not ask for is the
    /// server's; a topic without a position starts at `seq`.
    pub(crate) fn subscribed(&mut self, topic: &TopicName, seq: Seq) {
        let entry = self.topics.entry(topic.clone()).or_insert(Entry {
            kind: Kind::Server,
            last: None,
        });
        if entry.last.is_none() {
            entry.last = Some(seq);
        }
    }

    /// A topic `msg` frame's seq; see [`TopicSeq`]. `Next` records it.
    pub(crate) fn on_msg(&mut self, topic: &TopicName, seq: Seq) -> TopicSeq {
        let Some(entry) = self.topics.get_mut(topic) else {
            return TopicSeq::Unknown;
        };
        match entry.last {
            Some(last) if seq <= last => TopicSeq::Duplicate,
            Some(last) if seq > last + 1 => TopicSeq::Gap { last },
            _ => {
                entry.last = Some(seq);
                TopicSeq::Next
            }
        }
    }

    /// The last seq received of `topic`.
    pub(crate) fn position(&self, topic: &TopicName) -> Option<Seq> {
        self.topics.get(topic).and_then(|e| e.last)
    }

    /// Every topic with its last seq.
    pub(crate) fn positions(&self) -> Vec<(TopicName, Option<Seq>)> {
        self.topics
            .iter()
            .map(|(t, e)| (t.clone(), e.last))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::parse_internal(s).unwrap()
    }

    #[test]
    fn positions_survive_and_split_by_kind() {
        let mut book = TopicBook::new(
            &[TopicSubscription {
                topic: "chat:a".into(),
                after: Some(4),
                token: Some("tok".into()),
            }],
            &[(t("$broadcast"), 9)],
        );
        book.subscribed(&t("news"), 7);
        book.subscribed(&t("chat:a"), 12);
        assert_eq!(
            book.position(&t("chat:a")),
            Some(4),
            "its own position wins"
        );
        assert_eq!(book.on_msg(&t("news"), 8), TopicSeq::Next);
        assert_eq!(book.on_msg(&t("news"), 8), TopicSeq::Duplicate);
        assert_eq!(book.on_msg(&t("news"), 10), TopicSeq::Gap { last: 8 });
        assert_eq!(book.on_msg(&t("other"), 1), TopicSeq::Unknown);
        assert_eq!(book.resume().as_deref(), Some("$broadcast~9,news~8"));
        assert_eq!(
            book.own(),
            vec![(t("chat:a"), Some(4), Some("tok".to_owned()))]
        );
        assert!(!book.add_own(t("chat:a"), None, None));
        assert!(book.remove(&t("chat:a")));
        assert!(book.own().is_empty());
    }
}
