//! The store-ceiling measurement against the real MongoDB wire server
//! (`EDGEPUSH_TEST_MONGODB_URI`): what it counts is what the server holds,
//! and what it inserts is what the real store reads back as its own
//! copies. Asserts counts and contents, never rates.

use anyhow::Context as _;
use edgepush_bench::ceiling::{self, CeilingConfig, CeilingError};
use edgepush_core::{MessageStore, UserId};
use edgepush_mongo::MongoMessageStore;
use edgepush_tests::TestEnv;
use mongodb::Collection;
use mongodb::bson::{Document, doc};

const CONFIG: CeilingConfig = CeilingConfig {
    docs_per_insert: 50,
    concurrency: 2,
    secs: 0.3,
    payload_bytes: 64,
    users: 7,
};

/// The test's store (which creates the indexes) and its `messages`.
async fn messages(env: &TestEnv) -> anyhow::Result<(MongoMessageStore, Collection<Document>)> {
    let store = edgepush_tests::message_store(&env.mongodb_uri, &env.database).await?;
    let messages = store.database().collection::<Document>("messages");
    Ok((store, messages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_counted_is_stored_and_reads_as_a_copy() -> anyhow::Result<()> {
    TestEnv::run(async |env| {
        let (store, messages) = messages(env).await?;

        let run = ceiling::measure(&messages, "c", CONFIG).await?;
        assert!(run.docs > 0, "at least one command each: {run:?}");
        assert_eq!(
            run.docs % CONFIG.docs_per_insert as u64,
            0,
            "whole commands: {run:?}"
        );
        let held = messages
            .count_documents(doc! { "source": "ceiling" })
            .await
            .context("counting")?;
        assert_eq!(held, run.docs, "every document counted is stored");

        // Worker 0's first user: seqs 1, 2, .. without gaps, each a copy
        // the real store reads back, with the payload it was given.
        let user = UserId::new("cw0u0")?;
        let copies = store.read_after(&user, 0, 10_000).await?;
        assert!(
            !copies.is_empty(),
            "the store reads the ceiling's documents"
        );
        for (i, copy) in copies.iter().enumerate() {
            assert_eq!(copy.seq, i as u64 + 1, "{copies:?}");
            assert_eq!(copy.user_id, user);
            assert!(copy.data.get().starts_with("{\"p\":\"xx"), "{copy:?}");
        }
        // The users rotate: worker 0 wrote one document per user per 7.
        let per_worker = messages
            .count_documents(doc! { "user": { "$regex": "^cw0u" } })
            .await?;
        let first = copies.len() as u64;
        assert_eq!(
            per_worker.div_ceil(CONFIG.users as u64),
            first,
            "{per_worker} documents over {} users, user 0 has {first}",
            CONFIG.users
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_config_that_asks_for_nothing_is_refused() -> anyhow::Result<()> {
    TestEnv::run(async |env| {
        let (_store, messages) = messages(env).await?;
        for config in [
            CeilingConfig {
                docs_per_insert: 0,
                ..CONFIG
            },
            CeilingConfig {
                concurrency: 0,
                ..CONFIG
            },
            CeilingConfig { users: 0, ..CONFIG },
            CeilingConfig {
                secs: 0.0,
                ..CONFIG
            },
        ] {
            let refused = ceiling::measure(&messages, "e", config).await;
            assert!(matches!(refused, Err(CeilingError::Empty)), "{refused:?}");
        }
        assert_eq!(messages.count_documents(doc! {}).await?, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_refused_document_fails_the_measurement() -> anyhow::Result<()> {
    TestEnv::run(async |env| {
        let (_store, messages) = messages(env).await?;
        // Two runs with one prefix write the same (user, seq) in their first
        // command (each sends at least one): the unique indexes refuse the
        // second, and the measurement says so instead of counting documents
        // the server did not take.
        let once = CeilingConfig {
            concurrency: 1,
            secs: 0.01,
            ..CONFIG
        };
        ceiling::measure(&messages, "d", once).await?;
        let again = ceiling::measure(&messages, "d", once).await;
        assert!(
            matches!(again, Err(CeilingError::Insert { .. })),
            "{again:?}"
        );
        Ok(())
    })
    .await
}
