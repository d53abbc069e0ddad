//! The broker: one log, its offset index, sessions and streams, and group commit.
//!
//! ```text
//!  connections ──publish / XADD / ACK──▶ State (one lock): offset assigned, record staged,
//!      ▲                                   sessions and streams changed, reply held on an lsn
//!      │ replies released                        │ staged batch
//!      │ (durable lsn ≥ held lsn)                ▼
//!      └──────────────────────────── committer: one write, one fsync (`always`) per round;
//!                                     every record staged meanwhile waits for the next round
//!  sessions / subscribers ◀── LogReader (committed records) ◀──┘
//! ```
//! The committer is a loop an adapter runs on a thread of its own
//! ([`Broker::commit`], [`Broker::wait_staged`], [`Broker::tick`]); the
//! broker itself spawns nothing and reads no clock: times are arguments.
//!
//! Segments. The broker rolls the log itself, so that every segment after
//! the first opens with a checkpoint that restates every session and every
//! stream's metadata; a segment can then go (retention) without losing
//! state, and recovery replays from the oldest segment kept, once.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kids_core::{Batch, Fsync, LogFs, LogReader, Position, SegmentConfig, SegmentLog, StdFs};

use crate::record::{self, Record, SessionOp};
use crate::sessions::{Deliver, Lease, SessionError, Sessions, SessionsConfig};
use crate::stats::{Histogram, Stats};
use crate::stream::{Ctx, Outcome, StreamCommand, StreamOp, Streams, StreamsConfig};
use crate::{Error, RecordError};

/// When appended records are forced to disk before their replies go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// A reply waits for the fsync that covers its record; concurrent and
    /// pipelined writers share one fsync (group commit). Survives a power loss.
    #[default]
    Always,
    /// Records are written before their reply and fsynced every interval:
    /// survives a process kill; a power loss may take the last interval.
    Interval(Duration),
    /// Records are written before their reply; the kernel writes back when it
    /// likes. Survives a process kill only.
    Never,
}

/// Retention: how long the log keeps messages nobody needs any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// A segment whose newest record is older than this goes, even if a
    /// session or stream still needs it (those get a gap).
    pub max_age: Option<Duration>,
    /// While the log holds more than this, its oldest segment goes, needed or not.
    pub max_bytes: Option<u64>,
}

/// Settings of a [`Broker`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// A segment is closed, and a new one started, past this size.
    pub segment_bytes: u64,
    /// Largest payload (message, stream entry) accepted.
    pub max_payload: usize,
    /// Bytes staged and not yet written after which publishers wait.
    pub max_staged_bytes: u64,
    /// Retention by age and size.
    pub retention: Retention,
    /// Sessions.
    pub sessions: SessionsConfig,
    /// Streams.
    pub streams: StreamsConfig,
    /// The clock fsync latencies (`INFO`) are measured with, the one
    /// reading of time the broker does itself; a test passes its own.
    pub clock: fn() -> Instant,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            max_payload: 16 << 20,
            max_staged_bytes: 64 << 20,
            retention: Retention::default(),
            sessions: SessionsConfig::default(),
            streams: StreamsConfig::default(),
            clock: Instant::now,
        }
    }
}

impl BrokerConfig {
    /// Sets the fsync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }
    /// Sets the segment size (1 KiB to 1 GiB: positions in a segment are
    /// indexed as 32 bits).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.clamp(1024, MAX_SEGMENT);
        self
    }
    /// Sets retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
    /// Sets the sessions' settings.
    pub fn sessions(mut self, sessions: SessionsConfig) -> Self {
        self.sessions = sessions;
        self
    }
    /// Sets the streams' settings.
    pub fn streams(mut self, streams: StreamsConfig) -> Self {
        self.streams = streams;
        self
    }
}

/// The largest segment: positions in a segment are indexed as 32 bits, and
/// one batch (bounded by the staging bound) may run past the size.
const MAX_SEGMENT: u64 = 1 << 30;

/// The largest record the log accepts: far above any one command's, so that
/// a checkpoint of many sessions or a long pending list is never refused.
const MAX_LOG_RECORD: u32 = 1 << 30;

/// Blocked stream readers registered at once before they are all woken
/// to register again (those that left drop out).
const MAX_STREAM_WAITERS: usize = 4096;

/// Why a write was not staged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The log failed (a failed fsync, a full disk): nothing more is
    /// written until the broker is reopened.
    #[error("ERR sink log failed: {0}")]
    Failed(String),
    /// A payload over the bound.
    #[error("ERR payload of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An empty topic, or one over the bound.
    #[error("ERR invalid topic length {0}")]
    Topic(usize),
}

/// Where a reader starts for an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// The first record with an offset at or after the one asked for is at
    /// or after this position (reading from here skips nothing).
    At(Position),
    /// The offset is before the first one retained.
    Gap {
        /// The first offset retained.
        first: u64,
    },
}

/// What [`Broker::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Whole records read.
    pub records: u64,
    /// Messages and stream entries among them.
    pub messages: u64,
    /// Bytes of torn tail cut.
    pub truncated_bytes: u64,
    /// Sessions restored.
    pub sessions: usize,
    /// Streams restored.
    pub streams: usize,
    /// The offset the next message takes.
    pub next_offset: u64,
}

/// What one [`Broker::commit`] round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Records written.
    pub records: usize,
    /// Whether an fsync covered them.
    pub synced: bool,
}

/// One segment's offsets and the byte position of each.
#[derive(Debug)]
struct SegIndex {
    id: u64,
    first_offset: u64,
    positions: Vec<u32>,
    /// Arrival time of its newest message (ms since the epoch), 0 if none.
    last_time_ms: u64,
    /// Its size, once closed (the active segment's is `State::active_bytes`).
    bytes: u64,
    /// It opens with a whole checkpoint: the segments before it may go.
    checkpointed: bool,
}

/// Offset → position, per segment.
#[derive(Debug, Default)]
struct Index {
    segs: VecDeque<SegIndex>,
}

impl Index {
    fn add(&mut self, at: Position, offset: u64, time_ms: u64) {
        if self.segs.back().is_none_or(|s| s.id != at.segment) {
            self.start_segment(at.segment, offset);
        }
        if let Some(s) = self.segs.back_mut() {
            // Offsets are dense within a segment; a hole would be a bug.
            if s.first_offset + s.positions.len() as u64 == offset {
                s.positions.push(at.offset as u32);
            } else {
                tracing::error!(offset, "offset out of sequence in the index");
            }
            s.last_time_ms = s.last_time_ms.max(time_ms);
        }
    }

    fn start_segment(&mut self, id: u64, first_offset: u64) {
        if self.segs.back().is_none_or(|s| s.id < id) {
            self.segs.push_back(SegIndex {
                id,
                first_offset,
                positions: Vec::new(),
                last_time_ms: 0,
                bytes: 0,
                checkpointed: false,
            });
        }
    }

    fn first_offset(&self, next_offset: u64) -> u64 {
        self.segs.front().map_or(next_offset, |s| s.first_offset)
    }

    fn seek(&self, offset: u64, end: Position, next_offset: u64) -> Seek {
        let first = self.first_offset(next_offset);
        if offset < first {
            return Seek::Gap { first };
        }
        // The last segment whose first offset is at or before it.
        let i = self.segs.partition_point(|s| s.first_offset <= offset);
        let Some(seg) = i.checked_sub(1).and_then(|i| self.segs.get(i)) else {
            return Seek::At(end);
        };
        match seg.positions.get((offset - seg.first_offset) as usize) {
            Some(&p) => Seek::At(Position {
                segment: seg.id,
                offset: u64::from(p),
            }),
            // Not indexed yet (or in a later segment): every record after
            // the indexed ones is at or after the end.
            None => match self.segs.get(i) {
                Some(next) => Seek::At(Position {
                    segment: next.id,
                    offset: 0,
                }),
                None => Seek::At(end),
            },
        }
    }
}

/// A record staged for the next commit, as the index needs it.
#[derive(Debug, Clone, Copy)]
struct StagedEntry {
    offset: u64,
    rel: u64,
    time_ms: u64,
}

/// Everything behind the broker's one lock.
struct State {
    staged: Batch,
    staged_bytes: u64,
    staged_index: Vec<StagedEntry>,
    next_offset: u64,
    /// The offset after the last one written.
    written_next: u64,
    /// The lsn (1-based count of records staged) of the last record staged.
    staged_lsn: u64,
    durable_lsn: u64,
    /// Position after the last record written (and indexed).
    end: Position,
    index: Index,
    sessions: Sessions,
    streams: Streams,
    /// Bumped on every stream change, for blocked readers.
    stream_version: u64,
    durable_waiters: Vec<Waker>,
    room_waiters: Vec<Waker>,
    stream_waiters: Vec<Waker>,
    failed: Option<String>,
    stopped: bool,
    /// The committer sleeps in `wait_staged`: the next stager wakes it (one
    /// wake per sleep, not a syscall per record).
    committer_waiting: bool,
    /// Writers the last commit released: they are expected to write again.
    released_last: usize,
    /// The committer waits for those writers to stage before committing.
    gathering: bool,
    stats: Stats,
    /// Size of the active segment, as the committer last left it.
    active_bytes: u64,
    /// Size of the active segment's head checkpoint.
    checkpoint_bytes: u64,
    ops: Vec<StreamOp>,
    op_buf: Vec<u8>,
}

impl State {
    fn stage_len(&mut self, len: usize, offset: Option<(u64, u64)>) -> u64 {
        if let Some((offset, time_ms)) = offset {
            self.staged_index.push(StagedEntry {
                offset,
                rel: self.staged_bytes,
                time_ms,
            });
        }
        self.staged_bytes += 8 + len as u64;
        self.staged_lsn += 1;
        self.staged_lsn
    }

    fn stage_session(&mut self, op: &SessionOp<'_>) -> u64 {
        let len = record::push_session(&mut self.staged, op);
        self.stage_len(len, None)
    }

    /// Stages the stream operations in `self.ops`; returns the last lsn.
    fn stage_stream_ops(&mut self, time_ms: u64) -> Option<u64> {
        let ops = std::mem::take(&mut self.ops);
        let mut lsn = None;
        for op in &ops {
            self.op_buf.clear();
            op.encode(&mut self.op_buf);
            let buf = std::mem::take(&mut self.op_buf);
            let l = match op {
                StreamOp::Add { offset, .. } => {
                    let len = record::push_stream_entry(&mut self.staged, *offset, &buf);
                    self.stage_len(len, Some((*offset, time_ms)))
                }
                _ => {
                    let len = record::push_stream_op(&mut self.staged, &buf);
                    self.stage_len(len, None)
                }
            };
            self.op_buf = buf;
            lsn = Some(l);
        }
        self.ops = ops;
        self.ops.clear();
        if lsn.is_some() {
            self.stream_version += 1;
        }
        lsn
    }

    /// A checkpoint: every session and the streams' metadata, as records.
    fn checkpoint(&mut self, batch: &mut Batch) {
        record::push_checkpoint(batch, self.next_offset);
        for s in self.sessions.iter() {
            let filters: Vec<&[u8]> = s.filters().iter().map(|f| f.source()).collect();
            record::push_session(
                batch,
                &SessionOp::Create {
                    name: s.name(),
                    cursor: s.cursor(),
                    filters,
                },
            );
        }
        let mut ops = Vec::new();
        self.streams.checkpoint(&mut ops);
        let mut buf = Vec::new();
        for op in &ops {
            buf.clear();
            op.encode(&mut buf);
            record::push_stream_op(batch, &buf);
        }
        record::push_checkpoint_end(batch);
    }

    fn wake_stream_waiters(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.stream_waiters)
    }

    /// The lsn a reply that reads state must wait for: the last staged,
    /// when it is not durable yet.
    fn barrier(&self) -> Option<u64> {
        (self.staged_lsn > self.durable_lsn).then_some(self.staged_lsn)
    }

    /// The lowest offset any session or stream still needs, from state
    /// that is durable: called only when nothing staged is pending.
    fn pin(&self) -> u64 {
        self.sessions
            .iter()
            .map(|s| s.cursor() + 1)
            .chain(self.streams.oldest_offset())
            .min()
            .unwrap_or(self.next_offset)
    }
}

/// The committer's side: the log itself.
struct Writer {
    log: SegmentLog,
    last_sync: Instant,
}

struct Inner {
    dir: PathBuf,
    config: BrokerConfig,
    state: Mutex<State>,
    staged_cv: Condvar,
    writer: Mutex<Writer>,
    reader: LogReader,
    /// The instant and wall time (ms since the epoch) the broker was opened
    /// at: wall time of `now` is the base plus the time since.
    base: (Instant, u64),
    fsync_hist: Mutex<Histogram>,
    group_hist: Mutex<Histogram>,
    commits: AtomicU64,
}

/// A durable pub/sub broker on one data directory: cheap to clone, one per
/// server, shared by every connection and the committer.
///
/// ```
/// use std::time::Instant;
/// use sink_core::{Broker, BrokerConfig, FsyncPolicy};
/// # let dir = tempfile::tempdir().unwrap();
/// let now = Instant::now();
/// let config = BrokerConfig::default().fsync(FsyncPolicy::Always);
/// let (broker, _) = Broker::open(dir.path(), config, now, 1_700_000_000_000).unwrap();
/// let (offset, lsn) = broker.publish(b"web", b"GET /", now).unwrap();
/// assert_eq!(offset, 1);
/// assert!(!broker.is_durable(lsn));
/// broker.commit(now).unwrap(); // the committer's round: one write, one fsync
/// assert!(broker.is_durable(lsn));
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Replays one record into the state being recovered.
struct Replay {
    sessions: Sessions,
    streams: Streams,
    index: Index,
    next_offset: u64,
    messages: u64,
    /// Inside a checkpoint that restates what is already known.
    skipping: bool,
    /// Nothing applied yet: a checkpoint here is the base state.
    fresh: bool,
    /// A checkpoint started and not yet ended.
    in_checkpoint: bool,
    /// The base state came from a checkpoint that has not ended (yet).
    base_incomplete: bool,
    sessions_config: SessionsConfig,
    streams_config: StreamsConfig,
    error: Option<Error>,
    now: Instant,
}

impl Replay {
    fn visit(&mut self, at: Position, payload: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(reason) = self.apply(at, payload) {
            self.error = Some(Error::Record { at, reason });
        }
    }

    fn apply(&mut self, at: Position, payload: &[u8]) -> Result<(), RecordError> {
        let rec = record::decode(payload)?;
        let fresh = std::mem::replace(&mut self.fresh, false);
        let next = self.next_offset;
        self.index.start_segment(at.segment, next);
        if let Some(seg) = self.index.segs.back_mut() {
            seg.bytes = at.offset + 8 + payload.len() as u64;
        }
        match rec {
            Record::Checkpoint { next_offset } => {
                self.next_offset = self.next_offset.max(next_offset);
                if let Some(seg) = self.index.segs.back_mut() {
                    seg.first_offset = seg.first_offset.max(next_offset);
                }
                if self.base_incomplete {
                    // The state so far grew from a checkpoint cut short (a
                    // crash mid-roll, its predecessors released since):
                    // this whole one restates everything, so it is the base.
                    self.sessions = Sessions::new(self.sessions_config);
                    self.streams = Streams::new(self.streams_config);
                    self.skipping = false;
                    self.base_incomplete = true;
                } else {
                    self.skipping = !fresh;
                    self.base_incomplete = fresh;
                }
                self.in_checkpoint = true;
                return Ok(());
            }
            Record::CheckpointEnd => {
                if self.in_checkpoint
                    && let Some(seg) = self.index.segs.back_mut()
                {
                    seg.checkpointed = true;
                }
                if self.in_checkpoint && !self.skipping {
                    self.base_incomplete = false;
                }
                self.skipping = false;
                self.in_checkpoint = false;
                return Ok(());
            }
            _ if self.skipping => return Ok(()),
            Record::Message {
                offset, time_ms, ..
            } => {
                self.index.add(at, offset, time_ms);
                self.next_offset = self.next_offset.max(offset + 1);
                self.messages += 1;
            }
            Record::StreamEntry { offset, op } => {
                let op = StreamOp::decode(op).map_err(|e| RecordError::Stream(e.to_string()))?;
                self.streams
                    .apply(&op)
                    .map_err(|e| RecordError::Stream(e.to_string()))?;
                let time_ms = match &op {
                    StreamOp::Add { id, .. } => id.ms,
                    _ => 0,
                };
                self.index.add(at, offset, time_ms);
                self.next_offset = self.next_offset.max(offset + 1);
                self.messages += 1;
            }
            Record::StreamOp(op) => {
                let op = StreamOp::decode(op).map_err(|e| RecordError::Stream(e.to_string()))?;
                self.streams
                    .apply(&op)
                    .map_err(|e| RecordError::Stream(e.to_string()))?;
            }
            Record::Session(SessionOp::Create {
                name,
                cursor,
                filters,
            }) => self.sessions.restore(name, &filters, cursor, self.now),
            Record::Session(SessionOp::Ack { name, cursor }) => {
                self.sessions.restore_ack(name, cursor);
            }
            Record::Session(SessionOp::Delete { name }) => {
                self.sessions.delete(name);
            }
        }
        Ok(())
    }
}

impl Broker {
    /// Opens (creating if needed) the broker's log in `dir`, recovering
    /// from a crash: a torn tail is truncated, every whole record kept,
    /// sessions and streams replayed, cursors clamped to the log's end.
    /// `now` and `wall_ms` (ms since the Unix epoch) anchor its clock.
    ///
    /// # Errors
    /// [`Error::Log`] when the log cannot be read or is corrupt (a damaged
    /// record that is not a torn tail); [`Error::Record`] when a whole
    /// record does not decode.
    pub fn open(
        dir: impl AsRef<Path>,
        config: BrokerConfig,
        now: Instant,
        wall_ms: u64,
    ) -> Result<(Self, Recovered), Error> {
        Self::open_with(dir, config, Arc::new(StdFs), now, wall_ms)
    }

    /// As [`Broker::open`], doing every file operation through `fs` (a
    /// test's faults: a full disk, a failed fsync).
    ///
    /// # Errors
    /// As [`Broker::open`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: BrokerConfig,
        fs: Arc<dyn LogFs>,
        now: Instant,
        wall_ms: u64,
    ) -> Result<(Self, Recovered), Error> {
        let dir = dir.as_ref().to_path_buf();
        let fsync = match config.fsync {
            // Synced by the committer, which then shows records to readers.
            FsyncPolicy::Always => Fsync::Every(u32::MAX),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => Fsync::Never,
        };
        let seg = SegmentConfig::default()
            // The broker rolls itself, checkpoint first; the log never does.
            .max_segment_bytes(u64::MAX)
            .max_record_bytes(MAX_LOG_RECORD)
            .fsync(fsync);
        let mut replay = Replay {
            sessions: Sessions::new(config.sessions),
            streams: Streams::new(config.streams),
            index: Index::default(),
            next_offset: 1,
            messages: 0,
            skipping: false,
            fresh: true,
            in_checkpoint: false,
            base_incomplete: false,
            sessions_config: config.sessions,
            streams_config: config.streams,
            error: None,
            now,
        };
        let (log, recovery) =
            SegmentLog::open_visiting(&dir, seg, fs, |at, p| replay.visit(at, p))?;
        if let Some(e) = replay.error {
            return Err(e);
        }
        let Replay {
            mut sessions,
            mut streams,
            mut index,
            next_offset,
            messages,
            ..
        } = replay;
        let end = log.end();
        index.start_segment(end.segment, next_offset);
        // Stream entries before the first message kept went with their
        // segments (retention by age or size).
        streams.forget_before(index.first_offset(next_offset));
        // Cursors never past what the log holds.
        let last = next_offset - 1;
        let over: Vec<Bytes> = sessions
            .iter()
            .filter(|s| s.cursor() > last)
            .map(|s| s.name().clone())
            .collect();
        for name in over {
            let filters: Vec<Vec<u8>> = sessions
                .get(&name)
                .map(|s| s.filters().iter().map(|f| f.source().to_vec()).collect())
                .unwrap_or_default();
            let f: Vec<&[u8]> = filters.iter().map(Vec::as_slice).collect();
            sessions.restore(&name, &f, last, now);
        }
        // The active segment's size is kept apart.
        if let Some(seg) = index.segs.back_mut() {
            seg.bytes = 0;
        }
        let recovered = Recovered {
            records: recovery.records,
            messages,
            truncated_bytes: recovery.truncated_bytes,
            sessions: sessions.len(),
            streams: streams.len(),
            next_offset,
        };
        let first_id = index.segs.front().map_or(end.segment, |s| s.id);
        let needs_checkpoint =
            end.segment != first_id && index.segs.back().is_some_and(|s| !s.checkpointed);
        let active_bytes = end.offset;
        let reader = log.reader();
        let state = State {
            staged: Batch::default(),
            staged_bytes: 0,
            staged_index: Vec::new(),
            next_offset,
            written_next: next_offset,
            staged_lsn: 0,
            durable_lsn: 0,
            end,
            index,
            sessions,
            streams,
            stream_version: 0,
            durable_waiters: Vec::new(),
            room_waiters: Vec::new(),
            stream_waiters: Vec::new(),
            failed: None,
            stopped: false,
            committer_waiting: false,
            released_last: 0,
            gathering: false,
            stats: Stats::default(),
            active_bytes,
            checkpoint_bytes: 0,
            ops: Vec::new(),
            op_buf: Vec::new(),
        };
        let inner = Inner {
            dir,
            config,
            state: Mutex::new(state),
            staged_cv: Condvar::new(),
            writer: Mutex::new(Writer {
                log,
                last_sync: now,
            }),
            reader,
            base: (now, wall_ms),
            fsync_hist: Mutex::new(Histogram::default()),
            group_hist: Mutex::new(Histogram::default()),
            commits: AtomicU64::new(0),
        };
        tracing::info!(
            dir = %inner.dir.display(),
            records = recovered.records,
            truncated = recovered.truncated_bytes,
            sessions = recovered.sessions,
            next_offset,
            "sink log recovered"
        );
        let broker = Self {
            inner: Arc::new(inner),
        };
        if broker.inner.config.fsync != FsyncPolicy::Never {
            // Records a killed process wrote but never synced are served as
            // committed from now on: make them durable first.
            broker.sync(now)?;
        }
        if needs_checkpoint {
            // A crash between starting a segment and writing its
            // checkpoint: start another one, checkpoint first.
            broker.roll_now(now)?;
        }
        Ok((broker, recovered))
    }

    /// Closes the active segment and starts a new one with a checkpoint.
    fn roll_now(&self, now: Instant) -> Result<(), Error> {
        let mut cp = Batch::default();
        self.state().checkpoint(&mut cp);
        let mut writer = lock(&self.inner.writer);
        let closed = writer.log.end();
        writer.log.roll()?;
        writer.log.append_batch(&mut cp)?;
        writer.log.sync()?;
        let end = writer.log.end();
        drop(writer);
        let mut st = self.state();
        self.after_roll(&mut st, closed, end);
        let _ = now;
        Ok(())
    }

    /// The index after a roll from the segment that ended at `closed` to
    /// the one now ending at `end` (its checkpoint written).
    fn after_roll(&self, st: &mut State, closed: Position, end: Position) {
        if let Some(seg) = st.index.segs.iter_mut().find(|s| s.id == closed.segment) {
            seg.bytes = closed.offset;
        }
        let next = st.written_next;
        st.index.start_segment(end.segment, next);
        if let Some(seg) = st.index.segs.back_mut() {
            seg.checkpointed = true;
        }
        st.end = end;
        st.active_bytes = end.offset;
        st.checkpoint_bytes = end.offset;
    }

    /// The settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Wall time of `now`, in ms since the Unix epoch.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        let (base, wall) = self.inner.base;
        wall + now.saturating_duration_since(base).as_millis() as u64
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Stages a message on `topic`; returns its offset and the lsn whose
    /// durability its reply waits for ([`Broker::poll_durable`]).
    ///
    /// # Errors
    /// [`WriteError`]: a bad topic, a payload over the bound, a failed log.
    pub fn publish(
        &self,
        topic: &[u8],
        payload: &[u8],
        now: Instant,
    ) -> Result<(u64, u64), WriteError> {
        if topic.is_empty() || topic.len() > record::MAX_TOPIC {
            return Err(WriteError::Topic(topic.len()));
        }
        if payload.len() > self.inner.config.max_payload {
            return Err(WriteError::TooLarge {
                len: payload.len(),
                max: self.inner.config.max_payload,
            });
        }
        let time_ms = self.wall_ms(now);
        let mut st = self.state();
        if let Some(f) = &st.failed {
            return Err(WriteError::Failed(f.clone()));
        }
        let offset = st.next_offset;
        st.next_offset += 1;
        let len = record::push_message(&mut st.staged, offset, time_ms, topic, payload);
        let lsn = st.stage_len(len, Some((offset, time_ms)));
        st.stats.published += 1;
        self.wake_committer(st);
        Ok((offset, lsn))
    }

    /// Runs a stream command: its reply goes to `w`; the lsn its reply
    /// waits for, if it changed anything.
    ///
    /// # Errors
    /// [`WriteError::Failed`] once the log failed (nothing is run).
    pub fn stream(
        &self,
        cmd: StreamCommand,
        args: &kids_core::Request,
        now: Instant,
        w: &mut kids_core::ReplyWriter<'_>,
    ) -> Result<(Outcome, Option<u64>), WriteError> {
        // An entry is bounded as a message is; checked before the engine
        // changes anything.
        let len: usize = args.iter().skip(1).map(|a| a.len()).sum();
        if len > self.inner.config.max_payload + record::MAX_TOPIC {
            return Err(WriteError::TooLarge {
                len,
                max: self.inner.config.max_payload + record::MAX_TOPIC,
            });
        }
        let now_ms = self.wall_ms(now);
        let mut st = self.state();
        if let Some(f) = &st.failed {
            return Err(WriteError::Failed(f.clone()));
        }
        let mut ops = std::mem::take(&mut st.ops);
        let mut cx = Ctx {
            now_ms,
            next_offset: st.next_offset,
            ops: &mut ops,
        };
        let outcome = st.streams.run(cmd, args, &mut cx, w);
        let next = cx.next_offset;
        st.next_offset = next;
        st.ops = ops;
        let lsn = st.stage_stream_ops(now_ms);
        let wake = if lsn.is_some() {
            st.wake_stream_waiters()
        } else {
            Vec::new()
        };
        // A reply that read state (or found a write already done) waits
        // until everything staged before it is durable: no client sees
        // what a crash could take back.
        let lsn = lsn.or_else(|| st.barrier());
        if lsn.is_some() {
            self.wake_committer(st);
        } else {
            drop(st);
        }
        wake.into_iter().for_each(Waker::wake);
        Ok((outcome, lsn))
    }

    /// `Ready` once streams changed after `version` (a blocked XREAD runs
    /// again), with the current version.
    pub fn poll_stream_change(&self, version: u64, cx: &mut Context<'_>) -> Poll<u64> {
        let mut st = self.state();
        if st.stream_version != version || st.failed.is_some() {
            return Poll::Ready(st.stream_version);
        }
        if st.stream_waiters.len() >= MAX_STREAM_WAITERS {
            // Readers that left stay registered until a change: wake them
            // all now; those still blocked register again.
            let all = std::mem::take(&mut st.stream_waiters);
            drop(st);
            all.into_iter().for_each(Waker::wake);
            st = self.state();
        }
        if !st.stream_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.stream_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The streams' change counter.
    pub fn stream_version(&self) -> u64 {
        self.state().stream_version
    }

    /// Creates a session at the log's end (only later messages reach it).
    /// Returns whether it was new, and the lsn to wait for when it was.
    ///
    /// # Errors
    /// [`SessionError`] as [`Sessions::create`]; a bad name or filter.
    pub fn create_session(
        &self,
        name: &[u8],
        filters: &[&[u8]],
        now: Instant,
    ) -> Result<Option<u64>, SessionError> {
        let mut st = self.state();
        let cursor = st.next_offset - 1;
        if let Some(f) = &st.failed {
            return Err(SessionError::LogFailed(f.clone()));
        }
        if st.sessions.create(name, filters, cursor, now)? {
            let lsn = st.stage_session(&SessionOp::Create {
                name,
                cursor,
                filters: filters.to_vec(),
            });
            self.wake_committer(st);
            Ok(Some(lsn))
        } else {
            // Created by a write that may not be durable yet.
            Ok(st.barrier())
        }
    }

    /// Loads a session for `client`, with where its reader starts.
    ///
    /// # Errors
    /// As [`Sessions::load`].
    pub fn load_session(
        &self,
        name: &[u8],
        client: u64,
        now: Instant,
    ) -> Result<(Lease, Position), SessionError> {
        let mut st = self.state();
        let next = st.next_offset;
        let first = st.index.first_offset(next);
        let lease = st.sessions.load(name, client, first, now)?;
        let from = match st.index.seek(lease.cursor + 1, st.end, next) {
            Seek::At(p) => p,
            Seek::Gap { first } => {
                st.sessions.unload(name, lease.lease, now);
                return Err(SessionError::Gap {
                    cursor: lease.cursor,
                    first,
                });
            }
        };
        Ok((lease, from))
    }

    /// As [`Sessions::may_deliver`], with the room left in the window and
    /// the cursor (nothing at or before it is delivered).
    pub fn may_deliver(&self, name: &[u8], lease: u64, waker: &Waker) -> (Deliver, usize, u64) {
        let mut st = self.state();
        let d = st.sessions.may_deliver(name, lease, Some(waker));
        let (room, cursor) = st.sessions.get(name).map_or((0, 0), |s| {
            (
                (st.sessions.config().window as usize).saturating_sub(s.inflight()),
                s.cursor(),
            )
        });
        (d, room, cursor)
    }

    /// Records deliveries under `lease`.
    pub fn delivered(&self, name: &[u8], lease: u64, offsets: &[u64]) {
        let mut st = self.state();
        for &o in offsets {
            st.sessions.delivered(name, lease, o);
        }
        st.stats.delivered += offsets.len() as u64;
    }

    /// A cumulative acknowledgement; returns the cursor and the lsn to wait
    /// for when it moved.
    ///
    /// # Errors
    /// As [`Sessions::ack`].
    pub fn ack(
        &self,
        name: &[u8],
        client: u64,
        offset: u64,
        now: Instant,
    ) -> Result<(u64, Option<u64>), SessionError> {
        let mut st = self.state();
        if let Some(f) = &st.failed {
            return Err(SessionError::LogFailed(f.clone()));
        }
        let last = st.next_offset - 1;
        let (cursor, moved) = st.sessions.ack(name, client, offset, last, now)?;
        if !moved {
            return Ok((cursor, st.barrier()));
        }
        let lsn = st.stage_session(&SessionOp::Ack { name, cursor });
        self.wake_committer(st);
        Ok((cursor, Some(lsn)))
    }

    /// Moves the cursor of a session loaded under `lease` to `offset`
    /// without a client's ack: the loading connection read every committed
    /// record up to it and nothing is unacknowledged, so the offsets passed
    /// matched no filter. Logged as an ack; no reply waits for it.
    pub fn skip_to(&self, name: &[u8], lease: u64, offset: u64, now: Instant) {
        let mut st = self.state();
        if st.failed.is_some() {
            return;
        }
        let holder = st
            .sessions
            .get(name)
            .filter(|s| s.inflight() == 0)
            .and_then(|s| s.owner());
        let Some(client) = holder else { return };
        if st.sessions.lease_of(name) != Some(lease) {
            return;
        }
        let last = st.next_offset - 1;
        if let Ok((cursor, true)) = st.sessions.ack(name, client, offset.min(last), last, now) {
            st.stage_session(&SessionOp::Ack { name, cursor });
            self.wake_committer(st);
        }
    }

    /// Ends a load.
    pub fn unload(&self, name: &[u8], lease: u64, now: Instant) {
        self.state().sessions.unload(name, lease, now);
    }

    /// Deletes a session; the lsn to wait for when it existed.
    pub fn delete_session(&self, name: &[u8]) -> Option<u64> {
        let mut st = self.state();
        if st.failed.is_some() || !st.sessions.delete(name) {
            return st.barrier();
        }
        let lsn = st.stage_session(&SessionOp::Delete { name });
        self.wake_committer(st);
        Some(lsn)
    }

    /// Runs `f` on the sessions (read-only: INFO, tests).
    pub fn with_sessions<T>(&self, f: impl FnOnce(&Sessions) -> T) -> T {
        f(&self.state().sessions)
    }

    /// A reader of committed records, with its own file handle.
    pub fn reader(&self) -> LogReader {
        self.inner.reader.clone()
    }

    /// Where a reader of messages from `offset` on starts.
    pub fn seek(&self, offset: u64) -> Seek {
        let st = self.state();
        st.index.seek(offset, st.end, st.next_offset)
    }

    /// The first offset retained.
    pub fn first_offset(&self) -> u64 {
        let st = self.state();
        st.index.first_offset(st.next_offset)
    }

    /// The last offset given out (0: none).
    pub fn last_offset(&self) -> u64 {
        self.state().next_offset - 1
    }

    /// True once the record of `lsn` is durable under the policy.
    pub fn is_durable(&self, lsn: u64) -> bool {
        self.state().durable_lsn >= lsn
    }

    /// `Ready(true)` once the record of `lsn` is durable; `Ready(false)` if
    /// it never will be (the log failed, or the broker stopped first).
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
        if st.staged_bytes < self.inner.config.max_staged_bytes || st.failed.is_some() {
            return Poll::Ready(());
        }
        st.room_waiters.push(cx.waker().clone());
        Poll::Pending
    }

    /// Blocks the committer's thread until records are staged, `timeout`
    /// passes, or the broker stops; true when records wait.
    pub fn wait_staged(&self, timeout: Duration) -> bool {
        let mut st = self.state();
        st.committer_waiting = true;
        let (mut st, _) = self
            .inner
            .staged_cv
            .wait_timeout_while(st, timeout, |s| {
                (s.staged.is_empty() || s.failed.is_some()) && !s.stopped
            })
            .unwrap_or_else(PoisonError::into_inner);
        st.committer_waiting = false;
        !st.staged.is_empty() && st.failed.is_none()
    }

    /// Group commit across connections: when the last commit released
    /// several writers, waits (at most `max_wait`) until as many are waiting
    /// again, so that their records share the next fsync instead of the
    /// first of them taking it alone. Returns whether it waited. Under
    /// [`FsyncPolicy::Always`] only.
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

    /// The median fsync time so far (µs): how long gathering may wait.
    pub fn fsync_p50_us(&self) -> u64 {
        lock(&self.inner.fsync_hist).quantile(0.5)
    }

    /// Releases the lock after staging; wakes the committer if it sleeps.
    fn wake_committer(&self, mut st: MutexGuard<'_, State>) {
        let sleeping = std::mem::replace(&mut st.committer_waiting, false);
        drop(st);
        if sleeping {
            self.inner.staged_cv.notify_one();
        }
    }

    /// Stops the broker: held replies that are not durable yet are dropped
    /// once the committer has written what was staged (call
    /// [`Broker::commit`] once more after this).
    pub fn stop(&self) {
        let waiters = {
            let mut st = self.state();
            st.stopped = true;
            std::mem::take(&mut st.durable_waiters)
        };
        self.inner.staged_cv.notify_all();
        waiters.into_iter().for_each(Waker::wake);
    }

    /// One committer round: writes every record staged since the last
    /// round with one write, fsyncs it under [`FsyncPolicy::Always`] (or
    /// when the interval is due), shows it to readers, releases the replies
    /// that waited for it; rolls to a new segment, checkpoint first, when
    /// the active one is full; then applies retention.
    ///
    /// # Errors
    /// The log's error when a write or fsync failed: the broker is then
    /// failed (every held reply is dropped, every later write refused)
    /// until reopened.
    pub fn commit(&self, now: Instant) -> Result<Committed, Error> {
        // The writer first: concurrent callers write their batches in order.
        self.commit_with(lock(&self.inner.writer), now)
    }

    /// A commit by the thread that serves the connections, just before it
    /// sleeps (tokio's `on_thread_park`), as Redis writes and fsyncs before
    /// its event loop sleeps: at one request in flight, the reply then
    /// needs no hand-off to the committer thread and back. Never waits: when
    /// the committer thread is writing, or nothing is staged, it does
    /// nothing and returns false.
    pub fn commit_before_park(&self, now: Instant) -> bool {
        let writer = match self.inner.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        {
            let st = self.state();
            // Writers the last commit released and that have not written
            // again yet are on their way: leave this commit to the committer
            // thread, which waits for them (group commit), rather than take
            // an fsync for the first few here.
            let expected = st.released_last.max(1);
            if st.staged.is_empty() || st.durable_waiters.len() < expected {
                return false;
            }
        }
        match self.commit_with(writer, now) {
            Ok(c) => c.records > 0,
            Err(e) => {
                tracing::error!(error = %e, "sink commit failed");
                false
            }
        }
    }

    fn commit_with(
        &self,
        mut writer: MutexGuard<'_, Writer>,
        now: Instant,
    ) -> Result<Committed, Error> {
        let seg_bytes = self.inner.config.segment_bytes;
        let (mut batch, entries, lsn, roll, pin) = {
            let mut st = self.state();
            if st.failed.is_some() {
                return Ok(Committed::default());
            }
            let entries = std::mem::take(&mut st.staged_index);
            let batch = std::mem::take(&mut st.staged);
            let bytes = std::mem::take(&mut st.staged_bytes);
            // Bytes since the segment's checkpoint: a checkpoint larger
            // than a segment does not make every commit roll.
            let roll = !batch.is_empty()
                && st.active_bytes.saturating_sub(st.checkpoint_bytes) + bytes >= seg_bytes;
            let roll = roll.then(|| {
                let mut cp = Batch::default();
                st.checkpoint(&mut cp);
                cp
            });
            // What sessions and streams need, as of this batch: durable
            // once it is, so retention never acts on an ack a crash could undo.
            let pin = st.pin();
            (batch, entries, st.staged_lsn, roll, pin)
        };
        let records = batch.len();
        let mut synced = false;
        let written = if batch.is_empty() {
            None
        } else {
            match writer.log.append_batch(&mut batch) {
                Ok(first) => Some(first),
                Err(e) => return Err(self.fail(e.into())),
            }
        };
        let policy = self.inner.config.fsync;
        let due = match policy {
            FsyncPolicy::Always => written.is_some(),
            FsyncPolicy::Interval(every) => {
                now.saturating_duration_since(writer.last_sync) >= every
            }
            FsyncPolicy::Never => false,
        };
        if due {
            let clock = self.inner.config.clock;
            let t = clock();
            if let Err(e) = writer.log.sync() {
                return Err(self.fail(e.into()));
            }
            let took = clock().saturating_duration_since(t);
            lock(&self.inner.fsync_hist).record(took.as_micros() as u64);
            writer.last_sync = now;
            synced = true;
        }
        if written.is_some() {
            lock(&self.inner.group_hist).record(records as u64);
            self.inner.commits.fetch_add(1, Ordering::Relaxed);
        }
        let end_before_roll = writer.log.end();
        if let Some(mut cp) = roll {
            // The closed segment is never synced again: sync it now unless
            // nothing is ever synced.
            let result = if policy == FsyncPolicy::Never || synced {
                Ok(())
            } else {
                writer.log.sync()
            };
            let result = result.and_then(|()| writer.log.roll()).and_then(|()| {
                writer.log.append_batch(&mut cp)?;
                if policy != FsyncPolicy::Never {
                    writer.log.sync()?;
                }
                Ok(())
            });
            if let Err(e) = result {
                return Err(self.fail(e.into()));
            }
        }
        let end = writer.log.end();
        drop(writer);
        let wake = {
            let mut st = self.state();
            if let Some(first) = written {
                for e in &entries {
                    let at = Position {
                        segment: first.segment,
                        offset: first.offset + e.rel,
                    };
                    st.index.add(at, e.offset, e.time_ms);
                    st.written_next = e.offset + 1;
                }
            }
            if end.segment != end_before_roll.segment {
                self.after_roll(&mut st, end_before_roll, end);
            }
            st.end = end;
            st.active_bytes = end.offset;
            st.durable_lsn = st.durable_lsn.max(lsn);
            let mut wake = std::mem::take(&mut st.durable_waiters);
            st.released_last = wake.len();
            wake.append(&mut st.room_waiters);
            wake
        };
        wake.into_iter().for_each(Waker::wake);
        if end.segment != end_before_roll.segment {
            self.retain(now, pin)?;
        }
        Ok(Committed { records, synced })
    }

    /// Forces written records to disk now (an `interval` policy's timer, a shutdown).
    ///
    /// # Errors
    /// As [`Broker::commit`].
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
        tracing::error!(error = %e, "sink log failed: refusing writes until reopened");
        let wake = {
            let mut st = self.state();
            st.failed = Some(e.to_string());
            // Never to be written: dropped, their writers closed unanswered.
            st.staged.clear();
            st.staged_index.clear();
            st.staged_bytes = 0;
            let mut w = std::mem::take(&mut st.durable_waiters);
            w.append(&mut st.room_waiters);
            w.append(&mut st.stream_waiters);
            w
        };
        wake.into_iter().for_each(Waker::wake);
        e
    }

    /// Housekeeping on the committer's clock: expires idle sessions, then
    /// applies retention.
    ///
    /// # Errors
    /// As [`Broker::commit`] (removing a segment failed).
    pub fn tick(&self, now: Instant) -> Result<(), Error> {
        {
            let mut st = self.state();
            let gone = st.sessions.expire(now);
            for name in &gone {
                st.stage_session(&SessionOp::Delete { name });
            }
            if !gone.is_empty() {
                self.wake_committer(st);
                // Retention waits for the deletions to be durable.
                return Ok(());
            }
            if st.staged_lsn > st.durable_lsn {
                // Pending writes may move cursors a crash could undo.
                return Ok(());
            }
        }
        let pin = self.state().pin();
        self.retain(now, pin)
    }

    /// Removes the segments nobody needs, and those past max age or size.
    fn retain(&self, now: Instant, pin: u64) -> Result<(), Error> {
        let wall = self.wall_ms(now);
        let retention = self.inner.config.retention;
        let mut release: Option<(u64, u64)> = None; // (segment id to keep from, its first offset)
        let mut forced = false;
        {
            let st = self.state();
            let segs = &st.index.segs;
            let mut total: u64 = segs.iter().map(|s| s.bytes).sum::<u64>() + st.active_bytes;
            // Only whole segments before the active one, up to one that
            // opens with a checkpoint (the state they held is restated there).
            for (i, s) in segs.iter().enumerate() {
                let Some(next) = segs.get(i + 1) else { break };
                let unneeded = next.first_offset <= pin;
                let too_old = retention.max_age.is_some_and(|age| {
                    s.last_time_ms > 0 && s.last_time_ms + age.as_millis() as u64 <= wall
                });
                let too_big = retention.max_bytes.is_some_and(|max| total > max);
                if !(unneeded || too_old || too_big) {
                    break;
                }
                forced |= !unneeded;
                total = total.saturating_sub(s.bytes);
                if next.checkpointed {
                    release = Some((next.id, next.first_offset));
                }
            }
        }
        let Some((keep_from, first)) = release else {
            return Ok(());
        };
        let result = lock(&self.inner.writer).log.release_before(Position {
            segment: keep_from,
            offset: 0,
        });
        let mut st = self.state();
        let kept = self.inner.reader.start().segment;
        while st.index.segs.front().is_some_and(|s| s.id < kept) {
            st.index.segs.pop_front();
        }
        st.stats.released_segments += 1;
        if forced {
            let n = st.streams.forget_before(first);
            if n > 0 {
                tracing::warn!(entries = n, "retention removed stream entries");
            }
            tracing::warn!(
                first_offset = first,
                "retention removed messages a session or stream still needed"
            );
        }
        result.map_err(Error::from)
    }

    /// The numbers `INFO` reports.
    pub fn info(&self) -> crate::stats::Info {
        let st = self.state();
        let now_last = st.next_offset - 1;
        let first = st.index.first_offset(st.next_offset);
        let bytes_from = |cursor: u64| -> u64 {
            match st.index.seek(cursor + 1, st.end, st.next_offset) {
                Seek::At(p) => {
                    let seg_total: u64 = st
                        .index
                        .segs
                        .iter()
                        .filter(|s| s.id > p.segment)
                        .map(|s| {
                            if s.id == st.end.segment {
                                st.end.offset
                            } else {
                                s.bytes
                            }
                        })
                        .sum();
                    let in_seg = if p.segment == st.end.segment {
                        st.end.offset
                    } else {
                        st.index
                            .segs
                            .iter()
                            .find(|s| s.id == p.segment)
                            .map_or(0, |s| s.bytes)
                    };
                    seg_total + in_seg.saturating_sub(p.offset)
                }
                Seek::Gap { .. } => 0,
            }
        };
        let sessions = st
            .sessions
            .iter()
            .map(|s| crate::stats::SessionInfo {
                name: s.name().clone(),
                cursor: s.cursor(),
                lag_messages: now_last.saturating_sub(s.cursor()),
                lag_bytes: bytes_from(s.cursor()),
                window_fill: s.inflight(),
                window: st.sessions.config().window,
                owner: s.owner(),
            })
            .collect();
        let pinned_by = st
            .sessions
            .slowest()
            .filter(|s| s.cursor() + 1 < st.index.segs.get(1).map_or(0, |n| n.first_offset))
            .map(|s| s.name().clone());
        crate::stats::Info {
            first_offset: first,
            last_offset: now_last,
            segments: st.index.segs.len(),
            log_bytes: st.index.segs.iter().map(|s| s.bytes).sum::<u64>() + st.active_bytes,
            sessions,
            pinned_by,
            streams: st.streams.len(),
            stream_bytes: st.streams.memory_bytes(),
            stats: st.stats.clone(),
            fsync_us: lock(&self.inner.fsync_hist).clone(),
            group_size: lock(&self.inner.group_hist).clone(),
            commits: self.inner.commits.load(Ordering::Relaxed),
            fsync: self.inner.config.fsync,
            failed: st.failed.clone(),
        }
    }
}
