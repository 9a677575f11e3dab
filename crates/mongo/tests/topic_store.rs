//! The MongoDB topic store against a real server (MongoDB or FerretDB):
//! gap-free per-topic seqs under concurrent publishers and crashes,
//! idempotent publishes, paging, per-namespace retention.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use edgepush_core::{MessageId, NewTopicMessage, Seq, TopicMessage, TopicName, TopicStore};
use edgepush_mongo::schema::{EntryTemplate, TOPIC_MESSAGES, TOPICS, idem_value};
use edgepush_mongo::{MongoConfig, MongoTopicStore, RetentionMode, ServerKind};
use mongodb::bson::{DateTime, doc};
use serde_json::value::RawValue;

const DAY: Duration = Duration::from_secs(86_400);

fn topic(s: &str) -> TopicName {
    TopicName::parse_internal(s).expect("valid test topic")
}

fn publication(topics: &[&str], data: &str, key: Option<&str>) -> NewTopicMessage {
    NewTopicMessage {
        topics: topics.iter().map(|t| (topic(t), DAY)).collect(),
        data: Arc::from(RawValue::from_string(data.to_owned()).expect("valid JSON")),
        source: "api".to_owned(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn seqs(messages: &[TopicMessage]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

async fn store(t: &TestDb) -> anyhow::Result<MongoTopicStore> {
    Ok(MongoTopicStore::connect(t.config()).await?)
}

/// Topic messages get the indexes the server answers from, like user
/// messages: on FerretDB v1 no `(topic, seq)` and no plain `expire_at`.
#[tokio::test]
async fn topic_messages_get_the_indexes_the_server_answers_from() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = store(&t).await?;
    let mut names = t
        .db()
        .collection::<mongodb::bson::Document>(TOPIC_MESSAGES)
        .list_index_names()
        .await?;
    names.sort();
    match (store.server_kind(), store.retention_mode()) {
        (ServerKind::FerretDbV1, _) => assert_eq!(names, ["_id_", "source_idem_topic"]),
        (ServerKind::MongoDb, mode) => {
            let expiry = match mode {
                RetentionMode::TtlIndex => "expire_at_ttl",
                RetentionMode::Sweeper => "expire_at_1",
            };
            for name in ["_id_", "source_idem_topic", "topic_seq", expiry] {
                assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
            }
        }
    }
    let first = store.publish(&publication(&["news"], "1", None)).await?;
    let second = store.publish(&publication(&["news"], "2", None)).await?;
    assert_eq!((seqs(&first), seqs(&second)), (vec![1], vec![2]));
    let read = store.read_after(&topic("news"), 0, 10).await?;
    assert_eq!(seqs(&read), [1, 2], "read in seq order without the index");
    t.drop_db().await
}

#[tokio::test]
async fn seqs_are_per_topic_and_publishes_idempotent() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = store(&t).await?;
    store.ping().await?;
    let first = store
        .publish(&publication(&["news", "chat:a"], r#"{"n":1}"#, Some("k1")))
        .await?;
    assert_eq!(seqs(&first), [1, 1]);
    assert_eq!(first[0].id, first[1].id);
    let again = store
        .publish(&publication(&["news", "chat:a"], r#"{"n":1}"#, Some("k1")))
        .await?;
    assert_eq!(first, again, "a retry returns what the first call stored");
    let second = store
        .publish(&publication(&["news", "$broadcast"], r#"[1,[2]]"#, None))
        .await?;
    assert_eq!(seqs(&second), [2, 1]);
    assert_eq!(store.last_seq(&topic("news")).await?, 2);
    assert_eq!(store.last_seq(&topic("nothing")).await?, 0);
    let news = store.read_after(&topic("news"), 0, 10).await?;
    assert_eq!(news, vec![first[0].clone(), second[0].clone()]);
    assert_eq!(news[1].data.get(), "[1,[2]]");
    let b = store.read_after(&topic("$broadcast"), 0, 10).await?;
    assert!(b[0].topic.is_broadcast());
    let count = t.db().collection::<mongodb::bson::Document>(TOPIC_MESSAGES);
    assert_eq!(count.count_documents(doc! {}).await?, 4);
    t.drop_db().await
}

#[tokio::test]
async fn four_instances_publishing_concurrently_get_gap_free_seqs() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let stores = [
        store(&t).await?,
        store(&t).await?,
        store(&t).await?,
        store(&t).await?,
    ];
    let mut tasks = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        for k in 0..25 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.publish(&publication(&["hot"], &format!("{}", i * 100 + k), None))
                    .await
            }));
        }
    }
    let mut got = BTreeSet::new();
    for task in tasks {
        let stored = task.await??;
        assert!(
            got.insert(stored[0].seq),
            "seq {} handed out twice",
            stored[0].seq
        );
    }
    assert_eq!(got, (1..=100).collect::<BTreeSet<Seq>>());
    let all = stores[0].read_after(&topic("hot"), 0, 1000).await?;
    assert_eq!(seqs(&all), (1..=100).collect::<Vec<_>>());
    t.drop_db().await
}

#[tokio::test]
async fn a_crash_between_insert_and_counter_is_repaired() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = store(&t).await?;
    store.publish(&publication(&["t"], "1", None)).await?;
    // A writer stored seq 2 and died before moving the counter.
    let id = MessageId::new("crashed").expect("id");
    let data: Arc<RawValue> = Arc::from(RawValue::from_string("2".into())?);
    let idem = idem_value(Some("lost"), &id);
    let doc = EntryTemplate {
        key_field: "topic",
        key: "t",
        id: &id,
        data: &data,
        source: "api",
        idem: &idem,
        created_at_ms: 1,
        expire_at_ms: Some(DateTime::now().timestamp_millis() + 60_000),
    }
    .to_doc(2);
    t.db()
        .collection::<mongodb::bson::Document>(TOPIC_MESSAGES)
        .insert_one(doc)
        .await?;
    assert_eq!(store.last_seq(&topic("t")).await?, 1, "the counter lags");
    // A fresh store (no local hint) takes seq 3, not 2 again.
    let other = MongoTopicStore::connect(t.config()).await?;
    let next = other.publish(&publication(&["t"], "3", None)).await?;
    assert_eq!(seqs(&next), [3]);
    assert_eq!(other.last_seq(&topic("t")).await?, 3);
    // The crashed writer's retry finds its copy.
    let retry = other
        .publish(&NewTopicMessage {
            source: "api".into(),
            idempotency_key: Some("lost".into()),
            ..publication(&["t"], "2", None)
        })
        .await?;
    assert_eq!(retry[0].seq, 2);
    assert_eq!(retry[0].id, id);
    let all = store.read_after(&topic("t"), 0, 10).await?;
    assert_eq!(seqs(&all), [1, 2, 3]);
    t.drop_db().await
}

#[tokio::test]
async fn read_after_pages() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = store(&t).await?;
    for i in 1..=120 {
        store
            .publish(&publication(&["paged"], &i.to_string(), None))
            .await?;
    }
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = store.read_after(&topic("paged"), after, 50).await?;
        let short = page.len() < 50;
        after = page.last().map_or(after, |m| m.seq);
        all.extend(page);
        if short {
            break;
        }
    }
    assert_eq!(seqs(&all), (1..=120).collect::<Vec<_>>());
    assert!(store.read_after(&topic("paged"), 120, 50).await?.is_empty());
    assert!(
        store
            .read_after(&topic("paged"), u64::MAX, 50)
            .await?
            .is_empty()
    );
    assert!(store.read_after(&topic("paged"), 0, 0).await?.is_empty());
    t.drop_db().await
}

#[tokio::test]
async fn retention_is_per_namespace_and_seqs_continue() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = store(&t).await?;
    let short = NewTopicMessage {
        topics: vec![(topic("brief:x"), Duration::from_millis(1))],
        ..publication(&[], "1", None)
    };
    let long = publication(&["kept"], "1", None);
    store.publish(&short).await?;
    store.publish(&long).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The server's TTL monitor (TtlIndex) runs once a minute; the sweep does
    // the same work at once. Under a Sweeper, the store's own background
    // sweep (its first round starts with the store, whenever the loaded
    // machine schedules it) may have deleted the copy already: what is
    // checked is what is left, not who deleted it.
    let swept = store.sweep_expired().await?;
    if store.retention_mode() == RetentionMode::Sweeper {
        assert!(swept <= 1, "only the expired one may go: {swept} deleted");
    }
    assert!(store.read_after(&topic("brief:x"), 0, 10).await?.is_empty());
    assert_eq!(store.read_after(&topic("kept"), 0, 10).await?.len(), 1);
    assert_eq!(
        store.last_seq(&topic("brief:x")).await?,
        1,
        "the counter stays"
    );
    let next = store.publish(&short).await?;
    assert_eq!(seqs(&next), [2], "the seq goes on after retention");
    let counters = t.db().collection::<mongodb::bson::Document>(TOPICS);
    assert_eq!(counters.count_documents(doc! {}).await?, 2);
    t.drop_db().await
}

#[tokio::test]
async fn a_closed_port_is_unavailable() -> anyhow::Result<()> {
    let mut config = MongoConfig::new("mongodb://127.0.0.1:9");
    config.server_selection_timeout = Duration::from_millis(300);
    match MongoTopicStore::connect(config).await {
        Err(edgepush_core::StoreError::Unavailable(_)) => Ok(()),
        other => anyhow::bail!("expected Unavailable, got {other:?}"),
    }
}
