//! The engine's knobs ([`EngineConfig`]) and the host facts its `stats` reports.

use std::time::Duration;

use crate::proto::DEFAULT_MAX_JOB_SIZE;

/// How an [`Engine`](super::Engine) is bounded and what its `stats` says
/// about the host. Every field has a safe default; set them with the
/// builder methods.
///
/// ```
/// use miller_core::engine::EngineConfig;
/// let config = EngineConfig::default().max_job_size(1 << 20).max_memory(64 << 20);
/// assert_eq!(config.max_job_size, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The longest body a put may carry (beanstalkd's `-z`); longer ones are
    /// answered `JOB_TOO_BIG`. Default [`DEFAULT_MAX_JOB_SIZE`].
    pub max_job_size: u32,
    /// At most this many jobs in memory; a put past it is answered
    /// `OUT_OF_MEMORY`. Default `u64::MAX` (bounded by `max_memory`).
    pub max_jobs: u64,
    /// At most this many bytes of jobs in memory, each job counted as its
    /// body plus [`JOB_OVERHEAD`] bytes; a put past it is answered
    /// `OUT_OF_MEMORY`. Default 1 GiB.
    pub max_memory: u64,
    /// Whether the engine records [`Change`](super::Change)s for a durable
    /// layer. An engine nobody drains (in memory only) turns this off, or
    /// the list grows without bound. Default `true`.
    pub record_changes: bool,
    /// What `stats` says about the host and the process.
    pub host: HostInfo,
}

/// What a job costs in memory beside its body, for
/// [`EngineConfig::max_memory`].
pub const JOB_OVERHEAD: u64 = 128;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_job_size: DEFAULT_MAX_JOB_SIZE,
            max_jobs: u64::MAX,
            max_memory: 1 << 30,
            record_changes: true,
            host: HostInfo::default(),
        }
    }
}

impl EngineConfig {
    /// Sets [`EngineConfig::max_job_size`].
    pub fn max_job_size(mut self, bytes: u32) -> Self {
        self.max_job_size = bytes;
        self
    }

    /// Sets [`EngineConfig::max_jobs`].
    pub fn max_jobs(mut self, jobs: u64) -> Self {
        self.max_jobs = jobs;
        self
    }

    /// Sets [`EngineConfig::max_memory`].
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Sets [`EngineConfig::record_changes`].
    pub fn record_changes(mut self, on: bool) -> Self {
        self.record_changes = on;
        self
    }

    /// Sets [`EngineConfig::host`].
    pub fn host(mut self, host: HostInfo) -> Self {
        self.host = host;
        self
    }
}

/// The host facts of beanstalkd's `stats` that a sans-IO engine cannot
/// read itself (`pid`, `version`, `id`, `hostname`, `os`, `platform`).
/// Whoever serves the engine may fill them in (the `beanstalk` example
/// reads the host's name and kernel version, as beanstalkd prints them);
/// the defaults are this process's id,
/// `version: "1.12"` (the beanstalkd release whose protocol the engine
/// speaks, so clients that look at the version see a server they know), a
/// random instance id, `localhost`, and Rust's names of the OS and CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostInfo {
    /// `pid`
    pub pid: u32,
    /// `version` (printed in double quotes, as beanstalkd does).
    pub version: String,
    /// `id`: 16 hex digits naming this instance.
    pub id: String,
    /// `hostname`
    pub hostname: String,
    /// `os` (beanstalkd prints uname's kernel version here).
    pub os: String,
    /// `platform` (uname's machine, e.g. `x86_64`).
    pub platform: String,
}

impl Default for HostInfo {
    fn default() -> Self {
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            pid: std::process::id(),
            version: "1.12".to_owned(),
            id: format!("{random:016x}"),
            hostname: "localhost".to_owned(),
            os: std::env::consts::OS.to_owned(),
            platform: std::env::consts::ARCH.to_owned(),
        }
    }
}

impl HostInfo {
    /// Sets [`HostInfo::pid`].
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = pid;
        self
    }

    /// Sets [`HostInfo::version`].
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets [`HostInfo::id`].
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets [`HostInfo::hostname`].
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Sets [`HostInfo::os`].
    pub fn os(mut self, os: impl Into<String>) -> Self {
        self.os = os.into();
        self
    }

    /// Sets [`HostInfo::platform`].
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = platform.into();
        self
    }
}

/// The figures of `stats` that belong to the process and its log rather
/// than to the engine (`rusage-*`, `binlog-*`), set by an embedder with
/// [`Engine::set_process_stats`](super::Engine::set_process_stats). The
/// served engine does not set them yet: its `stats` reports them as zero
/// (its log's figures are in `Store::log_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessStats {
    /// `rusage-utime`
    pub user_time: Duration,
    /// `rusage-stime`
    pub system_time: Duration,
    /// `binlog-oldest-index`
    pub binlog_oldest_index: i64,
    /// `binlog-current-index`
    pub binlog_current_index: i64,
    /// `binlog-records-migrated`
    pub binlog_records_migrated: i64,
    /// `binlog-records-written`
    pub binlog_records_written: i64,
    /// `binlog-max-size`
    pub binlog_max_size: i64,
}

impl Default for ProcessStats {
    /// Zeros, and beanstalkd's default `binlog-max-size` (10 MiB).
    fn default() -> Self {
        Self {
            user_time: Duration::ZERO,
            system_time: Duration::ZERO,
            binlog_oldest_index: 0,
            binlog_current_index: 0,
            binlog_records_migrated: 0,
            binlog_records_written: 0,
            binlog_max_size: 10_485_760,
        }
    }
}

impl ProcessStats {
    /// Sets the CPU times.
    pub fn rusage(mut self, user: Duration, system: Duration) -> Self {
        self.user_time = user;
        self.system_time = system;
        self
    }

    /// Sets the `binlog-*` figures: oldest and current segment, records
    /// moved forward by compaction, records written, segment size.
    pub fn binlog(
        mut self,
        oldest: i64,
        current: i64,
        migrated: i64,
        written: i64,
        max_size: i64,
    ) -> Self {
        self.binlog_oldest_index = oldest;
        self.binlog_current_index = current;
        self.binlog_records_migrated = migrated;
        self.binlog_records_written = written;
        self.binlog_max_size = max_size;
        self
    }
}
