//! Criterion benchmarks of kids-core: decode, encode, route, and a publish
//! through whole connections on in-memory streams; the file store's appends
//! against a plain buffered write of the same bytes, on disk, in the same run.
//!
//! Run: `cargo bench -p benches --bench kids`. CI runs each once with
//! `cargo test -p benches --benches`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kids_core::{
    FileStore, FileStoreConfig, Frame, NLimit, NLimits, Proto, ReplyWriter, RequestDecoder, Router,
    RouterConfig, Session,
};
use tokio_util::codec::Decoder;

const PAYLOAD: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn decode(c: &mut Criterion) {
    let mut wire = BytesMut::new();
    for _ in 0..1000 {
        Frame::command([&b"PUBLISH"[..], b"bench", PAYLOAD]).encode(Proto::Resp2, &mut wire);
    }
    let inline: Vec<u8> = b"PUBLISH bench hello\r\n".repeat(1000);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("multibulk_publish_x1000", |b| {
        b.iter(|| {
            let mut dec = RequestDecoder::default();
            let mut buf = wire.clone();
            let mut n = 0;
            while let Ok(Some(req)) = dec.decode(&mut buf) {
                n += req.len();
            }
            black_box(n)
        })
    });
    g.bench_function("inline_publish_x1000", |b| {
        b.iter(|| {
            let mut dec = RequestDecoder::default();
            let mut buf = BytesMut::from(&inline[..]);
            let mut n = 0;
            while let Ok(Some(req)) = dec.decode(&mut buf) {
                n += req.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1000));
    for proto in [Proto::Resp2, Proto::Resp3] {
        g.bench_function(
            BenchmarkId::new("message_x1000", format!("{proto:?}")),
            |b| {
                let mut buf = BytesMut::with_capacity(128 * 1000);
                b.iter(|| {
                    buf.clear();
                    for _ in 0..1000 {
                        let mut w = ReplyWriter::new(&mut buf, proto);
                        w.push(3);
                        w.bulk(b"message");
                        w.bulk(b"bench");
                        w.bulk(PAYLOAD);
                    }
                    black_box(buf.len())
                })
            },
        );
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    let limits = NLimits {
        pubsub: NLimit::unlimited(),
        normal: NLimit::unlimited(),
    };
    for subscribers in [1usize, 32, 1000] {
        for patterns in [0usize, 100] {
            let now = Instant::now();
            let router = Router::new(RouterConfig::default().nlimits(limits), now);
            let mut subs: Vec<Session> = (0..subscribers)
                .map(|_| {
                    let mut s = Session::new(&router);
                    s.handle(vec!["SUBSCRIBE".into(), "bench".into()], now);
                    s
                })
                .collect();
            // Patterns that do not match "bench" but must each be tried.
            let mut holder = Session::new(&router);
            for p in 0..patterns {
                holder.handle(
                    vec!["PSUBSCRIBE".into(), format!("other.{p}.*").into()],
                    now,
                );
            }
            g.throughput(Throughput::Elements(subscribers as u64));
            g.bench_function(
                BenchmarkId::new(format!("subs{subscribers}"), format!("patterns{patterns}")),
                |b| {
                    b.iter_custom(|iters| {
                        let mut spent = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let batch = left.min(256);
                            let start = Instant::now();
                            for _ in 0..batch {
                                black_box(
                                    router
                                        .publish(
                                            "bench".into(),
                                            bytes::Bytes::from_static(PAYLOAD),
                                            now,
                                        )
                                        .ok(),
                                );
                            }
                            spent += start.elapsed();
                            // Draining is the writer's cost, not routing's: keep it out of the timing.
                            subs.iter_mut().for_each(|s| drop(s.take_output()));
                            left -= batch;
                        }
                        spent
                    })
                },
            );
        }
    }
    g.finish();
}

/// The file store against a plain buffered sequential write of the same bytes.
fn store(c: &mut Criterion) {
    const N: usize = 10_000;
    let line = [b'x'; 100];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Bytes((N * (line.len() + 1)) as u64));
    g.bench_function("plain_bufwriter_100B_x10000", |b| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("plain.log"))
            .expect("open");
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, file);
        b.iter(|| {
            for _ in 0..N {
                std::io::Write::write_all(&mut w, &line).expect("write");
                std::io::Write::write_all(&mut w, b"\n").expect("write");
            }
            std::io::Write::flush(&mut w).expect("flush");
        })
    });
    g.bench_function("filestore_append_100B_x10000", |b| {
        let mut store = FileStore::new(
            FileStoreConfig::new(format!("{}/[topic]", dir.path().display())).flush_secs(3600),
        );
        let now = std::time::SystemTime::now();
        b.iter(|| {
            for _ in 0..N {
                store.append(b"bench", &line, now).expect("append");
            }
            store.flush().expect("flush");
        })
    });
    g.finish();
}

/// One publish through the whole server path a socket would see, without
/// the socket: a publisher's connection reads `PUBLISH`, routes it to 1 or
/// 32 subscribers' outboxes and writes its reply; each subscriber's
/// connection writes the message out. The user-space cost per message of
/// the regime where publishers keep one command in flight.
fn connection(c: &mut Criterion) {
    use kids_core::server::{ConnConfig, Connection, MemoryStream};
    let mut g = c.benchmark_group("connection");
    let now = Instant::now();
    let publish = {
        let mut wire = BytesMut::new();
        Frame::command([&b"PUBLISH"[..], b"bench", PAYLOAD]).encode(Proto::Resp2, &mut wire);
        wire
    };
    for subs in [1usize, 32] {
        let router = Router::new(RouterConfig::default(), now);
        let conn = || {
            Connection::new(
                Session::new(&router),
                RequestDecoder::default(),
                ConnConfig::default().coalesce(false),
                None,
                now,
            )
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut subscribers: Vec<_> = (0..subs)
            .map(|_| {
                let mut s = conn();
                let mut pipe = MemoryStream::default();
                Frame::command([&b"SUBSCRIBE"[..], b"bench"]).encode(Proto::Resp2, &mut pipe.input);
                let _ = s.poll(&mut cx, &mut pipe, now);
                (s, pipe)
            })
            .collect();
        let mut publisher = conn();
        let mut ppipe = MemoryStream::default();
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(
            BenchmarkId::new("publish_n1", format!("{subs}_subscribers")),
            |b| {
                b.iter(|| {
                    ppipe.input.extend_from_slice(&publish);
                    let _ = publisher.poll(&mut cx, &mut ppipe, now);
                    ppipe.output.clear();
                    for (s, pipe) in &mut subscribers {
                        let _ = s.poll(&mut cx, pipe, now);
                        pipe.output.clear();
                    }
                })
            },
        );
        // Check the path did what it is timed for (also when a filter skipped the timing).
        ppipe.output.clear();
        for (_, pipe) in &mut subscribers {
            pipe.output.clear();
        }
        ppipe.input.extend_from_slice(&publish);
        let _ = publisher.poll(&mut cx, &mut ppipe, now);
        assert_eq!(ppipe.output, format!(":{subs}\r\n").as_bytes());
        let mut frame = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$64\r\n".to_vec();
        frame.extend_from_slice(PAYLOAD);
        frame.extend_from_slice(b"\r\n");
        for (s, pipe) in &mut subscribers {
            let _ = s.poll(&mut cx, pipe, now);
            assert_eq!(pipe.output, frame);
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = decode, encode, route, store, connection
}
criterion_main!(benches);
