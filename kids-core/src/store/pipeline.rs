//! The bounded queue between the router and the store tree, and the worker
//! that drains it.
//!
//! ```text
//!  PUBLISH/LOG ─▶ Router ─▶ StorePipeline (a Tap) ──queue (bounded)──▶ worker ─▶ root Store
//!                    │          │ full: block | error (-TRYLATER) | spool (overflow log)
//!                    │          └─ ticket n ─┐
//!  reply ◀── held until ticket n is stored ◀─┘  worker: store batch, commit, "stored up to n"
//! ```
//! A publisher's reply is released only when its message was committed by
//! the root store (in a file, in a spool, or handed to a forwarder): what
//! kids acknowledged, it keeps. The queue's policy when full is explicit,
//! and every refusal or overflow is counted in `INFO stores`.
//!
//! Failures: a commit that fails is retried on a backoff (50 ms, doubling
//! to 2 s, on the monotonic clock; each attempt logged once), and nothing
//! new is given to the root meanwhile, so the queue fills and its policy
//! holds or refuses publishers. A commit that gives its messages up
//! ([`StoreError::Unstored`], a failed fsync) resolves their tickets as not
//! stored: every waiting publisher's connection closes unanswered.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::store::{decode_record, push_record};
use crate::{
    Batch, Bell, Error, Now, Position, QueueFull, Refused, SegmentConfig, SegmentLog, Store,
    StoreError, Tap, lock,
};

/// Settings of a [`StorePipeline`].
///
/// ```
/// use kids_core::{PipelineConfig, QueueFull};
/// let config = PipelineConfig::new(65_536, QueueFull::Spool).spool_dir("/data/kids/overflow");
/// assert_eq!(config.capacity(), 65_536);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    capacity: usize,
    when_full: QueueFull,
    spool_dir: Option<PathBuf>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self::new(65_536, QueueFull::Block)
    }
}

impl PipelineConfig {
    /// A queue of `capacity` messages with a policy for when it is full.
    pub fn new(capacity: usize, when_full: QueueFull) -> Self {
        Self {
            capacity: capacity.max(1),
            when_full,
            spool_dir: None,
        }
    }
    /// Where the `spool` policy keeps the overflow (required with it).
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }
    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Counters of a [`StorePipeline`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineStats {
    /// Messages accepted into the queue.
    pub accepted: u64,
    /// Messages refused with `-TRYLATER` (policy `error`, a `block` queue
    /// at twice its size, or shutting down).
    pub refused: u64,
    /// Messages that went to the overflow spool (policy `spool`).
    pub spooled: u64,
    /// Messages accepted past the queue's size by the `block` policy (their
    /// publishers wait before their next batch is read).
    pub overfilled: u64,
    /// Messages committed by the root store.
    pub stored: u64,
    /// Store or commit failures (the messages were kept and retried).
    pub store_errors: u64,
    /// Messages whose commit failed so that the store gave them up (a
    /// failed fsync): their publishers were told they were not stored.
    pub unstored: u64,
    /// Store trees replaced (reloads).
    pub reloads: u64,
}

struct Overflow {
    log: SegmentLog,
    /// Next record for the worker.
    cursor: Position,
    /// After the last record the root committed: where the worker reads
    /// again when the root gave up a commit.
    stored: Position,
    /// While set, every new message goes to the overflow, keeping order.
    active: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(u64, Bytes, Bytes)>,
    pushed: u64,
    committed: u64,
    /// Tickets given up by a failed commit: ranges (after, up to], in order.
    unstored: Vec<(u64, u64)>,
    stored_waiters: Vec<(u64, Waker)>,
    room_waiters: Vec<Waker>,
    overflow: Option<Overflow>,
    stats: PipelineStats,
    replacement: Option<Box<dyn Store>>,
    stopping: bool,
    stopped: bool,
    tree_info: String,
}

struct Inner {
    config: PipelineConfig,
    state: Mutex<State>,
    bell: Arc<Bell>,
}

/// The queue between the router's tap and a store tree, and its worker.
///
/// Attach it to a [`Router`](crate::Router) with `set_tap`, drive a
/// [`Worker`] (`net::spawn_pipeline` runs one on a thread of its own, with
/// the `tokio` feature), and serve: publishers are answered once their
/// message is stored.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Instant, SystemTime};
/// use kids_core::{Now, NullStore, PipelineConfig, Router, RouterConfig, Session, StorePipeline};
///
/// let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
/// let router = Router::new(RouterConfig::default(), Instant::now());
/// router.set_tap(Arc::new(pipeline.clone()));
/// let mut session = Session::new(&router);
/// session.handle(vec!["PUBLISH".into(), "web".into(), "GET /".into()], Instant::now());
/// let ticket = session.ticket().unwrap(); // the reply is held for it
///
/// let mut worker = pipeline.worker(Box::new(NullStore::default()));
/// worker.step(Now::new(Instant::now(), SystemTime::now()));
/// assert!(pipeline.is_stored(ticket));
/// session.stored(Instant::now()); // the transport learns it: replies flushed
/// assert_eq!(session.take_output(), b":0\r\n");
/// ```
#[derive(Clone)]
pub struct StorePipeline {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StorePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePipeline")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl StorePipeline {
    /// A pipeline; with the `spool` policy, opens (and recovers) the overflow spool.
    ///
    /// # Errors
    /// [`Error::SpoolDirMissing`] for the `spool` policy without a
    /// directory, [`Error::SpoolDirUnused`] for a directory with another policy;
    /// [`Error::Io`] / [`Error::Corrupt`] from opening the overflow spool.
    pub fn new(config: PipelineConfig) -> Result<Self, Error> {
        let overflow = match (&config.when_full, &config.spool_dir) {
            (QueueFull::Spool, None) => {
                return Err(Error::SpoolDirMissing);
            }
            (QueueFull::Spool, Some(dir)) => {
                let (log, _) = SegmentLog::open(dir, SegmentConfig::default())?;
                // Resume after what was stored before a restart.
                let cursor = log.mark();
                let active = cursor < log.end();
                Some(Overflow {
                    log,
                    cursor,
                    stored: cursor,
                    active,
                })
            }
            (&when_full, Some(_)) => return Err(Error::SpoolDirUnused { when_full }),
            (_, None) => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    overflow,
                    ..State::default()
                }),
                bell: Arc::new(Bell::default()),
            }),
        })
    }

    /// The doorbell the worker sleeps on; network links ring it.
    pub fn bell(&self) -> &Arc<Bell> {
        &self.inner.bell
    }

    /// Counters so far.
    pub fn stats(&self) -> PipelineStats {
        lock(&self.inner.state).stats
    }

    /// True once every message up to `ticket` was committed by the root store.
    pub fn is_stored(&self, ticket: u64) -> bool {
        let s = lock(&self.inner.state);
        s.committed >= ticket && !s.is_unstored(ticket)
    }

    /// A worker owning `root`: call [`Worker::step`] yourself, or let
    /// `net::spawn_pipeline` drive it.
    pub fn worker(&self, root: Box<dyn Store>) -> Worker {
        Worker {
            pipeline: self.clone(),
            root,
            retiring: Vec::new(),
            incoming: None,
            held: VecDeque::new(),
            uncommitted: None,
            commit_retry: Backoff::default(),
            poll_log: Backoff::default(),
            unstored_log: Backoff::default(),
            info_at: None,
        }
    }

    /// True once [`StorePipeline::shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        lock(&self.inner.state).stopping
    }

    /// The worker has stopped: whoever still waits for a ticket is told it
    /// will never be stored (and is left unanswered).
    pub fn finish(&self) {
        let mut s = lock(&self.inner.state);
        s.stopped = true;
        for (_, w) in s.stored_waiters.drain(..) {
            w.wake();
        }
        for w in s.room_waiters.drain(..) {
            w.wake();
        }
    }

    /// Asks the worker to store what is queued and stop; new messages are
    /// refused with `-TRYLATER` from now on.
    pub fn shutdown(&self) {
        let mut s = lock(&self.inner.state);
        s.stopping = true;
        // Publishers waiting for room are refused from now on: let them see it.
        for w in s.room_waiters.drain(..) {
            w.wake();
        }
        drop(s);
        self.inner.bell.ring();
    }

    /// Replaces the store tree (a reload). The worker stops taking new
    /// messages (they stay queued) until the running tree has settled,
    /// everything it took acknowledged downstream, or 5 s passed; then it
    /// commits the old tree, keeps it while it still holds unacknowledged
    /// messages, and stores every later message in `root`. Nothing queued
    /// is lost.
    pub fn replace_root(&self, root: Box<dyn Store>) {
        lock(&self.inner.state).replacement = Some(root);
        self.inner.bell.ring();
    }
}

/// Messages the worker stores per commit, at most.
const BATCH: usize = 4096;

/// How long a reload waits for the running tree to settle (everything it
/// took acknowledged downstream) before replacing it anyway; what it still
/// holds is then kept until acknowledged, or re-sent from its spool.
const RELOAD_GRACE: Duration = Duration::from_secs(5);

impl State {
    /// True when a failed commit gave up the message of `ticket`.
    fn is_unstored(&self, ticket: u64) -> bool {
        self.unstored
            .iter()
            .rev()
            .take_while(|&&(_, upto)| upto >= ticket)
            .any(|&(after, _)| ticket > after)
    }

    /// Every ticket after `after` up to `upto` was given up: their
    /// publishers learn it now.
    fn give_up(&mut self, after: u64, upto: u64) {
        match self.unstored.last_mut() {
            Some(last) if last.1 >= after => last.1 = last.1.max(upto),
            _ => self.unstored.push((after, upto)),
        }
        self.wake_stored(upto);
    }

    /// Wakes the publishers waiting for tickets up to `upto`.
    fn wake_stored(&mut self, upto: u64) {
        let mut i = 0;
        while i < self.stored_waiters.len() {
            if self.stored_waiters[i].0 <= upto {
                self.stored_waiters.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
    }
}

impl Tap for StorePipeline {
    fn publish(
        &self,
        channel: &Bytes,
        message: &Bytes,
        _now: Instant,
    ) -> Result<Option<u64>, Refused> {
        let cap = self.inner.config.capacity;
        let mut s = lock(&self.inner.state);
        if s.stopping {
            s.stats.refused += 1;
            return Err(Refused {
                reason: "shutting down".into(),
            });
        }
        let overflow_active = s.overflow.as_ref().is_some_and(|o| o.active);
        let len = s.queue.len();
        let to_queue = !overflow_active
            && (len < cap
                || (self.inner.config.when_full == QueueFull::Block
                    && len < cap.saturating_mul(2)));
        if to_queue {
            if len >= cap {
                s.stats.overfilled += 1;
            }
            s.pushed += 1;
            let ticket = s.pushed;
            // Copied (one allocation): the originals are slices of a
            // connection's read buffer, which a queued message must not pin.
            let both = Bytes::from([&channel[..], &message[..]].concat());
            let (c, m) = (both.slice(..channel.len()), both.slice(channel.len()..));
            s.queue.push_back((ticket, c, m));
            s.stats.accepted += 1;
            drop(s);
            if len == 0 {
                self.inner.bell.ring();
            }
            return Ok(Some(ticket));
        }
        if self.inner.config.when_full == QueueFull::Spool
            && let Some(o) = s.overflow.as_mut()
        {
            let mut record = Batch::default();
            push_record(&mut record, channel, message);
            match o.log.append_batch(&mut record) {
                Ok(_) => {
                    o.active = true;
                    s.stats.spooled += 1;
                    drop(s);
                    self.inner.bell.ring();
                    return Ok(None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "overflow spool append failed");
                    s.stats.refused += 1;
                    return Err(Refused {
                        reason: format!("store queue full and spool failed: {e}"),
                    });
                }
            }
        }
        s.stats.refused += 1;
        Err(Refused {
            reason: "store queue full".into(),
        })
    }

    fn poll_stored(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let mut s = lock(&self.inner.state);
        if s.is_unstored(ticket) {
            return Poll::Ready(false);
        }
        if s.committed >= ticket {
            return Poll::Ready(true);
        }
        if s.stopped {
            return Poll::Ready(false);
        }
        match s
            .stored_waiters
            .iter_mut()
            .find(|(_, w)| w.will_wake(cx.waker()))
        {
            Some(entry) => entry.0 = ticket,
            None => s.stored_waiters.push((ticket, cx.waker().clone())),
        }
        Poll::Pending
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.config.when_full != QueueFull::Block {
            return Poll::Ready(());
        }
        let mut s = lock(&self.inner.state);
        if s.queue.len() < self.inner.config.capacity || s.stopping || s.stopped {
            return Poll::Ready(());
        }
        if !s.room_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            s.room_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn info(&self, out: &mut String) {
        let s = lock(&self.inner.state);
        let st = s.stats;
        let _ = write!(
            out,
            "queue_length:{}\r\nqueue_capacity:{}\r\nqueue_policy:{}\r\nqueue_accepted:{}\r\nqueue_refused:{}\r\nqueue_spooled:{}\r\nqueue_overfilled:{}\r\nqueue_spool_bytes:{}\r\nstored_messages:{}\r\nstore_errors:{}\r\nunstored_messages:{}\r\nstore_reloads:{}\r\n",
            s.queue.len(),
            self.inner.config.capacity,
            match self.inner.config.when_full {
                QueueFull::Block => "block",
                QueueFull::Error => "error",
                QueueFull::Spool => "spool",
            },
            st.accepted,
            st.refused,
            st.spooled,
            st.overfilled,
            s.overflow.as_ref().map_or(0, |o| o.log.len_bytes()),
            st.stored,
            st.store_errors,
            st.unstored,
            st.reloads
        );
        out.push_str(&s.tree_info);
    }
}

/// A message the worker took from the queue (with its ticket) or from the
/// overflow spool (with the position after it).
#[derive(Debug)]
enum Origin {
    Queue(u64),
    Overflow(Position),
}

/// What the root took and has not committed yet.
#[derive(Debug, Default, Clone, Copy)]
struct Uncommitted {
    /// The last ticket among them.
    ticket: Option<u64>,
    /// The overflow position after the last of them from the overflow spool.
    overflow: Option<Position>,
    count: u64,
}

/// Drains a [`StorePipeline`] into a store tree. One per pipeline.
#[derive(Debug)]
pub struct Worker {
    pipeline: StorePipeline,
    root: Box<dyn Store>,
    retiring: Vec<Box<dyn Store>>,
    /// A replacement tree waiting for the running one to settle, and until when it waits.
    incoming: Option<(Box<dyn Store>, Instant)>,
    held: VecDeque<(Origin, Bytes, Bytes)>,
    /// Taken by the root but not yet committed.
    uncommitted: Option<Uncommitted>,
    /// When a failed commit is tried again.
    commit_retry: Backoff,
    /// When a failing poll is logged again.
    poll_log: Backoff,
    /// When a commit that gave messages up is logged again.
    unstored_log: Backoff,
    info_at: Option<Instant>,
}

/// Wait after a first failure before retrying (or logging it again).
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest wait between retries of a failure that repeats.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The schedule of a failing operation: retried, and logged, after
/// [`FIRST_RETRY`], then after twice as long each time, up to
/// [`MAX_RETRY`]; reset by a success. Runs on the monotonic clock.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    next: Option<Instant>,
}

impl Backoff {
    fn is_due(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// Counts a failure at `now`; returns the wait before the next try.
    fn failed(&mut self, now: Instant) -> Duration {
        let wait = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.next = Some(now + wait);
        wait
    }

    /// Counts a success; returns how many failures came before it.
    fn succeeded(&mut self) -> u32 {
        std::mem::take(self).failures
    }
}

impl Worker {
    /// One round: swap in a replacement tree, store a batch, commit it,
    /// poll the stores. Returns true when it did something (call again soon).
    pub fn step(&mut self, now: Now) -> bool {
        let inner = self.pipeline.inner.clone();
        let mut busy = false;
        if let Some(new) = lock(&inner.state).replacement.take() {
            // A newer reload supersedes one still waiting.
            let deadline = self
                .incoming
                .take()
                .map_or(now.instant + RELOAD_GRACE, |(_, d)| d);
            self.incoming = Some((new, deadline));
        }
        if let Some((_, deadline)) = &self.incoming
            && self.uncommitted.is_none()
            && (self.root.is_settled() || now.instant >= *deadline)
            && let Some((new, _)) = self.incoming.take()
        {
            self.swap_root(new, now);
            busy = true;
        }
        // A failed commit is retried first, on its backoff. Nothing more is
        // given to the root meanwhile: the queue fills, and its policy
        // holds or refuses publishers until the commit succeeds.
        if self.uncommitted.is_some() && self.commit_retry.is_due(now.instant) {
            self.commit(now);
        }
        // While a reload waits for the running tree to settle, or a commit
        // is failing, new messages wait.
        let waiting = self.incoming.is_some() || self.uncommitted.is_some();
        // Gather: held messages first, then the queue, then the overflow.
        if self.held.len() < BATCH && !waiting {
            let mut guard = lock(&inner.state);
            let s = &mut *guard;
            let room = BATCH - self.held.len();
            let n = room.min(s.queue.len());
            for (t, c, m) in s.queue.drain(..n) {
                self.held.push_back((Origin::Queue(t), c, m));
            }
            if n > 0 && s.queue.len() < inner.config.capacity {
                for w in s.room_waiters.drain(..) {
                    w.wake();
                }
            }
            if self.held.is_empty()
                && s.queue.is_empty()
                && let Some(o) = s.overflow.as_mut()
            {
                let mut at = o.cursor;
                match o.log.read_entries(&mut at, room) {
                    Ok(entries) => {
                        for (i, (_, rec)) in entries.iter().enumerate() {
                            let next = entries.get(i + 1).map_or(at, |e| e.0);
                            match decode_record(rec) {
                                Some((c, m)) => self.held.push_back((Origin::Overflow(next), c, m)),
                                None => {
                                    tracing::error!("overflow record without a topic: skipped");
                                    s.stats.store_errors += 1;
                                }
                            }
                            o.cursor = next;
                        }
                        if entries.is_empty() && o.cursor >= o.log.end() {
                            // Caught up: new messages may use the queue again.
                            o.active = false;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading the overflow spool failed");
                        s.stats.store_errors += 1;
                    }
                }
            }
        }
        // Store as many as the root takes, in order.
        let mut last_ticket = None;
        let mut last_overflow = None;
        let mut taken = 0u64;
        while let Some((origin, c, m)) = self.held.front().filter(|_| !waiting) {
            match self.root.store(c, m, now) {
                Ok(()) => {
                    match origin {
                        Origin::Queue(t) => last_ticket = Some(*t),
                        Origin::Overflow(p) => last_overflow = Some(*p),
                    }
                    taken += 1;
                    self.held.pop_front();
                }
                Err(e) => {
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "root store refused; holding the message"
                    );
                    lock(&inner.state).stats.store_errors += 1;
                    break;
                }
            }
        }
        if taken > 0 {
            busy = true;
            let u = self.uncommitted.get_or_insert_with(Uncommitted::default);
            u.ticket = last_ticket.or(u.ticket);
            u.overflow = last_overflow.or(u.overflow);
            u.count += taken;
            self.commit(now);
        }
        match self.root.poll(now) {
            Ok(()) => {
                let failures = self.poll_log.succeeded();
                if failures > 0 {
                    tracing::info!(failures, "store poll works again");
                }
            }
            // Logged on a backoff: a full disk fails every poll.
            Err(e) if self.poll_log.is_due(now.instant) => {
                let failures = self.poll_log.failures + 1;
                let next_log_in = self.poll_log.failed(now.instant);
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    failures,
                    ?next_log_in,
                    "store poll failed"
                );
            }
            Err(_) => {}
        }
        self.retire(now);
        let due = self
            .info_at
            .is_none_or(|t| now.instant.saturating_duration_since(t) >= Duration::from_millis(250));
        if due {
            self.refresh_info();
            self.info_at = Some(now.instant);
        }
        busy && self.held.is_empty()
    }

    /// Commits what the root took. On success their publishers are
    /// answered; on [`StoreError::Unstored`] they are told it was not
    /// stored (and overflow records are read again); on another failure
    /// the messages stay taken and the commit is retried on a backoff.
    fn commit(&mut self, now: Now) {
        let Some(u) = self.uncommitted else {
            return;
        };
        let inner = self.pipeline.inner.clone();
        match self.root.commit(now) {
            Ok(()) => {
                self.uncommitted = None;
                let failures = self.commit_retry.succeeded();
                if failures > 0 {
                    tracing::info!(failures, "commit succeeded after failing");
                }
                let mut s = lock(&inner.state);
                s.stats.stored += u.count;
                if let Some(t) = u.ticket {
                    s.committed = s.committed.max(t);
                    let committed = s.committed;
                    s.wake_stored(committed);
                }
                if let (Some(p), Some(o)) = (u.overflow, s.overflow.as_mut()) {
                    o.stored = p;
                    if let Err(e) = o.log.release_before(p).and_then(|()| o.log.save_mark(p)) {
                        tracing::warn!(error = %e, "releasing overflow segments failed");
                    }
                }
            }
            Err(StoreError::Unstored(why)) => {
                self.uncommitted = None;
                let mut s = lock(&inner.state);
                s.stats.unstored += u.count;
                s.stats.store_errors += 1;
                if let Some(t) = u.ticket {
                    let after = s.committed.max(s.unstored.last().map_or(0, |r| r.1));
                    s.give_up(after, t);
                }
                if u.overflow.is_some()
                    && let Some(o) = s.overflow.as_mut()
                {
                    // Acknowledged when spooled: read again, never lost.
                    o.cursor = o.stored;
                    o.active = true;
                    self.held
                        .retain(|(origin, _, _)| matches!(origin, Origin::Queue(_)));
                }
                drop(s);
                if self.unstored_log.is_due(now.instant) {
                    self.unstored_log.failed(now.instant);
                    tracing::error!(error = %why, messages = u.count, "commit failed: messages not stored, their publishers are told so");
                }
            }
            Err(e) => {
                lock(&inner.state).stats.store_errors += 1;
                let failures = self.commit_retry.failures + 1;
                let retry_in = self.commit_retry.failed(now.instant);
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    failures,
                    ?retry_in,
                    "commit failed; holding the messages"
                );
            }
        }
    }

    fn refresh_info(&mut self) {
        let mut text = String::new();
        self.root.info("root", &mut text);
        for (i, r) in self.retiring.iter().enumerate() {
            r.info(&format!("retiring{i}"), &mut text);
        }
        lock(&self.pipeline.inner.state).tree_info = text;
    }

    fn swap_root(&mut self, new: Box<dyn Store>, now: Now) {
        let mut old = std::mem::replace(&mut self.root, new);
        if let Err(e) = old.commit(now) {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "committing the old store tree failed; keeping it until it drains"
            );
        }
        // Called only with nothing uncommitted: every ticket the old tree
        // took is answered already.
        let (a, t) = (old.acked(), old.taken());
        if a < t {
            self.retiring.push(old);
        }
        lock(&self.pipeline.inner.state).stats.reloads += 1;
        self.refresh_info();
    }

    fn retire(&mut self, now: Now) {
        self.retiring.retain_mut(|r| {
            let _ = r.commit(now);
            let _ = r.poll(now);
            r.acked() < r.taken()
        });
    }

    /// True when nothing is queued, held or waiting in the overflow spool.
    pub fn is_idle(&self) -> bool {
        let s = lock(&self.pipeline.inner.state);
        self.held.is_empty()
            && self.incoming.is_none()
            && self.uncommitted.is_none()
            && s.queue.is_empty()
            && s.overflow.as_ref().is_none_or(|o| o.cursor >= o.log.end())
    }

    /// True when idle and every message the trees took is acknowledged downstream.
    pub fn is_drained(&mut self) -> bool {
        self.is_idle() && self.unacked() == 0
    }

    /// Messages taken by the trees and not yet acknowledged downstream.
    pub fn unacked(&mut self) -> u64 {
        let mut n = self.root.taken() - self.root.acked().min(self.root.taken());
        for r in &mut self.retiring {
            n += r.taken() - r.acked().min(r.taken());
        }
        n
    }
}
