//! Criterion benchmarks of stats-core on in-memory input: parsing statsd
//! lines, and ingesting them into the aggregator (parse, sanitise, fold),
//! for counters over a few keys and over many, timers and sets; and a flush.
//!
//! Run: `cargo bench -p benches --bench stats`. CI runs each once with
//! `cargo test -p benches --benches`. The bar is ingest of counter
//! lines at 10 million lines/s on one core: `ingest/counters_100_keys`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stats_core::{Aggregator, Config, Parser};

/// Datagrams of about 1400 bytes (as clients batch them), `lines` lines in all.
fn packets(lines: usize, line: impl Fn(usize) -> String) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for i in 0..lines {
        let l = line(i);
        let last = out.last_mut().expect("one packet");
        if last.len() + l.len() + 1 > 1400 {
            out.push(Vec::new());
        }
        let last = out.last_mut().expect("one packet");
        last.extend_from_slice(l.as_bytes());
        last.push(b'\n');
    }
    out
}

const LINES: usize = 100_000;

fn parse(c: &mut Criterion) {
    let counters = packets(LINES, |i| format!("app.web{}.requests:1|c", i % 100));
    let timers = packets(LINES, |i| format!("app.db.query_time:{}|ms|@0.5", i % 997));
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(LINES as u64));
    let parser = Parser::default();
    for (name, input) in [("counters", &counters), ("timers_with_rate", &timers)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for p in input {
                    for line in parser.lines(p).flatten() {
                        n += line.value_count();
                    }
                }
                assert_eq!(n, LINES);
                black_box(n)
            })
        });
    }
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let shapes: [(&str, Vec<Vec<u8>>); 4] = [
        (
            "counters_100_keys",
            packets(LINES, |i| format!("app.web{}.requests:1|c", i % 100)),
        ),
        (
            "counters_10k_keys",
            packets(LINES, |i| format!("app.user{}.clicks:1|c", i % 10_000)),
        ),
        (
            "timers_100_keys",
            packets(LINES, |i| {
                format!("app.api{}.latency:{}|ms", i % 100, i % 997)
            }),
        ),
        (
            "sets_10_keys",
            packets(LINES, |i| {
                format!("app.page{}.visitors:user{}|s", i % 10, i % 5000)
            }),
        ),
    ];
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(LINES as u64));
    for (name, input) in &shapes {
        let mut agg = Aggregator::new(Config::etsy()).expect("config");
        // Checked before timing, so that a filter skipping the bench skips nothing else.
        for p in input {
            agg.ingest(p);
        }
        assert_eq!(agg.totals().bad_total(), 0);
        assert_eq!(agg.totals().lines, LINES as u64);
        g.bench_function(*name, |b| {
            b.iter(|| {
                for p in input {
                    agg.ingest(p);
                }
            })
        });
    }
    g.finish();

    // A flush of 10k counter keys and 100 timer keys, with its plaintext rendering.
    let mut g = c.benchmark_group("flush");
    let counters = &shapes[1].1;
    let timers = &shapes[2].1;
    g.bench_function("10k_counters_100_timers_plaintext", |b| {
        // The ingest is setup, outside the timing: only the flush and its
        // rendering are measured.
        b.iter_batched_ref(
            || {
                let mut agg = Aggregator::new(Config::etsy()).expect("config");
                for p in counters.iter().chain(timers) {
                    agg.ingest(p);
                }
                agg
            },
            |agg| {
                let flush = agg.flush(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
                black_box(flush.plaintext().len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parse, ingest);
criterion_main!(benches);
