//! Client-side RESP2/RESP3 frames: a value type and a bounded codec for it.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Limits, Proto, ReplyWriter, find, parse_i64};
use crate::{Error, ProtocolError};

/// One RESP value, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+text`
    Simple(Bytes),
    /// `-CODE text`
    Error(Bytes),
    /// `:n`
    Integer(i64),
    /// `$len` bulk string
    Bulk(Bytes),
    /// RESP2 `$-1` or RESP3 `_`
    Null,
    /// RESP2 `*-1` (decoded RESP3 nulls are always [`Frame::Null`])
    NullArray,
    /// `*n`
    Array(Vec<Frame>),
    /// `%n` (RESP3)
    Map(Vec<(Frame, Frame)>),
    /// `~n` (RESP3)
    Set(Vec<Frame>),
    /// `>n` (RESP3 out-of-band data: pub/sub messages)
    Push(Vec<Frame>),
    /// `#t` / `#f` (RESP3)
    Boolean(bool),
    /// `,<double>` (RESP3)
    Double(f64),
    /// `(<digits>` (RESP3)
    BigNumber(Bytes),
    /// `=len\r\nfmt:text` (RESP3)
    Verbatim {
        /// The three-letter format, such as `txt`.
        format: [u8; 3],
        /// The text after `fmt:`.
        text: Bytes,
    },
    /// `|n` (RESP3): attributes that precede the frame they describe.
    Attribute(Vec<(Frame, Frame)>),
}

impl Frame {
    /// A bulk string frame from anything byte-like.
    pub fn bulk(data: impl AsRef<[u8]>) -> Self {
        Self::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    /// A request frame: an array of bulk strings.
    pub fn command<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        Self::Array(args.into_iter().map(Self::bulk).collect())
    }

    /// Appends this frame's encoding in `proto` to `buf`.
    pub fn encode(&self, proto: Proto, buf: &mut BytesMut) {
        let mut w = ReplyWriter::new(buf, proto);
        self.write(&mut w);
    }

    fn write(&self, w: &mut ReplyWriter<'_>) {
        match self {
            Self::Simple(s) => w.simple(s),
            Self::Error(s) => w.error(s),
            Self::Integer(n) => w.integer(*n),
            Self::Bulk(b) => w.bulk(b),
            Self::Null => w.null(),
            Self::NullArray => w.null_array(),
            Self::Array(items) => {
                w.array(items.len());
                items.iter().for_each(|f| f.write(w));
            }
            Self::Set(items) => {
                w.set(items.len());
                items.iter().for_each(|f| f.write(w));
            }
            Self::Push(items) => {
                w.push(items.len());
                items.iter().for_each(|f| f.write(w));
            }
            Self::Map(pairs) => {
                w.map(pairs.len());
                for (k, v) in pairs {
                    k.write(w);
                    v.write(w);
                }
            }
            Self::Attribute(pairs) => {
                if w.proto() == Proto::Resp3 {
                    let mut head = BytesMut::new();
                    super::reply::put_decimal(&mut head, pairs.len() as i64);
                    w.raw(b"|");
                    w.raw(&head);
                    w.raw(b"\r\n");
                    for (k, v) in pairs {
                        k.write(w);
                        v.write(w);
                    }
                }
            }
            Self::Boolean(v) => w.boolean(*v),
            Self::Double(v) => w.double(*v),
            Self::BigNumber(d) => w.big_number(d),
            Self::Verbatim { format, text } => w.verbatim(format, text),
        }
    }
}

/// Decodes and encodes [`Frame`]s, for clients, tests and tools.
///
/// Decoding accepts both RESP2 and RESP3; encoding uses the codec's [`Proto`].
/// Bulk lengths, aggregate sizes, line lengths and nesting depth are bounded by
/// [`Limits`]. A frame is decoded once it has fully arrived; a partial frame
/// is re-scanned on the next call, so feed it large reads.
///
/// ```
/// use bytes::BytesMut;
/// use kids_core::{Frame, FrameCodec};
/// use tokio_util::codec::Decoder;
///
/// let mut codec = FrameCodec::default();
/// let mut buf = BytesMut::from(&b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"[..]);
/// let frame = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(frame, Frame::Push(vec![Frame::bulk("message"), Frame::bulk("c"), Frame::bulk("hi")]));
/// ```
#[derive(Debug, Default, Clone)]
pub struct FrameCodec {
    limits: Limits,
    proto: Proto,
}

impl FrameCodec {
    /// A codec with these bounds, encoding in `proto`.
    pub fn new(limits: Limits, proto: Proto) -> Self {
        Self { limits, proto }
    }

    fn parse(
        &self,
        src: &[u8],
        pos: &mut usize,
        depth: usize,
    ) -> Result<Option<Frame>, ProtocolError> {
        if depth > self.limits.depth() {
            return Err(ProtocolError::InvalidReply("nesting too deep"));
        }
        let rest = &src[*pos..];
        let Some(cr) = find(rest, b'\r') else {
            if rest.len() > self.limits.inline() {
                return Err(ProtocolError::InvalidReply("line too long"));
            }
            return Ok(None);
        };
        if cr > self.limits.inline() {
            return Err(ProtocolError::InvalidReply("line too long"));
        }
        if cr + 1 >= rest.len() {
            return Ok(None);
        }
        if rest[cr + 1] != b'\n' {
            return Err(ProtocolError::InvalidReply("line not ended by CRLF"));
        }
        let Some((&tag, body)) = rest[..cr].split_first() else {
            return Err(ProtocolError::InvalidReply("empty line"));
        };
        if matches!(tag, b'+' | b'-') && body.contains(&b'\n') {
            return Err(ProtocolError::InvalidReply("line contains LF"));
        }
        *pos += cr + 2;
        let text = || Bytes::copy_from_slice(body);
        let int = || parse_i64(body).ok_or(ProtocolError::InvalidReply("bad integer"));
        let count = |this: &Self| -> Result<Option<usize>, ProtocolError> {
            let n = int()?;
            if n == -1 {
                return Ok(None);
            }
            if n < 0 || n as u64 > this.limits.multibulk() as u64 {
                return Err(ProtocolError::InvalidReply("bad aggregate length"));
            }
            Ok(Some(n as usize))
        };
        let frame = match tag {
            b'+' => Frame::Simple(text()),
            b'-' => Frame::Error(text()),
            b':' => Frame::Integer(int()?),
            b'(' => Frame::BigNumber(text()),
            b'_' if body.is_empty() => Frame::Null,
            b'#' => match body {
                b"t" => Frame::Boolean(true),
                b"f" => Frame::Boolean(false),
                _ => return Err(ProtocolError::InvalidReply("bad boolean")),
            },
            b',' => {
                let s = std::str::from_utf8(body)
                    .map_err(|_| ProtocolError::InvalidReply("bad double"))?;
                let v = match s {
                    "inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    "nan" => f64::NAN,
                    _ => s
                        .parse()
                        .map_err(|_| ProtocolError::InvalidReply("bad double"))?,
                };
                Frame::Double(v)
            }
            b'$' | b'=' => {
                let n = int()?;
                if tag == b'$' && n == -1 {
                    return Ok(Some(Frame::Null));
                }
                if n < 0 || n as u64 > self.limits.bulk() as u64 {
                    return Err(ProtocolError::InvalidReply("bad bulk length"));
                }
                let n = n as usize;
                if src.len() < *pos + n + 2 {
                    return Ok(None);
                }
                let data = &src[*pos..*pos + n];
                if &src[*pos + n..*pos + n + 2] != b"\r\n" {
                    return Err(ProtocolError::InvalidReply("bulk not ended by CRLF"));
                }
                *pos += n + 2;
                if tag == b'$' {
                    Frame::Bulk(Bytes::copy_from_slice(data))
                } else {
                    if n < 4 || data[3] != b':' {
                        return Err(ProtocolError::InvalidReply("bad verbatim string"));
                    }
                    Frame::Verbatim {
                        format: [data[0], data[1], data[2]],
                        text: Bytes::copy_from_slice(&data[4..]),
                    }
                }
            }
            b'*' | b'~' | b'>' => {
                let Some(n) = count(self)? else {
                    return if tag == b'*' {
                        Ok(Some(Frame::NullArray))
                    } else {
                        Err(ProtocolError::InvalidReply("bad aggregate length"))
                    };
                };
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    match self.parse(src, pos, depth + 1)? {
                        Some(f) => items.push(f),
                        None => return Ok(None),
                    }
                }
                match tag {
                    b'*' => Frame::Array(items),
                    b'~' => Frame::Set(items),
                    _ => Frame::Push(items),
                }
            }
            b'%' | b'|' => {
                let Some(n) = count(self)? else {
                    return Err(ProtocolError::InvalidReply("bad aggregate length"));
                };
                let mut pairs = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let Some(k) = self.parse(src, pos, depth + 1)? else {
                        return Ok(None);
                    };
                    let Some(v) = self.parse(src, pos, depth + 1)? else {
                        return Ok(None);
                    };
                    pairs.push((k, v));
                }
                if tag == b'%' {
                    Frame::Map(pairs)
                } else {
                    Frame::Attribute(pairs)
                }
            }
            _ => return Err(ProtocolError::InvalidReply("unknown type byte")),
        };
        Ok(Some(frame))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let mut pos = 0;
        match self.parse(src, &mut pos, 0)? {
            Some(frame) => {
                src.advance(pos);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        frame.encode(self.proto, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        let run = |parts: &[&[u8]]| -> Result<Vec<Frame>, ProtocolError> {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in parts {
                buf.extend_from_slice(part);
                while let Some(f) = codec.parse_into(&mut buf)? {
                    out.push(f);
                }
            }
            Ok(out)
        };
        let whole = run(&[input]);
        for cut in 0..=input.len() {
            assert_eq!(
                run(&[&input[..cut], &input[cut..]]),
                whole,
                "split at {cut}"
            );
        }
        whole
    }

    impl FrameCodec {
        fn parse_into(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
            match self.decode(buf) {
                Ok(f) => Ok(f),
                Err(Error::Protocol(p)) => Err(p),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn vectors_whole_and_split() {
        let input = b"+OK\r\n-ERR x\r\n:-5\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n_\r\n#t\r\n,1.5\r\n,inf\r\n(123\r\n=7\r\ntxt:abc\r\n%1\r\n$1\r\nk\r\n:1\r\n~1\r\n:2\r\n>2\r\n$1\r\na\r\n*0\r\n|1\r\n+a\r\n+b\r\n";
        let frames = decode_split(input).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Simple("OK".into()),
                Frame::Error("ERR x".into()),
                Frame::Integer(-5),
                Frame::bulk("abc"),
                Frame::Null,
                Frame::NullArray,
                Frame::Null,
                Frame::Boolean(true),
                Frame::Double(1.5),
                Frame::Double(f64::INFINITY),
                Frame::BigNumber("123".into()),
                Frame::Verbatim {
                    format: *b"txt",
                    text: "abc".into()
                },
                Frame::Map(vec![(Frame::bulk("k"), Frame::Integer(1))]),
                Frame::Set(vec![Frame::Integer(2)]),
                Frame::Push(vec![Frame::bulk("a"), Frame::Array(vec![])]),
                Frame::Attribute(vec![(Frame::Simple("a".into()), Frame::Simple("b".into()))]),
            ]
        );
        // Re-encoding in RESP3 gives the same bytes back.
        let mut out = BytesMut::new();
        for f in &frames {
            f.encode(Proto::Resp3, &mut out);
        }
        let expect: &[u8] = b"+OK\r\n-ERR x\r\n:-5\r\n$3\r\nabc\r\n_\r\n_\r\n_\r\n#t\r\n,1.5\r\n,inf\r\n(123\r\n=7\r\ntxt:abc\r\n%1\r\n$1\r\nk\r\n:1\r\n~1\r\n:2\r\n>2\r\n$1\r\na\r\n*0\r\n|1\r\n+a\r\n+b\r\n";
        assert_eq!(&out[..], expect);
    }

    #[test]
    fn malformed_and_over_bound() {
        for bad in [
            &b"?x\r\n"[..],
            b"$3\r\nabcd\r\n",
            b":1x\r\n",
            b"*-2\r\n",
            b"#x\r\n",
            b"+a\rb",
        ] {
            assert!(decode_split(bad).is_err(), "{bad:?}");
        }
        let mut codec = FrameCodec::new(Limits::default().max_depth(2).max_bulk(2), Proto::Resp2);
        assert!(
            codec
                .decode(&mut BytesMut::from(&b"*1\r\n*1\r\n*1\r\n:1\r\n"[..]))
                .is_err()
        );
        assert!(codec.decode(&mut BytesMut::from(&b"$3\r\n"[..])).is_err());
    }
}
