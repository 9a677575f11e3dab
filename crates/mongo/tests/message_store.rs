//! The MongoDB message store against a real server (MongoDB or FerretDB):
//! what is peculiar to this adapter. The rules every message store keeps
//! (seqs, idempotency, paging, acks) are checked by the contract suite in
//! `contract.rs`; here are crash repair (a writer dying between its insert
//! and its counter update), the batched append path (many concurrent
//! requests of one store, hot users, large fan-outs, a caller that gives
//! up), index-name lookalikes, retention, malformed documents, stored
//! layout details and failure to connect.

mod common;

use std::time::Duration;

use common::{TestDb, message, user};
use edgepush_core::message::now_ms;
use edgepush_core::{MessageStore, Seq, StoreError, StoredMessage, StreamPosition};
use edgepush_mongo::schema::message_doc_id;
use edgepush_mongo::{MongoConfig, MongoMessageStore, RetentionMode, ServerKind};
use edgepush_testkit::wait::{Check, stall, until};
use futures_util::FutureExt as _;
use mongodb::bson::{DateTime, doc};

fn seqs(messages: &[StoredMessage]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn a_crash_between_insert_and_counter_leaves_no_gap_or_duplicate() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    let u = user("crashy");
    for _ in 0..3 {
        store.append(&message(&["crashy"], "0", None)).await?;
    }
    // A writer stored seq 4 and died before moving the counter.
    let lost = message(&["crashy"], r#""crashed writer""#, None);
    let lost_id = lost.message_id();
    t.insert_copy_by_hand(&lost, &lost_id, &u, 4, now_ms())
        .await?;

    let next = store
        .append(&message(&["crashy"], r#""next""#, None))
        .await?;
    assert_eq!(seqs(&next), [5]);
    let all = store.read_after(&u, 0, 100).await?;
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
    assert_eq!(all[3].id, lost_id);

    // Same for a user whose very first writer crashed (no counter at all).
    let fresh = user("fresh");
    t.insert_copy_by_hand(&lost, &lost_id, &fresh, 1, now_ms())
        .await?;
    let next = store.append(&message(&["fresh"], "1", None)).await?;
    assert_eq!(seqs(&next), [2]);
    assert_eq!(seqs(&store.read_after(&fresh, 0, 100).await?), [1, 2]);
    t.drop_db().await
}

#[tokio::test]
async fn a_retry_completes_a_partially_stored_multi_recipient_request() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    store.append(&message(&["m1", "m3"], "0", None)).await?;

    // A request for m1, m2, m3 crashed after storing only m2's copy, before
    // moving m2's counter.
    let msg = message(&["m1", "m2", "m3"], r#"{"fan":"out"}"#, Some("batch-9"));
    let id = msg.message_id();
    let crashed_at = now_ms() - 1000;
    t.insert_copy_by_hand(&msg, &id, &user("m2"), 1, crashed_at)
        .await?;

    let stored = store.append(&msg).await?;
    assert_eq!(seqs(&stored), [2, 1, 2]);
    assert!(
        stored.iter().all(|m| m.id == id),
        "every copy names the same message"
    );
    assert_eq!(
        stored[1].created_at_ms, crashed_at,
        "m2 gets the copy stored before the crash"
    );
    for u in ["m1", "m2", "m3"] {
        assert_eq!(
            t.copies_of(&user(u)).await?,
            2 - u64::from(u == "m2"),
            "copies of {u}"
        );
    }
    assert_eq!(
        store.append(&msg).await?,
        stored,
        "a further retry changes nothing"
    );
    // m2's counter was repaired by the retry.
    assert_eq!(
        seqs(&store.append(&message(&["m2"], "1", None)).await?),
        [2]
    );
    t.drop_db().await
}

/// The batched path: many concurrent requests of one store (grouped into
/// rounds of at most one copy per user), to many users and to one hot user
/// that every request names, all stored exactly once at gap-free seqs and
/// readable as answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_of_one_store_are_stored_together_without_gaps() -> anyhow::Result<()> {
    const REQUESTS: usize = 60;
    let t = TestDb::new().await?;
    let store = t.store().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..REQUESTS {
        let store = store.clone();
        // Each request: its own user, and the hot user every one shares.
        let own = format!("many-{k}");
        tasks.spawn(async move {
            let msg = message(&[own.as_str(), "hot"], &k.to_string(), None);
            let stored = store.append(&msg).await;
            (k, stored)
        });
    }
    let mut hot_seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (k, stored) = joined?;
        let stored = stored?;
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].user_id, user(&format!("many-{k}")));
        assert_eq!(stored[0].seq, 1, "the first copy of many-{k}");
        assert_eq!(stored[1].user_id, user("hot"));
        assert_eq!(stored[0].id, stored[1].id);
        hot_seqs.push(stored[1].seq);
    }
    hot_seqs.sort_unstable();
    assert_eq!(hot_seqs, (1..=REQUESTS as Seq).collect::<Vec<_>>());
    assert_eq!(
        seqs(&store.read_after(&user("hot"), 0, 1000).await?),
        hot_seqs
    );
    assert_eq!(
        store.position(&user("hot")).await?.last_seq,
        REQUESTS as Seq
    );
    match store.retention_mode() {
        // One counter document per user, each moved before answering.
        RetentionMode::TtlIndex => assert_eq!(
            t.users().count_documents(doc! {}).await?,
            REQUESTS as u64 + 1
        ),
        // Counters lag (up to 32 copies): no user of one copy has one.
        RetentionMode::Sweeper => assert_eq!(
            t.users()
                .count_documents(doc! { "_id": { "$ne": "hot" } })
                .await?,
            0
        ),
    }
    t.drop_db().await
}

/// Two rounds in flight (rounds of 7 copies, so that a full second round
/// starts beside the first): requests to overlapping sets of users, each
/// user in one round at a time. Every user's copies are stored once, at
/// seqs 1..n without a gap, and every request's answer is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_in_flight_together_keep_every_users_seqs_gap_free() -> anyhow::Result<()> {
    const REQUESTS: usize = 50;
    const USERS: usize = 40;
    const PER_REQUEST: usize = 10;
    let t = TestDb::new().await?;
    let mut config = t.config();
    config.append_batch = 7;
    config.append_rounds = 2;
    let store = MongoMessageStore::connect(config).await?;
    // Request k names users 3k .. 3k + 9 (mod 40): neighbours overlap.
    let names = |k: usize| -> Vec<String> {
        (0..PER_REQUEST)
            .map(|j| format!("ring-{}", (3 * k + j) % USERS))
            .collect()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..REQUESTS {
        let store = store.clone();
        let to = names(k);
        tasks.spawn(async move {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            let stored = store.append(&message(&to, &k.to_string(), None)).await;
            (k, stored)
        });
    }
    let mut answered: std::collections::HashMap<String, Vec<Seq>> = Default::default();
    while let Some(joined) = tasks.join_next().await {
        let (k, stored) = joined?;
        let stored = stored?;
        assert_eq!(stored.len(), PER_REQUEST, "request {k}");
        for (copy, name) in stored.iter().zip(names(k)) {
            assert_eq!(copy.user_id, user(&name), "request {k}");
            assert_eq!(copy.id, stored[0].id, "request {k}");
            assert_eq!(copy.data.get(), k.to_string(), "request {k}");
            answered.entry(name).or_default().push(copy.seq);
        }
    }
    assert_eq!(answered.len(), USERS);
    for (name, mut seqs_answered) in answered {
        seqs_answered.sort_unstable();
        let n = seqs_answered.len() as Seq;
        assert_eq!(seqs_answered, (1..=n).collect::<Vec<_>>(), "{name}");
        let stored = store.read_after(&user(&name), 0, 1000).await?;
        assert_eq!(seqs(&stored), seqs_answered, "{name}: stored as answered");
        assert_eq!(t.copies_of(&user(&name)).await?, n, "{name}: no extra copy");
    }
    t.drop_db().await
}

/// Where the sweep is the only deleter (FerretDB), appends do not wait for
/// the counter: it lags behind the log by up to 32 copies and moves in the
/// background, and every reader (another handle's append, `position`, an
/// ack) finds the end of the log from it, however far behind it is.
#[tokio::test]
async fn a_lagging_counter_is_read_past_and_moved_in_the_background() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    if store.retention_mode() != RetentionMode::Sweeper {
        // MongoDB's TTL monitor deletes without moving counters: there
        // the counter moves before answering (see the test above).
        return t.drop_db().await;
    }
    let u = user("lag");
    let counter = || t.counter_of("lag");
    for k in 1..=40 {
        let stored = store
            .append(&message(&["lag"], &k.to_string(), None))
            .await?;
        assert_eq!(seqs(&stored), [k]);
    }
    // Moved once the log was 32 past it (0), not after each copy (or, on
    // a machine slow enough for the batcher to forget the user, to 40).
    until("the counter moved in the background", stall(), || async {
        Ok(match counter().await? {
            Some(c) if c >= 32 => Check::Done(()),
            other => Check::Waiting(other),
        })
    })
    .await?;
    assert_eq!(store.position(&u).await?.last_seq, 40, "8 past the counter");

    // Another handle (another process: nothing remembered) continues after
    // the end, not after the counter.
    let other = t.store().await?;
    assert_eq!(
        seqs(&other.append(&message(&["lag"], "41", None)).await?),
        [41]
    );
    // With the counter gone altogether (never written: 41 copies past it).
    t.users().delete_one(doc! { "_id": "lag" }).await?;
    assert_eq!(other.position(&u).await?.last_seq, 41);
    let third = t.store().await?;
    assert_eq!(
        seqs(&third.append(&message(&["lag"], "42", None)).await?),
        [42]
    );
    assert_eq!(
        seqs(&store.read_after(&u, 0, 100).await?),
        (1..=42).collect::<Vec<Seq>>()
    );
    // 42 past no counter: moved in the background.
    until("the counter moved again", stall(), || async {
        Ok(match counter().await? {
            Some(42) => Check::Done(()),
            other => Check::Waiting(other),
        })
    })
    .await?;
    t.drop_db().await
}

/// Where the counter lags (FerretDB), `settle` (a process about to exit)
/// returns once every counter its appends left lagging is written, and
/// the store keeps working after it.
#[tokio::test]
async fn settle_leaves_every_counter_exact_before_it_returns() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    if store.retention_mode() != RetentionMode::Sweeper {
        return t.drop_db().await;
    }
    // Three users, each fewer copies than the lag allowed: no counter
    // moved yet (the batcher forgets a user only 30 s after its last copy).
    for k in 1..=5 {
        for name in ["st-a", "st-b", "st-c"] {
            store
                .append(&message(&[name], &k.to_string(), None))
                .await?;
        }
    }
    store.settle().await;
    for name in ["st-a", "st-b", "st-c"] {
        assert_eq!(t.counter_of(name).await?, Some(5), "{name}");
    }
    // Appends go on after it, at the next seq.
    let stored = store.append(&message(&["st-a"], "6", None)).await?;
    assert_eq!(seqs(&stored), [6]);
    store.settle().await;
    assert_eq!(t.counter_of("st-a").await?, Some(6));
    t.drop_db().await
}

/// Where the counter lags (FerretDB), a stopped batcher leaves the
/// counters of its users exact, and acks move a counter up to what they
/// acknowledge: an ack of a stored seq, of a delivered one, and one past
/// the log (clipped to the end, found from the counter).
#[tokio::test]
async fn acks_move_a_lagging_counter() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let writer = t.store().await?;
    if writer.retention_mode() != RetentionMode::Sweeper {
        return t.drop_db().await;
    }
    let u = user("acks");
    let counter = || t.counter_of("acks");
    for k in 1..=9 {
        let stored = writer
            .append(&message(&["acks"], &k.to_string(), None))
            .await?;
        assert_eq!(seqs(&stored), [k]);
    }
    // 9 copies, fewer than the lag allowed: moved when the writer stops.
    drop(writer);
    until("the stopped writer's counter", stall(), || async {
        Ok(match counter().await? {
            Some(9) => Check::Done(()),
            other => Check::Waiting(other),
        })
    })
    .await?;
    // As if it were lost: every reader below finds the end past it.
    t.users().delete_one(doc! { "_id": "acks" }).await?;
    let acker = t.store().await?;
    assert_eq!(acker.ack(&u, 4).await?, 4);
    assert_eq!(counter().await?, Some(4), "an ack of a stored seq moves it");
    assert_eq!(
        acker.position(&u).await?,
        StreamPosition {
            last_seq: 9,
            acked_seq: 4
        }
    );
    assert_eq!(acker.ack(&u, 2).await?, 4, "an older ack moves nothing");
    assert_eq!(acker.ack_delivered(&u, 6).await?, 6);
    assert_eq!(counter().await?, Some(6), "a delivered seq moves it");
    assert_eq!(acker.ack(&u, 1000).await?, 9, "clipped to the log");
    assert_eq!(counter().await?, Some(9));
    assert_eq!(
        acker.position(&u).await?,
        StreamPosition {
            last_seq: 9,
            acked_seq: 9
        }
    );
    t.drop_db().await
}

/// One request to many recipients (more than a round holds) stores one
/// copy each, answered in the order of `to`, with one message id; a retry
/// returns the same copies; a recipient named twice gets one copy.
#[tokio::test]
async fn a_large_fan_out_is_stored_once_per_recipient_in_rounds() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let mut config = t.config();
    config.append_batch = 7;
    let store = MongoMessageStore::connect(config).await?;
    let names: Vec<String> = (0..40).map(|i| format!("fan-{i}")).collect();
    let mut to: Vec<&str> = names.iter().map(String::as_str).collect();
    to.push("fan-3");
    let msg = message(&to, r#"{"fan":40}"#, Some("fan-key"));
    let stored = store.append(&msg).await?;
    assert_eq!(stored.len(), 41);
    for (m, name) in stored.iter().zip(&to) {
        assert_eq!(m.user_id, user(name));
        assert_eq!(m.seq, 1, "{name}");
        assert_eq!(m.id, stored[0].id);
    }
    assert_eq!(
        stored[40], stored[3],
        "a recipient named twice gets one copy"
    );
    assert_eq!(
        store.append(&msg).await?,
        stored,
        "a retry stores nothing new"
    );
    for name in &names {
        assert_eq!(t.copies_of(&user(name)).await?, 1, "copies of {name}");
    }

    // A round of a hundred users whose counters exist: their counter
    // updates modify documents (FerretDB v1 holds a connection per such
    // statement until its command ends, so they must not all go in one).
    let store = t.store().await?;
    let hundred: Vec<String> = (0..100).map(|i| format!("wide-{i}")).collect();
    let to: Vec<&str> = hundred.iter().map(String::as_str).collect();
    for round in 1..=2 {
        let stored = store.append(&message(&to, "1", None)).await?;
        assert!(stored.iter().all(|m| m.seq == round), "round {round}");
    }
    assert_eq!(store.position(&user("wide-99")).await?.last_seq, 2);
    t.drop_db().await
}

/// An append whose caller stops waiting (a dropped future: a client that
/// hung up, a Lambda that timed out) is still completed: its copy stored
/// and, where the counter is the end of the log (MongoDB), its counter
/// moved, so no counter that readers trust is left behind.
#[tokio::test]
async fn an_abandoned_append_is_completed_counter_included() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    let msg = message(&["quitter"], r#""gone""#, Some("abandoned"));
    // Polled once (the request is handed to the batcher), then dropped.
    let mut append = Box::pin(store.append(&msg));
    assert!(
        (&mut append).now_or_never().is_none(),
        "an append needs the server"
    );
    drop(append);
    let u = user("quitter");
    until("the abandoned append's counter", stall(), || async {
        Ok(match store.position(&u).await?.last_seq {
            1 => Check::Done(()),
            other => Check::Waiting(other),
        })
    })
    .await?;
    assert_eq!(t.copies_of(&u).await?, 1);
    // Its retry finds the copy.
    let again = store.append(&msg).await?;
    assert_eq!(seqs(&again), [1]);
    t.drop_db().await
}

/// What the contract's ack rules do not see: the documents behind them.
#[tokio::test]
async fn an_ack_with_nothing_stored_writes_nothing_and_an_old_acked_seq_reads_clipped()
-> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    let u = user("acker");
    assert_eq!(store.ack(&u, 5).await?, 0, "nothing stored: nothing to ack");
    assert_eq!(
        t.users().count_documents(doc! { "_id": "acker" }).await?,
        0,
        "an ack of nothing creates no user document"
    );
    for k in 0..9 {
        store
            .append(&message(&["acker"], &k.to_string(), None))
            .await?;
    }
    assert_eq!(store.ack(&u, 4).await?, 4);
    // An acked seq beyond the stored one (written by an older version that
    // did not clip acks) reads as clipped.
    t.users()
        .update_one(
            doc! { "_id": "acker" },
            doc! { "$set": { "acked_seq": 500_i64 } },
        )
        .await?;
    assert_eq!(store.position(&u).await?.acked_seq, 9);
    assert_eq!(store.acked(&u).await?, 9);
    t.drop_db().await
}

#[tokio::test]
async fn an_idempotency_key_that_looks_like_an_index_name_is_no_seq_conflict() -> anyhow::Result<()>
{
    let t = TestDb::new().await?;
    let store = t.store().await?;
    for key in ["x index: _id_ y", "index: user_seq ", "E11000 dup key"] {
        let msg = message(&["tricky"], "0", Some(key));
        let first = store.append(&msg).await?;
        let again = store.append(&msg).await?;
        assert_eq!(first, again, "key {key:?}");
    }
    assert_eq!(t.copies_of(&user("tricky")).await?, 3);
    t.drop_db().await
}

#[tokio::test]
async fn retention_sweep_deletes_old_messages_and_seqs_continue() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let mut config = t.config();
    config.retention = Duration::from_secs(3600);
    let store = MongoMessageStore::connect(config).await?;
    let u = user("old");
    for _ in 0..5 {
        store.append(&message(&["old", "young"], "0", None)).await?;
    }
    // Age seqs 1..=3 of "old" past the retention.
    let aged = DateTime::from_millis(now_ms() - 2 * 3600 * 1000);
    t.messages()
        .update_many(
            doc! { "user": "old", "seq": { "$lte": 3 } },
            doc! { "$set": { "created_at": aged } },
        )
        .await?;
    let deleted = store.sweep_expired().await?;
    if store.retention_mode() == RetentionMode::Sweeper {
        assert_eq!(deleted, 3);
    }
    assert_eq!(seqs(&store.read_after(&u, 0, 100).await?), [4, 5]);
    assert_eq!(
        t.copies_of(&user("young")).await?,
        5,
        "fresh messages are kept"
    );

    // Everything of "old" expires, and a crashed writer's copy with it: the
    // next message continues after the highest seq ever stored.
    let crashed = message(&["old"], "1", None);
    t.insert_copy_by_hand(&crashed, &crashed.message_id(), &u, 6, now_ms())
        .await?;
    t.messages()
        .update_many(
            doc! { "user": "old" },
            doc! { "$set": { "created_at": aged } },
        )
        .await?;
    store.sweep_expired().await?;
    assert_eq!(t.copies_of(&u).await?, 0);
    let next = store.append(&message(&["old"], "2", None)).await?;
    if store.retention_mode() == RetentionMode::Sweeper {
        assert_eq!(seqs(&next), [7]);
    } else {
        // The server's TTL monitor may have deleted the crashed copy before
        // the sweep could repair the counter from it.
        assert!(next[0].seq >= 6, "seq restarted at {}", next[0].seq);
    }
    assert_eq!(store.sweep_expired().await?, 0, "nothing fresh is deleted");
    assert_eq!(t.copies_of(&user("young")).await?, 5);
    t.drop_db().await
}

#[tokio::test]
async fn a_malformed_document_fails_the_read_instead_of_ending_it_early() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    store.append(&message(&["odd"], "1", None)).await?;
    // Seq 2 under its proper `_id` (what takes a seq on every server), with
    // `data` not JSON text and the other fields missing.
    let id = message_doc_id(&user("odd"), 2);
    t.messages()
        .insert_one(doc! { "_id": id, "user": "odd", "seq": 2_i64, "data": 42 })
        .await?;
    // Its counter says 2 is stored (a lagging counter may not exist yet).
    t.users()
        .update_one(
            doc! { "_id": "odd" },
            doc! { "$set": { "last_seq": 2_i64 } },
        )
        .upsert(true)
        .await?;
    store.append(&message(&["odd"], "3", None)).await?;
    // Skipping seq 2 would hand a replay a short page, which means "the
    // end": seq 3 would never be replayed. The read fails instead.
    match store.read_after(&user("odd"), 0, 10).await {
        Err(StoreError::Backend(text)) => assert!(text.contains("odd"), "{text}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(seqs(&store.read_after(&user("odd"), 2, 10).await?), [3]);
    t.drop_db().await
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable() -> anyhow::Result<()> {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let config = MongoConfig::new(format!("mongodb://127.0.0.1:{port}/?directConnection=true"));
    match MongoMessageStore::connect(config).await {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    let bad = MongoMessageStore::connect(MongoConfig::new("not a uri")).await;
    assert!(matches!(bad, Err(StoreError::Backend(_))), "{bad:?}");
    Ok(())
}

/// The store tells FerretDB v1 apart from MongoDB by what the server says
/// of itself, and creates only the indexes the server answers from: on
/// FerretDB v1 `_id` (which also keeps a seq unique) and the idempotency
/// index; on MongoDB also `(user, seq)` and the TTL index.
#[tokio::test]
async fn messages_get_the_indexes_the_server_answers_from() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let store = t.store().await?;
    let info = t.db().run_command(doc! { "buildInfo": 1 }).await?;
    let ferretdb_v1 = info
        .get_str("ferretdbVersion")
        .is_ok_and(|v| v.starts_with("v1.") || v.starts_with("1."));
    let kind = store.server_kind();
    assert_eq!(kind == ServerKind::FerretDbV1, ferretdb_v1, "{info:?}");
    let mut names = t.messages().list_index_names().await?;
    names.sort();
    match kind {
        ServerKind::FerretDbV1 => assert_eq!(names, ["_id_", "source_idem_user"]),
        ServerKind::MongoDb => {
            for name in ["_id_", "source_idem_user", "user_seq"] {
                assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
            }
        }
    }
    // Without the `(user, seq)` index a seq is still taken once (by
    // `_id`): a second message at (solo, 1) is refused, and the next
    // append takes 2.
    let (m, other) = (message(&["solo"], "0", None), message(&["solo"], "9", None));
    t.insert_copy_by_hand(&m, &m.message_id(), &user("solo"), 1, now_ms())
        .await?;
    let dup = t
        .insert_copy_by_hand(&other, &other.message_id(), &user("solo"), 1, now_ms())
        .await;
    assert!(dup.is_err(), "a second document at (solo, 1) was stored");
    let next = store.append(&message(&["solo"], "1", None)).await?;
    assert_eq!(seqs(&next), [2]);
    t.drop_db().await
}

#[tokio::test]
async fn retention_is_enforced_without_calling_the_sweep() -> anyhow::Result<()> {
    let t = TestDb::new().await?;
    let mut config = t.config();
    config.retention = Duration::from_secs(1);
    let store = MongoMessageStore::connect(config).await?;
    let names = t.messages().list_index_names().await?;
    match store.retention_mode() {
        RetentionMode::TtlIndex => {
            assert!(names.iter().any(|n| n == "created_at_ttl"), "{names:?}");
        }
        RetentionMode::Sweeper => {
            // The sweep's plain index only where the server can use it.
            let plain = names.iter().any(|n| n == "created_at_1");
            assert_eq!(
                plain,
                store.server_kind().serves_ranges_from_indexes(),
                "{names:?}"
            );
            let old = message(&["gone"], "0", None);
            let aged = now_ms() - 60_000;
            t.insert_copy_by_hand(&old, &old.message_id(), &user("gone"), 1, aged)
                .await?;
            // The background task sweeps every second here; poll for it.
            // Nothing measurable moves until it does, so the wait gives up
            // after the stall period: only a broken sweeper gets there.
            until(
                "the background sweeper to delete the expired message",
                stall(),
                || async {
                    Ok(match t.copies_of(&user("gone")).await? {
                        0 => Check::Done(()),
                        left => Check::Waiting(left),
                    })
                },
            )
            .await?;
            let next = store.append(&message(&["gone"], "1", None)).await?;
            assert_eq!(seqs(&next), [2], "the sweep kept the seq going");
        }
    }
    drop(store);
    t.drop_db().await
}
