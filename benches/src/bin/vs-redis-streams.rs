//! End-to-end comparison of durable appends: the `sink` example server
//! against `redis-server` with its append-only file fsynced on every write.
//!
//! Run it: `cargo build --release -p examples --bin sink`, then
//! `cargo run --release -p benches --bin vs-redis-streams`.
//!
//! Both servers reply only once a write is on disk: sink with `--fsync
//! always` (the reply to `PUBLISH` is the message's offset, sent after the
//! fsync that covers it; concurrent writers share one fsync), redis with
//! `--appendonly yes --appendfsync always` (the AOF is written and fsynced
//! before the replies of each event-loop turn go out). For every cell
//! (connections 1 and 8, depth 64 and 1) and round, it starts each server
//! fresh on a free loopback port with an empty data directory and measures,
//! in an order that rotates each round:
//!
//! * sink `PUBLISH bench <100 B>` (integer reply: the offset);
//! * redis `XADD bench * p <100 B>` (bulk reply: the ID);
//! * sink `XADD bench * p <100 B>` (bulk reply), when this build of sink
//!   has streams: an error reply to a probe XADD skips those rows, saying so.
//!
//! Every connection keeps `depth` commands in flight: each reply read is
//! answered with one more command (a sliding window, not write-N-read-N).
//! Rates are replies per second over `VS_SECS`; the summary gives the
//! median of the rounds, and the ratio sink/redis of those medians, for:
//! `publish-vs-xadd` (sink PUBLISH against redis XADD) and `xadd-vs-xadd`.
//! Both servers are bound by the disk's fsync latency, which other writers
//! to the same disk change: it is measured before and after the loads
//! (`fdatasync` after a 4 KiB append, median of 50) and printed with them.
//!
//! The bars (from the issue): publish-vs-xadd at depth 64 at least 2x with
//! 8 connections and at least 1x with 1.
//!
//! Then recovery: a log of `VS_RECOVERY_BYTES` of 100-byte messages written
//! with `sink_core::Broker` directly (no fsync, batches of 1024, synced once
//! at the end; one session that needs every message, or retention would
//! keep only the active segment), then, alternating, twice each: a
//! sequential read of every segment file into one reused buffer, and
//! `Broker::open` of the directory. Both run on a warm page cache (caches
//! cannot be dropped without root). The figure is open/read, best of two
//! each (bar: at most 2x); it also times the passes in between (record
//! framing and crc32, record decoding, kids-core's `SegmentLog::open`
//! alone) to say where the time goes.
//!
//! Environment: `VS_SECS` (seconds per measurement, default 3), `VS_ROUNDS`
//! (default 3), `VS_CONNS` (default `1,8`), `VS_DEPTHS` (default `64,1`),
//! `VS_RECOVERY_BYTES` (default 1 GiB; 0 skips recovery), `VS_DIR` (where
//! data directories go; default the system temp dir: it should be a real
//! disk, not tmpfs, or fsync costs nothing), `SINK_BIN` (default: `sink`
//! next to this program, as `cargo build --release -p examples --bin sink`
//! leaves it), `REDIS_BIN` (default: `redis-server` on `PATH`).
//!
//! A missing peer binary, a server that does not start or does not exit 0
//! on SIGTERM, a wrong reply or a closed connection are errors (non-zero
//! exit); a ratio under the bar is not. The last lines have a fixed form,
//! cells where sink loses first:
//!
//! ```text
//! summary: ...
//! disk: fdatasync ... us before the loads, ... us after ...
//! publish-vs-xadd 8 64: sink N/s redis M/s ratio Rx (bar 2x: met) [rounds: sink min-max, redis min-max]
//! ...
//! recovery: log ... ratio open/read Rx (bar 2x: met)
//! recovery passes: ...
//! ```
#![allow(clippy::print_stdout)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use benches::{
    Context, FSYNC_SAMPLES, RemoveOnDrop, Res, clock_ticks, cpu_ticks, env_or, fsync_latency,
    median, range, ratio,
};
use kids_core::{Frame, Proto};
use sink_core::{Broker, BrokerConfig, FsyncPolicy};
use test_support::{Poll, Process, Stream, free_port, on_path};

/// Topic of every PUBLISH and key of every XADD.
const KEY: &[u8] = b"bench";
/// Length of every payload (the PUBLISH message, the XADD field's value).
const PAYLOAD_LEN: usize = 100;
/// Read buffer of every load connection.
const READ_BUF: usize = 64 * 1024;
/// Read timeout that lets load threads notice the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Timeout for replies that must come (PING, probes, writes).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Error text kept from a reply, at most.
const ERROR_TEXT: usize = 160;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs-redis-streams: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings read from the environment.
struct Settings {
    dur: Duration,
    rounds: usize,
    conns: Vec<usize>,
    depths: Vec<usize>,
    recovery_bytes: u64,
    dir: PathBuf,
    sink: PathBuf,
    redis: PathBuf,
}

/// Parses a list of positive numbers such as `1,8`, or returns `default`.
fn list_setting(name: &str, default: &[usize]) -> Res<Vec<usize>> {
    let Ok(v) = std::env::var(name) else {
        return Ok(default.to_vec());
    };
    v.split(',')
        .map(|d| match d.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}: {d:?} is not a positive number")),
        })
        .collect()
}

fn settings() -> Res<Settings> {
    let secs: f64 = env_or("VS_SECS", 3.0)?;
    let rounds = env_or("VS_ROUNDS", 3)?;
    if !(secs > 0.0 && secs.is_finite()) || rounds == 0 {
        return Err("VS_SECS must be > 0 and VS_ROUNDS >= 1".into());
    }
    let dir = std::env::var_os("VS_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    Ok(Settings {
        dur: Duration::from_secs_f64(secs),
        rounds,
        conns: list_setting("VS_CONNS", &[1, 8])?,
        depths: list_setting("VS_DEPTHS", &[64, 1])?,
        recovery_bytes: env_or("VS_RECOVERY_BYTES", 1 << 30)?,
        dir: dir.join(format!("vs-redis-streams-{}", std::process::id())),
        sink: find_sink()?,
        redis: find_redis()?,
    })
}

fn run() -> Res<()> {
    let s = settings()?;
    let _cleanup = RemoveOnDrop(s.dir.clone());
    std::fs::create_dir_all(&s.dir).ctx(|| format!("creating {}", s.dir.display()))?;
    println!(
        "sink: {} --fsync always; redis: {} --appendonly yes --appendfsync always; data in {}",
        s.sink.display(),
        s.redis.display(),
        s.dir.display()
    );
    let ticks = clock_ticks()?;
    let fsync_before = fsync_latency(&s.dir)?;
    println!(
        "disk: fdatasync after a 4 KiB append, median of {FSYNC_SAMPLES}: {fsync_before:.0} us"
    );
    let sink_xadd = probe(&s)?;
    let mut loads = vec![Load::SinkPublish, Load::RedisXadd];
    if sink_xadd {
        loads.push(Load::SinkXadd);
    }

    let mut cells = Vec::new();
    for &conns in &s.conns {
        for &depth in &s.depths {
            let mut cell = Cell {
                conns,
                depth,
                rates: [Vec::new(), Vec::new(), Vec::new()],
            };
            for round in 1..=s.rounds {
                // Rotate the order, so no load always runs first or last.
                let mut order = loads.clone();
                order.rotate_left((round - 1) % loads.len());
                for load in order {
                    let m = measure(&s, load, conns, depth, ticks).ctx(|| {
                        format!("{} round {round} conns {conns} depth {depth}", load.name())
                    })?;
                    println!(
                        "round {round}/{} conns {conns} depth {depth} {:<13} {:>8.0}/s server_cpu_us/msg={:.2} client_cpu_us/msg={:.2}",
                        s.rounds,
                        load.name(),
                        m.rate,
                        m.cpu_us_per_msg,
                        m.client_cpu_us_per_msg,
                    );
                    cell.rates[load as usize].push(m.rate);
                }
            }
            cells.push(cell);
        }
    }

    let fsync_after = fsync_latency(&s.dir)?;
    println!(
        "disk: fdatasync after a 4 KiB append, median of {FSYNC_SAMPLES}: {fsync_after:.0} us"
    );

    let recovery = if s.recovery_bytes > 0 {
        Some(recovery(&s.dir.join("recovery"), s.recovery_bytes)?)
    } else {
        None
    };

    println!();
    println!(
        "summary: median of {} round(s) of {:?} per server; ratio = sink/redis; servers fresh each round; \
         cells where sink loses first",
        s.rounds, s.dur
    );
    println!(
        "disk: fdatasync {fsync_before:.0} us before the loads, {fsync_after:.0} us after (a server that \
         fsyncs once per window of conns x depth commands replies at most conns x depth / that per second)"
    );
    if !sink_xadd {
        println!("xadd-vs-xadd: skipped, this build of sink does not serve XADD");
    }
    let mut lines = Vec::new();
    for c in &cells {
        let redis = median(c.rates[Load::RedisXadd as usize].iter().copied());
        let mut shapes = vec![("publish-vs-xadd", Load::SinkPublish)];
        if sink_xadd {
            shapes.push(("xadd-vs-xadd", Load::SinkXadd));
        }
        for (shape, load) in shapes {
            let sink_rates = &c.rates[load as usize];
            let sink = median(sink_rates.iter().copied());
            let r = ratio(sink, redis);
            let bar = match (load, c.conns, c.depth) {
                (Load::SinkPublish, 8, 64) => Some(2.0),
                (Load::SinkPublish, 1, 64) => Some(1.0),
                _ => None,
            };
            let bar = bar.map_or(String::new(), |b| {
                format!(" (bar {b}x: {})", if r >= b { "met" } else { "MISSED" })
            });
            let spread = if s.rounds > 1 {
                format!(
                    " [rounds: sink {}, redis {}]",
                    range(sink_rates),
                    range(&c.rates[Load::RedisXadd as usize])
                )
            } else {
                String::new()
            };
            lines.push((
                r,
                format!(
                    "{shape} {} {}: sink {sink:.0}/s redis {redis:.0}/s ratio {r:.2}x{bar}{spread}",
                    c.conns, c.depth
                ),
            ));
        }
    }
    // Losing cells first; a NaN ratio (no redis figure) with them.
    lines.sort_by(|a, b| {
        let key = |r: f64| if r.is_nan() { f64::NEG_INFINITY } else { r };
        key(a.0).total_cmp(&key(b.0))
    });
    for (_, line) in lines {
        println!("{line}");
    }
    if let Some(r) = recovery {
        r.print();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Loads and measurements

/// What is measured: a server and the command it is sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    SinkPublish = 0,
    RedisXadd = 1,
    SinkXadd = 2,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::SinkPublish => "sink PUBLISH",
            Load::RedisXadd => "redis XADD",
            Load::SinkXadd => "sink XADD",
        }
    }

    fn command(self) -> Vec<u8> {
        match self {
            Load::SinkPublish => publish_command(),
            Load::RedisXadd | Load::SinkXadd => xadd_command(),
        }
    }

    /// The reply type every command of this load must get.
    fn reply(self) -> u8 {
        match self {
            Load::SinkPublish => b':',
            Load::RedisXadd | Load::SinkXadd => b'$',
        }
    }
}

/// One (connections, depth) cell: rates per round, indexed by [`Load`].
struct Cell {
    conns: usize,
    depth: usize,
    rates: [Vec<f64>; 3],
}

/// One measurement.
struct Measurement {
    /// Replies per second.
    rate: f64,
    /// Server CPU time (utime + stime) per reply.
    cpu_us_per_msg: f64,
    /// This load generator's CPU time per reply: on a machine with few
    /// cores, the server can go no faster than the clients' cost allows.
    client_cpu_us_per_msg: f64,
}

/// Starts the server `load` needs, fresh, runs the load on it, stops it.
fn measure(s: &Settings, load: Load, conns: usize, depth: usize, ticks: f64) -> Res<Measurement> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let data = s
        .dir
        .join(format!("data-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let _cleanup = RemoveOnDrop(data.clone());
    let server = match load {
        Load::RedisXadd => Server::redis(&s.redis, &data)?,
        Load::SinkPublish | Load::SinkXadd => Server::sink(&s.sink, &data)?,
    };
    let cmd = load.command();
    let streams = (0..conns)
        .map(|_| server.connect())
        .collect::<Res<Vec<_>>>()?;
    let cpu0 = cpu_ticks(server.process.id())?;
    let client0 = cpu_ticks(std::process::id())?;
    let (replies, elapsed) = drive(streams, &cmd, depth, load.reply(), s.dur)?;
    let cpu1 = cpu_ticks(server.process.id())?;
    let client1 = cpu_ticks(std::process::id())?;
    server.stop()?;
    let us_per_msg = |ticks_spent: u64| {
        if replies > 0 {
            ticks_spent as f64 / ticks * 1e6 / replies as f64
        } else {
            f64::NAN
        }
    };
    Ok(Measurement {
        rate: replies as f64 / elapsed,
        cpu_us_per_msg: us_per_msg(cpu1 - cpu0),
        client_cpu_us_per_msg: us_per_msg(client1 - client0),
    })
}

/// Whether this build of sink serves XADD: one probe on a fresh sink (an
/// error reply says no). Also checks that sink answers PUBLISH with an
/// offset and redis answers XADD with an ID.
fn probe(s: &Settings) -> Res<bool> {
    let data = s.dir.join("probe-sink");
    let sink = Server::sink(&s.sink, &data)?;
    let mut c = sink.connect()?;
    let (kind, text) = one_reply(&mut c, &publish_command()).ctx(|| "sink PUBLISH probe".into())?;
    if kind != b':' || text != "1" {
        return Err(format!(
            "sink answered the first PUBLISH with {}{text:?}, not the offset 1",
            char::from(kind)
        ));
    }
    let (kind, text) = one_reply(&mut c, &xadd_command()).ctx(|| "sink XADD probe".into())?;
    let xadd = match kind {
        b'$' => true,
        b'-' => {
            println!(
                "sink: XADD unsupported by this build (it answered -{text}): skipping the sink XADD rows"
            );
            false
        }
        _ => {
            return Err(format!(
                "sink answered XADD with {}{text:?}, neither an ID nor an error",
                char::from(kind)
            ));
        }
    };
    drop(c);
    sink.stop()?;
    let data = s.dir.join("probe-redis");
    let redis = Server::redis(&s.redis, &data)?;
    let mut c = redis.connect()?;
    let (kind, text) = one_reply(&mut c, &xadd_command()).ctx(|| "redis XADD probe".into())?;
    if kind != b'$' {
        return Err(format!(
            "redis answered XADD with {}{text:?}, not an ID",
            char::from(kind)
        ));
    }
    drop(c);
    redis.stop()?;
    Ok(xadd)
}

/// Sends `cmd` and reads its one reply: its type byte and its text (the
/// line, or a bulk string's content).
fn one_reply(c: &mut TcpStream, cmd: &[u8]) -> Res<(u8, String)> {
    c.set_read_timeout(Some(REPLY_TIMEOUT))
        .ctx(|| "setting a read timeout".into())?;
    c.write_all(cmd).ctx(|| "writing".into())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut replies = Replies::default();
    while replies.total() == 0 {
        let n = c.read(&mut buf).ctx(|| "reading the reply".into())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        got.extend_from_slice(&buf[..n]);
        replies.feed(&buf[..n])?;
    }
    let kind = got[0];
    let line_end = got
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(got.len());
    let mut text = String::from_utf8_lossy(&got[1..line_end]).into_owned();
    if kind == b'$' {
        let body = &got[(line_end + 2).min(got.len())..];
        text = String::from_utf8_lossy(body.strip_suffix(b"\r\n").unwrap_or(body)).into_owned();
    }
    Ok((kind, text))
}

/// Runs the load on `streams` for `dur`: each connection keeps `depth`
/// commands `cmd` in flight; every reply must be of type `expect`.
/// Returns the replies counted and the seconds they took.
fn drive(
    streams: Vec<TcpStream>,
    cmd: &[u8],
    depth: usize,
    expect: u8,
    dur: Duration,
) -> Res<(u64, f64)> {
    // Up to `depth` commands back to back: any count is a prefix of it.
    let window: Arc<Vec<u8>> = Arc::new(cmd.repeat(depth));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(streams.len() + 1));
    let mut closers = Vec::new();
    let mut threads: Vec<(Arc<AtomicU64>, JoinHandle<Res<()>>)> = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        s.set_read_timeout(Some(POLL))
            .ctx(|| "setting a read timeout".into())?;
        s.set_write_timeout(Some(REPLY_TIMEOUT))
            .ctx(|| "setting a write timeout".into())?;
        closers.push(s.try_clone().ctx(|| "cloning a socket".into())?);
        let replies = Arc::new(AtomicU64::new(0));
        let (r, stop, window, start) = (
            Arc::clone(&replies),
            Arc::clone(&stop),
            Arc::clone(&window),
            Arc::clone(&start),
        );
        let len = cmd.len();
        let h = std::thread::spawn(move || {
            connection(s, &r, &stop, &window, len, expect, &start).ctx(|| format!("connection {i}"))
        });
        threads.push((replies, h));
    }
    let count = |t: &[(Arc<AtomicU64>, JoinHandle<Res<()>>)]| -> u64 {
        t.iter().map(|(r, _)| r.load(Ordering::Relaxed)).sum()
    };
    start.wait();
    let t0 = Instant::now();
    let n0 = count(&threads);
    std::thread::sleep(dur);
    let n1 = count(&threads);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for (i, (_, h)) in threads.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("connection {i}: thread panicked")),
        }
    }
    for c in &closers {
        let _ = c.shutdown(Shutdown::Both);
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok((n1 - n0, elapsed))
}

/// One load connection: writes a full window, then one command per reply
/// read, until `stop`. No allocation per command: commands are slices of
/// `window`, replies are counted in place.
fn connection(
    mut s: TcpStream,
    replies: &AtomicU64,
    stop: &AtomicBool,
    window: &[u8],
    cmd_len: usize,
    expect: u8,
    start: &Barrier,
) -> Res<()> {
    let depth = window.len() / cmd_len;
    let mut buf = vec![0u8; READ_BUF];
    let mut counter = Replies::default();
    start.wait();
    s.write_all(window).ctx(|| "writing".into())?;
    let mut in_flight = depth;
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut buf) {
            Ok(0) => return Err("closed by the server".into()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed: {e}")),
        };
        let before = counter.total();
        counter.feed(&buf[..n])?;
        counter.check(expect)?;
        let done = usize::try_from(counter.total() - before).unwrap_or(usize::MAX);
        if done > in_flight {
            return Err(format!("{done} replies to {in_flight} commands in flight"));
        }
        replies.fetch_add(done as u64, Ordering::Relaxed);
        if done > 0 && !stop.load(Ordering::Relaxed) {
            s.write_all(&window[..done * cmd_len])
                .ctx(|| "writing".into())?;
        } else {
            in_flight -= done;
        }
    }
    Ok(())
}

/// Where a [`Replies`] counter is in the byte stream.
#[derive(Default, Clone, Copy)]
enum At {
    /// At the first byte of a reply.
    #[default]
    Start,
    /// In a reply's first line, after its type byte.
    Line,
    /// After that line's `\r`.
    LineEnd,
    /// In a bulk string's content (and its `\r\n`): bytes left.
    Body(usize),
}

/// Counts RESP2 replies (integers, bulk strings, simple strings, errors)
/// in a stream fed in pieces of any size; keeps the text of the first
/// reply that is neither an integer nor a bulk string. Integer and bulk
/// replies allocate nothing.
#[derive(Default)]
struct Replies {
    at: At,
    kind: u8,
    len: usize,
    negative: bool,
    by_kind: [u64; 4],
    first_bad: Option<String>,
    /// The current line of a simple string or error (at most [`ERROR_TEXT`] bytes).
    text: Vec<u8>,
}

impl Replies {
    const KINDS: [u8; 4] = [b':', b'$', b'+', b'-'];

    fn total(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    /// Errors once a reply was not of type `expect`, with its text.
    fn check(&self, expect: u8) -> Res<()> {
        for (i, &k) in Self::KINDS.iter().enumerate() {
            if k != expect && self.by_kind[i] > 0 {
                return Err(format!(
                    "{} replies of type {:?} where every reply should be {:?}; the first: {}",
                    self.by_kind[i],
                    char::from(k),
                    char::from(expect),
                    self.first_bad.as_deref().unwrap_or("?")
                ));
            }
        }
        Ok(())
    }

    /// Counts the replies completed by `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) -> Res<()> {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.at {
                At::Start => {
                    if !Self::KINDS.contains(&b) {
                        return Err(format!(
                            "not a RESP2 reply type: {:?}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
                        ));
                    }
                    (self.kind, self.len, self.negative) = (b, 0, false);
                    self.text.clear();
                    self.at = At::Line;
                }
                At::Line => match b {
                    b'\r' => self.at = At::LineEnd,
                    b'-' if self.kind == b'$' => self.negative = true,
                    b'0'..=b'9' if self.kind == b'$' => {
                        self.len = self
                            .len
                            .saturating_mul(10)
                            .saturating_add(usize::from(b - b'0'));
                    }
                    _ if self.kind == b'$' => return Err("bad bulk length".into()),
                    _ if matches!(self.kind, b'+' | b'-') && self.text.len() < ERROR_TEXT => {
                        self.text.push(b);
                    }
                    _ => {}
                },
                At::LineEnd => {
                    if b != b'\n' {
                        return Err("a reply line without \\r\\n".into());
                    }
                    if self.kind == b'$' && !self.negative {
                        self.at = At::Body(self.len.saturating_add(2));
                    } else {
                        self.done();
                    }
                }
                At::Body(left) => {
                    // Skip the content in one step.
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    if take == left {
                        self.done();
                    } else {
                        self.at = At::Body(left - take);
                    }
                    continue;
                }
            }
            bytes = rest;
        }
        Ok(())
    }

    fn done(&mut self) {
        let i = Self::KINDS
            .iter()
            .position(|&k| k == self.kind)
            .unwrap_or(0);
        self.by_kind[i] += 1;
        if self.kind != b':' && self.kind != b'$' && self.first_bad.is_none() {
            self.first_bad = Some(format!(
                "{}{}",
                char::from(self.kind),
                String::from_utf8_lossy(&self.text)
            ));
        }
        self.at = At::Start;
    }
}

/// The RESP2 bytes of `frame`, from kids-core's one codec.
fn wire(frame: &Frame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    frame.encode(Proto::Resp2, &mut buf);
    buf.to_vec()
}

fn payload() -> [u8; PAYLOAD_LEN] {
    let mut p = [0u8; PAYLOAD_LEN];
    for (i, b) in p.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    p
}

fn publish_command() -> Vec<u8> {
    wire(&Frame::command([&b"PUBLISH"[..], KEY, &payload()]))
}

fn xadd_command() -> Vec<u8> {
    wire(&Frame::command([&b"XADD"[..], KEY, b"*", b"p", &payload()]))
}

// ---------------------------------------------------------------------------
// Recovery

/// Recovery timings, best of two each, in seconds.
struct Recovery {
    bytes: u64,
    messages: u64,
    segments: usize,
    write: f64,
    read: f64,
    frame: f64,
    decode: f64,
    log_open: f64,
    open: f64,
    /// Cold page cache (after dropping it): a plain read, and Broker::open.
    cold: Option<(f64, f64)>,
}

/// Writes dirty pages back and drops the page cache, so that the next read
/// comes from the disk, as after a reboot; false where that is not allowed
/// (not root, or a container that forbids it).
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

impl Recovery {
    fn print(&self) {
        let r = ratio(self.open, self.read);
        let ms = |s: f64| s * 1e3;
        println!(
            "recovery: log {} MiB ({} messages of {PAYLOAD_LEN} B, {} segments, written at {:.0} MiB/s): \
             read {:.0} ms ({:.0} MiB/s), open {:.0} ms ({:.0} MiB/s), ratio open/read {r:.2}x (bar 2x: {})",
            self.bytes >> 20,
            self.messages,
            self.segments,
            self.bytes as f64 / 1048576.0 / self.write,
            ms(self.read),
            self.bytes as f64 / 1048576.0 / self.read,
            ms(self.open),
            self.bytes as f64 / 1048576.0 / self.open,
            if r <= 2.0 { "met" } else { "MISSED" }
        );
        println!(
            "recovery passes: read {:.0} ms; read + framing + crc32 {:.0} ms; the same + record decode {:.0} ms; \
             kids-core SegmentLog::open (its read, framing, crc32) {:.0} ms; Broker::open {:.0} ms",
            ms(self.read),
            ms(self.frame),
            ms(self.decode),
            ms(self.log_open),
            ms(self.open)
        );
        match self.cold {
            Some((read, open)) => {
                let rc = ratio(open, read);
                println!(
                    "recovery (cold page cache, as after a reboot): read {:.0} ms ({:.0} MiB/s), open {:.0} ms, ratio open/read {rc:.2}x (bar 2x: {})",
                    ms(read),
                    self.bytes as f64 / 1048576.0 / read,
                    ms(open),
                    if rc <= 2.0 { "met" } else { "MISSED" }
                );
            }
            None => println!(
                "recovery (cold page cache): not measured: dropping the page cache is not allowed here"
            ),
        }
        if r > 2.0 {
            let parts = [
                ("reading the files", self.read),
                ("framing and crc32", self.frame - self.read),
                (
                    "SegmentLog::open beyond a plain read and crc32 pass",
                    self.log_open - self.frame,
                ),
                ("decoding records", self.decode - self.frame),
                (
                    "sink's replay beyond decoding (index, sessions, checkpoints)",
                    self.open - self.log_open - (self.decode - self.frame),
                ),
            ];
            let list: Vec<String> = parts
                .iter()
                .map(|(what, t)| format!("{what} {:.0} ms", ms(*t)))
                .collect();
            println!(
                "recovery: over the bar; where Broker::open's {:.0} ms go: {}",
                ms(self.open),
                list.join(", ")
            );
        }
    }
}

/// Writes a log of about `bytes` of 100-byte messages (and one session) in `dir`, then times
/// reading it and opening it, alternating, twice each.
fn recovery(dir: &Path, bytes: u64) -> Res<Recovery> {
    let _cleanup = RemoveOnDrop(dir.to_path_buf());
    let mut config = BrokerConfig::default();
    config.fsync = FsyncPolicy::Never;
    let wall_ms = 1_700_000_000_000;
    let t = Instant::now();
    let written = {
        let (broker, _) = Broker::open(dir, config.clone(), Instant::now(), wall_ms)
            .ctx(|| format!("opening a broker in {}", dir.display()))?;
        let now = Instant::now();
        // A session that needs every message: without one, each new segment
        // releases the ones before it (retention keeps what sessions need).
        broker
            .create_session(b"keep-all", &[b"*"], now)
            .ctx(|| "creating a session".into())?;
        let p = payload();
        let mut size = 0u64;
        while size < bytes {
            if broker.last_offset() > bytes / PAYLOAD_LEN as u64 {
                return Err(format!(
                    "{} messages written and the log is only {size} bytes",
                    broker.last_offset()
                ));
            }
            for _ in 0..1024 {
                broker.publish(KEY, &p, now).ctx(|| "publishing".into())?;
            }
            broker.commit(now).ctx(|| "committing".into())?;
            size = dir_bytes(dir);
        }
        // Written back before anything is timed.
        broker.sync(now).ctx(|| "syncing".into())?;
        broker.last_offset()
    };
    let write = t.elapsed().as_secs_f64();
    let files = segment_files(dir)?;
    let on_disk = dir_bytes(dir);
    println!(
        "recovery: wrote {} MiB ({written} messages, {} segments) in {write:.1} s",
        on_disk >> 20,
        files.len()
    );
    let mut buf = Vec::new();
    let (mut read, mut frame, mut decode) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    let (mut log_open, mut open) = ([0.0; 2], [0.0; 2]);
    for i in 0..2 {
        let t = Instant::now();
        let n = read_all(&files, &mut buf, |_| Ok(0))?;
        read[i] = t.elapsed().as_secs_f64();
        if n != on_disk {
            return Err(format!("read {n} bytes of {on_disk}"));
        }

        let t = Instant::now();
        let (broker, opened) = Broker::open(dir, config.clone(), Instant::now(), wall_ms)
            .ctx(|| format!("reopening the log in {}", dir.display()))?;
        open[i] = t.elapsed().as_secs_f64();
        // Dropping it (its index) is not part of opening it.
        drop(broker);
        if opened.messages != written || opened.truncated_bytes != 0 {
            return Err(format!(
                "Broker::open recovered {opened:?}, but {written} messages were written"
            ));
        }

        let t = Instant::now();
        let (log, found) = kids_core::SegmentLog::open(
            dir,
            kids_core::SegmentConfig::default().max_segment_bytes(u64::MAX),
        )
        .ctx(|| format!("opening the segment log in {}", dir.display()))?;
        log_open[i] = t.elapsed().as_secs_f64();
        drop(log);
        if found.records < written {
            return Err(format!("SegmentLog::open found {found:?}"));
        }

        let t = Instant::now();
        read_all(&files, &mut buf, |b| frames(b, false))?;
        frame[i] = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let messages = read_all(&files, &mut buf, |b| frames(b, true))?;
        decode[i] = t.elapsed().as_secs_f64();
        if messages != written {
            return Err(format!(
                "decoded {messages} messages, but {written} were written"
            ));
        }
        println!(
            "recovery pass {}/2: read {:.0} ms, open {:.0} ms",
            i + 1,
            read[i] * 1e3,
            open[i] * 1e3
        );
    }
    let best = |v: [f64; 2]| v[0].min(v[1]);
    // Cold: each timed step starts with an empty page cache.
    let mut cold = None;
    if drop_caches() {
        let mut c = ([0.0; 2], [0.0; 2]);
        for i in 0..2 {
            drop_caches();
            let t = Instant::now();
            read_all(&files, &mut buf, |_| Ok(0))?;
            c.0[i] = t.elapsed().as_secs_f64();
            drop_caches();
            let t = Instant::now();
            let (broker, _) = Broker::open(dir, config.clone(), Instant::now(), wall_ms)
                .ctx(|| format!("reopening the log in {}", dir.display()))?;
            c.1[i] = t.elapsed().as_secs_f64();
            drop(broker);
            println!(
                "recovery cold pass {}/2: read {:.0} ms, open {:.0} ms",
                i + 1,
                c.0[i] * 1e3,
                c.1[i] * 1e3
            );
        }
        cold = Some((best(c.0), best(c.1)));
    }
    Ok(Recovery {
        cold,
        bytes: on_disk,
        messages: written,
        segments: files.len(),
        write,
        read: best(read),
        frame: best(frame),
        decode: best(decode),
        log_open: best(log_open),
        open: best(open),
    })
}

/// Reads each file whole into `buf` (reused) and sums what `each` returns
/// for it; with `|_| Ok(0)`, returns the bytes read instead.
fn read_all(
    files: &[PathBuf],
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> Res<u64>,
) -> Res<u64> {
    let (mut bytes, mut sum) = (0u64, 0u64);
    for f in files {
        buf.clear();
        let n = std::fs::File::open(f)
            .and_then(|mut file| file.read_to_end(buf))
            .ctx(|| format!("reading {}", f.display()))?;
        bytes += n as u64;
        sum += each(buf)?;
    }
    Ok(if sum == 0 { bytes } else { sum })
}

/// Walks the segment-log records in `seg` (`[len u32][crc32 u32][payload]`,
/// little-endian) checking each crc32; with `decode`, also decodes each
/// payload as a sink record. Returns the messages found (0 without decode).
fn frames(seg: &[u8], decode: bool) -> Res<u64> {
    let mut rest = seg;
    let mut messages = 0;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(8..8 + len) else {
            return Err("a record runs past the end of its segment".into());
        };
        if crc32fast::hash(payload) != crc {
            return Err("a record's crc32 does not match".into());
        }
        if decode {
            match sink_core::record::decode(payload) {
                Ok(sink_core::record::Record::Message { .. }) => messages += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("a record does not decode: {e}")),
            }
        }
        rest = &rest[8 + len..];
    }
    Ok(messages)
}

/// The segment files of the log in `dir`, in order.
fn segment_files(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let p = e.ctx(|| format!("reading {}", dir.display()))?.path();
        if p.extension().is_some_and(|e| e == "seg") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Bytes of the regular files under `dir` (0 if it cannot be read).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
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

/// `$SINK_BIN`, or `sink` next to this program (where cargo puts the
/// example's release build).
fn find_sink() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("SINK_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("SINK_BIN={} does not exist", p.display()))
        };
    }
    let exe = std::env::current_exe().ctx(|| "locating the current executable".into())?;
    let p = exe.with_file_name("sink");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no sink server at {}: run `cargo build --release -p examples --bin sink` first \
             (with the same CARGO_TARGET_DIR), or set SINK_BIN",
            p.display()
        ))
    }
}

/// A running server process on a loopback port; killed when dropped.
struct Server {
    port: u16,
    process: Process,
}

impl Server {
    /// `redis-server` persisting to an append-only file in `dir`, fsynced
    /// before every reply.
    fn redis(bin: &Path, dir: &Path) -> Res<Self> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir);
        let server = Self {
            port,
            process: Process::start("redis", cmd).map_err(|e| e.to_string())?,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// The `sink` example with its log in `dir`, fsynced before every reply.
    fn sink(bin: &Path, dir: &Path) -> Res<Self> {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .args(["--fsync", "always"]);
        let server = Self {
            port,
            process: Process::start("sink", cmd).map_err(|e| e.to_string())?,
        };
        server
            .process
            .wait_for_line(Stream::Stderr, |l| l.starts_with("sink listening on"))?;
        server.wait_ready()?;
        Ok(server)
    }

    fn name(&self) -> &str {
        self.process.name()
    }

    fn connect(&self) -> Res<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))
            .ctx(|| format!("connecting to {} on port {}", self.name(), self.port))?;
        s.set_nodelay(true).ctx(|| "setting TCP_NODELAY".into())?;
        Ok(s)
    }

    /// Waits until the server answers PING.
    fn wait_ready(&self) -> Res<()> {
        let ping = wire(&Frame::command([&b"PING"[..]]));
        let mut last = String::new();
        Poll::limit(REPLY_TIMEOUT)
            .pause(Duration::from_millis(20))
            .until(|| {
                if let Err(e) = self.process.check_running() {
                    return Some(Err(e));
                }
                match self.connect().and_then(|mut s| one_reply(&mut s, &ping)) {
                    Ok((b'+', pong)) if pong == "PONG" => Some(Ok(())),
                    Ok((kind, text)) => Some(Err(format!(
                        "{} answered PING with {}{text}",
                        self.name(),
                        char::from(kind)
                    ))),
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

    /// Checks it still runs, then stops it with SIGTERM; it must exit 0.
    fn stop(self) -> Res<()> {
        self.process.check_running()?;
        let status = self
            .process
            .terminate()
            .ctx(|| format!("stopping {}", self.name()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} exited {status} on SIGTERM; its last output:\n{}",
                self.name(),
                self.process.tail(20)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_counted_across_any_split() {
        let stream =
            b":1\r\n$15\r\n1700000000000-0\r\n$-1\r\n+OK\r\n-ERR unknown command 'XADD'\r\n:22\r\n";
        for cut in 0..stream.len() {
            let mut r = Replies::default();
            r.feed(&stream[..cut]).expect("first piece");
            r.feed(&stream[cut..]).expect("second piece");
            assert_eq!(r.by_kind, [2, 2, 1, 1], "cut at {cut}");
            assert_eq!(r.first_bad.as_deref(), Some("+OK"));
            assert!(r.check(b'$').is_err());
        }
        let mut r = Replies::default();
        r.feed(b":5\r\n:6\r").expect("partial");
        assert_eq!(r.total(), 1);
        assert!(r.check(b':').is_ok());
        assert!(Replies::default().feed(b"x").is_err());
    }
}
