//! miller-core's error type, and the small comparable errors of the beanstalk protocol.

/// Everything that can go wrong in miller-core. The three kinds stay apart:
/// the peer sent garbage ([`Error::Protocol`]), the queue refused a request
/// as beanstalk does ([`Error::Queue`]: `NOT_FOUND`, `DRAINING`, …), and IO
/// or the log on disk failed ([`Error::Io`], [`Error::Log`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer's bytes are not the beanstalk protocol.
    #[error("beanstalk protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The queue answered with one of beanstalk's error replies.
    #[error("queue refused: {0}")]
    Queue(#[from] QueueError),
    /// A socket or file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The segment log failed: IO, corruption (a CRC that does not match
    /// where no torn tail can be), a poisoned writer.
    #[error(transparent)]
    Log(#[from] kids_core::Error),
    /// The connection closed before the reply came.
    #[error("connection closed")]
    Closed,
    /// A whole record of the journal (its CRC matched) does not decode:
    /// written by something else, or by a bug; never skipped.
    #[error("journal record at {at}: {reason}")]
    Record {
        /// Where it is.
        at: kids_core::Position,
        /// What is wrong with it.
        reason: crate::journal::RecordError,
    },
    /// A job body is not a job envelope, or an envelope cannot be written.
    #[error(transparent)]
    Envelope(#[from] crate::dispatch::EnvelopeError),
    /// An event source (a sink session, a kids subscription) refused or
    /// answered what it should not.
    #[error("event source: {0}")]
    Source(String),
    /// A configuration file is wrong (the error names file, line and column).
    #[error(transparent)]
    Config(#[from] kids_core::ConfigError),
}

/// What is wrong with bytes that claim to be the beanstalk protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line longer than the bound, with no `\r\n` in it.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The bound.
        max: usize,
    },
    /// A body longer than the bound.
    #[error("body of {len} bytes over the bound of {max}")]
    BodyTooLong {
        /// The announced length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A body not followed by `\r\n`.
    #[error("body not followed by CRLF")]
    ExpectedCrlf,
    /// A reply line that is not one of beanstalk's.
    #[error("unexpected reply {0:?}")]
    UnexpectedReply(String),
    /// A YAML body (`stats`, `list-tubes`) that does not parse.
    #[error("malformed YAML body: {0}")]
    Yaml(String),
}

/// Beanstalk's error replies, as a queue gives them to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// `NOT_FOUND`: no such job, or not reserved by this client, or no such tube.
    #[error("NOT_FOUND")]
    NotFound,
    /// `BURIED id` to a put, `BURIED` to a release: the server ran out of
    /// memory growing a priority queue and buried the job.
    #[error("BURIED")]
    Buried(Option<u64>),
    /// `DEADLINE_SOON`: a job this client reserved is within a second of its TTR.
    #[error("DEADLINE_SOON")]
    DeadlineSoon,
    /// `DRAINING`: the server takes no new jobs.
    #[error("DRAINING")]
    Draining,
    /// `NOT_IGNORED`: the last watched tube cannot be ignored.
    #[error("NOT_IGNORED")]
    NotIgnored,
    /// `OUT_OF_MEMORY`
    #[error("OUT_OF_MEMORY")]
    OutOfMemory,
    /// `INTERNAL_ERROR`
    #[error("INTERNAL_ERROR")]
    InternalError,
    /// `BAD_FORMAT`: the request was malformed (a bug in the client).
    #[error("BAD_FORMAT")]
    BadFormat,
    /// `UNKNOWN_COMMAND`
    #[error("UNKNOWN_COMMAND")]
    UnknownCommand,
    /// `EXPECTED_CRLF`: the body did not end with `\r\n`.
    #[error("EXPECTED_CRLF")]
    ExpectedCrlf,
    /// `JOB_TOO_BIG`: the body is over the server's `max-job-size`.
    #[error("JOB_TOO_BIG")]
    JobTooBig,
}
