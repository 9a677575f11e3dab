//! The MongoDB message and topic stores against the `MessageStore` and
//! `TopicStore` contract suites (`edgepush_testkit::contract`), on the real
//! server (FerretDB under `scripts/test`). Every handle a suite asks for is
//! a client of its own on one database of the test's, so the rules about
//! racing writers race separate clients, as separate collect instances do.

use std::future::Future;
use std::sync::Arc;

use edgepush_core::{MessageStore, TopicStore};
use edgepush_mongo::{MongoConfig, MongoMessageStore, MongoTopicStore};
use edgepush_testkit::TestDatabase;
use edgepush_testkit::contract::{Backend, message_store, topic_store};

/// A database of this test's, and handles on it that `open` makes (a client
/// of its own each).
fn on_a_database<P, F, Fut>(open: F) -> anyhow::Result<(TestDatabase, Backend<P>)>
where
    P: ?Sized + Send + Sync + 'static,
    F: Fn(MongoConfig) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Arc<P>>> + Send + 'static,
{
    let db = TestDatabase::shared()?;
    let mut config = MongoConfig::new(db.uri());
    config.database = db.name().to_owned();
    Ok((db, Backend::new(move || open(config.clone()))))
}

async fn messages(config: MongoConfig) -> anyhow::Result<Arc<dyn MessageStore>> {
    Ok(Arc::new(MongoMessageStore::connect(config).await?))
}

async fn topics(config: MongoConfig) -> anyhow::Result<Arc<dyn TopicStore>> {
    Ok(Arc::new(MongoTopicStore::connect(config).await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_message_store_keeps_the_contract() -> anyhow::Result<()> {
    let (db, backend) = on_a_database(messages)?;
    let report = message_store::check(backend).await;
    db.cleanup().await?;
    report.into_result()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_topic_store_keeps_the_contract() -> anyhow::Result<()> {
    let (db, backend) = on_a_database(topics)?;
    let report = topic_store::check(backend).await;
    db.cleanup().await?;
    report.into_result()
}
