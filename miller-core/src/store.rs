//! The durable engine: the [`Engine`] and its [`journal`]
//! under one lock, group-committed to a segment log.
//!
//! ```text
//!  connections ──request──▶ State (one lock): Engine::handle, its changes staged
//!      ▲                     as records (lsn + 1 each); the reply is held on the
//!      │ replies released    last lsn staged (nothing a crash could undo is shown)
//!      │ (durable lsn ≥ held lsn)          │ staged batch
//!      └────────────────────────── committer: one write, one fsync (`always`) per
//!                                   round; everything staged meanwhile waits for
//!                                   the next round; compaction writes live jobs of
//!                                   old segments forward, then those segments go
//! ```
//! The store spawns nothing and reads no clock but [`StoreConfig::clock`]
//! (for fsync timing): the committer is a loop an adapter runs on a thread
//! of its own ([`Store::wait_staged`], [`Store::gather`], [`Store::commit`]),
//! and the thread serving connections may commit just before it sleeps
//! ([`Store::commit_before_park`]), as sink's broker does.
//!
//! Recovery ([`Store::open`]) replays the log into [`Engine::restore`]:
//! every acknowledged put comes back unless its delete was acknowledged;
//! reserved jobs come back ready; delays keep their wall-clock end. A torn
//! tail is cut; any other damage (a CRC that fails where records follow, a
//! record that does not decode) is an error naming its place, never skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use kids_core::{Batch, Fsync, LogFs, Position, SegmentConfig, SegmentLog, StdFs};
use sink_core::FsyncPolicy;

use crate::Error;
use crate::engine::{ClientId, Engine, Handled, PutRefused};
use crate::journal::{self, Journal, Record, Replay, WallClock};
use crate::proto::{Request, Response};

/// The largest record the log takes (a job body is bounded far below by
/// the engine's `max_job_size`; a job written at a larger bound before a
/// restart is still read).
const MAX_RECORD: u32 = 1 << 30;

/// Bytes of zeros written ahead of a synced log's end (see
/// [`SegmentConfig::preallocate_bytes`]).
const PREALLOCATE: u64 = 1 << 20;

/// Settings of a [`Store`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreConfig {
    /// When records are forced to disk before their replies go out.
    pub fsync: FsyncPolicy,
    /// A segment is closed, and a new one started, past this size.
    pub segment_bytes: u64,
    /// Bytes staged and not yet written after which connections stop
    /// reading requests until the next commit.
    pub max_staged_bytes: u64,
    /// Bytes of live jobs compaction writes forward per commit, at most.
    pub compact_budget: u64,
    /// The clock fsync times are measured with (for group commit's gathering).
    pub clock: fn() -> Instant,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 16 << 20,
            max_staged_bytes: 64 << 20,
            compact_budget: 256 << 10,
            clock: Instant::now,
        }
    }
}

impl StoreConfig {
    /// Sets the fsync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }
    /// Sets the segment size (4 KiB to 1 GiB).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.clamp(4 << 10, 1 << 30);
        self
    }
    /// Sets the bound of bytes staged before connections wait.
    pub fn max_staged_bytes(mut self, bytes: u64) -> Self {
        self.max_staged_bytes = bytes.max(1);
        self
    }
    /// Sets how many bytes compaction writes forward per commit, at most.
    pub fn compact_budget(mut self, bytes: u64) -> Self {
        self.compact_budget = bytes.max(1);
        self
    }
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Whole records read.
    pub records: u64,
    /// Jobs restored.
    pub jobs: usize,
    /// Bytes of torn tail cut.
    pub truncated_bytes: u64,
    /// The next job id.
    pub next_id: u64,
}

/// What one [`Store::commit`] round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Committed {
    /// Records written.
    pub records: usize,
    /// Whether an fsync covered them.
    pub synced: bool,
    /// Jobs compaction wrote forward in this round.
    pub compacted: usize,
}

/// The log's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LogStats {
    /// Bytes in all segments.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// The oldest segment's number.
    pub oldest: u64,
    /// The active segment's number.
    pub current: u64,
    /// Live jobs and the bytes of their whole records.
    pub live_jobs: usize,
    /// Bytes the live jobs' whole records take.
    pub live_bytes: u64,
    /// Records written since open.
    pub written: u64,
    /// Jobs written forward by compaction since open.
    pub rewritten: u64,
    /// Commit rounds that wrote something.
    pub commits: u64,
}

/// Everything behind the store's one lock.
struct State {
    engine: Engine,
    journal: Journal,
    durable_lsn: u64,
    durable_waiters: Vec<Waker>,
    room_waiters: Vec<Waker>,
    /// Clients whose reserve waits, and the task to wake when it completes.
    parked: HashMap<ClientId, Waker>,
    failed: Option<String>,
    stopped: bool,
    /// Shutting down: parked reserves give up.
    closing: bool,
    committer_waiting: bool,
    released_last: usize,
    gathering: bool,
    written: u64,
}

struct Writer {
    log: SegmentLog,
    last_sync: Instant,
}

struct Inner {
    dir: PathBuf,
    config: StoreConfig,
    state: Mutex<State>,
    staged_cv: Condvar,
    writer: Mutex<Writer>,
    /// A smoothed fsync time, µs.
    fsync_us: AtomicU64,
    commits: AtomicU64,
    /// Set once connections write their own records ([`Store::commit_unsynced`]):
    /// under [`FsyncPolicy::Never`] the committer is then not woken per record.
    inline: std::sync::atomic::AtomicBool,
}

/// The durable beanstalk engine on one data directory: cheap to clone,
/// shared by every connection and the committer.
///
/// ```
/// use std::time::{Instant, SystemTime};
/// use bytes::Bytes;
/// use miller_core::engine::{Engine, EngineConfig, Handled};
/// use miller_core::proto::{Request, Response};
/// use miller_core::store::{Store, StoreConfig};
/// # let dir = tempfile::tempdir().unwrap();
/// let now = Instant::now();
/// let engine = Engine::new(EngineConfig::default());
/// let (store, _) = Store::open(dir.path(), StoreConfig::default(), engine, now, SystemTime::now()).unwrap();
/// let client = store.connect(now);
/// let put = Request::Put { priority: 0, delay: 0, ttr: 60, body: Bytes::from_static(b"hi") };
/// let (handled, lsn) = store.handle(client, put, now);
/// assert_eq!(handled, Handled::Reply(Response::Inserted(1)));
/// assert!(!store.is_durable(lsn)); // held until the committer's round
/// store.commit(now).unwrap(); // one write, one fsync
/// assert!(store.is_durable(lsn));
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the log in `dir` and restores its jobs
    /// into `engine`; `now` and `wall` (read at the same moment) anchor the
    /// wall clock delays are stored with.
    ///
    /// # Errors
    /// [`Error::Log`] when the log cannot be read or is corrupt (a damaged
    /// record that is not a torn tail); [`Error::Record`] when a whole
    /// record does not decode.
    pub fn open(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        engine: Engine,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(Self, Recovered), Error> {
        Self::open_with(dir, config, Arc::new(StdFs), engine, now, wall)
    }

    /// As [`Store::open`], doing every file operation through `fs`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        fs: Arc<dyn LogFs>,
        mut engine: Engine,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(Self, Recovered), Error> {
        let dir = dir.as_ref().to_path_buf();
        let clock = WallClock::new(now, wall);
        let fsync = match config.fsync {
            // Synced by the committer; a roll syncs the segment it closes.
            FsyncPolicy::Always => Fsync::Every(u32::MAX),
            _ => Fsync::Never,
        };
        // Synced logs overwrite zeros written ahead: an fsync then flushes
        // the records alone, never a journal commit for a grown file.
        let ahead = if config.fsync == FsyncPolicy::Never {
            0
        } else {
            PREALLOCATE
        };
        let seg = SegmentConfig::default()
            // The store rolls itself, a mark first; the log never does.
            .max_segment_bytes(u64::MAX)
            .max_record_bytes(MAX_RECORD)
            .preallocate_bytes(ahead)
            .fsync(fsync);
        let mut replay = Replay::new(MAX_RECORD);
        let (mut log, recovery) =
            SegmentLog::open_visiting(&dir, seg, fs, |at, p| replay.visit(at, p))?;
        if let Some((at, reason)) = replay.error {
            return Err(Error::Record { at, reason });
        }
        let recovered_jobs = replay.out;
        for job in recovered_jobs.restored(clock) {
            engine.restore(job, now);
        }
        engine.reserve_ids_below(recovered_jobs.next_id);
        // Restoring is not a change to write again.
        engine.take_changes().for_each(drop);
        // Every segment opens with a mark of the next id: a new one now,
        // unless the active segment is still empty.
        if log.end().offset > 0 {
            log.roll()?;
        }
        let mut mark = Batch::default();
        journal::encode(
            &Record::Mark {
                next_id: recovered_jobs.next_id,
            },
            &mut mark,
        );
        log.append_batch(&mut mark)?;
        if config.fsync != FsyncPolicy::Never {
            // Records a killed process wrote but never synced count as
            // acknowledged from now on: make them durable first.
            log.sync()?;
        }
        let recovered = Recovered {
            records: recovery.records,
            jobs: recovered_jobs.jobs.len(),
            truncated_bytes: recovery.truncated_bytes,
            next_id: recovered_jobs.next_id,
        };
        let journal = Journal::new(clock, &recovered_jobs, log.end().segment, log.len_bytes());
        tracing::info!(
            dir = %dir.display(),
            records = recovered.records,
            jobs = recovered.jobs,
            truncated = recovered.truncated_bytes,
            "beanstalk journal recovered"
        );
        let state = State {
            engine,
            journal,
            durable_lsn: 0,
            durable_waiters: Vec::new(),
            room_waiters: Vec::new(),
            parked: HashMap::new(),
            failed: None,
            stopped: false,
            closing: false,
            committer_waiting: false,
            released_last: 0,
            gathering: false,
            written: 0,
        };
        let store = Self {
            inner: Arc::new(Inner {
                dir,
                config,
                state: Mutex::new(state),
                staged_cv: Condvar::new(),
                writer: Mutex::new(Writer {
                    log,
                    last_sync: now,
                }),
                fsync_us: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                inline: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        store.release_unneeded()?;
        Ok((store, recovered))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs `f` on the engine (tests, stats).
    pub fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> T) -> T {
        f(&self.state().engine)
    }

    /// A new client of the engine.
    pub fn connect(&self, now: Instant) -> ClientId {
        self.state().engine.connect(now)
    }

    /// A client left: its reserved jobs are released, its waiting reserve dropped.
    pub fn disconnect(&self, client: ClientId, now: Instant) {
        let wake = {
            let mut st = self.state();
            st.parked.remove(&client);
            st.engine.disconnect(client, now);
            self.after_engine(&mut st)
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// `client` hung up while its reserve waits ([`Engine::hang_up`]): the
    /// reserve is answered `TIMED_OUT`, through [`Store::poll_reply`].
    pub fn hang_up(&self, client: ClientId) {
        let wake = {
            let mut st = self.state();
            st.engine.hang_up(client);
            self.after_engine(&mut st)
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Handles one request of `client`; returns what the engine did and the
    /// lsn its reply must wait for ([`Store::poll_durable`]; 0 when it
    /// need not wait): a reply handing out a job (`RESERVED`, `FOUND`)
    /// waits for that job's records, any other for everything staged. Once the log failed every
    /// request is answered `INTERNAL_ERROR`.
    pub fn handle(&self, client: ClientId, request: Request, now: Instant) -> (Handled, u64) {
        let (handled, lsn, wake) = {
            let mut st = self.state();
            if st.failed.is_some() {
                return (Handled::Reply(Response::InternalError), 0);
            }
            let handled = st.engine.handle(client, request, now);
            let wake = self.after_engine(&mut st);
            let lsn = match &handled {
                Handled::Reply(reply) => Self::reply_lsn(&st, reply),
                _ => Self::pending_lsn(&st),
            };
            (handled, lsn, wake)
        };
        wake.into_iter().for_each(Waker::wake);
        (handled, lsn)
    }

    /// A put the codec refused before the engine saw it (`JOB_TOO_BIG`,
    /// `EXPECTED_CRLF`): counted as beanstalkd counts it; returns the reply
    /// and the lsn it waits for.
    pub fn put_refused(&self, client: ClientId, why: PutRefused) -> (Response, u64) {
        let mut st = self.state();
        let reply = st.engine.put_refused(client, why);
        (reply, Self::pending_lsn(&st))
    }

    /// `Ready(Some)` with the reply to `client`'s waiting reserve (and the
    /// lsn it waits for) once the engine completed it; `Ready(None)` when
    /// it never will (the store is shutting down or failed); else `cx` is
    /// woken when it may have. Runs the engine's timers that are due.
    pub fn poll_reply(
        &self,
        client: ClientId,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Option<(Response, u64)>> {
        let (poll, wake) = {
            let mut st = self.state();
            let wake = if st.engine.next_deadline().is_some_and(|d| d <= now) {
                st.engine.tick(now);
                self.after_engine(&mut st)
            } else {
                Vec::new()
            };
            let poll = match st.engine.poll_reply(client) {
                Some(reply) => {
                    st.parked.remove(&client);
                    let lsn = Self::reply_lsn(&st, &reply);
                    Poll::Ready(Some((reply, lsn)))
                }
                None if st.closing || st.failed.is_some() => {
                    st.parked.remove(&client);
                    Poll::Ready(None)
                }
                None => {
                    st.parked.insert(client, cx.waker().clone());
                    Poll::Pending
                }
            };
            (poll, wake)
        };
        wake.into_iter().for_each(Waker::wake);
        poll
    }

    /// The engine's next timer (a reserve's timeout, a reservation's TTR, a
    /// delay's end, a tube's pause).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.state().engine.next_deadline()
    }

    /// Runs the engine's timers at `now`.
    pub fn tick(&self, now: Instant) {
        let wake = {
            let mut st = self.state();
            st.engine.tick(now);
            self.after_engine(&mut st)
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Shutting down: puts are refused (`DRAINING`) and waiting reserves
    /// give up ([`Store::poll_reply`] is `Ready(None)`).
    pub fn close(&self) {
        let wake: Vec<Waker> = {
            let mut st = self.state();
            st.closing = true;
            st.engine.set_draining(true);
            st.parked.drain().map(|(_, w)| w).collect()
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Stages the engine's changes; returns the tasks to wake (completed
    /// reserves, the committer).
    fn after_engine(&self, st: &mut State) -> Vec<Waker> {
        let State {
            engine,
            journal,
            parked,
            committer_waiting,
            ..
        } = st;
        let before = journal.staged_lsn();
        for change in engine.take_changes() {
            journal.stage(change);
        }
        let wake: Vec<Waker> = engine
            .take_woken()
            .filter_map(|c| parked.remove(&c))
            .collect();
        let inline = self.inner.config.fsync == FsyncPolicy::Never
            && self.inner.inline.load(Ordering::Relaxed);
        if journal.staged_lsn() != before && !inline && std::mem::replace(committer_waiting, false)
        {
            self.inner.staged_cv.notify_one();
        }
        wake
    }

    /// Under [`FsyncPolicy::Never`] (nothing to fsync, so nothing to
    /// gather writers for): writes what is staged now, on the calling
    /// thread, as a connection does after each batch of requests, so a
    /// reply waits for no hand-off to another thread. True when it wrote
    /// (or nothing was staged); false under other policies, or when a
    /// commit is under way elsewhere (the committer is then woken to take
    /// what is left).
    pub fn commit_unsynced(&self, now: Instant) -> bool {
        if self.inner.config.fsync != FsyncPolicy::Never {
            return false;
        }
        self.inner.inline.store(true, Ordering::Relaxed);
        let writer = match self.inner.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut st = self.state();
                if std::mem::replace(&mut st.committer_waiting, false) {
                    drop(st);
                    self.inner.staged_cv.notify_one();
                }
                return false;
            }
        };
        if self.state().journal.is_empty() {
            return true;
        }
        match self.commit_with(writer, now) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "beanstalk commit failed");
                false
            }
        }
    }

    /// The lsn a reply given now must wait for: everything staged so far.
    fn pending_lsn(st: &State) -> u64 {
        let lsn = st.journal.staged_lsn();
        if lsn > st.durable_lsn { lsn } else { 0 }
    }

    /// The lsn `reply` must wait for. A reply handing out a job (a reserve,
    /// a peek) shows that job alone: it waits for that job's records only,
    /// not for what other clients staged meanwhile (a reserve would
    /// otherwise wait for their puts and deletes: a fsync more per job
    /// under load). Every other reply waits for everything staged so far
    /// (its own change is among it; a crash could undo nothing it shows).
    fn reply_lsn(st: &State, reply: &Response) -> u64 {
        let lsn = match reply {
            Response::Reserved { id, .. } | Response::Found { id, .. } => st.journal.job_lsn(*id),
            _ => st.journal.staged_lsn(),
        };
        if lsn > st.durable_lsn { lsn } else { 0 }
    }

    /// True once the records up to `lsn` are durable under the policy.
    pub fn is_durable(&self, lsn: u64) -> bool {
        self.state().durable_lsn >= lsn
    }

    /// `Ready(true)` once the records up to `lsn` are durable;
    /// `Ready(false)` if they never will be (the log failed, or the store
    /// stopped first).
    pub fn poll_durable(&self, lsn: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let mut st = self.state();
        if st.durable_lsn >= lsn {
            return Poll::Ready(true);
        }
        if st.failed.is_some() || st.stopped {
            return Poll::Ready(false);
        }
        if !st.durable_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.durable_waiters.push(cx.waker().clone());
            if st.gathering && st.durable_waiters.len() >= st.released_last {
                st.gathering = false;
                drop(st);
                self.inner.staged_cv.notify_one();
            }
        }
        Poll::Pending
    }

    /// `Ready` while staged bytes are under the bound; else `cx` is woken
    /// after the next commit.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.state();
        if st.journal.staged_bytes() < self.inner.config.max_staged_bytes || st.failed.is_some() {
            return Poll::Ready(());
        }
        if !st.room_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.room_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Blocks the committer's thread until records are staged, `timeout`
    /// passes, or the store stops; true when records wait.
    pub fn wait_staged(&self, timeout: Duration) -> bool {
        let mut st = self.state();
        st.committer_waiting = true;
        let (mut st, _) = self
            .inner
            .staged_cv
            .wait_timeout_while(st, timeout, |s| {
                let wait = (s.journal.is_empty() || s.failed.is_some()) && !s.stopped;
                // Woken, but the serving thread committed first: waiting
                // again, the next record staged must wake it again.
                s.committer_waiting |= wait;
                wait
            })
            .unwrap_or_else(PoisonError::into_inner);
        st.committer_waiting = false;
        !st.journal.is_empty() && st.failed.is_none()
    }

    /// Gives the thread serving connections `grace` to commit what is
    /// staged before it sleeps ([`Store::commit_before_park`]: its writers
    /// then get their replies without a hand-off between threads); true
    /// when records are still staged after it (that thread is busy: the
    /// committer commits them).
    pub fn wait_served(&self, grace: Duration) -> bool {
        let st = self.state();
        let (st, _) = self
            .inner
            .staged_cv
            .wait_timeout_while(st, grace, |s| {
                !s.journal.is_empty() && s.failed.is_none() && !s.stopped && !s.gathering
            })
            .unwrap_or_else(PoisonError::into_inner);
        !st.journal.is_empty() && st.failed.is_none()
    }

    /// Group commit across connections: when the last commit released
    /// several writers, waits (at most `max_wait`) until as many wait
    /// again, so their records share the next fsync. Under
    /// [`FsyncPolicy::Always`] only; returns whether it waited.
    pub fn gather(&self, max_wait: Duration) -> bool {
        if self.inner.config.fsync != FsyncPolicy::Always {
            return false;
        }
        let mut st = self.state();
        if st.released_last <= 1 || st.durable_waiters.len() >= st.released_last {
            return false;
        }
        st.gathering = true;
        let (mut st, _) = self
            .inner
            .staged_cv
            .wait_timeout_while(st, max_wait, |s| {
                s.gathering && s.durable_waiters.len() < s.released_last && !s.stopped
            })
            .unwrap_or_else(PoisonError::into_inner);
        st.gathering = false;
        true
    }

    /// How many writers the last commit released (their replies waited for it).
    pub fn last_released(&self) -> usize {
        self.state().released_last
    }

    /// A smoothed fsync time so far: how long gathering may wait.
    pub fn fsync_time(&self) -> Duration {
        Duration::from_micros(self.inner.fsync_us.load(Ordering::Relaxed))
    }

    /// Stops the store: held replies not durable yet are dropped once the
    /// committer wrote what was staged (call [`Store::commit`] once more).
    pub fn stop(&self) {
        let waiters = {
            let mut st = self.state();
            st.stopped = true;
            std::mem::take(&mut st.durable_waiters)
        };
        self.inner.staged_cv.notify_all();
        waiters.into_iter().for_each(Waker::wake);
    }

    /// One committer round: compaction stages live jobs of old segments
    /// again (within [`StoreConfig::compact_budget`]), then every record
    /// staged since the last round is written with one write, fsynced under
    /// [`FsyncPolicy::Always`] (or when the interval is due), and the
    /// replies that waited for it are released; a full segment is closed
    /// first (a new one opens with a mark); segments nothing needs any more
    /// are removed.
    ///
    /// # Errors
    /// The log's error when a write or fsync failed: the store is then
    /// failed (held replies dropped, every later request answered
    /// `INTERNAL_ERROR`) until reopened.
    pub fn commit(&self, now: Instant) -> Result<Committed, Error> {
        self.commit_with(lock(&self.inner.writer), now)
    }

    /// A commit by the thread serving connections just before it sleeps
    /// (tokio's `on_thread_park`): a lone request in flight is answered
    /// without a hand-off to the committer thread. Never waits: when the
    /// committer is writing, nothing is staged, or writers the last commit
    /// released are still due (the committer gathers them), it does nothing
    /// and returns false.
    pub fn commit_before_park(&self, now: Instant) -> bool {
        let writer = match self.inner.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        {
            let st = self.state();
            let expected = st.released_last.max(1);
            if st.journal.is_empty() || st.durable_waiters.len() < expected {
                return false;
            }
        }
        match self.commit_with(writer, now) {
            Ok(c) => c.records > 0,
            Err(e) => {
                tracing::error!(error = %e, "beanstalk commit failed");
                false
            }
        }
    }

    fn commit_with(
        &self,
        mut writer: MutexGuard<'_, Writer>,
        now: Instant,
    ) -> Result<Committed, Error> {
        let config = &self.inner.config;
        let (mut take, compacted) = {
            let mut st = self.state();
            if st.failed.is_some() {
                return Ok(Committed::default());
            }
            let State {
                engine, journal, ..
            } = &mut *st;
            let compacted = journal.compact(config.segment_bytes, config.compact_budget, |id| {
                engine.durable_job(id)
            });
            (st.journal.take(), compacted)
        };
        let records = take.batch.len();
        let policy = config.fsync;
        let end = writer.log.end();
        if records > 0 && end.offset > 0 && end.offset + take.bytes > config.segment_bytes {
            // The closed segment is never synced again: sync it unless
            // nothing ever is (Always: the log's roll syncs it).
            let synced = match policy {
                FsyncPolicy::Never | FsyncPolicy::Always => Ok(()),
                _ => writer.log.sync(),
            };
            let mut mark = Batch::default();
            journal::encode(
                &Record::Mark {
                    next_id: take.next_id,
                },
                &mut mark,
            );
            let rolled = synced
                .and_then(|()| writer.log.roll())
                .and_then(|()| writer.log.append_batch(&mut mark).map(drop));
            if let Err(e) = rolled {
                return Err(self.fail(e.into()));
            }
        }
        if records > 0
            && let Err(e) = writer.log.append_batch(&mut take.batch)
        {
            return Err(self.fail(e.into()));
        }
        let due = match policy {
            FsyncPolicy::Always => records > 0,
            FsyncPolicy::Interval(every) => {
                now.saturating_duration_since(writer.last_sync) >= every
            }
            _ => false,
        };
        if due {
            let t = (config.clock)();
            if let Err(e) = writer.log.sync() {
                return Err(self.fail(e.into()));
            }
            let took = (config.clock)().saturating_duration_since(t).as_micros() as u64;
            let old = self.inner.fsync_us.load(Ordering::Relaxed);
            let smooth = if old == 0 { took } else { (old * 7 + took) / 8 };
            self.inner.fsync_us.store(smooth, Ordering::Relaxed);
            writer.last_sync = now;
        }
        let (active, bytes, start) = (
            writer.log.end().segment,
            writer.log.len_bytes(),
            writer.log.start().segment,
        );
        // Under an interval policy the records compaction restated are
        // durable only once synced: the segments they came from go then.
        let release =
            take.keep_from > start && (due || !matches!(policy, FsyncPolicy::Interval(_)));
        drop(writer);
        if records > 0 {
            self.inner.commits.fetch_add(1, Ordering::Relaxed);
        }
        let wake = {
            let mut st = self.state();
            st.journal.committed(active, bytes);
            st.durable_lsn = st.durable_lsn.max(take.lsn);
            st.written += records as u64;
            let mut wake = std::mem::take(&mut st.durable_waiters);
            st.released_last = wake.len();
            wake.append(&mut st.room_waiters);
            wake
        };
        wake.into_iter().for_each(Waker::wake);
        if release {
            // Everything those segments held is restated further on, and
            // durable now.
            let mut writer = lock(&self.inner.writer);
            writer.log.release_before(Position {
                segment: take.keep_from,
                offset: 0,
            })?;
            // Read again: another commit may have rolled the log meanwhile.
            let (active, bytes) = (writer.log.end().segment, writer.log.len_bytes());
            drop(writer);
            let mut st = self.state();
            st.journal.committed(active, bytes);
        }
        Ok(Committed {
            records,
            synced: due,
            compacted,
        })
    }

    /// Removes the segments that hold nothing a restart needs (at open).
    fn release_unneeded(&self) -> Result<(), Error> {
        let keep_from = self.state().journal.keep_from();
        let mut writer = lock(&self.inner.writer);
        if keep_from > writer.log.start().segment {
            writer.log.release_before(Position {
                segment: keep_from,
                offset: 0,
            })?;
            let (active, bytes) = (writer.log.end().segment, writer.log.len_bytes());
            drop(writer);
            self.state().journal.committed(active, bytes);
        }
        Ok(())
    }

    /// Forces written records to disk now (an interval's timer, a shutdown).
    ///
    /// # Errors
    /// As [`Store::commit`].
    pub fn sync(&self, now: Instant) -> Result<(), Error> {
        let mut writer = lock(&self.inner.writer);
        if let Err(e) = writer.log.sync() {
            drop(writer);
            return Err(self.fail(e.into()));
        }
        writer.last_sync = now;
        Ok(())
    }

    fn fail(&self, e: Error) -> Error {
        tracing::error!(error = %e, "beanstalk journal failed: refusing requests until reopened");
        let wake = {
            let mut st = self.state();
            st.failed = Some(e.to_string());
            st.journal.discard();
            let mut w = std::mem::take(&mut st.durable_waiters);
            w.append(&mut st.room_waiters);
            w.extend(st.parked.drain().map(|(_, w)| w));
            w
        };
        wake.into_iter().for_each(Waker::wake);
        e
    }

    /// True once a write or fsync failed.
    pub fn is_failed(&self) -> bool {
        self.state().failed.is_some()
    }

    /// The log's figures.
    pub fn log_stats(&self) -> LogStats {
        let (bytes, segments, oldest, current) = {
            let w = lock(&self.inner.writer);
            (
                w.log.len_bytes(),
                w.log.segment_count(),
                w.log.start().segment,
                w.log.end().segment,
            )
        };
        let st = self.state();
        LogStats {
            bytes,
            segments,
            oldest,
            current,
            live_jobs: st.journal.live_jobs(),
            live_bytes: st.journal.live_bytes(),
            written: st.written,
            rewritten: st.journal.rewritten(),
            commits: self.inner.commits.load(Ordering::Relaxed),
        }
    }
}
