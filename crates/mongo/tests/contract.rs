//! The MongoDB message store against the `MessageStore` contract suite
//! (`edgepush_testkit::contract::message_store`), on the real server
//! (FerretDB under `scripts/test`). Every handle the suite asks for is a
//! client of its own on one database of this test's, so the rules about
//! racing writers race separate clients, as separate collect instances do.

use std::sync::Arc;

use edgepush_core::MessageStore;
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_testkit::TestDatabase;
use edgepush_testkit::contract::{Backend, message_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_message_store_keeps_the_contract() -> anyhow::Result<()> {
    let db = TestDatabase::shared()?;
    let mut config = MongoConfig::new(db.uri());
    config.database = db.name().to_owned();
    let backend = Backend::new(move || {
        let config = config.clone();
        async move {
            let store: Arc<dyn MessageStore> = Arc::new(MongoMessageStore::connect(config).await?);
            Ok(store)
        }
    });
    let report = message_store::check(backend).await;
    db.cleanup().await?;
    report.into_result()
}
