//! Errors: why a line is bad ([`LineError`]), and the crate's [`Error`].

/// Why a statsd line was not counted. Each reason is counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line is longer than [`Limits::max_line`](crate::Limits).
    #[error("line too long")]
    TooLong,
    /// The name is longer than [`Limits::max_name`](crate::Limits).
    #[error("name too long")]
    NameTooLong,
    /// The name is empty once sanitised.
    #[error("empty name")]
    EmptyName,
    /// No `:` separates the name from a value.
    #[error("no value")]
    NoValue,
    /// No `|type` follows the value.
    #[error("no type")]
    NoType,
    /// The type is not one of `c`, `g`, `ms`, `h`, `d`, `s`, `kv`.
    #[error("unknown type")]
    UnknownType,
    /// A value is not a finite number (or, for a set, is empty).
    #[error("bad value")]
    BadValue,
    /// More values than [`Limits::max_values`](crate::Limits).
    #[error("too many values")]
    TooManyValues,
    /// The sample rate is not a number in (0, 1].
    #[error("bad sample rate")]
    BadSampleRate,
    /// More tags than [`Limits::max_tags`](crate::Limits).
    #[error("too many tags")]
    TooManyTags,
    /// The `T` timestamp is not a whole number of seconds.
    #[error("bad timestamp")]
    BadTimestamp,
    /// A field after the type is unknown, repeated, or holds a separator.
    #[error("bad field")]
    BadField,
}

impl LineError {
    /// Every reason, in a fixed order (for per-reason counters).
    pub const ALL: [LineError; 12] = [
        LineError::TooLong,
        LineError::NameTooLong,
        LineError::EmptyName,
        LineError::NoValue,
        LineError::NoType,
        LineError::UnknownType,
        LineError::BadValue,
        LineError::TooManyValues,
        LineError::BadSampleRate,
        LineError::TooManyTags,
        LineError::BadTimestamp,
        LineError::BadField,
    ];

    /// The reason's position in [`LineError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short name fit for a metric path (`bad_value`).
    pub const fn as_str(self) -> &'static str {
        match self {
            LineError::TooLong => "too_long",
            LineError::NameTooLong => "name_too_long",
            LineError::EmptyName => "empty_name",
            LineError::NoValue => "no_value",
            LineError::NoType => "no_type",
            LineError::UnknownType => "unknown_type",
            LineError::BadValue => "bad_value",
            LineError::TooManyValues => "too_many_values",
            LineError::BadSampleRate => "bad_sample_rate",
            LineError::TooManyTags => "too_many_tags",
            LineError::BadTimestamp => "bad_timestamp",
            LineError::BadField => "bad_field",
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer sent a line this crate does not accept.
    #[error("statsd line: {0}")]
    Line(#[from] LineError),
    /// Reading or writing a socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A configuration value is out of range.
    #[error("config: {0}")]
    Config(String),
}
