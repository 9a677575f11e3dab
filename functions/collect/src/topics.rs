//! The topic side of the collect API: publish, broadcast, presence reads.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/topics/{topic}/messages` `{"data", "idempotency_key"}` | `202 {"topic","seq","id"}` once the topic store holds it |
//! | `POST /v1/publish` `{"topics": [...], "data", "idempotency_key"}` | `202 {"messages": [{"topic","seq","id"}, ...]}`, in `topics` order |
//! | `POST /v1/broadcast` `{"data", "idempotency_key"}` | `202 {"topic":"$broadcast","seq","id"}` |
//! | `GET /v1/users/{user}/presence` | `200 {"user_id","online","connections","since_ms"}` |
//! | `GET /v1/presence?users=a,b,...` (at most 100) | `200 {"users": [...]}` |
//! | `GET /v1/topics/{topic}/presence` | `200 {"topic","connections","users","nodes"}` (namespaces with presence) |
//! | `GET /v1/topics/{topic}/members?cursor=&limit=` | `200 {"topic","members":[{"user_id","connections"}],"next_cursor"}` |
//!
//! A topic in the path is percent-decoded (a `/` in it may be sent as is or
//! as `%2F`). Publishing follows the same order as `POST /v1/messages`:
//! key, size, body, dispatch ready, store (a `202` only after MongoDB holds
//! every topic's copy), hand-off, with the same retry rule (a `503` after a
//! write carries `error.idempotency_key`).

use std::collections::HashMap;
use std::sync::Arc;

use edgepush_core::publish::{Publication, check_topic};
use edgepush_core::submit::Limits;
use edgepush_core::{
    Handoff, MessageId, Namespaces, NewTopicMessage, NodeDirectory, PresenceStore, TopicMessage,
    TopicName, TopicStore, UserId, presence,
};
use http::Method;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use crate::error::{CollectError, check_size};
use crate::request::{AUTO_KEY_PREFIX, CollectRequest, CollectResponse, Trace};

/// Most users one `GET /v1/presence` reads.
pub const MAX_PRESENCE_USERS: usize = 100;
/// Members per page of `GET /v1/topics/{topic}/members` by default, and at
/// most.
pub const DEFAULT_MEMBERS_PAGE: usize = 100;
/// The largest members page.
pub const MAX_MEMBERS_PAGE: usize = 1000;

/// What the topic side of collect runs on.
#[derive(Clone)]
pub struct Topics {
    /// Where topic messages are kept; a `202` means it acknowledged.
    pub store: Arc<dyn TopicStore>,
    /// Which namespaces exist, and their retention and presence.
    pub namespaces: Namespaces,
    /// Who is online and subscribed.
    pub presence: Arc<dyn PresenceStore>,
    /// Which nodes are alive (presence of dead nodes is left out).
    pub nodes: Arc<dyn NodeDirectory>,
}

/// A request of the topic side, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /v1/topics/{topic}/messages`.
    PublishOne(String),
    /// `POST /v1/publish`.
    PublishMany,
    /// `POST /v1/broadcast`.
    Broadcast,
    /// `GET /v1/users/{user}/presence`.
    UserPresence(String),
    /// `GET /v1/presence?users=...`.
    UsersPresence,
    /// `GET /v1/topics/{topic}/presence`.
    TopicPresence(String),
    /// `GET /v1/topics/{topic}/members`.
    TopicMembers(String),
}

impl Route {
    /// The route of `path`, if it is one of the topic side's.
    pub(crate) fn of(path: &str) -> Option<Self> {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        match path {
            "/v1/publish" => return Some(Self::PublishMany),
            "/v1/broadcast" => return Some(Self::Broadcast),
            "/v1/presence" => return Some(Self::UsersPresence),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/v1/users/") {
            let user = rest.strip_suffix("/presence")?;
            return (!user.is_empty()).then(|| Self::UserPresence(decode(user)));
        }
        let rest = path.strip_prefix("/v1/topics/")?;
        let (topic, make): (&str, fn(String) -> Self) =
            if let Some(t) = rest.strip_suffix("/messages") {
                (t, Self::PublishOne)
            } else if let Some(t) = rest.strip_suffix("/presence") {
                (t, Self::TopicPresence)
            } else if let Some(t) = rest.strip_suffix("/members") {
                (t, Self::TopicMembers)
            } else {
                return None;
            };
        (!topic.is_empty()).then(|| make(decode(topic)))
    }

    /// The one method the route answers.
    pub(crate) fn method(&self) -> Method {
        match self {
            Self::PublishOne(_) | Self::PublishMany | Self::Broadcast => Method::POST,
            _ => Method::GET,
        }
    }
}

/// One topic's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicAccepted {
    /// The topic.
    pub topic: TopicName,
    /// Its seq for the message.
    pub seq: u64,
    /// The message id (the same for every topic of one publication).
    pub id: MessageId,
}

impl From<&TopicMessage> for TopicAccepted {
    fn from(m: &TopicMessage) -> Self {
        Self {
            topic: m.topic.clone(),
            seq: m.seq,
            id: m.id.clone(),
        }
    }
}

/// The value of query parameter `name`, decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

impl Topics {
    /// Serves a request of the topic side for `source` (the caller's
    /// method and API key are checked).
    pub(crate) async fn serve<'a>(
        &self,
        route: Route,
        request: &CollectRequest,
        source: &'a str,
        limits: &Limits,
        handoff: &dyn Handoff,
        trace: &mut Trace<'a>,
    ) -> Result<CollectResponse, CollectError> {
        let topics = self;
        match route {
            Route::PublishOne(topic) => {
                check_size(request, limits)?;
                let publication =
                    Publication::parse_one(&topic, &request.body, limits, &topics.namespaces)
                        .map_err(CollectError::BadRequest)?;
                let stored = self.publish(source, publication, handoff, trace).await?;
                Ok(CollectResponse::json(202, &TopicAccepted::from(&stored[0])))
            }
            Route::Broadcast => {
                check_size(request, limits)?;
                let publication = Publication::parse_broadcast(&request.body, limits)
                    .map_err(CollectError::BadRequest)?;
                let stored = self.publish(source, publication, handoff, trace).await?;
                Ok(CollectResponse::json(202, &TopicAccepted::from(&stored[0])))
            }
            Route::PublishMany => {
                check_size(request, limits)?;
                let publication =
                    Publication::parse_many(&request.body, limits, &topics.namespaces)
                        .map_err(CollectError::BadRequest)?;
                let stored = self.publish(source, publication, handoff, trace).await?;
                let messages: Vec<TopicAccepted> = stored.iter().map(TopicAccepted::from).collect();
                Ok(CollectResponse::json(
                    202,
                    &serde_json::json!({ "messages": messages }),
                ))
            }
            Route::UserPresence(user) => {
                let user = UserId::new(&user)
                    .map_err(|e| CollectError::BadRequest(format!("not a valid user id: {e}")))?;
                let mut read = presence::users(&*topics.presence, &*topics.nodes, &[user])
                    .await
                    .map_err(CollectError::Presence)?;
                Ok(CollectResponse::json(200, &read.remove(0)))
            }
            Route::UsersPresence => {
                let list = query_param(request.query.as_deref().unwrap_or(""), "users")
                    .unwrap_or_default();
                let names: Vec<&str> = list.split(',').filter(|u| !u.is_empty()).collect();
                if names.is_empty() || names.len() > MAX_PRESENCE_USERS {
                    return Err(CollectError::BadRequest(format!(
                        "`users` must list 1 to {MAX_PRESENCE_USERS} user ids, separated by commas"
                    )));
                }
                let mut users = Vec::with_capacity(names.len());
                for (index, name) in names.iter().enumerate() {
                    users.push(UserId::new(name).map_err(|e| {
                        CollectError::BadRequest(format!(
                            "`users[{index}]` is not a valid user id: {e}"
                        ))
                    })?);
                }
                let read = presence::users(&*topics.presence, &*topics.nodes, &users)
                    .await
                    .map_err(CollectError::Presence)?;
                Ok(CollectResponse::json(
                    200,
                    &serde_json::json!({ "users": read }),
                ))
            }
            Route::TopicPresence(topic) => {
                let topic = presence_topic(topics, &topic)?;
                let counts = presence::topic_counts(&*topics.presence, &*topics.nodes, &topic)
                    .await
                    .map_err(CollectError::Presence)?;
                Ok(CollectResponse::json(200, &counts))
            }
            Route::TopicMembers(topic) => {
                let topic = presence_topic(topics, &topic)?;
                let query = request.query.as_deref().unwrap_or("");
                let limit = match query_param(query, "limit") {
                    None => DEFAULT_MEMBERS_PAGE,
                    Some(l) => match l.parse::<usize>() {
                        Ok(n) if (1..=MAX_MEMBERS_PAGE).contains(&n) => n,
                        _ => {
                            return Err(CollectError::BadRequest(format!(
                                "`limit` must be 1 to {MAX_MEMBERS_PAGE}"
                            )));
                        }
                    },
                };
                let cursor = query_param(query, "cursor");
                if cursor.as_deref().is_some_and(|c| c.parse::<u64>().is_err()) {
                    return Err(CollectError::BadRequest(
                        "`cursor` must be a `next_cursor` this API gave".into(),
                    ));
                }
                let page = presence::topic_members(
                    &*topics.presence,
                    &*topics.nodes,
                    &topic,
                    cursor.as_deref(),
                    limit,
                )
                .await
                .map_err(CollectError::Presence)?;
                Ok(CollectResponse::json(200, &page))
            }
        }
    }

    /// Stores `publication` and hands it off, as [`Collector::handle`]
    /// documents for messages; returns one copy per topic, in order.
    async fn publish(
        &self,
        source: &str,
        publication: Publication,
        handoff: &dyn Handoff,
        trace: &mut Trace<'_>,
    ) -> Result<Vec<TopicMessage>, CollectError> {
        let topics = self;
        trace.recipients = Some(publication.topics.len());
        handoff.ready().await.map_err(CollectError::NotReady)?;
        let key = publication
            .idempotency_key
            .unwrap_or_else(|| format!("{AUTO_KEY_PREFIX}{}", MessageId::random()));
        let message = NewTopicMessage {
            topics: publication
                .topics
                .iter()
                .map(|t| (t.clone(), topics.namespaces.retention(t)))
                .collect(),
            data: Arc::from(publication.data),
            source: source.to_owned(),
            idempotency_key: Some(key.clone()),
        };
        let mut stored = topics
            .store
            .publish(&message)
            .await
            .map_err(|e| CollectError::Store(e, key.clone()))?;
        trace.message_id = stored.first().map(|m| m.id.clone());
        if stored.len() > 1 {
            let position: HashMap<&TopicName, usize> = publication
                .topics
                .iter()
                .enumerate()
                .map(|(i, t)| (t, i))
                .collect();
            stored.sort_by_key(|m| position.get(&m.topic).copied().unwrap_or(usize::MAX));
        }
        if stored.len() != publication.topics.len() {
            return Err(CollectError::Store(
                edgepush_core::StoreError::Backend(format!(
                    "the topic store answered {} copies for {} topics",
                    stored.len(),
                    publication.topics.len()
                )),
                key,
            ));
        }
        handoff
            .hand_off_topics(&stored)
            .await
            .map_err(|e| CollectError::HandoffFailed(e, key))?;
        Ok(stored)
    }
}

/// `topic` from a presence path: valid, configured, keeping presence.
fn presence_topic(topics: &Topics, raw: &str) -> Result<TopicName, CollectError> {
    let topic = check_topic(raw, &topics.namespaces, "the topic in the path")
        .map_err(CollectError::BadRequest)?;
    if !topics
        .namespaces
        .options(&topic)
        .is_some_and(|o| o.presence)
    {
        return Err(CollectError::PresenceDisabled(topic.namespace().to_owned()));
    }
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route() {
        assert_eq!(Route::of("/v1/publish"), Some(Route::PublishMany));
        assert_eq!(Route::of("/v1/broadcast"), Some(Route::Broadcast));
        assert_eq!(
            Route::of("/v1/topics/chat:a/b/messages"),
            Some(Route::PublishOne("chat:a/b".into()))
        );
        assert_eq!(
            Route::of("/v1/topics/a%2Fb%3Ac/messages"),
            Some(Route::PublishOne("a/b:c".into()))
        );
        assert_eq!(
            Route::of("/v1/topics/x/messages/messages"),
            Some(Route::PublishOne("x/messages".into()))
        );
        assert_eq!(
            Route::of("/v1/topics/room/presence"),
            Some(Route::TopicPresence("room".into()))
        );
        assert_eq!(
            Route::of("/v1/topics/room/members"),
            Some(Route::TopicMembers("room".into()))
        );
        assert_eq!(
            Route::of("/v1/users/alice/presence"),
            Some(Route::UserPresence("alice".into()))
        );
        for other in [
            "/v1/topics//messages",
            "/v1/topics/x",
            "/v1/users/alice",
            "/v1/messages",
        ] {
            assert_eq!(Route::of(other), None, "{other}");
        }
        assert_eq!(
            query_param("a=1&users=x%2Cy&b", "users").as_deref(),
            Some("x,y")
        );
        assert_eq!(query_param("a=1", "users"), None);
    }
}
