//! The file store: one append-only file per topic and time bucket.
//!
//! ```text
//!  path "/data/logs/[topic]/[date]"  name "[time].log"  rotate 5min
//!  PUBLISH web "GET /"  at 12:03:10 UTC  ->  /data/logs/web/2013-11-30/12-00-00.log
//!  PUBLISH web "GET /a" at 12:05:00 UTC  ->  /data/logs/web/2013-11-30/12-05-00.log
//! ```
//! Buckets start at multiples of the rotation period counted from midnight
//! (UTC by default, or shifted by a configured offset, used the same way for
//! names and buckets). Each message is written as its bytes and a newline.
//! Time is an argument: appends take the wall-clock `now` (names and
//! buckets); [`FileStore::tick`] takes a [`Now`](crate::Now), whose
//! monotonic instant times the flush interval.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::{Error, Fsync};

/// Settings of a [`FileStore`].
///
/// ```
/// use kids_core::FileStoreConfig;
/// use kids_core::FileStore;
/// let config = FileStoreConfig::new("/data/logs/[topic]/[date]").name("[time].log").rotate_secs(300);
/// let store = FileStore::new(config);
/// // 2013-11-30 12:03:10 UTC lands in the bucket that started at 12:00.
/// let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_385_812_990);
/// assert_eq!(store.path_for(b"web", at).to_str(), Some("/data/logs/web/2013-11-30/12-00-00.log"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStoreConfig {
    path: String,
    name: String,
    rotate_secs: u64,
    flush_secs: u64,
    fsync: Fsync,
    utc_offset_secs: i64,
    max_open: usize,
}

/// Write buffer per open file.
const FILE_BUFFER: usize = 64 * 1024;

impl FileStoreConfig {
    /// A store writing under the `path` template; name `[time].log`, hourly
    /// rotation, flushed every second, no fsync, UTC.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            name: "[time].log".into(),
            rotate_secs: 3600,
            flush_secs: 1,
            fsync: Fsync::Never,
            utc_offset_secs: 0,
            max_open: 256,
        }
    }
    /// The file name template (`[topic]`, `[date]`, `[time]`, `[hour]`).
    pub fn name(mut self, template: impl Into<String>) -> Self {
        self.name = template.into();
        self
    }
    /// The rotation period in seconds (at least 1).
    pub fn rotate_secs(mut self, secs: u64) -> Self {
        self.rotate_secs = secs.max(1);
        self
    }
    /// How often buffered lines are written to the files, in seconds (0: after every message).
    pub fn flush_secs(mut self, secs: u64) -> Self {
        self.flush_secs = secs;
        self
    }
    /// When files are forced to stable storage.
    pub fn fsync(mut self, policy: Fsync) -> Self {
        self.fsync = policy;
        self
    }
    /// Offset from UTC for names and buckets, in seconds (east positive).
    pub fn utc_offset_secs(mut self, secs: i64) -> Self {
        self.utc_offset_secs = secs;
        self
    }
    /// Most files kept open at once; the least recently used is closed beyond it.
    pub fn max_open_files(mut self, n: usize) -> Self {
        self.max_open = n.max(1);
        self
    }
}

/// Calendar fields of a moment, for templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Civil {
    pub(crate) fn from_secs(secs: i64) -> Self {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400) as u32;
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }
}

/// Makes a topic safe as one path component: `/` and NUL become `_`, and a
/// name of only dots (`.`, `..`) or an empty one gets a leading `_`.
pub fn sanitize_topic(topic: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = topic
        .iter()
        .map(|&b| if b == b'/' || b == 0 { b'_' } else { b })
        .collect();
    if out.iter().all(|&b| b == b'.') {
        out.insert(0, b'_');
    }
    out
}

fn render(template: &str, topic: &[u8], at: &Civil) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + topic.len());
    let mut rest = template;
    while let Some(open) = rest.find('[') {
        out.extend_from_slice(&rest.as_bytes()[..open]);
        let after = &rest[open..];
        let (text, len): (Vec<u8>, usize) = if after.starts_with("[topic]") {
            (topic.to_vec(), 7)
        } else if after.starts_with("[date]") {
            (
                format!("{:04}-{:02}-{:02}", at.year, at.month, at.day).into_bytes(),
                6,
            )
        } else if after.starts_with("[time]") {
            (
                format!("{:02}-{:02}-{:02}", at.hour, at.minute, at.second).into_bytes(),
                6,
            )
        } else if after.starts_with("[hour]") {
            (format!("{:02}", at.hour).into_bytes(), 6)
        } else {
            (b"[".to_vec(), 1)
        };
        out.extend_from_slice(&text);
        rest = &after[len..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

struct OpenFile {
    bucket: i64,
    writer: BufWriter<File>,
    unsynced: u32,
    used: u64,
}

/// Counters of a [`FileStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreStats {
    /// Messages written.
    pub messages: u64,
    /// Files opened.
    pub opened: u64,
    /// Files closed because their bucket ended.
    pub rotated: u64,
    /// fsync calls.
    pub syncs: u64,
}

/// Appends messages to per-topic files named from templates and rotated at
/// bucket boundaries.
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use kids_core::{FileStore, FileStoreConfig};
/// # let dir = tempfile::tempdir().unwrap();
/// let root = dir.path().to_str().unwrap();
/// let mut store = FileStore::new(FileStoreConfig::new(format!("{root}/[topic]/[date]")).rotate_secs(300));
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_385_812_990); // 2013-11-30 12:03:10 UTC
/// store.append(b"web", b"GET /", now).unwrap();
/// store.flush().unwrap();
/// let written = std::fs::read(format!("{root}/web/2013-11-30/12-00-00.log")).unwrap();
/// assert_eq!(written, b"GET /\n");
/// ```
pub struct FileStore {
    config: FileStoreConfig,
    files: HashMap<Bytes, OpenFile>,
    last_flush: Option<Instant>,
    clock: u64,
    stats: FileStoreStats,
    committed: u64,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("config", &self.config)
            .field("open", &self.files.len())
            .finish()
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - i64::from(e.duration().subsec_nanos() > 0),
    }
}

/// One message to write, with what the write must do after it.
struct Line<'a> {
    message: &'a [u8],
    clock: u64,
    flush: bool,
    fsync: Fsync,
}

impl Line<'_> {
    /// Writes the message and a newline; true when it synced the file.
    fn write(&self, f: &mut OpenFile) -> Result<bool, Error> {
        f.used = self.clock;
        f.writer.write_all(self.message)?;
        f.writer.write_all(b"\n")?;
        if self.flush {
            f.writer.flush()?;
        }
        if let Fsync::Every(n) = self.fsync {
            f.unsynced += 1;
            if f.unsynced >= n.max(1) {
                f.writer.flush()?;
                f.writer.get_ref().sync_data()?;
                f.unsynced = 0;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl FileStore {
    /// A store with no file open yet.
    pub fn new(config: FileStoreConfig) -> Self {
        Self {
            config,
            files: HashMap::new(),
            last_flush: None,
            clock: 0,
            stats: FileStoreStats::default(),
            committed: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FileStoreStats {
        self.stats
    }

    /// The bucket (its start, in local seconds) that `now` falls in.
    fn bucket(&self, now: SystemTime) -> i64 {
        let local = unix_secs(now) + self.config.utc_offset_secs;
        let period = self.config.rotate_secs as i64;
        local - local.rem_euclid(period)
    }

    /// The file a message on `topic` at `now` goes to.
    pub fn path_for(&self, topic: &[u8], now: SystemTime) -> PathBuf {
        let at = Civil::from_secs(self.bucket(now));
        let topic = sanitize_topic(topic);
        let dir = render(&self.config.path, &topic, &at);
        let name = render(&self.config.name, &topic, &at);
        Path::new(std::ffi::OsStr::from_bytes(&dir)).join(std::ffi::OsStr::from_bytes(&name))
    }

    /// Appends `message` and a newline to the topic's current file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be created or written; the message
    /// is then not stored.
    pub fn append(&mut self, topic: &[u8], message: &[u8], now: SystemTime) -> Result<(), Error> {
        let bucket = self.bucket(now);
        self.clock += 1;
        let line = Line {
            message,
            clock: self.clock,
            flush: self.config.flush_secs == 0,
            fsync: self.config.fsync,
        };
        // One lookup while the topic's file is current; opening is the cold path.
        let synced = match self.files.get_mut(topic) {
            Some(f) if f.bucket == bucket => line.write(f)?,
            _ => line.write(self.open(topic, bucket, now)?)?,
        };
        self.stats.messages += 1;
        self.stats.syncs += u64::from(synced);
        Ok(())
    }

    /// Opens the topic's file for `bucket`, closing its previous one (its
    /// bucket ended) and the least recently used file beyond the bound.
    fn open(&mut self, topic: &[u8], bucket: i64, now: SystemTime) -> Result<&mut OpenFile, Error> {
        if let Some(old) = self.files.remove(topic) {
            self.close(old, true)?;
        }
        if self.files.len() >= self.config.max_open {
            self.close_least_used()?;
        }
        let path = self.path_for(topic, now);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.stats.opened += 1;
        Ok(self
            .files
            .entry(Bytes::copy_from_slice(topic))
            .or_insert(OpenFile {
                bucket,
                writer: BufWriter::with_capacity(FILE_BUFFER, file),
                unsynced: 0,
                used: 0,
            }))
    }

    fn close(&mut self, mut f: OpenFile, rotated: bool) -> Result<(), Error> {
        f.writer.flush()?;
        let sync = match self.config.fsync {
            Fsync::Never => false,
            // The file is done with (rotated, or closed for room): sync it.
            Fsync::OnRotate => true,
            Fsync::Every(_) => f.unsynced > 0,
        };
        if sync {
            f.writer.get_ref().sync_data()?;
            self.stats.syncs += 1;
        }
        if rotated {
            self.stats.rotated += 1;
        }
        Ok(())
    }

    fn close_least_used(&mut self) -> Result<(), Error> {
        let Some(topic) = self
            .files
            .iter()
            .min_by_key(|(_, f)| f.used)
            .map(|(t, _)| t.clone())
        else {
            return Ok(());
        };
        if let Some(f) = self.files.remove(&topic) {
            self.close(f, false)?;
        }
        Ok(())
    }

    /// Periodic work at `now`: closes files whose bucket (by the wall
    /// clock) ended, and writes buffered lines out when the flush interval
    /// (on the monotonic clock) has passed.
    ///
    /// # Errors
    /// [`Error::Io`] when a flush or close fails.
    pub fn tick(&mut self, now: crate::Now) -> Result<(), Error> {
        let bucket = self.bucket(now.wall);
        let ended: Vec<Bytes> = self
            .files
            .iter()
            .filter(|(_, f)| f.bucket != bucket)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in ended {
            if let Some(f) = self.files.remove(&topic) {
                self.close(f, true)?;
            }
        }
        let due = self.last_flush.is_none_or(|last| {
            now.instant.saturating_duration_since(last)
                >= Duration::from_secs(self.config.flush_secs)
        });
        if due {
            self.flush()?;
            self.last_flush = Some(now.instant);
        }
        Ok(())
    }

    /// Writes every buffered line to its file (no fsync).
    ///
    /// # Errors
    /// [`Error::Io`] when a write fails.
    pub fn flush(&mut self) -> Result<(), Error> {
        for f in self.files.values_mut() {
            f.writer.flush()?;
        }
        Ok(())
    }

    /// Flushes, syncs (unless the policy is `Never`) and closes every file.
    ///
    /// # Errors
    /// [`Error::Io`] when a flush or sync fails.
    pub fn close_all(&mut self) -> Result<(), Error> {
        for (_, f) in std::mem::take(&mut self.files) {
            self.close(f, false)?;
        }
        Ok(())
    }
}

impl crate::Store for FileStore {
    fn store(
        &mut self,
        topic: &Bytes,
        message: &Bytes,
        now: crate::Now,
    ) -> Result<(), crate::StoreError> {
        self.append(topic, message, now.wall)?;
        Ok(())
    }

    /// Writes every buffered line to the kernel: a killed process loses
    /// nothing committed (the `flush` interval only bounds how long lines
    /// appended without a commit wait).
    fn commit(&mut self, _: crate::Now) -> Result<(), crate::StoreError> {
        self.flush()?;
        self.committed = self.stats.messages;
        Ok(())
    }

    fn taken(&self) -> u64 {
        self.stats.messages
    }

    fn acked(&mut self) -> u64 {
        self.committed
    }

    fn poll(&mut self, now: crate::Now) -> Result<(), crate::StoreError> {
        self.tick(now)?;
        Ok(())
    }

    fn info(&self, name: &str, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.stats;
        let _ = write!(
            out,
            "store_{name}:kind=file,path={},messages={},open_files={},opened={},rotated={},syncs={}\r\n",
            self.config.path,
            s.messages,
            self.files.len(),
            s.opened,
            s.rotated,
            s.syncs
        );
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if let Err(e) = self.close_all() {
            tracing::error!(error = %e, "file store: flushing on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn civil_dates() {
        assert_eq!(
            Civil::from_secs(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        assert_eq!(
            Civil::from_secs(1_385_812_990),
            Civil {
                year: 2013,
                month: 11,
                day: 30,
                hour: 12,
                minute: 3,
                second: 10
            }
        );
        assert_eq!(
            Civil::from_secs(951_782_400),
            Civil {
                year: 2000,
                month: 2,
                day: 29,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        assert_eq!(
            Civil::from_secs(-1),
            Civil {
                year: 1969,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        assert_eq!(Civil::from_secs(4_107_542_399).year, 2100);
    }

    #[test]
    fn sanitising() {
        assert_eq!(sanitize_topic(b"../etc/passwd"), b".._etc_passwd");
        assert_eq!(sanitize_topic(b".."), b"_..");
        assert_eq!(sanitize_topic(b"."), b"_.");
        assert_eq!(sanitize_topic(b""), b"_");
        assert_eq!(sanitize_topic(b"a\0b"), b"a_b");
        assert_eq!(sanitize_topic(b"web.access"), b"web.access");
    }

    #[test]
    fn templates_and_buckets() {
        let s = FileStore::new(
            FileStoreConfig::new("/d/[topic]/[date]")
                .name("[hour]/[time]-[topic].log")
                .rotate_secs(300),
        );
        // 2013-11-30 12:03:10 UTC falls in the 12:00 bucket; 12:05:00 starts the next.
        assert_eq!(
            s.path_for(b"web", at(1_385_812_990)),
            Path::new("/d/web/2013-11-30/12/12-00-00-web.log")
        );
        assert_eq!(
            s.path_for(b"web", at(1_385_813_100)),
            Path::new("/d/web/2013-11-30/12/12-05-00-web.log")
        );
        assert_eq!(
            s.path_for(b"../x", at(1_385_812_990)),
            Path::new("/d/.._x/2013-11-30/12/12-00-00-.._x.log")
        );
        let daily = FileStore::new(
            FileStoreConfig::new("/d")
                .name("[date].log")
                .rotate_secs(86_400)
                .utc_offset_secs(8 * 3600),
        );
        // 2013-11-30 17:00 UTC is 2013-12-01 01:00 at +08:00: the day is the local one.
        assert_eq!(
            daily.path_for(b"t", at(1_385_830_800)),
            Path::new("/d/2013-12-01.log")
        );
        assert_eq!(
            daily.path_for(b"t", at(1_385_830_800 - 2 * 3600)),
            Path::new("/d/2013-11-30.log")
        );
    }
}
