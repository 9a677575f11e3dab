//! The managed edge keeps the edge nodes' promise: real API Gateway event
//! fixtures, real Redis and MongoDB, the real management API client posting
//! to the testkit's stand-in (a real HTTP server), and the real dispatcher
//! posting live messages through it. What the stand-in took for a
//! connection is what its client would have received, in that order.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::*;
use edgepush_connections::Settings;
use edgepush_core::MessageStore;
use edgepush_testkit::user;
use edgepush_testkit::wait::{self, Check};

/// A client that was offline for 50 messages resumes after the last seq it
/// holds (`?after=` on the connect URL) and receives exactly those, in
/// order, one page per `resume`, then live ones; another connection asks
/// with `after` in its `resume` frame.
#[tokio::test]
async fn offline_for_50_messages_then_resume_gets_exactly_those_in_order_then_live_ones()
-> Result<()> {
    let env = Env::with_settings(
        "resume_50",
        Settings {
            replay_page: 20,
            ..Settings::default()
        },
    )
    .await?;
    // The client held 1..=5, then went offline for 50 more.
    env.store("dana", 5).await?;
    let missed = env.store("dana", 50).await?;
    assert_eq!(missed.first().map(|m| m.seq), Some(6));

    let conn = "DanaC0nn-1=";
    env.admit(conn, "dana", None, Some(5)).await?;
    // The client speaks first; every `resumed` with `more` makes it ask
    // again after the last seq it got.
    let mut after = None;
    loop {
        let frame = match after {
            None => r#"{"type":"resume"}"#.to_owned(),
            Some(after) => format!(r#"{{"type":"resume","after":{after}}}"#),
        };
        env.send(conn, "dana", &frame).await?;
        match env.seen(conn).last() {
            Some(Seen::Resumed {
                through,
                more: true,
                ..
            }) => after = Some(*through),
            Some(Seen::Resumed { more: false, .. }) => break,
            other => anyhow::bail!("a resume ended with {other:?}"),
        }
    }
    // Live messages after the replay.
    let live = env.store("dana", 3).await?;
    let report = env.dispatch(&live).await?;
    assert_eq!(report.delivered, 3, "{report:?}");

    let seen = env.seen(conn);
    assert_eq!(
        seen[0],
        Seen::Hello {
            user: "dana".into()
        }
    );
    assert_eq!(msgs(&seen), (6..=58).collect::<Vec<_>>(), "{seen:?}");
    let resumed: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Resumed { .. }))
        .collect();
    assert_eq!(
        resumed,
        [
            &Seen::Resumed {
                after: 5,
                through: 25,
                more: true
            },
            &Seen::Resumed {
                after: 25,
                through: 45,
                more: true
            },
            &Seen::Resumed {
                after: 45,
                through: 55,
                more: false
            },
        ]
    );

    // A second connection names its position in the frame (no `?after=`).
    let other = "DanaC0nn-2=";
    env.admit(other, "dana", None, None).await?;
    env.send(other, "dana", r#"{"type":"resume","after":50}"#)
        .await?;
    assert_eq!(msgs(&env.seen(other)), (51..=58).collect::<Vec<_>>());
    env.cleanup().await
}

/// Two dispatches racing for one user: whatever order their posts reach
/// the client in, it shows them in seq order; and when one of them is lost
/// (API Gateway failing that post until dispatch gives up), the client's
/// gap request (`resume` after its last contiguous seq) repairs it.
#[tokio::test]
async fn racing_dispatches_end_in_order_or_are_repaired_by_the_gap_request() -> Result<()> {
    let env = Env::new("resume_race").await?;
    let conn = "EveC0nn=";
    env.admit(conn, "eve", None, None).await?;
    env.send(conn, "eve", r#"{"type":"resume"}"#).await?;

    // The race lost by the earlier message: seq 2's post lands first.
    let m = env.store("eve", 2).await?;
    env.dispatch(&m[1..]).await?;
    env.dispatch(&m[..1]).await?;
    assert_eq!(msgs(&env.seen(conn)), [2, 1], "the adverse order happened");
    assert_eq!(as_a_client_shows(0, &env.seen(conn)), (vec![1, 2], vec![]));

    // A real race: both at once, in any order.
    let m = env.store("eve", 2).await?;
    let (a, b) = tokio::join!(env.dispatch(&m[..1]), env.dispatch(&m[1..]));
    assert_eq!((a?.delivered, b?.delivered), (1, 1));
    assert_eq!(
        as_a_client_shows(0, &env.seen(conn)),
        (vec![1, 2, 3, 4], vec![])
    );

    // A lost post: API Gateway fails seq 5 until dispatch gives up; seq 6
    // arrives. The client holds 6 and sees the gap after 4.
    let m = env.store("eve", 2).await?;
    env.api.fail_posts_containing(r#""seq":5,"#);
    let lost = env.dispatch(&m[..1]).await?;
    assert_eq!(lost.delivered, 0, "{lost:?}");
    env.dispatch(&m[1..]).await?;
    let (shown, held) = as_a_client_shows(0, &env.seen(conn));
    assert_eq!((shown.last(), held.as_slice()), (Some(&4), &[6][..]));
    // Its gap request, after the last contiguous seq.
    env.api.heal();
    env.send(conn, "eve", r#"{"type":"resume","after":4}"#)
        .await?;
    let seen = env.seen(conn);
    assert_eq!(
        as_a_client_shows(0, &seen),
        ((1..=6).collect::<Vec<_>>(), vec![]),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&Seen::Resumed {
            after: 4,
            through: 6,
            more: false
        })
    );
    env.cleanup().await
}

/// Acks are coalesced per connection and clipped to what was stored: a
/// bogus ack cannot make a later connection skip its own future messages.
#[tokio::test]
async fn a_bogus_ack_is_clipped_to_what_was_stored() -> Result<()> {
    let env = Env::new("resume_ack").await?;
    let fran = user("fran");
    env.store("fran", 10).await?;
    let conn = "FranC0nn=";
    env.admit(conn, "fran", None, None).await?;

    // The first ack of an interval is written.
    env.send(conn, "fran", r#"{"type":"ack","seq":3}"#).await?;
    assert_eq!(env.messages.acked(&fran).await?, 3);
    // A flood within the interval: coalesced, nothing written.
    for seq in [4, 1_000_000, 5] {
        let frame = format!(r#"{{"type":"ack","seq":{seq}}}"#);
        env.send(conn, "fran", &frame).await?;
    }
    assert_eq!(env.messages.acked(&fran).await?, 3, "coalesced");
    // `$disconnect` writes the pending one, the bogus seq, clipped.
    ensure_status(&env.disconnect(conn, "fran").await?, 200, "$disconnect")?;
    assert_eq!(
        env.messages.acked(&fran).await?,
        10,
        "clipped to the last stored seq"
    );
    // A message stored after the clipped ack is replayed to a connection
    // that resumes from the ack.
    env.store("fran", 1).await?;
    let next = "FranC0nn-2=";
    env.admit(next, "fran", None, None).await?;
    env.send(next, "fran", r#"{"type":"resume"}"#).await?;
    assert_eq!(msgs(&env.seen(next)), [11]);

    // A bogus ack on its own, written at once (a fresh connection's gate).
    let third = "FranC0nn-3=";
    env.admit(third, "fran", None, None).await?;
    env.send(third, "fran", r#"{"type":"ack","seq":99999}"#)
        .await?;
    assert_eq!(env.messages.acked(&fran).await?, 11);
    env.cleanup().await
}

/// `EDGEPUSH_MAX_CONNECTIONS_PER_USER` holds on the managed edge: the
/// connection over it is refused with 429 before the upgrade; one that
/// ends gives its place back.
#[tokio::test]
async fn the_per_user_connection_cap_holds() -> Result<()> {
    let env = Env::with_settings(
        "resume_cap",
        Settings {
            max_connections_per_user: 2,
            ..Settings::default()
        },
    )
    .await?;
    for conn in ["GusC0nn-1=", "GusC0nn-2="] {
        env.admit(conn, "gus", None, None).await?;
    }
    let refused = env.connect("GusC0nn-3=", "gus", None, None).await?;
    ensure_status(&refused, 429, "third connection")?;
    assert_eq!(error_code(&refused), "too_many_connections");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(
        env.record("GusC0nn-3=").await?.is_none(),
        "nothing recorded for a refused connection"
    );
    // A retried `$connect` of an admitted connection is not counted twice.
    env.admit("GusC0nn-2=", "gus", None, None).await?;
    // Other users are not affected.
    env.admit("HalC0nn-1=", "hal", None, None).await?;
    // A connection that ends gives its place back.
    ensure_status(
        &env.disconnect("GusC0nn-1=", "gus").await?,
        200,
        "$disconnect",
    )?;
    env.admit("GusC0nn-3=", "gus", None, None).await?;
    env.cleanup().await
}

/// A token that expires while connected ends the connection: at its next
/// frame, or by the scheduled sweep when it stays quiet. Each time the
/// client gets `{"type":"close","code":4001}`, the connection is closed
/// through the management API (DELETE), and its route and record go. A
/// connection past API Gateway's lifetime whose `$disconnect` never came is
/// forgotten by the sweep.
#[tokio::test]
async fn a_token_that_expires_while_connected_ends_the_connection() -> Result<()> {
    let env = Env::new("resume_expiry").await?;
    let now_secs = || u64::try_from(now_ms() / 1000).unwrap_or_default();
    let exp = now_secs() + 2;
    for conn in ["IdaC0nn-quiet=", "IdaC0nn-talks="] {
        env.admit(conn, "ida", Some(exp), None).await?;
        env.send(conn, "ida", r#"{"type":"resume"}"#).await?;
    }
    let forever = "IdaC0nn-noexp=";
    env.admit(forever, "ida", None, None).await?;
    assert_eq!(env.routes_of("ida").await?.len(), 2);

    // Before the expiry the sweep finds nothing.
    let report = env.connections.sweep(now_ms(), None).await?;
    assert_eq!(report, Default::default());

    // The token's exp passes (the wait follows the clock).
    wait::until("the token's exp to pass", wait::stall(), || async {
        let now = now_secs();
        Ok(if now > exp {
            Check::Done(())
        } else {
            Check::Waiting(now)
        })
    })
    .await?;
    // A frame from a connection whose token expired closes it.
    env.send("IdaC0nn-talks=", "ida", r#"{"type":"ping"}"#)
        .await?;
    let talks = env.seen("IdaC0nn-talks=");
    assert_eq!(talks[talks.len() - 2..], [Seen::Close(4001), Seen::Deleted]);
    assert!(!talks.contains(&Seen::Pong));
    // The quiet one is closed by the sweep.
    let report = env.connections.sweep(now_ms(), None).await?;
    assert_eq!(report.expired_closed, 1, "{report:?}");
    let quiet = env.seen("IdaC0nn-quiet=");
    assert_eq!(quiet[quiet.len() - 2..], [Seen::Close(4001), Seen::Deleted]);
    assert!(env.routes_of("ida").await?.is_empty(), "routes removed");
    for conn in ["IdaC0nn-quiet=", "IdaC0nn-talks="] {
        ensure!(
            env.record(conn).await?.is_none(),
            "{conn}: record forgotten"
        );
    }

    // Past API Gateway's 2-hour lifetime the one without exp is forgotten
    // (its `$disconnect` never came).
    let later = now_ms() + i64::try_from(Duration::from_secs(3 * 3600).as_millis())?;
    let report = env.connections.sweep(later, None).await?;
    assert_eq!(
        (report.stale_forgotten, report.expired_closed),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(env.seen(forever), [Seen::Deleted]);
    assert!(env.record(forever).await?.is_none());
    env.cleanup().await
}
