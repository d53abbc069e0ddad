//! The wish wire format: length-prefixed frames, and their bounded codec (see PROTOCOL.md).

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Code, Error, FrameError, Status};

/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Default bound on a frame's length field, and on a payload's decompressed size: 4 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 * 1024 * 1024;
/// Default size from which a payload marked for compression is compressed: 512 bytes.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 512;
/// Longest error message a frame carries; longer ones are cut at a char boundary.
pub const MAX_ERROR_MESSAGE: usize = u16::MAX as usize;

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_ERROR: u8 = 3;
const KIND_CANCEL: u8 = 4;

const CODEC_MASK: u8 = 0b0000_0011;
const CODEC_LZ4: u8 = 1;
const FLAG_DEADLINE: u8 = 1 << 2;
const FLAG_TIMESTAMP: u8 = 1 << 3;
const FLAG_FROM_CACHE: u8 = 1 << 4;
const FLAG_NO_CACHE: u8 = 1 << 5;
const FLAG_PLAIN_RESPONSE: u8 = 1 << 6;
const RESERVED_FLAGS: u8 = 0b1000_0000;

/// The most a decoder reserves for the rest of an incomplete frame: the
/// buffer grows with what arrives, not with what the length field announces.
const READ_AHEAD: usize = 8 * 1024;

/// Bytes after the length field common to every frame: version, kind, flags, request id.
const COMMON: usize = 1 + 1 + 1 + 8;

/// One frame of the wish protocol.
///
/// Payloads are held decompressed: the codec compresses on the way out (when
/// `compress` is set and it pays) and decompresses on the way in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The request id, chosen by the client and echoed by the server.
    pub id: u64,
    /// What the frame carries.
    pub body: Body,
}

/// The four kinds of frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Client to server: call a method.
    Request(RequestFrame),
    /// Server to client: the method's answer.
    Response(ResponseFrame),
    /// Server to client: the call failed.
    Error(Status),
    /// Client to server: stop the call with this id; no answer follows.
    Cancel,
}

/// The body of a request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// The method's id (see [`method_id`]).
    pub method: u32,
    /// How long the client waits for the answer, counted from when the server reads the frame.
    pub deadline: Option<Duration>,
    /// Ask the server not to answer from its cache (nor store the answer).
    pub no_cache: bool,
    /// Ask the server not to compress the response.
    pub plain_response: bool,
    /// On encode: compress the payload if it is above the threshold and shrinks.
    /// On decode: whether it was compressed on the wire.
    pub compress: bool,
    /// The protobuf-encoded request message.
    pub payload: Bytes,
}

/// The body of a response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    /// When the answer was computed, in milliseconds since the Unix epoch.
    pub computed_at: Option<u64>,
    /// The server answered from its cache.
    pub from_cache: bool,
    /// As [`RequestFrame::compress`].
    pub compress: bool,
    /// The protobuf-encoded response message.
    pub payload: Bytes,
}

impl Frame {
    /// A request frame with no deadline, cache allowed and no compression.
    pub fn request(id: u64, method: u32, payload: Bytes) -> Frame {
        Frame {
            id,
            body: Body::Request(RequestFrame {
                method,
                deadline: None,
                no_cache: false,
                plain_response: false,
                compress: false,
                payload,
            }),
        }
    }

    /// A plain response frame.
    pub fn response(id: u64, payload: Bytes) -> Frame {
        Frame {
            id,
            body: Body::Response(ResponseFrame {
                computed_at: None,
                from_cache: false,
                compress: false,
                payload,
            }),
        }
    }

    /// An error frame.
    pub fn error(id: u64, status: Status) -> Frame {
        Frame {
            id,
            body: Body::Error(status),
        }
    }

    /// A cancel frame.
    pub fn cancel(id: u64) -> Frame {
        Frame {
            id,
            body: Body::Cancel,
        }
    }
}

/// The id of a method on the wire: FNV-1a (32 bit) of its full protobuf
/// name, `package.Service.Method`.
///
/// ```
/// assert_eq!(wish_core::method_id("calc.Simple.Plus"), 0xf773_3f92);
/// ```
pub const fn method_id(full_name: &str) -> u32 {
    let bytes = full_name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// Encoder and decoder of [`Frame`]s, with a bound on every length.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use tokio_util::codec::{Decoder, Encoder};
/// use wish_core::{Frame, FrameCodec};
///
/// let mut codec = FrameCodec::new().max_frame_len(1024);
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::request(7, 42, Bytes::from_static(b"\x08\x01")), &mut wire).unwrap();
/// let frame = codec.decode(&mut wire).unwrap().unwrap();
/// assert_eq!(frame.id, 7);
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_len: usize,
    compress_threshold: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the default bounds ([`DEFAULT_MAX_FRAME_LEN`], [`DEFAULT_COMPRESS_THRESHOLD`]).
    pub fn new() -> FrameCodec {
        FrameCodec {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
        }
    }

    /// Bound the length field of a frame, and the decompressed size of a payload.
    pub fn max_frame_len(mut self, max: usize) -> FrameCodec {
        self.max_frame_len = max.min(u32::MAX as usize);
        self
    }

    /// Payloads marked for compression are compressed from this size on.
    pub fn compress_threshold(mut self, bytes: usize) -> FrameCodec {
        self.compress_threshold = bytes;
        self
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::TooLong {
                len,
                max: self.max_frame_len,
            }
            .into());
        }
        if len < COMMON {
            return Err(FrameError::Truncated.into());
        }
        if src.len() < 4 + len {
            // Room for what may come next, never for what the length field
            // announces: a peer that announces 4 MiB and sends 10 bytes costs
            // the server what it sent, not 4 MiB.
            src.reserve((4 + len - src.len()).min(READ_AHEAD));
            return Ok(None);
        }
        src.advance(4);
        let mut body = src.split_to(len).freeze();
        Ok(Some(parse(&mut body, self.max_frame_len)?))
    }
}

fn parse(buf: &mut Bytes, max: usize) -> Result<Frame, FrameError> {
    let version = buf.get_u8();
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = buf.get_u8();
    let flags = buf.get_u8();
    let id = buf.get_u64();
    let allowed = match kind {
        KIND_REQUEST => CODEC_MASK | FLAG_DEADLINE | FLAG_NO_CACHE | FLAG_PLAIN_RESPONSE,
        KIND_RESPONSE => CODEC_MASK | FLAG_TIMESTAMP | FLAG_FROM_CACHE,
        KIND_ERROR | KIND_CANCEL => 0,
        other => return Err(FrameError::Kind(other)),
    };
    if flags & RESERVED_FLAGS != 0 || flags & !allowed != 0 {
        return Err(FrameError::Flags { kind, flags });
    }
    let codec = flags & CODEC_MASK;
    if codec > CODEC_LZ4 {
        return Err(FrameError::Codec(codec));
    }
    let body = match kind {
        KIND_REQUEST => {
            let method = take_u32(buf)?;
            let deadline = if flags & FLAG_DEADLINE != 0 {
                Some(Duration::from_millis(u64::from(take_u32(buf)?)))
            } else {
                None
            };
            Body::Request(RequestFrame {
                method,
                deadline,
                no_cache: flags & FLAG_NO_CACHE != 0,
                plain_response: flags & FLAG_PLAIN_RESPONSE != 0,
                compress: codec != 0,
                payload: payload(buf, codec, max)?,
            })
        }
        KIND_RESPONSE => {
            let computed_at = if flags & FLAG_TIMESTAMP != 0 {
                Some(take_u64(buf)?)
            } else {
                None
            };
            Body::Response(ResponseFrame {
                computed_at,
                from_cache: flags & FLAG_FROM_CACHE != 0,
                compress: codec != 0,
                payload: payload(buf, codec, max)?,
            })
        }
        KIND_ERROR => {
            let code = Code(take_u16(buf)?);
            let n = usize::from(take_u16(buf)?);
            if buf.len() != n {
                return Err(if buf.len() < n {
                    FrameError::Truncated
                } else {
                    FrameError::Trailing
                });
            }
            let message = std::str::from_utf8(buf).map_err(|_| FrameError::Utf8)?;
            Body::Error(Status::new(code, message))
        }
        _ => {
            if !buf.is_empty() {
                return Err(FrameError::Trailing);
            }
            Body::Cancel
        }
    };
    Ok(Frame { id, body })
}

fn take_u16(buf: &mut Bytes) -> Result<u16, FrameError> {
    if buf.len() < 2 {
        return Err(FrameError::Truncated);
    }
    Ok(buf.get_u16())
}

fn take_u32(buf: &mut Bytes) -> Result<u32, FrameError> {
    if buf.len() < 4 {
        return Err(FrameError::Truncated);
    }
    Ok(buf.get_u32())
}

fn take_u64(buf: &mut Bytes) -> Result<u64, FrameError> {
    if buf.len() < 8 {
        return Err(FrameError::Truncated);
    }
    Ok(buf.get_u64())
}

/// The rest of the frame as a payload, decompressed if the codec says so.
fn payload(buf: &mut Bytes, codec: u8, max: usize) -> Result<Bytes, FrameError> {
    if codec == 0 {
        return Ok(std::mem::take(buf));
    }
    let size = take_u32(buf)? as usize;
    if size > max {
        return Err(FrameError::Bomb { size, max });
    }
    let mut out = vec![0u8; size];
    match lz4_flex::block::decompress_into(buf, &mut out) {
        Ok(n) if n == size => Ok(Bytes::from(out)),
        _ => Err(FrameError::Decompress),
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_ref(&frame, dst)
    }
}

impl FrameCodec {
    pub(crate) fn encode_ref(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let start = dst.len();
        dst.reserve(4 + COMMON + 16);
        dst.put_u32(0);
        dst.put_u8(VERSION);
        match &frame.body {
            Body::Request(r) => {
                let mut flags = 0;
                if r.deadline.is_some() {
                    flags |= FLAG_DEADLINE;
                }
                if r.no_cache {
                    flags |= FLAG_NO_CACHE;
                }
                if r.plain_response {
                    flags |= FLAG_PLAIN_RESPONSE;
                }
                let flags_at = self.head(dst, KIND_REQUEST, flags, frame.id);
                dst.put_u32(r.method);
                if let Some(d) = r.deadline {
                    // Whole milliseconds, rounded up: a deadline is never shortened.
                    let ms = d.as_nanos().div_ceil(1_000_000);
                    dst.put_u32(u32::try_from(ms).unwrap_or(u32::MAX));
                }
                self.put_payload(dst, flags_at, r.compress, &r.payload);
            }
            Body::Response(r) => {
                let mut flags = 0;
                if r.computed_at.is_some() {
                    flags |= FLAG_TIMESTAMP;
                }
                if r.from_cache {
                    flags |= FLAG_FROM_CACHE;
                }
                let flags_at = self.head(dst, KIND_RESPONSE, flags, frame.id);
                if let Some(at) = r.computed_at {
                    dst.put_u64(at);
                }
                self.put_payload(dst, flags_at, r.compress, &r.payload);
            }
            Body::Error(status) => {
                self.head(dst, KIND_ERROR, 0, frame.id);
                let message = truncate(status.message(), MAX_ERROR_MESSAGE);
                dst.put_u16(status.code().0);
                dst.put_u16(message.len() as u16);
                dst.put_slice(message.as_bytes());
            }
            Body::Cancel => {
                self.head(dst, KIND_CANCEL, 0, frame.id);
            }
        }
        let len = dst.len() - start - 4;
        if len > self.max_frame_len {
            dst.truncate(start);
            return Err(FrameError::TooLong {
                len,
                max: self.max_frame_len,
            }
            .into());
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Writes kind, flags and id; returns where the flags byte is.
    fn head(&self, dst: &mut BytesMut, kind: u8, flags: u8, id: u64) -> usize {
        dst.put_u8(kind);
        let at = dst.len();
        dst.put_u8(flags);
        dst.put_u64(id);
        at
    }

    fn put_payload(&self, dst: &mut BytesMut, flags_at: usize, compress: bool, payload: &[u8]) {
        // Never compress what the bound refuses once decompressed: the frame
        // would fit, and the peer would take it for a bomb.
        if compress
            && payload.len() >= self.compress_threshold
            && payload.len() <= self.max_frame_len
        {
            let at = dst.len();
            let bound = lz4_flex::block::get_maximum_output_size(payload.len());
            dst.put_u32(payload.len() as u32);
            dst.resize(at + 4 + bound, 0);
            if let Ok(n) = lz4_flex::block::compress_into(payload, &mut dst[at + 4..])
                && 4 + n < payload.len()
            {
                dst.truncate(at + 4 + n);
                dst[flags_at] |= CODEC_LZ4;
                return;
            }
            dst.truncate(at);
        }
        dst.extend_from_slice(payload);
    }
}

/// A computed-at time as the wire carries it: milliseconds since the Unix
/// epoch (0 before it).
pub(crate) fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A computed-at time from the wire.
pub(crate) fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_ids_are_fnv1a() {
        // FNV-1a test vectors.
        assert_eq!(method_id(""), 0x811c_9dc5);
        assert_eq!(method_id("a"), 0xe40c_292c);
        assert_eq!(method_id("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
