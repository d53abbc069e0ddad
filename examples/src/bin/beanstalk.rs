//! beanstalk: miller's embedded, durable beanstalk engine served over the
//! beanstalk protocol, so existing clients use it unmodified.
//!
//! Run it: `cargo run --release -p examples --bin beanstalk` listens on
//! 127.0.0.1:11300 and keeps its journal in `./beanstalk-data`; try
//! `printf 'put 0 0 60 5\r\nhello\r\n' | nc -q1 127.0.0.1 11300` (the
//! reply, `INSERTED 1`, comes once the job is on disk).
//!
//! Options: `--host H`, `--port P` (0 picks a free one), `--data-dir DIR`,
//! `--fsync always|interval:MS|never` (default always: a reply waits for
//! the fsync covering its change, shared by every change in flight),
//! `--max-job-size BYTES` (default 65535), `--request-timeout 60s` (a
//! request left half-sent that long closes its connection, the server
//! toolkit's guard against clients that hold buffers; `0`: wait for ever, as
//! beanstalkd does; a waiting `reserve` is not a half-sent request).
//! `stats` reports this host's name and kernel version, as beanstalkd does.
//! SIGTERM or Ctrl-C refuses new puts, drains connections, writes and syncs
//! what is staged, and exits 0.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use kids_core::net::{Listener, ServerConfig};
use miller_core::engine::{Engine, EngineConfig, HostInfo};
use miller_core::proto::DEFAULT_MAX_JOB_SIZE;
use miller_core::store::{Store, StoreConfig};
use sink_core::FsyncPolicy;

const USAGE: &str = "usage: beanstalk [--host H] [--port P] [--data-dir DIR] \
[--fsync always|interval:MS|never] [--max-job-size BYTES] [--request-timeout 60s]";

struct Args {
    host: String,
    port: u16,
    data_dir: String,
    fsync: FsyncPolicy,
    max_job_size: u32,
    request_timeout: Option<Duration>,
}

fn parse_fsync(v: &str) -> Result<FsyncPolicy, String> {
    match v {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => match v.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) => Ok(FsyncPolicy::Interval(Duration::from_millis(ms.max(1)))),
            _ => Err(format!(
                "--fsync: {v:?} is not always, interval:MS or never"
            )),
        },
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".to_owned(),
        port: 11300,
        data_dir: "beanstalk-data".to_owned(),
        fsync: FsyncPolicy::Always,
        max_job_size: DEFAULT_MAX_JOB_SIZE,
        request_timeout: ServerConfig::default().conn.request_timeout_value(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => a.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--data-dir" => a.data_dir = value()?,
            "--fsync" => a.fsync = parse_fsync(&value()?)?,
            "--max-job-size" => {
                a.max_job_size = value()?
                    .parse()
                    .map_err(|e| format!("--max-job-size: {e}"))?;
            }
            "--request-timeout" => {
                let after = examples::parse_duration(&flag, &value()?)?;
                a.request_timeout = (!after.is_zero()).then_some(after);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unknown option {flag}; {USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("beanstalk: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = Engine::new(
        EngineConfig::default()
            .max_job_size(args.max_job_size)
            .host(system_host()),
    );
    let config = StoreConfig::default().fsync(args.fsync);
    let (store, recovered) = match Store::open(
        &args.data_dir,
        config,
        engine,
        Instant::now(),
        SystemTime::now(),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("beanstalk: opening {}: {e}", args.data_dir);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(?recovered, "journal opened");
    let runtime = match miller_core::net::runtime(&store) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("beanstalk: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, store)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beanstalk: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host facts beanstalkd's `stats` prints: the host's name and uname's
/// kernel version (its `os`), read from `/proc` where there is one.
fn system_host() -> HostInfo {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{file}"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut host = HostInfo::default();
    if let Some(name) = read("hostname") {
        host = host.hostname(name);
    }
    if let Some(version) = read("version") {
        host = host.os(version);
    }
    host
}

async fn run(args: Args, store: Store) -> Result<(), Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = tcp.local_addr()?;
    let stopping = examples::shutdown_signal()?;
    eprintln!("beanstalk listening on {addr}");
    let mut config = ServerConfig::default();
    config.conn = config.conn.request_timeout(args.request_timeout);
    miller_core::net::serve(
        vec![Listener::Tcp(tcp)],
        store,
        config,
        args.max_job_size,
        stopping,
    )
    .await?;
    Ok(())
}
