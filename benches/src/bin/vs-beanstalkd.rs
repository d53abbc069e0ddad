//! End-to-end comparison of job queues: miller's served engine (the
//! `beanstalk` example) against a real `beanstalkd`, at equal durability,
//! driven by the same client (`miller_core::Client`).
//!
//! Run it: `cargo build --release -p examples --bin beanstalk`, then
//! `cargo run --release -p benches --bin vs-beanstalkd`.
//!
//! A job is one `put`, one `reserve` and one `delete`. Every connection
//! uses a tube of its own. At depth 1 each command waits for its reply (a
//! producer and a worker as most are written); at depth D a connection
//! sends, in one write, the deletes of its last D jobs, D puts and D
//! reserves, then reads the 3·D replies (one round trip per D jobs).
//!
//! Durability, two modes, each server fresh with an empty data directory
//! each round:
//! * `fsync`: beanstalkd `-b DIR -f 0` (its binlog fsynced on every write)
//!   against `beanstalk --fsync always` (a reply waits for the fsync that
//!   covers its record; concurrent and pipelined writers share one);
//! * `nofsync`: beanstalkd `-b DIR -F` against `beanstalk --fsync never`
//!   (both write before they reply; neither fsyncs).
//!
//! Rates are jobs per second over `VS_SECS`; the summary gives the median
//! of `VS_ROUNDS` rounds, alternating which server goes first, and the
//! ratio ours/beanstalkd, cells where ours loses first. The bars (from the
//! issue): at least 10x with fsync, at least 1.5x without.
//!
//! Then the pipeline, on a real beanstalkd in memory (no binlog): miller's
//! master (an in-process event source, batches put pipelined on one
//! connection) and worker (`VS_WORKERS` slots, each reserving, running a
//! handler that does nothing, deleting), in one process, against the same
//! queue traffic without miller (one connection putting the same envelope
//! bodies in batches of the master's size, `VS_WORKERS` connections each
//! reserving and deleting): jobs deleted per second, after a warm-up of a
//! quarter of `VS_SECS`. The bar: the pipeline at least 80% of raw.
//!
//! Environment: `VS_SECS` (default 3), `VS_ROUNDS` (default 3), `VS_CONNS`
//! (default `1,8`), `VS_DEPTHS` (default `1,16`), `VS_MODES` (default
//! `fsync,nofsync`), `VS_BODY` (body bytes, default 100), `VS_WORKERS` (default 8; 0 skips
//! the pipeline), `VS_DIR` (data
//! directories; a real disk, not tmpfs), `BEANSTALK_BIN` (default:
//! `beanstalk` next to this program), `BEANSTALKD_BIN` (default:
//! `beanstalkd` on `PATH`, Debian package `beanstalkd`).

// A command-line program: its report goes to stdout.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::{
    Context, FSYNC_SAMPLES, RemoveOnDrop, Res, clock_ticks, cpu_ticks, env_or, fsync_latency,
    median, range, ratio,
};
use bytes::Bytes;
use miller_core::proto::{Request, Response};
use miller_core::{Client, PutParams, Queue};
use test_support::{Poll, Process, free_port, on_path};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs-beanstalkd: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    dur: Duration,
    rounds: usize,
    conns: Vec<usize>,
    depths: Vec<usize>,
    modes: Vec<Mode>,
    body: usize,
    workers: usize,
    dir: PathBuf,
    ours: PathBuf,
    theirs: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Fsync,
    NoFsync,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fsync => "fsync",
            Mode::NoFsync => "nofsync",
        }
    }
    fn bar(self) -> f64 {
        match self {
            Mode::Fsync => 10.0,
            Mode::NoFsync => 1.5,
        }
    }
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Res<Vec<T>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    text.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{name}={text:?}: {v:?} is not valid"))
        })
        .collect()
}

fn settings() -> Res<Settings> {
    let secs: f64 = env_or("VS_SECS", 3.0)?;
    let rounds = env_or("VS_ROUNDS", 3)?;
    if secs <= 0.0 || rounds < 1 {
        return Err("VS_SECS must be > 0 and VS_ROUNDS >= 1".into());
    }
    let modes = list::<String>("VS_MODES", "fsync,nofsync")?
        .into_iter()
        .map(|m| match m.as_str() {
            "fsync" => Ok(Mode::Fsync),
            "nofsync" => Ok(Mode::NoFsync),
            other => Err(format!("VS_MODES: {other:?} is neither fsync nor nofsync")),
        })
        .collect::<Res<Vec<_>>>()?;
    let dir = std::env::var_os("VS_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    Ok(Settings {
        dur: Duration::from_secs_f64(secs),
        rounds,
        conns: list("VS_CONNS", "1,8")?,
        depths: list("VS_DEPTHS", "1,16")?,
        modes,
        body: env_or("VS_BODY", 100)?,
        workers: env_or("VS_WORKERS", 8)?,
        dir: dir.join(format!("vs-beanstalkd-{}", std::process::id())),
        ours: find_ours()?,
        theirs: find_beanstalkd()?,
    })
}

fn run() -> Res<()> {
    let s = settings()?;
    let _cleanup = RemoveOnDrop(s.dir.clone());
    std::fs::create_dir_all(&s.dir).ctx(|| format!("creating {}", s.dir.display()))?;
    println!(
        "ours: {}; beanstalkd: {}; data in {}; {} B bodies",
        s.ours.display(),
        s.theirs.display(),
        s.dir.display(),
        s.body
    );
    let ticks = clock_ticks()?;
    let fsync_before = fsync_latency(&s.dir)?;
    println!(
        "disk: fdatasync after a 4 KiB append, median of {FSYNC_SAMPLES}: {fsync_before:.0} us"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx(|| "building the client's runtime".into())?;
    let mut lines = Vec::new();
    for &mode in &s.modes {
        for &conns in &s.conns {
            for &depth in &s.depths {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for round in 1..=s.rounds {
                    let order = if round % 2 == 1 {
                        [true, false]
                    } else {
                        [false, true]
                    };
                    for is_ours in order {
                        let m = measure(&rt, &s, mode, is_ours, conns, depth, ticks)?;
                        let name = if is_ours { "ours" } else { "beanstalkd" };
                        println!(
                            "round {round}/{} {} conns {conns} depth {depth} {name:<10} {:>8.0} jobs/s server_cpu_us/job={:.2}",
                            s.rounds,
                            mode.name(),
                            m.rate,
                            m.cpu_us_per_job
                        );
                        if is_ours { &mut ours } else { &mut theirs }.push(m.rate);
                    }
                }
                let (a, b) = (median(ours.iter().copied()), median(theirs.iter().copied()));
                let r = ratio(a, b);
                let bar = mode.bar();
                lines.push((
                    r,
                    format!(
                        "{} conns {conns} depth {depth}: ours {a:.0} jobs/s beanstalkd {b:.0} jobs/s ratio {r:.2}x (bar {bar}x: {}) [rounds: ours {}, beanstalkd {}]",
                        mode.name(),
                        if r >= bar { "met" } else { "missed" },
                        range(&ours),
                        range(&theirs)
                    ),
                ));
            }
        }
    }
    let fsync_after = fsync_latency(&s.dir)?;
    let pipeline = if s.workers > 0 {
        let (mut piped, mut raw) = (Vec::new(), Vec::new());
        for round in 1..=s.rounds {
            let order = if round % 2 == 1 {
                [true, false]
            } else {
                [false, true]
            };
            for is_pipeline in order {
                let rate = pipeline_round(&rt, &s, is_pipeline)?;
                let name = if is_pipeline { "master+worker" } else { "raw" };
                println!(
                    "round {round}/{} pipeline on beanstalkd, {} workers: {name:<13} {rate:>8.0} jobs/s",
                    s.rounds, s.workers
                );
                if is_pipeline { &mut piped } else { &mut raw }.push(rate);
            }
        }
        let (a, b) = (median(piped.iter().copied()), median(raw.iter().copied()));
        let r = ratio(a, b);
        Some(format!(
            "pipeline on beanstalkd, {} workers: master+worker {a:.0} jobs/s raw {b:.0} jobs/s = {:.0}% (bar 80%: {}) [rounds: master+worker {}, raw {}]",
            s.workers,
            r * 100.0,
            if r >= 0.8 { "met" } else { "missed" },
            range(&piped),
            range(&raw)
        ))
    } else {
        None
    };
    println!();
    println!(
        "summary: median of {} round(s) of {:?}; a job = put + reserve + delete; ratio = ours/beanstalkd; cells where ours loses first",
        s.rounds, s.dur
    );
    println!("disk: fdatasync {fsync_before:.0} us before the loads, {fsync_after:.0} us after");
    lines.sort_by(|a, b| {
        let key = |r: f64| if r.is_nan() { f64::NEG_INFINITY } else { r };
        key(a.0).total_cmp(&key(b.0))
    });
    for (_, line) in lines {
        println!("{line}");
    }
    if let Some(line) = pipeline {
        println!("{line}");
    }
    Ok(())
}

/// The app, event and handler of the pipeline's jobs.
const APP: &str = "bench";
const EVENT: &str = "bench.EVENT";

/// One round of the pipeline comparison on a fresh in-memory beanstalkd:
/// jobs deleted per second, by miller's master and worker or by the raw
/// traffic they make.
fn pipeline_round(rt: &tokio::runtime::Runtime, s: &Settings, miller: bool) -> Res<f64> {
    use miller_core::dispatch::{
        ChannelSource, Event, Master, MasterConfig, Registry, Worker, WorkerConfig,
    };
    let port = free_port();
    let mut cmd = Command::new(&s.theirs);
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()]);
    let server = Server::started(
        port,
        Process::start("beanstalkd", cmd).map_err(|e| e.to_string())?,
    )?;
    let data = Bytes::from(vec![b'x'; s.body]);
    let batch = MasterConfig::default().batch;
    let warm = s.dur / 4;
    let rate = rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let connect = move || Client::connect(("127.0.0.1", port));
        let deleted: Box<dyn Fn() -> u64> = if miller {
            let mut registry = Registry::new();
            registry.on(EVENT, APP, "noop", |_, _| async { Ok(()) });
            let registry = std::sync::Arc::new(registry);
            let worker = Worker::new(
                registry.clone(),
                WorkerConfig {
                    tubes: vec![APP.into()],
                    concurrency: s.workers,
                    ..WorkerConfig::default()
                },
            );
            let stats = worker.stats();
            let shutdown = stopped();
            tokio::spawn(async move { worker.run(connect, shutdown).await });
            let (tx, mut source) = ChannelSource::new(4 * batch);
            let shutdown = stopped();
            tokio::spawn(async move {
                let mut master = Master::new(registry, MasterConfig::default());
                master.run(&mut source, connect, shutdown).await
            });
            let data = data.clone();
            tokio::spawn(async move {
                while tx.send(Event::new(EVENT, APP, data.clone())).await.is_ok() {}
            });
            Box::new(move || stats.succeeded.load(Ordering::Relaxed))
        } else {
            // The same bodies the master puts: an envelope of the event.
            let body = miller_core::dispatch::Envelope {
                event: EVENT.into(),
                app: APP.into(),
                handler: "noop".into(),
                data: data.clone(),
                attempt: 0,
                first_seen: 0,
                ttr: None,
                last_error: None,
            }
            .encode(usize::MAX)
            .map_err(|e| e.to_string())?;
            let count = std::sync::Arc::new(AtomicU64::new(0));
            let mut producer = connect().await.ctx(|| "connecting".into())?;
            producer.use_tube(APP).await.ctx(|| "use".into())?;
            let mut stop = Box::pin(stopped());
            tokio::spawn(async move {
                let params = MasterConfig::default().put;
                loop {
                    let jobs = vec![(body.clone(), params); batch];
                    tokio::select! {
                        biased;
                        () = &mut stop => return,
                        r = producer.put_batch(jobs) => if r.is_err() { return },
                    }
                }
            });
            for _ in 0..s.workers {
                let mut c = connect().await.ctx(|| "connecting".into())?;
                c.watch(APP).await.ctx(|| "watch".into())?;
                c.ignore("default").await.ctx(|| "ignore".into())?;
                let (count, mut stop) = (count.clone(), Box::pin(stopped()));
                tokio::spawn(async move {
                    loop {
                        let job = tokio::select! {
                            biased;
                            () = &mut stop => return,
                            r = c.reserve(Some(Duration::from_secs(1))) => r,
                        };
                        let Ok(Some(job)) = job else { continue };
                        if c.delete(job.id).await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            Box::new(move || count.load(Ordering::Relaxed))
        };
        tokio::time::sleep(warm).await;
        let (n0, t0) = (deleted(), Instant::now());
        tokio::time::sleep(s.dur).await;
        let (n1, t1) = (deleted(), Instant::now());
        let _ = stop_tx.send(true);
        Ok::<_, String>((n1 - n0) as f64 / (t1 - t0).as_secs_f64())
    })?;
    drop(server);
    Ok(rate)
}

struct Measurement {
    rate: f64,
    cpu_us_per_job: f64,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    s: &Settings,
    mode: Mode,
    ours: bool,
    conns: usize,
    depth: usize,
    ticks: f64,
) -> Res<Measurement> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let dir = s
        .dir
        .join(format!("run-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let server = if ours {
        Server::ours(&s.ours, &dir, mode)?
    } else {
        Server::beanstalkd(&s.theirs, &dir, mode)?
    };
    let body = Bytes::from(vec![b'x'; s.body]);
    let port = server.port;
    let cpu0 = cpu_ticks(server.process.id())?;
    let (jobs, elapsed) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..conns {
            let mut c = Client::connect(("127.0.0.1", port))
                .await
                .ctx(|| format!("connecting to {}", server.process.name()))?;
            let tube = format!("bench{i}");
            c.use_tube(&tube).await.ctx(|| "use".into())?;
            c.watch(&tube).await.ctx(|| "watch".into())?;
            c.ignore("default").await.ctx(|| "ignore".into())?;
            tasks.push((c, body.clone()));
        }
        let start = Instant::now();
        let deadline = start + s.dur;
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|(c, body)| tokio::spawn(drive(c, body, depth, deadline)))
            .collect();
        let mut jobs = 0;
        for h in handles {
            jobs += h.await.map_err(|e| e.to_string())??;
        }
        Ok::<_, String>((jobs, start.elapsed()))
    })?;
    let cpu = cpu_ticks(server.process.id())? - cpu0;
    server.stop()?;
    Ok(Measurement {
        rate: jobs as f64 / elapsed.as_secs_f64(),
        cpu_us_per_job: cpu as f64 / ticks * 1e6 / jobs.max(1) as f64,
    })
}

/// One connection's load until `deadline`: the jobs it completed.
async fn drive(mut c: Client, body: Bytes, depth: usize, deadline: Instant) -> Res<u64> {
    let params = PutParams {
        priority: 0,
        delay: Duration::ZERO,
        ttr: Duration::from_secs(60),
    };
    let mut done = 0;
    if depth <= 1 {
        while Instant::now() < deadline {
            c.put(body.clone(), params).await.ctx(|| "put".into())?;
            let job = c
                .reserve(None)
                .await
                .ctx(|| "reserve".into())?
                .ok_or("reserve timed out")?;
            c.delete(job.id).await.ctx(|| "delete".into())?;
            done += 1;
        }
        return Ok(done);
    }
    let mut held: Vec<u64> = Vec::with_capacity(depth);
    loop {
        let last = Instant::now() >= deadline;
        let mut batch = Vec::with_capacity(3 * depth);
        batch.extend(held.drain(..).map(Request::Delete));
        let deletes = batch.len();
        if !last {
            for _ in 0..depth {
                batch.push(Request::Put {
                    priority: 0,
                    delay: 0,
                    ttr: 60,
                    body: body.clone(),
                });
            }
            batch.extend(std::iter::repeat_n(Request::Reserve, depth));
        }
        if batch.is_empty() {
            return Ok(done);
        }
        let replies = c.pipeline(batch).await.ctx(|| "pipeline".into())?;
        for (i, r) in replies.into_iter().enumerate() {
            match r {
                Response::Deleted => done += 1,
                Response::Inserted(_) => {}
                Response::Reserved { id, .. } => held.push(id),
                other => {
                    return Err(format!(
                        "reply {i} of a batch ({deletes} deletes first): {other:?}"
                    ));
                }
            }
        }
        if last {
            return Ok(done);
        }
    }
}

fn find_beanstalkd() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("BEANSTALKD_BIN") {
        return Ok(PathBuf::from(p));
    }
    on_path("beanstalkd").ok_or_else(|| {
        "beanstalkd not found on PATH; install the Debian package `beanstalkd` \
         (apt-get install beanstalkd) or set BEANSTALKD_BIN"
            .to_string()
    })
}

/// `$BEANSTALK_BIN`, or `beanstalk` next to this program.
fn find_ours() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("BEANSTALK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ctx(|| "locating the current executable".into())?;
    let p = exe.with_file_name("beanstalk");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no beanstalk server at {}: run `cargo build --release -p examples --bin beanstalk` first \
             (with the same CARGO_TARGET_DIR), or set BEANSTALK_BIN",
            p.display()
        ))
    }
}

/// A server on a loopback port; killed when dropped.
struct Server {
    port: u16,
    process: Process,
}

impl Server {
    fn beanstalkd(bin: &Path, dir: &Path, mode: Mode) -> Res<Self> {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-b"])
            .arg(dir)
            .args(match mode {
                Mode::Fsync => ["-f", "0"].as_slice(),
                Mode::NoFsync => ["-F"].as_slice(),
            });
        Self::started(
            port,
            Process::start("beanstalkd", cmd).map_err(|e| e.to_string())?,
        )
    }

    fn ours(bin: &Path, dir: &Path, mode: Mode) -> Res<Self> {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .args([
            "--fsync",
            match mode {
                Mode::Fsync => "always",
                Mode::NoFsync => "never",
            },
        ]);
        Self::started(
            port,
            Process::start("beanstalk", cmd).map_err(|e| e.to_string())?,
        )
    }

    fn started(port: u16, process: Process) -> Res<Self> {
        let server = Self { port, process };
        Poll::limit(Duration::from_secs(10))
            .pause(Duration::from_millis(20))
            .until(|| {
                if let Err(e) = server.process.check_running() {
                    return Some(Err(e));
                }
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| Ok(()))
            })
            .unwrap_or_else(|| {
                Err(format!(
                    "{} did not accept within 10 s",
                    server.process.name()
                ))
            })?;
        Ok(server)
    }

    /// Checks it still runs, then stops it with SIGTERM; it must exit 0.
    fn stop(self) -> Res<()> {
        self.process.check_running()?;
        let status = self
            .process
            .terminate()
            .ctx(|| format!("stopping {}", self.process.name()))?;
        // beanstalkd exits on SIGTERM with status 0 after `-b` is synced.
        if status.success() || self.process.name() == "beanstalkd" {
            Ok(())
        } else {
            Err(format!(
                "{} exited {status} on SIGTERM; its last output:\n{}",
                self.process.name(),
                self.process.tail(20)
            ))
        }
    }
}
