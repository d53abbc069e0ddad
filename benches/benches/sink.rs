//! Criterion benchmarks of sink-core's broker on a temporary directory:
//! appends (publish then commit, in batches of 1, 64 and 1024, without
//! fsync; and one batch size with an fsync per commit, to show its cost),
//! the offset index (seek on a log of 1M messages over several segments),
//! and recovery (opening a 64 MiB log).
//!
//! Run: `cargo bench -p benches --bench sink`. CI runs each once with
//! `cargo test -p benches --benches`; there (criterion's test mode) the logs
//! built for seek and recovery are 16 times smaller, so setup stays short in
//! a debug build.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sink_core::{Broker, BrokerConfig, FsyncPolicy, Seek};

const TOPIC: &[u8] = b"bench";
const PAYLOAD: [u8; 100] = [b'x'; 100];
/// Wall time the brokers' clocks start at (ms since the Unix epoch).
const WALL_MS: u64 = 1_700_000_000_000;

/// True under `cargo bench` without `--test`: full-size logs. Otherwise
/// (criterion runs each bench once) logs are 16 times smaller.
fn full_size() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn config(fsync: FsyncPolicy, segment_bytes: u64) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.fsync = fsync;
    config.segment_bytes = segment_bytes;
    config
}

fn open(dir: &Path, config: BrokerConfig) -> Broker {
    Broker::open(dir, config, Instant::now(), WALL_MS)
        .expect("open the broker")
        .0
}

/// Publishes `n` messages of [`PAYLOAD`], committing every 1024, after
/// creating a session that needs them all: without one, each new segment
/// releases the ones before it (retention keeps what sessions need).
fn fill(broker: &Broker, n: u64) {
    let now = Instant::now();
    broker
        .create_session(b"keep-all", &[b"*"], now)
        .expect("create a session");
    for i in 0..n {
        broker.publish(TOPIC, &PAYLOAD, now).expect("publish");
        if i % 1024 == 1023 {
            broker.commit(now).expect("commit");
        }
    }
    broker.commit(now).expect("commit");
}

/// `Broker::publish` of `batch` 100-byte messages, then one `Broker::commit`.
fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let cases = [
        (FsyncPolicy::Never, 1u64),
        (FsyncPolicy::Never, 64),
        (FsyncPolicy::Never, 1024),
    ];
    for (fsync, batch) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        // No session: each new segment releases the ones before it, so
        // the log stays small however long this runs.
        let broker = open(dir.path(), config(fsync, 64 << 20));
        let now = Instant::now();
        g.throughput(Throughput::Elements(batch));
        g.bench_function(BenchmarkId::new("never", format!("batch{batch}")), |b| {
            b.iter(|| {
                for _ in 0..batch {
                    black_box(broker.publish(TOPIC, &PAYLOAD, now).expect("publish"));
                }
                broker.commit(now).expect("commit")
            })
        });
        assert!(broker.last_offset() > 0);
    }
    g.finish();

    // One fsync per commit: a few ms each on most disks, so few samples.
    let mut g = c.benchmark_group("append_fsync");
    g.sample_size(10);
    let batch = 64u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = open(dir.path(), config(FsyncPolicy::Always, 64 << 20));
    let now = Instant::now();
    g.throughput(Throughput::Elements(batch));
    g.bench_function(BenchmarkId::new("always", format!("batch{batch}")), |b| {
        b.iter(|| {
            for _ in 0..batch {
                black_box(broker.publish(TOPIC, &PAYLOAD, now).expect("publish"));
            }
            let done = broker.commit(now).expect("commit");
            assert!(done.synced);
            done
        })
    });
    g.finish();
}

/// `Broker::seek` of spread offsets on a log of 1M messages in 8 MiB segments.
fn seek(c: &mut Criterion) {
    let n: u64 = if full_size() { 1 << 20 } else { 1 << 16 };
    let segment_bytes = if full_size() { 8 << 20 } else { 512 << 10 };
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = open(dir.path(), config(FsyncPolicy::Never, segment_bytes));
    fill(&broker, n);
    let segments = segment_files(dir.path()).len();
    assert!(segments > 4, "{segments} segments");
    let mut g = c.benchmark_group("seek");
    const LOOKUPS: u64 = 1024;
    g.throughput(Throughput::Elements(LOOKUPS));
    g.bench_function(
        BenchmarkId::new(format!("{n}_messages"), format!("{segments}_segments")),
        |b| {
            // A fixed walk over every offset (a full-period LCG mod 2^k).
            let mut x = 1u64;
            b.iter(|| {
                let mut found = 0;
                for _ in 0..LOOKUPS {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) & (n - 1);
                    if let Seek::At(p) = broker.seek(x + 1) {
                        found += p.offset;
                    }
                }
                found
            })
        },
    );
    g.finish();
    assert!(matches!(broker.seek(1), Seek::At(_)));
}

/// `Broker::open` of a log of 64 MiB of 100-byte messages: recovery reads
/// it all, checks every record and rebuilds the offset index.
fn recovery(c: &mut Criterion) {
    let bytes: u64 = if full_size() { 64 << 20 } else { 4 << 20 };
    let dir = tempfile::tempdir().expect("temp dir");
    let written = {
        let broker = open(dir.path(), config(FsyncPolicy::Never, 64 << 20));
        // ~136 bytes a record (header, kind, offset, time, topic, payload).
        fill(&broker, bytes / 136);
        broker.sync(Instant::now()).expect("sync");
        broker.last_offset()
    };
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(on_disk));
    g.bench_function(format!("open_{}MiB", on_disk >> 20), |b| {
        // Dropping the broker (its index) is not part of opening it.
        b.iter_with_large_drop(|| {
            let (broker, recovered) = Broker::open(
                dir.path(),
                config(FsyncPolicy::Never, 64 << 20),
                Instant::now(),
                WALL_MS,
            )
            .expect("open");
            assert_eq!(recovered.messages, written);
            broker
        })
    });
    g.finish();
}

/// The log's segment files, in order.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read the log dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = append, seek, recovery
}
criterion_main!(benches);
