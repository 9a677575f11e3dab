//! Topics: their names, their namespaces and the per-namespace options, the
//! patterns a token may grant subscriptions with, and the `resume` list a
//! client reconnects with.
//!
//! A topic name is letters, digits and `. _ - : @ + = /`, at most 128 bytes.
//! The part before the first `:` is its namespace (`chat:room-1` is in
//! `chat`; `news` is in the default namespace, named `""`). Every namespace
//! a topic may be in is configured ([`Namespaces`]): a topic in any other
//! namespace is refused, by collect and by the edge nodes alike.
//!
//! Broadcast is the topic [`BROADCAST`] (`$broadcast`): every connection is
//! subscribed to it. Its `$` is outside the topic alphabet, so no client or
//! caller can name it by accident; only [`TopicName::broadcast`] makes it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::Seq;

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// The broadcast topic: every connection of every node is subscribed to it.
pub const BROADCAST: &str = "$broadcast";
/// The namespace name the broadcast topic reports.
pub const BROADCAST_NAMESPACE: &str = "$broadcast";

/// Why a topic name (or a pattern) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The empty string.
    #[error("topic must not be empty")]
    Empty,
    /// Over [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// A character outside the alphabet.
    #[error("topic may only hold letters, digits and . _ - : @ + = /")]
    BadChar,
}

fn allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':' | b'@' | b'+' | b'=' | b'/')
}

fn check(s: &str, extra: Option<u8>) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if !s.bytes().all(|c| allowed(c) || Some(c) == extra) {
        return Err(TopicError::BadChar);
    }
    Ok(())
}

/// A validated topic name. Cheap to clone (one reference count), so a
/// fan-out can tag every queued frame with its topic without allocating.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates `s` as a name a client or a caller may use (never the
    /// broadcast topic).
    pub fn new(s: impl AsRef<str>) -> Result<Self, TopicError> {
        let s = s.as_ref();
        check(s, None)?;
        Ok(Self(Arc::from(s)))
    }

    /// A name as it travels between edgepush's own components: a valid
    /// topic or the broadcast topic.
    pub fn parse_internal(s: &str) -> Result<Self, TopicError> {
        if s == BROADCAST {
            Ok(Self::broadcast())
        } else {
            Self::new(s)
        }
    }

    /// Checks `s` like [`parse_internal`](Self::parse_internal) without
    /// allocating (names borrowed from a request body).
    pub fn validate_internal(s: &str) -> Result<(), TopicError> {
        if s == BROADCAST {
            Ok(())
        } else {
            check(s, None)
        }
    }

    /// The broadcast topic.
    pub fn broadcast() -> Self {
        Self(Arc::from(BROADCAST))
    }

    /// Whether this is the broadcast topic.
    pub fn is_broadcast(&self) -> bool {
        &*self.0 == BROADCAST
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, `""` when there is
    /// none, [`BROADCAST_NAMESPACE`] for the broadcast topic.
    pub fn namespace(&self) -> &str {
        if self.is_broadcast() {
            return BROADCAST_NAMESPACE;
        }
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }
}

impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TopicName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Deserialises with [`TopicName::parse_internal`]: the wire formats that
/// carry topic names (push bodies, hand-offs, frames a client reads) may
/// name the broadcast topic. Input from clients and callers is validated
/// with [`TopicName::new`] instead.
impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_internal(&s).map_err(serde::de::Error::custom)
    }
}

/// A pattern in a token's `subscribe` claim: a topic name in which `*`
/// stands for any run of characters (`chat:room-*`, `*`, `feed:*:public`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Validates `s`: the topic alphabet plus `*`.
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check(&s, Some(b'*'))?;
        Ok(Self(s))
    }

    /// Whether `topic` matches (never the broadcast topic, which nobody
    /// subscribes to by hand).
    pub fn matches(&self, topic: &TopicName) -> bool {
        !topic.is_broadcast() && glob(self.0.as_bytes(), topic.as_str().as_bytes())
    }

    /// The pattern.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*`-only glob matching, iterative with one backtrack point: linear in
/// practice and never exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Who may publish to a namespace's topics from a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientPublish {
    /// Nobody: only business systems publish, through the collect API.
    #[default]
    Nobody,
    /// A connection subscribed to the topic.
    Subscribers,
}

/// The options of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// How long a message stays available for replay; `None`: the message
    /// store's retention.
    pub retention: Option<Duration>,
    /// Whether the namespace keeps presence (who is subscribed, counts) that
    /// the collect API reads.
    pub presence: bool,
    /// Whether subscribers get `presence` frames when users join or leave
    /// (needs `presence`).
    pub join_leave: bool,
    /// Who may publish from a client connection.
    pub client_publish: ClientPublish,
}

impl Default for NamespaceOptions {
    /// Store retention, no presence, no events, client publish by nobody.
    fn default() -> Self {
        Self {
            retention: None,
            presence: false,
            join_leave: false,
            client_publish: ClientPublish::Nobody,
        }
    }
}

/// The options of one namespace, as written in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceJson {
    #[serde(default)]
    retention_secs: Option<u64>,
    #[serde(default)]
    presence: bool,
    #[serde(default)]
    join_leave: bool,
    #[serde(default)]
    client_publish: ClientPublish,
}

/// The namespaces configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespacesError {
    /// Not the JSON the configuration expects.
    #[error("topic namespaces: {0}")]
    Json(String),
    /// A namespace name that no topic can have.
    #[error(
        "topic namespaces: {0:?} is not a namespace name (letters, digits and . _ - @ + = /, no `:`)"
    )]
    BadName(String),
    /// Options that contradict each other.
    #[error("topic namespaces: {0}")]
    Invalid(String),
}

/// The configured namespaces: which exist, and their options.
///
/// Read from `EDGEPUSH_TOPIC_NAMESPACES`, a JSON object from namespace name
/// (`""` for topics without a `:`) to options:
///
/// ```json
/// {"": {}, "chat": {"retention_secs": 86400, "presence": true, "join_leave": true},
///  "feed": {"client_publish": "subscribers"}}
/// ```
///
/// Unset, only the default namespace exists, with the default options.
/// The broadcast topic's namespace always exists and needs no entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    by_name: HashMap<String, NamespaceOptions>,
    /// The retention of namespaces that name none.
    default_retention: Duration,
}

/// The retention of topic messages in namespaces that name none: 7 days,
/// like user messages.
pub const DEFAULT_TOPIC_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for Namespaces {
    /// The default namespace only.
    fn default() -> Self {
        Self {
            by_name: HashMap::from([(String::new(), NamespaceOptions::default())]),
            default_retention: DEFAULT_TOPIC_RETENTION,
        }
    }
}

/// The options of the broadcast topic's namespace.
const BROADCAST_OPTIONS: NamespaceOptions = NamespaceOptions {
    retention: None,
    presence: false,
    join_leave: false,
    client_publish: ClientPublish::Nobody,
};

impl Namespaces {
    /// The environment variable [`from_lookup`](Self::from_lookup) reads.
    pub const ENV: &'static str = "EDGEPUSH_TOPIC_NAMESPACES";
    /// The variable of the default retention, in seconds.
    pub const RETENTION_ENV: &'static str = "EDGEPUSH_TOPIC_RETENTION_SECS";

    /// Namespaces with exactly these options.
    pub fn new(by_name: impl IntoIterator<Item = (String, NamespaceOptions)>) -> Self {
        Self {
            by_name: by_name.into_iter().collect(),
            default_retention: DEFAULT_TOPIC_RETENTION,
        }
    }

    /// The same, with `retention` for namespaces that name none.
    pub fn with_default_retention(mut self, retention: Duration) -> Self {
        self.default_retention = retention;
        self
    }

    /// How long `topic`'s messages stay available for replay.
    pub fn retention(&self, topic: &TopicName) -> Duration {
        self.options(topic)
            .and_then(|o| o.retention)
            .unwrap_or(self.default_retention)
    }

    /// Parses the JSON configuration; see the type's docs.
    pub fn from_json(text: &str) -> Result<Self, NamespacesError> {
        let raw: HashMap<String, NamespaceJson> =
            serde_json::from_str(text).map_err(|e| NamespacesError::Json(e.to_string()))?;
        let mut by_name = HashMap::with_capacity(raw.len());
        for (name, json) in raw {
            if !name.is_empty() && (name.contains(':') || check(&name, None).is_err()) {
                return Err(NamespacesError::BadName(name));
            }
            if json.join_leave && !json.presence {
                return Err(NamespacesError::Invalid(format!(
                    "namespace {name:?}: join_leave needs presence"
                )));
            }
            if json.retention_secs == Some(0) {
                return Err(NamespacesError::Invalid(format!(
                    "namespace {name:?}: retention_secs must be more than 0"
                )));
            }
            let options = NamespaceOptions {
                retention: json.retention_secs.map(Duration::from_secs),
                presence: json.presence,
                join_leave: json.join_leave,
                client_publish: json.client_publish,
            };
            by_name.insert(name, options);
        }
        Ok(Self {
            by_name,
            default_retention: DEFAULT_TOPIC_RETENTION,
        })
    }

    /// Reads [`ENV`](Self::ENV) (unset or blank: the default namespace
    /// only) and [`RETENTION_ENV`](Self::RETENTION_ENV) (unset: 7 days)
    /// through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, NamespacesError> {
        let namespaces = match lookup(Self::ENV).filter(|v| !v.trim().is_empty()) {
            Some(text) => Self::from_json(&text)?,
            None => Self::default(),
        };
        match lookup(Self::RETENTION_ENV).filter(|v| !v.trim().is_empty()) {
            None => Ok(namespaces),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => {
                    Ok(namespaces.with_default_retention(Duration::from_secs(secs)))
                }
                _ => Err(NamespacesError::Invalid(format!(
                    "{} must be a number of seconds above 0, not {text:?}",
                    Self::RETENTION_ENV
                ))),
            },
        }
    }

    /// The options of `topic`'s namespace, `None` when it is not
    /// configured.
    pub fn options(&self, topic: &TopicName) -> Option<&NamespaceOptions> {
        if topic.is_broadcast() {
            return Some(&BROADCAST_OPTIONS);
        }
        self.by_name.get(topic.namespace())
    }

    /// The configuration as [`from_json`](Self::from_json) reads it (the
    /// default retention is not part of it).
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (name, o) in &self.by_name {
            let mut entry = serde_json::Map::new();
            if let Some(r) = o.retention {
                entry.insert("retention_secs".into(), r.as_secs().into());
            }
            entry.insert("presence".into(), o.presence.into());
            entry.insert("join_leave".into(), o.join_leave.into());
            entry.insert(
                "client_publish".into(),
                serde_json::to_value(o.client_publish).unwrap_or_default(),
            );
            map.insert(name.clone(), entry.into());
        }
        serde_json::Value::Object(map).to_string()
    }

    /// Whether any namespace keeps presence (a node that serves none does
    /// no presence work at all).
    pub fn any_presence(&self) -> bool {
        self.by_name.values().any(|o| o.presence)
    }
}

/// Parses the `resume` query parameter of a connection: `topic~seq`
/// entries separated by commas (`news~42,chat:room-1~7,$broadcast~3`), the
/// last seq the client holds of each topic it was subscribed to on the
/// server side. `~` and `,` are outside the topic alphabet, so the list
/// needs no escaping beyond the URL's own.
pub fn parse_resume(text: &str) -> Result<Vec<(TopicName, Seq)>, String> {
    let mut out = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        if entry.is_empty() {
            continue;
        }
        let (topic, seq) = entry
            .rsplit_once('~')
            .ok_or_else(|| format!("resume entry {index} is not topic~seq"))?;
        let topic =
            TopicName::parse_internal(topic).map_err(|e| format!("resume entry {index}: {e}"))?;
        let seq: Seq = seq
            .parse()
            .map_err(|_| format!("resume entry {index}: the seq is not a non-negative integer"))?;
        out.push((topic, seq));
    }
    Ok(out)
}

/// Writes a `resume` list (the inverse of [`parse_resume`]).
pub fn format_resume<'a>(entries: impl IntoIterator<Item = (&'a TopicName, Seq)>) -> String {
    let mut out = String::new();
    for (topic, seq) in entries {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(topic.as_str());
        out.push('~');
        out.push_str(&seq.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    #[test]
    fn names_are_validated_and_namespaced() {
        assert_eq!(t("chat:room-1").namespace(), "chat");
        assert_eq!(t("a:b:c").namespace(), "a");
        assert_eq!(t("news").namespace(), "");
        assert_eq!(t("feed/x@y+z=1.2_3").namespace(), "");
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new("x".repeat(129)), Err(TopicError::TooLong));
        assert!(TopicName::new("x".repeat(128)).is_ok());
        for bad in ["a b", "a,b", "a~b", "$broadcast", "a*", "é", "a{b}"] {
            assert_eq!(TopicName::new(bad), Err(TopicError::BadChar), "{bad}");
        }
        let b = TopicName::parse_internal(BROADCAST).unwrap();
        assert!(b.is_broadcast());
        assert_eq!(b.namespace(), BROADCAST_NAMESPACE);
        assert!(TopicName::validate_internal("$broadcast").is_ok());
        assert!(TopicName::validate_internal("$other").is_err());
        let json: TopicName = serde_json::from_str("\"$broadcast\"").unwrap();
        assert!(json.is_broadcast());
        assert!(serde_json::from_str::<TopicName>("\"a b\"").is_err());
    }

    #[test]
    fn patterns_match_with_stars() {
        let p = |s: &str| TopicPattern::new(s).unwrap();
        assert!(p("chat:room-*").matches(&t("chat:room-1")));
        assert!(p("chat:room-*").matches(&t("chat:room-")));
        assert!(!p("chat:room-*").matches(&t("chat:lobby")));
        assert!(p("*").matches(&t("anything:at/all")));
        assert!(!p("*").matches(&TopicName::broadcast()));
        assert!(p("feed:*:public").matches(&t("feed:42:public")));
        assert!(!p("feed:*:public").matches(&t("feed:42:private")));
        assert!(p("news").matches(&t("news")));
        assert!(!p("news").matches(&t("news2")));
        assert!(p("a*b*c").matches(&t("aXXbYYc")));
        assert!(!p("a*b*c").matches(&t("aXXcYYb")));
        assert!(TopicPattern::new("a b*").is_err());
        // No exponential blow-up on many stars.
        assert!(!p(&"a*".repeat(40)).matches(&t(&"a".repeat(39))));
    }

    #[test]
    fn namespaces_parse_and_refuse_nonsense() {
        let ns = Namespaces::from_json(
            r#"{"": {}, "chat": {"retention_secs": 60, "presence": true, "join_leave": true, "client_publish": "subscribers"}}"#,
        )
        .unwrap();
        let chat = ns.options(&t("chat:x")).unwrap();
        assert_eq!(chat.retention, Some(Duration::from_secs(60)));
        assert!(chat.presence && chat.join_leave);
        assert_eq!(chat.client_publish, ClientPublish::Subscribers);
        assert_eq!(ns.options(&t("news")), Some(&NamespaceOptions::default()));
        assert_eq!(ns.options(&t("other:x")), None);
        assert!(ns.options(&TopicName::broadcast()).is_some());
        assert!(ns.any_presence());
        assert_eq!(Namespaces::from_json(&ns.to_json()).unwrap(), ns);

        for bad in [
            "[]",
            r#"{"a:b": {}}"#,
            r#"{"a b": {}}"#,
            r#"{"x": {"join_leave": true}}"#,
            r#"{"x": {"retention_secs": 0}}"#,
            r#"{"x": {"presense": true}}"#,
            r#"{"x": {"client_publish": "everyone"}}"#,
        ] {
            assert!(Namespaces::from_json(bad).is_err(), "{bad}");
        }
        assert_eq!(ns.retention(&t("chat:x")), Duration::from_secs(60));
        assert_eq!(ns.retention(&t("news")), DEFAULT_TOPIC_RETENTION);
        let lookup = |name: &str| (name == Namespaces::RETENTION_ENV).then(|| "30".to_owned());
        let short = Namespaces::from_lookup(lookup).unwrap();
        assert_eq!(short.retention(&t("news")), Duration::from_secs(30));
        assert!(Namespaces::from_lookup(|_| Some("0".into())).is_err());
        let default = Namespaces::from_lookup(|_| None).unwrap();
        assert!(default.options(&t("news")).is_some());
        assert!(default.options(&t("chat:x")).is_none());
        assert!(!default.any_presence());
    }

    #[test]
    fn resume_lists_round_trip() {
        let entries = parse_resume("news~42,chat:room-1~7,$broadcast~3,,").unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1], (t("chat:room-1"), 7));
        assert!(entries[2].0.is_broadcast());
        let text = format_resume(entries.iter().map(|(t, s)| (t, *s)));
        assert_eq!(text, "news~42,chat:room-1~7,$broadcast~3");
        for bad in ["news", "news~x", "news~-1", "a b~1", "~1"] {
            assert!(parse_resume(bad).is_err(), "{bad}");
        }
        assert!(parse_resume("").unwrap().is_empty());
    }
}
