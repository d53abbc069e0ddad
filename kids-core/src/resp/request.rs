//! Server-side request decoding: RESP2 multibulk and inline commands, as Redis parses them.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{Limits, find, parse_i64};
use crate::{Error, ProtocolError};

/// One command: its name and arguments, as the client sent them.
pub type Request = Vec<Bytes>;

/// What one decoded argument costs in memory besides its bytes, as the
/// query buffer bound counts it: its handle in the argument list (twice, for
/// the list's growth), and its `$N` header and CRLF, which stay in the read
/// buffer its bytes share. So a request of a million empty arguments counts
/// as the 70 MB it holds, not as 0.
pub const ARG_COST: usize = 2 * std::mem::size_of::<Bytes>() + 6;

/// Decodes a stream of client requests, incrementally and within [`Limits`].
///
/// Accepts what `redis-server` accepts: `*<n>\r\n` followed by `n` bulk
/// strings, or an inline line (`PING\r\n` typed in telnet, with `"..."` and
/// `'...'` quoting). Empty multibulks (`*0`, `*-1`) and blank inline lines are
/// skipped. After an error the decoder must not be used again: the connection
/// is to be closed, as Redis closes it.
///
/// ```
/// use bytes::BytesMut;
/// use kids_core::RequestDecoder;
/// use tokio_util::codec::Decoder;
///
/// let mut dec = RequestDecoder::default();
/// let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n*1\r\n$4\r\nPI"[..]);
/// assert_eq!(dec.decode(&mut buf).unwrap().unwrap(), vec!["ECHO", "hi"]);
/// assert_eq!(dec.decode(&mut buf).unwrap().unwrap(), vec!["PING"]);
/// assert_eq!(dec.decode(&mut buf).unwrap(), None); // needs more bytes
/// ```
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Start,
    Multibulk {
        remaining: usize,
        args: Vec<Bytes>,
        bulk: Option<usize>,
        /// What the arguments decoded so far cost in memory, for the query
        /// buffer bound ([`ARG_COST`] each on top of their bytes).
        held: usize,
    },
}

impl RequestDecoder {
    /// A decoder with the given bounds.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Start,
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when part of a request has been consumed and more is expected.
    pub fn is_mid_request(&self) -> bool {
        matches!(self.state, State::Multibulk { .. })
    }

    /// What the arguments of the request in progress cost so far (see
    /// [`ARG_COST`]); 0 between requests.
    pub fn held_bytes(&self) -> usize {
        match &self.state {
            State::Start => 0,
            State::Multibulk { held, .. } => *held,
        }
    }

    fn decode_request(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            let held = match &self.state {
                State::Start => 0,
                State::Multibulk { held, .. } => *held,
            };
            if held.saturating_add(src.len()) > self.limits.query_buffer {
                return Err(ProtocolError::QueryBufferLimit);
            }
            match &mut self.state {
                State::Start => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    if src[0] != b'*' {
                        match self.inline(src)? {
                            Some(args) if args.is_empty() => continue,
                            other => return Ok(other),
                        }
                    }
                    let Some(cr) = find(src, b'\r') else {
                        if src.len() > self.limits.inline {
                            return Err(ProtocolError::TooBigMbulkCountString);
                        }
                        return Ok(None);
                    };
                    if cr + 1 >= src.len() {
                        return Ok(None);
                    }
                    let count = parse_i64(&src[1..cr])
                        .filter(|&n| n <= self.limits.multibulk as i64)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    src.advance(cr + 2);
                    if count <= 0 {
                        continue;
                    }
                    let count = count as usize;
                    self.state = State::Multibulk {
                        remaining: count,
                        args: Vec::with_capacity(count.min(64)),
                        bulk: None,
                        held: 0,
                    };
                }
                State::Multibulk {
                    remaining,
                    args,
                    bulk,
                    held,
                } => {
                    while *remaining > 0 {
                        let len = match *bulk {
                            Some(len) => len,
                            None => {
                                let Some(cr) = find(src, b'\r') else {
                                    if src.len() > self.limits.inline {
                                        return Err(ProtocolError::TooBigBulkCountString);
                                    }
                                    return Ok(None);
                                };
                                if cr + 1 >= src.len() {
                                    return Ok(None);
                                }
                                if src[0] != b'$' {
                                    return Err(ProtocolError::ExpectedDollar(src[0]));
                                }
                                let len = parse_i64(&src[1..cr])
                                    .filter(|&n| n >= 0 && n as u64 <= self.limits.bulk as u64)
                                    .ok_or(ProtocolError::InvalidBulkLength)?
                                    as usize;
                                src.advance(cr + 2);
                                *bulk = Some(len);
                                len
                            }
                        };
                        // Like Redis, the two bytes after the payload are skipped unchecked.
                        if src.len() < len + 2 {
                            // Grow towards the announced size, but never reserve more
                            // than 1 MiB ahead of what actually arrived.
                            src.reserve((len + 2 - src.len()).min(1 << 20));
                            return Ok(None);
                        }
                        // An empty argument shares nothing: it does not pin the read buffer.
                        let arg = if len == 0 {
                            Bytes::new()
                        } else {
                            src.split_to(len).freeze()
                        };
                        src.advance(2);
                        *held = held.saturating_add(len + ARG_COST);
                        if *held > self.limits.query_buffer {
                            return Err(ProtocolError::QueryBufferLimit);
                        }
                        args.push(arg);
                        *remaining -= 1;
                        *bulk = None;
                    }
                    let args = std::mem::take(args);
                    self.state = State::Start;
                    return Ok(Some(args));
                }
            }
        }
    }

    fn inline(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let Some(nl) = find(src, b'\n') else {
            if src.len() > self.limits.inline {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            return Ok(None);
        };
        let line = src.split_to(nl + 1);
        let mut end = nl;
        if end > 0 && line[end - 1] == b'\r' {
            end -= 1;
        }
        split_inline(&line[..end]).map(Some)
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, Error> {
        Ok(self.decode_request(src)?)
    }
}

/// Splits an inline command line into arguments, as Redis's `sdssplitargs`.
///
/// Unquoted words end at space, tab, `\r`, `\n` or NUL; `"..."` takes
/// `\n \r \t \b \a \xHH` escapes; `'...'` takes `\'`. A closing quote must be
/// followed by a space or the end of the line.
///
/// # Errors
/// [`ProtocolError::UnbalancedQuotes`] for an unterminated quote or a closing
/// quote followed by something else.
pub fn split_inline(line: &[u8]) -> Result<Request, ProtocolError> {
    // sdssplitargs works on a C string: a NUL ends the line.
    let line = match find(line, 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let (mut in_dq, mut in_sq) = (false, false);
        let mut cur = Vec::new();
        loop {
            let c = at(i);
            if in_dq {
                if c == b'\\'
                    && at(i + 1) == b'x'
                    && hex(at(i + 2)).is_some()
                    && hex(at(i + 3)).is_some()
                {
                    cur.push(hex(at(i + 2)).unwrap_or(0) * 16 + hex(at(i + 3)).unwrap_or(0));
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < line.len() && !is_space(line[i + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else if i >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < line.len() && !is_space(line[i + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else if i >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => cur.push(c),
                }
            }
            if i < line.len() {
                i += 1;
            }
        }
        args.push(Bytes::from(cur));
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Request {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    /// Decodes everything in `input`, fed whole, returning requests and the final error.
    fn decode_all(input: &[u8], limits: Limits) -> (Vec<Request>, Option<ProtocolError>) {
        let mut dec = RequestDecoder::new(limits);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match dec.decode_request(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// Feeds `input` split at every byte boundary and checks the result equals the whole feed.
    fn check_split(input: &[u8], limits: Limits) -> (Vec<Request>, Option<ProtocolError>) {
        let whole = decode_all(input, limits);
        for cut in 0..=input.len() {
            let mut dec = RequestDecoder::new(limits);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut err = None;
            'feed: for part in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(part);
                loop {
                    match dec.decode_request(&mut buf) {
                        Ok(Some(r)) => out.push(r),
                        Ok(None) => break,
                        Err(e) => {
                            err = Some(e);
                            break 'feed;
                        }
                    }
                }
            }
            assert_eq!((out, err), whole, "split at {cut} of {input:?}");
        }
        whole
    }

    #[test]
    fn vectors_whole_and_split() {
        let d = Limits::default();
        let cases: Vec<(&[u8], Vec<Request>, Option<ProtocolError>)> = vec![
            (b"*1\r\n$4\r\nPING\r\n", vec![args(&["PING"])], None),
            (b"PING\r\n", vec![args(&["PING"])], None),
            (b"PING\n", vec![args(&["PING"])], None),
            (b"\r\n\r\n  \r\nPING\r\n", vec![args(&["PING"])], None),
            (b"*0\r\n*-1\r\n*1\r\n$0\r\n\r\n", vec![args(&[""])], None),
            (
                b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$5\r\nhello\r\n",
                vec![args(&["PUBLISH", "c", "hello"])],
                None,
            ),
            (
                b"*2\r\n$3\r\nabcXY$1\r\nz\r\n",
                vec![args(&["abc", "z"])],
                None,
            ),
            (
                b"set \"a b\" 'c d' \"\\x41\\n\" 'it\\'s'\r\n",
                vec![args(&["set", "a b", "c d", "A\n", "it's"])],
                None,
            ),
            (b"a\"b c\" d\r\n", vec![args(&["ab c", "d"])], None),
            (
                b"a\"b c\"d\r\n",
                vec![],
                Some(ProtocolError::UnbalancedQuotes),
            ),
            (
                b"echo \"abc\r\n",
                vec![],
                Some(ProtocolError::UnbalancedQuotes),
            ),
            (
                b"echo \"abc\"x\r\n",
                vec![],
                Some(ProtocolError::UnbalancedQuotes),
            ),
            (
                b"*x\r\n",
                vec![],
                Some(ProtocolError::InvalidMultibulkLength),
            ),
            (
                b"*01\r\n",
                vec![],
                Some(ProtocolError::InvalidMultibulkLength),
            ),
            (
                b"*1048577\r\n",
                vec![],
                Some(ProtocolError::InvalidMultibulkLength),
            ),
            (
                b"*1\r\n+x\r\n",
                vec![],
                Some(ProtocolError::ExpectedDollar(b'+')),
            ),
            (
                b"*1\r\n$-1\r\n",
                vec![],
                Some(ProtocolError::InvalidBulkLength),
            ),
            (
                b"*1\r\n$536870913\r\n",
                vec![],
                Some(ProtocolError::InvalidBulkLength),
            ),
            (
                b"PING\r\n*1\r\n$x\r\n",
                vec![args(&["PING"])],
                Some(ProtocolError::InvalidBulkLength),
            ),
        ];
        for (input, want, err) in cases {
            assert_eq!(check_split(input, d), (want, err), "{input:?}");
        }
    }

    #[test]
    fn bounds_are_errors() {
        let small = Limits::default().max_inline(8).max_bulk(4).max_multibulk(2);
        assert_eq!(
            check_split(b"123456789", small).1,
            Some(ProtocolError::TooBigInlineRequest)
        );
        assert_eq!(
            check_split(b"*123456789", small).1,
            Some(ProtocolError::TooBigMbulkCountString)
        );
        assert_eq!(
            check_split(b"*1\r\n$123456789", small).1,
            Some(ProtocolError::TooBigBulkCountString)
        );
        assert_eq!(
            check_split(b"*1\r\n$5\r\n", small).1,
            Some(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            check_split(b"*3\r\n", small).1,
            Some(ProtocolError::InvalidMultibulkLength)
        );
        let qb = Limits::default().max_query_buffer(16);
        assert_eq!(
            check_split(b"*2\r\n$8\r\n12345678\r\n$8\r\n1234", qb).1,
            Some(ProtocolError::QueryBufferLimit)
        );
    }

    #[test]
    fn each_argument_counts_what_it_costs_against_the_query_buffer() {
        // 1.2 MB of empty arguments cost about 14 MB: over an 8 MB bound,
        // though their bytes (zero) and the wire (1.2 MB) are not.
        let limits = Limits::default().max_query_buffer(8 << 20);
        let mut dec = RequestDecoder::new(limits);
        let mut wire = b"*1048576\r\n".to_vec();
        for _ in 0..200_000 {
            wire.extend_from_slice(b"$0\r\n\r\n");
        }
        let mut buf = BytesMut::from(&wire[..]);
        let got = dec.decode(&mut buf);
        assert!(
            matches!(got, Err(Error::Protocol(ProtocolError::QueryBufferLimit))),
            "{got:?}"
        );
        // Under the bound, the same arguments are taken and share nothing.
        let mut dec = RequestDecoder::new(Limits::default().max_query_buffer(16 << 20));
        let mut wire = b"*200000\r\n".to_vec();
        for _ in 0..200_000 {
            wire.extend_from_slice(b"$0\r\n\r\n");
        }
        let mut buf = BytesMut::from(&wire[..]);
        let args = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args.len(), 200_000);
        assert!(args.iter().all(|a| a.is_empty()));
        assert!(buf.is_empty());
        // 200,000 x ARG_COST is 14 MB: a complete request costing more is refused too.
        let mut dec = RequestDecoder::new(Limits::default().max_query_buffer(8 << 20));
        let mut buf = BytesMut::from(&wire[..]);
        assert!(dec.decode(&mut buf).is_err());
    }

    #[test]
    fn large_bulk_does_not_reserve_announced_size() {
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*1\r\n$500000000\r\nab"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() < 4 << 20, "capacity {}", buf.capacity());
    }

    #[test]
    fn nul_ends_an_inline_line() {
        assert_eq!(split_inline(b"ping\0 x").unwrap(), args(&["ping"]));
    }
}
