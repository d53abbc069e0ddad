//! Fuzz a kids connection on the server toolkit: arbitrary client bytes fed
//! in chunks (the first byte picks their size) through `Connection::poll`
//! with a `Session` (small decoder bounds, a small input bound), every
//! reply drained; nothing may panic or hang.
#![no_main]

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use kids_core::server::{ConnConfig, Connection, MemoryStream, Step};
use kids_core::{Limits, RequestDecoder, Router, RouterConfig, Session};
use libfuzzer_sys::fuzz_target;

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
    let mut pipe = MemoryStream::default();
    for part in rest.chunks(chunk) {
        pipe.send(part);
        loop {
            match conn.poll(&mut cx, &mut pipe, now) {
                Poll::Pending => break,
                Poll::Ready(Ok(Step::Yield)) => {}
                Poll::Ready(_) => return,
            }
        }
        // Replies are drained, as a client that reads would.
        pipe.output.clear();
    }
});
