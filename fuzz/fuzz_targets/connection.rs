//! Fuzz a kids connection on the server toolkit: arbitrary client bytes fed
//! in chunks (the first byte picks their size) through `Connection::poll`
//! with a `Session` (small decoder and router bounds, a small input bound),
//! every reply drained; nothing may panic or hang.
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
    // Small bounds, so that every one is reached, and a hostile input
    // (patterns and channels at their length bounds, a publish matching
    // until its step budget runs out) costs microseconds, not milliseconds.
    let config = RouterConfig::default()
        .max_pattern_len(48)
        .max_channel_len(256)
        .max_patterns_per_client(32)
        .slice_steps(4096)
        .max_tracked_topics(16);
    let router = Router::new(config, now);
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
