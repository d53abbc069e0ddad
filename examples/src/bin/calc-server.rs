//! calc-server: the seed's calc service (`proto/calc.proto`: Simple and Advanced) served with wish.
//!
//! Run it: `cargo run --release -p examples --bin calc-server` (listens on
//! 127.0.0.1:7300), then `cargo run --release -p examples --bin calc-client
//! -- multiply 3 4` twice: the second answer comes from the server's cache,
//! because Multiply declares `option (cache) = true`.
//!
//! Options: `--host H`, `--port P` (0 picks a free port), `--socket PATH`
//! (a unix socket instead of TCP), `--no-cache`, `--no-compress` (switch
//! the options off server-wide), and the limits of `wish_core::ServerConfig`:
//! `--read-timeout DUR` (a frame must be whole this long after its first
//! byte; default 30s, `0` for none), `--idle-timeout DUR` (default none),
//! `--max-partial-bytes N` (bytes all connections may hold in frames not
//! yet whole; default 64 MiB). Durations as `250ms`, `5s`, `1min`.
//! SIGTERM or Ctrl-C stops accepting, lets the calls in flight finish (up
//! to 5 s) and exits 0.

use std::process::ExitCode;
use std::time::Duration;

use examples::calc;
use wish_core::{ServerConfig, net};

const USAGE: &str = "usage: calc-server [--host H] [--port P] [--socket PATH] [--no-cache] \
     [--no-compress] [--read-timeout DUR] [--idle-timeout DUR] [--max-partial-bytes N]";

#[tokio::main]
async fn main() -> ExitCode {
    let (mut host, mut port, mut socket) = ("127.0.0.1".to_string(), 7300u16, None);
    let mut config = ServerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let parsed = match flag.as_str() {
            "--host" => value().map(|v| host = v),
            "--port" => value().and_then(|v| {
                v.parse()
                    .map(|p| port = p)
                    .map_err(|e| format!("--port: {e}"))
            }),
            "--socket" => value().map(|v| socket = Some(v)),
            "--no-cache" => {
                config.cache = false;
                Ok(())
            }
            "--no-compress" => {
                config.compress = false;
                Ok(())
            }
            "--read-timeout" => value()
                .and_then(|v| timeout(&flag, &v))
                .map(|t| config.read_timeout = t),
            "--idle-timeout" => value()
                .and_then(|v| timeout(&flag, &v))
                .map(|t| config.idle_timeout = t),
            "--max-partial-bytes" => value().and_then(|v| {
                v.parse()
                    .map(|n| config.max_partial_bytes = n)
                    .map_err(|e| format!("--max-partial-bytes: {e}"))
            }),
            _ => Err(format!("unknown option {flag}; {USAGE}")),
        };
        if let Err(e) = parsed {
            eprintln!("calc-server: {e}");
            return ExitCode::from(2);
        }
    }
    match run(host, port, socket, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calc-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A timeout flag's value: a duration, `0` for none.
fn timeout(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    match kids_core::parse_duration(value) {
        Some(Duration::ZERO) => Ok(None),
        Some(d) => Ok(Some(d)),
        None => Err(format!(
            "{flag}: not a duration: {value:?} (250ms, 5s, 1min)"
        )),
    }
}

async fn run(
    host: String,
    port: u16,
    socket: Option<String>,
    config: ServerConfig,
) -> Result<(), wish_core::Error> {
    let server = calc::server(config)?;
    let stop = examples::shutdown_signal()?;
    match socket {
        Some(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)?;
            eprintln!("calc-server listening on {path}");
            net::serve(listener, server, stop).await?;
        }
        None => {
            let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
            eprintln!("calc-server listening on {}", listener.local_addr()?);
            net::serve(listener, server, stop).await?;
        }
    }
    Ok(())
}
