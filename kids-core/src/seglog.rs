//! The segment log: CRC-framed records in rotating segment files, for spools.
//!
//! ```text
//!  dir/00000000000000000001.seg   [len u32 LE][crc32 u32 LE][payload] [len][crc][payload] ...
//!  dir/00000000000000000002.seg   ...                               <- active, appended to
//! ```
//! A record is acknowledged to the caller once `write` returned, so a killed
//! process loses nothing it acknowledged (the kernel holds the bytes); an
//! [`Fsync`] policy decides how much survives a machine crash. On open the
//! log truncates a torn tail of the last segment (a bad record with no whole
//! record after it: a record cut short, a payload that failed its CRC, a
//! zero-filled block, as a power loss leaves them) and keeps every whole
//! record before it. A bad record anywhere else, or one followed by whole
//! records (a flipped length or payload byte in the middle), is corruption:
//! open fails with its file and offset, it is never skipped silently. The
//! one case the format cannot tell from a torn tail is a damaged length in
//! the very last record. Empty records are refused, so a zero header is
//! never mistaken for one. Segments are removed only through
//! [`SegmentLog::release_before`], once every record in them was acknowledged
//! downstream.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::Error;

const HEADER: u64 = 8;
/// Bytes read from a segment per call of `read_entries`, at least.
const READ_CHUNK: u64 = 256 * 1024;
const SUFFIX: &str = ".seg";
/// The file [`SegmentLog::save_mark`] writes.
const MARK: &str = "acked.pos";

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fsync {
    /// Never: the kernel writes back when it likes (survives a process kill, not a power loss).
    #[default]
    Never,
    /// When a segment is closed by rotation.
    OnRotate,
    /// After every `n` appends (1: every append).
    Every(u32),
}

/// Settings of a [`SegmentLog`].
///
/// ```
/// use kids_core::{Fsync, SegmentConfig};
/// let config = SegmentConfig::default().max_segment_bytes(8 << 20).fsync(Fsync::Every(100));
/// assert_eq!(config.segment_bytes(), 8 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    max_segment: u64,
    max_record: u32,
    fsync: Fsync,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            max_segment: 64 << 20,
            max_record: 64 << 20,
            fsync: Fsync::Never,
        }
    }
}

impl SegmentConfig {
    /// Size after which the active segment is closed and a new one started.
    pub fn max_segment_bytes(mut self, bytes: u64) -> Self {
        self.max_segment = bytes.max(HEADER + 1);
        self
    }
    /// Largest payload accepted by [`SegmentLog::append`] and believed on read.
    pub fn max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record = bytes;
        self
    }
    /// The fsync policy.
    pub fn fsync(mut self, policy: Fsync) -> Self {
        self.fsync = policy;
        self
    }
    /// The segment size bound.
    pub fn segment_bytes(&self) -> u64 {
        self.max_segment
    }
}

/// A record's place in the log: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The segment's number (its file name).
    pub segment: u64,
    /// Byte offset of the record's header in the segment.
    pub offset: u64,
}

/// What [`SegmentLog::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Whole records found.
    pub records: u64,
    /// Bytes of torn tail cut from the last segment.
    pub truncated_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
}

/// Records framed (length, crc32, payload) for one write with
/// [`SegmentLog::append_batch`]. A record's payload may be given in parts:
/// they are hashed and copied once, with no allocation per record.
///
/// ```
/// use kids_core::{Batch, SegmentConfig, SegmentLog};
/// # let dir = tempfile::tempdir().unwrap();
/// let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
/// let mut batch = Batch::default();
/// batch.push(&[b"topic ", b"message"]);
/// batch.push(&[b"second"]);
/// log.append_batch(&mut batch).unwrap();
/// assert!(batch.is_empty());
/// let mut at = log.start();
/// assert_eq!(log.read(&mut at, 10).unwrap(), vec![&b"topic message"[..], &b"second"[..]]);
/// ```
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    records: u32,
    largest: u64,
    empty: bool,
}

impl Batch {
    /// Adds one record whose payload is the concatenation of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut crc = crc32fast::Hasher::new();
        for p in parts {
            crc.update(p);
        }
        // Over u32::MAX cannot be framed; `largest` makes append_batch refuse it.
        self.largest = self.largest.max(len as u64);
        self.empty |= len == 0;
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc.finalize().to_le_bytes());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.records = self.records.saturating_add(1);
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records as usize
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Drops every record held.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
        self.largest = 0;
        self.empty = false;
    }
}

/// An append-only log of records in a directory of segment files.
///
/// ```
/// use kids_core::{Position, SegmentConfig, SegmentLog};
/// # let dir = tempfile::tempdir().unwrap();
/// let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
/// log.append(b"first").unwrap();
/// log.append(b"second").unwrap();
/// let mut at = log.start();
/// let records = log.read(&mut at, 10).unwrap();
/// assert_eq!(records, vec![&b"first"[..], &b"second"[..]]);
/// log.release_before(at).unwrap(); // both acknowledged downstream
/// ```
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    config: SegmentConfig,
    segments: VecDeque<Segment>,
    active: File,
    unsynced: u32,
}

fn name(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

fn corrupt(path: &Path, offset: u64, why: &str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: why.to_string(),
    }
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory or a segment cannot be read or
    /// truncated; [`Error::Corrupt`] when a bad record is not a torn tail
    /// (see the module documentation).
    pub fn open(dir: impl AsRef<Path>, config: SegmentConfig) -> Result<(Self, Recovery), Error> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let file = entry.file_name();
            let Some(stem) = file.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if let Ok(id) = stem.parse::<u64>() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        for (i, &id) in ids.iter().enumerate() {
            let path = name(&dir, id);
            let last = i + 1 == ids.len();
            let (records, good) = scan(&path, config.max_record, last)?;
            let len = fs::metadata(&path)?.len();
            if good < len {
                recovery.truncated_bytes += len - good;
                tracing::warn!(path = %path.display(), torn = len - good, "truncating torn tail of segment");
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(good)?;
                f.sync_all()?;
            }
            recovery.records += records;
            segments.push_back(Segment { id, len: good });
        }
        if segments.is_empty() {
            File::create(name(&dir, 1))?;
            sync_dir(&dir)?;
            segments.push_back(Segment { id: 1, len: 0 });
        }
        let active_id = segments.back().map_or(1, |s| s.id);
        let active = OpenOptions::new()
            .append(true)
            .open(name(&dir, active_id))?;
        Ok((
            Self {
                dir,
                config,
                segments,
                active,
                unsynced: 0,
            },
            recovery,
        ))
    }

    /// Appends one record; returns its position. The record is in the kernel
    /// (safe from a process kill) when this returns.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty payload or one over the record bound; [`Error::Io`]
    /// when writing fails (the log is then still consistent up to the
    /// previous record: a partial write is a torn tail on the next open).
    pub fn append(&mut self, payload: &[u8]) -> Result<Position, Error> {
        let mut batch = Batch::default();
        batch.push(&[payload]);
        self.append_batch(&mut batch)
    }

    /// Appends every record of `batch` with one write and empties it;
    /// returns the position of the first. Records are acknowledged, as with
    /// [`SegmentLog::append`], once this returned. A batch never spans
    /// segments: it may make the active segment exceed its bound by up to
    /// the batch's size.
    ///
    /// # Errors
    /// As [`SegmentLog::append`]; on an error no record of the batch is
    /// acknowledged and the batch is left as it was, to be appended again
    /// (a partial write is a torn tail on the next open).
    pub fn append_batch(&mut self, batch: &mut Batch) -> Result<Position, Error> {
        if batch.empty {
            // A zero length is what a zero-filled tail reads as: never valid.
            return Err(Error::Config("an empty record cannot be appended".into()));
        }
        if batch.largest > u64::from(self.config.max_record) {
            return Err(Error::Config(format!(
                "record of {} bytes is over the bound of {}",
                batch.largest, self.config.max_record
            )));
        }
        let needs_roll = self.segments.back().is_some_and(|s| {
            s.len > 0
                && !batch.buf.is_empty()
                && s.len + batch.buf.len() as u64 > self.config.max_segment
        });
        if needs_roll {
            self.roll()?;
        }
        let seg = self
            .segments
            .back_mut()
            .ok_or_else(|| Error::Config("log has no segment".into()))?;
        let pos = Position {
            segment: seg.id,
            offset: seg.len,
        };
        if batch.buf.is_empty() {
            return Ok(pos);
        }
        self.active.write_all(&batch.buf)?;
        seg.len += batch.buf.len() as u64;
        let count = batch.records;
        batch.clear();
        if let Fsync::Every(n) = self.config.fsync {
            self.unsynced = self.unsynced.saturating_add(count);
            if self.unsynced >= n.max(1) {
                self.active.sync_data()?;
                self.unsynced = 0;
            }
        }
        Ok(pos)
    }

    /// Closes the active segment and starts a new one (time-based rotation
    /// calls this; appends call it when a segment is full).
    ///
    /// # Errors
    /// [`Error::Io`] when the new segment cannot be created.
    pub fn roll(&mut self) -> Result<(), Error> {
        if self.config.fsync != Fsync::Never {
            self.active.sync_data()?;
        }
        let next = self.segments.back().map_or(1, |s| s.id + 1);
        self.active = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(name(&self.dir, next))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { id: next, len: 0 });
        self.unsynced = 0;
        Ok(())
    }

    /// Forces appended records to stable storage.
    ///
    /// # Errors
    /// [`Error::Io`] when the sync fails.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.active.sync_data()?;
        self.unsynced = 0;
        Ok(())
    }

    /// The position of the oldest record kept.
    pub fn start(&self) -> Position {
        Position {
            segment: self.segments.front().map_or(1, |s| s.id),
            offset: 0,
        }
    }

    /// The position the next record will be appended at.
    pub fn end(&self) -> Position {
        self.segments
            .back()
            .map_or_else(Position::default, |s| Position {
                segment: s.id,
                offset: s.len,
            })
    }

    /// Bytes held in all segments.
    pub fn len_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }

    /// Saves `at` as how far the log's reader got downstream (a small file
    /// beside the segments, replaced atomically), so that after a restart
    /// it resumes there instead of at [`SegmentLog::start`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save_mark(&self, at: Position) -> Result<(), Error> {
        let tmp = self.dir.join(format!("{MARK}.tmp"));
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&at.segment.to_le_bytes());
        b.extend_from_slice(&at.offset.to_le_bytes());
        fs::write(&tmp, &b)?;
        fs::rename(&tmp, self.dir.join(MARK))?;
        Ok(())
    }

    /// The position saved by [`SegmentLog::save_mark`], when there is one
    /// inside the log; else where a reader starts: [`SegmentLog::start`].
    pub fn mark(&self) -> Position {
        let saved = fs::read(self.dir.join(MARK)).ok().and_then(|b| {
            let seg: [u8; 8] = b.get(..8)?.try_into().ok()?;
            let off: [u8; 8] = b.get(8..16)?.try_into().ok()?;
            Some(Position {
                segment: u64::from_le_bytes(seg),
                offset: u64::from_le_bytes(off),
            })
        });
        saved
            .filter(|p| *p >= self.start() && *p <= self.end())
            .unwrap_or_else(|| self.start())
    }

    /// Bytes held from `at` to the end (all of them when `at` is before the start).
    pub fn bytes_from(&self, at: Position) -> u64 {
        self.segments
            .iter()
            .map(|s| match s.id.cmp(&at.segment) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => s.len.saturating_sub(at.offset),
                std::cmp::Ordering::Greater => s.len,
            })
            .sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Reads up to `max` records from `at`, advancing it past them.
    ///
    /// # Errors
    /// [`Error::Io`] on a read failure, [`Error::Corrupt`] when a record fails
    /// its bound or CRC.
    pub fn read(&self, at: &mut Position, max: usize) -> Result<Vec<Bytes>, Error> {
        Ok(self
            .read_entries(at, max)?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// As [`SegmentLog::read`], with the position each record starts at, so a
    /// reader that could not hand every record on can resume from one.
    ///
    /// # Errors
    /// As [`SegmentLog::read`].
    pub fn read_entries(
        &self,
        at: &mut Position,
        max: usize,
    ) -> Result<Vec<(Position, Bytes)>, Error> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seg) = self.segments.iter().find(|s| s.id >= at.segment) else {
                break;
            };
            if seg.id > at.segment {
                *at = Position {
                    segment: seg.id,
                    offset: 0,
                };
            }
            if at.offset >= seg.len {
                match self.segments.iter().find(|s| s.id > seg.id) {
                    Some(next) => {
                        *at = Position {
                            segment: next.id,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let path = name(&self.dir, seg.id);
            let file = File::open(&path)?;
            let left = seg.len - at.offset;
            // At least the first record whole (its length is checked below).
            let mut head = [0u8; HEADER as usize];
            file.read_exact_at(&mut head, at.offset)?;
            let first =
                HEADER + u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
            let want = left.min(READ_CHUNK.max(first));
            let mut buf = vec![0u8; want as usize];
            file.read_exact_at(&mut buf, at.offset)?;
            let mut spans = Vec::new();
            let mut off = 0usize;
            while out.len() + spans.len() < max && off < buf.len() {
                match check_record(&buf[off..], self.config.max_record) {
                    Ok(n) => {
                        spans.push((off, n));
                        off += n;
                    }
                    // The chunk ends inside a record the segment holds whole.
                    Err(Bad::Short) if off > 0 => break,
                    Err(Bad::Short) => {
                        return Err(corrupt(&path, at.offset, "record length out of bounds"));
                    }
                    Err(bad) => {
                        return Err(corrupt(&path, at.offset + off as u64, bad.reason()));
                    }
                }
            }
            // One buffer for the chunk; records are slices of it.
            let chunk = Bytes::from(buf);
            for (start, n) in spans {
                let pos = Position {
                    segment: seg.id,
                    offset: at.offset + start as u64,
                };
                out.push((pos, chunk.slice(start + HEADER as usize..start + n)));
            }
            at.offset += off as u64;
        }
        Ok(out)
    }

    /// Removes every segment wholly before `at`: call it with the position
    /// after the last record acknowledged downstream. The active segment is
    /// never removed.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be removed.
    pub fn release_before(&mut self, at: Position) -> Result<(), Error> {
        while self.segments.len() > 1 {
            let Some(first) = self.segments.front() else {
                break;
            };
            let whole = first.id < at.segment || (first.id == at.segment && at.offset >= first.len);
            if !whole {
                break;
            }
            fs::remove_file(name(&self.dir, first.id))?;
            self.segments.pop_front();
        }
        Ok(())
    }
}

/// Why the bytes at some offset are not a whole, valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// Fewer bytes than the header, or than the length it gives.
    Short,
    /// A length over the record bound.
    Length,
    /// A zero length: never written (`append` refuses empty records), as
    /// a zero-filled tail after a power loss reads.
    Empty,
    /// The payload does not match its crc32.
    Crc,
}

impl Bad {
    fn reason(self) -> &'static str {
        match self {
            Bad::Short => "record cut short",
            Bad::Length => "record length over the bound",
            Bad::Empty => "zero record length",
            Bad::Crc => "crc mismatch",
        }
    }
}

/// The one check of a record: the size of the whole record at the start of
/// `buf` (header and payload), or why it is not one.
fn check_record(buf: &[u8], max_record: u32) -> Result<usize, Bad> {
    let Some(head) = buf.get(..HEADER as usize) else {
        return Err(Bad::Short);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > max_record {
        return Err(Bad::Length);
    }
    if len == 0 {
        return Err(Bad::Empty);
    }
    let end = HEADER as usize + len as usize;
    let payload = buf.get(HEADER as usize..end).ok_or(Bad::Short)?;
    if crc32fast::hash(payload) != crc {
        return Err(Bad::Crc);
    }
    Ok(end)
}

/// True when whole records, one or more, run from some offset after `from`
/// exactly to the end of `data`: then the bad record at `from` was followed
/// by data, and cutting it off would lose acknowledged records.
fn whole_records_follow(data: &[u8], from: usize, max_record: u32) -> bool {
    (from + 1..data.len()).any(|start| {
        let mut off = start;
        while let Ok(n) = check_record(&data[off..], max_record) {
            off += n;
            if off == data.len() {
                return true;
            }
        }
        false
    })
}

/// Scans a segment: (whole records, length of the good prefix). In the last
/// segment a bad record with no whole record after it is a torn tail (what a
/// power loss or a killed write leaves); anything else is corruption.
fn scan(path: &Path, max_record: u32, last: bool) -> Result<(u64, u64), Error> {
    let data = fs::read(path)?;
    let (mut off, mut records) = (0usize, 0u64);
    while off < data.len() {
        match check_record(&data[off..], max_record) {
            Ok(n) => {
                records += 1;
                off += n;
            }
            Err(_) if last && !whole_records_follow(&data, off, max_record) => {
                return Ok((records, off as u64));
            }
            Err(bad) => {
                let why = if bad == Bad::Short {
                    "torn record in a closed segment"
                } else {
                    bad.reason()
                };
                return Err(corrupt(path, off as u64, why));
            }
        }
    }
    Ok((records, off as u64))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, seg: u64) -> (SegmentLog, Recovery) {
        SegmentLog::open(
            dir,
            SegmentConfig::default()
                .max_segment_bytes(seg)
                .max_record_bytes(1024),
        )
        .unwrap()
    }

    fn all(log: &SegmentLog) -> Vec<Bytes> {
        let mut at = log.start();
        log.read(&mut at, usize::MAX).unwrap()
    }

    #[test]
    fn append_read_rotate_release() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rec) = open(dir.path(), 64);
        assert_eq!(rec, Recovery::default());
        for i in 0..20u32 {
            log.append(format!("record-{i:02}").as_bytes()).unwrap(); // 17 bytes a record
        }
        assert_eq!(log.segment_count(), 7, "three records per 64-byte segment");
        let want: Vec<Bytes> = (0..20u32)
            .map(|i| Bytes::from(format!("record-{i:02}")))
            .collect();
        assert_eq!(all(&log), want);
        // Read in small batches across segment boundaries.
        let mut at = log.start();
        let mut got = Vec::new();
        loop {
            let batch = log.read(&mut at, 5).unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
            if got.len() == 10 {
                log.release_before(at).unwrap();
            }
        }
        assert_eq!(got, want);
        assert_eq!(log.segment_count(), 4, "segments before record 10 removed");
        assert_eq!(all(&log), want[9..].to_vec());
        log.release_before(log.end()).unwrap();
        assert_eq!(log.segment_count(), 1, "the active segment stays");
        drop(log);
        let (log, rec) = open(dir.path(), 64);
        assert_eq!(rec.records, 2);
        assert_eq!(all(&log), want[18..].to_vec());
    }

    #[test]
    fn torn_tail_is_truncated_whole_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        for i in 0..5u8 {
            log.append(&[i; 10]).unwrap();
        }
        let path = name(dir.path(), 1);
        let full = fs::metadata(&path).unwrap().len();
        drop(log);
        // Cut the file at every length inside the last record.
        for cut in (full - 18 + 1)..full {
            let data = fs::read(&path).unwrap();
            let keep = data.clone();
            fs::write(&path, &data[..cut as usize]).unwrap();
            let (log, rec) = open(dir.path(), 1 << 20);
            assert_eq!(
                (rec.records, rec.truncated_bytes),
                (4, cut - (full - 18)),
                "cut {cut}"
            );
            assert_eq!(all(&log).len(), 4);
            drop(log);
            fs::write(&path, &keep).unwrap();
        }
        // A last record with garbage payload (power loss) is a torn tail too.
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let (mut log, rec) = open(dir.path(), 1 << 20);
        assert_eq!((rec.records, rec.truncated_bytes), (4, 18));
        log.append(b"after").unwrap();
        assert_eq!(all(&log).last().unwrap(), &b"after"[..]);
    }

    #[test]
    fn corruption_in_the_middle_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        for i in 0..5u8 {
            log.append(&[i; 10]).unwrap();
        }
        drop(log);
        let path = name(dir.path(), 1);
        let mut data = fs::read(&path).unwrap();
        data[18 + 8 + 3] ^= 0x01; // one bit of the second record's payload
        fs::write(&path, &data).unwrap();
        match SegmentLog::open(dir.path(), SegmentConfig::default()) {
            Err(Error::Corrupt { offset, reason, .. }) => {
                assert_eq!((offset, reason.as_str()), (18, "crc mismatch"))
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn every_cut_of_the_active_segment_keeps_exactly_the_whole_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        let payloads: Vec<Vec<u8>> = (1..=6u8).map(|i| vec![i; usize::from(i) * 3]).collect();
        let mut ends = Vec::new();
        for p in &payloads {
            log.append(p).unwrap();
            ends.push(log.end().offset);
        }
        drop(log);
        let path = name(dir.path(), 1);
        let full = fs::read(&path).unwrap();
        for cut in 0..=full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (log, rec) = open(dir.path(), 1 << 20);
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            assert_eq!(rec.records, whole as u64, "cut {cut}");
            let got = all(&log);
            assert_eq!(got.len(), whole, "cut {cut}");
            for (g, p) in got.iter().zip(&payloads) {
                assert_eq!(&g[..], &p[..]);
            }
        }
    }

    #[test]
    fn a_damaged_length_in_the_middle_of_the_active_segment_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        for i in 0..5u8 {
            log.append(&[i + 1; 10]).unwrap();
        }
        drop(log);
        let path = name(dir.path(), 1);
        let good = fs::read(&path).unwrap();
        // Record 2 starts at 36; its length grows past the file's end, or
        // shrinks inside its payload: records 3 and 4 follow either way.
        for (byte, flip) in [(36 + 2, 0x01), (36, 0x08)] {
            let mut data = good.clone();
            data[byte] ^= flip;
            fs::write(&path, &data).unwrap();
            match SegmentLog::open(dir.path(), SegmentConfig::default()) {
                Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 36),
                other => panic!("byte {byte}: expected corruption, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_zero_filled_tail_is_torn_not_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        log.append(b"x").unwrap();
        drop(log);
        let path = name(dir.path(), 1);
        let mut data = fs::read(&path).unwrap();
        data.extend_from_slice(&[0u8; 24]);
        fs::write(&path, &data).unwrap();
        let (log, rec) = open(dir.path(), 1 << 20);
        assert_eq!((rec.records, rec.truncated_bytes), (1, 24));
        assert_eq!(all(&log), vec![Bytes::from_static(b"x")]);
    }

    #[test]
    fn empty_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        assert!(matches!(log.append(b""), Err(Error::Config(_))));
        assert!(log.is_empty());
    }

    #[test]
    fn records_larger_than_a_read_chunk_and_chunks_ending_mid_record_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
        let sizes = [100_000usize, 300_000, 7, 200_000, 60_000];
        for (i, n) in sizes.iter().enumerate() {
            log.append(&vec![i as u8 + 1; *n]).unwrap();
        }
        let mut at = log.start();
        let got = log.read(&mut at, usize::MAX).unwrap();
        assert_eq!(got.iter().map(Bytes::len).collect::<Vec<_>>(), sizes);
        for (i, g) in got.iter().enumerate() {
            assert!(g.iter().all(|&b| b == i as u8 + 1));
        }
        assert_eq!(at, log.end());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn append_read_reopen_round_trip(
                payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..40),
                segment in 64u64..2048,
                batch in 1usize..8,
            ) {
                let dir = tempfile::tempdir().unwrap();
                let (mut log, _) = open(dir.path(), segment);
                for chunk in payloads.chunks(batch) {
                    let mut b = Batch::default();
                    for p in chunk {
                        b.push(&[&p[..p.len() / 2], &p[p.len() / 2..]]);
                    }
                    log.append_batch(&mut b).unwrap();
                }
                let want: Vec<Bytes> = payloads.iter().map(|p| Bytes::from(p.clone())).collect();
                prop_assert_eq!(all(&log), want.clone());
                drop(log);
                let (log, rec) = open(dir.path(), segment);
                prop_assert_eq!(rec.records, want.len() as u64);
                prop_assert_eq!(rec.truncated_bytes, 0);
                prop_assert_eq!(all(&log), want);
            }
        }
    }

    #[test]
    fn oversized_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        assert!(matches!(log.append(&[0; 1025]), Err(Error::Config(_))));
        assert!(log.is_empty());
    }
}
