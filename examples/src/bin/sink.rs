//! sink: durable pub/sub with sessions, and Redis Streams, over the Redis protocol.
//!
//! Run it: `cargo run --release -p examples --bin sink` listens on
//! 127.0.0.1:3390 and keeps its log in `./sink-data`; try
//! `redis-cli -p 3390 PUBLISH web hello` (the reply is the message's offset,
//! given once it is on disk), `redis-cli -p 3390 SESSION CREATE mailer 'web*'`
//! then `redis-cli -p 3390 SESSION LOAD mailer`, or
//! `redis-cli -p 3390 XADD events '*' kind signup`.
//!
//! Options: `--host H`, `--port P` (0 picks a free one), `--data-dir DIR`,
//! `--fsync always|interval|never` (default always; `interval` syncs every
//! `--fsync-interval-ms N`, default 1000), `--max-age-secs N` and
//! `--max-bytes N` (retention past what sessions need), `--takeover
//! allow|refuse` (a second load of a session in use), `--session-ttl-secs N`
//! (idle sessions expire). SIGTERM or Ctrl-C drains connections, writes and
//! syncs what is staged, and exits 0.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kids_core::net::{Listener, ServerConfig};
use sink_core::{Broker, BrokerConfig, FsyncPolicy, Takeover};

const USAGE: &str = "usage: sink [--host H] [--port P] [--data-dir DIR] [--fsync always|interval|never] \
[--fsync-interval-ms N] [--max-age-secs N] [--max-bytes N] [--takeover allow|refuse] [--session-ttl-secs N]";

struct Args {
    host: String,
    port: u16,
    data_dir: String,
    config: BrokerConfig,
}

fn parse_args() -> Result<Args, String> {
    let (mut host, mut port, mut data_dir) =
        ("127.0.0.1".to_owned(), 3390u16, "sink-data".to_owned());
    let mut config = BrokerConfig::default();
    let (mut fsync, mut interval_ms) = ("always".to_owned(), 1000u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {v:?}: {e}"));
        match flag.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--data-dir" => data_dir = value()?,
            "--fsync" => fsync = value()?,
            "--fsync-interval-ms" => interval_ms = number(value()?)?.max(1),
            "--max-age-secs" => {
                config.retention.max_age = Some(Duration::from_secs(number(value()?)?));
            }
            "--max-bytes" => config.retention.max_bytes = Some(number(value()?)?),
            "--session-ttl-secs" => {
                config.sessions.idle_ttl = Some(Duration::from_secs(number(value()?)?));
            }
            "--takeover" => {
                config.sessions.takeover = match value()?.as_str() {
                    "allow" => Takeover::Allow,
                    "refuse" => Takeover::Refuse,
                    other => return Err(format!("--takeover: {other:?} is not allow or refuse")),
                }
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unknown option {flag}; {USAGE}")),
        }
    }
    config.fsync = match fsync.as_str() {
        "always" => FsyncPolicy::Always,
        "interval" => FsyncPolicy::Interval(Duration::from_millis(interval_ms)),
        "never" => FsyncPolicy::Never,
        other => {
            return Err(format!(
                "--fsync: {other:?} is not always, interval or never"
            ));
        }
    };
    Ok(Args {
        host,
        port,
        data_dir,
        config,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sink: {e}");
            return ExitCode::from(2);
        }
    };
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (broker, recovered) =
        match Broker::open(&args.data_dir, args.config.clone(), Instant::now(), wall_ms) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("sink: opening {}: {e}", args.data_dir);
                return ExitCode::FAILURE;
            }
        };
    tracing::info!(?recovered, "log opened");
    let runtime = match sink_core::net::runtime(&broker) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sink: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, broker)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sink: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, broker: Broker) -> Result<(), Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = tcp.local_addr()?;
    let stopping = examples::shutdown_signal()?;
    eprintln!("sink listening on {addr}");
    sink_core::net::serve(
        vec![Listener::Tcp(tcp)],
        broker,
        ServerConfig::default(),
        stopping,
    )
    .await?;
    Ok(())
}
