//! A kids pub/sub server on its embedded defaults.
//!
//! Run it: `cargo run --release -p examples --bin kids` (listens on
//! 127.0.0.1:3388), then `redis-cli -p 3388 subscribe logs` in one terminal
//! and `redis-cli -p 3388 publish logs hello` in another.
//!
//! Options: `--host H`, `--port P` (0 picks a free port), `--socket PATH`
//! (also listen on a unix socket), `--ignore-case`. SIGTERM or Ctrl-C drains
//! the connections and exits 0.

use std::process::ExitCode;
use std::time::Instant;

use kids_core::net::{Listener, ServerConfig, serve};
use kids_core::{Router, RouterConfig};

struct Args {
    host: String,
    port: u16,
    socket: Option<String>,
    ignore_case: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: "127.0.0.1".into(),
        port: 3388,
        socket: None,
        ignore_case: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => args.host = value()?,
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--socket" => args.socket = Some(value()?),
            "--ignore-case" => args.ignore_case = true,
            "-h" | "--help" => {
                return Err(
                    "usage: kids [--host H] [--port P] [--socket PATH] [--ignore-case]".into(),
                );
            }
            other => return Err(format!("unknown option {other}; try --help")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kids: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kids: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let router = Router::new(
        RouterConfig::default().ignore_case(args.ignore_case),
        Instant::now(),
    );
    let tcp = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let mut listeners = vec![Listener::Tcp(tcp)];
    let addr = match &listeners[0] {
        Listener::Tcp(l) => l.local_addr()?.to_string(),
        _ => String::new(),
    };
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
        listeners.push(Listener::Unix(tokio::net::UnixListener::bind(path)?));
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "kids listening on {addr}{}",
        args.socket
            .as_deref()
            .map(|p| format!(" and {p}"))
            .unwrap_or_default()
    );
    serve(listeners, router, ServerConfig::default(), async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await
}
