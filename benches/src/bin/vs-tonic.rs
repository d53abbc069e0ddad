//! End-to-end comparison of wish with tonic, serving the same calc service.
//!
//! Run it: `cargo run --release -p benches --bin vs-tonic`.
//!
//! One process serves the calc service twice, each on a free loopback port:
//! with wish (`examples::calc::server` with the default `ServerConfig`, over
//! `wish_core::net::serve`) and with tonic 0.14 (the same package, messages
//! and services, generated from `benches/proto/calc_tonic.proto`, which
//! leaves out wish's method options; the same arithmetic). Both servers run
//! on one tokio runtime; the load runs on another, through the generated
//! clients (wish's `AdvancedClient<net::Client>`, tonic's
//! `AdvancedClient<Channel>`), alternating wish, tonic, wish, tonic… with
//! fresh connections each round. Each connection carries a fixed number of
//! calls in flight: as many tasks, each calling again as soon as its answer
//! comes. The load shapes:
//!
//! * `1x64 divide`: 1 connection with 64 calls in flight, calling `Divide`
//!   (no `(cache)`: every call runs the handler) with a and b varying per call;
//! * `8x8 divide`: 8 connections with 8 calls in flight each: the same 64
//!   calls in flight spread over connections, so the difference with `1x64`
//!   is what connections cost (fewer calls per read and write);
//! * `1x64 multiply`: 1 connection with 64 calls in flight, calling
//!   `Multiply(6, 7)` every time: wish answers all but the first call from
//!   its cache (`(cache)`, checked against `(timestamped)`), tonic runs the
//!   handler. Its summary is followed by wish's cache hits against its
//!   handler calls: the `1x64 multiply` rate over the `1x64 divide` rate;
//! * `1x1 divide` and `1x8 divide`: 1 connection with 1 or 8 calls in
//!   flight, where most callers live (latency more than throughput).
//!
//! Then the per-call cost of wish's client-side cache, on one task making
//! one call after another: the generated client over a `CachingChannel`
//! wrapping a TCP `net::Client`, calling `Multiply(6, 7)`, every call but
//! the first a client cache hit that makes no frame, against the same
//! client calling `Multiply(6, 7)` with `CallOptions::no_cache`, every call
//! a round trip over loopback that reaches the server's handler. Rounds
//! alternate hit, handler, hit, handler… (`VS_ROUNDS` of `VS_SECS` each).
//!
//! Then the server's own capacity, apart from the generated client: a raw
//! pipelined client on one connection writes 64 `Divide` frames back to back
//! in one write (the same bytes each time, as redis-benchmark repeats its
//! command), reads and checks the 64 answers, and again; alternating with
//! `redis-benchmark -P 64 -c 1 -t ping` against a real redis-server started
//! on a free port (its `PING_MBULK` figure). Both are needed: a missing
//! `redis-server` or `redis-benchmark` (Debian `redis-server`,
//! `redis-tools`) is an error.
//!
//! Last, what the server cache saves: a `bench.Work` service whose `(cache)`
//! handler computes for 50 µs without awaiting, called by 64 tasks on one
//! connection with the same request every time (cache hits after the first)
//! or a request of its own each time with `no_cache` (every call runs the
//! handler), alternating.
//!
//! A round counts the answers of `VS_SECS` seconds, after a 200 ms ramp; the
//! summary reports the median of the rounds per server and shape. Every
//! answer is checked: a wrong quotient or product is an error.
//!
//! Environment: `VS_SECS` (seconds per round, default 2), `VS_ROUNDS`
//! (rounds per server and shape, default 3), `VS_SERVER_THREADS` (worker
//! threads of the servers' runtime; default half the cores, at least 1),
//! `VS_CLIENT_THREADS` (worker threads of the load's runtime; default the
//! other cores, at least 1), `VS_PEERS` (`wish,tonic` by default; one
//! alone to profile it, the ratios then print as NaN). With the defaults it
//! runs for about two and a half minutes.
//!
//! The last lines of the output have a fixed form:
//!
//! ```text
//! 1x64 divide   wish … calls/s, tonic … calls/s, ratio …x
//! 8x8 divide    wish … calls/s, tonic … calls/s, ratio …x
//! 1x64 multiply wish … calls/s, tonic … calls/s, ratio …x (wish from cache)
//! 1x1 divide    wish … calls/s, tonic … calls/s, ratio …x
//! 1x8 divide    wish … calls/s, tonic … calls/s, ratio …x
//! wish cache hit vs handler call (1x64): multiply … calls/s, divide … calls/s, ratio …x
//! wish client cache hit vs handler call (1x1): hit … calls/s, handler … calls/s, ratio …x
//! raw pipelined (1 connection, -P 64): wish … calls/s, redis-benchmark PING … requests/s, ratio …x
//! server cache hit vs 50us handler (1x64): hit … calls/s, handler … calls/s, ratio …x
//! ```
//!
//! where the shapes' ratios are wish divided by tonic, the raw line wish
//! divided by redis, and the cache lines hits over handler calls.
#![allow(clippy::print_stdout)]

use benches::{Context, Res, env_or, median, ratio};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use examples::calc;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tonic::{Request, Response};
use wish_core::{CacheLayer, CachingChannel, CallOptions, Clock, net};

/// tonic's calc service: messages, `simple_server`/`advanced_server` and
/// `simple_client`/`advanced_client`, generated by `build.rs`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod tonic_calc {
    tonic::include_proto!("calc");
}

/// Load before the counting starts: connections settle, tasks reach their loop.
const RAMP: Duration = Duration::from_millis(200);
/// Length of the warm-up round of each server, not counted.
const WARM_UP: Duration = Duration::from_millis(500);
/// The operands of every call in the cached shape.
const SAME: (i32, i32) = (6, 7);

/// A method the load calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `Divide` with operands that vary per call.
    Divide,
    /// `Multiply(6, 7)` every time.
    Multiply,
}

/// A load shape: connections, calls in flight on each, and the method.
#[derive(Debug)]
struct Shape {
    name: &'static str,
    conns: usize,
    in_flight: usize,
    op: Op,
    /// Said after the shape's summary line: what the two servers do differently.
    note: &'static str,
}

/// The load shapes, in the order they run and are summarised.
const SHAPES: [Shape; 5] = [
    Shape {
        name: "1x64 divide",
        conns: 1,
        in_flight: 64,
        op: Op::Divide,
        note: "",
    },
    Shape {
        name: "8x8 divide",
        conns: 8,
        in_flight: 8,
        op: Op::Divide,
        note: "",
    },
    Shape {
        name: "1x64 multiply",
        conns: 1,
        in_flight: 64,
        op: Op::Multiply,
        note: " (wish from cache)",
    },
    Shape {
        name: "1x1 divide",
        conns: 1,
        in_flight: 1,
        op: Op::Divide,
        note: "",
    },
    Shape {
        name: "1x8 divide",
        conns: 1,
        in_flight: 8,
        op: Op::Divide,
        note: "",
    },
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs-tonic: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings read from the environment.
struct Settings {
    secs: f64,
    rounds: usize,
    server_threads: usize,
    client_threads: usize,
    /// The servers measured (`VS_PEERS`).
    peers: Vec<Peer>,
}

impl Settings {
    fn from_env() -> Res<Settings> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let server_default = (cores / 2).max(1);
        let settings = Settings {
            secs: env_or("VS_SECS", 2.0)?,
            rounds: env_or("VS_ROUNDS", 3)?,
            server_threads: env_or("VS_SERVER_THREADS", server_default)?,
            client_threads: env_or("VS_CLIENT_THREADS", (cores - server_default).max(1))?,
            peers: peers_from_env()?,
        };
        if !(settings.secs > 0.0 && settings.secs.is_finite())
            || settings.rounds == 0
            || settings.server_threads == 0
            || settings.client_threads == 0
        {
            return Err(
                "VS_SECS must be > 0, VS_ROUNDS, VS_SERVER_THREADS and VS_CLIENT_THREADS >= 1"
                    .into(),
            );
        }
        Ok(settings)
    }
}

/// `VS_PEERS`: `wish,tonic` (the default), or one of them alone (to profile
/// one side; the ratios then print as NaN).
fn peers_from_env() -> Res<Vec<Peer>> {
    let list = std::env::var("VS_PEERS").unwrap_or_else(|_| "wish,tonic".into());
    list.split(',')
        .map(|name| match name.trim() {
            "wish" => Ok(Peer::Wish),
            "tonic" => Ok(Peer::Tonic),
            other => Err(format!(
                "VS_PEERS: unknown server {other:?} (wish or tonic)"
            )),
        })
        .collect()
}

fn runtime(name: &str, threads: usize) -> Res<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .ctx(|| format!("building the {name} runtime"))
}

fn run() -> Res<()> {
    let settings = Settings::from_env()?;
    let server_rt = runtime("servers", settings.server_threads)?;
    let client_rt = runtime("load", settings.client_threads)?;
    let servers = server_rt.block_on(Servers::start())?;
    println!(
        "wish on {}, tonic on {}; servers on {} worker thread(s), load on {}",
        servers.wish, servers.tonic, settings.server_threads, settings.client_threads
    );

    for &peer in &settings.peers {
        let rate = client_rt
            .block_on(round(peer, servers.addr(peer), &SHAPES[0], WARM_UP))
            .ctx(|| format!("{} warm-up", peer.name()))?;
        println!("warm-up {:<5} calls/s={rate:>9.0}", peer.name());
    }

    let secs = Duration::from_secs_f64(settings.secs);
    let mut results = Vec::new();
    for shape in &SHAPES {
        let (mut wish, mut tonic) = (Vec::new(), Vec::new());
        for r in 1..=settings.rounds {
            for &peer in &settings.peers {
                let before = servers.wish_counts();
                let rate = client_rt
                    .block_on(round(peer, servers.addr(peer), shape, secs))
                    .ctx(|| format!("{} round {r} shape {}", peer.name(), shape.name))?;
                let notes = match peer {
                    Peer::Wish => {
                        let (handled, hits) = servers.wish_counts();
                        format!(
                            "  (wish server: {} handler calls, {} cache hits)",
                            handled - before.0,
                            hits - before.1
                        )
                    }
                    Peer::Tonic => String::new(),
                };
                println!(
                    "round {r}/{} {:<13} {:<5} calls/s={rate:>9.0}{notes}",
                    settings.rounds,
                    shape.name,
                    peer.name()
                );
                match peer {
                    Peer::Wish => wish.push(rate),
                    Peer::Tonic => tonic.push(rate),
                }
            }
        }
        results.push((
            shape,
            median(wish.iter().copied()),
            median(tonic.iter().copied()),
        ));
    }

    let (hit_rates, handler_rates) = hit_and_handler_rounds(
        settings.rounds,
        "client cache",
        || servers.wish_counts(),
        |hit| client_rt.block_on(client_cache_round(servers.wish, hit, secs)),
    )?;

    // The server's own capacity: raw pipelined frames against redis-server's
    // PING under redis-benchmark, alternating.
    let redis = RedisPeer::start()?;
    let (mut raw_rates, mut redis_rates) = (Vec::new(), Vec::new());
    for r in 1..=settings.rounds {
        let raw = client_rt
            .block_on(raw_pipelined_round(servers.wish, RAW_DEPTH, secs))
            .ctx(|| format!("raw pipelined round {r}"))?;
        println!(
            "round {r}/{} raw pipelined -P {RAW_DEPTH} wish calls/s={raw:>9.0}",
            settings.rounds
        );
        let ping = redis.benchmark(RAW_DEPTH, settings.secs)?;
        println!(
            "round {r}/{} redis-benchmark -P {RAW_DEPTH} -c 1 PING_MBULK requests/s={ping:>9.0}",
            settings.rounds
        );
        raw_rates.push(raw);
        redis_rates.push(ping);
    }
    drop(redis);

    // What a server cache hit saves on a handler that computes for 50 us.
    let work = server_rt.block_on(WorkServer::start())?;
    let (work_hits, work_calls) = hit_and_handler_rounds(
        settings.rounds,
        "50us handler 1x64",
        || work.counts(),
        |hit| client_rt.block_on(work_round(work.addr, hit, secs)),
    )?;
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(1));

    println!();
    println!(
        "summary: median of {} round(s) of {}s per server and shape; ratio = wish/tonic",
        settings.rounds, settings.secs
    );
    for (shape, w, t) in &results {
        println!(
            "{:<13} wish {w:.0} calls/s, tonic {t:.0} calls/s, ratio {:.2}x{}",
            shape.name,
            ratio(*w, *t),
            shape.note
        );
    }
    let (cached, handled) = (results[2].1, results[0].1);
    println!(
        "wish cache hit vs handler call (1x64): multiply {cached:.0} calls/s, divide {handled:.0} calls/s, ratio {:.2}x",
        ratio(cached, handled)
    );
    let (hit, handler) = (median(hit_rates), median(handler_rates));
    println!(
        "wish client cache hit vs handler call (1x1): hit {hit:.0} calls/s, handler {handler:.0} calls/s, ratio {:.2}x",
        ratio(hit, handler)
    );
    let (raw, ping) = (median(raw_rates), median(redis_rates));
    println!(
        "raw pipelined (1 connection, -P {RAW_DEPTH}): wish {raw:.0} calls/s, redis-benchmark PING {ping:.0} requests/s, ratio {:.2}x",
        ratio(raw, ping)
    );
    let (hits, calls) = (median(work_hits), median(work_calls));
    println!(
        "server cache hit vs 50us handler (1x64): hit {hits:.0} calls/s, handler {calls:.0} calls/s, ratio {:.2}x",
        ratio(hits, calls)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The server's own capacity: raw pipelined frames, and redis-benchmark

/// Frames a raw pipelined round writes back to back, as `redis-benchmark -P`.
const RAW_DEPTH: usize = 64;

/// One connection, no generated client: `depth` `Divide` request frames
/// written back to back in one write (the same bytes every time, as
/// redis-benchmark repeats its command), then every answer read and
/// checked, and again; calls per second over `secs`, after the ramp.
async fn raw_pipelined_round(addr: SocketAddr, depth: usize, secs: Duration) -> Res<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::{Decoder, Encoder};
    use wish_core::{Body, FrameCodec, request_frame};

    let divide = &calc::ADVANCED_SERVICE.methods[1];
    let mut codec = FrameCodec::new();
    let mut batch = bytes::BytesMut::new();
    let mut expected = Vec::with_capacity(depth);
    for i in 0..depth {
        let (a, b) = (1_000 + i as i32 * 7, (i % 13) as i32 + 1);
        let payload = prost::Message::encode_to_vec(&calc::CalcRequest { a, b });
        let frame = request_frame(i as u64 + 1, divide, payload.into(), CallOptions::new());
        codec
            .encode(frame, &mut batch)
            .map_err(|e| format!("encoding a request: {e}"))?;
        expected.push(a / b);
    }
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .ctx(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).ctx(|| "nodelay".into())?;
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut answered = 0u64;
    let start = Instant::now();
    let mut counting: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        match counting {
            None if now - start >= RAMP => counting = Some((now, answered)),
            Some((from, _)) if now - from >= secs => break,
            _ => {}
        }
        stream
            .write_all(&batch)
            .await
            .ctx(|| "writing a batch".into())?;
        let mut got = 0;
        while got < depth {
            while let Some(frame) = codec
                .decode(&mut buf)
                .map_err(|e| format!("decoding an answer: {e}"))?
            {
                let i = usize::try_from(frame.id)
                    .unwrap_or(usize::MAX)
                    .wrapping_sub(1);
                let c = match (&frame.body, expected.get(i)) {
                    (Body::Response(r), Some(_)) => {
                        <calc::CalcResponse as prost::Message>::decode(r.payload.clone())
                            .map_err(|e| format!("answer {}: {e}", frame.id))?
                            .c
                    }
                    _ => return Err(format!("unexpected answer {frame:?}")),
                };
                if c != expected[i] {
                    return Err(format!("answer {} is {c}, not {}", frame.id, expected[i]));
                }
                got += 1;
            }
            if got < depth && stream.read_buf(&mut buf).await.ctx(|| "reading".into())? == 0 {
                return Err("the server closed the connection".into());
            }
        }
        answered += depth as u64;
    }
    let (from, at_start) = counting.ok_or("the round ended in its ramp")?;
    Ok((answered - at_start) as f64 / from.elapsed().as_secs_f64())
}

/// A real redis-server for `redis-benchmark` to PING.
struct RedisPeer {
    server: test_support::RedisServer,
    benchmark: std::path::PathBuf,
}

impl RedisPeer {
    /// Starts redis-server; an error when it or redis-benchmark is missing.
    fn start() -> Res<RedisPeer> {
        let missing = |bin: &str, package: &str| {
            format!("{bin} not found on PATH; install the Debian package `{package}`")
        };
        let benchmark = test_support::on_path("redis-benchmark")
            .ok_or_else(|| missing("redis-benchmark", "redis-tools"))?;
        if test_support::on_path("redis-server").is_none() {
            return Err(missing("redis-server", "redis-server"));
        }
        let server = test_support::RedisServer::start().ok_or("redis-server did not start")?;
        Ok(RedisPeer { server, benchmark })
    }

    /// `redis-benchmark -P depth -c 1 -t ping` for about `secs` seconds;
    /// its `PING_MBULK` (a RESP array, as clients send commands) requests/s.
    fn benchmark(&self, depth: usize, secs: f64) -> Res<f64> {
        // About 700 k PINGs a second here; at least 100 k so the figure settles.
        let n = ((secs * 700_000.0) as u64).max(100_000);
        let out = std::process::Command::new(&self.benchmark)
            .args(["-h", "127.0.0.1", "-p", &self.server.port.to_string()])
            .args(["-c", "1", "-P", &depth.to_string(), "-n", &n.to_string()])
            .args(["-t", "ping", "--csv"])
            .output()
            .ctx(|| "running redis-benchmark".into())?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("redis-benchmark failed: {}", out.status));
        }
        text.lines()
            .find_map(|line| {
                let mut cells = line.split(',').map(|c| c.trim_matches('"'));
                (cells.next() == Some("PING_MBULK"))
                    .then(|| cells.next()?.parse::<f64>().ok())
                    .flatten()
            })
            .ok_or_else(|| format!("no PING_MBULK line in redis-benchmark's output: {text}"))
    }
}

// ---------------------------------------------------------------------------
// A handler of 50 us, with and without the server cache

/// How long the `Work` handler computes for.
const WORK: Duration = Duration::from_micros(50);

/// `bench.Work.Run`: `(cache)` for an hour; its handler computes for
/// [`WORK`] (without awaiting) and answers the request's bytes.
static WORK_SERVICE: wish_core::ServiceDesc = wish_core::ServiceDesc::new(
    "bench.Work",
    &[wish_core::MethodDesc::new(
        "bench.Work.Run",
        wish_core::MethodOptions::new().cache(3600),
    )],
);

struct WorkService;

impl wish_core::Service for WorkService {
    fn descriptor(&self) -> &'static wish_core::ServiceDesc {
        &WORK_SERVICE
    }

    fn call(
        &self,
        _method: usize,
        _ctx: wish_core::CallContext,
        request: bytes::Bytes,
    ) -> wish_core::BoxFuture<'static, Result<bytes::Bytes, wish_core::Status>> {
        Box::pin(async move {
            let until = Instant::now() + WORK;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok(request)
        })
    }
}

/// The `Work` service served by wish (default `ServerConfig`: the cache on).
struct WorkServer {
    addr: SocketAddr,
    server: wish_core::Server,
}

impl WorkServer {
    async fn start() -> Res<WorkServer> {
        let server = wish_core::Server::new(wish_core::ServerConfig::default())
            .with_service(WorkService)
            .ctx(|| "the work server".into())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .ctx(|| "binding the work port".into())?;
        let addr = listener.local_addr().ctx(|| "the work port".into())?;
        let serving = server.clone();
        tokio::spawn(async move {
            if let Err(e) = net::serve(listener, serving, std::future::pending()).await {
                eprintln!("vs-tonic: the work server stopped: {e}");
            }
        });
        Ok(WorkServer { addr, server })
    }

    /// Handler calls and cache hits so far.
    fn counts(&self) -> (u64, u64) {
        let stats = self.server.stats();
        (
            stats.handled.load(Ordering::Relaxed),
            stats.cache_hits.load(Ordering::Relaxed),
        )
    }
}

/// 64 tasks on one connection calling `Work`: the same request every time,
/// answered from the server's cache (`hit`), or a request of its own each
/// time with `no_cache`, every call running the handler. Calls per second.
async fn work_round(addr: SocketAddr, hit: bool, secs: Duration) -> Res<f64> {
    let client = net::Client::new(net::Endpoint::Tcp(addr.to_string()));
    client
        .connect()
        .await
        .ctx(|| format!("connecting to {addr}"))?;
    let method = &WORK_SERVICE.methods[0];
    let options = if hit {
        CallOptions::new()
    } else {
        CallOptions::new().no_cache()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for t in 0..64u64 {
        let (client, stop, answered) = (client.clone(), stop.clone(), answered.clone());
        tasks.spawn(async move {
            let mut n = t * 1_000_003;
            while !stop.load(Ordering::Relaxed) {
                // A message the cache can key: `CalcRequest { a, b }`.
                let request = if hit { 0 } else { n };
                let (a, b) = ((request % 1_000_000_007) as i32, (request >> 30) as i32);
                let payload: bytes::Bytes =
                    prost::Message::encode_to_vec(&calc::CalcRequest { a, b }).into();
                let reply = wish_core::Channel::call(&client, method, payload.clone(), options)
                    .await
                    .map_err(|status| format!("Work({request}): {status}"))?;
                if reply.payload != payload {
                    return Err(format!("Work({request}) answered another request's bytes"));
                }
                answered.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<(), String>(())
        });
    }
    count_answers(tasks, &stop, &answered, secs, "a work task").await
}

/// `rounds` rounds of `run(true)` (cache hits) then `run(false)` (handler
/// calls), each printed with what the server counted (`counts`: handler
/// calls and cache hits); the rates of each.
fn hit_and_handler_rounds(
    rounds: usize,
    label: &str,
    counts: impl Fn() -> (u64, u64),
    mut run: impl FnMut(bool) -> Res<f64>,
) -> Res<(Vec<f64>, Vec<f64>)> {
    let (mut hits, mut calls) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        for hit in [true, false] {
            let before = counts();
            let rate = run(hit).map_err(|e| format!("{label} round {r}: {e}"))?;
            let (handled, cached) = counts();
            let name = if hit { "hit" } else { "handler" };
            println!(
                "round {r}/{rounds} {label} {name:<7} calls/s={rate:>9.0}  (server: {} handler calls, {} cache hits)",
                handled - before.0,
                cached - before.1
            );
            if hit { &mut hits } else { &mut calls }.push(rate);
        }
    }
    Ok((hits, calls))
}

/// One task calling `Multiply(6, 7)` again and again for `secs` through a
/// `CachingChannel` over a fresh TCP client: every call a client cache hit
/// (`hit`), or every call a round trip to the handler (`no_cache`). Calls per
/// second; every answer is checked, and where it came from.
async fn client_cache_round(addr: SocketAddr, hit: bool, secs: Duration) -> Res<f64> {
    let tcp = net::Client::new(net::Endpoint::Tcp(addr.to_string()));
    tcp.connect()
        .await
        .ctx(|| format!("connecting to {addr}"))?;
    let clock: Clock = Arc::new(std::time::SystemTime::now);
    let client = calc::AdvancedClient::new(CachingChannel::new(tcp, CacheLayer::default(), clock));
    let options = if hit {
        CallOptions::new()
    } else {
        CallOptions::new().no_cache()
    };
    let request = calc::CalcRequest {
        a: SAME.0,
        b: SAME.1,
    };
    let call = || async {
        let reply = client
            .multiply_with(request, options)
            .await
            .map_err(|status| format!("Multiply{SAME:?}: {status}"))?;
        match (reply.value.c, reply.from_cache) {
            (42, from_cache) if from_cache == hit => Ok(()),
            (c, from_cache) => Err(format!(
                "Multiply{SAME:?} answered {c}, from a cache: {from_cache}, not 42 from {}",
                if hit {
                    "the client's cache"
                } else {
                    "the handler"
                }
            )),
        }
    };
    // The first call fills the client's cache (and connects the client).
    client
        .multiply_with(request, options)
        .await
        .map_err(|status| format!("Multiply{SAME:?}: {status}"))?;
    let (start, mut calls) = (Instant::now(), 0u64);
    while start.elapsed() < secs {
        // Read the clock once per 64 calls: a hit costs little more than it.
        for _ in 0..64 {
            call().await?;
        }
        calls += 64;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------
// Servers

/// The two servers under test, on the servers' runtime.
struct Servers {
    wish: SocketAddr,
    tonic: SocketAddr,
    /// A clone of the wish server, for its counters.
    wish_server: wish_core::Server,
}

impl Servers {
    /// Binds both on free loopback ports and spawns them on the current runtime.
    async fn start() -> Res<Servers> {
        let wish_server =
            calc::server(wish_core::ServerConfig::default()).ctx(|| "the wish server".into())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .ctx(|| "binding the wish port".into())?;
        let wish = listener.local_addr().ctx(|| "the wish port".into())?;
        let server = wish_server.clone();
        tokio::spawn(async move {
            if let Err(e) = net::serve(listener, server, std::future::pending()).await {
                eprintln!("vs-tonic: the wish server stopped: {e}");
            }
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .ctx(|| "binding the tonic port".into())?;
        let tonic = listener.local_addr().ctx(|| "the tonic port".into())?;
        // Like wish's `serve`: no Nagle delay on accepted connections (tonic
        // applies its own `tcp_nodelay` only to listeners it binds itself).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = tonic::transport::Server::builder()
            .add_service(tonic_calc::simple_server::SimpleServer::new(TonicCalc))
            .add_service(tonic_calc::advanced_server::AdvancedServer::new(TonicCalc));
        tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, std::future::pending())
                .await
            {
                eprintln!("vs-tonic: the tonic server stopped: {e}");
            }
        });
        Ok(Servers {
            wish,
            tonic,
            wish_server,
        })
    }

    fn addr(&self, peer: Peer) -> SocketAddr {
        match peer {
            Peer::Wish => self.wish,
            Peer::Tonic => self.tonic,
        }
    }

    /// The wish server's handler calls and cache hits so far.
    fn wish_counts(&self) -> (u64, u64) {
        let stats = self.wish_server.stats();
        (
            stats.handled.load(Ordering::Relaxed),
            stats.cache_hits.load(Ordering::Relaxed),
        )
    }
}

/// The calc arithmetic for tonic, as `examples::calc::Calc` does it for wish.
#[derive(Debug, Clone, Copy)]
struct TonicCalc;

type TonicReply = Result<Response<tonic_calc::CalcResponse>, tonic::Status>;

fn checked(c: Option<i32>) -> TonicReply {
    c.map(|c| Response::new(tonic_calc::CalcResponse { c }))
        .ok_or_else(|| tonic::Status::invalid_argument("overflows int32"))
}

#[tonic::async_trait]
impl tonic_calc::simple_server::Simple for TonicCalc {
    async fn plus(&self, r: Request<tonic_calc::CalcRequest>) -> TonicReply {
        let r = r.into_inner();
        checked(r.a.checked_add(r.b))
    }

    async fn minus(&self, r: Request<tonic_calc::CalcRequest>) -> TonicReply {
        let r = r.into_inner();
        checked(r.a.checked_sub(r.b))
    }
}

#[tonic::async_trait]
impl tonic_calc::advanced_server::Advanced for TonicCalc {
    async fn multiply(&self, r: Request<tonic_calc::CalcRequest>) -> TonicReply {
        let r = r.into_inner();
        checked(r.a.checked_mul(r.b))
    }

    async fn divide(&self, r: Request<tonic_calc::CalcRequest>) -> TonicReply {
        let r = r.into_inner();
        if r.b == 0 {
            return Err(tonic::Status::invalid_argument("division by zero"));
        }
        checked(r.a.checked_div(r.b))
    }
}

// ---------------------------------------------------------------------------
// Load

/// The framework a round measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Wish,
    Tonic,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Wish => "wish",
            Peer::Tonic => "tonic",
        }
    }
}

/// The client of one connection, of either framework; clones share the connection.
#[derive(Clone)]
enum Conn {
    Wish(calc::AdvancedClient<net::Client>),
    Tonic(tonic_calc::advanced_client::AdvancedClient<tonic::transport::Channel>),
}

impl Conn {
    /// Opens a connection to `peer` at `addr`.
    async fn open(peer: Peer, addr: SocketAddr) -> Res<Conn> {
        match peer {
            Peer::Wish => {
                let client = net::Client::new(net::Endpoint::Tcp(addr.to_string()));
                client
                    .connect()
                    .await
                    .ctx(|| format!("connecting to {addr}"))?;
                Ok(Conn::Wish(calc::AdvancedClient::new(client)))
            }
            Peer::Tonic => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .ctx(|| format!("tonic endpoint {addr}"))?
                    .connect()
                    .await
                    .ctx(|| format!("connecting to {addr}"))?;
                Ok(Conn::Tonic(
                    tonic_calc::advanced_client::AdvancedClient::new(channel),
                ))
            }
        }
    }

    /// Makes call number `n` of a task and checks its answer.
    async fn call(&mut self, op: Op, n: u64) -> Res<()> {
        let (a, b) = match op {
            Op::Divide => ((n % 1_000_000) as i32 + 1, (n % 13) as i32 + 1),
            Op::Multiply => SAME,
        };
        let expected = match op {
            Op::Divide => a / b,
            Op::Multiply => a * b,
        };
        let answer = match self {
            Conn::Wish(client) => {
                let request = calc::CalcRequest { a, b };
                match op {
                    Op::Divide => client.divide(request).await,
                    Op::Multiply => client.multiply(request).await,
                }
                .map(|r| r.c)
                .map_err(|status| status.to_string())
            }
            Conn::Tonic(client) => {
                let request = tonic_calc::CalcRequest { a, b };
                match op {
                    Op::Divide => client.divide(request).await,
                    Op::Multiply => client.multiply(request).await,
                }
                .map(|r| r.into_inner().c)
                .map_err(|status| status.to_string())
            }
        };
        match answer {
            Ok(c) if c == expected => Ok(()),
            Ok(c) => Err(format!("{op:?}({a}, {b}) answered {c}, not {expected}")),
            Err(e) => Err(format!("{op:?}({a}, {b}): {e}")),
        }
    }
}

/// Lets `tasks` ramp up, counts the `answered` of `secs`, then `stop`s
/// them and checks every one ended well (`what` names one); answers per second.
async fn count_answers(
    mut tasks: JoinSet<Result<(), String>>,
    stop: &AtomicBool,
    answered: &AtomicU64,
    secs: Duration,
    what: &str,
) -> Res<f64> {
    tokio::time::sleep(RAMP).await;
    let (start_count, start) = (answered.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(secs).await;
    let (end_count, elapsed) = (answered.load(Ordering::Relaxed), start.elapsed());
    stop.store(true, Ordering::Relaxed);
    while let Some(task) = tasks.join_next().await {
        task.ctx(|| what.into())??;
    }
    Ok((end_count - start_count) as f64 / elapsed.as_secs_f64())
}

/// Runs one round of `shape` against `peer`; its answers per second during `secs`.
async fn round(peer: Peer, addr: SocketAddr, shape: &Shape, secs: Duration) -> Res<f64> {
    // Connect, and have each connection answer once, before the clock starts.
    let mut conns = Vec::with_capacity(shape.conns);
    for _ in 0..shape.conns {
        let mut conn = Conn::open(peer, addr).await?;
        conn.call(shape.op, 0).await?;
        conns.push(conn);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for (c, conn) in conns.iter().enumerate() {
        for t in 0..shape.in_flight {
            let (mut conn, stop, answered) = (conn.clone(), stop.clone(), answered.clone());
            let op = shape.op;
            // Far-apart starting points, so tasks ask different questions.
            let mut n = (c * shape.in_flight + t) as u64 * 1_000_003;
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    conn.call(op, n).await?;
                    answered.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok::<(), String>(())
            });
        }
    }
    drop(conns);
    count_answers(tasks, &stop, &answered, secs, "a load task").await
}
