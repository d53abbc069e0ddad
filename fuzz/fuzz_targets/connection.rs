//! Fuzz a kids connection on the server toolkit: arbitrary client bytes fed
//! in chunks (the first byte picks their size) through `Connection::poll`
//! with a `Session` (small decoder bounds, a small input bound), every
//! reply drained; nothing may panic or hang.
#![no_main]

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::BytesMut;
use kids_core::server::{ConnConfig, Connection, Step, Transport};
use kids_core::{Limits, RequestDecoder, Router, RouterConfig, Session};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Pipe {
    input: BytesMut,
    written: usize,
}

impl Transport for Pipe {
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
        if self.input.is_empty() {
            return Poll::Pending;
        }
        let n = self.input.len();
        buf.extend_from_slice(&self.input.split());
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
}

const MAX_INPUT: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(k % 64) + 1;
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let limits = Limits::default()
        .max_bulk(1024)
        .max_inline(256)
        .max_multibulk(64)
        .max_query_buffer(4096);
    let mut conn = Connection::new(
        Session::new(&router),
        RequestDecoder::new(limits),
        ConnConfig::default().max_input(MAX_INPUT),
        None,
        now,
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut pipe = Pipe::default();
    for part in rest.chunks(chunk) {
        pipe.input.extend_from_slice(part);
        loop {
            match conn.poll(&mut cx, &mut pipe, now) {
                Poll::Pending => break,
                Poll::Ready(Ok(Step::Yield)) => {}
                Poll::Ready(_) => return,
            }
        }
    }
});
