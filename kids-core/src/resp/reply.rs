//! Reply encoding for RESP2 and RESP3 from one call site.

use bytes::{BufMut, BytesMut};

use super::Proto;

/// Appends replies to a buffer in the connection's protocol version.
///
/// RESP3-only shapes fall back to their RESP2 forms the way Redis does: a map
/// becomes a flat array, a set and a push frame become arrays, null becomes
/// the null bulk string, a boolean becomes 1 or 0, a verbatim string becomes
/// a bulk string.
///
/// ```
/// use bytes::BytesMut;
/// use kids_core::{Proto, ReplyWriter};
///
/// let mut buf = BytesMut::new();
/// let mut w = ReplyWriter::new(&mut buf, Proto::Resp2);
/// w.map(1);
/// w.bulk(b"proto");
/// w.integer(2);
/// assert_eq!(&buf[..], b"*2\r\n$5\r\nproto\r\n:2\r\n");
/// ```
#[derive(Debug)]
pub struct ReplyWriter<'a> {
    buf: &'a mut BytesMut,
    proto: Proto,
}

impl<'a> ReplyWriter<'a> {
    /// A writer appending to `buf`.
    pub fn new(buf: &'a mut BytesMut, proto: Proto) -> Self {
        Self { buf, proto }
    }

    /// The protocol version replies are written in.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    fn line(&mut self, tag: u8, text: &[u8]) {
        self.buf.reserve(text.len() + 3);
        self.buf.put_u8(tag);
        self.buf.put_slice(text);
        self.buf.put_slice(b"\r\n");
    }

    fn header(&mut self, tag: u8, n: i64) {
        self.buf.reserve(24);
        self.buf.put_u8(tag);
        put_decimal(self.buf, n);
        self.buf.put_slice(b"\r\n");
    }

    /// `+text`; `\r` and `\n` in `text` are replaced with spaces.
    pub fn simple(&mut self, text: &[u8]) {
        self.buf.reserve(text.len() + 3);
        self.buf.put_u8(b'+');
        put_sanitized(self.buf, text);
        self.buf.put_slice(b"\r\n");
    }

    /// `-text`: `text` starts with the error code (`ERR ...`); `\r` and `\n`
    /// are replaced with spaces, as Redis does.
    pub fn error(&mut self, text: &[u8]) {
        self.buf.reserve(text.len() + 3);
        self.buf.put_u8(b'-');
        put_sanitized(self.buf, text);
        self.buf.put_slice(b"\r\n");
    }

    /// `:n`.
    pub fn integer(&mut self, n: i64) {
        self.header(b':', n);
    }

    /// `$len\r\nbytes\r\n`.
    pub fn bulk(&mut self, data: &[u8]) {
        self.buf.reserve(data.len() + 16);
        self.header(b'$', data.len() as i64);
        self.buf.put_slice(data);
        self.buf.put_slice(b"\r\n");
    }

    /// The null bulk string in RESP2 (`$-1`), null (`_`) in RESP3.
    pub fn null(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.put_slice(b"$-1\r\n"),
            Proto::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    /// The null array in RESP2 (`*-1`), null (`_`) in RESP3.
    pub fn null_array(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.put_slice(b"*-1\r\n"),
            Proto::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    /// An array header of `n` elements; the elements follow.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// A map header of `n` pairs (RESP2: array of `2n`); keys and values follow.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', 2 * n as i64),
            Proto::Resp3 => self.header(b'%', n as i64),
        }
    }

    /// A set header of `n` elements (RESP2: array).
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', n as i64),
            Proto::Resp3 => self.header(b'~', n as i64),
        }
    }

    /// A push header of `n` elements (RESP2: array), for pub/sub messages.
    pub fn push(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', n as i64),
            Proto::Resp3 => self.header(b'>', n as i64),
        }
    }

    /// `#t` / `#f` (RESP2: `:1` / `:0`).
    pub fn boolean(&mut self, v: bool) {
        match self.proto {
            Proto::Resp2 => self.integer(i64::from(v)),
            Proto::Resp3 => self.buf.put_slice(if v { b"#t\r\n" } else { b"#f\r\n" }),
        }
    }

    /// `,<double>` (RESP2: a bulk string of the same text).
    pub fn double(&mut self, v: f64) {
        let text = format_double(v);
        match self.proto {
            Proto::Resp2 => self.bulk(text.as_bytes()),
            Proto::Resp3 => self.line(b',', text.as_bytes()),
        }
    }

    /// `(<digits>`, a big number given as its decimal text (RESP2: bulk string).
    pub fn big_number(&mut self, digits: &[u8]) {
        match self.proto {
            Proto::Resp2 => self.bulk(digits),
            Proto::Resp3 => self.line(b'(', digits),
        }
    }

    /// `=len\r\nfmt:text\r\n` with a three-letter format (RESP2: bulk of `text`).
    pub fn verbatim(&mut self, format: &[u8; 3], text: &[u8]) {
        match self.proto {
            Proto::Resp2 => self.bulk(text),
            Proto::Resp3 => {
                self.header(b'=', text.len() as i64 + 4);
                self.buf.put_slice(format);
                self.buf.put_u8(b':');
                self.buf.put_slice(text);
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    /// Bytes already encoded, appended as they are.
    pub fn raw(&mut self, encoded: &[u8]) {
        self.buf.put_slice(encoded);
    }
}

fn put_sanitized(buf: &mut BytesMut, text: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(text);
    for b in &mut buf[start..] {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
}

/// Appends the decimal text of `n` without allocating.
pub(crate) fn put_decimal(buf: &mut BytesMut, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        buf.put_u8(b'-');
    }
    buf.put_slice(&digits[i..]);
}

/// RESP3 spelling of a double: `inf`, `-inf`, `nan`, else the shortest round-trip text.
pub(crate) fn format_double(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(f: impl Fn(&mut ReplyWriter<'_>)) -> (Vec<u8>, Vec<u8>) {
        let mut a = BytesMut::new();
        f(&mut ReplyWriter::new(&mut a, Proto::Resp2));
        let mut b = BytesMut::new();
        f(&mut ReplyWriter::new(&mut b, Proto::Resp3));
        (a.to_vec(), b.to_vec())
    }

    #[test]
    fn simple_and_error_replies_blank_cr_and_lf() {
        let mut buf = BytesMut::from(&b"+OK\r\n"[..]);
        let mut w = ReplyWriter::new(&mut buf, Proto::Resp2);
        w.simple(b"a\r\nb\nc");
        w.error(b"ERR x\ry\r\n");
        assert_eq!(&buf[..], b"+OK\r\n+a  b c\r\n-ERR x y  \r\n");
    }

    #[test]
    fn shapes_in_both_versions() {
        assert_eq!(both(|w| w.null()), (b"$-1\r\n".to_vec(), b"_\r\n".to_vec()));
        assert_eq!(
            both(|w| w.null_array()),
            (b"*-1\r\n".to_vec(), b"_\r\n".to_vec())
        );
        assert_eq!(both(|w| w.map(2)), (b"*4\r\n".to_vec(), b"%2\r\n".to_vec()));
        assert_eq!(both(|w| w.set(1)), (b"*1\r\n".to_vec(), b"~1\r\n".to_vec()));
        assert_eq!(
            both(|w| w.push(3)),
            (b"*3\r\n".to_vec(), b">3\r\n".to_vec())
        );
        assert_eq!(
            both(|w| w.boolean(true)),
            (b":1\r\n".to_vec(), b"#t\r\n".to_vec())
        );
        assert_eq!(
            both(|w| w.verbatim(b"txt", b"hi")),
            (b"$2\r\nhi\r\n".to_vec(), b"=6\r\ntxt:hi\r\n".to_vec())
        );
        assert_eq!(
            both(|w| w.double(1.5)),
            (b"$3\r\n1.5\r\n".to_vec(), b",1.5\r\n".to_vec())
        );
        assert_eq!(
            both(|w| w.integer(i64::MIN)),
            (
                b":-9223372036854775808\r\n".to_vec(),
                b":-9223372036854775808\r\n".to_vec()
            )
        );
        assert_eq!(
            both(|w| w.error(b"ERR a\r\nb")),
            (b"-ERR a  b\r\n".to_vec(), b"-ERR a  b\r\n".to_vec())
        );
    }
}
