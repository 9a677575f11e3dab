//! Shared helpers of the MongoDB integration tests: the server URI, one
//! throw-away database per test, and hand-written documents that simulate
//! what a crashed writer leaves behind.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use edgepush_core::{MessageId, NewMessage, UserId};
use edgepush_mongo::schema::{CopyTemplate, MESSAGES, USERS};
use edgepush_mongo::{MongoConfig, MongoMessageStore};
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection, Database};
use serde_json::value::RawValue;

/// The test server, from `EDGEPUSH_TEST_MONGODB_URI`; fails the test when unset.
pub(crate) fn uri() -> String {
    match std::env::var("EDGEPUSH_TEST_MONGODB_URI") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "EDGEPUSH_TEST_MONGODB_URI is not set: set it to a MongoDB or FerretDB URI \
             (e.g. mongodb://127.0.0.1:27090), or run scripts/test"
        ),
    }
}

/// A database private to one test, dropped by [`TestDb::drop_db`], or on
/// drop when the test failed before getting there.
pub(crate) struct TestDb {
    /// A plain driver client for hand-written documents and counts.
    pub client: Client,
    /// The database's name.
    pub name: String,
    /// Whether [`TestDb::drop_db`] already ran.
    dropped: bool,
}

impl TestDb {
    /// A fresh, uniquely named database on the test server.
    pub(crate) async fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!(
            "ept_{}_{:08x}_{}",
            std::process::id(),
            nanos ^ rand::random::<u32>(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let client = Client::with_uri_str(uri()).await?;
        Ok(Self {
            client,
            name,
            dropped: false,
        })
    }

    /// A store config pointing at this database.
    pub(crate) fn config(&self) -> MongoConfig {
        let mut c = MongoConfig::new(uri());
        c.database = self.name.clone();
        c
    }

    /// A store on this database with the default config.
    pub(crate) async fn store(&self) -> anyhow::Result<MongoMessageStore> {
        Ok(MongoMessageStore::connect(self.config()).await?)
    }

    /// The database.
    pub(crate) fn db(&self) -> Database {
        self.client.database(&self.name)
    }

    /// The `messages` collection.
    pub(crate) fn messages(&self) -> Collection<Document> {
        self.db().collection(MESSAGES)
    }

    /// The `users` collection.
    pub(crate) fn users(&self) -> Collection<Document> {
        self.db().collection(USERS)
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
    pub(crate) async fn drop_db(mut self) -> anyhow::Result<()> {
        self.db().drop().await?;
        self.dropped = true;
        Ok(())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The test failed (or returned early). The test's runtime is busy
        // unwinding, so use a fresh thread, runtime and client.
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = Client::with_uri_str(uri()).await?;
                client.database(&name).drop().await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// A user id.
pub(crate) fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid test user id")
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
