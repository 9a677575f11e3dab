//! Shared helpers of the MongoDB adapter's own tests: a throw-away database
//! (on [`edgepush_testkit::TestDatabase`]) with the store's collections at
//! hand, and hand-written documents that simulate what a crashed writer
//! leaves behind.

#![allow(dead_code)]

use std::sync::Arc;

use edgepush_core::{MessageId, NewMessage, UserId};
use edgepush_mongo::schema::{CopyTemplate, MESSAGES, USERS};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use edgepush_testkit::TestDatabase;
pub(crate) use edgepush_testkit::user;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection, Database};
use serde_json::value::RawValue;

/// A database private to one test, dropped by [`TestDb::drop_db`], or on
/// drop when the test failed before getting there.
pub(crate) struct TestDb {
    /// A plain driver client for hand-written documents and counts.
    pub client: Client,
    db: TestDatabase,
}

impl TestDb {
    /// A fresh, uniquely named database on the test server.
    pub(crate) async fn new() -> anyhow::Result<Self> {
        let db = TestDatabase::shared()?;
        let client = edgepush_testkit::testdb::client(db.uri()).await?;
        Ok(Self { client, db })
    }

    /// A store config pointing at this database.
    pub(crate) fn config(&self) -> MongoConfig {
        let mut c = MongoConfig::new(self.db.uri());
        c.database = self.db.name().to_owned();
        c
    }

    /// A store on this database with the default config.
    pub(crate) async fn store(&self) -> anyhow::Result<MongoMessageStore> {
        Ok(MongoMessageStore::connect(self.config()).await?)
    }

    /// The database.
    pub(crate) fn db(&self) -> Database {
        self.client.database(self.db.name())
    }

    /// The `messages` collection.
    pub(crate) fn messages(&self) -> Collection<Document> {
        self.db().collection(MESSAGES)
    }

    /// The `users` collection.
    pub(crate) fn users(&self) -> Collection<Document> {
        self.db().collection(USERS)
    }

    /// `user`'s counter document's `last_seq`, if the document exists.
    pub(crate) async fn counter_of(&self, user: &str) -> anyhow::Result<Option<i64>> {
        let doc = self.users().find_one(doc! { "_id": user }).await?;
        Ok(doc.and_then(|d| d.get_i64("last_seq").ok()))
    }

    /// How many copies are stored for `user`.
    pub(crate) async fn copies_of(&self, user: &UserId) -> anyhow::Result<u64> {
        Ok(self
            .messages()
            .count_documents(doc! { "user": user.as_str() })
            .await?)
    }

    /// Inserts the document a writer stores for `msg`'s copy to `user` at
    /// `seq`, without touching the counter: what a crash between the insert
    /// and the counter update leaves behind.
    pub(crate) async fn insert_copy_by_hand(
        &self,
        msg: &NewMessage,
        id: &MessageId,
        user: &UserId,
        seq: i64,
        created_at_ms: i64,
    ) -> anyhow::Result<()> {
        let idem = edgepush_mongo::schema::idem_value(msg.idempotency_key.as_deref(), id);
        let doc = CopyTemplate {
            user,
            id,
            data: &msg.data,
            source: &msg.source,
            idem: &idem,
            created_at_ms,
        }
        .to_doc(seq);
        self.messages().insert_one(doc).await?;
        Ok(())
    }

    /// Drops the database.
    pub(crate) async fn drop_db(self) -> anyhow::Result<()> {
        self.db.cleanup().await
    }
}

/// A message for `to` with payload `data` (JSON text) from source `api`.
pub(crate) fn message(to: &[&str], data: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        to: to.iter().map(|u| user(u)).collect(),
        data: Arc::from(RawValue::from_string(data.to_owned()).expect("valid test JSON")),
        source: "api".to_owned(),
        idempotency_key: key.map(str::to_owned),
    }
}
