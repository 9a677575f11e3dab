//! The managed edge's bookkeeping: what the client does differently when
//! its endpoint is an API Gateway WebSocket API instead of an edge node
//! ([`ClientConfig::managed`](crate::ClientConfig::managed)).
//!
//! There the server cannot speak first, and live messages are posted one
//! HTTP call each, so they may overtake each other or a replay. So the
//! client:
//!
//! - sends `{"type":"resume","after":<last seq>}` right after the upgrade
//!   (without `after` on a first connection that knows nothing: the server
//!   starts after the user's ack), and waits for `hello`;
//! - holds a seq that comes early until the ones before it arrive; when the
//!   gap is still open after [`ManagedEdge::gap_wait`] (a post was lost,
//!   not just late) it asks for it: `resume` after its last contiguous seq;
//! - on `resumed` with `more`, asks again after its last seq, until the
//!   replay is done;
//! - until the first `resumed` of a connection that started without a seq,
//!   holds everything: its `after` is where the stream starts, so a live
//!   message that overtook the replay is not taken for the start;
//! - pings every [`ManagedEdge::ping_every`] (API Gateway closes a
//!   connection idle for 10 minutes; the `pong` proves the path alive);
//! - treats `{"type":"close","code":C}` as a close frame with code `C`.
//!
//! The state machine is here, without the socket, so it is tested alone.

use std::collections::BTreeMap;
use std::time::Duration;

use edgepush_core::Seq;
use edgepush_core::protocol::MsgFrame;
use tokio::time::Instant;

/// Most early messages held while waiting for a gap to close; beyond, the
/// highest are dropped (the gap request replays them).
const MAX_HELD: usize = 10_000;

/// Settings of the managed-edge mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedEdge {
    /// How long a seq that came early waits for the ones before it (a live
    /// post that is merely late) before the client asks for the gap.
    pub gap_wait: Duration,
    /// How often the client sends `{"type":"ping"}`.
    pub ping_every: Duration,
    /// How long a `resume` may go unanswered (no `resumed`, no message)
    /// before the client gives the connection up and reconnects.
    pub answer_timeout: Duration,
}

impl Default for ManagedEdge {
    /// Gap wait 1 s, ping every 5 minutes, answer within 30 s.
    fn default() -> Self {
        Self {
            gap_wait: Duration::from_secs(1),
            ping_every: Duration::from_secs(5 * 60),
            answer_timeout: Duration::from_secs(30),
        }
    }
}

/// What the connection must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send `{"type":"resume","after":N}` (`None`: without `after`).
    Resume(Option<Seq>),
    /// Send `{"type":"ping"}`.
    Ping,
    /// A `resume` went unanswered: reconnect.
    Unanswered,
}

/// One managed-edge connection's state.
#[derive(Debug)]
pub(crate) struct ManagedState {
    settings: ManagedEdge,
    /// Messages that came early, by seq.
    held: BTreeMap<Seq, MsgFrame>,
    /// When to ask for the open gap.
    gap_at: Option<Instant>,
    /// A `resume` is out; reconnect if nothing answers by then.
    answer_by: Option<Instant>,
    /// When to ping next.
    ping_at: Instant,
}

/// What a message came to.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// Messages to deliver now, in seq order.
    pub(crate) deliver: Vec<MsgFrame>,
    /// Messages dropped as duplicates.
    pub(crate) duplicates: u64,
}

impl ManagedState {
    /// A connection whose first `resume` was just sent.
    pub(crate) fn new(settings: ManagedEdge, now: Instant) -> Self {
        Self {
            settings,
            held: BTreeMap::new(),
            gap_at: None,
            answer_by: Some(now + settings.answer_timeout),
            ping_at: now + settings.ping_every,
        }
    }

    /// The next instant something is due.
    pub(crate) fn next_deadline(&self) -> Instant {
        [self.gap_at, self.answer_by]
            .into_iter()
            .flatten()
            .fold(self.ping_at, Instant::min)
    }

    /// What is due at `now`, given the last contiguous seq `last`.
    pub(crate) fn due(&mut self, now: Instant, last: Option<Seq>) -> Option<Due> {
        if self.answer_by.is_some_and(|at| at <= now) {
            return Some(Due::Unanswered);
        }
        if self.gap_at.is_some_and(|at| at <= now) {
            self.gap_at = None;
            if !self.held.is_empty() && last.is_some() {
                self.answer_by = Some(now + self.settings.answer_timeout);
                return Some(Due::Resume(last));
            }
        }
        if self.ping_at <= now {
            self.ping_at = now + self.settings.ping_every;
            return Some(Due::Ping);
        }
        None
    }

    /// A `msg` frame, with `last` the last contiguous seq (`None`: not
    /// known until the first `resumed`). Delivering what it returns moves
    /// `last` to the last seq delivered.
    pub(crate) fn on_msg(&mut self, last: Option<Seq>, msg: MsgFrame, now: Instant) -> Taken {
        if let Some(answer_by) = &mut self.answer_by {
            // A replay in progress: the answer is coming.
            *answer_by = now + self.settings.answer_timeout;
        }
        match last {
            Some(last) if msg.seq <= last => Taken {
                deliver: Vec::new(),
                duplicates: 1,
            },
            _ => {
                if self.held.len() < MAX_HELD || self.held.contains_key(&msg.seq) {
                    self.held.insert(msg.seq, msg);
                }
                self.release(last, now)
            }
        }
    }

    /// A `resumed` frame: the replay after `after` was posted up to
    /// `through`. Answers the `resume` to send next (`more`), if any, and
    /// the messages it lets through (the first `resumed` names the start).
    pub(crate) fn on_resumed(
        &mut self,
        last: Option<Seq>,
        after: Seq,
        more: bool,
        now: Instant,
    ) -> (Option<Seq>, Taken) {
        self.answer_by = None;
        let start = last.or(Some(after));
        let taken = self.release(start, now);
        let last = taken.deliver.last().map(|m| m.seq).or(start);
        if more {
            self.answer_by = Some(now + self.settings.answer_timeout);
            self.gap_at = None;
            return (last, taken);
        }
        (None, taken)
    }

    /// Takes the held messages that follow `last` without a gap; arms or
    /// disarms the gap timer.
    fn release(&mut self, last: Option<Seq>, now: Instant) -> Taken {
        let mut taken = Taken::default();
        let Some(mut last) = last else {
            return taken;
        };
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq <= last {
                entry.remove();
                taken.duplicates += 1;
            } else if seq == last + 1 {
                taken.deliver.push(entry.remove());
                last = seq;
            } else {
                break;
            }
        }
        if self.held.is_empty() {
            self.gap_at = None;
        } else if self.gap_at.is_none() && self.answer_by.is_none() {
            self.gap_at = Some(now + self.settings.gap_wait);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: Seq) -> MsgFrame {
        MsgFrame {
            seq,
            id: edgepush_core::MessageId::new(format!("m{seq}")).unwrap(),
            data: serde_json::json!(1),
            topic: None,
        }
    }

    fn seqs(taken: &Taken) -> Vec<Seq> {
        taken.deliver.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn early_seqs_wait_for_the_gap_then_a_resume_asks_for_it() {
        let t0 = Instant::now();
        let settings = ManagedEdge::default();
        let mut state = ManagedState::new(settings, t0);
        // The first resumed names the start; nothing was replayed.
        let (again, taken) = state.on_resumed(Some(4), 4, false, t0);
        assert_eq!((again, seqs(&taken)), (None, vec![]));

        assert_eq!(seqs(&state.on_msg(Some(4), msg(6), t0)), Vec::<Seq>::new());
        // Late, not lost: 5 closes the gap.
        assert_eq!(seqs(&state.on_msg(Some(4), msg(5), t0)), vec![5, 6]);
        assert_eq!(state.on_msg(Some(6), msg(6), t0).duplicates, 1);

        // Lost: 8 waits, then the gap is asked for after 6.
        assert!(state.on_msg(Some(6), msg(8), t0).deliver.is_empty());
        assert_eq!(state.due(t0, Some(6)), None);
        let later = t0 + settings.gap_wait;
        assert_eq!(state.due(later, Some(6)), Some(Due::Resume(Some(6))));
        assert_eq!(state.due(later, Some(6)), None, "asked once");
        // The replay: 7, 8 again, then resumed.
        assert_eq!(seqs(&state.on_msg(Some(6), msg(7), later)), vec![7, 8]);
        assert_eq!(state.on_msg(Some(8), msg(8), later).duplicates, 1);
        let (again, _) = state.on_resumed(Some(8), 6, false, later);
        assert_eq!(again, None);
        assert_eq!(state.due(later + settings.answer_timeout, Some(8)), None);
    }

    #[test]
    fn without_a_start_everything_waits_for_the_first_resumed() {
        let t0 = Instant::now();
        let mut state = ManagedState::new(ManagedEdge::default(), t0);
        // A live message overtook the replay of 11..=12.
        assert!(state.on_msg(None, msg(13), t0).deliver.is_empty());
        assert!(state.on_msg(None, msg(11), t0).deliver.is_empty());
        assert!(state.on_msg(None, msg(12), t0).deliver.is_empty());
        let (again, taken) = state.on_resumed(None, 10, false, t0);
        assert_eq!((again, seqs(&taken)), (None, vec![11, 12, 13]));
    }

    #[test]
    fn more_asks_again_after_the_last_seq() {
        let t0 = Instant::now();
        let mut state = ManagedState::new(ManagedEdge::default(), t0);
        assert_eq!(seqs(&state.on_msg(Some(0), msg(1), t0)), vec![1]);
        let (again, _) = state.on_resumed(Some(1), 0, true, t0);
        assert_eq!(again, Some(1));
    }

    #[test]
    fn an_unanswered_resume_gives_the_connection_up_and_pings_come_on_time() {
        let t0 = Instant::now();
        let settings = ManagedEdge::default();
        let mut state = ManagedState::new(settings, t0);
        assert_eq!(state.next_deadline(), t0 + settings.answer_timeout);
        assert_eq!(
            state.due(t0 + settings.answer_timeout, None),
            Some(Due::Unanswered)
        );
        let mut state = ManagedState::new(settings, t0);
        state.on_resumed(Some(0), 0, false, t0);
        assert_eq!(state.next_deadline(), t0 + settings.ping_every);
        assert_eq!(
            state.due(t0 + settings.ping_every, Some(0)),
            Some(Due::Ping)
        );
    }
}
