//! Fuzz sink's commands through a real connection and broker: each input is
//! a script of commands (`0x01` between commands, `0x00` between arguments,
//! the first byte of a command picking its name from sink's table), run
//! with commits and a moving clock between them; nothing may panic or hang,
//! and the streams stay within their memory bound.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kids_core::server::{ConnConfig, Connection, MemoryStream, Step};
use kids_core::{Frame, Limits, Proto, RequestDecoder};
use libfuzzer_sys::fuzz_target;
use sink_core::stream::StreamsConfig;
use sink_core::{Broker, BrokerConfig, FsyncPolicy, Retention, SinkServer};

const NAMES: &[&str] = &[
    "PUBLISH", "LOG", "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "SESSION", "INFO", "XADD",
    "XLEN", "XRANGE", "XREVRANGE", "XREAD", "XGROUP", "XREADGROUP", "XACK", "XPENDING",
    "XCLAIM", "XAUTOCLAIM", "XINFO", "XDEL", "XTRIM", "HELLO", "PING", "RESET", "COMMAND",
];

const STREAM_BYTES: u64 = 64 << 10;

struct Fixture {
    broker: Broker,
    server: Arc<SinkServer>,
    start: Instant,
    /// Last: removed once the broker is gone.
    _dir: tempfile::TempDir,
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let config = BrokerConfig::default()
        .fsync(FsyncPolicy::Never)
        .segment_bytes(256 << 10)
        // Small bounds: the broker lives across inputs, and what it
        // holds is what every command walks; reached often, they keep
        // it small (and their own code busy).
        .retention(Retention {
            max_bytes: Some(1 << 20),
            max_age: None,
        })
        .streams(StreamsConfig::default().max_bytes(STREAM_BYTES));
    let (broker, _) = Broker::open(dir.path(), config, start, 1_700_000_000_000).expect("open");
    let server = SinkServer::new(broker.clone());
    Fixture { broker, server, start, _dir: dir }
}

/// The broker inputs share; a fresh one once its streams come near their
/// bound (stream keys stay and count, so inputs naming new ones would
/// otherwise fill it for good, and refuse every XADD after).
fn fixture() -> std::sync::MutexGuard<'static, Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    let mut f = F.get_or_init(|| Mutex::new(open())).lock().expect("fixture");
    if f.broker.info().stream_bytes > STREAM_BYTES - STREAM_BYTES / 8 {
        *f = open();
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut now = f.start;
    let limits = Limits::default().max_bulk(4096).max_multibulk(64);
    let mut conn = Connection::new(
        f.server.connect(now),
        RequestDecoder::new(limits),
        ConnConfig::default().max_input(1 << 16),
        None,
        now,
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut pipe = MemoryStream::default();
    'script: for command in data.split(|&b| b == 1).take(32) {
        let Some((&pick, rest)) = command.split_first() else {
            continue;
        };
        let mut args = vec![Bytes::from_static(NAMES[usize::from(pick) % NAMES.len()].as_bytes())];
        args.extend(rest.split(|&b| b == 0).take(16).map(Bytes::copy_from_slice));
        let mut buf = BytesMut::new();
        Frame::command(args).encode(Proto::Resp2, &mut buf);
        pipe.send(&buf);
        now += Duration::from_millis(u64::from(pick) * 7);
        for _ in 0..4 {
            match conn.poll(&mut cx, &mut pipe, now) {
                Poll::Pending => {}
                Poll::Ready(Ok(Step::Yield)) => continue,
                // The connection closed: the bound is still checked.
                Poll::Ready(_) => break 'script,
            }
            f.broker.commit(now).expect("commit");
        }
        pipe.output.clear();
    }
    let _ = f.broker.tick(now);
    let held = f.broker.info().stream_bytes;
    assert!(held <= STREAM_BYTES, "streams hold {held} bytes, over the bound");
});
