//! The beanstalk protocol, both directions: requests and replies as
//! values, a server codec (requests in, replies out) and a client codec
//! (requests out, replies in), every length bounded.
//!
//! The parsing rules are beanstalkd 1.12's, byte for byte where a client
//! can see the difference: a line is at most [`LINE_MAX`] bytes with its
//! `\r\n`; numbers are decimal with leading spaces allowed; a tube name is
//! 1 to [`TUBE_NAME_MAX`] of `A-Za-z0-9-+/;.$_()`, not starting with `-`.

use bytes::Bytes;

/// The longest request line beanstalkd accepts, `\r\n` included.
pub const LINE_MAX: usize = 224;
/// The longest tube name.
pub const TUBE_NAME_MAX: usize = 200;
/// beanstalkd's default `max-job-size` (`-z`).
pub const DEFAULT_MAX_JOB_SIZE: u32 = 65_535;

/// One beanstalk request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `put <pri> <delay> <ttr> <bytes>\r\n<body>\r\n`
    Put {
        /// Priority, 0 most urgent.
        priority: u32,
        /// Seconds before the job is ready.
        delay: u32,
        /// Seconds a reservation lasts (the server raises 0 to 1).
        ttr: u32,
        /// The body.
        body: Bytes,
    },
    /// `use <tube>`
    Use(String),
    /// `reserve`
    Reserve,
    /// `reserve-with-timeout <seconds>` (beanstalkd reads it with `strtol`
    /// into an `int`: a negative timeout waits for ever).
    ReserveWithTimeout(i32),
    /// `reserve-job <id>`
    ReserveJob(u64),
    /// `delete <id>`
    Delete(u64),
    /// `release <id> <pri> <delay>`
    Release {
        /// The job.
        id: u64,
        /// Its new priority.
        priority: u32,
        /// Seconds before it is ready again.
        delay: u32,
    },
    /// `bury <id> <pri>`
    Bury {
        /// The job.
        id: u64,
        /// Its new priority.
        priority: u32,
    },
    /// `touch <id>`
    Touch(u64),
    /// `watch <tube>`
    Watch(String),
    /// `ignore <tube>`
    Ignore(String),
    /// `peek <id>`
    Peek(u64),
    /// `peek-ready`
    PeekReady,
    /// `peek-delayed`
    PeekDelayed,
    /// `peek-buried`
    PeekBuried,
    /// `kick <bound>`
    Kick(u32),
    /// `kick-job <id>`
    KickJob(u64),
    /// `stats-job <id>`
    StatsJob(u64),
    /// `stats-tube <tube>`
    StatsTube(String),
    /// `stats`
    Stats,
    /// `list-tubes`
    ListTubes,
    /// `list-tube-used`
    ListTubeUsed,
    /// `list-tubes-watched`
    ListTubesWatched,
    /// `pause-tube <tube> <delay>`
    PauseTube {
        /// The tube.
        tube: String,
        /// Seconds (the server raises 0 to 1).
        delay: u32,
    },
    /// `quit`: the server closes the connection, no reply.
    Quit,
}

/// One beanstalk reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// `INSERTED <id>`
    Inserted(u64),
    /// `BURIED <id>`: a put buried for lack of memory.
    BuriedId(u64),
    /// `BURIED`: to `bury`, or to a `release` buried for lack of memory.
    Buried,
    /// `EXPECTED_CRLF`
    ExpectedCrlf,
    /// `JOB_TOO_BIG`
    JobTooBig,
    /// `DRAINING`
    Draining,
    /// `USING <tube>`
    Using(String),
    /// `DEADLINE_SOON`
    DeadlineSoon,
    /// `TIMED_OUT`
    TimedOut,
    /// `RESERVED <id> <bytes>\r\n<body>\r\n`
    Reserved {
        /// The job.
        id: u64,
        /// Its body.
        body: Bytes,
    },
    /// `DELETED`
    Deleted,
    /// `NOT_FOUND`
    NotFound,
    /// `RELEASED`
    Released,
    /// `TOUCHED`
    Touched,
    /// `WATCHING <count>`
    Watching(u64),
    /// `NOT_IGNORED`
    NotIgnored,
    /// `FOUND <id> <bytes>\r\n<body>\r\n`
    Found {
        /// The job.
        id: u64,
        /// Its body.
        body: Bytes,
    },
    /// `KICKED <count>`: to `kick`.
    Kicked(u64),
    /// `KICKED`: to `kick-job`.
    KickedJob,
    /// `OK <bytes>\r\n<yaml>\r\n`: to `stats*` and `list-*`.
    Ok(Bytes),
    /// `PAUSED`
    Paused,
    /// `OUT_OF_MEMORY`
    OutOfMemory,
    /// `INTERNAL_ERROR`
    InternalError,
    /// `BAD_FORMAT`
    BadFormat,
    /// `UNKNOWN_COMMAND`
    UnknownCommand,
}
