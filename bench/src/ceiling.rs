//! The store's ceiling: message-shaped documents inserted into the MongoDB
//! wire server by plain unordered `insert` commands, as fast as it answers,
//! with no edgepush code in the loop.
//!
//! Collect stores one document per recipient's copy (`messages`, see
//! `edgepush_mongo`), so its copies per second can never beat what the
//! store takes in documents per second. This measures that bound on the
//! same server, into a collection the real store set up (its indexes) and
//! into one with only `_id`, so that the collect figures can be read
//! against it: how much of the store's capacity collect uses, and how many
//! copies per second a goal asks the store for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgepush_core::MessageId;
use edgepush_mongo::schema::EntryTemplate;
use mongodb::Collection;
use mongodb::bson::Document;
use serde_json::value::RawValue;

/// What to insert, how many at a time, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CeilingConfig {
    /// Documents per `insert` command.
    pub docs_per_insert: usize,
    /// Commands in flight.
    pub concurrency: usize,
    /// Seconds after which no further command is started (each command in
    /// flight sends at least one).
    pub secs: f64,
    /// Bytes of each document's `data` (the message payload).
    pub payload_bytes: usize,
    /// Distinct users each command in flight rotates over (collect's
    /// recipients are spread over many users, so index inserts land all
    /// over the `(user, seq)` index, not at its end).
    pub users: usize,
}

/// What one measurement inserted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    /// Documents the server acknowledged.
    pub docs: u64,
    /// Seconds from the first command to the last answer.
    pub elapsed_s: f64,
    /// Documents per second.
    pub docs_per_s: f64,
}

/// The measurement failed: the server refused a command or a document.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    /// The config asks for nothing (no documents per command, no commands
    /// in flight, no users or no time).
    #[error("docs_per_insert, concurrency, users and secs must be above 0")]
    Empty,
    /// An `insert` failed (the server is down, or refused a document).
    #[error("insert into {collection}: {source}")]
    Insert {
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
}

/// Inserts documents shaped like the store's copies (built by the store's
/// own [`EntryTemplate`]) into `collection` until `config.secs` have passed.
/// Every document is new: user `<prefix>w<worker>u<k>` at increasing seqs,
/// so no unique index refuses one; `prefix` keeps runs on one collection
/// apart.
pub async fn measure(
    collection: &Collection<Document>,
    prefix: &str,
    config: CeilingConfig,
) -> Result<Ceiling, CeilingError> {
    if config.docs_per_insert == 0
        || config.concurrency == 0
        || config.users == 0
        || config.secs <= 0.0
    {
        return Err(CeilingError::Empty);
    }
    let data: Arc<RawValue> = RawValue::from_string(format!(
        "{{\"p\":\"{}\"}}",
        "x".repeat(config.payload_bytes.saturating_sub(8))
    ))
    .map(Arc::from)
    .expect("a JSON string of x's is valid JSON");
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(config.secs);
    let workers = (0..config.concurrency).map(|w| {
        let collection = collection.clone();
        let data = data.clone();
        let users: Vec<String> = (0..config.users)
            .map(|u| format!("{prefix}w{w}u{u}"))
            .collect();
        async move {
            let mut inserted = 0u64;
            // The n-th document of this worker goes to user n % users at
            // seq n / users + 1: every (user, seq) once, users in rotation
            // like collect's recipients.
            let mut n = 0usize;
            // At least one command each, however late the first poll.
            loop {
                let created_at_ms =
                    i64::try_from(crate::unix_nanos() / 1_000_000).unwrap_or(i64::MAX);
                let docs: Vec<Document> = (0..config.docs_per_insert)
                    .map(|_| {
                        let (user, seq) = (&users[n % users.len()], n / users.len() + 1);
                        n += 1;
                        let id = MessageId::random();
                        let idem = format!("auto:{}", id.as_str());
                        EntryTemplate {
                            key_field: "user",
                            key: user,
                            id: &id,
                            data: &data,
                            source: "ceiling",
                            idem: &idem,
                            created_at_ms,
                            expire_at_ms: None,
                        }
                        .to_doc(i64::try_from(seq).unwrap_or(i64::MAX))
                    })
                    .collect();
                let result =
                    collection
                        .insert_many(docs)
                        .ordered(false)
                        .await
                        .map_err(|source| CeilingError::Insert {
                            collection: collection.name().to_owned(),
                            source,
                        })?;
                inserted += result.inserted_ids.len() as u64;
                if Instant::now() >= until {
                    break;
                }
            }
            Ok::<u64, CeilingError>(inserted)
        }
    });
    let mut docs = 0;
    for outcome in futures_util::future::join_all(workers).await {
        docs += outcome?;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(Ceiling {
        docs,
        elapsed_s,
        docs_per_s: docs as f64 / elapsed_s.max(1e-9),
    })
}
