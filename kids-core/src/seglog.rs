//! The segment log: CRC-framed records in rotating segment files, for spools.
//!
//! ```text
//!  dir/00000000000000000001.seg   [len u32 LE][crc32 u32 LE][payload] [len][crc][payload] ...
//!  dir/00000000000000000002.seg   ...                               <- active, appended to
//! ```
//! A record is acknowledged to the caller once `write` returned, so a killed
//! process loses nothing it acknowledged (the kernel holds the bytes); an
//! [`Fsync`] policy decides how much survives a machine crash. On open the
//! log truncates a torn tail (a last record cut short, or a last record whose
//! CRC fails, as a power loss leaves it) and keeps every whole record before
//! it. A bad record anywhere else is corruption: open fails with its file and
//! offset, it is never skipped silently. Segments are removed only through
//! [`SegmentLog::release_before`], once every record in them was acknowledged
//! downstream.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::Error;

const HEADER: u64 = 8;
const SUFFIX: &str = ".seg";

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
    /// truncated; [`Error::Corrupt`] when a record other than the last one
    /// fails its length bound or CRC.
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
    /// [`Error::Config`] for a payload over the record bound; [`Error::Io`]
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
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(at.offset))?;
            let mut reader = io::BufReader::with_capacity(256 * 1024, f);
            while out.len() < max && at.offset < seg.len {
                let mut head = [0u8; HEADER as usize];
                reader.read_exact(&mut head)?;
                let (len, crc) = parse_header(&head);
                if len > self.config.max_record || at.offset + HEADER + u64::from(len) > seg.len {
                    return Err(corrupt(&path, at.offset, "record length out of bounds"));
                }
                let mut payload = vec![0u8; len as usize];
                reader.read_exact(&mut payload)?;
                if crc32fast::hash(&payload) != crc {
                    return Err(corrupt(&path, at.offset, "crc mismatch"));
                }
                out.push((*at, Bytes::from(payload)));
                at.offset += HEADER + u64::from(len);
            }
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

fn parse_header(head: &[u8; 8]) -> (u32, u32) {
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    (len, crc)
}

/// Scans a segment: (whole records, length of the good prefix).
fn scan(path: &Path, max_record: u32, last: bool) -> Result<(u64, u64), Error> {
    let data = fs::read(path)?;
    let total = data.len() as u64;
    let (mut off, mut records) = (0u64, 0u64);
    while off < total {
        let rest = &data[off as usize..];
        if rest.len() < HEADER as usize {
            return torn(path, off, records, last, "short header");
        }
        let (len, crc) = parse_header(&[
            rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7],
        ]);
        let end = off + HEADER + u64::from(len);
        if len > max_record {
            return if last && end >= total {
                torn(path, off, records, last, "")
            } else {
                Err(corrupt(path, off, "record length over the bound"))
            };
        }
        if end > total {
            return torn(path, off, records, last, "short record");
        }
        let payload = &rest[HEADER as usize..(HEADER + u64::from(len)) as usize];
        if crc32fast::hash(payload) != crc {
            // A last record whose bytes did not all reach the disk is a torn tail.
            return if last && end == total {
                torn(path, off, records, last, "")
            } else {
                Err(corrupt(path, off, "crc mismatch"))
            };
        }
        records += 1;
        off = end;
    }
    Ok((records, off))
}

fn torn(path: &Path, off: u64, records: u64, last: bool, why: &str) -> Result<(u64, u64), Error> {
    if last {
        Ok((records, off))
    } else {
        Err(corrupt(
            path,
            off,
            if why.is_empty() {
                "torn record in a closed segment"
            } else {
                why
            },
        ))
    }
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
    fn oversized_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        assert!(matches!(log.append(&[0; 1025]), Err(Error::Config(_))));
        assert!(log.is_empty());
    }
}
