//! RESP2/RESP3: request decoding, reply encoding and a client-side frame codec.
//!
//! ```text
//!  bytes from a client --> RequestDecoder --> Request (argv)      (server side)
//!  replies  <------------- ReplyWriter <----- Session / Router
//!  bytes from a server --> FrameCodec -----> Frame               (client side)
//! ```
//! Every length the decoders accept has a bound ([`Limits`]); going over it is
//! a [`ProtocolError`](crate::ProtocolError), never a panic or an unbounded
//! allocation.

mod command;
mod conn;
mod frame;
mod reply;
mod request;

pub use command::{Arg, CONNECTION_COMMANDS, Command, ConnCommand, lookup, lookup_sub, write_help};
pub(crate) use command::{PUBSUB, SUB, arg, cmd};
pub(crate) use conn::prefix;
pub use conn::{REDIS_COMPAT_VERSION, RespServer, RespState, dispatch, flush, protocol_error};
pub use frame::{Frame, FrameCodec};
pub use reply::ReplyWriter;
pub use request::{ARG_COST, Request, RequestDecoder, split_inline};

/// The protocol version a connection speaks, switched by `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    /// RESP2, the default of every new connection.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`: maps, sets, nulls and push frames.
    Resp3,
}

impl Proto {
    /// The number `HELLO` reports for this version.
    pub fn number(self) -> i64 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// Bounds on every length a decoder accepts.
///
/// The defaults follow Redis: bulk 512 MiB (`proto-max-bulk-len`), inline
/// line 64 KiB, query buffer 1 GiB (`client-query-buffer-limit`). The
/// multibulk count is bounded at 1,048,576 arguments, the bound older Redis
/// releases used; Redis 7 accepts up to `INT_MAX`.
///
/// ```
/// use kids_core::Limits;
/// let limits = Limits::default().max_bulk(1 << 20).max_inline(4096);
/// assert_eq!(limits.bulk(), 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    bulk: usize,
    multibulk: usize,
    inline: usize,
    query_buffer: usize,
    depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bulk: 512 * 1024 * 1024,
            multibulk: 1024 * 1024,
            inline: 64 * 1024,
            query_buffer: 1024 * 1024 * 1024,
            depth: 128,
        }
    }
}

impl Limits {
    /// Largest bulk string, in bytes.
    pub fn max_bulk(mut self, bytes: usize) -> Self {
        self.bulk = bytes;
        self
    }
    /// Largest number of elements in a multibulk request or an aggregate reply.
    pub fn max_multibulk(mut self, count: usize) -> Self {
        self.multibulk = count;
        self
    }
    /// Longest inline command or `*`/`$` header line, in bytes.
    pub fn max_inline(mut self, bytes: usize) -> Self {
        self.inline = bytes;
        self
    }
    /// Most bytes one request may hold: those buffered while it is not yet
    /// complete, plus what each decoded argument costs ([`ARG_COST`] each
    /// on top of its bytes). Default 1 GiB, as Redis's `client-query-buffer-limit`.
    pub fn max_query_buffer(mut self, bytes: usize) -> Self {
        self.query_buffer = bytes;
        self
    }
    /// Deepest nesting of aggregate replies ([`FrameCodec`] only).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }
    /// The bulk bound.
    pub fn bulk(&self) -> usize {
        self.bulk
    }
    /// The multibulk count bound.
    pub fn multibulk(&self) -> usize {
        self.multibulk
    }
    /// The inline line bound.
    pub fn inline(&self) -> usize {
        self.inline
    }
    /// The query buffer bound.
    pub fn query_buffer(&self) -> usize {
        self.query_buffer
    }
    /// The nesting bound.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// Redis's `string2ll`, how Redis reads an integer argument: optional `-`,
/// no `+`, no leading zeros, no overflow. Every RESP server of the SDK
/// parses integer arguments with it, so they refuse what Redis refuses.
///
/// ```
/// use kids_core::resp::parse_i64;
/// assert_eq!(parse_i64(b"-42"), Some(-42));
/// assert_eq!(parse_i64(b"+1"), None);
/// assert_eq!(parse_i64(b"007"), None);
/// ```
pub fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (neg, rest) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    match rest {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &b in rest {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = i64::from(b - b'0');
        value = if neg {
            value.checked_mul(10)?.checked_sub(d)?
        } else {
            value.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(value)
}

/// Position of the first `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: u8) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_i64_is_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"123"), Some(123));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b"1a",
            b" 1",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }
}
