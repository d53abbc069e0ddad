//! sink-core's error type, and the small comparable errors of its records.

/// Everything that can go wrong in sink-core: the peer sent garbage (a
/// command's reply says so, not this), the log on disk is damaged
/// ([`Error::Record`], [`Error::Log`] with a corruption), or IO failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment log failed: IO, corruption, a poisoned writer.
    #[error(transparent)]
    Log(#[from] kids_core::Error),
    /// A whole record (its CRC matched) does not decode: written by
    /// something else, or by a bug; never skipped.
    #[error("record at {at} does not decode: {reason}")]
    Record {
        /// Where the record starts.
        at: kids_core::Position,
        /// Why it does not decode.
        reason: RecordError,
    },
}

/// Why a record's bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Fewer bytes than a field needs.
    #[error("record cut short")]
    CutShort,
    /// An unknown record kind byte.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A length over its bound.
    #[error("{field} length {len} over the bound {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Bytes left over after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// A stream operation that does not decode.
    #[error("stream operation: {0}")]
    Stream(String),
}
