//! The crate's one error type, and the protocol errors a peer can cause.

use std::fmt;

/// Everything that can go wrong in kids-core.
///
/// The variants keep three kinds of failure apart: the peer sent garbage
/// ([`Error::Protocol`]), the caller gave settings that cannot work
/// ([`Error::EmptyRecord`], [`Error::RecordTooLarge`],
/// [`Error::SpoolDirMissing`], [`Error::SpoolDirUnused`],
/// [`Error::StoreTreeRemoved`], [`Error::StoreConfig`], [`Error::ConfigFile`])
/// or asked for what is gone ([`Error::Released`]), and the operating
/// system failed ([`Error::Io`]) or left files that cannot be trusted
/// ([`Error::Corrupt`], [`Error::Poisoned`]).
///
/// Each message is printed once along [`std::error::Error::source`]: a
/// variant that wraps an error either is that error ([`Error::Io`],
/// [`Error::ConfigFile`]: same text, same source) or holds a plain value
/// its message includes and has no source ([`Error::Protocol`],
/// [`Error::StoreConfig`], [`Error::Corrupt`]'s [`Corruption`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that are not valid RESP, or that exceed a bound.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// A record to append to a segment log is empty (a zero length is what
    /// a zero-filled tail reads as, so it is never written).
    #[error("an empty record cannot be appended")]
    EmptyRecord,
    /// A record to append to a segment log is over its record bound.
    #[error("record of {len} bytes is over the bound of {max}")]
    RecordTooLarge {
        /// The record's length in bytes.
        len: u64,
        /// The log's record bound ([`SegmentConfig::max_record_bytes`](crate::SegmentConfig::max_record_bytes)).
        max: u64,
    },
    /// The queue policy `spool` was given without a spool directory.
    #[error("queue policy `spool` needs a spool directory")]
    SpoolDirMissing,
    /// A spool directory was given with a queue policy other than `spool`.
    #[error("only the queue policy `spool` takes a spool directory")]
    SpoolDirUnused {
        /// The policy given.
        when_full: crate::QueueFull,
    },
    /// A reloaded config has no `store` block while a store tree runs: the
    /// null store in its place would discard every message.
    #[error("the reloaded config has no `store` block; removing the store tree needs a restart")]
    StoreTreeRemoved,
    /// A store block (or a store inside it) cannot work, as
    /// [`StoreConfig::problem`](crate::StoreConfig::problem) finds.
    #[error("invalid store configuration: {0}")]
    StoreConfig(crate::StoreProblem),
    /// A configuration file is invalid.
    #[error(transparent)]
    ConfigFile(#[from] crate::config::ConfigError),
    /// A stored record failed its length bound or checksum.
    #[error("corrupt record in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The file holding the record.
        path: std::path::PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What was wrong.
        reason: Corruption,
    },
    /// A [`Tail`](crate::Tail) could not be opened: its glob is longer
    /// than the router's pattern bound, or the router holds as many tails
    /// as [`RouterConfig::max_tails`](crate::RouterConfig::max_tails) allows.
    #[error("cannot open a tail: {0}")]
    Tail(String),
    /// Reading or writing a socket or a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A segment log refuses writes: an earlier fsync failed, or a partial
    /// write could not be undone, so what it wrote is not known to be on
    /// disk. Reopening the log recovers what its files hold.
    #[error("segment log in {} refuses writes after a failure ({cause}); reopen it", dir.display())]
    Poisoned {
        /// The log's directory.
        dir: std::path::PathBuf,
        /// What the failure that poisoned it was.
        cause: std::io::ErrorKind,
    },
    /// A segment log read position lies in a segment already released.
    #[error("log position {at} was released; the log starts at {start}")]
    Released {
        /// The position asked for.
        at: crate::Position,
        /// The oldest position the log holds.
        start: crate::Position,
    },
}

/// A protocol error is a plain value that [`Error::Protocol`]'s message
/// includes (not its source: the text would print twice).
impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

/// What is wrong with a record a segment log read ([`Error::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// Fewer bytes than the record header, or than the length it gives.
    #[error("record cut short")]
    CutShort,
    /// A record cut short in a segment that is no longer written: not a
    /// torn tail, whatever follows it.
    #[error("torn record in a closed segment")]
    TornInClosedSegment,
    /// A record's length runs past the bytes its segment holds.
    #[error("record length out of bounds")]
    PastSegmentEnd,
    /// A length over the record bound.
    #[error("record length over the bound")]
    LengthOverBound,
    /// A zero length: never written, as a zero-filled tail reads.
    #[error("zero record length")]
    ZeroLength,
    /// The payload does not match its crc32.
    #[error("crc mismatch")]
    CrcMismatch,
}

/// Why a request stream was rejected.
///
/// Each variant maps to the exact `-ERR Protocol error: ...` line that Redis 7
/// sends before it closes the connection ([`ProtocolError::reply`]), except
/// [`ProtocolError::QueryBufferLimit`], on which Redis (and kids) close the
/// connection without a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A `*<count>` line grew past the inline bound before its `\r`.
    TooBigMbulkCountString,
    /// The multibulk count is not an integer or exceeds its bound.
    InvalidMultibulkLength,
    /// A `$<len>` line grew past the inline bound before its `\r`.
    TooBigBulkCountString,
    /// An element of a multibulk request did not start with `$`.
    ExpectedDollar(u8),
    /// The bulk length is not an integer, is negative or exceeds its bound.
    InvalidBulkLength,
    /// An inline command grew past the inline bound before its newline.
    TooBigInlineRequest,
    /// An inline command has an unterminated quote.
    UnbalancedQuotes,
    /// The bytes buffered for one connection exceed the query buffer bound.
    QueryBufferLimit,
    /// A reply frame (client side) is malformed or over a bound; the text says how.
    InvalidReply(&'static str),
}

impl ProtocolError {
    /// The exact reply line (with `\r\n`) a server sends before closing, or
    /// `None` when the connection is closed without a reply.
    pub fn reply(&self) -> Option<Vec<u8>> {
        let text: &[u8] = match self {
            Self::TooBigMbulkCountString => b"too big mbulk count string",
            Self::InvalidMultibulkLength => b"invalid multibulk length",
            Self::TooBigBulkCountString => b"too big bulk count string",
            Self::ExpectedDollar(got) => {
                // Redis replaces \r and \n in error text with spaces.
                let got = if matches!(got, b'\r' | b'\n') {
                    b' '
                } else {
                    *got
                };
                let mut line = b"-ERR Protocol error: expected '$', got '".to_vec();
                line.push(got);
                line.extend_from_slice(b"'\r\n");
                return Some(line);
            }
            Self::InvalidBulkLength => b"invalid bulk length",
            Self::TooBigInlineRequest => b"too big inline request",
            Self::UnbalancedQuotes => b"unbalanced quotes in request",
            Self::QueryBufferLimit | Self::InvalidReply(_) => return None,
        };
        let mut line = b"-ERR Protocol error: ".to_vec();
        line.extend_from_slice(text);
        line.extend_from_slice(b"\r\n");
        Some(line)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueryBufferLimit => f.write_str("query buffer limit reached"),
            Self::InvalidReply(why) => write!(f, "invalid reply: {why}"),
            other => {
                let line = other.reply().unwrap_or_default();
                let text = String::from_utf8_lossy(&line);
                f.write_str(text.trim_start_matches("-ERR Protocol error: ").trim_end())
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_redis_lines() {
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.reply().unwrap(),
            b"-ERR Protocol error: invalid multibulk length\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar(b'+').reply().unwrap(),
            b"-ERR Protocol error: expected '$', got '+'\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar(b'\r').reply().unwrap(),
            b"-ERR Protocol error: expected '$', got ' '\r\n"
        );
        assert_eq!(ProtocolError::QueryBufferLimit.reply(), None);
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "unbalanced quotes in request"
        );
    }

    /// Every message along `e`'s source chain, outermost first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(e);
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }

    /// No message of the chain contains a later one: each is printed once
    /// by whoever walks it (`anyhow`'s `{:#}`, tracing's `error.sources`).
    fn assert_printed_once(chain: &[String]) {
        for (i, outer) in chain.iter().enumerate() {
            for inner in &chain[i + 1..] {
                assert!(
                    !outer.contains(inner.as_str()),
                    "{inner:?} is printed twice in {chain:?}"
                );
            }
        }
    }

    #[test]
    fn no_message_is_printed_twice_along_the_source_chain() {
        use crate::{Cause, StoreError, StoreProblem};
        let enospc = || std::io::Error::from_raw_os_error(28);
        let enospc_text = enospc().to_string();

        let io = chain(&Error::Io(enospc()));
        assert_eq!(io, std::slice::from_ref(&enospc_text));
        let custom = chain(&Error::from(std::io::Error::other("disk on fire")));
        assert_eq!(custom, ["disk on fire"]);

        // The io error is kept (matchable), and printed once, under a store error.
        let down = StoreError::from(Error::Io(enospc()));
        assert!(matches!(
            down.cause(),
            Some(Cause::Error(Error::Io(e))) if e.raw_os_error() == Some(28)
        ));
        let down = chain(&down);
        assert_printed_once(&down);
        assert_eq!(down, ["store unavailable".to_string(), enospc_text]);

        let poisoned = chain(&StoreError::Unstored(Cause::Error(Error::Poisoned {
            dir: "/spool".into(),
            cause: std::io::ErrorKind::StorageFull,
        })));
        assert_printed_once(&poisoned);
        assert_eq!(poisoned.len(), 2);
        assert_eq!(poisoned[0], "messages not stored");
        assert!(poisoned[1].starts_with("segment log in /spool refuses writes"));

        assert_eq!(
            chain(&StoreError::down("peer gone")),
            ["store unavailable", "peer gone"]
        );
        assert_eq!(
            chain(&Error::from(ProtocolError::InvalidBulkLength)),
            ["protocol error: invalid bulk length"]
        );
        assert_eq!(
            chain(&Error::StoreConfig(StoreProblem::FileWithoutPath)),
            ["invalid store configuration: `store file` needs a `path`"]
        );
    }
}
