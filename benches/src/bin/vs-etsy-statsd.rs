//! End-to-end comparison of the `statsd` example with Etsy statsd: the highest UDP line rate each counts without loss.
//!
//! Run it: `cargo run --release -p benches --bin vs-etsy-statsd`.
//!
//! It prepares both servers, then runs each in turn on free loopback ports,
//! flushing every second to a fake carbon receiver inside this program (a
//! TCP listener that parses plaintext `path value timestamp` lines and sums
//! the values of `stats.counters.bench.lines.count`):
//!
//! * ours: the `statsd` bin of the `examples` crate, built first with
//!   `cargo build --release -p examples --bin statsd` (without `--release`
//!   when this program is a debug build) and run as `statsd --host 127.0.0.1
//!   --port P --graphite 127.0.0.1:G --flush-interval 1s --mode etsy
//!   --mgmt-port 0` (UDP and TCP on P, its admin port on any free one);
//! * Etsy statsd 0.9.0 (`npm install statsd@0.9.0` into
//!   `target/vs-etsy-statsd/` on first use), run as `node stats.js
//!   config.js` with its graphite backend, `flushInterval: 1000`,
//!   `legacyNamespace: false` and `deleteIdleStats: true`.
//!
//! Before the load, a `bench.ready:1|c` line is sent every 250 ms until
//! `stats.counters.bench.ready.count` reaches the receiver: the server is
//! up and writes the expected paths. Then one sender thread offers
//! `bench.lines:1|c` lines, 87 per datagram (1391 bytes, newline-separated,
//! as clients batch them), paced at a given rate for `VS_SECS` seconds.
//! After each step it waits until two flushes have arrived after the last
//! datagram and the last of them added nothing (the count has stopped
//! changing), then compares the lines counted with the lines sent. The
//! rates start at `VS_START_RATE` and double until a step loses lines (or
//! `VS_MAX_RATE` is reached, or the sender cannot offer more), then
//! `VS_BISECT` steps bisect between the last lossless rate and the first
//! lossy one.
//!
//! Environment: `VS_SECS` (seconds per step, default 2), `VS_START_RATE`
//! (lines/s of the first step, default 50000), `VS_MAX_RATE` (lines/s where
//! doubling stops, default 20000000), `VS_BISECT` (bisection steps, default
//! 3), `STATSD_BIN` (our server; default: built as above).
//!
//! A missing `node` or `npm` is an error that names the Debian packages
//! `nodejs` and `npm`.
//!
//! The last line of the output has a fixed form:
//!
//! ```text
//! highest lossless lines/s ours=… etsy=… ratio=…x
//! ```
//!
//! where the ratio is ours divided by Etsy's; a rate reached without loss at the top of the
//! search (`VS_MAX_RATE` or the sender's limit) is marked `>=`.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use benches::{Context, Res, env_or, ratio};
use test_support::{Poll, Process, free_port, free_ports, on_path};

/// Writes one line to stdout (not `println!`: the workspace lints it).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The Etsy statsd release installed from npm.
const ETSY_PACKAGE: &str = "statsd@0.9.0";
/// The counter the load increments, one line per increment.
const LINE: &[u8] = b"bench.lines:1|c";
/// Where both servers write that counter's count (Etsy's non-legacy namespace).
const COUNT_PATH: &str = "stats.counters.bench.lines.count";
/// The counter sent until the server is seen flushing.
const READY_LINE: &[u8] = b"bench.ready:1|c";
/// Where both servers write the ready counter's count.
const READY_PATH: &str = "stats.counters.bench.ready.count";
/// Largest datagram the sender builds.
const MAX_DATAGRAM: usize = 1400;
/// How long a server may take to flush its first ready count.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long after a step the first flush must come.
const FLUSH_LIMIT: Duration = Duration::from_secs(15);
/// How long after a step the count must stop changing.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// Time after a flush's first line by which all its lines have come.
const FLUSH_GRACE: Duration = Duration::from_millis(200);
/// A step whose sender reached less than this part of its target rate is
/// limited by the sender, not by the server.
const SENDER_SLACK: f64 = 0.95;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs-etsy-statsd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings read from the environment.
struct Settings {
    secs: f64,
    start_rate: f64,
    max_rate: f64,
    bisect: usize,
}

impl Settings {
    fn from_env() -> Res<Settings> {
        let settings = Settings {
            secs: env_or("VS_SECS", 2.0)?,
            start_rate: env_or("VS_START_RATE", 50_000.0)?,
            max_rate: env_or("VS_MAX_RATE", 20_000_000.0)?,
            bisect: env_or("VS_BISECT", 3)?,
        };
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(settings.secs)
            || !positive(settings.start_rate)
            || !positive(settings.max_rate)
            || settings.max_rate < settings.start_rate
        {
            return Err(
                "VS_SECS and VS_START_RATE must be > 0, VS_MAX_RATE >= VS_START_RATE".into(),
            );
        }
        Ok(settings)
    }
}

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ours,
    Etsy,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::Etsy => "etsy",
        }
    }
}

fn run() -> Res<()> {
    let settings = Settings::from_env()?;
    let exe = std::env::current_exe().ctx(|| "locating the current executable".into())?;
    // target/<profile>/vs-etsy-statsd: ours is built next to it, Etsy's
    // statsd is installed beside the profiles.
    let profile_dir = exe
        .parent()
        .ok_or("the executable has no parent directory")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .ok_or("the profile directory has no parent")?
        .to_path_buf();
    let ours = our_binary(&profile_dir)?;
    let etsy = install_etsy(&target_dir.join("vs-etsy-statsd"))?;
    let receiver = Receiver::start()?;
    say!("fake carbon receiver on {}", receiver.addr);

    let mut best = Vec::new();
    for peer in [Peer::Ours, Peer::Etsy] {
        let server = match peer {
            Peer::Ours => start_ours(&ours, receiver.addr)?,
            Peer::Etsy => start_etsy(&etsy, receiver.addr)?,
        };
        let found = search(&settings, server, &receiver)?;
        best.push((peer, found));
    }

    say!();
    let shown = |peer: Peer| match best.iter().find(|(p, _)| *p == peer) {
        Some((_, Best { rate, at_top })) => format!("{}{rate:.0}", if *at_top { ">=" } else { "" }),
        None => "missing".into(),
    };
    let rate_of = |peer| best.iter().find(|(p, _)| *p == peer).map(|(_, b)| b.rate);
    let ratio_shown = match (rate_of(Peer::Ours), rate_of(Peer::Etsy)) {
        (Some(o), Some(e)) => format!("{:.2}x", ratio(o, e)),
        _ => "n/a".into(),
    };
    say!(
        "summary: {}s per step, {} lines per datagram, one sender thread; ratio = ours/etsy",
        settings.secs,
        lines_per_datagram()
    );
    say!(
        "highest lossless lines/s ours={} etsy={} ratio={ratio_shown}",
        shown(Peer::Ours),
        shown(Peer::Etsy)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The search for the highest lossless rate

/// The highest rate a server counted without loss.
struct Best {
    /// Lines per second offered (as sent, not as aimed at).
    rate: f64,
    /// The search stopped while still lossless: the server may hold more.
    at_top: bool,
}

/// Doubles the rate from `start_rate` until a step loses lines, then bisects.
fn search(settings: &Settings, mut server: Server, receiver: &Receiver) -> Res<Best> {
    let peer = server.peer;
    let sender = UdpSocket::bind("127.0.0.1:0").ctx(|| "binding the sender's socket".into())?;
    sender.connect(("127.0.0.1", server.port)).ctx(|| {
        format!(
            "connecting the sender to {} port {}",
            peer.name(),
            server.port
        )
    })?;
    wait_ready(&mut server, &sender, receiver)?;
    say!(
        "{} flushes to the receiver; steps of {}s",
        peer.name(),
        settings.secs
    );

    let mut best = Best {
        rate: 0.0,
        at_top: false,
    };
    let mut lossless = 0.0;
    let mut lossy = None;
    let mut rate = settings.start_rate;
    loop {
        let s = step(&mut server, &sender, receiver, rate, settings.secs)?;
        if s.counted != s.sent {
            lossy = Some(rate);
            break;
        }
        lossless = rate;
        best.rate = best.rate.max(s.offered);
        if s.offered < rate * SENDER_SLACK {
            say!(
                "{}: the sender offers no more than {:.0} lines/s; stopping there",
                peer.name(),
                s.offered
            );
            best.at_top = true;
            break;
        }
        if rate >= settings.max_rate {
            best.at_top = true;
            break;
        }
        rate = (rate * 2.0).min(settings.max_rate);
    }
    if let Some(mut high) = lossy {
        for _ in 0..settings.bisect {
            let mid = (lossless + high) / 2.0;
            let s = step(&mut server, &sender, receiver, mid, settings.secs)?;
            if s.counted == s.sent {
                lossless = mid;
                best.rate = best.rate.max(s.offered);
            } else {
                high = mid;
            }
        }
    }
    server.process.check_running()?;
    Ok(best)
}

/// What one step sent and what reached the receiver.
struct Step {
    sent: u64,
    counted: u64,
    offered: f64,
}

/// Offers `rate` lines/s for `secs` seconds, waits until the count stops
/// changing, and prints the step.
fn step(
    server: &mut Server,
    sender: &UdpSocket,
    receiver: &Receiver,
    rate: f64,
    secs: f64,
) -> Res<Step> {
    server.process.check_running()?;
    let before = receiver.sum(COUNT_PATH);
    let (sent, send_secs) = send_paced(sender, rate, secs).map_err(|e| {
        format!(
            "sending to {} (port {}): {e}; its output:\n{}",
            server.peer.name(),
            server.port,
            server.process.tail(20)
        )
    })?;
    let end = Instant::now();
    settle(server, receiver, end)?;
    let counted_f = receiver.sum(COUNT_PATH) - before;
    if counted_f < 0.0 || counted_f.fract() != 0.0 || counted_f > sent as f64 {
        return Err(format!(
            "{} counted {counted_f} lines where {sent} were sent: the count must be a whole \
             number no larger than the lines sent",
            server.peer.name()
        ));
    }
    let counted = counted_f as u64;
    let offered = sent as f64 / send_secs;
    let loss = 100.0 * (1.0 - ratio(counted as f64, sent as f64));
    say!(
        "{} offered {rate:>10.0} lines/s (sent {sent} in {send_secs:.2}s = {offered:.0}/s) \
         counted {counted:>10} loss {loss:.3}%",
        server.peer.name(),
    );
    Ok(Step {
        sent,
        counted,
        offered,
    })
}

/// Lines per datagram: as many as fit in [`MAX_DATAGRAM`] bytes.
fn lines_per_datagram() -> usize {
    (MAX_DATAGRAM + 1) / (LINE.len() + 1)
}

/// `n` load lines, newline-separated.
fn datagram(n: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(n * (LINE.len() + 1));
    for i in 0..n {
        if i > 0 {
            d.push(b'\n');
        }
        d.extend_from_slice(LINE);
    }
    d
}

/// Sends `rate * secs` lines at `rate` lines/s from this thread; returns
/// the lines sent and the seconds it took.
fn send_paced(sender: &UdpSocket, rate: f64, secs: f64) -> Res<(u64, f64)> {
    let per = lines_per_datagram() as u64;
    let full = datagram(per as usize);
    let total = (rate * secs).round().max(1.0) as u64;
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < total {
        let due = (rate * start.elapsed().as_secs_f64()) as u64;
        if sent < due {
            let n = per.min(total - sent);
            sender
                .send(&full[..datagram_len(n)])
                .ctx(|| format!("sending a datagram after {sent} lines"))?;
            sent += n;
        } else {
            // Ahead of the schedule: sleep until the next datagram is due,
            // spinning for the last stretch the scheduler cannot time.
            let next = Duration::from_secs_f64((sent + 1) as f64 / rate);
            let wait = next.saturating_sub(start.elapsed());
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// Bytes of a datagram of `n` lines.
fn datagram_len(n: u64) -> usize {
    n as usize * (LINE.len() + 1) - 1
}

/// Sends the ready line every 250 ms until its count grows at the receiver
/// (which may hold counts of the previous server).
fn wait_ready(server: &mut Server, sender: &UdpSocket, receiver: &Receiver) -> Res<()> {
    let before = receiver.sum(READY_PATH);
    Poll::limit(READY_LIMIT)
        .pause(Duration::from_millis(250))
        .until(|| {
            if receiver.sum(READY_PATH) > before {
                return Some(Ok(()));
            }
            if let Err(e) = server.process.check_running() {
                return Some(Err(e));
            }
            // Refused while the server is not bound yet: try again.
            let _ = sender.send(READY_LINE);
            None
        })
        .unwrap_or_else(|| {
            Err(format!(
                "{} did not flush {READY_PATH} to the receiver within {READY_LIMIT:?}; \
                 paths received: {}; its output:\n{}",
                server.peer.name(),
                receiver.paths(),
                server.process.tail(20)
            ))
        })
}

/// Waits until two flushes have started after `end` and the latest of them,
/// complete, left the count unchanged.
fn settle(server: &mut Server, receiver: &Receiver, end: Instant) -> Res<()> {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let (flushes, latest, changed) = receiver.since(end);
        if flushes >= 2
            && let Some(latest) = latest
            && now.duration_since(latest) >= FLUSH_GRACE
            && changed.is_none_or(|c| c < latest)
        {
            return Ok(());
        }
        server.process.check_running()?;
        let waited = now.duration_since(end);
        if (flushes == 0 && waited > FLUSH_LIMIT) || waited > SETTLE_LIMIT {
            return Err(format!(
                "{}: {flushes} flush(es) in {waited:?} after the step, and the count kept \
                 changing; its output:\n{}",
                server.peer.name(),
                server.process.tail(20)
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// The fake carbon receiver

/// What the receiver has seen.
#[derive(Default)]
struct Seen {
    /// Sum of the values of each watched path.
    sums: HashMap<&'static str, f64>,
    /// When each flush began: the first line of a connection, or a line
    /// whose timestamp differs from the previous line's on its connection.
    flushes: Vec<Instant>,
    /// When the sum of [`COUNT_PATH`] last changed.
    changed: Option<Instant>,
    /// Distinct paths received (the first few), for error messages.
    paths: BTreeSet<String>,
}

/// A plaintext carbon listener on a free loopback port, summing the values
/// of [`COUNT_PATH`] and [`READY_PATH`].
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    fn start() -> Res<Receiver> {
        let listener =
            TcpListener::bind("127.0.0.1:0").ctx(|| "binding the carbon receiver".into())?;
        let addr = listener
            .local_addr()
            .ctx(|| "reading the receiver's address".into())?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || receive(conn, &s));
            }
        });
        Ok(Receiver { addr, seen })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sum of the values received for `path`.
    fn sum(&self, path: &str) -> f64 {
        self.lock().sums.get(path).copied().unwrap_or(0.0)
    }

    /// Flushes begun after `t`, when the latest began, when the count last changed.
    fn since(&self, t: Instant) -> (usize, Option<Instant>, Option<Instant>) {
        let seen = self.lock();
        let after = seen.flushes.iter().filter(|f| **f > t).count();
        (after, seen.flushes.last().copied(), seen.changed)
    }

    fn paths(&self) -> String {
        let seen = self.lock();
        if seen.paths.is_empty() {
            "none".into()
        } else {
            seen.paths.iter().cloned().collect::<Vec<_>>().join(" ")
        }
    }
}

/// Reads `path value timestamp` lines from one connection until it closes.
fn receive(conn: TcpStream, seen: &Mutex<Seen>) {
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    let mut last_ts: Option<Vec<u8>> = None;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let mut fields = text.split_ascii_whitespace();
        let (Some(path), Some(value), Some(ts)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let now = Instant::now();
        let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if last_ts.as_deref() != Some(ts.as_bytes()) {
            s.flushes.push(now);
            let excess = s.flushes.len().saturating_sub(64);
            s.flushes.drain(..excess);
            last_ts = Some(ts.as_bytes().to_vec());
        }
        if s.paths.len() < 40 {
            s.paths.insert(path.to_owned());
        }
        let watched = [COUNT_PATH, READY_PATH].into_iter().find(|p| *p == path);
        if let (Some(p), Ok(v)) = (watched, value.parse::<f64>())
            && v != 0.0
        {
            *s.sums.entry(p).or_insert(0.0) += v;
            if p == COUNT_PATH {
                s.changed = Some(now);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Preparing and running the servers

/// Our server: `$STATSD_BIN`, or the `statsd` bin of the examples crate, built now.
fn our_binary(profile_dir: &Path) -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("STATSD_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("STATSD_BIN={} does not exist", p.display()))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the benches crate has no parent directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "-p", "examples", "--bin", "statsd"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    say!(
        "building ours: cargo build{} -p examples --bin statsd",
        if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        }
    );
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .ctx(|| format!("running {}", Path::new(&cargo).display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("building ours failed ({}):\n{stderr}", out.status));
    }
    let bin = profile_dir.join("statsd");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built the statsd example, but not at {} (set STATSD_BIN)",
            bin.display()
        ))
    }
}

/// Installs Etsy statsd into `dir` unless it is there; returns its `stats.js`.
fn install_etsy(dir: &Path) -> Res<PathBuf> {
    let stats_js = dir.join("node_modules/statsd/stats.js");
    tool_version("node")?;
    if stats_js.is_file() {
        return Ok(stats_js);
    }
    tool_version("npm")?;
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    say!(
        "installing Etsy statsd: npm install {ETSY_PACKAGE} into {}",
        dir.display()
    );
    let out = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(dir)
        .args([
            "--omit=optional",
            "--no-audit",
            "--no-fund",
            "--no-package-lock",
            "--loglevel=error",
            ETSY_PACKAGE,
        ])
        .stdin(Stdio::null())
        .output()
        .ctx(|| "running npm install".into())?;
    if !out.status.success() || !stats_js.is_file() {
        return Err(format!(
            "npm install {ETSY_PACKAGE} into {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stats_js)
}

/// The version `tool --version` prints; an error naming the Debian package
/// when the tool is missing.
fn tool_version(tool: &str) -> Res<String> {
    let package = if tool == "node" { "nodejs" } else { tool };
    let path = on_path(tool).ok_or_else(|| {
        format!(
            "`{tool}` not found on PATH; Etsy statsd needs node and npm: install the Debian \
             package `{package}` (apt-get install nodejs npm)"
        )
    })?;
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ctx(|| format!("running {} --version", path.display()))?;
    if !out.status.success() {
        return Err(format!("`{tool} --version` failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Starts ours on a port free on both UDP and TCP.
fn start_ours(bin: &Path, graphite: SocketAddr) -> Res<Server> {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--graphite",
        &graphite.to_string(),
        "--flush-interval",
        "1s",
        "--mode",
        "etsy",
        "--mgmt-port",
        "0",
    ]);
    say!("starting ours ({}) on port {port}", bin.display());
    Server::start(Peer::Ours, cmd, port, None)
}

/// Starts Etsy statsd with a config written into a temporary file.
fn start_etsy(stats_js: &Path, graphite: SocketAddr) -> Res<Server> {
    let [port, mgmt_port] = free_ports();
    let config =
        std::env::temp_dir().join(format!("vs-etsy-statsd-{}-{port}.js", std::process::id()));
    let text = format!(
        "{{\n  port: {port},\n  address: \"127.0.0.1\",\n  mgmt_port: {mgmt_port},\n  \
         mgmt_address: \"127.0.0.1\",\n  graphiteHost: \"{}\",\n  graphitePort: {},\n  \
         flushInterval: 1000,\n  backends: [\"./backends/graphite\"],\n  \
         graphite: {{ legacyNamespace: false }},\n  deleteIdleStats: true\n}}\n",
        graphite.ip(),
        graphite.port()
    );
    std::fs::write(&config, text).ctx(|| format!("writing {}", config.display()))?;
    let mut cmd = Command::new("node");
    cmd.arg(stats_js).arg(&config);
    say!(
        "starting etsy (node {}, node {}) on port {port}",
        stats_js.display(),
        tool_version("node")?
    );
    Server::start(Peer::Etsy, cmd, port, Some(config))
}

/// A running server process; killed when dropped (with its config file removed).
struct Server {
    peer: Peer,
    port: u16,
    process: Process,
    config: Option<PathBuf>,
}

impl Server {
    fn start(peer: Peer, cmd: Command, port: u16, config: Option<PathBuf>) -> Res<Server> {
        Ok(Server {
            peer,
            port,
            process: Process::start(peer.name(), cmd).map_err(|e| e.to_string())?,
            config,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.config {
            let _ = std::fs::remove_file(c);
        }
    }
}
