//! What a client's task and its handle share: the counters behind
//! [`Stats`], the last seq received and the last one the application took,
//! the topic book, and the commands the handle sends the task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use edgepush_core::{Seq, TopicName};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::topics::TopicBook;

/// Counters of a client's life, read with [`crate::ClientHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// New messages passed to the application.
    pub messages: u64,
    /// Messages dropped because their seq was not above the last one seen
    /// (a replay overlapping live delivery, or at-least-once redelivery).
    pub duplicates_dropped: u64,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    /// Messages that skipped seqs (which the server promises never happens);
    /// each one caused a reconnect to get the missing ones replayed.
    pub gaps: u64,
    /// Frames that broke the protocol; each one caused a reconnect.
    pub malformed: u64,
    /// Attempts that did not reach the node's `hello` (refused, unreachable,
    /// timed out, HTTP error).
    pub connect_failures: u64,
    /// Ack frames sent.
    pub acks_sent: u64,
    /// New topic messages passed to the application.
    pub topic_messages: u64,
    /// Topic messages dropped because their seq was not above the topic's
    /// last one seen.
    pub topic_duplicates_dropped: u64,
}

/// The atomics behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) acks_sent: AtomicU64,
    pub(crate) topic_messages: AtomicU64,
    pub(crate) topic_duplicates_dropped: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            messages: get(&self.messages),
            duplicates_dropped: get(&self.duplicates_dropped),
            reconnects: get(&self.reconnects),
            gaps: get(&self.gaps),
            malformed: get(&self.malformed),
            connect_failures: get(&self.connect_failures),
            acks_sent: get(&self.acks_sent),
            topic_messages: get(&self.topic_messages),
            topic_duplicates_dropped: get(&self.topic_duplicates_dropped),
        }
    }
}

/// State shared by the task and the handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    /// The highest seq the task has received (what it resumes after).
    last_seq: Mutex<Option<Seq>>,
    /// The highest seq the application has taken from the stream (what
    /// may be acked), and how many messages it has taken in all.
    taken: Mutex<(Option<Seq>, u64)>,
    /// Wakes the task when the application takes a message, so it can ack.
    pub(crate) taken_notify: Notify,
    /// Stops the task.
    pub(crate) cancel: CancellationToken,
    /// Every topic of the client and its last seq; the task keeps it.
    pub(crate) book: Mutex<TopicBook>,
}

impl Shared {
    /// Fresh state around the client's topic book.
    pub(crate) fn with_book(book: TopicBook) -> Self {
        Self {
            book: Mutex::new(book),
            ..Self::default()
        }
    }

    pub(crate) fn set_last_seq(&self, seq: Seq) {
        *self.last_seq.lock().unwrap_or_else(PoisonError::into_inner) = Some(seq);
    }

    pub(crate) fn last_seq(&self) -> Option<Seq> {
        *self.last_seq.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The topic book, locked.
    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, TopicBook> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The highest seq taken by the application, and the count taken.
    pub(crate) fn taken(&self) -> (Option<Seq>, u64) {
        *self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn mark_taken(&self, seq: Seq) {
        {
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            taken.0 = Some(taken.0.map_or(seq, |t| t.max(seq)));
            taken.1 = taken.1.saturating_add(1);
        }
        self.taken_notify.notify_one();
    }
}

/// What the handle asks of the client's task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Subscribe to a topic.
    Subscribe(TopicName, Option<Seq>, Option<String>),
    /// Unsubscribe from a topic.
    Unsubscribe(TopicName),
    /// Publish to a topic.
    Publish(TopicName, Box<RawValue>, Option<String>),
}
