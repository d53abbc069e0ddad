//! Stream entry IDs (`ms-seq`) and Redis's rules for parsing them.

use std::fmt;

/// Redis's reply to an ID it cannot parse.
pub(crate) const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// A stream entry ID: milliseconds and a sequence number, ordered as Redis orders them.
///
/// ```
/// use sink_core::stream::StreamId;
/// let id: StreamId = "5-3".parse().unwrap();
/// assert_eq!(id, StreamId { ms: 5, seq: 3 });
/// assert_eq!(id.to_string(), "5-3");
/// assert!(StreamId::MIN < id && id < StreamId::MAX);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part (wall clock at creation for server-chosen IDs).
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`, smaller than every entry ID.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest ID (`+`).
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An ID from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The next ID, or `None` after [`StreamId::MAX`] (Redis's `streamIncrID`).
    pub fn next(self) -> Option<StreamId> {
        if self.seq == u64::MAX {
            if self.ms == u64::MAX {
                None
            } else {
                Some(StreamId::new(self.ms + 1, 0))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq + 1))
        }
    }

    /// The previous ID, or `None` before [`StreamId::MIN`] (Redis's `streamDecrID`).
    pub fn prev(self) -> Option<StreamId> {
        if self.seq == 0 {
            if self.ms == 0 {
                None
            } else {
                Some(StreamId::new(self.ms - 1, u64::MAX))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq - 1))
        }
    }

    /// True for `0-0`.
    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    /// The 16 big-endian bytes Redis keys its radix trees with.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// Parses an ID as Redis does for stream arguments: `-`, `+`, `ms` (the
    /// sequence is then `missing_seq`) or `ms-seq`. With `strict`, `-` and `+`
    /// are refused. `None` is Redis's "Invalid stream ID" error.
    pub fn parse_arg(arg: &[u8], missing_seq: u64, strict: bool) -> Option<StreamId> {
        if arg.len() > 127 {
            return None;
        }
        match arg {
            b"-" if !strict => return Some(StreamId::MIN),
            b"+" if !strict => return Some(StreamId::MAX),
            b"-" | b"+" => return None,
            _ => {}
        }
        // A NUL ends the C string Redis parses.
        let arg = &arg[..arg.iter().position(|&b| b == 0).unwrap_or(arg.len())];
        match arg.iter().position(|&b| b == b'-') {
            Some(dash) => Some(StreamId::new(
                string2ull(&arg[..dash])?,
                string2ull(&arg[dash + 1..])?,
            )),
            None => Some(StreamId::new(string2ull(arg)?, missing_seq)),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The error of parsing a [`StreamId`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream ID")]
pub struct ParseIdError;

impl std::str::FromStr for StreamId {
    type Err = ParseIdError;

    /// Parses `ms-seq` or `ms` (sequence 0), as Redis's non-strict parser.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamId::parse_arg(s.as_bytes(), 0, true).ok_or(ParseIdError)
    }
}

/// An interval bound: `(id` excludes it (Redis's `streamParseIntervalIDOrReply`).
/// Returns the ID and whether it is exclusive.
pub(crate) fn parse_interval(arg: &[u8], missing_seq: u64) -> Option<(StreamId, bool)> {
    if arg.len() > 1 && arg[0] == b'(' {
        StreamId::parse_arg(&arg[1..], missing_seq, true).map(|id| (id, true))
    } else {
        StreamId::parse_arg(arg, missing_seq, false).map(|id| (id, false))
    }
}

/// Redis's `string2ull`: `string2ll` when it fits (negatives refused), else
/// libc's `strtoull` (leading spaces, a sign, and a wrapped negative, as C does).
fn string2ull(s: &[u8]) -> Option<u64> {
    if let Some(v) = kids_core::resp::parse_i64(s) {
        return u64::try_from(v).ok();
    }
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let digits = &s[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_redis() {
        let p = |s: &str| StreamId::parse_arg(s.as_bytes(), 7, false);
        assert_eq!(p("1-2"), Some(StreamId::new(1, 2)));
        assert_eq!(p("1"), Some(StreamId::new(1, 7)));
        assert_eq!(p("-"), Some(StreamId::MIN));
        assert_eq!(p("+"), Some(StreamId::MAX));
        assert_eq!(p("01-+2"), Some(StreamId::new(1, 2)));
        assert_eq!(p("1- 5"), Some(StreamId::new(1, 5)));
        assert_eq!(p("1--1"), None);
        assert_eq!(p("1- -1"), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(
            p("18446744073709551615-18446744073709551615"),
            Some(StreamId::MAX)
        );
        assert_eq!(p("18446744073709551616"), None);
        for bad in ["", "a", "1-", "-1", "1-2-3", "1-*", "1.5"] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert_eq!(StreamId::parse_arg(b"-", 0, true), None);
        assert_eq!(StreamId::parse_arg(&[b'1'; 128], 0, false), None);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval(b"(5", 0), Some((StreamId::new(5, 0), true)));
        assert_eq!(parse_interval(b"(", 0), None);
        assert_eq!(parse_interval(b"(-", 0), None);
        assert_eq!(parse_interval(b"-", 0), Some((StreamId::MIN, false)));
        assert_eq!(
            parse_interval(b"5", u64::MAX),
            Some((StreamId::new(5, u64::MAX), false))
        );
    }

    #[test]
    fn incr_and_decr() {
        assert_eq!(StreamId::new(1, u64::MAX).next(), Some(StreamId::new(2, 0)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::new(2, 0).prev(), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(StreamId::MIN.prev(), None);
        assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
        assert_eq!(StreamId::new(1, 2).to_be_bytes()[7], 1);
    }
}
