//! Criterion benchmarks of miller-core's beanstalk engine: one job's
//! put + reserve + delete cycle, in memory (the engine alone, its changes
//! not recorded) and through the durable store (changes staged as journal
//! records and written by a commit per cycle, fsync never, on a temporary
//! directory; compaction runs as it would when serving).
//!
//! Run: `cargo bench -p benches --bench miller`. CI runs each once with
//! `cargo test -p benches --benches`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use miller_core::engine::{ClientId, Engine, EngineConfig, Handled};
use miller_core::proto::{Request, Response};
use miller_core::store::{Store, StoreConfig};
use sink_core::FsyncPolicy;

const BODY: &[u8] = &[b'x'; 100];

fn put() -> Request {
    Request::Put {
        priority: 0,
        delay: 0,
        ttr: 60,
        body: Bytes::from_static(BODY),
    }
}

/// One cycle on `handle`; panics on a reply that is not the cycle's.
fn cycle(mut handle: impl FnMut(Request) -> Handled) {
    let Handled::Reply(Response::Inserted(id)) = handle(put()) else {
        panic!("put refused");
    };
    let Handled::Reply(Response::Reserved { .. }) = handle(Request::Reserve) else {
        panic!("reserve did not answer at once");
    };
    let Handled::Reply(Response::Deleted) = handle(Request::Delete(id)) else {
        panic!("delete refused");
    };
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("miller");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let mut engine = Engine::new(EngineConfig::default().record_changes(false));
    let client: ClientId = engine.connect(now);
    group.bench_function("put_reserve_delete/memory", |b| {
        b.iter(|| cycle(|r| black_box(engine.handle(client, r, now))));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(
        dir.path(),
        StoreConfig::default().fsync(FsyncPolicy::Never),
        Engine::new(EngineConfig::default()),
        now,
        SystemTime::now(),
    )
    .expect("open the store");
    let client = store.connect(now);
    group.bench_function("put_reserve_delete/journal_fsync_never", |b| {
        b.iter(|| {
            cycle(|r| black_box(store.handle(client, r, now).0));
            store.commit(now).expect("commit");
        });
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
