//! An in-memory byte stream, to drive a connection without sockets.

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::server::Transport;

/// The client's end of an in-memory stream: what the client sent that the
/// connection has not read yet, and every write the connection made. Tests
/// of a [`Protocol`](crate::server::Protocol), benches and fuzz targets run
/// a [`Connection`](crate::server::Connection) on it with a simulated clock.
///
/// ```
/// use std::task::{Context, Waker};
/// use std::time::Instant;
/// use kids_core::server::{ConnConfig, Connection, MemoryStream};
/// use kids_core::{RequestDecoder, Router, RouterConfig, Session};
///
/// let now = Instant::now();
/// let router = Router::new(RouterConfig::default(), now);
/// let mut conn = Connection::new(
///     Session::new(&router),
///     RequestDecoder::default(),
///     ConnConfig::default(),
///     None,
///     now,
/// );
/// let mut stream = MemoryStream::default();
/// stream.send(b"PING\r\n");
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(conn.poll(&mut cx, &mut stream, now).is_pending());
/// assert_eq!(stream.take_output(), b"+PONG\r\n");
/// ```
#[derive(Debug, Default)]
pub struct MemoryStream {
    /// Bytes the client sent that the connection has not read.
    pub input: BytesMut,
    /// The client closed its side: once `input` is read, reads end the stream.
    pub eof: bool,
    /// The client reads nothing: writes stay pending.
    pub blocked: bool,
    /// Everything the connection wrote, in order.
    pub output: Vec<u8>,
    /// The length of each write the connection made.
    pub writes: Vec<usize>,
}

impl MemoryStream {
    /// A stream whose client reads nothing (writes stay pending) until
    /// `blocked` is cleared.
    pub fn blocked() -> Self {
        Self {
            blocked: true,
            ..Self::default()
        }
    }

    /// The client sends `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Takes what the connection wrote so far, and forgets the writes' lengths.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.writes.clear();
        std::mem::take(&mut self.output)
    }
}

impl Transport for MemoryStream {
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        if self.input.is_empty() {
            return if self.eof {
                Poll::Ready(Ok(0))
            } else {
                Poll::Pending
            };
        }
        // As a socket: at most the buffer's spare room per read.
        let n = self.input.len().min(buf.capacity() - buf.len()).max(1);
        buf.extend_from_slice(&self.input.split_to(n));
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.blocked {
            return Poll::Pending;
        }
        self.output.extend_from_slice(buf);
        self.writes.push(buf.len());
        Poll::Ready(Ok(buf.len()))
    }
}
