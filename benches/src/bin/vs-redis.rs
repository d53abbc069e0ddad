//! End-to-end comparison of the `kids` example server with `redis-server`.
//!
//! Run it: `cargo run --release -p benches --bin vs-redis`.
//!
//! It starts both servers on free loopback ports and measures, alternating
//! kids, redis, kids, redis… with fresh connections each round:
//!
//! * a grid of load shapes S/P (S subscriber connections on one channel, P
//!   publisher connections) = 1/50, 4/20, 10/10, 4/2, 32/1 and 0/50 (nobody
//!   subscribed), each at N = 1, 8, 64 and 256 commands in flight: every
//!   publisher writes N `PUBLISH bench <64 bytes>` at once, then reads the
//!   N replies, then writes the next N (a log shipper, a web worker). For
//!   each cell: deliveries/s (publishes/s for 0/50, where nothing is
//!   delivered), the server's CPU time (utime + stime from `/proc`) per
//!   delivered message (per publish for 0/50), at N = 1 the p99 of the
//!   publish round trip, and this load generator's own CPU time per message
//!   (the other half of a 2-core machine's budget: where the server and the
//!   clients share the cores, a server can go no faster than the clients'
//!   cost per message allows). Each round line also gives the server's
//!   context switches per message. The summary is the median of the rounds;
//! * resident memory per idle connection (VmRSS of the server process before
//!   and after opening N connections that have each answered one `PING`);
//! * forwarding: an in-process agent (the store pipeline and a network
//!   store, as `kids -c agent.conf` runs them) sends N 100-byte messages,
//!   pipelined in a window of 1024, to a kids log server (`LOG`, written to
//!   topic files and committed before each reply) and to redis-server
//!   (`PUBLISH`, same client code, to a channel nobody subscribes to: redis
//!   discards each message and stores nothing, so the ratio sets storing
//!   against discarding, not like against like); messages/s from the first
//!   message to the last acknowledgement. Also with the buffer's write-ahead spool in
//!   the agent, and the spool's replay rate: N records spooled while the
//!   agent's connection was not yet started (the primary down, as the
//!   buffer sees it), replayed from the first record to the last
//!   acknowledgement once it starts;
//! * the explorer's cost: a second kids that serves the explorer (as `kids
//!   --http` does), with the page's two event streams open throughout (the
//!   snapshot stream, and a tail of the benchmarked channel under full
//!   load), against the plain kids, alternating rounds, on the shapes of
//!   `VS_EXPLORER_SHAPES` at the depths of `VS_DEPTHS`: deliveries/s of each
//!   and the ratio (with the page / without).
//!
//! Environment: `VS_SECS` (seconds per round, default 2), `VS_ROUNDS` (rounds
//! per server and cell, default 3), `VS_SHAPES` (the shapes to run, as
//! `1/50,32/1`; default all six), `VS_DEPTHS` (the N to run, as `1,256`;
//! default `1,8,64,256`), `VS_IDLE` (idle connections, default
//! 2000), `VS_FORWARD_N` (messages per forwarding round, default 500000; 0
//! skips forwarding), `KIDS_BIN` (a kids binary taking `--host`/`--port`, such as the
//! `kids` example; default: this program re-run as `--serve-kids PORT`, which
//! serves `kids_core::net::serve` on `kids_core::net::runtime(None)`, as
//! the `kids` example does: one thread), `REDIS_BIN` (path of redis-server; default: found on `PATH`).
//!
//! A missing peer binary is an error, not a skip: without `redis-server` on
//! `PATH` it exits non-zero and names the Debian package `redis-server`.
//!
//! The last lines of the output have a fixed form:
//!
//! ```text
//! grid: shape N | deliveries/s kids redis ratio | cpu us/msg kids redis ratio | p99 rtt us kids redis ratio | load generator cpu us/msg ...
//! 1/50 1 | … … …x | … … …x | … … …x | … …
//! ...
//! idle-conn bytes kids=… redis=… ratio=…x
//! forward msgs/s (… x 100 B, window 1024) kids=… kids+spool=… redis=… ratio=…x spool-ratio=…x (kids: LOG, written and committed; redis: PUBLISH, no subscriber, nothing stored)
//! spool replay records/s kids=…
//! explorer: shape N | deliveries/s kids kids+page ratio ...
//! explorer 1/50 1 | … … …x
//! ```
//!
//! where every ratio is kids divided by redis.
#![allow(clippy::print_stdout)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use benches::{Context, Res, clock_ticks, cpu_ticks, env_or, median, ratio};
use kids_core::{Frame, Proto};
use test_support::{Poll, Process, free_port, free_ports, on_path};

/// Channel every subscriber listens on.
const CHANNEL: &[u8] = b"bench";
/// Length of every published payload.
const PAYLOAD_LEN: usize = 64;
/// Read buffer of every load connection.
const READ_BUF: usize = 256 * 1024;
/// Read timeout that lets load threads notice the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Timeout for replies that must come (PING, subscribe confirmations).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Load shapes: (subscribers, publishers).
const SHAPES: [(usize, usize); 6] = [(1, 50), (4, 20), (10, 10), (4, 2), (32, 1), (0, 50)];
/// Commands each publisher writes before reading their replies.
const DEPTHS: [usize; 4] = [1, 8, 64, 256];
/// Round-trip samples a publisher keeps, at most.
const MAX_SAMPLES: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(SERVE_KIDS) => serve_kids(
            args.get(2).map_or("", String::as_str),
            args.get(3).map(String::as_str),
            None,
        ),
        Some(SERVE_KIDS_EXPLORER) => serve_kids(
            args.get(2).map_or("", String::as_str),
            None,
            args.get(3).map(String::as_str),
        ),
        _ => run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs-redis: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings read from the environment.
struct Settings {
    secs: f64,
    rounds: usize,
    idle: usize,
    shapes: Vec<(usize, usize)>,
    depths: Vec<usize>,
}

/// Parses `VS_SHAPES` (`S/P,S/P`) or returns every shape.
fn shapes_setting() -> Res<Vec<(usize, usize)>> {
    match std::env::var("VS_SHAPES") {
        Ok(v) => parse_shapes(&v).map_err(|e| format!("VS_SHAPES: {e}")),
        Err(_) => Ok(SHAPES.to_vec()),
    }
}

/// Parses shapes written `S/P,S/P`.
fn parse_shapes(v: &str) -> Res<Vec<(usize, usize)>> {
    v.split(',')
        .map(|cell| {
            let (s, p) = cell
                .trim()
                .split_once('/')
                .ok_or_else(|| format!("{cell:?} is not S/P"))?;
            let s = s.parse().ctx(|| format!("{cell:?}"))?;
            let p: usize = p.parse().ctx(|| format!("{cell:?}"))?;
            if p == 0 {
                return Err(format!("{cell:?} has no publisher"));
            }
            Ok((s, p))
        })
        .collect()
}

/// Parses `VS_DEPTHS` (`1,8`) or returns every depth.
fn depths_setting() -> Res<Vec<usize>> {
    let Ok(v) = std::env::var("VS_DEPTHS") else {
        return Ok(DEPTHS.to_vec());
    };
    v.split(',')
        .map(|d| match d.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("VS_DEPTHS: {d:?} is not a positive number")),
        })
        .collect()
}

fn run() -> Res<()> {
    let settings = Settings {
        secs: env_or("VS_SECS", 2.0)?,
        rounds: env_or("VS_ROUNDS", 3)?,
        idle: env_or("VS_IDLE", 2000)?,
        shapes: shapes_setting()?,
        depths: depths_setting()?,
    };
    if !(settings.secs > 0.0 && settings.secs.is_finite()) || settings.rounds == 0 {
        return Err("VS_SECS must be > 0 and VS_ROUNDS >= 1".into());
    }
    let redis_bin = find_redis()?;

    let [redis_port, kids_port] = free_ports();
    let (kids_desc, kids_cmd) = kids_command(kids_port)?;
    println!("starting kids ({kids_desc}) on port {kids_port}");
    let kids = Server::start("kids", kids_cmd, kids_port)?;
    println!(
        "starting redis-server ({}) on port {redis_port}",
        redis_bin.display()
    );
    let mut redis_cmd = Command::new(&redis_bin);
    redis_cmd.args([
        "--port",
        &redis_port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--bind",
        "127.0.0.1",
    ]);
    let redis = Server::start("redis", redis_cmd, redis_port)?;
    kids.wait_ready()?;
    redis.wait_ready()?;
    println!("both servers answer PING");

    // Idle memory first, while neither allocator holds memory from the load.
    let idle_n = cap_idle(settings.idle);
    let kids_idle = idle_bytes_per_conn(&kids, idle_n)?;
    let redis_idle = idle_bytes_per_conn(&redis, idle_n)?;

    let dur = Duration::from_secs_f64(settings.secs);
    let ticks = clock_ticks()?;
    let mut results = Vec::new();
    for &(subs, pubs) in &settings.shapes {
        for &depth in &settings.depths {
            let [k, r] = alternate_rounds(
                [&kids, &redis],
                (subs, pubs, depth),
                settings.rounds,
                dur,
                ticks,
                |round, server, m| {
                    println!(
                        "round {round}/{} {subs}/{pubs} N={depth} {:<5} publishes/s={:>9.0} deliveries/s={:>10.0} cpu_us/msg={:.3} client_cpu_us/msg={:.3} switches/msg={:.3} p99_rtt_us={:.0}{}",
                        settings.rounds,
                        server.name(),
                        m.publishes,
                        m.deliveries,
                        m.cpu_us_per_msg,
                        m.client_cpu_us_per_msg,
                        m.switches_per_msg,
                        m.p99_rtt_us,
                        m.notes
                    );
                },
            )?;
            results.push(((subs, pubs, depth), k, r));
        }
    }
    kids.check_alive()?;
    redis.check_alive()?;
    let explorer = match std::env::var("VS_EXPLORER_SHAPES").as_deref() {
        Ok("") => None,
        Ok(v) => {
            let shapes = parse_shapes(v).map_err(|e| format!("VS_EXPLORER_SHAPES: {e}"))?;
            Some(run_explorer_grid(&kids, &settings, shapes, ticks)?)
        }
        Err(_) => Some(run_explorer_grid(
            &kids,
            &settings,
            vec![(1, 50), (4, 20), (32, 1), (0, 50)],
            ticks,
        )?),
    };
    let forward_n: usize = env_or("VS_FORWARD_N", 500_000)?;
    let forwarding = if forward_n > 0 {
        Some(run_forwarding(redis_port, settings.rounds, forward_n)?)
    } else {
        None
    };

    println!();
    println!(
        "summary: median of {} round(s) of {}s per server and shape; ratio = kids/redis; \
         idle-conn over {} connections",
        settings.rounds, settings.secs, idle_n
    );
    println!(
        "grid: shape N | deliveries/s kids redis ratio | cpu us/msg kids redis ratio | p99 rtt us kids redis ratio \
         | load generator cpu us/msg with kids, with redis (0/P: publishes/s and cpu per publish; rtt at N=1 only)"
    );
    for ((subs, pubs, depth), k, r) in &results {
        let rate = |ms: &[Measurement]| {
            median(ms.iter().map(|m| {
                if *subs == 0 {
                    m.publishes
                } else {
                    m.deliveries
                }
            }))
        };
        let (kd, rd) = (rate(k), rate(r));
        let kc = median(k.iter().map(|m| m.cpu_us_per_msg));
        let rc = median(r.iter().map(|m| m.cpu_us_per_msg));
        let rtt = if *depth == 1 {
            let kl = median(k.iter().map(|m| m.p99_rtt_us));
            let rl = median(r.iter().map(|m| m.p99_rtt_us));
            format!("{kl:.0} {rl:.0} {:.2}x", ratio(kl, rl))
        } else {
            "- - -".to_string()
        };
        let ks = median(k.iter().map(|m| m.client_cpu_us_per_msg));
        let rs = median(r.iter().map(|m| m.client_cpu_us_per_msg));
        println!(
            "{subs}/{pubs} {depth} | {kd:.0} {rd:.0} {:.2}x | {kc:.3} {rc:.3} {:.2}x | {rtt} | {ks:.3} {rs:.3}",
            ratio(kd, rd),
            ratio(kc, rc)
        );
    }
    println!(
        "idle-conn bytes kids={kids_idle:.0} redis={redis_idle:.0} ratio={:.2}x",
        ratio(kids_idle, redis_idle)
    );
    if let Some(f) = forwarding {
        f.print();
    }
    if let Some(e) = explorer {
        e.print(&settings);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The explorer's cost: a second kids serving the explorer, with the page's
// two event streams open (the snapshot stream, and a tail of the benchmarked
// channel under full load), against the plain kids, in alternating rounds.

/// One cell of the explorer grid: (subscribers, publishers, depth), and the
/// rates of the rounds without the page and with it.
type ExplorerCell = ((usize, usize, usize), Vec<f64>, Vec<f64>);

struct ExplorerGrid {
    cells: Vec<ExplorerCell>,
    page_bytes: u64,
    page_events: u64,
}

impl ExplorerGrid {
    fn print(&self, settings: &Settings) {
        println!(
            "explorer: shape N | deliveries/s kids kids+page ratio (median of {} round(s); 0/P: publishes/s; \
             the page: /api/stream and /api/tail?glob=bench open throughout, {} events, {} bytes received)",
            settings.rounds, self.page_events, self.page_bytes
        );
        for ((subs, pubs, depth), plain, paged) in &self.cells {
            let (a, b) = (median(plain.iter().copied()), median(paged.iter().copied()));
            println!(
                "explorer {subs}/{pubs} {depth} | {a:.0} {b:.0} {:.2}x",
                ratio(b, a)
            );
        }
    }
}

/// An open page: its event streams read (and counted) by threads until dropped.
struct Page {
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<Res<(u64, u64)>>>,
}

impl Page {
    fn open(port: u16) -> Res<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for path in ["/api/stream", "/api/tail?glob=bench"] {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .ctx(|| format!("connecting to the explorer on port {port}"))?;
            s.set_read_timeout(Some(POLL))
                .ctx(|| "read timeout".into())?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .ctx(|| format!("requesting {path}"))?;
            let stop = stop.clone();
            readers.push(std::thread::spawn(move || {
                let (mut bytes, mut events) = (0u64, 0u64);
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => return Err(format!("the explorer closed {path}")),
                        Ok(n) => {
                            if head.len() < 12 {
                                head.extend_from_slice(&buf[..n.min(12)]);
                                if head.len() >= 12 && &head[..12] != b"HTTP/1.1 200" {
                                    return Err(format!(
                                        "{path}: {:?}",
                                        String::from_utf8_lossy(&head)
                                    ));
                                }
                            }
                            bytes += n as u64;
                            events +=
                                buf[..n].windows(7).filter(|w| w == b"event: ").count() as u64;
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => return Err(format!("reading {path}: {e}")),
                    }
                }
                Ok((bytes, events))
            }));
        }
        Ok(Self { stop, readers })
    }

    fn close(self) -> Res<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = (0, 0);
        for r in self.readers {
            let (b, e) = r
                .join()
                .map_err(|_| "a page reader panicked".to_string())??;
            total = (total.0 + b, total.1 + e);
        }
        Ok(total)
    }
}

/// Runs `rounds` rounds of one cell (subscribers, publishers, depth) on
/// both servers, alternating which goes first so that neither always runs
/// on a machine warmed (or tired) by the other; `report` sees each round.
/// The measurements of each server, in the order of `pair`.
fn alternate_rounds(
    pair: [&Server; 2],
    (subs, pubs, depth): (usize, usize, usize),
    rounds: usize,
    dur: Duration,
    ticks: f64,
    mut report: impl FnMut(usize, &Server, &Measurement),
) -> Res<[Vec<Measurement>; 2]> {
    let mut out = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let server = pair[i];
            server.check_alive()?;
            let m = run_round(server, subs, pubs, depth, dur, ticks).ctx(|| {
                format!(
                    "{} round {round} shape {subs}/{pubs} N={depth}",
                    server.name()
                )
            })?;
            report(round, server, &m);
            out[i].push(m);
        }
    }
    Ok(out)
}

fn run_explorer_grid(
    kids: &Server,
    settings: &Settings,
    shapes: Vec<(usize, usize)>,
    ticks: f64,
) -> Res<ExplorerGrid> {
    let [port, http] = free_ports();
    let exe = std::env::current_exe().ctx(|| "locating the current executable".into())?;
    let mut cmd = Command::new(&exe);
    cmd.args([SERVE_KIDS_EXPLORER, &port.to_string(), &http.to_string()]);
    println!("starting kids with the explorer on ports {port} and {http}");
    let paged = Server::start("kids+page", cmd, port)?;
    paged.wait_ready()?;
    let page = Page::open(http)?;
    let dur = Duration::from_secs_f64(settings.secs);
    let mut cells = Vec::new();
    for &(subs, pubs) in &shapes {
        for &depth in &settings.depths {
            let rate = |m: &Measurement| if subs == 0 { m.publishes } else { m.deliveries };
            let [plain, with_page] = alternate_rounds(
                [kids, &paged],
                (subs, pubs, depth),
                settings.rounds,
                dur,
                ticks,
                |round, server, m| {
                    println!(
                        "explorer round {round}/{} {subs}/{pubs} N={depth} {:<9} rate={:>10.0}",
                        settings.rounds,
                        server.name(),
                        rate(m)
                    );
                },
            )?;
            let (plain, with_page) = (
                plain.iter().map(rate).collect(),
                with_page.iter().map(rate).collect(),
            );
            cells.push(((subs, pubs, depth), plain, with_page));
        }
    }
    let (page_bytes, page_events) = page.close()?;
    paged.check_alive()?;
    Ok(ExplorerGrid {
        cells,
        page_bytes,
        page_events,
    })
}

// ---------------------------------------------------------------------------
// Forwarding: an in-process agent (store pipeline -> network store, with or
// without the buffer's write-ahead spool) pipelining 100-byte messages to a
// kids log server (LOG, written to topic files) or to redis-server (PUBLISH
// to a channel without subscribers: discarded, nothing stored).

/// Payload length of forwarded messages.
const FORWARD_LEN: usize = 100;
/// The agent's window of unacknowledged messages.
const FORWARD_WINDOW: usize = 1024;

struct Forwarding {
    n: usize,
    kids: Vec<f64>,
    kids_buffered: Vec<f64>,
    redis: Vec<f64>,
    replay: Vec<f64>,
}

impl Forwarding {
    fn print(&self) {
        let (k, kb, r, rp) = (
            median(self.kids.iter().copied()),
            median(self.kids_buffered.iter().copied()),
            median(self.redis.iter().copied()),
            median(self.replay.iter().copied()),
        );
        println!(
            "forward msgs/s ({} x {FORWARD_LEN} B, window {FORWARD_WINDOW}) kids={k:.0} kids+spool={kb:.0} redis={r:.0} ratio={:.2}x spool-ratio={:.2}x \
             (kids: LOG, written and committed; redis: PUBLISH, no subscriber, nothing stored)",
            self.n,
            ratio(k, r),
            ratio(kb, r)
        );
        println!("spool replay records/s kids={rp:.0}");
    }
}

fn run_forwarding(redis_port: u16, rounds: usize, n: usize) -> Res<Forwarding> {
    let scratch = std::env::temp_dir().join(format!("kids-vs-redis-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(scratch.clone());
    std::fs::create_dir_all(&scratch).ctx(|| format!("creating {}", scratch.display()))?;
    let log_port = free_port();
    let exe = std::env::current_exe().ctx(|| "locating the current executable".into())?;
    let mut cmd = Command::new(&exe);
    cmd.args([SERVE_KIDS, &log_port.to_string()])
        .arg(scratch.join("logs"));
    let log_server = Server::start("kids", cmd, log_port)?;
    log_server.wait_ready()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .ctx(|| "building the agent's runtime".into())?;
    let mut f = Forwarding {
        n,
        kids: Vec::new(),
        kids_buffered: Vec::new(),
        redis: Vec::new(),
        replay: Vec::new(),
    };
    for round in 1..=rounds {
        let spool = scratch.join(format!("spool-{round}"));
        let replay_spool = scratch.join(format!("replay-{round}"));
        let k = forward_round(&rt, log_port, "LOG", n, None)?;
        let r = forward_round(&rt, redis_port, "PUBLISH", n, None)?;
        let kb = forward_round(&rt, log_port, "LOG", n, Some(&spool))?;
        let rp = replay_round(&rt, log_port, n, &replay_spool)?;
        log_server.check_alive()?;
        println!(
            "round {round}/{rounds} forward msgs/s kids={k:.0} redis={r:.0} kids+spool={kb:.0} replay records/s={rp:.0}"
        );
        f.kids.push(k);
        f.redis.push(r);
        f.kids_buffered.push(kb);
        f.replay.push(rp);
    }
    Ok(f)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An agent's store tree feeding a link to `port`: the network store, or a
/// buffer (spool in `spool`) in front of it; the nodes `build_store` makes
/// of an agent config, put together here because the redis run forwards
/// with `PUBLISH`, which a config cannot ask for.
fn agent(
    port: u16,
    command: &'static str,
    spool: Option<&std::path::Path>,
) -> Res<(
    kids_core::StorePipeline,
    Arc<kids_core::Link>,
    Box<dyn kids_core::Store>,
)> {
    use kids_core::{
        BufferConfig, BufferStore, ForwarderConfig, Link, NetworkStore, PipelineConfig, QueueFull,
        StorePipeline, Target,
    };
    let pipeline = StorePipeline::new(PipelineConfig::new(65_536, QueueFull::Block))
        .ctx(|| "the agent's pipeline".into())?;
    let link = Arc::new(Link::new(
        Target::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        ForwarderConfig::default()
            .window(FORWARD_WINDOW)
            .command(command),
        pipeline.bell().clone(),
    ));
    let net: Box<dyn kids_core::Store> = Box::new(NetworkStore::new(Arc::clone(&link)));
    let root: Box<dyn kids_core::Store> = match spool {
        Some(dir) => Box::new(BufferStore::new(net, BufferConfig::new(dir))),
        None => net,
    };
    Ok((pipeline, link, root))
}

/// Publishes `n` messages into the pipeline as fast as it takes them.
fn feed(pipeline: &kids_core::StorePipeline, n: usize) {
    use kids_core::Tap;
    let topic = bytes::Bytes::from_static(b"bench");
    let msg = bytes::Bytes::from(vec![b'x'; FORWARD_LEN]);
    let mut sent = 0;
    while sent < n {
        match pipeline.publish(&topic, &msg, Instant::now()) {
            Ok(_) => sent += 1,
            Err(_) => std::thread::sleep(Duration::from_micros(50)),
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Res<()> {
    Poll::limit(limit)
        .pause(Duration::from_micros(200))
        .until(|| done().then_some(()))
        .ok_or_else(|| format!("timed out waiting for {what}"))
}

/// Messages per second from the first publish to the last acknowledgement.
fn forward_round(
    rt: &tokio::runtime::Runtime,
    port: u16,
    command: &'static str,
    n: usize,
    spool: Option<&std::path::Path>,
) -> Res<f64> {
    let (pipeline, link, root) = agent(port, command, spool)?;
    rt.spawn(kids_core::net::drive_link(Arc::clone(&link)));
    wait_until("the agent to connect", REPLY_TIMEOUT, || {
        link.forwarder().is_connected()
    })?;
    let worker = kids_core::net::spawn_pipeline(&pipeline, root, Duration::from_secs(10))
        .ctx(|| "starting the store worker".into())?;
    let start = Instant::now();
    feed(&pipeline, n);
    wait_until(
        "every message acknowledged",
        Duration::from_secs(300),
        || link.forwarder().stats().acked >= n as u64,
    )?;
    let secs = start.elapsed().as_secs_f64();
    pipeline.shutdown();
    let _ = worker.join();
    Ok(n as f64 / secs)
}

/// Records per second replayed from a spool of `n` records once the
/// primary (a link to `port`) comes up.
fn replay_round(
    rt: &tokio::runtime::Runtime,
    port: u16,
    n: usize,
    spool: &std::path::Path,
) -> Res<f64> {
    let (pipeline, link, root) = agent(port, "LOG", Some(spool))?;
    let worker = kids_core::net::spawn_pipeline(&pipeline, root, Duration::from_secs(10))
        .ctx(|| "starting the store worker".into())?;
    feed(&pipeline, n);
    wait_until("every message spooled", Duration::from_secs(300), || {
        pipeline.stats().stored >= n as u64
    })?;
    let start = Instant::now();
    rt.spawn(kids_core::net::drive_link(Arc::clone(&link)));
    wait_until("the spool replayed", Duration::from_secs(300), || {
        link.forwarder().stats().acked >= n as u64
    })?;
    let secs = start.elapsed().as_secs_f64();
    pipeline.shutdown();
    let _ = worker.join();
    Ok(n as f64 / secs)
}

// ---------------------------------------------------------------------------
// Finding and running the servers

fn find_redis() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("REDIS_BIN={} does not exist", p.display()))
        };
    }
    on_path("redis-server").ok_or_else(|| {
        "redis-server not found on PATH; install the Debian package `redis-server` \
             (apt-get install redis-server) or set REDIS_BIN"
            .to_string()
    })
}

/// The command that starts kids on `port`: this program itself in server
/// mode (the same `kids_core::net::serve` the `kids` example runs), or
/// `$KIDS_BIN --port PORT` when set.
fn kids_command(port: u16) -> Res<(String, Command)> {
    if let Some(p) = std::env::var_os("KIDS_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("KIDS_BIN={} does not exist", p.display()));
        }
        let mut cmd = Command::new(&p);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        return Ok((p.display().to_string(), cmd));
    }
    let exe = std::env::current_exe().ctx(|| "locating the current executable".into())?;
    let mut cmd = Command::new(&exe);
    cmd.args([SERVE_KIDS, &port.to_string()]);
    Ok((format!("{} {SERVE_KIDS}", exe.display()), cmd))
}

/// Argument that turns this program into the kids server under test.
const SERVE_KIDS: &str = "--serve-kids";
/// The same, with the explorer served on a second port (`PORT HTTP_PORT`).
const SERVE_KIDS_EXPLORER: &str = "--serve-kids-explorer";

/// Serves kids on 127.0.0.1:`port` until killed, on the runtime the `kids`
/// example uses (`kids_core::net::runtime`); with `store_dir`, as a
/// log server writing `[topic]/all.log` files there; with `http`, with the
/// explorer on that port, as `kids --http` serves it.
fn serve_kids(port: &str, store_dir: Option<&str>, http: Option<&str>) -> Res<()> {
    let port: u16 = port.parse().ctx(|| format!("port {port:?}"))?;
    let http: Option<u16> = http
        .map(|h| h.parse().ctx(|| format!("http port {h:?}")))
        .transpose()?;
    let rt = kids_core::net::runtime(None).ctx(|| "building the runtime".into())?;
    rt.block_on(async {
        let router = kids_core::Router::new(kids_core::RouterConfig::default(), Instant::now());
        if let Some(http) = http {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", http))
                .await
                .ctx(|| format!("binding 127.0.0.1:{http}"))?;
            let explorer = kids_core::explorer::Explorer::new(
                router.clone(),
                kids_core::explorer::ExplorerConfig::default(),
            );
            tokio::spawn(async move { explorer.serve(listener, std::future::pending()).await });
        }
        let _stores = match store_dir {
            Some(dir) => {
                let config = kids_core::Config::parse(
                    "bench.conf",
                    &format!("store file {{ path {dir}/[topic]; name all.log; rotate 1day; }}"),
                )
                .ctx(|| "the log server's config".into())?;
                Some(
                    kids_core::net::Stores::start(&config, &router)
                        .ctx(|| "starting the file store".into())?,
                )
            }
            None => None,
        };
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .ctx(|| format!("binding 127.0.0.1:{port}"))?;
        kids_core::net::serve(
            vec![kids_core::net::Listener::Tcp(tcp)],
            router,
            kids_core::net::ServerConfig::default(),
            std::future::pending::<()>(),
        )
        .await
        .ctx(|| "serving".into())
    })
}

/// A running server process; killed when dropped.
struct Server {
    port: u16,
    process: Process,
}

impl Server {
    fn start(name: &'static str, cmd: Command, port: u16) -> Res<Self> {
        Ok(Self {
            port,
            process: Process::start(name, cmd).map_err(|e| e.to_string())?,
        })
    }

    fn name(&self) -> &str {
        self.process.name()
    }

    /// Errors if the process has exited.
    fn check_alive(&self) -> Res<()> {
        self.process.check_running()
    }

    fn connect(&self) -> Res<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))
            .ctx(|| format!("connecting to {} on port {}", self.name(), self.port))?;
        s.set_nodelay(true).ctx(|| "setting TCP_NODELAY".into())?;
        Ok(s)
    }

    /// Waits until the server answers PING.
    fn wait_ready(&self) -> Res<()> {
        let mut last = String::new();
        Poll::limit(REPLY_TIMEOUT)
            .pause(Duration::from_millis(50))
            .until(|| {
                if let Err(e) = self.check_alive() {
                    return Some(Err(e));
                }
                match self.connect().and_then(|mut s| ping(&mut s)) {
                    Ok(()) => Some(Ok(())),
                    Err(e) => {
                        last = e;
                        None
                    }
                }
            })
            .unwrap_or_else(|| {
                Err(format!(
                    "{} did not answer PING within {REPLY_TIMEOUT:?} ({last}); its output:\n{}",
                    self.name(),
                    self.process.tail(20)
                ))
            })
    }

    /// Resident set size of the server process, in bytes.
    fn rss(&self) -> Res<u64> {
        let path = format!("/proc/{}/status", self.process.id());
        let status = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("no VmRSS line in {path}"))
    }
}

fn ping(s: &mut TcpStream) -> Res<()> {
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .ctx(|| "setting a read timeout".into())?;
    s.write_all(&wire(&Frame::command([&b"PING"[..]])))
        .ctx(|| "writing PING".into())?;
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply)
        .ctx(|| "reading the PING reply".into())?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!(
            "PING answered {:?}",
            String::from_utf8_lossy(&reply)
        ))
    }
}

// ---------------------------------------------------------------------------
// Idle connections

/// Caps the idle-connection count to what the descriptor limit allows.
fn cap_idle(wanted: usize) -> usize {
    let limit = test_support::open_files_limit();
    match limit {
        // Leave room for the driver's other descriptors; the servers
        // inherit the same soft limit (redis lowers maxclients to it).
        Some(limit) if wanted + 128 > limit => {
            let n = limit.saturating_sub(128);
            println!(
                "idle-conn: open-file soft limit is {limit} (ulimit -n); using {n} connections \
                 instead of {wanted}"
            );
            n
        }
        _ => wanted,
    }
}

/// Opens `n` connections, has each answer one PING, and returns the growth
/// of the server's RSS per connection.
fn idle_bytes_per_conn(server: &Server, n: usize) -> Res<f64> {
    if n == 0 {
        return Err("no idle connections possible (descriptor limit too low)".into());
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = server.rss()?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(("127.0.0.1", server.port)) {
            Ok(s) => conns.push(s),
            Err(e) => {
                return Err(format!(
                    "idle-conn: opening connection {} of {n} to {} failed: {e} \
                     (raise `ulimit -n` or lower VS_IDLE)",
                    i + 1,
                    server.name()
                ));
            }
        }
    }
    let ping = wire(&Frame::command([&b"PING"[..]]));
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&ping).ctx(|| {
            format!(
                "idle-conn: PING on connection {} to {}",
                i + 1,
                server.name()
            )
        })?;
    }
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(REPLY_TIMEOUT))
            .ctx(|| "setting a read timeout".into())?;
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).ctx(|| {
            format!(
                "idle-conn: reading PONG on connection {} to {} (server closed or stalled?)",
                i + 1,
                server.name()
            )
        })?;
        if &reply != b"+PONG\r\n" {
            return Err(format!(
                "idle-conn: {} answered {:?} to PING on connection {}",
                server.name(),
                String::from_utf8_lossy(&reply),
                i + 1
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = server.rss()?;
    let per = (after as f64 - before as f64) / n as f64;
    println!(
        "idle-conn {:<5} {n} connections: VmRSS {} kB -> {} kB, {per:.0} bytes/connection",
        server.name(),
        before / 1024,
        after / 1024
    );
    for s in &conns {
        let _ = s.shutdown(Shutdown::Both);
    }
    drop(conns);
    std::thread::sleep(Duration::from_millis(200));
    server.check_alive()?;
    Ok(per)
}

// ---------------------------------------------------------------------------
// Load rounds

/// Result of one round.
struct Measurement {
    publishes: f64,
    deliveries: f64,
    /// Server CPU microseconds per delivered message (per publish with no subscriber).
    cpu_us_per_msg: f64,
    /// p99 of the publish round trip, microseconds (N = 1 only; NaN otherwise).
    p99_rtt_us: f64,
    /// Context switches of the server's threads per delivered message.
    switches_per_msg: f64,
    /// CPU microseconds this load generator spent per delivered message.
    client_cpu_us_per_msg: f64,
    notes: String,
}

/// Context switches (voluntary and not, summed over its threads) of process `pid`.
fn switches(pid: u32) -> Res<u64> {
    let mut switches = 0;
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).ctx(|| format!("reading {tasks}"))? {
        let Ok(task) = task else { continue };
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(switches)
}

/// The RESP2 bytes of `frame`, from kids-core's one codec.
fn wire(frame: &Frame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    frame.encode(Proto::Resp2, &mut buf);
    buf.to_vec()
}

fn publish_command() -> Vec<u8> {
    wire(&Frame::command([&b"PUBLISH"[..], CHANNEL, &payload()]))
}

fn payload() -> [u8; PAYLOAD_LEN] {
    let mut p = [0u8; PAYLOAD_LEN];
    for (i, b) in p.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    p
}

fn message_frame() -> Vec<u8> {
    wire(&Frame::Array(vec![
        Frame::bulk("message"),
        Frame::bulk(CHANNEL),
        Frame::bulk(payload()),
    ]))
}

fn subscribe_confirmation() -> Vec<u8> {
    wire(&Frame::Array(vec![
        Frame::bulk("subscribe"),
        Frame::bulk(CHANNEL),
        Frame::Integer(1),
    ]))
}

/// What a subscriber thread saw.
#[derive(Default)]
struct SubEnd {
    closed_by_server: bool,
    error: Option<String>,
    first_frame_ok: Option<bool>,
}

/// What a publisher thread saw.
#[derive(Default)]
struct PubEnd {
    closed_by_server: bool,
    error: Option<String>,
    non_integer_replies: u64,
    /// Round trips at depth 1, microseconds.
    rtts: Vec<u32>,
}

fn run_round(
    server: &Server,
    subs: usize,
    pubs: usize,
    depth: usize,
    dur: Duration,
    ticks_per_sec: f64,
) -> Res<Measurement> {
    let frame = Arc::new(message_frame());
    let confirmation = subscribe_confirmation();
    let subscribe = wire(&Frame::command([&b"SUBSCRIBE"[..], CHANNEL]));

    // Subscribers: connect, subscribe, read the confirmation.
    let mut sub_streams = Vec::with_capacity(subs);
    for i in 0..subs {
        let mut s = server.connect()?;
        s.write_all(&subscribe)
            .ctx(|| format!("writing SUBSCRIBE on subscriber {i}"))?;
        sub_streams.push(s);
    }
    for (i, s) in sub_streams.iter_mut().enumerate() {
        s.set_read_timeout(Some(REPLY_TIMEOUT))
            .ctx(|| "setting a read timeout".into())?;
        let mut got = vec![0u8; confirmation.len()];
        s.read_exact(&mut got)
            .ctx(|| format!("reading the subscribe confirmation on subscriber {i}"))?;
        if got != confirmation {
            return Err(format!(
                "subscriber {i}: unexpected confirmation {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        s.set_read_timeout(Some(POLL))
            .ctx(|| "setting a read timeout".into())?;
    }

    // Publishers: connect before the clock starts.
    let mut pub_streams = Vec::with_capacity(pubs);
    for _ in 0..pubs {
        let s = server.connect()?;
        s.set_read_timeout(Some(POLL))
            .ctx(|| "setting a read timeout".into())?;
        s.set_write_timeout(Some(REPLY_TIMEOUT))
            .ctx(|| "setting a write timeout".into())?;
        pub_streams.push(s);
    }

    let stop_subs = Arc::new(AtomicBool::new(false));
    let stop_pubs = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(pubs + 1));
    let mut closers = Vec::new();

    let mut sub_threads: Vec<(Arc<AtomicU64>, JoinHandle<SubEnd>)> = Vec::new();
    for s in sub_streams {
        closers.push(s.try_clone().ctx(|| "cloning a socket".into())?);
        let bytes = Arc::new(AtomicU64::new(0));
        let (b, stop, frame) = (
            Arc::clone(&bytes),
            Arc::clone(&stop_subs),
            Arc::clone(&frame),
        );
        let h = std::thread::spawn(move || subscriber(s, &b, &stop, &frame));
        sub_threads.push((bytes, h));
    }

    let cmd = publish_command();
    let batch: Arc<Vec<u8>> = Arc::new(cmd.repeat(depth));
    let mut pub_threads: Vec<(Arc<AtomicU64>, JoinHandle<PubEnd>)> = Vec::new();
    for s in pub_streams {
        closers.push(s.try_clone().ctx(|| "cloning a socket".into())?);
        let replies = Arc::new(AtomicU64::new(0));
        let (r, stop, batch, start) = (
            Arc::clone(&replies),
            Arc::clone(&stop_pubs),
            Arc::clone(&batch),
            Arc::clone(&start),
        );
        let h = std::thread::spawn(move || publisher(s, &r, &stop, &batch, depth, &start));
        pub_threads.push((replies, h));
    }

    start.wait();
    let t0 = Instant::now();
    let cpu0 = cpu_ticks(server.process.id())?;
    let client0 = cpu_ticks(std::process::id())?;
    let sw0 = switches(server.process.id())?;
    let (pub0, del0) = counts(&pub_threads, &sub_threads, frame.len());
    std::thread::sleep(dur);
    // Snapshot every counter at one instant, then stop.
    let cpu1 = cpu_ticks(server.process.id())?;
    let client1 = cpu_ticks(std::process::id())?;
    let sw1 = switches(server.process.id())?;
    let (pub1, del1) = counts(&pub_threads, &sub_threads, frame.len());
    let elapsed = t0.elapsed().as_secs_f64();
    let (published, delivered) = (pub1 - pub0, del1 - del0);
    stop_pubs.store(true, Ordering::Relaxed);
    let mut notes = String::new();
    let mut pub_errors = Vec::new();
    let mut rtts = Vec::new();
    for (i, (_, h)) in pub_threads.into_iter().enumerate() {
        let end = h
            .join()
            .map_err(|_| format!("publisher thread {i} panicked"))?;
        if end.closed_by_server {
            notes.push_str(&format!(" [publisher {i} closed by server]"));
        }
        if end.non_integer_replies > 0 {
            notes.push_str(&format!(
                " [publisher {i}: {} non-integer replies]",
                end.non_integer_replies
            ));
        }
        if let Some(e) = end.error {
            pub_errors.push(format!("publisher {i}: {e}"));
        }
        rtts.extend(end.rtts);
    }
    // Subscribers kept reading until the publishers stopped.
    stop_subs.store(true, Ordering::Relaxed);
    for c in &closers {
        let _ = c.shutdown(Shutdown::Both);
    }
    let mut sub_closed = 0;
    for (i, (_, h)) in sub_threads.into_iter().enumerate() {
        let end = h
            .join()
            .map_err(|_| format!("subscriber thread {i} panicked"))?;
        if end.closed_by_server {
            sub_closed += 1;
        }
        if end.first_frame_ok == Some(false) {
            notes.push_str(&format!(" [subscriber {i}: first message frame differs]"));
        }
        if let Some(e) = end.error {
            notes.push_str(&format!(" [subscriber {i}: {e}]"));
        }
    }
    if sub_closed > 0 {
        notes.push_str(&format!(
            " [{sub_closed}/{subs} subscribers closed by server during the round]"
        ));
    }
    if !pub_errors.is_empty() {
        return Err(pub_errors.join("; "));
    }
    let counted = if subs == 0 { published } else { delivered };
    let cpu_us = (cpu1 - cpu0) as f64 / ticks_per_sec * 1e6;
    let per = |n: u64| {
        if counted > 0 {
            n as f64 / counted as f64
        } else {
            f64::NAN
        }
    };
    Ok(Measurement {
        client_cpu_us_per_msg: per(client1 - client0) / ticks_per_sec * 1e6,
        switches_per_msg: per(sw1.saturating_sub(sw0)),
        publishes: published as f64 / elapsed,
        deliveries: delivered as f64 / elapsed,
        cpu_us_per_msg: if counted > 0 {
            cpu_us / counted as f64
        } else {
            f64::NAN
        },
        p99_rtt_us: p99(&mut rtts),
        notes,
    })
}

/// Replies read by every publisher and messages read by every subscriber so far.
fn counts(
    pubs: &[(Arc<AtomicU64>, JoinHandle<PubEnd>)],
    subs: &[(Arc<AtomicU64>, JoinHandle<SubEnd>)],
    frame_len: usize,
) -> (u64, u64) {
    let published = pubs.iter().map(|(r, _)| r.load(Ordering::Relaxed)).sum();
    let delivered = subs
        .iter()
        .map(|(b, _)| b.load(Ordering::Relaxed) / frame_len as u64)
        .sum();
    (published, delivered)
}

/// The 99th percentile of `samples` (microseconds), NaN for none.
fn p99(samples: &mut [u32]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let i = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    f64::from(samples[i])
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn subscriber(mut s: TcpStream, bytes: &AtomicU64, stop: &AtomicBool, frame: &[u8]) -> SubEnd {
    let mut end = SubEnd::default();
    let mut buf = vec![0u8; READ_BUF];
    // The first frame, kept to check the server sends what we count.
    let mut first = Vec::with_capacity(frame.len());
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                end.closed_by_server = !stop.load(Ordering::Relaxed);
                break;
            }
            Ok(n) => {
                if first.len() < frame.len() {
                    let take = n.min(frame.len() - first.len());
                    first.extend_from_slice(&buf[..take]);
                    if first.len() == frame.len() {
                        end.first_frame_ok = Some(first == frame);
                    }
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    end.error = Some(format!("read failed: {e}"));
                }
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    end
}

/// Writes `depth` PUBLISH commands at once, reads their `depth` replies,
/// and again, until `stop`; at depth 1 it keeps each round trip's time.
fn publisher(
    mut s: TcpStream,
    replies: &AtomicU64,
    stop: &AtomicBool,
    batch: &[u8],
    depth: usize,
    start: &Barrier,
) -> PubEnd {
    let mut end = PubEnd::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut at_line_start = true;
    start.wait();
    'rounds: while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if let Err(e) = s.write_all(batch) {
            if !stop.load(Ordering::Relaxed) {
                end.error = Some(format!("write failed: {e}"));
            }
            break;
        }
        let mut outstanding = depth;
        while outstanding > 0 {
            match s.read(&mut buf) {
                Ok(0) => {
                    end.closed_by_server = !stop.load(Ordering::Relaxed);
                    break 'rounds;
                }
                Ok(n) => {
                    // Every reply is `:N\r\n`: one '\n' per reply.
                    let mut count = 0usize;
                    for &b in &buf[..n] {
                        if at_line_start && b != b':' {
                            end.non_integer_replies += 1;
                        }
                        at_line_start = b == b'\n';
                        count += usize::from(at_line_start);
                    }
                    outstanding = outstanding.saturating_sub(count);
                    replies.fetch_add(count as u64, Ordering::Relaxed);
                }
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                    if stop.load(Ordering::Relaxed) {
                        break 'rounds;
                    }
                }
                Err(e) => {
                    if !stop.load(Ordering::Relaxed) {
                        end.error = Some(format!("read failed: {e}"));
                    }
                    break 'rounds;
                }
            }
        }
        if depth == 1 && end.rtts.len() < MAX_SAMPLES {
            let us = sent.elapsed().as_micros();
            end.rtts.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
    end
}
