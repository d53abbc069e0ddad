//! The journal: the engine's [`Change`]s as records on kids-core's segment
//! log, their recovery, and the mirror of live jobs that compaction
//! rewrites forward.
//!
//! ```text
//!  Engine::take_changes ─▶ Journal::stage (record framed into the staged Batch, lsn + 1,
//!                                           mirror of live jobs updated)
//!  committer ─▶ SegmentLog::append_batch ─▶ fsync ─▶ durable lsn
//!            └▶ compaction: live jobs in old segments staged again as full Put
//!               records, then SegmentLog::release_before(oldest segment still needed)
//!  open ─▶ SegmentLog::open_visiting ─▶ Replay (in order: put, state, delete) ─▶ RestoredJob
//! ```
//!
//! A record's payload (kids-core frames it: length, crc32, payload), all
//! integers little-endian:
//!
//! | tag | record | fields |
//! |-----|--------|--------|
//! | 1 | put    | id u64, priority u32, ttr u32, state u8, until_ms u64, tube_len u8, body_len u32, tube, body |
//! | 2 | state  | id u64, priority u32, state u8, until_ms u64 |
//! | 3 | delete | id u64 |
//! | 4 | mark   | next_id u64 (opens every segment: ids are never given out twice) |
//!
//! `state` is 0 ready, 1 delayed (until `until_ms`, wall-clock milliseconds
//! since the Unix epoch, 0 otherwise), 2 buried. Every length is bounded
//! (a tube name by [`TUBE_NAME_MAX`], a body by the caller's bound) and a
//! record is exactly as long as its fields say: anything else is a
//! [`RecordError`], reported with its position, never skipped.
//!
//! Time. The engine runs on [`Instant`]s; a delay is stored as the wall
//! time it ends, converted through a [`WallClock`] (an `Instant` and the
//! `SystemTime` of the same moment, taken when the journal opens), and back
//! to an `Instant` at recovery: a job delayed for an hour before a restart
//! is still delayed for what is left of the hour after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kids_core::{Batch, Position};

use crate::engine::{Change, DurableState, RestoredJob};
use crate::proto::TUBE_NAME_MAX;

const TAG_PUT: u8 = 1;
const TAG_STATE: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_MARK: u8 = 4;

const PUT_HEAD: usize = 1 + 8 + 4 + 4 + 1 + 8 + 1 + 4;
const STATE_LEN: usize = 1 + 8 + 4 + 1 + 8;
const ID_LEN: usize = 1 + 8;

/// What is wrong with a whole record (its CRC matched) that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// An empty payload.
    #[error("empty record")]
    Empty,
    /// A tag no version of the journal writes.
    #[error("unknown record tag {0}")]
    UnknownTag(u8),
    /// Shorter than its fields say.
    #[error("record cut short")]
    Truncated,
    /// Longer than its fields say.
    #[error("{0} bytes after the record's fields")]
    Trailing(usize),
    /// A state byte that is not 0, 1 or 2.
    #[error("unknown job state {0}")]
    BadState(u8),
    /// A tube name empty, over [`TUBE_NAME_MAX`] or not UTF-8.
    #[error("bad tube name")]
    BadTube,
    /// A body over the bound.
    #[error("body of {len} bytes over the bound of {max}")]
    BodyTooLong {
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
}

/// Where a job is, as a record stores it: a delay as the wall time it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    /// Ready.
    Ready,
    /// Delayed until this many milliseconds since the Unix epoch.
    Delayed(u64),
    /// Buried.
    Buried,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A job, whole: put, or rewritten forward by compaction.
    Put {
        /// Its id.
        id: u64,
        /// Its tube.
        tube: &'a str,
        /// Its priority.
        priority: u32,
        /// Its time-to-run in seconds.
        ttr: u32,
        /// Where it is.
        state: StoredState,
        /// Its body.
        body: &'a [u8],
    },
    /// A job's new priority and state.
    State {
        /// The job.
        id: u64,
        /// Its priority.
        priority: u32,
        /// Where it is.
        state: StoredState,
    },
    /// A job deleted.
    Delete {
        /// The job.
        id: u64,
    },
    /// Every id below this one was given out already.
    Mark {
        /// The next id the engine gives.
        next_id: u64,
    },
}

fn state_bytes(state: StoredState) -> (u8, u64) {
    match state {
        StoredState::Ready => (0, 0),
        StoredState::Delayed(ms) => (1, ms),
        StoredState::Buried => (2, 0),
    }
}

/// Frames `record` into `batch`; returns the framed size (header included).
pub fn encode(record: &Record<'_>, batch: &mut Batch) -> u64 {
    match *record {
        Record::Put {
            id,
            tube,
            priority,
            ttr,
            state,
            body,
        } => {
            let (s, until) = state_bytes(state);
            let mut head = [0u8; PUT_HEAD];
            head[0] = TAG_PUT;
            head[1..9].copy_from_slice(&id.to_le_bytes());
            head[9..13].copy_from_slice(&priority.to_le_bytes());
            head[13..17].copy_from_slice(&ttr.to_le_bytes());
            head[17] = s;
            head[18..26].copy_from_slice(&until.to_le_bytes());
            // Tube names are bounded by the protocol (200 bytes); the engine never holds longer.
            head[26] = tube.len().min(usize::from(u8::MAX)) as u8;
            head[27..31].copy_from_slice(&(body.len() as u32).to_le_bytes());
            let tube = &tube.as_bytes()[..usize::from(head[26])];
            batch.push(&[&head, tube, body]);
            8 + (PUT_HEAD + tube.len() + body.len()) as u64
        }
        Record::State {
            id,
            priority,
            state,
        } => {
            let (s, until) = state_bytes(state);
            let mut b = [0u8; STATE_LEN];
            b[0] = TAG_STATE;
            b[1..9].copy_from_slice(&id.to_le_bytes());
            b[9..13].copy_from_slice(&priority.to_le_bytes());
            b[13] = s;
            b[14..22].copy_from_slice(&until.to_le_bytes());
            batch.push(&[&b]);
            8 + STATE_LEN as u64
        }
        Record::Delete { id } | Record::Mark { next_id: id } => {
            let mut b = [0u8; ID_LEN];
            b[0] = if matches!(record, Record::Delete { .. }) {
                TAG_DELETE
            } else {
                TAG_MARK
            };
            b[1..9].copy_from_slice(&id.to_le_bytes());
            batch.push(&[&b]);
            8 + ID_LEN as u64
        }
    }
}

/// A little-endian reader over a payload that fails instead of panicking.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn state(&mut self) -> Result<StoredState, RecordError> {
        let s = self.u8()?;
        let until = self.u64()?;
        match s {
            0 => Ok(StoredState::Ready),
            1 => Ok(StoredState::Delayed(until)),
            2 => Ok(StoredState::Buried),
            other => Err(RecordError::BadState(other)),
        }
    }
    fn end(&self) -> Result<(), RecordError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(RecordError::Trailing(n)),
        }
    }
}

/// Decodes one record's payload; a body over `max_body` bytes is an error.
///
/// # Errors
/// A [`RecordError`] when the payload is not exactly one record.
pub fn decode(payload: &[u8], max_body: u32) -> Result<Record<'_>, RecordError> {
    let mut f = Fields(payload);
    let tag = f.u8().map_err(|_| RecordError::Empty)?;
    let record = match tag {
        TAG_PUT => {
            let id = f.u64()?;
            let priority = f.u32()?;
            let ttr = f.u32()?;
            let state = f.state()?;
            let tube_len = usize::from(f.u8()?);
            let body_len = f.u32()?;
            if tube_len == 0 || tube_len > TUBE_NAME_MAX {
                return Err(RecordError::BadTube);
            }
            if body_len > max_body {
                return Err(RecordError::BodyTooLong {
                    len: u64::from(body_len),
                    max: u64::from(max_body),
                });
            }
            let tube = std::str::from_utf8(f.take(tube_len)?).map_err(|_| RecordError::BadTube)?;
            let body = f.take(body_len as usize)?;
            Record::Put {
                id,
                tube,
                priority,
                ttr,
                state,
                body,
            }
        }
        TAG_STATE => Record::State {
            id: f.u64()?,
            priority: f.u32()?,
            state: f.state()?,
        },
        TAG_DELETE => Record::Delete { id: f.u64()? },
        TAG_MARK => Record::Mark { next_id: f.u64()? },
        other => return Err(RecordError::UnknownTag(other)),
    };
    f.end()?;
    Ok(record)
}

/// An [`Instant`] and the wall time of the same moment: how delays cross a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    wall_ms: u64,
}

impl WallClock {
    /// The pair `now` and `wall` (read at the same moment by the caller).
    pub fn new(now: Instant, wall: SystemTime) -> Self {
        let wall_ms = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64);
        Self { at: now, wall_ms }
    }

    /// The wall time of `t`, in milliseconds since the Unix epoch.
    pub fn wall_ms(&self, t: Instant) -> u64 {
        if t >= self.at {
            let d = t
                .duration_since(self.at)
                .as_millis()
                .min(u128::from(u64::MAX)) as u64;
            self.wall_ms.saturating_add(d)
        } else {
            let d = self
                .at
                .duration_since(t)
                .as_millis()
                .min(u128::from(u64::MAX)) as u64;
            self.wall_ms.saturating_sub(d)
        }
    }

    /// The [`Instant`] of wall time `ms`; `None` when it is not after this
    /// clock's moment (a delay that has ended).
    pub fn instant(&self, ms: u64) -> Option<Instant> {
        let ahead = ms.checked_sub(self.wall_ms).filter(|d| *d > 0)?;
        // An absurd time (a damaged clock) is capped rather than overflowing.
        let d = Duration::from_millis(ahead.min(u64::from(u32::MAX) * 1000));
        self.at.checked_add(d)
    }

    /// The stored form of a durable state.
    pub fn store(&self, state: DurableState) -> StoredState {
        match state {
            DurableState::Ready => StoredState::Ready,
            DurableState::Delayed(t) => StoredState::Delayed(self.wall_ms(t).max(1)),
            DurableState::Buried => StoredState::Buried,
        }
    }

    /// The durable state of a stored one: a delay that has ended is ready.
    pub fn load(&self, state: StoredState) -> DurableState {
        match state {
            StoredState::Ready => DurableState::Ready,
            StoredState::Delayed(ms) => self
                .instant(ms)
                .map_or(DurableState::Ready, DurableState::Delayed),
            StoredState::Buried => DurableState::Buried,
        }
    }
}

/// Where a live job's last whole record is, and its framed size.
#[derive(Debug, Clone, Copy)]
struct Live {
    /// The segment its last whole (put) record went to, or an earlier one.
    seg: u64,
    bytes: u64,
    /// The lsn of its last record staged (0: recovered, durable): what a
    /// reply handing it out (a reserve, a peek) waits for.
    lsn: u64,
}

fn put_framed(tube: &str, body: &[u8]) -> u64 {
    8 + (PUT_HEAD + tube.len().min(usize::from(u8::MAX)) + body.len()) as u64
}

/// The staging side of the journal, kept under the same lock as the
/// engine: records staged in the engine's order, each with an lsn, and
/// where each live job's last whole record is, so compaction knows which
/// jobs to write again (their current state comes from the engine).
#[derive(Debug)]
pub(crate) struct Journal {
    clock: WallClock,
    staged: Batch,
    staged_bytes: u64,
    staged_lsn: u64,
    live: HashMap<u64, Live>,
    /// (segment of its last put record, id) of every live job.
    by_seg: BTreeSet<(u64, u64)>,
    /// Framed size of every live job's put record.
    live_bytes: u64,
    /// Past every id staged or recovered.
    next_id: u64,
    /// The segment records are appended to now (or the one before a roll).
    active_seg: u64,
    /// Bytes the log holds, as of the last commit.
    log_bytes: u64,
    /// Jobs written again by compaction.
    rewritten: u64,
}

/// What a committer round takes from the journal.
#[derive(Debug, Default)]
pub(crate) struct Take {
    /// The records to write, in order.
    pub(crate) batch: Batch,
    /// The lsn of the last of them (0: none ever).
    pub(crate) lsn: u64,
    /// Their framed size.
    pub(crate) bytes: u64,
    /// Segments before this one hold no record a restart needs once the
    /// batch is durable.
    pub(crate) keep_from: u64,
    /// The next id, for the mark that opens a new segment.
    pub(crate) next_id: u64,
}

impl Journal {
    /// A journal whose log holds `jobs` (recovered, at `seg` or before),
    /// appending to segment `active_seg` that holds `log_bytes`.
    pub(crate) fn new(
        clock: WallClock,
        recovered: &Recovered,
        active_seg: u64,
        log_bytes: u64,
    ) -> Self {
        let mut j = Self {
            clock,
            staged: Batch::default(),
            staged_bytes: 0,
            staged_lsn: 0,
            live: HashMap::with_capacity(recovered.jobs.len()),
            by_seg: BTreeSet::new(),
            live_bytes: 0,
            next_id: recovered.next_id,
            active_seg,
            log_bytes,
            rewritten: 0,
        };
        for (id, job) in &recovered.jobs {
            let live = Live {
                seg: job.seg,
                bytes: put_framed(&job.tube, &job.body),
                lsn: 0,
            };
            j.live_bytes += live.bytes;
            j.by_seg.insert((live.seg, *id));
            j.live.insert(*id, live);
        }
        j
    }

    /// Stages one change of the engine; returns its lsn.
    pub(crate) fn stage(&mut self, change: Change) -> u64 {
        let bytes = match change {
            Change::Put {
                id,
                tube,
                priority,
                ttr,
                state,
                body,
            } => {
                self.next_id = self.next_id.max(id.saturating_add(1));
                let record = Record::Put {
                    id,
                    tube: &tube,
                    priority,
                    ttr,
                    state: self.clock.store(state),
                    body: &body,
                };
                let n = encode(&record, &mut self.staged);
                self.forget(id);
                let live = Live {
                    seg: self.active_seg,
                    bytes: n,
                    lsn: self.staged_lsn + 1,
                };
                self.live_bytes += n;
                self.by_seg.insert((live.seg, id));
                self.live.insert(id, live);
                n
            }
            Change::State {
                id,
                priority,
                state,
            } => {
                let state = self.clock.store(state);
                if let Some(live) = self.live.get_mut(&id) {
                    live.lsn = self.staged_lsn + 1;
                }
                encode(
                    &Record::State {
                        id,
                        priority,
                        state,
                    },
                    &mut self.staged,
                )
            }
            Change::Delete { id } => {
                self.forget(id);
                encode(&Record::Delete { id }, &mut self.staged)
            }
        };
        self.staged_bytes += bytes;
        self.staged_lsn += 1;
        self.staged_lsn
    }

    fn forget(&mut self, id: u64) {
        if let Some(old) = self.live.remove(&id) {
            self.by_seg.remove(&(old.seg, id));
            self.live_bytes -= old.bytes;
        }
    }

    /// The lsn of the last record staged (0: none yet).
    pub(crate) fn staged_lsn(&self) -> u64 {
        self.staged_lsn
    }

    /// The lsn of the last record staged for live job `id` (0: none since
    /// recovery, or no such job). A compaction's copy does not count: the
    /// records it restates were staged before it.
    pub(crate) fn job_lsn(&self, id: u64) -> u64 {
        self.live.get(&id).map_or(0, |l| l.lsn)
    }

    /// Bytes staged and not yet taken by a commit.
    pub(crate) fn staged_bytes(&self) -> u64 {
        self.staged_bytes
    }

    /// True when nothing is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Live jobs the journal keeps.
    pub(crate) fn live_jobs(&self) -> usize {
        self.live.len()
    }

    /// Framed bytes of the live jobs' whole records.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Jobs written again by compaction so far.
    pub(crate) fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Compaction: when the log holds more than twice what the live jobs
    /// need plus `slack` bytes, stages whole records again (at most
    /// `budget` bytes of them) for the live jobs whose last whole record
    /// is in the oldest segments, so those segments can go; `current`
    /// gives a job as it is now (the engine's view). Returns the jobs
    /// staged again.
    pub(crate) fn compact(
        &mut self,
        slack: u64,
        budget: u64,
        mut current: impl FnMut(u64) -> Option<RestoredJob>,
    ) -> usize {
        if self.log_bytes <= self.live_bytes.saturating_mul(2).saturating_add(slack) {
            return 0;
        }
        let (mut done, mut spent) = (0, 0);
        while spent < budget {
            let Some(&(seg, id)) = self.by_seg.first() else {
                break;
            };
            if seg >= self.active_seg {
                break;
            }
            self.by_seg.remove(&(seg, id));
            let (Some(live), Some(job)) = (self.live.get_mut(&id), current(id)) else {
                // Not in the engine (a bug elsewhere): nothing to keep.
                self.forget(id);
                continue;
            };
            live.seg = self.active_seg;
            let n = encode(
                &Record::Put {
                    id,
                    tube: &job.tube,
                    priority: job.priority,
                    ttr: job.ttr,
                    state: self.clock.store(job.state),
                    body: &job.body,
                },
                &mut self.staged,
            );
            self.live_bytes = self.live_bytes - live.bytes + n;
            live.bytes = n;
            self.by_seg.insert((self.active_seg, id));
            self.staged_bytes += n;
            self.staged_lsn += 1;
            spent += n;
            done += 1;
        }
        self.rewritten += done as u64;
        done
    }

    /// Segments before this one hold no record a restart needs once what
    /// is staged now is durable.
    pub(crate) fn keep_from(&self) -> u64 {
        self.by_seg
            .first()
            .map_or(self.active_seg, |&(seg, _)| seg.min(self.active_seg))
    }

    /// Takes what is staged for a commit.
    pub(crate) fn take(&mut self) -> Take {
        let keep_from = self.keep_from();
        Take {
            batch: std::mem::take(&mut self.staged),
            lsn: self.staged_lsn,
            bytes: std::mem::take(&mut self.staged_bytes),
            keep_from,
            next_id: self.next_id,
        }
    }

    /// After a commit: the log appends to `active_seg` now and holds `log_bytes`.
    pub(crate) fn committed(&mut self, active_seg: u64, log_bytes: u64) {
        self.active_seg = active_seg;
        self.log_bytes = log_bytes;
    }

    /// Drops what is staged (the log failed: it will never be written).
    pub(crate) fn discard(&mut self) {
        self.staged.clear();
        self.staged_bytes = 0;
    }
}

/// A job as recovery rebuilt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplayedJob {
    pub(crate) seg: u64,
    pub(crate) tube: String,
    pub(crate) priority: u32,
    pub(crate) ttr: u32,
    pub(crate) state: StoredState,
    pub(crate) body: Bytes,
}

/// What recovery rebuilt from the records.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) jobs: BTreeMap<u64, ReplayedJob>,
    /// Past every id any record names.
    pub(crate) next_id: u64,
    pub(crate) records: u64,
}

impl Recovered {
    /// The jobs as the engine restores them, delays converted with `clock`.
    pub(crate) fn restored(&self, clock: WallClock) -> impl Iterator<Item = RestoredJob> + '_ {
        self.jobs.iter().map(move |(&id, j)| RestoredJob {
            id,
            tube: j.tube.clone(),
            priority: j.priority,
            ttr: j.ttr,
            state: clock.load(j.state),
            body: j.body.clone(),
        })
    }
}

/// Replays records, oldest first, into the jobs a restart must see.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) out: Recovered,
    max_body: u32,
    /// The first record that did not decode, and why.
    pub(crate) error: Option<(Position, RecordError)>,
}

impl Replay {
    pub(crate) fn new(max_body: u32) -> Self {
        Self {
            out: Recovered {
                next_id: 1,
                ..Recovered::default()
            },
            max_body,
            error: None,
        }
    }

    /// Applies one record (nothing after the first that fails).
    pub(crate) fn visit(&mut self, at: Position, payload: &[u8]) {
        if self.error.is_some() {
            return;
        }
        match decode(payload, self.max_body) {
            Ok(r) => self.apply(at, r),
            Err(e) => self.error = Some((at, e)),
        }
    }

    fn apply(&mut self, at: Position, record: Record<'_>) {
        let out = &mut self.out;
        out.records += 1;
        let seen = |out: &mut Recovered, id: u64| {
            out.next_id = out.next_id.max(id.saturating_add(1));
        };
        match record {
            Record::Put {
                id,
                tube,
                priority,
                ttr,
                state,
                body,
            } => {
                seen(out, id);
                out.jobs.insert(
                    id,
                    ReplayedJob {
                        seg: at.segment,
                        tube: tube.to_owned(),
                        priority,
                        ttr,
                        state,
                        body: Bytes::copy_from_slice(body),
                    },
                );
            }
            // A job whose put went with a released segment was deleted,
            // or written again further on: nothing to do here.
            Record::State {
                id,
                priority,
                state,
            } => {
                seen(out, id);
                if let Some(j) = out.jobs.get_mut(&id) {
                    j.priority = priority;
                    j.state = state;
                }
            }
            Record::Delete { id } => {
                seen(out, id);
                out.jobs.remove(&id);
            }
            Record::Mark { next_id } => out.next_id = out.next_id.max(next_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(batch: &Batch) -> usize {
        batch.len()
    }

    fn roundtrip(r: &Record<'_>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) =
            kids_core::SegmentLog::open(dir.path(), kids_core::SegmentConfig::default()).unwrap();
        let mut b = Batch::default();
        encode(r, &mut b);
        assert_eq!(framed(&b), 1);
        log.append_batch(&mut b).unwrap();
        let mut at = log.start();
        let got = log.read(&mut at, 10).unwrap();
        assert_eq!(&decode(&got[0], 1 << 20).unwrap(), r);
        // Every prefix is an error, never a panic or a different record.
        for n in 0..got[0].len() {
            assert!(decode(&got[0][..n], 1 << 20).is_err(), "prefix {n}");
        }
        let mut longer = got[0].to_vec();
        longer.push(0);
        assert_eq!(decode(&longer, 1 << 20), Err(RecordError::Trailing(1)));
    }

    #[test]
    fn every_record_round_trips_and_every_prefix_fails() {
        roundtrip(&Record::Put {
            id: 7,
            tube: "default",
            priority: 1024,
            ttr: 60,
            state: StoredState::Delayed(1_700_000_000_123),
            body: b"hello",
        });
        roundtrip(&Record::Put {
            id: u64::MAX,
            tube: "t",
            priority: u32::MAX,
            ttr: 1,
            state: StoredState::Buried,
            body: b"",
        });
        roundtrip(&Record::State {
            id: 3,
            priority: 5,
            state: StoredState::Ready,
        });
        roundtrip(&Record::Delete { id: 9 });
        roundtrip(&Record::Mark { next_id: 10 });
    }

    #[test]
    fn bounds_and_bad_fields_are_errors() {
        let mut b = Batch::default();
        encode(
            &Record::Put {
                id: 1,
                tube: "t",
                priority: 0,
                ttr: 1,
                state: StoredState::Ready,
                body: &[0u8; 100],
            },
            &mut b,
        );
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) =
            kids_core::SegmentLog::open(dir.path(), kids_core::SegmentConfig::default()).unwrap();
        log.append_batch(&mut b).unwrap();
        let mut at = log.start();
        let p = log.read(&mut at, 1).unwrap().remove(0).to_vec();
        assert_eq!(
            decode(&p, 99),
            Err(RecordError::BodyTooLong { len: 100, max: 99 })
        );
        let mut bad = p.clone();
        bad[17] = 9;
        assert_eq!(decode(&bad, 1000), Err(RecordError::BadState(9)));
        let mut bad = p.clone();
        bad[26] = 0;
        assert_eq!(decode(&bad, 1000), Err(RecordError::BadTube));
        assert_eq!(decode(&[], 1000), Err(RecordError::Empty));
        assert_eq!(decode(&[42], 1000), Err(RecordError::UnknownTag(42)));
    }

    #[test]
    fn wall_clock_converts_both_ways() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = WallClock::new(now, wall);
        let later = now + Duration::from_secs(90);
        let ms = c.wall_ms(later);
        assert_eq!(ms, 1_700_000_090_000);
        // Another process, a minute later: 30 s of the delay are left.
        let now2 = now + Duration::from_secs(600);
        let c2 = WallClock::new(now2, wall + Duration::from_secs(60));
        assert_eq!(c2.instant(ms), Some(now2 + Duration::from_secs(30)));
        assert_eq!(
            c2.load(StoredState::Delayed(ms)),
            DurableState::Delayed(now2 + Duration::from_secs(30))
        );
        // Ended while down: ready.
        assert_eq!(
            c2.load(StoredState::Delayed(ms - 60_000)),
            DurableState::Ready
        );
    }

    fn put(id: u64, body: &'static [u8]) -> Change {
        Change::Put {
            id,
            tube: "default".into(),
            priority: 1,
            ttr: 60,
            state: DurableState::Ready,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn replay_keeps_the_last_word_on_each_job() {
        let now = Instant::now();
        let clock = WallClock::new(now, SystemTime::now());
        let mut j = Journal::new(clock, &Recovered::default(), 1, 0);
        j.stage(put(1, b"a"));
        j.stage(put(2, b"b"));
        j.stage(Change::State {
            id: 2,
            priority: 9,
            state: DurableState::Buried,
        });
        j.stage(put(3, b"c"));
        j.stage(Change::Delete { id: 1 });
        j.stage(Change::Delete { id: 3 });
        assert_eq!(j.live_jobs(), 1);
        let take = j.take();
        assert_eq!(take.lsn, 6);
        assert_eq!(take.next_id, 4);
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) =
            kids_core::SegmentLog::open(dir.path(), kids_core::SegmentConfig::default()).unwrap();
        let mut batch = take.batch;
        log.append_batch(&mut batch).unwrap();
        drop(log);
        let mut replay = Replay::new(1 << 16);
        kids_core::SegmentLog::open_visiting(
            dir.path(),
            kids_core::SegmentConfig::default(),
            std::sync::Arc::new(kids_core::StdFs),
            |at, p| replay.visit(at, p),
        )
        .unwrap();
        assert!(replay.error.is_none());
        let r = replay.out;
        assert_eq!(r.next_id, 4, "deleted ids are never given again");
        let jobs: Vec<RestoredJob> = r.restored(clock).collect();
        assert_eq!(
            jobs,
            vec![RestoredJob {
                id: 2,
                tube: "default".into(),
                priority: 9,
                ttr: 60,
                state: DurableState::Buried,
                body: Bytes::from_static(b"b"),
            }]
        );
    }

    #[test]
    fn compaction_rewrites_only_jobs_in_old_segments_within_budget() {
        let clock = WallClock::new(Instant::now(), SystemTime::now());
        let mut j = Journal::new(clock, &Recovered::default(), 1, 0);
        for id in 1..=10 {
            j.stage(put(id, b"x"));
        }
        let _ = j.take();
        // Ten jobs in segment 1; the log moved on to segment 3 and is large.
        j.committed(3, 1 << 20);
        let per = j.live_bytes() / 10;
        let now = |id: u64| match put(id, b"x") {
            Change::Put {
                id,
                tube,
                priority,
                ttr,
                state,
                body,
            } => Some(RestoredJob {
                id,
                tube,
                priority,
                ttr,
                state,
                body,
            }),
            _ => None,
        };
        assert_eq!(j.compact(0, per * 3, now), 3, "bounded by the budget");
        assert_eq!(j.take().keep_from, 1, "seven still based in segment 1");
        assert_eq!(j.compact(0, u64::MAX, now), 7);
        let t = j.take();
        assert_eq!(t.keep_from, 3);
        assert_eq!(t.batch.len(), 7);
        // Small log: nothing to do.
        j.committed(3, 10);
        assert_eq!(j.compact(0, u64::MAX, now), 0);
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        fn state() -> impl Strategy<Value = StoredState> {
            prop_oneof![
                Just(StoredState::Ready),
                any::<u64>().prop_map(StoredState::Delayed),
                Just(StoredState::Buried),
            ]
        }

        /// A record, owning what a `Record` borrows.
        #[derive(Debug, Clone)]
        enum Owned {
            Put(u64, String, u32, u32, StoredState, Vec<u8>),
            State(u64, u32, StoredState),
            Delete(u64),
            Mark(u64),
        }

        impl Owned {
            fn record(&self) -> Record<'_> {
                match self {
                    Owned::Put(id, tube, priority, ttr, state, body) => Record::Put {
                        id: *id,
                        tube,
                        priority: *priority,
                        ttr: *ttr,
                        state: *state,
                        body,
                    },
                    Owned::State(id, priority, state) => Record::State {
                        id: *id,
                        priority: *priority,
                        state: *state,
                    },
                    Owned::Delete(id) => Record::Delete { id: *id },
                    Owned::Mark(next_id) => Record::Mark { next_id: *next_id },
                }
            }
        }

        fn owned() -> impl Strategy<Value = Owned> {
            prop_oneof![
                (
                    any::<u64>(),
                    "[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}",
                    any::<u32>(),
                    any::<u32>(),
                    state(),
                    proptest::collection::vec(any::<u8>(), 0..512)
                )
                    .prop_map(|(i, t, p, r, s, b)| Owned::Put(i, t, p, r, s, b)),
                (any::<u64>(), any::<u32>(), state()).prop_map(|(i, p, s)| Owned::State(i, p, s)),
                any::<u64>().prop_map(Owned::Delete),
                any::<u64>().prop_map(Owned::Mark),
            ]
        }

        proptest! {
            #[test]
            fn records_round_trip(r in owned()) {
                let record = r.record();
                let mut batch = Batch::default();
                encode(&record, &mut batch);
                let dir = tempfile::tempdir().unwrap();
                let (mut log, _) = kids_core::SegmentLog::open(dir.path(), kids_core::SegmentConfig::default()).unwrap();
                log.append_batch(&mut batch).unwrap();
                let mut at = log.start();
                let got = log.read(&mut at, 1).unwrap();
                prop_assert_eq!(decode(&got[0], 1 << 20).unwrap(), record);
            }

            #[test]
            fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(Record::Put { body, tube, .. }) = decode(&bytes, 256) {
                    prop_assert!(body.len() <= 256);
                    prop_assert!(!tube.is_empty() && tube.len() <= TUBE_NAME_MAX);
                }
            }
        }
    }
}
