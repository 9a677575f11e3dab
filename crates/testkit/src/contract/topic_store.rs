//! The [`TopicStore`] contract: per-topic gap-free seqs (also under
//! concurrent publishers), idempotent publishes (also when duplicates race),
//! reads in seq order where a short page is the end of the log, nothing read
//! outside the log, and a last seq that follows publishes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use edgepush_core::{NewTopicMessage, Seq, TopicMessage, TopicName, TopicStore};
use serde_json::value::RawValue;

use super::{Backend, Report, Rule};
use crate::unique;

/// Every rule of the contract, in the order of the trait's docs.
pub const RULES: &[Rule<dyn TopicStore>] = crate::rules![dyn TopicStore:
    each_topic_gets_its_next_seq,
    concurrent_publishes_get_gap_free_seqs,
    an_idempotent_retry_returns_the_first_copies,
    racing_duplicates_return_the_same_copies,
    a_short_page_means_the_end_of_the_log,
    read_after_outside_the_log_is_empty,
    last_seq_follows_publishes,
    ping_answers,
];

/// Runs every rule against `backend`.
pub async fn check(backend: Backend<dyn TopicStore>) -> Report {
    super::check("TopicStore", RULES, backend).await
}

/// Retention of the suite's copies: longer than any run.
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A topic of this rule's own (default namespace).
fn topic(tag: &str) -> anyhow::Result<TopicName> {
    Ok(TopicName::new(unique(tag))?)
}

/// A publication of `data` (JSON text) to `topics` from `source`.
fn publication(
    topics: &[&TopicName],
    data: &str,
    source: &str,
    key: Option<&str>,
) -> anyhow::Result<NewTopicMessage> {
    Ok(NewTopicMessage {
        topics: topics.iter().map(|t| ((*t).clone(), RETENTION)).collect(),
        data: Arc::from(RawValue::from_string(data.to_owned())?),
        source: source.to_owned(),
        idempotency_key: key.map(str::to_owned),
    })
}

fn seqs(messages: &[TopicMessage]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

/// Every copy of one publish gets its own topic's next seq (1, 2, ... per
/// topic, whatever other topics hold), all copies carry one message id and
/// the payload as given, in the order of the publication's topics.
async fn each_topic_gets_its_next_seq(backend: &Backend<dyn TopicStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (a, b) = (topic("next-a")?, topic("next-b")?);
    let first = store
        .publish(&publication(&[&a], r#"{"n":1}"#, "api", None)?)
        .await?;
    ensure!(seqs(&first) == [1], "the first copy of a topic: {first:?}");
    let both = store
        .publish(&publication(&[&b, &a], r#"[1,{"x":"y"}]"#, "api", None)?)
        .await?;
    ensure!(
        both.iter().map(|m| (&m.topic, m.seq)).collect::<Vec<_>>() == [(&b, 1), (&a, 2)],
        "each topic's next seq, in the publication's order: {both:?}"
    );
    ensure!(both[0].id == both[1].id, "one message id for every copy");
    ensure!(
        both.iter().all(|m| m.data.get() == r#"[1,{"x":"y"}]"#),
        "the payload as given: {both:?}"
    );
    ensure!(
        first[0].id != both[0].id,
        "another publish is another message"
    );
    Ok(())
}

/// Publishes racing on several handles to one topic hand out each seq once:
/// the seqs are exactly 1..=N.
async fn concurrent_publishes_get_gap_free_seqs(
    backend: &Backend<dyn TopicStore>,
) -> anyhow::Result<()> {
    const WRITERS: usize = 4;
    const EACH: usize = 5;
    let t = topic("race")?;
    let handles = backend.handles(WRITERS).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, store) in handles.into_iter().enumerate() {
        let t = t.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let msg = publication(&[&t], &format!("[{w},{i}]"), "api", None)?;
                got.extend(seqs(&store.publish(&msg).await?));
            }
            anyhow::Ok(got)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    all.sort_unstable();
    let want: Vec<Seq> = (1..=(WRITERS * EACH) as Seq).collect();
    ensure!(all == want, "seqs handed out: {all:?}");
    Ok(())
}

/// Publishing again with the same `(source, idempotency_key)` stores
/// nothing new and returns the copies stored the first time; the key is
/// scoped by `source`, and another key is another message.
async fn an_idempotent_retry_returns_the_first_copies(
    backend: &Backend<dyn TopicStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (a, b) = (topic("idem-a")?, topic("idem-b")?);
    let first = store
        .publish(&publication(&[&a, &b], "1", "api", Some("k1"))?)
        .await?;
    let again = store
        .publish(&publication(&[&a, &b], "1", "api", Some("k1"))?)
        .await?;
    ensure!(again == first, "a retry: {again:?}, first: {first:?}");
    let other_source = store
        .publish(&publication(&[&a], "1", "ops", Some("k1"))?)
        .await?;
    ensure!(
        seqs(&other_source) == [2],
        "the same key from another source is another message: {other_source:?}"
    );
    let other_key = store
        .publish(&publication(&[&a], "1", "api", Some("k2"))?)
        .await?;
    ensure!(seqs(&other_key) == [3], "another key: {other_key:?}");
    ensure!(store.last_seq(&a).await? == 3 && store.last_seq(&b).await? == 1);
    Ok(())
}

/// Concurrent duplicates on several handles all return the same copies,
/// one per topic: nothing is stored twice.
async fn racing_duplicates_return_the_same_copies(
    backend: &Backend<dyn TopicStore>,
) -> anyhow::Result<()> {
    let t = topic("dup-race")?;
    let mut tasks = tokio::task::JoinSet::new();
    for store in backend.handles(4).await? {
        let msg = publication(&[&t], r#""same""#, "api", Some("racing"))?;
        tasks.spawn(async move { anyhow::Ok(store.publish(&msg).await?) });
    }
    let mut answers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        answers.push(joined??);
    }
    ensure!(
        answers.iter().all(|a| a == &answers[0]) && seqs(&answers[0]) == [1],
        "every duplicate returns the one copy: {answers:?}"
    );
    let store = backend.handle().await?;
    let stored = store.read_after(&t, 0, 10).await?;
    ensure!(stored == answers[0], "stored once: {stored:?}");
    Ok(())
}

/// [`TopicStore::read_after`] answers in seq order with exactly `limit`
/// copies while more follow; a shorter page is the end of the log, so
/// paging until one reads every copy once.
async fn a_short_page_means_the_end_of_the_log(
    backend: &Backend<dyn TopicStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let t = topic("pages")?;
    for i in 0..7 {
        store
            .publish(&publication(&[&t], &i.to_string(), "api", None)?)
            .await?;
    }
    let mut after = 0;
    let mut read = Vec::new();
    loop {
        let page = store.read_after(&t, after, 3).await?;
        ensure!(
            page.windows(2).all(|w| w[0].seq < w[1].seq),
            "a page in seq order: {:?}",
            seqs(&page)
        );
        read.extend(seqs(&page));
        if page.len() < 3 {
            break;
        }
        after = page[2].seq;
        ensure!(read.len() <= 7, "more pages than copies: {read:?}");
    }
    ensure!(read == (1..=7).collect::<Vec<Seq>>(), "read: {read:?}");
    Ok(())
}

/// `limit` 0, `after` at or past the last seq (up to `u64::MAX`) and a
/// topic with nothing stored read nothing; a read never returns another
/// topic's copies.
async fn read_after_outside_the_log_is_empty(
    backend: &Backend<dyn TopicStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (t, other, empty) = (topic("outside")?, topic("outside-other")?, topic("none")?);
    store
        .publish(&publication(&[&t, &other], "1", "api", None)?)
        .await?;
    store
        .publish(&publication(&[&other], "2", "api", None)?)
        .await?;
    ensure!(store.read_after(&t, 0, 0).await?.is_empty(), "limit 0");
    ensure!(
        store.read_after(&t, 1, 10).await?.is_empty(),
        "after the last"
    );
    ensure!(store.read_after(&t, Seq::MAX, 10).await?.is_empty(), "MAX");
    ensure!(store.read_after(&empty, 0, 10).await?.is_empty(), "no log");
    let mine = store.read_after(&t, 0, 10).await?;
    ensure!(
        mine.len() == 1 && mine.iter().all(|m| m.topic == t),
        "only the topic's own copies: {mine:?}"
    );
    Ok(())
}

/// [`TopicStore::last_seq`] is 0 for a topic with nothing stored, and the
/// seq of the last copy once its publish returned, on every handle.
async fn last_seq_follows_publishes(backend: &Backend<dyn TopicStore>) -> anyhow::Result<()> {
    let (writer, reader) = (backend.handle().await?, backend.handle().await?);
    let t = topic("last")?;
    ensure!(reader.last_seq(&t).await? == 0, "nothing stored yet");
    for i in 1..=3 {
        let stored = writer
            .publish(&publication(&[&t], "0", "api", None)?)
            .await?;
        ensure!(seqs(&stored) == [i]);
        let last = reader.last_seq(&t).await?;
        ensure!(last == i, "last seq {last} after publishing seq {i}");
    }
    Ok(())
}

/// [`TopicStore::ping`] succeeds while the backend answers.
async fn ping_answers(backend: &Backend<dyn TopicStore>) -> anyhow::Result<()> {
    backend.handle().await?.ping().await?;
    Ok(())
}
