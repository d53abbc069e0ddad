//! The segment log: CRC-framed records in rotating segment files, for spools.
//!
//! ```text
//!  dir/00000000000000000001.seg   [len u32 LE][crc32 u32 LE][payload] [len][crc][payload] ...
//!  dir/00000000000000000002.seg   ...                               <- active, appended to
//!  dir/acked.pos                  the reader's saved position (save_mark)
//!
//!  SegmentLog (one writer) ──append──▶ active segment ──sync──▶ committed end ──▶ LogReader (any number)
//!     release_before(acked) removes whole segments        readers wait on it ◀──┘ (poll_advance / wait_advance)
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
//! downstream; a read position inside a removed segment is
//! [`Error::Released`], never a silent jump to the start.
//!
//! Failures. A write that fails partway (a full disk) is undone: the segment
//! is truncated back to the last whole record, and the log goes on. When
//! that truncation fails too, or an fsync fails, the log is *poisoned*: what
//! it wrote is not known to be on disk, and every later append, roll or sync
//! returns [`Error::Poisoned`] until the log is reopened (reopening recovers
//! what the files hold). A failed fsync is never retried as if it had
//! succeeded. Reading and releasing need no free space and work on a
//! poisoned log; after an append failed for want of space, releasing the
//! whole log also starts a new segment, so the old active one can go.
//!
//! Readers. [`SegmentLog::reader`] hands out cloneable [`LogReader`]s that
//! read the segment files by position with file handles of their own, up
//! to the *committed end*: after each append under [`Fsync::Never`] and
//! [`Fsync::OnRotate`] (the kernel holds the records, all those policies
//! promise), after the fsync that covers them under [`Fsync::Every`].
//! A reader waits for that end to move with [`LogReader::poll_advance`]
//! (async) or [`LogReader::wait_advance`] (a thread). The writer takes the
//! readers' lock only to publish a new end, never across a write or an
//! fsync.
//!
//! Every file operation goes through [`LogFs`]: [`StdFs`] by default; a test
//! passes its own to [`SegmentLog::open_with`] to make writes fail with
//! ENOSPC partway, fsyncs fail with EIO, or writes come back short.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use crate::{Corruption, Error, lock};

const HEADER: u64 = 8;
/// Bytes read from a segment per call of `read_entries`, at least.
const READ_CHUNK: u64 = 256 * 1024;
const SUFFIX: &str = ".seg";
/// The file [`SegmentLog::save_mark`] writes.
const MARK: &str = "acked.pos";

/// How [`LogFs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenMode {
    /// Reading only; the file must exist.
    Read,
    /// Reading and writing at positions; the file must exist.
    Write,
    /// Reading and writing a new, empty file; fails when the file exists.
    CreateNew,
    /// Reading and writing; created when missing, emptied when not.
    Truncate,
}

/// The file operations of a [`SegmentLog`] and its readers.
///
/// [`StdFs`] does them with `std::fs`. Tests implement this trait to inject
/// faults: a disk that fills after some bytes, an fsync that fails, writes
/// that come back short.
pub trait LogFs: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    ///
    /// # Errors
    /// The operating system's error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// The names of the entries of `dir`.
    ///
    /// # Errors
    /// The operating system's error.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;

    /// Opens the file at `path`.
    ///
    /// # Errors
    /// The operating system's error.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>>;

    /// Removes the file at `path`.
    ///
    /// # Errors
    /// The operating system's error.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to` atomically.
    ///
    /// # Errors
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Forces the entries of directory `dir` (names created, renamed,
    /// removed) to stable storage.
    ///
    /// # Errors
    /// The operating system's error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Reads the whole file at `path` into `buf` (cleared first), reusing
    /// its memory: how recovery reads each segment. The default opens the
    /// file and reads it with [`LogFile::read_at`].
    ///
    /// # Errors
    /// The operating system's error.
    fn read_whole(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        let file = self.open(path, OpenMode::Read)?;
        let len = usize::try_from(file.size()?).map_err(io::Error::other)?;
        buf.clear();
        buf.resize(len, 0);
        read_exact_at(&*file, buf, 0)
    }
}

/// An open file of a [`LogFs`]; reads and writes at explicit positions, so
/// one handle may serve several readers.
pub trait LogFile: Send + Sync + fmt::Debug {
    /// Reads into `buf` from `offset`; returns how many bytes it read (0 at the end).
    ///
    /// # Errors
    /// The operating system's error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes from `buf` at `offset`; returns how many bytes it wrote,
    /// possibly fewer than `buf` holds.
    ///
    /// # Errors
    /// The operating system's error (ENOSPC on a full disk).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Forces the file's data to stable storage (`fdatasync`).
    ///
    /// # Errors
    /// The operating system's error: the data is then not known to be durable.
    fn sync(&self) -> io::Result<()>;

    /// Truncates or extends the file to `len` bytes.
    ///
    /// # Errors
    /// The operating system's error.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// The file's size in bytes.
    ///
    /// # Errors
    /// The operating system's error.
    fn size(&self) -> io::Result<u64>;
}

/// [`LogFs`] on `std::fs`: what [`SegmentLog::open`] uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl LogFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::Write => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
            OpenMode::Truncate => o.read(true).write(true).create(true).truncate(true),
        };
        Ok(Arc::new(o.open(path)?))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn read_whole(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Read;
        buf.clear();
        // read_to_end fills the spare capacity without zeroing it first.
        File::open(path)?.read_to_end(buf).map(|_| ())
    }
}

impl LogFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        FileExt::write_at(self, buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
fn read_exact_at(file: &dyn LogFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`, going on after short writes.
fn write_all_at(file: &dyn LogFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The whole content of the file at `path`.
fn read_file(fs: &dyn LogFs, path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    read_file_into(fs, path, &mut data)?;
    Ok(data)
}

/// Reads the whole file at `path` into `buf`, reusing its memory.
fn read_file_into(fs: &dyn LogFs, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    fs.read_whole(path, buf)
}

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
    preallocate: u64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            max_segment: 64 << 20,
            max_record: 64 << 20,
            fsync: Fsync::Never,
            preallocate: 0,
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
    /// Zero-fills the active segment this many bytes past its end whenever
    /// an append reaches the end of what was filled (0, the default: never).
    ///
    /// An append that grows its file makes the fsync covering it commit
    /// the file system's journal too (the file's size changed), and that
    /// commit waits for every other change queued on the file system
    /// (other programs' file creations, renames, writes): under load a
    /// small record's fsync takes milliseconds instead of one disk flush.
    /// Records written over blocks already filled leave the size alone, so
    /// their fsync flushes data only (beanstalkd fills its binlog files with
    /// zeros for this reason). The filled tail reads as a zero length, which
    /// no record has: [`SegmentLog::open`] cuts it like a torn tail, a
    /// segment is cut to its records before it is closed, and dropping the
    /// log cuts the active one. Worth it under an [`Fsync::Every`] policy;
    /// a failed fill (a full disk) only stops filling until the next segment.
    pub fn preallocate_bytes(mut self, bytes: u64) -> Self {
        self.preallocate = bytes;
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

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    config: SegmentConfig,
    shared: Arc<Shared>,
    /// Every segment kept, each with the length written to it.
    segments: VecDeque<Segment>,
    active: Arc<dyn LogFile>,
    unsynced: u32,
    /// The end of the last segment released.
    released_end: Option<Position>,
    /// Why the log refuses writes until reopened (see the module documentation).
    poisoned: Option<io::ErrorKind>,
    /// An append failed for want of space, and none succeeded since.
    out_of_space: bool,
    /// The active file's length: its records, then zeros written ahead
    /// ([`SegmentConfig::preallocate_bytes`]).
    filled: u64,
    /// Filling failed in the active segment: not tried again before the next.
    fill_failed: bool,
}

/// What the writer shares with its readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    fs: Arc<dyn LogFs>,
    max_record: u32,
    view: Mutex<View>,
    moved: Condvar,
}

impl Shared {
    fn poisoned(&self, cause: io::ErrorKind) -> Error {
        Error::Poisoned {
            dir: self.dir.clone(),
            cause,
        }
    }
}

/// The log as readers see it.
#[derive(Debug, Default)]
struct View {
    /// Every segment kept, each up to its committed length.
    segments: VecDeque<Segment>,
    released_end: Option<Position>,
    poisoned: Option<io::ErrorKind>,
    wakers: Vec<Waker>,
    /// Threads blocked in [`LogReader::wait_advance`]: the condvar is
    /// notified only when some wait (a notify is a futex call even then).
    blocked: usize,
}

/// The position of the oldest record kept in `segments`.
fn start_of(segments: &VecDeque<Segment>) -> Position {
    Position {
        segment: segments.front().map_or(1, |s| s.id),
        offset: 0,
    }
}

/// The position after the last record in `segments`.
fn end_of(segments: &VecDeque<Segment>) -> Position {
    segments
        .back()
        .map_or_else(Position::default, |s| Position {
            segment: s.id,
            offset: s.len,
        })
}

/// Checks a read position against the start of `segments`: one before it is
/// released, except the end of the last segment released (the start, then).
fn check_position(
    segments: &VecDeque<Segment>,
    released_end: Option<Position>,
    at: &mut Position,
) -> Result<(), Error> {
    let start = start_of(segments);
    if *at < start {
        if released_end != Some(*at) {
            return Err(Error::Released { at: *at, start });
        }
        *at = start;
    }
    Ok(())
}

/// True when `segments` hold a record at or after `at`.
fn holds_after(segments: &VecDeque<Segment>, at: Position) -> bool {
    segments
        .iter()
        .rev()
        .any(|s| (s.id > at.segment && s.len > 0) || (s.id == at.segment && s.len > at.offset))
}

fn name(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

fn corrupt(path: &Path, offset: u64, reason: Corruption) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

fn is_out_of_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        // The zeros written ahead go: a clean close leaves no tail to cut.
        if self.poisoned.is_none()
            && let Err(e) = self.cut_fill()
        {
            tracing::debug!(dir = %self.shared.dir.display(), error = %e, "cannot cut the zero-filled tail");
        }
    }
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir` with [`StdFs`],
    /// recovering from a crash.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory or a segment cannot be read or
    /// truncated; [`Error::Corrupt`] when a bad record is not a torn tail
    /// (see the module documentation).
    pub fn open(dir: impl AsRef<Path>, config: SegmentConfig) -> Result<(Self, Recovery), Error> {
        Self::open_with(dir, config, Arc::new(StdFs))
    }

    /// As [`SegmentLog::open`], doing every file operation through `fs`.
    ///
    /// # Errors
    /// As [`SegmentLog::open`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: SegmentConfig,
        fs: Arc<dyn LogFs>,
    ) -> Result<(Self, Recovery), Error> {
        Self::open_visiting(dir, config, fs, |_, _| {})
    }

    /// As [`SegmentLog::open_with`], calling `visit` with the position and
    /// payload of every whole record kept, oldest first, as recovery reads
    /// them: a user that rebuilds an index or replays state from the log
    /// reads it once, not twice.
    ///
    /// # Errors
    /// As [`SegmentLog::open`].
    pub fn open_visiting(
        dir: impl AsRef<Path>,
        config: SegmentConfig,
        fs: Arc<dyn LogFs>,
        mut visit: impl FnMut(Position, &[u8]),
    ) -> Result<(Self, Recovery), Error> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for file in fs.list(&dir)? {
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
        // Checks and visits segment `i` (`id`), whose bytes are `data`;
        // gives the buffer back for reuse.
        let mut check = |i: usize, id: u64, data: Vec<u8>| -> Result<Vec<u8>, Error> {
            let path = name(&dir, id);
            let last = i + 1 == ids.len();
            let (records, good) = scan(&path, &data, config.max_record, last, &mut |off, rec| {
                visit(
                    Position {
                        segment: id,
                        offset: off,
                    },
                    rec,
                );
            })?;
            let len = data.len() as u64;
            if good < len {
                recovery.truncated_bytes += len - good;
                let zeros = data
                    .get(good as usize..)
                    .is_some_and(|t| t.iter().all(|&b| b == 0));
                if zeros {
                    // What SegmentConfig::preallocate_bytes leaves after a kill.
                    tracing::debug!(path = %path.display(), zeros = len - good, "cutting the zero-filled tail of segment");
                } else {
                    tracing::warn!(path = %path.display(), torn = len - good, "truncating torn tail of segment");
                }
                let f = fs.open(&path, OpenMode::Write)?;
                f.set_len(good)?;
                f.sync()?;
            }
            recovery.records += records;
            segments.push_back(Segment { id, len: good });
            Ok(data)
        };
        if ids.len() <= 1 {
            // One segment (the usual small log): nothing to read ahead, no thread.
            for (i, &id) in ids.iter().enumerate() {
                let mut buf = Vec::new();
                read_file_into(&*fs, &name(&dir, id), &mut buf)?;
                check(i, id, buf)?;
            }
        } else {
            // One thread reads the next segment while this one checks and
            // visits the current: recovery takes about the longer of the
            // two, not their sum. Two buffers go back and forth, reused.
            std::thread::scope(|scope| -> Result<(), Error> {
                let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
                let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
                let _ = empty_tx.send(Vec::new());
                let _ = empty_tx.send(Vec::new());
                let (reader_fs, reader_dir, reader_ids) = (&fs, &dir, &ids);
                scope.spawn(move || {
                    for &id in reader_ids {
                        let Ok(mut buf) = empty_rx.recv() else { return };
                        let read = read_file_into(&**reader_fs, &name(reader_dir, id), &mut buf);
                        if full_tx.send(read.map(|()| buf)).is_err() {
                            return;
                        }
                    }
                });
                for (i, &id) in ids.iter().enumerate() {
                    let data = full_rx
                        .recv()
                        .map_err(|_| io::Error::other("segment reader stopped"))??;
                    let _ = empty_tx.send(check(i, id, data)?);
                }
                Ok(())
            })?;
        }
        if segments.is_empty() {
            fs.open(&name(&dir, 1), OpenMode::CreateNew)?;
            fs.sync_dir(&dir)?;
            segments.push_back(Segment { id: 1, len: 0 });
        }
        let active_id = segments.back().map_or(1, |s| s.id);
        let active = fs.open(&name(&dir, active_id), OpenMode::Write)?;
        let filled = end_of(&segments).offset;
        let shared = Arc::new(Shared {
            dir,
            fs,
            max_record: config.max_record,
            view: Mutex::new(View {
                segments: segments.clone(),
                ..View::default()
            }),
            moved: Condvar::new(),
        });
        Ok((
            Self {
                config,
                shared,
                segments,
                active,
                unsynced: 0,
                released_end: None,
                poisoned: None,
                out_of_space: false,
                filled,
                fill_failed: false,
            },
            recovery,
        ))
    }

    /// A reader of this log's committed records, with file handles of its
    /// own; clone it for each reader.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
            file: None,
        }
    }

    /// True once a failed fsync, or a partial write that could not be
    /// undone, made the log refuse writes until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Appends one record; returns its position. The record is in the kernel
    /// (safe from a process kill) when this returns.
    ///
    /// # Errors
    /// [`Error::EmptyRecord`] for an empty payload, [`Error::RecordTooLarge`]
    /// for one over the record bound;
    /// otherwise as [`SegmentLog::append_batch`].
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
    /// - [`Error::EmptyRecord`] for an empty record, [`Error::RecordTooLarge`]
    ///   for one over the record bound.
    /// - [`Error::Io`] when the write failed (ENOSPC on a full disk): what
    ///   it wrote was truncated away, the batch is left as it was, to be
    ///   appended again, and positions are as before. When the truncation
    ///   failed too the log is poisoned.
    /// - [`Error::Io`] when the fsync of the [`Fsync::Every`] policy failed:
    ///   the batch was written, and emptied, but is not known to be on disk;
    ///   the log is poisoned, and the caller must count its records as not
    ///   stored.
    /// - [`Error::Poisoned`] on a poisoned log: nothing is written.
    pub fn append_batch(&mut self, batch: &mut Batch) -> Result<Position, Error> {
        self.writable()?;
        if batch.empty {
            // A zero length is what a zero-filled tail reads as: never valid.
            return Err(Error::EmptyRecord);
        }
        if batch.largest > u64::from(self.config.max_record) {
            return Err(Error::RecordTooLarge {
                len: batch.largest,
                max: u64::from(self.config.max_record),
            });
        }
        let needs_roll = self.segments.back().is_some_and(|s| {
            s.len > 0
                && !batch.buf.is_empty()
                && s.len + batch.buf.len() as u64 > self.config.max_segment
        });
        if needs_roll {
            self.roll()?;
        }
        let pos = self.end();
        if batch.buf.is_empty() {
            return Ok(pos);
        }
        if let Err(e) = write_all_at(&*self.active, &batch.buf, pos.offset) {
            self.out_of_space |= is_out_of_space(&e);
            // Undo what part of the batch reached the file: the segment
            // ends at its last whole record again.
            if let Err(undo) = self.active.set_len(pos.offset) {
                tracing::error!(dir = %self.shared.dir.display(), error = %undo, "cannot truncate a partial append: the log refuses writes until reopened");
                self.poison(e.kind());
            }
            self.filled = pos.offset;
            return Err(e.into());
        }
        self.out_of_space = false;
        let end = pos.offset + batch.buf.len() as u64;
        if let Some(seg) = self.segments.back_mut() {
            seg.len = end;
        }
        if end > self.filled {
            self.filled = end;
            self.fill_ahead();
        }
        let count = batch.records;
        batch.clear();
        match self.config.fsync {
            Fsync::Every(n) => {
                self.unsynced = self.unsynced.saturating_add(count);
                if self.unsynced >= n.max(1) {
                    self.sync_active()?;
                }
            }
            Fsync::Never | Fsync::OnRotate => self.publish(),
        }
        Ok(pos)
    }

    /// Closes the active segment and starts a new one (time-based rotation
    /// calls this; appends call it when a segment is full).
    ///
    /// # Errors
    /// [`Error::Io`] when the new segment cannot be created (nothing
    /// changed), or when the fsync of the old segment or of the directory
    /// failed (the log is then poisoned); [`Error::Poisoned`] on a poisoned log.
    pub fn roll(&mut self) -> Result<(), Error> {
        self.writable()?;
        // A closed segment ends at its last record: zeros after it would
        // read as damage once another segment follows.
        self.cut_fill()?;
        if self.config.fsync != Fsync::Never {
            self.sync_active()?;
        }
        let next = self.segments.back().map_or(1, |s| s.id + 1);
        let dir = &self.shared.dir;
        self.active = self.shared.fs.open(&name(dir, next), OpenMode::CreateNew)?;
        self.segments.push_back(Segment { id: next, len: 0 });
        self.unsynced = 0;
        self.filled = 0;
        self.fill_failed = false;
        if let Err(e) = self.shared.fs.sync_dir(dir) {
            self.poison(e.kind());
            return Err(e.into());
        }
        self.publish();
        Ok(())
    }

    /// Forces appended records to stable storage, and shows them to
    /// readers under [`Fsync::Every`].
    ///
    /// # Errors
    /// [`Error::Io`] when the fsync failed: the log is poisoned (a failed
    /// fsync is never retried as if it succeeded); [`Error::Poisoned`] on a
    /// poisoned log.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.writable()?;
        self.sync_active()
    }

    /// Zero-fills the active segment past its end (see
    /// [`SegmentConfig::preallocate_bytes`]); a failure only stops filling.
    fn fill_ahead(&mut self) {
        let ahead = self.config.preallocate;
        if ahead == 0 || self.fill_failed {
            return;
        }
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let (from, to) = (self.filled, self.filled.saturating_add(ahead));
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = write_all_at(&*self.active, &ZEROS[..n], at) {
                tracing::debug!(dir = %self.shared.dir.display(), error = %e, "cannot fill the segment ahead; appending without");
                self.fill_failed = true;
                // Whatever zeros reached the file are cut like a torn tail.
                return;
            }
            at += n as u64;
        }
        self.filled = to;
    }

    /// Cuts the zeros written ahead of the active segment's end.
    fn cut_fill(&mut self) -> Result<(), Error> {
        let end = self.end().offset;
        if self.filled > end || self.fill_failed {
            self.active.set_len(end)?;
            self.filled = end;
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), Error> {
        match self.poisoned {
            Some(cause) => Err(self.shared.poisoned(cause)),
            None => Ok(()),
        }
    }

    /// The fsync of the active segment; no lock readers need is held across it.
    fn sync_active(&mut self) -> Result<(), Error> {
        if let Err(e) = self.active.sync() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "fsync failed: the log refuses writes until reopened");
            self.poison(e.kind());
            return Err(e.into());
        }
        self.unsynced = 0;
        self.publish();
        Ok(())
    }

    fn poison(&mut self, cause: io::ErrorKind) {
        self.poisoned = Some(cause);
        let wakers = {
            let mut v = lock(&self.shared.view);
            v.poisoned = Some(cause);
            std::mem::take(&mut v.wakers)
        };
        self.shared.moved.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Shows readers everything written so far, and wakes those waiting.
    fn publish(&self) {
        let (wakers, blocked) = {
            let mut v = lock(&self.shared.view);
            let known = v.segments.back().map_or(0, |s| s.id);
            // Only the tail changes: the last segment readers know, and any after it.
            let from = self
                .segments
                .iter()
                .rposition(|s| s.id <= known)
                .unwrap_or(0);
            for seg in self.segments.iter().skip(from) {
                match v.segments.back_mut() {
                    Some(b) if b.id > seg.id => {}
                    Some(b) if b.id == seg.id => b.len = seg.len,
                    _ => v.segments.push_back(*seg),
                }
            }
            (std::mem::take(&mut v.wakers), v.blocked > 0)
        };
        // A thread that blocks after the view was unlocked sees the new
        // view before it sleeps: only those counted already need the call.
        if blocked {
            self.shared.moved.notify_all();
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The position of the oldest record kept.
    pub fn start(&self) -> Position {
        start_of(&self.segments)
    }

    /// The position the next record will be appended at.
    pub fn end(&self) -> Position {
        end_of(&self.segments)
    }

    /// Bytes held in all segments.
    pub fn len_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }

    /// Saves `at` as how far the log's reader got downstream, so that after
    /// a restart it resumes there instead of at [`SegmentLog::start`]: a
    /// small file beside the segments, written to a temporary file, synced,
    /// renamed over the old one, and the directory synced. Works on a
    /// poisoned log.
    ///
    /// # Errors
    /// [`Error::Io`] when a step failed (ENOSPC on a full disk): the mark
    /// saved before stays, so a restart may replay more, never less.
    pub fn save_mark(&self, at: Position) -> Result<(), Error> {
        let (fs, dir) = (&self.shared.fs, &self.shared.dir);
        let tmp = dir.join(format!("{MARK}.tmp"));
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&at.segment.to_le_bytes());
        b.extend_from_slice(&at.offset.to_le_bytes());
        let file = fs.open(&tmp, OpenMode::Truncate)?;
        write_all_at(&*file, &b, 0)?;
        file.sync()?;
        drop(file);
        fs.rename(&tmp, &dir.join(MARK))?;
        fs.sync_dir(dir)?;
        Ok(())
    }

    /// The position saved by [`SegmentLog::save_mark`], when there is one
    /// inside the log; else where a reader starts: [`SegmentLog::start`].
    pub fn mark(&self) -> Position {
        let saved = read_file(&*self.shared.fs, &self.shared.dir.join(MARK))
            .ok()
            .and_then(|b| {
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

    /// Reads up to `max` records from `at`, advancing it past them; the
    /// writer's view: everything appended, committed or not.
    ///
    /// # Errors
    /// [`Error::Released`] when `at` is inside a segment already released;
    /// [`Error::Io`] on a read failure; [`Error::Corrupt`] when a record
    /// fails its bound or CRC. `at` is left as it was on an error.
    pub fn read(&self, at: &mut Position, max: usize) -> Result<Vec<Bytes>, Error> {
        self.read_entries(at, max).map(payloads)
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
        check_position(&self.segments, self.released_end, at)?;
        read_segments(&self.shared, &self.segments, &mut None, at, max)
    }

    /// Removes every segment wholly before `at`: call it with the position
    /// after the last record acknowledged downstream. The active segment is
    /// never removed; but after an append failed for want of space, a
    /// release of the whole log first starts a new segment, so that the old
    /// active one goes too. Needs no free space, and works on a poisoned log.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be removed (those before it are gone).
    pub fn release_before(&mut self, at: Position) -> Result<(), Error> {
        let end = self.end();
        if self.out_of_space && self.poisoned.is_none() && at >= end && end.offset > 0 {
            match self.roll() {
                Ok(()) => {
                    tracing::info!(dir = %self.shared.dir.display(), "disk full: started a new segment so the acknowledged one can be removed")
                }
                Err(e) => tracing::debug!(error = %e, "cannot start a new segment on a full disk"),
            }
        }
        let mut result = Ok(());
        let mut released = None;
        while self.segments.len() > 1 {
            let Some(&first) = self.segments.front() else {
                break;
            };
            let whole = first.id < at.segment || (first.id == at.segment && at.offset >= first.len);
            if !whole {
                break;
            }
            if let Err(e) = self.shared.fs.remove(&name(&self.shared.dir, first.id)) {
                result = Err(e.into());
                break;
            }
            self.segments.pop_front();
            released = Some(Position {
                segment: first.id,
                offset: first.len,
            });
        }
        if let Some(end) = released {
            self.released_end = Some(end);
            let mut v = lock(&self.shared.view);
            while v.segments.front().is_some_and(|s| s.id <= end.segment) {
                v.segments.pop_front();
            }
            v.released_end = Some(end);
        }
        result
    }
}

/// Reads up to `max` records from `at` in `segments`, each up to its
/// length, advancing `at` past them (left as it was on an error); `file`
/// keeps the last segment file opened.
fn read_segments(
    shared: &Shared,
    segments: &VecDeque<Segment>,
    file: &mut Option<(u64, Arc<dyn LogFile>)>,
    at: &mut Position,
    max: usize,
) -> Result<Vec<(Position, Bytes)>, Error> {
    let mut out = Vec::new();
    let mut pos = *at;
    while out.len() < max {
        let Some(seg) = segments.iter().find(|s| s.id >= pos.segment).copied() else {
            break;
        };
        if seg.id > pos.segment {
            pos = Position {
                segment: seg.id,
                offset: 0,
            };
        }
        if pos.offset >= seg.len {
            match segments.iter().find(|s| s.id > seg.id) {
                Some(next) => {
                    pos = Position {
                        segment: next.id,
                        offset: 0,
                    };
                    continue;
                }
                None => break,
            }
        }
        let path = name(&shared.dir, seg.id);
        let f = match file {
            Some((id, f)) if *id == seg.id => f.clone(),
            _ => {
                let f = shared.fs.open(&path, OpenMode::Read)?;
                *file = Some((seg.id, f.clone()));
                f
            }
        };
        let left = seg.len - pos.offset;
        // At least the first record whole (its length is checked below).
        let mut head = [0u8; HEADER as usize];
        read_exact_at(&*f, &mut head, pos.offset)?;
        let first = HEADER + u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let want = left.min(READ_CHUNK.max(first));
        let mut buf = vec![0u8; want as usize];
        read_exact_at(&*f, &mut buf, pos.offset)?;
        let mut spans = Vec::new();
        let mut off = 0usize;
        while out.len() + spans.len() < max && off < buf.len() {
            match check_record(&buf[off..], shared.max_record) {
                Ok(n) => {
                    spans.push((off, n));
                    off += n;
                }
                // The chunk ends inside a record the segment holds whole.
                Err(Bad::Short) if off > 0 => break,
                Err(Bad::Short) => {
                    return Err(corrupt(&path, pos.offset, Corruption::PastSegmentEnd));
                }
                Err(bad) => {
                    return Err(corrupt(&path, pos.offset + off as u64, bad.reason()));
                }
            }
        }
        // One buffer for the chunk; records are slices of it.
        let chunk = Bytes::from(buf);
        for (start, n) in spans {
            let at = Position {
                segment: seg.id,
                offset: pos.offset + start as u64,
            };
            out.push((at, chunk.slice(start + HEADER as usize..start + n)));
        }
        pos.offset += off as u64;
    }
    *at = pos;
    Ok(out)
}

/// Reads a [`SegmentLog`]'s committed records while its writer appends,
/// and waits for more. Cloneable: each clone keeps its own file handle.
///
/// ```
/// use std::time::Duration;
/// use kids_core::{SegmentConfig, SegmentLog};
/// # let dir = tempfile::tempdir().unwrap();
/// let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
/// let mut reader = log.reader();
/// let mut at = reader.start();
/// assert_eq!(reader.wait_advance(at, Duration::ZERO).unwrap(), None, "nothing yet");
/// log.append(b"hello").unwrap();
/// assert_eq!(reader.wait_advance(at, Duration::ZERO).unwrap(), Some(log.end()));
/// assert_eq!(reader.read(&mut at, 10).unwrap(), vec![&b"hello"[..]]);
/// ```
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
    file: Option<(u64, Arc<dyn LogFile>)>,
}

impl LogReader {
    /// The position of the oldest record kept.
    pub fn start(&self) -> Position {
        start_of(&lock(&self.shared.view).segments)
    }

    /// The committed end: the position after the last record readers may read.
    pub fn end(&self) -> Position {
        end_of(&lock(&self.shared.view).segments)
    }

    /// Reads up to `max` committed records from `at`, advancing it past them.
    ///
    /// # Errors
    /// [`Error::Released`] when `at` is inside a segment already released
    /// (also when the writer released it during the read); [`Error::Io`]
    /// on a read failure; [`Error::Corrupt`] when a record fails its bound
    /// or CRC. `at` is left as it was on an error.
    pub fn read(&mut self, at: &mut Position, max: usize) -> Result<Vec<Bytes>, Error> {
        self.read_entries(at, max).map(payloads)
    }

    /// As [`LogReader::read`], with the position each record starts at.
    ///
    /// # Errors
    /// As [`LogReader::read`].
    pub fn read_entries(
        &mut self,
        at: &mut Position,
        max: usize,
    ) -> Result<Vec<(Position, Bytes)>, Error> {
        let (segments, released_end) = {
            let v = lock(&self.shared.view);
            check_position(&v.segments, v.released_end, at)?;
            (v.segments.clone(), v.released_end)
        };
        match read_segments(&self.shared, &segments, &mut self.file, at, max) {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Released between the check and the open.
                self.file = None;
                let v = lock(&self.shared.view);
                let mut probe = *at;
                check_position(&v.segments, released_end.max(v.released_end), &mut probe)?;
                Err(Error::Io(e))
            }
            other => other,
        }
    }

    /// Ready with the committed end once it holds a record at or after
    /// `from`; else registers `cx`'s waker, woken when the writer commits
    /// more (or is poisoned).
    ///
    /// # Errors
    /// [`Error::Released`] when `from` is inside a released segment;
    /// [`Error::Poisoned`] when nothing follows `from` and the writer is
    /// poisoned: nothing more will come.
    pub fn poll_advance(
        &self,
        from: Position,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Position, Error>> {
        let mut v = lock(&self.shared.view);
        match self.advanced(&v, from) {
            Ok(Some(end)) => return Poll::Ready(Ok(end)),
            Err(e) => return Poll::Ready(Err(e)),
            Ok(None) => {}
        }
        if !v.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            v.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Blocks the thread until the committed end holds a record at or
    /// after `from` (`Some(end)`), or `timeout` passed (`None`).
    ///
    /// # Errors
    /// As [`LogReader::poll_advance`].
    pub fn wait_advance(
        &self,
        from: Position,
        timeout: Duration,
    ) -> Result<Option<Position>, Error> {
        let mut v = lock(&self.shared.view);
        v.blocked += 1;
        let (mut v, _) = self
            .shared
            .moved
            .wait_timeout_while(v, timeout, |v| matches!(self.advanced(v, from), Ok(None)))
            .unwrap_or_else(PoisonError::into_inner);
        v.blocked -= 1;
        self.advanced(&v, from)
    }

    /// `Some(end)` when the view holds a record at or after `from`, `None`
    /// while it waits for one.
    fn advanced(&self, v: &View, from: Position) -> Result<Option<Position>, Error> {
        let mut at = from;
        check_position(&v.segments, v.released_end, &mut at)?;
        if holds_after(&v.segments, at) {
            return Ok(Some(end_of(&v.segments)));
        }
        match v.poisoned {
            Some(cause) => Err(self.shared.poisoned(cause)),
            None => Ok(None),
        }
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
    fn reason(self) -> Corruption {
        match self {
            Bad::Short => Corruption::CutShort,
            Bad::Length => Corruption::LengthOverBound,
            Bad::Empty => Corruption::ZeroLength,
            Bad::Crc => Corruption::CrcMismatch,
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
/// to the end of `data`, or to zeros that run to its end (what
/// [`SegmentConfig::preallocate_bytes`] leaves after a kill): then the bad
/// record at `from` was followed by data, and cutting it off would lose
/// acknowledged records.
fn whole_records_follow(data: &[u8], from: usize, max_record: u32) -> bool {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (from + 1..end).any(|start| {
        let mut off = start;
        while let Ok(n) = check_record(&data[off..], max_record) {
            off += n;
            if off >= end {
                return true;
            }
        }
        false
    })
}

/// Scans a segment: (whole records, length of the good prefix). In the last
/// segment a bad record with no whole record after it is a torn tail (what a
/// power loss or a killed write leaves); anything else is corruption.
fn scan(
    path: &Path,
    data: &[u8],
    max_record: u32,
    last: bool,
    visit: &mut dyn FnMut(u64, &[u8]),
) -> Result<(u64, u64), Error> {
    let (mut off, mut records) = (0usize, 0u64);
    while off < data.len() {
        match check_record(&data[off..], max_record) {
            Ok(n) => {
                visit(off as u64, &data[off + HEADER as usize..off + n]);
                records += 1;
                off += n;
            }
            Err(_) if last && !whole_records_follow(data, off, max_record) => {
                return Ok((records, off as u64));
            }
            Err(bad) => {
                let why = if bad == Bad::Short {
                    Corruption::TornInClosedSegment
                } else {
                    bad.reason()
                };
                return Err(corrupt(path, off as u64, why));
            }
        }
    }
    Ok((records, off as u64))
}

/// The payloads of read entries, without their positions.
fn payloads(entries: Vec<(Position, Bytes)>) -> Vec<Bytes> {
    entries.into_iter().map(|(_, b)| b).collect()
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
    fn open_visiting_sees_every_kept_record_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), 64);
            for i in 0..20u8 {
                log.append(&[b'r', i, i, i]).unwrap();
            }
        }
        // A torn tail: half a record after the last whole one.
        let last = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .max()
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        std::io::Write::write_all(&mut f, &[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut seen = Vec::new();
        let (log, rec) = SegmentLog::open_visiting(
            dir.path(),
            SegmentConfig::default()
                .max_segment_bytes(64)
                .max_record_bytes(1024),
            Arc::new(StdFs),
            |at, payload| seen.push((at, payload.to_vec())),
        )
        .unwrap();
        assert_eq!(rec.truncated_bytes, 6);
        assert_eq!(seen.len(), 20);
        let mut at = log.start();
        let entries = log.read_entries(&mut at, 100).unwrap();
        let read: Vec<(Position, Vec<u8>)> =
            entries.into_iter().map(|(p, b)| (p, b.to_vec())).collect();
        assert_eq!(seen, read, "the positions and payloads a reader finds");
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
                assert_eq!((offset, reason), (18, Corruption::CrcMismatch))
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
    fn preallocated_zeros_are_overwritten_cut_at_roll_and_drop_and_cut_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let config = SegmentConfig::default()
            .max_segment_bytes(200)
            .max_record_bytes(1024)
            .preallocate_bytes(4096)
            .fsync(Fsync::Every(1));
        let size = |id| fs::metadata(name(dir.path(), id)).unwrap().len();
        let (mut log, _) = SegmentLog::open(dir.path(), config).unwrap();
        log.append(&[7u8; 92]).unwrap();
        // Records, then zeros the next appends write over.
        assert_eq!(size(1), 100 + 4096);
        log.append(&[8u8; 92]).unwrap();
        assert_eq!(size(1), 100 + 4096);
        // Full: the closed segment ends at its last record.
        log.append(&[9u8; 92]).unwrap();
        assert_eq!((size(1), size(2)), (200, 100 + 4096));
        drop(log);
        assert_eq!(size(2), 100);
        let (mut log, rec) = SegmentLog::open(dir.path(), config).unwrap();
        assert_eq!((rec.records, rec.truncated_bytes), (3, 0));
        log.append(&[10u8; 92]).unwrap();
        assert_eq!(size(2), 200 + 4096);
        // A killed process leaves the zeros: cut, every record kept.
        std::mem::forget(log);
        let (log, rec) = SegmentLog::open(dir.path(), config).unwrap();
        assert_eq!((rec.records, rec.truncated_bytes), (4, 4096));
        let lens: Vec<u8> = all(&log).iter().map(|b| b[0]).collect();
        assert_eq!(lens, vec![7, 8, 9, 10]);
    }

    #[test]
    fn damage_before_preallocated_zeros_is_reported_not_cut_as_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let config = SegmentConfig::default()
            .max_record_bytes(1024)
            .preallocate_bytes(4096)
            .fsync(Fsync::Every(1));
        let (mut log, _) = SegmentLog::open(dir.path(), config).unwrap();
        for b in [1u8, 2, 3] {
            log.append(&[b; 92]).unwrap();
        }
        // Killed: the zeros stay after the records.
        std::mem::forget(log);
        let path = name(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        assert!(bytes.len() > 300 && bytes[300..].iter().all(|&b| b == 0));
        bytes[20] ^= 0xff; // in the first record's payload
        fs::write(&path, &bytes).unwrap();
        match SegmentLog::open(dir.path(), config) {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("damage followed by whole records must be reported: {other:?}"),
        }
        // Damage in the last record is a torn tail, zeros or not.
        bytes[20] ^= 0xff;
        bytes[220] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (log, rec) = SegmentLog::open(dir.path(), config).unwrap();
        assert_eq!(rec.records, 2);
        assert_eq!(all(&log).len(), 2);
    }

    #[test]
    fn empty_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 1 << 20);
        assert!(matches!(log.append(b""), Err(Error::EmptyRecord)));
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
        assert!(matches!(
            log.append(&[0; 1025]),
            Err(Error::RecordTooLarge {
                len: 1025,
                max: 1024
            })
        ));
        assert!(log.is_empty());
    }
}
