//! [`AppendBatcher`]: group commit of user-message appends.
//!
//! Every append of a [`MongoMessageStore`](crate::MongoMessageStore) (and of
//! its clones) is handed to one batcher task, which stores the copies of
//! all the requests waiting at that moment together, in rounds. A round
//! costs a few round trips however many copies it carries, where an append
//! used to cost 2–3 per copy:
//!
//! 1. the base seq of each user in the round: the last seq this batcher
//!    stored for the user if that is recent (see *Known seqs*), else the
//!    user's counter, read by `_id` (the reads run concurrently, bounded by
//!    [`append_concurrency`](crate::MongoConfig::append_concurrency): one
//!    `find` per user, because FerretDB pushes only `_id` equality down to
//!    its backend and would scan the whole collection for an `$in`);
//! 2. **one** unordered `insert` of every copy of the round, each at its
//!    user's base + 1;
//! 3. the counters, moved with `$max` by unordered `update` commands of
//!    one statement per user (one command per 16 users: FerretDB v1 holds
//!    a connection per statement until its command ends, see
//!    [`crate::counters`]). When depends on the server ([`Counters`]):
//!    - **before answering** ([`Counters::BeforeAnswer`], MongoDB): they
//!      run while the next round's reads and insert go on (one counter
//!      update in flight at a time), and a request is answered once the
//!      counters of all its copies moved;
//!    - **in the background** ([`Counters::Lagging`], FerretDB): a request
//!      is answered once its copies are stored; a user's counter is moved
//!      once the log is `max_lag` copies past it, without anyone waiting.
//!      See *The counter off the hot path*.
//!
//! With 32 single-recipient requests in flight to users this batcher
//! stored for recently, a round is one insert for 32 copies (plus, on
//! MongoDB, two update commands), instead of 64–96 round trips. On a server
//! where each operation costs far more CPU than a round trip (FerretDB v1:
//! ~0.6 ms per read, ~0.8 ms per counter statement, ~0.1 ms per batched
//! insert) what is left is the insert, and the reads for users the batcher
//! has no fresh seq for.
//!
//! # Rounds in flight
//!
//! Up to [`append_rounds`](crate::MongoConfig::append_rounds) rounds run
//! at once (two by default), **each on users no other round in flight
//! holds**. A round starts whenever none is in flight; another joins it
//! only when it is full ([`append_batch`](crate::MongoConfig::append_batch)
//! copies of free users are waiting): a smaller one would cost an
//! `insert` for copies that can wait and make the next round bigger. So
//! light loads (32 single-recipient requests in flight: rounds of ~13
//! copies) run one round at a time as before, and large fan-outs (100
//! recipients per request: thousands of copies waiting) keep the server's
//! cores busy with two inserts. Measured by hand (`edgepush-dev` on
//! FerretDB + PostgreSQL, 100 recipients per request, 32 in flight, users
//! warm): 153 and 157 against 108 and 104 msg/s with one round at a
//! time; with one recipient per request no change (5,555 and 5,271
//! against 5,569 and 5,601 msg/s). A round's reads and insert run as a
//! future that owns what it needs (`RoundIo`); the task applies its
//! outcome (`RoundDone`) to its state when it ends, so every change of
//! state stays in the one task.
//!
//! # Why seqs stay gap-free
//!
//! The rule of [`crate::log`] holds copy by copy: a copy is inserted at
//! `base + 1` where `base` is a seq known to be stored (or 0), under the
//! unique `_id` `"<user>:<seq>"`; counters only ever move to seqs that are
//! stored. What batching adds is one constraint: **a round holds at most
//! one copy per user, and a user is in one round in flight at a time**
//! (so the base a round takes for a user is never one another round is
//! about to insert above). The insert is unordered (one refused document does
//! not stop the others), so with two copies of one user at `s+1` and `s+2`
//! a refusal of the first would leave the second stored above a hole. With
//! one copy per user and round, a refusal leaves nothing above it; further
//! copies of that user wait for the next round, whose base is the seq just
//! stored. Hot users therefore cost a round per message, shared with every
//! other user's copies of that round.
//!
//! A refused copy is handled as in [`crate::log`]: a duplicate on the seq
//! means another writer (another process, or a writer that crashed before
//! moving the counter) took it: the copy goes back to the queue and its
//! user's next base is read as the highest of the counter and the highest
//! stored seq. A duplicate on the idempotency index means this request's
//! copy exists: it is read and returned, and (with
//! [`Counters::BeforeAnswer`]) the counter is moved up to it (its writer
//! may have crashed before doing so). After
//! [`max_seq_attempts`](crate::MongoConfig::max_seq_attempts) refusals the
//! request fails with [`StoreError::Contention`].
//!
//! # Crash safety
//!
//! A crash of the process at any point leaves what a crash of the
//! one-copy path leaves, once per user: copies stored whose counter did not
//! move yet (the insert landed, the `update` did not). The next writer of
//! such a user meets the stored copy on the seq and continues after it;
//! an idempotent retry of the request finds its copies and moves the
//! counters; the retention sweep moves the counter before deleting. With
//! [`Counters::BeforeAnswer`] no request was answered for a copy whose
//! counter had not moved, so nothing acknowledged to a caller depends on
//! the repair; with [`Counters::Lagging`] readers never trust the counter
//! as the end of the log, so a lagging one is the normal case. A round that fails as a
//! whole (the server unreachable, a write concern error) fails every
//! request in it: some of its copies may be stored, and the caller's retry
//! with the same idempotency key finds them.
//!
//! A request whose caller gave up (a dropped future, a timed-out Lambda)
//! is still completed by the batcher, counters included (with
//! [`Counters::BeforeAnswer`]), so dropping an append never leaves a
//! counter behind that readers trust.
//!
//! # Known seqs
//!
//! The batcher remembers, per user, the last seq it stored, for
//! [`KNOWN_FOR`] at most (and a quarter of the retention, if shorter); a
//! round uses it instead of reading the counter. A remembered seq may be
//! stale (another process stored after it): the insert then meets a
//! duplicate seq and the user's base is read again, never skipped. It can
//! never point at a seq retention deleted: everything stored after it was
//! stored less than a quarter of the retention ago, so is not expired; and
//! this store forgets all it remembers whenever its own sweep runs.
//!
//! # The counter off the hot path
//!
//! Readers need the end of a user's log: `position` (an edge node's replay
//! stops there) and this batcher's base for a user it has no fresh seq
//! for. With [`Counters::BeforeAnswer`] the counter is that end once an
//! append returned, one `_id` read. With [`Counters::Lagging`] the counter
//! is a lower bound and the end is found from it by reads of `_id`
//! ([`SeqLog::stored_end`]: the counter's next seq, then doubling steps and
//! a bisection; one read when the counter is exact, about eleven at the
//! largest lag). That search is sound only if every seq between the
//! counter and the end is stored: seqs are handed out without gaps, so it
//! holds as long as nothing above the counter was ever deleted. This
//! crate's retention sweep moves the counter up to each seq before
//! deleting it, so it holds wherever the sweep is the only deleter
//! (FerretDB). A TTL monitor (MongoDB) deletes without moving counters: a
//! lagging counter could then point below a deleted run, and the next seq
//! would be handed out again; there the counter moves before answering.
//! On MongoDB the statement is cheap; on FerretDB it was the largest cost
//! per copy (a statement of ~0.8 ms of server CPU per user per round).
//!
//! A counter moved in the background can fail or be lost in a crash: the
//! log is then further past it, which costs the next reader a few more
//! reads and nothing else; an ack (which reads the end anyway) and the
//! sweep move it too. A process about to exit calls
//! [`MessageStore::settle`](edgepush_core::MessageStore::settle), which
//! moves every counter this batcher left lagging and returns once that is
//! written: a runtime that stops with `main` would not let the task do it
//! when the store's last handle is dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use edgepush_core::{MessageId, NewMessage, Seq, StoreError, StoredMessage, UserId};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, stream};
use mongodb::bson::Document;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::counters::{bump_counters, copy_error};
use crate::error::DuplicateOf;
use crate::log::{Inserted, SeqLog};
use crate::schema::{CopyTemplate, message_from_doc, seq_to_bson};

/// How long a seq this batcher stored stands in for the user's counter
/// (and, with [`Counters::Lagging`], how long a user's counter may lag
/// after its last append here before it is moved).
pub(crate) const KNOWN_FOR: Duration = Duration::from_secs(30);
/// Requests waiting to enter the batcher, at most; appends wait beyond.
const QUEUE: usize = 4096;
/// Longest pause before a copy refused on its seq tries again.
const MAX_BACKOFF_MS: u64 = 50;
/// How often an idle batcher looks whether lagging counters can move.
const MOVE_RECHECK: Duration = Duration::from_millis(20);

/// How the batcher works, from the store's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    /// Copies in one round, at most.
    pub(crate) max_copies: usize,
    /// Rounds in flight at once, at most (each on users the others do not
    /// hold).
    pub(crate) rounds: usize,
    /// Concurrent reads (counters, highest seqs, existing copies).
    pub(crate) concurrency: usize,
    /// Refusals of one copy before its request fails with `Contention`.
    pub(crate) max_attempts: u32,
    /// How long a stored seq stands in for the counter.
    pub(crate) known_for: Duration,
    /// When the users' counters move: see [`Counters`].
    pub(crate) counters: Counters,
}

/// When a round moves the counters of its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counters {
    /// Before its requests are answered: the counter is the end of the log
    /// for every reader. Needed where a TTL monitor deletes expired copies
    /// without moving the counter (MongoDB).
    BeforeAnswer,
    /// In the background, once a user's log is `max_lag` past the counter
    /// this batcher last wrote or read: the counter is a lower bound, and
    /// readers find the end with [`SeqLog::stored_end`]. Sound where
    /// retention is this crate's sweep (FerretDB), which moves a counter
    /// before deleting below it; see *The counter off the hot path*.
    Lagging {
        /// Stored copies past the counter before it is moved.
        max_lag: u64,
    },
}

/// The handle appends go through; the task stops when the last handle
/// is dropped, after finishing what it holds.
#[derive(Debug)]
pub(crate) struct AppendBatcher {
    jobs: mpsc::Sender<Command>,
}

/// What the task is asked to do.
enum Command {
    /// Store a request's copies.
    Append(Job),
    /// Forget every remembered seq (this store's sweep is about to delete).
    Forget(oneshot::Sender<()>),
    /// Once the appends in hand are done, leave every counter exact and
    /// answer when that is written (the process is about to exit).
    Settle(oneshot::Sender<()>),
}

impl AppendBatcher {
    /// Starts the task (inside a tokio runtime) on `log`.
    pub(crate) fn spawn(log: Arc<SeqLog>, settings: BatchSettings) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = Task {
            log,
            settings,
            rx,
            open: true,
            jobs: HashMap::new(),
            next_job: 0,
            queue: VecDeque::new(),
            busy: HashSet::new(),
            known: HashMap::new(),
            pruned: Instant::now(),
            stale: HashMap::new(),
            moving: None,
            to_move: HashMap::new(),
            settling: Vec::new(),
        };
        tokio::spawn(task.run());
        Self { jobs: tx }
    }

    /// Stores one copy of `msg` per recipient (see the module docs), or
    /// returns the copies an earlier or concurrent identical request stored;
    /// in the order of `msg.to`.
    pub(crate) async fn append(&self, msg: &NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        if msg.to.is_empty() {
            return Ok(Vec::new());
        }
        let id = msg.message_id();
        let entry = Arc::new(Entry {
            idem: crate::schema::idem_value(msg.idempotency_key.as_deref(), &id),
            id,
            data: Arc::clone(&msg.data),
            source: msg.source.clone(),
            created_at_ms: edgepush_core::message::now_ms(),
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            entry,
            done: vec![None; msg.to.len()],
            to: msg.to.clone(),
            left: msg.to.len(),
            reply: Some(reply),
        };
        self.jobs
            .send(Command::Append(job))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Makes the task forget the seqs it remembers; returns once it has.
    pub(crate) async fn forget(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Command::Forget(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Returns once the appends in hand are done and every counter the
    /// task left lagging is moved (see [`Command::Settle`]).
    pub(crate) async fn settle(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Command::Settle(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the message store's append task stopped".into())
}

/// The fields every copy of one request shares.
struct Entry {
    id: MessageId,
    data: Arc<RawValue>,
    source: String,
    idem: String,
    created_at_ms: i64,
}

/// One append request.
struct Job {
    entry: Arc<Entry>,
    /// The recipients, in the caller's order.
    to: Vec<UserId>,
    /// Each recipient's copy, once stored (or found) and its counter moved.
    done: Vec<Option<StoredMessage>>,
    /// Copies not yet done.
    left: usize,
    /// Where the answer goes; `None` once answered.
    reply: Option<oneshot::Sender<Result<Vec<StoredMessage>, StoreError>>>,
}

impl Entry {
    fn template<'a>(&'a self, user: &'a UserId) -> CopyTemplate<'a> {
        CopyTemplate {
            user,
            id: &self.id,
            data: &self.data,
            source: &self.source,
            idem: &self.idem,
            created_at_ms: self.created_at_ms,
        }
    }
}

/// One copy waiting for a round.
#[derive(Debug, Clone, Copy)]
struct Queued {
    job: u64,
    idx: usize,
    /// Refusals so far.
    attempts: u32,
    /// Not tried again before this (back-off after a refusal).
    not_before: Option<Instant>,
}

/// A copy sent in a round's insert, at its seq.
struct Claim {
    copy: Queued,
    user: UserId,
    /// The user's counter as last seen.
    counter: Seq,
    /// The copy as answered once stored.
    message: StoredMessage,
}

/// A copy stored or found in a round, waiting for its counter.
struct Pending {
    job: u64,
    idx: usize,
    message: StoredMessage,
}

/// The counter update of a round, in flight.
type Finishing = JoinHandle<(Vec<Pending>, Vec<(UserId, Result<(), StoreError>)>)>;

/// A seq this batcher stored, and when.
#[derive(Debug, Clone, Copy)]
struct Known {
    seq: Seq,
    at: Instant,
    /// The user's counter as this batcher last read or wrote it (with
    /// [`Counters::Lagging`]: how far the counter lags behind `seq`).
    counter: Seq,
}

/// A user's base seq for a round, and its counter as last seen.
#[derive(Debug, Clone, Copy)]
struct Base {
    seq: Seq,
    counter: Seq,
}

/// A round's reads and insert, in flight: it owns what it needs, so that
/// the task goes on (and runs another round, on other users) meanwhile.
struct RoundIo {
    log: Arc<SeqLog>,
    /// Whether counters lag ([`Counters::Lagging`]): how a base is read.
    lagging: bool,
    /// Concurrent reads.
    concurrency: usize,
    /// The copies, one per user, each with its request's shared fields.
    picked: Vec<(Queued, UserId, Arc<Entry>)>,
    /// Bases this batcher knows without a read.
    known: HashMap<UserId, Base>,
    /// Users whose base is read, with what `stale` held for them.
    reads: Vec<(UserId, Option<Option<Seq>>)>,
}

/// What a round did, for the task to [`apply`](Task::apply).
struct RoundDone {
    /// The round's users, free for the next round once applied.
    users: Vec<UserId>,
    /// Users whose base was read: no longer stale.
    read: Vec<UserId>,
    /// Requests that failed before the insert (a base that could not be
    /// read, a seq that overflowed).
    failed: Vec<(u64, StoreError)>,
    /// The copies sent in the insert, in its order.
    claims: Vec<Claim>,
    /// Each document's outcome, or the error that failed the insert whole.
    outcome: Result<Vec<Result<Inserted, StoreError>>, StoreError>,
}

impl RoundIo {
    /// Reads the bases it lacks, and inserts each copy at its user's base
    /// + 1 with one command.
    async fn run(self) -> RoundDone {
        let RoundIo {
            log,
            lagging,
            concurrency,
            picked,
            known,
            reads,
        } = self;
        let read: Vec<(UserId, Result<Base, StoreError>)> = stream::iter(reads)
            .map(|(user, stale)| {
                let log = &log;
                async move {
                    let base = read_base(log, lagging, user.as_str(), stale).await;
                    (user, base)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut done = RoundDone {
            users: picked.iter().map(|(_, user, _)| user.clone()).collect(),
            read: Vec::with_capacity(read.len()),
            failed: Vec::new(),
            claims: Vec::with_capacity(picked.len()),
            outcome: Ok(Vec::new()),
        };
        let mut bases: HashMap<UserId, Result<Base, StoreError>> =
            known.into_iter().map(|(u, b)| (u, Ok(b))).collect();
        for (user, base) in read {
            if base.is_ok() {
                done.read.push(user.clone());
            }
            bases.insert(user, base);
        }
        let mut docs = Vec::with_capacity(picked.len());
        for (copy, user, entry) in picked {
            let (seq, counter) = match bases.get(&user) {
                Some(Ok(base)) => (base.seq.saturating_add(1), base.counter),
                Some(Err(e)) => {
                    done.failed.push((copy.job, copy_error(e)));
                    continue;
                }
                None => {
                    let e = StoreError::Backend(format!("no base seq for {user}"));
                    done.failed.push((copy.job, e));
                    continue;
                }
            };
            let Some(bson_seq) = seq_to_bson(seq) else {
                let e = StoreError::Backend(format!("seq of {user} overflowed"));
                done.failed.push((copy.job, e));
                continue;
            };
            let template = entry.template(&user);
            docs.push(template.to_doc(bson_seq));
            let message = template.stored(seq);
            done.claims.push(Claim {
                copy,
                user,
                counter,
                message,
            });
        }
        if !docs.is_empty() {
            done.outcome = log.insert_many(docs).await;
        }
        done
    }
}

/// The base seq of `user` read from the store: the counter (and the
/// highest stored seq, for a user whose counter lags; with
/// [`Counters::Lagging`] the end of the log found from the counter or
/// from the seq found taken). `stale` is what the task's `stale` holds for
/// the user.
async fn read_base(
    log: &SeqLog,
    lagging: bool,
    user: &str,
    stale: Option<Option<Seq>>,
) -> Result<Base, StoreError> {
    match (lagging, stale) {
        // The end of the log, found from a seq known to be stored (the
        // counter lags: moved with the copy).
        (true, Some(Some(taken))) => Ok(Base {
            seq: log.stored_end(user, taken).await?,
            counter: 0,
        }),
        (true, Some(None)) => {
            let counter = log.last_seq(user).await?;
            Ok(Base {
                seq: log.stored_end(user, counter).await?,
                counter,
            })
        }
        // Optimistic: the counter, which is the end of the log for a user
        // that is new or whose counter moved with its last copy; if it
        // lags, the insert meets the seq taken and the user comes back
        // stale.
        (true, None) | (false, None) => {
            let counter = log.last_seq(user).await?;
            Ok(Base {
                seq: counter,
                counter,
            })
        }
        (false, Some(_)) => {
            let counter = log.last_seq(user).await?;
            let seq = counter.max(log.highest_stored_seq(user).await?);
            Ok(Base { seq, counter })
        }
    }
}

struct Task {
    log: Arc<SeqLog>,
    settings: BatchSettings,
    rx: mpsc::Receiver<Command>,
    /// Whether `rx` may still deliver.
    open: bool,
    jobs: HashMap<u64, Job>,
    next_job: u64,
    /// Copies waiting, in arrival order.
    queue: VecDeque<Queued>,
    /// Users of the rounds in flight: a user is in one round at a time.
    busy: HashSet<UserId>,
    known: HashMap<UserId, Known>,
    /// When `known` was last pruned of old entries.
    pruned: Instant,
    /// Users whose counter is known to lag, with a seq found taken: their
    /// base is the highest of the counter and the highest stored seq (with
    /// [`Counters::Lagging`]: the end of the log found from that seq).
    stale: HashMap<UserId, Option<Seq>>,
    /// With [`Counters::Lagging`]: the counter update in flight, if any.
    moving: Option<JoinHandle<()>>,
    /// With [`Counters::Lagging`]: counters to move once `moving` is done.
    to_move: HashMap<UserId, Seq>,
    /// Callers of [`AppendBatcher::settle`], answered once the queue is
    /// empty and every counter moved.
    settling: Vec<oneshot::Sender<()>>,
}

impl Task {
    async fn run(mut self) {
        let mut finishing: Option<Finishing> = None;
        let mut rounds: FuturesUnordered<BoxFuture<'static, RoundDone>> = FuturesUnordered::new();
        let max_rounds = self.settings.rounds.max(1);
        loop {
            self.take_waiting();
            let now = Instant::now();
            while rounds.len() < max_rounds {
                // A round joins one in flight only when it is full: a
                // smaller one would cost a command for copies that can
                // wait for the next round and make it bigger.
                let full_only = !rounds.is_empty();
                match self.start_round(now, full_only) {
                    Some(io) => rounds.push(Box::pin(io.run())),
                    None => break,
                }
            }
            if !rounds.is_empty() {
                // A round ends, or (with room for another) a request
                // arrives or a copy's back-off ends. (A copy already due
                // waits for a round to end, or for enough others to fill
                // a round.)
                let room = rounds.len() < max_rounds;
                let wake = room
                    .then(|| {
                        self.queue
                            .iter()
                            .filter_map(|c| c.not_before)
                            .filter(|t| *t > now)
                            .min()
                    })
                    .flatten();
                tokio::select! {
                    Some(done) = rounds.next() => self.apply(done, &mut finishing).await,
                    command = self.rx.recv(), if self.open && room => match command {
                        Some(command) => self.accept(command),
                        None => self.open = false,
                    },
                    () = sleep_until(wake), if wake.is_some() => {}
                }
                continue;
            }
            // No round in flight, none to start: nothing runnable now.
            if let Some(handle) = finishing.take() {
                self.finish(handle).await;
                continue;
            }
            self.prune(now);
            // Counters waiting for an update in flight: look again soon.
            self.move_counters();
            if !self.settling.is_empty() && self.queue.is_empty() {
                self.settle().await;
            }
            let recheck = (!self.to_move.is_empty()).then(|| now + MOVE_RECHECK);
            // Users to forget (their counters left exact) while idle.
            let lagging = matches!(self.settings.counters, Counters::Lagging { .. });
            let prune =
                (lagging && !self.known.is_empty()).then(|| self.pruned + self.settings.known_for);
            if !self.open && self.queue.is_empty() {
                // Stopping: leave the counters of every user exact.
                self.leave_all_exact().await;
                return;
            }
            let wake = self
                .queue
                .iter()
                .filter_map(|c| c.not_before)
                .chain(recheck)
                .chain(prune)
                .min();
            tokio::select! {
                command = self.rx.recv(), if self.open => match command {
                    Some(command) => self.accept(command),
                    None => self.open = false,
                },
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    /// Takes every request waiting in the channel, without waiting.
    fn take_waiting(&mut self) {
        while self.open {
            match self.rx.try_recv() {
                Ok(command) => self.accept(command),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Append(job) => {
                let id = self.next_job;
                self.next_job += 1;
                for idx in 0..job.to.len() {
                    self.queue.push_back(Queued {
                        job: id,
                        idx,
                        attempts: 0,
                        not_before: None,
                    });
                }
                self.jobs.insert(id, job);
            }
            Command::Forget(done) => {
                let all = std::mem::take(&mut self.known);
                self.leave_exact(all);
                let _ = done.send(());
            }
            Command::Settle(done) => self.settling.push(done),
        }
    }

    /// With nothing left to store: leaves every counter exact and answers
    /// the callers of [`AppendBatcher::settle`].
    async fn settle(&mut self) {
        self.leave_all_exact().await;
        for done in self.settling.drain(..) {
            let _ = done.send(());
        }
    }

    /// Forgets every user, moving each lagging counter up to the last seq
    /// stored for it, and waits until those updates are done (a user's
    /// next append reads its counter, exact now).
    async fn leave_all_exact(&mut self) {
        let all = std::mem::take(&mut self.known);
        self.leave_exact(all);
        // An update in flight holds the rest back: wait for it, then send
        // them and wait for those.
        if let Some(moving) = self.moving.take() {
            let _ = moving.await;
        }
        self.move_counters();
        if let Some(moving) = self.moving.take() {
            let _ = moving.await;
        }
    }

    /// Starts a round, if any copy is runnable (with `full_only`, if
    /// enough are for a round of [`max_copies`](BatchSettings::max_copies)):
    /// picks at most one runnable copy per user, of users no round in
    /// flight holds, and takes each user's base from what this batcher
    /// knows or leaves it to be read. The users are held (`busy`) until the
    /// round is applied.
    fn start_round(&mut self, now: Instant, full_only: bool) -> Option<RoundIo> {
        if full_only && self.runnable_users(now) < self.settings.max_copies {
            return None;
        }
        let mut picked: Vec<(Queued, UserId, Arc<Entry>)> = Vec::new();
        let mut users: HashSet<UserId> = HashSet::new();
        let mut rest = VecDeque::with_capacity(self.queue.len());
        for copy in std::mem::take(&mut self.queue) {
            let Some(job) = self.jobs.get(&copy.job) else {
                continue; // its request failed already
            };
            let user = &job.to[copy.idx];
            if picked.len() < self.settings.max_copies
                && self.may_go(&copy, user, now)
                && !users.contains(user)
            {
                users.insert(user.clone());
                picked.push((copy, user.clone(), Arc::clone(&job.entry)));
            } else {
                rest.push_back(copy);
            }
        }
        self.queue = rest;
        if picked.is_empty() {
            return None;
        }
        tracing::debug!(
            copies = picked.len(),
            waiting = self.queue.len(),
            requests = self.jobs.len(),
            "append round"
        );
        self.prune(now);
        let mut known = HashMap::new();
        let mut reads = Vec::new();
        for user in users {
            let stale = self.stale.get(&user).copied();
            match self.known.get(&user) {
                Some(k)
                    if stale.is_none()
                        && now.saturating_duration_since(k.at) < self.settings.known_for =>
                {
                    let base = Base {
                        seq: k.seq,
                        counter: k.counter,
                    };
                    known.insert(user.clone(), base);
                }
                _ => reads.push((user.clone(), stale)),
            }
            self.busy.insert(user);
        }
        Some(RoundIo {
            log: Arc::clone(&self.log),
            lagging: matches!(self.settings.counters, Counters::Lagging { .. }),
            concurrency: self.settings.concurrency.max(1),
            picked,
            known,
            reads,
        })
    }

    /// How many distinct users have a runnable copy and no round in
    /// flight, counted up to [`max_copies`](BatchSettings::max_copies).
    fn runnable_users(&self, now: Instant) -> usize {
        let max = self.settings.max_copies;
        let mut users: HashSet<&UserId> = HashSet::new();
        for copy in &self.queue {
            if users.len() >= max {
                break;
            }
            let Some(job) = self.jobs.get(&copy.job) else {
                continue;
            };
            let user = &job.to[copy.idx];
            if self.may_go(copy, user, now) {
                users.insert(user);
            }
        }
        users.len()
    }

    /// Whether `copy` (of `user`) may go into a round started now: its
    /// back-off is over and no round in flight holds its user.
    fn may_go(&self, copy: &Queued, user: &UserId, now: Instant) -> bool {
        copy.not_before.is_none_or(|t| t <= now) && !self.busy.contains(user)
    }

    /// Applies what a round did: frees its users, fails what could not be
    /// stored, looks up copies refused by the idempotency index, and
    /// answers (with [`Counters::Lagging`]) or starts moving the counters
    /// (after the previous round's counter update is done).
    async fn apply(&mut self, done: RoundDone, finishing: &mut Option<Finishing>) {
        for user in &done.users {
            self.busy.remove(user);
        }
        for user in &done.read {
            self.stale.remove(user);
        }
        for (job, error) in done.failed {
            self.fail(job, error);
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(done.claims.len());
        let mut refused: Vec<(Queued, UserId)> = Vec::new();
        self.sort(done.claims, done.outcome, &mut pending, &mut refused);
        refused.retain(|(copy, _)| self.jobs.contains_key(&copy.job));
        if !refused.is_empty() {
            self.look_up(refused, &mut pending).await;
        }

        if let Counters::Lagging { .. } = self.settings.counters {
            // The copies are stored: that is the answer. Counters that lag
            // too far move in the background.
            for p in pending {
                self.complete(p);
            }
            self.move_counters();
            return;
        }
        if let Some(previous) = finishing.take() {
            self.finish(previous).await;
        }
        if pending.is_empty() {
            return;
        }
        // One statement per user: the highest seq of the round (a user has
        // one inserted copy per round, but may also have found copies).
        let mut targets: HashMap<UserId, Seq> = HashMap::new();
        for p in &pending {
            let t = targets.entry(p.message.user_id.clone()).or_insert(0);
            *t = (*t).max(p.message.seq);
        }
        let targets: Vec<(UserId, Seq)> = targets.into_iter().collect();
        let log = Arc::clone(&self.log);
        *finishing = Some(tokio::spawn(async move {
            let outcomes = bump_counters(&log.db, &log.counters, &targets).await;
            let results = targets.into_iter().map(|(u, _)| u).zip(outcomes).collect();
            (pending, results)
        }));
    }

    /// Sorts each claim of a round by the insert's outcome: stored
    /// (`pending`), refused by the idempotency index or an unnamed one
    /// (`refused`, to be looked up), taken seq (back to the queue) or
    /// failed. A stored copy waits for its counter even when its request
    /// failed meanwhile, so that no counter is left behind.
    fn sort(
        &mut self,
        claims: Vec<Claim>,
        outcome: Result<Vec<Result<Inserted, StoreError>>, StoreError>,
        pending: &mut Vec<Pending>,
        refused: &mut Vec<(Queued, UserId)>,
    ) {
        let outcomes = match outcome {
            Ok(outcomes) => outcomes,
            Err(e) => {
                for claim in claims {
                    self.known.remove(&claim.user);
                    self.fail(claim.copy.job, copy_error(&e));
                }
                return;
            }
        };
        let now = Instant::now();
        for (claim, outcome) in claims.into_iter().zip(outcomes) {
            let Claim {
                copy,
                user,
                counter,
                message,
            } = claim;
            match outcome {
                Ok(Inserted::Yes) => {
                    let counter = match self.settings.counters {
                        Counters::Lagging { max_lag }
                            if message.seq.saturating_sub(counter) >= max_lag =>
                        {
                            self.to_move.insert(user.clone(), message.seq);
                            message.seq
                        }
                        Counters::Lagging { .. } => counter,
                        // Moved with the round's counters.
                        Counters::BeforeAnswer => message.seq,
                    };
                    self.known.insert(
                        user,
                        Known {
                            seq: message.seq,
                            at: now,
                            counter,
                        },
                    );
                    pending.push(Pending {
                        job: copy.job,
                        idx: copy.idx,
                        message,
                    });
                }
                Ok(Inserted::Duplicate(DuplicateOf::Seq)) => {
                    self.retry(copy, user, Some(message.seq));
                }
                Ok(Inserted::Duplicate(_)) => refused.push((copy, user)),
                Err(e) => {
                    self.known.remove(&user);
                    self.fail(copy.job, e);
                }
            }
        }
    }

    /// Copies refused by a unique index other than the seq's: their
    /// request's copy exists (return it), else the seq was taken.
    async fn look_up(&mut self, refused: Vec<(Queued, UserId)>, pending: &mut Vec<Pending>) {
        let log = &self.log;
        let jobs = &self.jobs;
        let found: Vec<(Queued, UserId, Result<Option<Document>, StoreError>)> =
            stream::iter(refused)
                .map(|(copy, user)| async move {
                    let found = match jobs.get(&copy.job) {
                        Some(job) => {
                            log.find_entry(&job.entry.source, &job.entry.idem, user.as_str())
                                .await
                        }
                        None => Ok(None),
                    };
                    (copy, user, found)
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
        for (copy, user, found) in found {
            match found {
                Ok(Some(doc)) => match message_from_doc(&doc) {
                    // Stored by an earlier try of this request or a racer,
                    // which may have crashed before moving the counter: it
                    // is moved with this round's.
                    Ok(message) if message.user_id == user => {
                        pending.push(Pending {
                            job: copy.job,
                            idx: copy.idx,
                            message,
                        });
                    }
                    Ok(_) => self.fail(
                        copy.job,
                        StoreError::Backend(format!(
                            "the stored copy for {user} names another user"
                        )),
                    ),
                    Err(e) => self.fail(copy.job, StoreError::Backend(e.to_string())),
                },
                // Not known to be the seq's index: no seq known stored.
                Ok(None) => self.retry(copy, user, None),
                Err(e) => self.fail(copy.job, e),
            }
        }
    }

    /// `copy` met a taken seq (`taken`, when the server said it was the
    /// seq's index): back to the queue after a pause that grows with its
    /// refusals, its user's base read again; or its request fails once it
    /// has tried often enough.
    fn retry(&mut self, copy: Queued, user: UserId, taken: Option<Seq>) {
        self.known.remove(&user);
        let entry = self.stale.entry(user.clone()).or_insert(taken);
        *entry = (*entry).max(taken);
        let attempts = copy.attempts + 1;
        if attempts >= self.settings.max_attempts.max(1) {
            self.fail(
                copy.job,
                StoreError::Contention(format!(
                    "gave up claiming a seq for {user} after {attempts} attempts"
                )),
            );
            return;
        }
        let not_before = (attempts > 1).then(|| {
            let cap = (1u64 << attempts.min(6)).min(MAX_BACKOFF_MS);
            Instant::now() + Duration::from_millis(rand::random_range(0..=cap))
        });
        self.queue.push_front(Queued {
            attempts,
            not_before,
            ..copy
        });
    }

    /// Forgets the seqs remembered for longer than `known_for` (looked at
    /// once per `known_for`).
    fn prune(&mut self, now: Instant) {
        let known_for = self.settings.known_for;
        if now.saturating_duration_since(self.pruned) < known_for {
            return;
        }
        self.pruned = now;
        let (keep, gone): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut self.known)
            .into_iter()
            .partition(|(_, k)| now.saturating_duration_since(k.at) < known_for);
        self.known = keep;
        self.leave_exact(gone);
    }

    /// With [`Counters::Lagging`]: the counters of users this batcher
    /// forgets are moved up to the last seq it stored for them, so that a
    /// user at rest has an exact counter, and the next append for them
    /// (here or in another process) can trust it without looking past it.
    fn leave_exact(&mut self, forgotten: HashMap<UserId, Known>) {
        if !matches!(self.settings.counters, Counters::Lagging { .. }) {
            return;
        }
        for (user, k) in forgotten {
            if k.seq > k.counter {
                let target = self.to_move.entry(user).or_insert(0);
                *target = (*target).max(k.seq);
            }
        }
        self.move_counters();
    }

    /// With [`Counters::Lagging`]: starts moving the counters waiting in
    /// `to_move`, unless an update is still in flight (they go with the
    /// next). Nothing waits on it: a counter that does not move only makes
    /// the next reader's [`SeqLog::stored_end`] read a little more.
    fn move_counters(&mut self) {
        if self.to_move.is_empty() || self.moving.as_ref().is_some_and(|m| !m.is_finished()) {
            return;
        }
        let targets: Vec<(UserId, Seq)> = self.to_move.drain().collect();
        let log = Arc::clone(&self.log);
        self.moving = Some(tokio::spawn(async move {
            let outcomes = bump_counters(&log.db, &log.counters, &targets).await;
            let failed = outcomes.iter().filter(|o| o.is_err()).count();
            if let Some(Err(e)) = outcomes.into_iter().find(Result::is_err) {
                tracing::debug!(failed, error = %e, "could not move lagging seq counters; readers find the end of the log further away");
            }
        }));
    }

    /// Waits for a round's counter update and answers what it completes.
    async fn finish(&mut self, handle: Finishing) {
        let (pending, results) = match handle.await {
            Ok(done) => done,
            Err(e) => {
                // The update task panicked or was cancelled: what waited
                // on it is not known to be complete.
                tracing::error!(error = %e, "the seq counter update task failed");
                let ids: Vec<u64> = self.jobs.keys().copied().collect();
                for id in ids {
                    self.fail(
                        id,
                        StoreError::Backend(format!("counter update failed: {e}")),
                    );
                }
                return;
            }
        };
        let results: HashMap<UserId, Result<(), StoreError>> = results.into_iter().collect();
        for p in pending {
            match results.get(&p.message.user_id) {
                Some(Ok(())) => self.complete(p),
                Some(Err(e)) => {
                    tracing::warn!(user = %p.message.user_id, seq = p.message.seq, error = %e, "stored a message but could not advance the seq counter; the append fails so that it is retried");
                    self.fail(p.job, copy_error(e));
                }
                None => self.fail(p.job, StoreError::Backend("counter not updated".into())),
            }
        }
    }

    /// A copy is stored and its counter moved.
    fn complete(&mut self, p: Pending) {
        let Some(job) = self.jobs.get_mut(&p.job) else {
            return; // the request failed already
        };
        if job.done[p.idx].is_none() {
            job.done[p.idx] = Some(p.message);
            job.left -= 1;
        }
        if job.left == 0
            && let Some(job) = self.jobs.remove(&p.job)
            && let Some(reply) = job.reply
        {
            let copies = job.done.into_iter().flatten().collect();
            let _ = reply.send(Ok(copies));
        }
    }

    /// Answers `error` to request `job` (if it is still waiting); its
    /// other copies are dropped from the queue as they come up.
    fn fail(&mut self, job: u64, error: StoreError) {
        if let Some(job) = self.jobs.remove(&job)
            && let Some(reply) = job.reply
        {
            let _ = reply.send(Err(error));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
