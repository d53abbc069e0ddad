//! statsd: a statsd aggregator (stats-core) that flushes to graphite, a drop-in for statsite or Etsy statsd.
//!
//! Run it: `cargo run --release -p examples --bin statsd` listens for statsd
//! lines on UDP and TCP 127.0.0.1:8125 and flushes every 10 s to carbon at
//! 127.0.0.1:2003; try `echo "hits:1|c" | nc -u -w0 127.0.0.1 8125`. While
//! no carbon answers, each flush is printed on stdout instead, as graphite
//! plaintext lines.
//!
//! Options: `--host H`, `--port P` (UDP and TCP; 0 picks a free one),
//! `--graphite HOST:PORT` (repeatable: several carbons, each with its own
//! queue), `--pickle HOST:PORT` (repeatable: carbon's pickle port), `--stream-cmd
//! CMD` (repeatable: each flush in statsite's stream format on the stdin of
//! `sh -c CMD`, so statsite's sink scripts keep working),
//! `--flush-interval 2s` (or `1m`, `1h`; at least 1 s), `--mode statsite|etsy` (output names
//! and semantics; default etsy), `--legacy-namespace` (etsy mode: Etsy's
//! default names, `stats.<k>` and `stats_counts.<k>` for counters and
//! `statsd.numStats`; as in Etsy, `--prefix` is not used then), `--prefix P`, `--mgmt-port P` (Etsy-style
//! admin commands `health` and `stats`; default 8126, 0 picks a free one),
//! `--max-keys N` (keys held at once; default 100000), `--forget-after N`
//! (flushes a key may stay idle before it is forgotten; default 60),
//! `--max-tcp-connections N` (default 1024; when full, the connection idle
//! longest is closed for the new one), `--tcp-idle-timeout 5m` (`0`: never).
//! On SIGTERM or Ctrl-C it flushes once more, waits for carbon to take it
//! (up to 5 s) and exits 0.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use stats_core::net::{SinkTarget, Statsd, TcpConfig, bind_udp};
use stats_core::{Config, Mode};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: statsd [--host H] [--port P] [--graphite HOST:PORT]... [--pickle HOST:PORT]... \
[--stream-cmd CMD]... [--flush-interval 10s] [--mode statsite|etsy] [--legacy-namespace] [--prefix P] [--mgmt-port P] \
[--max-keys N] [--forget-after N] [--max-tcp-connections N] [--tcp-idle-timeout 5m]";

struct Args {
    host: String,
    port: u16,
    mgmt_port: u16,
    sinks: Vec<SinkTarget>,
    config: Config,
    tcp: TcpConfig,
}

fn parse_args() -> Result<Args, String> {
    let (mut host, mut port, mut mgmt_port) = ("127.0.0.1".to_owned(), 8125u16, 8126u16);
    let (mut mode, mut interval, mut prefix) = (Mode::Etsy, Duration::from_secs(10), None);
    let mut sinks = Vec::new();
    let (mut max_keys, mut forget_after, mut tcp) = (None, None, TcpConfig::default());
    let mut legacy_namespace = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let port_of = |v: String, what: &str| v.parse::<u16>().map_err(|e| format!("{what}: {e}"));
        match flag.as_str() {
            "--host" => host = value()?,
            "--port" => port = port_of(value()?, "--port")?,
            "--mgmt-port" => mgmt_port = port_of(value()?, "--mgmt-port")?,
            "--graphite" | "--pickle" => {
                let addr = value()?;
                if !addr.contains(':') {
                    return Err(format!("{flag}: {addr:?} is not HOST:PORT"));
                }
                sinks.push(if flag == "--pickle" {
                    SinkTarget::pickle(addr)
                } else {
                    SinkTarget::plaintext(addr)
                });
            }
            "--stream-cmd" => sinks.push(SinkTarget::stream(value()?)),
            "--flush-interval" => interval = examples::parse_duration(&flag, &value()?)?,
            "--max-keys" => max_keys = Some(number(&flag, &value()?)?),
            "--forget-after" => forget_after = Some(number(&flag, &value()?)?),
            "--max-tcp-connections" => tcp.max_connections = number(&flag, &value()?)?,
            "--tcp-idle-timeout" => {
                let after = examples::parse_duration(&flag, &value()?)?;
                tcp.idle_timeout = (!after.is_zero()).then_some(after);
            }
            "--mode" => mode = value()?.parse()?,
            "--legacy-namespace" => legacy_namespace = true,
            "--prefix" => prefix = Some(value()?),
            _ => return Err(format!("unknown option {flag}; {USAGE}")),
        }
    }
    if sinks.is_empty() {
        sinks.push(SinkTarget::plaintext("127.0.0.1:2003"));
    }
    let mut config = Config::for_mode(mode);
    config.flush_interval = interval;
    config.legacy_namespace = legacy_namespace;
    if let Some(prefix) = prefix {
        config.prefix = prefix;
    }
    if let Some(max_keys) = max_keys {
        config.max_keys = max_keys;
    }
    if let Some(forget_after) = forget_after {
        config.forget_after = forget_after;
    }
    Ok(Args {
        host,
        port,
        mgmt_port,
        sinks,
        config,
        tcp,
    })
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{flag}: {v:?}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("statsd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statsd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), stats_core::Error> {
    let statsd = Arc::new(Statsd::new(args.config, args.sinks)?.tcp_config(args.tcp));
    // Same port for TCP and UDP; a large receive buffer rides out bursts
    // during a flush. With port 0 the TCP port is picked first, and its UDP
    // twin may be taken (by any UDP client): then another pair is tried.
    let mut attempts = 0;
    let (tcp, udp) = loop {
        let tcp = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        match bind_udp(tcp.local_addr()?, 8 << 20) {
            Ok(udp) => break (tcp, udp),
            Err(e)
                if args.port == 0 && attempts < 16 && e.kind() == std::io::ErrorKind::AddrInUse =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let addr = tcp.local_addr()?;
    let admin = tokio::net::TcpListener::bind((args.host.as_str(), args.mgmt_port)).await?;
    let admin_addr = admin.local_addr()?;
    let mut sigterm = signal(SignalKind::terminate())?;
    eprintln!("statsd listening on {addr} (udp, tcp); admin on {admin_addr}");
    for (task, name) in [
        (
            tokio::spawn({
                let s = statsd.clone();
                async move { s.serve_udp(udp).await }
            }),
            "udp",
        ),
        (
            tokio::spawn({
                let s = statsd.clone();
                async move { s.serve_tcp(tcp).await }
            }),
            "tcp",
        ),
        (
            tokio::spawn({
                let s = statsd.clone();
                async move { s.serve_admin(admin).await }
            }),
            "admin",
        ),
    ] {
        tokio::spawn(async move {
            if let Ok(Err(e)) = task.await {
                eprintln!("statsd: {name} listener failed: {e}");
            }
        });
    }
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let printer = statsd.clone();
    statsd
        .run_with(stop, move |flush| {
            if printer.sinks_down() && !flush.points().is_empty() {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&flush.plaintext());
                let _ = out.flush();
            }
        })
        .await;
    Ok(())
}
