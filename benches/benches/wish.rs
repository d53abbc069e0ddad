//! Criterion benchmarks of wish-core: the frame codec (a calc request frame,
//! a 4 KiB response plain and lz4-compressed) and in-memory round trips of
//! the generated `AdvancedClient` through `LocalChannel`: a handler call and a
//! server cache hit (`local_roundtrip`), and a client cache hit through
//! `CachingChannel` (`client_cache/hit`); and
//! the cache layer's lookup alone, hitting, for `Multiply` (`(cache)` and
//! `(timestamped)`), which both cache hits pay.
//!
//! Two groups pair a cache hit with a call that reaches the handler, the
//! same `Multiply(1, 2)` on the same stack, the handler call made with
//! `CallOptions::no_cache`:
//! - `server_handle/{cache_hit,handler}`: `Server::handle` alone, a decoded
//!   request frame in, the response frame out (no codec, no channel);
//! - `client_cache/{hit,handler}`: the generated client over a
//!   `CachingChannel` over a `LocalChannel`; a hit makes no frame at all,
//!   the handler call goes through the codec and the server both ways.
//!
//! Run: `cargo bench -p benches --bench wish` (under a minute). CI runs each
//! once with `cargo test -p benches --benches`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use examples::calc::{ADVANCED_SERVICE, AdvancedClient, CalcRequest};
use futures::executor::block_on;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};
use wish_core::{
    Body, CacheLayer, CachingChannel, CallOptions, Channel, Clock, Frame, FrameCodec, LocalChannel,
    Lookup, Reply, RequestFrame, ServerConfig, Status, request_frame,
};

/// The request every benchmark sends: `Multiply(1, 2)` or `Divide(1, 2)`.
const REQUEST: CalcRequest = CalcRequest { a: 1, b: 2 };
/// Size of the large response payload.
const LARGE: usize = 4096;

/// A 4 KiB payload that compresses as structured data does: repeated field
/// names with varying numbers (lz4 halves it: 2,065 bytes on the wire).
fn large_payload() -> Bytes {
    let mut text = String::with_capacity(LARGE + 64);
    let mut i = 0u32;
    while text.len() < LARGE {
        text.push_str(&format!(
            "{{\"id\":{i},\"price\":{},\"qty\":{}}}\n",
            i.wrapping_mul(7919) % 100_000,
            i % 97
        ));
        i += 1;
    }
    text.truncate(LARGE);
    Bytes::from(text)
}

/// The frames the codec benchmarks encode and decode, by name.
fn frames() -> Vec<(&'static str, Frame, Throughput)> {
    let multiply = &ADVANCED_SERVICE.methods[0];
    let request = request_frame(
        1,
        multiply,
        Bytes::from(REQUEST.encode_to_vec()),
        CallOptions::new(),
    );
    let response = |compress| {
        let mut f = Frame::response(1, large_payload());
        if let wish_core::Body::Response(r) = &mut f.body {
            r.compress = compress;
            r.computed_at = Some(1_700_000_000_000);
        }
        f
    };
    vec![
        ("request_calc", request, Throughput::Elements(1)),
        (
            "response_4KiB_plain",
            response(false),
            Throughput::Bytes(LARGE as u64),
        ),
        (
            "response_4KiB_lz4",
            response(true),
            Throughput::Bytes(LARGE as u64),
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    for (name, frame, throughput) in frames() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::with_capacity(2 * LARGE);
        g.throughput(throughput);
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                codec.encode(frame.clone(), &mut buf).expect("encode");
                black_box(buf.len())
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_decode");
    for (name, frame, throughput) in frames() {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        codec.encode(frame.clone(), &mut wire).expect("encode");
        let wire = wire.freeze();
        // The benchmark decodes what it encodes, and the lz4 one compresses.
        let decoded = codec
            .decode(&mut BytesMut::from(&wire[..]))
            .expect("decode")
            .expect("a whole frame");
        // `compress` asks to compress on encode and tells whether it was on decode.
        let plain = |mut f: Frame| {
            match &mut f.body {
                Body::Request(r) => r.compress = false,
                Body::Response(r) => r.compress = false,
                Body::Error(_) | Body::Cancel => {}
            }
            f
        };
        assert_eq!(plain(decoded), plain(frame.clone()));
        if name.ends_with("lz4") {
            assert!(
                wire.len() < LARGE,
                "{name}: {} bytes on the wire",
                wire.len()
            );
        }
        g.throughput(throughput);
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |src| black_box(codec.decode(src).expect("decode")),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Times `iters` calls made one after another in one `block_on`; `call`
/// gets the call's number (the server benchmark's request id).
fn time_loop<F, Fut>(iters: u64, mut call: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: Future,
{
    block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            black_box(call(i).await);
        }
        start.elapsed()
    })
}

/// Times `iters` client calls made one after another, each of which must succeed.
fn time_calls<F, Fut>(iters: u64, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Reply<examples::calc::CalcResponse>, Status>>,
{
    time_loop(iters, |_| {
        let reply = call();
        async { reply.await.expect("call") }
    })
}

/// Calls `Multiply(1, 2)` once through `client`; whether the answer came from a cache.
fn from_cache<C: Channel>(client: &AdvancedClient<C>) -> bool {
    block_on(client.multiply_with(REQUEST, CallOptions::new()))
        .expect("multiply")
        .from_cache
}

fn roundtrip(c: &mut Criterion) {
    let clock: Clock = Arc::new(SystemTime::now);
    let server = examples::calc::server(ServerConfig::default()).expect("calc server");
    let client = AdvancedClient::new(LocalChannel::new(server, clock));

    // What each benchmark measures: a handler call and a server cache hit
    // (the client cache hit is `client_cache/hit`).
    let no_cache = CallOptions::new().no_cache();
    let reply = block_on(client.multiply_with(REQUEST, no_cache)).expect("multiply");
    assert!(!reply.from_cache);
    from_cache(&client);
    assert!(from_cache(&client), "the server answers from its cache");

    let mut g = c.benchmark_group("local_roundtrip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("multiply_no_cache", |b| {
        b.iter_custom(|iters| time_calls(iters, || client.multiply_with(REQUEST, no_cache)))
    });
    g.bench_function("divide", |b| {
        b.iter_custom(|iters| time_calls(iters, || client.divide_with(REQUEST, CallOptions::new())))
    });
    g.bench_function("multiply_server_cache_hit", |b| {
        b.iter_custom(|iters| {
            time_calls(iters, || client.multiply_with(REQUEST, CallOptions::new()))
        })
    });
    g.finish();
}

/// `Server::handle` of a decoded `Multiply(1, 2)` request frame: answered
/// from the server's cache, or by the handler (`no_cache`).
fn server_handle(c: &mut Criterion) {
    let multiply = &ADVANCED_SERVICE.methods[0];
    let server = examples::calc::server(ServerConfig::default()).expect("calc server");
    // A request frame as the codec hands it to the server: its payload
    // shares the read buffer.
    let decoded = |options| {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        let payload = Bytes::from(REQUEST.encode_to_vec());
        let frame = request_frame(1, multiply, payload, options);
        codec.encode(frame, &mut wire).expect("encode");
        match codec.decode(&mut wire).expect("decode").map(|f| f.body) {
            Some(Body::Request(request)) => request,
            other => panic!("decoded {other:?}"),
        }
    };
    let (cached, uncached) = (
        decoded(CallOptions::new()),
        decoded(CallOptions::new().no_cache()),
    );
    let now = SystemTime::now();
    let answer =
        |request: &RequestFrame| match block_on(server.handle(1, request.clone(), now)).body {
            Body::Response(r) => r.from_cache,
            other => panic!("answered {other:?}"),
        };
    assert!(!answer(&cached), "the first call fills the cache");
    assert!(answer(&cached), "then the server answers from it");
    assert!(!answer(&uncached), "no_cache reaches the handler");
    let time = |request: &RequestFrame, iters: u64| {
        time_loop(iters, |id| server.handle(id, request.clone(), now))
    };
    let mut g = c.benchmark_group("server_handle");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cache_hit", |b| b.iter_custom(|iters| time(&cached, iters)));
    g.bench_function("handler", |b| b.iter_custom(|iters| time(&uncached, iters)));
    g.finish();
}

/// The generated client over a `CachingChannel` over a `LocalChannel`:
/// `Multiply(1, 2)` answered from the client's cache, or by the handler
/// (`no_cache`, through the codec and the server both ways).
fn client_cache(c: &mut Criterion) {
    let clock: Clock = Arc::new(SystemTime::now);
    let server = examples::calc::server(ServerConfig::default()).expect("calc server");
    let local = LocalChannel::new(server.clone(), clock.clone());
    let client = AdvancedClient::new(CachingChannel::new(local, CacheLayer::default(), clock));
    let no_cache = CallOptions::new().no_cache();
    let stats = server.stats();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    assert!(!from_cache(&client), "the first call fills the cache");
    let hits = load(&stats.cache_hits);
    assert!(from_cache(&client), "then the client answers from it");
    assert_eq!(
        load(&stats.cache_hits),
        hits,
        "a client cache hit does not reach the server"
    );
    let handled = || load(&stats.handled);
    let before = handled();
    let reply = block_on(client.multiply_with(REQUEST, no_cache)).expect("multiply");
    assert!(
        !reply.from_cache && handled() == before + 1,
        "no_cache reaches the handler"
    );

    let mut g = c.benchmark_group("client_cache");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            time_calls(iters, || client.multiply_with(REQUEST, CallOptions::new()))
        })
    });
    g.bench_function("handler", |b| {
        b.iter_custom(|iters| time_calls(iters, || client.multiply_with(REQUEST, no_cache)))
    });
    g.finish();
}

/// `CacheLayer::lookup` of a `Multiply` request whose answer is cached: the
/// canonical key, the cache store, and the timestamp check of `a` and `b`.
fn lookup(c: &mut Criterion) {
    let multiply = &ADVANCED_SERVICE.methods[0];
    let layer = CacheLayer::default();
    let request = Bytes::from(REQUEST.encode_to_vec());
    let now = SystemTime::now();
    let Lookup::Miss(pending) = block_on(layer.lookup(multiply, &request, now)) else {
        panic!("an empty cache misses");
    };
    block_on(layer.store(pending, Bytes::from_static(b"\x08\x02"), None));
    let later = now + Duration::from_secs(1);
    assert!(matches!(
        block_on(layer.lookup(multiply, &request, later)),
        Lookup::Hit(_)
    ));
    let mut g = c.benchmark_group("cache_layer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_hit_timestamped", |b| {
        b.iter_custom(|iters| time_loop(iters, |_| layer.lookup(multiply, &request, later)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = encode, decode, roundtrip, server_handle, client_cache, lookup
}
criterion_main!(benches);
