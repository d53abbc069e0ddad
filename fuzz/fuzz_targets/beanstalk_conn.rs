//! Fuzz the served engine: any bytes from a client, fed through a real
//! connection and durable store (fsync never, in a temp dir) in pieces the
//! input picks, with commits and a moving clock between them; nothing may
//! panic or hang.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use kids_core::server::{ConnConfig, Connection, MemoryStream, Step};
use libfuzzer_sys::fuzz_target;
use miller_core::engine::{Engine, EngineConfig};
use miller_core::server::BeanstalkServer;
use miller_core::store::{Store, StoreConfig};
use sink_core::FsyncPolicy;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    server: Arc<BeanstalkServer>,
    start: Instant,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let engine = Engine::new(EngineConfig::default().max_job_size(1024));
        let config = StoreConfig::default().fsync(FsyncPolicy::Never).segment_bytes(1 << 20);
        let (store, _) = Store::open(dir.path(), config, engine, start, SystemTime::now()).expect("open");
        let server = BeanstalkServer::new(store.clone(), 1024);
        Fixture { _dir: dir, store, server, start }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut now = f.start;
    let (proto, codec) = f.server.connect(now);
    let mut conn = Connection::new(proto, codec, ConnConfig::default().max_input(1 << 16), None, now);
    let mut cx = Context::from_waker(Waker::noop());
    let mut pipe = MemoryStream::default();
    for piece in data.split(|&b| b == 0xff).take(64) {
        pipe.send(piece);
        now += Duration::from_millis(u64::from(piece.first().copied().unwrap_or(0)) * 11);
        for _ in 0..4 {
            match conn.poll(&mut cx, &mut pipe, now) {
                Poll::Pending => {}
                Poll::Ready(Ok(Step::Yield)) => continue,
                Poll::Ready(_) => return,
            }
            f.store.commit(now).expect("commit");
        }
        pipe.output.clear();
    }
    f.store.tick(now);
});
