//! The [`MessageStore`] contract: per-user seqs from 1 without gaps (also
//! under racing writers), idempotent appends, paging where a short page is
//! the end of the log, forward-only acks clipped to the log, positions that
//! follow appends.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use edgepush_core::{MessageStore, NewMessage, Seq, StoredMessage, StreamPosition, UserId};
use serde_json::value::RawValue;

use super::{Backend, Report, Rule};
use crate::unique;

/// Every rule of the contract, in the order of the trait's docs.
pub const RULES: &[Rule<dyn MessageStore>] = crate::rules![dyn MessageStore:
    seqs_start_at_one_per_user,
    seqs_increase_without_gaps,
    racing_appends_get_every_seq_once,
    an_idempotent_retry_returns_the_first_copies,
    racing_duplicates_return_the_same_copies,
    a_short_page_means_the_end_of_the_log,
    read_after_outside_the_log_is_empty,
    acks_only_move_forward,
    acks_of_delivered_seqs_only_move_forward,
    acks_are_clipped_to_the_last_stored_seq,
    position_follows_appends_and_acks,
    ping_answers,
];

/// Runs every rule against `backend`.
pub async fn check(backend: Backend<dyn MessageStore>) -> Report {
    super::check("MessageStore", RULES, backend).await
}

/// The source every rule submits as (idempotency keys are scoped by it).
const SOURCE: &str = "contract";

/// A user no other rule or test uses.
fn user(tag: &str) -> anyhow::Result<UserId> {
    Ok(UserId::new(unique(tag))?)
}

/// A message to `to` with payload `data` (JSON text) from [`SOURCE`].
fn message(to: &[&UserId], data: &str, key: Option<&str>) -> anyhow::Result<NewMessage> {
    Ok(NewMessage {
        to: to.iter().map(|u| (*u).clone()).collect(),
        data: Arc::from(RawValue::from_string(data.to_owned()).context("test JSON")?),
        source: SOURCE.to_owned(),
        idempotency_key: key.map(str::to_owned),
    })
}

fn seqs(messages: &[StoredMessage]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

fn receipts(messages: &[StoredMessage]) -> Vec<(UserId, Seq)> {
    messages
        .iter()
        .map(|m| (m.user_id.clone(), m.seq))
        .collect()
}

/// The first copy stored for a user has seq 1; one append gives each
/// recipient its own next seq, answers in the order of `to`, and its copies
/// share one message id and the caller's payload text, byte for byte.
async fn seqs_start_at_one_per_user(backend: &Backend<dyn MessageStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (a, b, c) = (user("first-a")?, user("first-b")?, user("first-c")?);
    let first = store
        .append(&message(&[&a, &b], r#"{"n":1}"#, None)?)
        .await?;
    // Text a BSON document could not hold as it is: dots and dollars in
    // keys, nested arrays, escapes, spacing.
    let odd = r#"{"a.b": 1, "$x": [[2, [3]]], "s": "é \"q\"\n"}"#;
    let second = store.append(&message(&[&b, &c, &a], odd, None)?).await?;
    assert_eq!(receipts(&first), [(a.clone(), 1), (b.clone(), 1)]);
    assert_eq!(
        receipts(&second),
        [(b.clone(), 2), (c.clone(), 1), (a.clone(), 2)],
        "copies answer in the order of `to`"
    );
    ensure!(first[0].id == first[1].id, "one append, one message id");
    ensure!(second.iter().all(|m| m.id == second[0].id));
    ensure!(first[0].id != second[0].id, "two appends, two message ids");
    for m in &second {
        assert_eq!(m.data.get(), odd, "payload text of {}", m.user_id);
    }
    let read = store.read_after(&b, 0, 10).await?;
    assert_eq!(read, [first[1].clone(), second[0].clone()]);
    assert_eq!(read[1].data.get(), odd);
    Ok(())
}

/// Each append gives a recipient the seq right after its previous one
/// (strictly increasing, no gaps, counted per user), and `read_after` gives
/// back exactly the copies the appends returned.
async fn seqs_increase_without_gaps(backend: &Backend<dyn MessageStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (u, v) = (user("gapless-u")?, user("gapless-v")?);
    let (mut of_u, mut of_v) = (Vec::new(), Vec::new());
    for k in 0..30 {
        let to: Vec<&UserId> = match k % 3 {
            0 => vec![&u],
            1 => vec![&u, &v],
            _ => vec![&v],
        };
        for copy in store
            .append(&message(&to, &format!(r#"{{"k":{k}}}"#), None)?)
            .await?
        {
            let log = if copy.user_id == u {
                &mut of_u
            } else {
                &mut of_v
            };
            let want = log.len() as Seq + 1;
            assert_eq!(copy.seq, want, "seq of {} at append {k}", copy.user_id);
            log.push(copy);
        }
    }
    assert_eq!(of_u.len(), 20);
    assert_eq!(of_v.len(), 20);
    assert_eq!(store.read_after(&u, 0, 100).await?, of_u);
    assert_eq!(store.read_after(&v, 0, 100).await?, of_v);
    Ok(())
}

/// Appends racing from several handles (separate clients, like several
/// collect instances) still hand out every seq exactly once, without gaps.
async fn racing_appends_get_every_seq_once(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    const HANDLES: usize = 4;
    const EACH: usize = 25;
    let (hot, cold) = (user("race-hot")?, user("race-cold")?);
    let mut tasks = tokio::task::JoinSet::new();
    for (h, store) in backend.handles(HANDLES).await?.into_iter().enumerate() {
        for n in 0..EACH {
            let store = store.clone();
            let msg = message(&[&hot, &cold], &format!(r#"{{"h":{h},"n":{n}}}"#), None)?;
            tasks.spawn(async move { store.append(&msg).await });
        }
    }
    let (mut of_hot, mut of_cold) = (BTreeSet::new(), BTreeSet::new());
    while let Some(joined) = tasks.join_next().await {
        let stored = joined??;
        assert_eq!(stored.len(), 2);
        ensure!(
            of_hot.insert(stored[0].seq),
            "seq {} given twice",
            stored[0].seq
        );
        ensure!(
            of_cold.insert(stored[1].seq),
            "seq {} given twice",
            stored[1].seq
        );
    }
    let all: BTreeSet<Seq> = (1..=(HANDLES * EACH) as Seq).collect();
    assert_eq!(of_hot, all);
    assert_eq!(of_cold, all);
    let store = backend.handle().await?;
    let read = store.read_after(&hot, 0, 1000).await?;
    assert_eq!(seqs(&read), all.iter().copied().collect::<Vec<_>>());
    let next = store.append(&message(&[&hot], "0", None)?).await?;
    assert_eq!(seqs(&next), [all.len() as Seq + 1]);
    Ok(())
}

/// Appending again with the same `(source, idempotency key)` stores nothing
/// new and returns the copies stored the first time. A key is scoped by its
/// source; another key (even one that looks like a generated id) is another
/// message.
async fn an_idempotent_retry_returns_the_first_copies(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (x, y) = (user("idem-x")?, user("idem-y")?);
    store.append(&message(&[&x], "0", None)?).await?;
    let key = unique("order");
    let msg = message(&[&x, &y], r#"{"hello":"world"}"#, Some(&key))?;
    let first = store.append(&msg).await?;
    assert_eq!(seqs(&first), [2, 1]);
    assert_eq!(
        store.append(&msg).await?,
        first,
        "a retry returns the first copies"
    );
    assert_eq!(store.append(&msg).await?, first, "and so does the next");
    assert_eq!(seqs(&store.read_after(&x, 0, 10).await?), [1, 2]);
    assert_eq!(store.read_after(&y, 0, 10).await?, [first[1].clone()]);

    let mut other_source = msg.clone();
    other_source.source = format!("{SOURCE}-other");
    let from_other = store.append(&other_source).await?;
    assert_eq!(
        seqs(&from_other),
        [3, 2],
        "the same key from another source"
    );
    ensure!(from_other[0].id != first[0].id);
    let other_key = message(&[&y], "1", Some(&unique("order")))?;
    assert_eq!(seqs(&store.append(&other_key).await?), [3]);
    let lookalike = message(&[&y], "2", Some(&format!("auto:{}", first[0].id)))?;
    assert_eq!(seqs(&store.append(&lookalike).await?), [4]);
    assert_eq!(seqs(&store.read_after(&y, 0, 10).await?), [1, 2, 3, 4]);
    Ok(())
}

/// Identical appends racing from several handles all return the same
/// copies, and each recipient gets one copy.
async fn racing_duplicates_return_the_same_copies(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    let users = [user("dup-p")?, user("dup-q")?, user("dup-r")?];
    let msg = message(
        &users.iter().collect::<Vec<_>>(),
        r#"{"race":true}"#,
        Some(&unique("same-key")),
    )?;
    let handles = backend.handles(2).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let store = handles[i % handles.len()].clone();
        let msg = msg.clone();
        tasks.spawn(async move { store.append(&msg).await });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined??);
    }
    assert_eq!(results.len(), 10);
    for r in &results {
        assert_eq!(r, &results[0], "every racer returns the same copies");
    }
    assert_eq!(seqs(&results[0]), [1, 1, 1]);
    let store = &handles[0];
    for u in &users {
        assert_eq!(store.read_after(u, 0, 10).await?.len(), 1, "copies of {u}");
    }
    let next = store.append(&message(&[&users[1]], "1", None)?).await?;
    assert_eq!(seqs(&next), [2], "the seq continues after the one copy");
    Ok(())
}

/// `read_after` answers in seq order, with pages of exactly `limit` while
/// more follows: a page shorter than `limit` means the end of the log, so a
/// caller that stops there has read everything.
async fn a_short_page_means_the_end_of_the_log(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    const STORED: Seq = 250;
    const LIMIT: usize = 100;
    let store = backend.handle().await?;
    let u = user("pager")?;
    for i in 1..=STORED {
        store
            .append(&message(&[&u], &format!(r#"{{"i":{i}}}"#), None)?)
            .await?;
    }
    // Read the way a replay does: stop at the first short page.
    let (mut after, mut all, mut sizes) = (0, Vec::new(), Vec::new());
    loop {
        let page = store.read_after(&u, after, LIMIT).await?;
        sizes.push(page.len());
        ensure!(
            page.len() <= LIMIT,
            "a page of {} for limit {LIMIT}",
            page.len()
        );
        let short = page.len() < LIMIT;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        all.extend(page);
        if short {
            break;
        }
    }
    assert_eq!(
        seqs(&all),
        (1..=STORED).collect::<Vec<_>>(),
        "what a reader that stops at the first short page got"
    );
    assert_eq!(sizes, [100, 100, 50], "page sizes");
    for m in &all {
        assert_eq!(m.data.get(), format!(r#"{{"i":{}}}"#, m.seq));
    }
    assert_eq!(seqs(&store.read_after(&u, 7, 3).await?), [8, 9, 10]);
    assert_eq!(
        seqs(&store.read_after(&u, STORED - 5, LIMIT).await?),
        (STORED - 4..=STORED).collect::<Vec<_>>()
    );
    Ok(())
}

/// `read_after` reads nothing outside a user's log: a limit of 0, an
/// `after` at or beyond its last seq (up to `u64::MAX`), a user with nothing
/// stored; and never another user's copies.
async fn read_after_outside_the_log_is_empty(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (u, neighbour, nobody) = (user("edge-u")?, user("edge-n")?, user("edge-nobody")?);
    for _ in 0..3 {
        store
            .append(&message(&[&u, &neighbour], "0", None)?)
            .await?;
    }
    store.append(&message(&[&neighbour], "1", None)?).await?;
    ensure!(
        store.read_after(&u, 0, 0).await?.is_empty(),
        "limit 0 reads nothing"
    );
    ensure!(
        store.read_after(&u, 3, 10).await?.is_empty(),
        "after the last seq"
    );
    ensure!(store.read_after(&u, 1_000, 10).await?.is_empty());
    ensure!(store.read_after(&u, u64::MAX, 10).await?.is_empty());
    ensure!(store.read_after(&nobody, 0, 10).await?.is_empty());
    let read = store.read_after(&u, 0, usize::MAX).await?;
    assert_eq!(seqs(&read), [1, 2, 3], "limit usize::MAX");
    ensure!(
        read.iter().all(|m| m.user_id == u),
        "only the user's own copies"
    );
    Ok(())
}

/// `ack_delivered` of stored seqs keeps `ack`'s rules: it never moves the
/// acked seq backwards, answers the acked seq after the call, and mixes
/// with `ack` on any handle.
async fn acks_of_delivered_seqs_only_move_forward(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let other = backend.handle().await?;
    let u = user("delivered")?;
    for k in 0..8 {
        store.append(&message(&[&u], &k.to_string(), None)?).await?;
    }
    assert_eq!(store.ack_delivered(&u, 5).await?, 5);
    assert_eq!(other.acked(&u).await?, 5, "seen on another handle");
    assert_eq!(
        other.ack_delivered(&u, 3).await?,
        5,
        "an older ack does not move it back"
    );
    assert_eq!(store.ack(&u, 4).await?, 5);
    assert_eq!(other.ack_delivered(&u, 8).await?, 8);
    assert_eq!(
        store.position(&u).await?,
        StreamPosition {
            last_seq: 8,
            acked_seq: 8
        }
    );
    Ok(())
}

/// `ack` never moves the acked seq backwards, and answers the acked seq
/// after the call.
async fn acks_only_move_forward(backend: &Backend<dyn MessageStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let u = user("acker")?;
    for k in 0..8 {
        store.append(&message(&[&u], &k.to_string(), None)?).await?;
    }
    assert_eq!(store.ack(&u, 5).await?, 5);
    assert_eq!(store.acked(&u).await?, 5);
    assert_eq!(
        store.ack(&u, 3).await?,
        5,
        "an older ack does not move it back"
    );
    assert_eq!(store.acked(&u).await?, 5);
    assert_eq!(store.ack(&u, 7).await?, 7);
    assert_eq!(
        store.position(&u).await?,
        StreamPosition {
            last_seq: 8,
            acked_seq: 7
        }
    );
    Ok(())
}

/// `ack` is clipped to the user's last stored seq: with nothing stored it
/// records nothing (a later message is not hidden by it), past the log
/// (up to `u64::MAX`) it stops at the last seq, and the next message stays
/// readable from the acked seq.
async fn acks_are_clipped_to_the_last_stored_seq(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let u = user("clip")?;
    assert_eq!(store.ack(&u, 5).await?, 0, "nothing stored: nothing to ack");
    assert_eq!(store.acked(&u).await?, 0);
    for k in 0..3 {
        store.append(&message(&[&u], &k.to_string(), None)?).await?;
    }
    assert_eq!(store.acked(&u).await?, 0, "the early ack hid nothing");
    assert_eq!(store.ack(&u, 1_000_000).await?, 3);
    assert_eq!(store.ack(&u, u64::MAX).await?, 3);
    assert_eq!(
        store.position(&u).await?,
        StreamPosition {
            last_seq: 3,
            acked_seq: 3
        }
    );
    let next = store.append(&message(&[&u], "3", None)?).await?;
    assert_eq!(seqs(&next), [4]);
    let acked = store.acked(&u).await?;
    assert_eq!(seqs(&store.read_after(&u, acked, 10).await?), [4]);
    Ok(())
}

/// `position` is `(0, 0)` for a user with nothing stored, and reports a
/// copy's seq as the last seq as soon as its append returned (a replay reads
/// up to it), with the acked seq of the last ack.
async fn position_follows_appends_and_acks(
    backend: &Backend<dyn MessageStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let u = user("position")?;
    assert_eq!(store.position(&u).await?, StreamPosition::default());
    for k in 1..=3 {
        let stored = store.append(&message(&[&u], "0", None)?).await?;
        assert_eq!(seqs(&stored), [k]);
        assert_eq!(store.position(&u).await?.last_seq, k, "after append {k}");
        // Another handle (another client) sees it too.
        let other = backend.handle().await?;
        assert_eq!(other.position(&u).await?.last_seq, k);
    }
    store.ack(&u, 2).await?;
    let position = store.position(&u).await?;
    assert_eq!((position.last_seq, position.acked_seq), (3, 2));
    assert_eq!(store.acked(&u).await?, 2);
    Ok(())
}

/// `ping` succeeds while the backend answers.
async fn ping_answers(backend: &Backend<dyn MessageStore>) -> anyhow::Result<()> {
    backend.handle().await?.ping().await?;
    Ok(())
}
