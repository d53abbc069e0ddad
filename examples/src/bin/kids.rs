//! kids: a pub/sub server, a log agent or a log server, as its config says.
//!
//! Run it on its embedded defaults: `cargo run --release -p examples --bin
//! kids` (a pub/sub server on 127.0.0.1:3388, no stores), then
//! `redis-cli -p 3388 subscribe logs` in one terminal and
//! `redis-cli -p 3388 publish logs hello` in another.
//!
//! With `-c FILE` it runs whatever the file describes: an agent that
//! forwards to a server and spools while it is unreachable
//! (`examples/conf/agent.conf`), or a server that writes topic files
//! (`examples/conf/server.conf`).
//!
//! Options: `-c FILE`, `--host H`, `--port P` (0 picks a free port),
//! `--socket PATH` (these three override the file's `listen`),
//! `--ignore-case`, `--http PORT` (the explorer page, on the listen host;
//! or the file's `http { port P; token T; }`), `--http-token T`. SIGHUP re-reads the file and replaces the store tree
//! without losing queued messages; SIGTERM or Ctrl-C drains the
//! connections, stores what is queued and exits 0.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use kids_core::explorer::{Explorer, ExplorerConfig};
use kids_core::net::{Listener, ServerConfig, Stores, serve};
use kids_core::{Config, LogLevel, Router};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Default)]
struct Args {
    config: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    socket: Option<String>,
    ignore_case: bool,
    http: Option<u16>,
    http_token: Option<String>,
}

const USAGE: &str = "usage: kids [-c FILE] [--host H] [--port P] [--socket PATH] [--ignore-case] [--http PORT] [--http-token T]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-c" | "--config" => args.config = Some(value()?),
            "--host" => args.host = Some(value()?),
            "--port" => args.port = Some(value()?.parse().map_err(|e| format!("--port: {e}"))?),
            "--socket" => args.socket = Some(value()?),
            "--ignore-case" => args.ignore_case = true,
            "--http" => args.http = Some(value()?.parse().map_err(|e| format!("--http: {e}"))?),
            "--http-token" => args.http_token = Some(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(args)
}

fn load(path: &str) -> Result<Config, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Config::parse(path, &src).map_err(|e| e.to_string())
}

/// Logs go to stderr, or to the config's `log { file }`, at its `level`.
fn init_logging(config: &Config) -> Result<(), String> {
    let level = match config.log.level.unwrap_or(LogLevel::Info) {
        LogLevel::Trace => tracing::Level::TRACE,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false);
    match &config.log.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("log file {path}: {e}"))?;
            builder.with_writer(Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kids: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.config.as_deref().map(load).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            eprintln!("kids: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("kids: {e}");
        return ExitCode::from(2);
    }
    // One thread unless the config's `worker_threads` asks for more.
    let runtime = match kids_core::net::runtime(config.worker_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kids: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kids: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, mut config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // `--ignore-case` holds for the file as read now and at every reload.
    let cli_ignore_case = args.ignore_case;
    config.ignore_case |= cli_ignore_case;
    let host = args
        .host
        .or(config.listen.host.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = args.port.or(config.listen.port).unwrap_or(3388);
    let socket = args.socket.or(config.listen.socket.clone());

    let router = Router::new(config.router_config(), Instant::now());
    // Without a `store` block kids is a plain pub/sub server: no tap at all.
    let stores = match &config.store {
        Some(_) => Some(Stores::start(&config, &router)?),
        None => None,
    };
    let tcp = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    let addr = tcp.local_addr()?;
    let mut listeners = vec![Listener::Tcp(tcp)];
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
        listeners.push(Listener::Unix(tokio::net::UnixListener::bind(path)?));
    }
    let http = match args.http.or(config.http.port) {
        Some(http_port) => Some(tokio::net::TcpListener::bind((host.as_str(), http_port)).await?),
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    eprintln!(
        "kids listening on {addr}{}",
        socket
            .as_deref()
            .map(|p| format!(" and {p}"))
            .unwrap_or_default()
    );
    // The explorer page, read-only, on the same host.
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let explorer = match http {
        Some(http) => {
            eprintln!("kids explorer on http://{}/", http.local_addr()?);
            let mut settings = ExplorerConfig::default();
            if let Some(token) = args.http_token.or(config.http.token.clone()) {
                settings = settings.token(token);
            }
            let explorer = Explorer::new(router.clone(), settings);
            Some(tokio::spawn(async move {
                explorer
                    .serve(http, async {
                        let _ = http_stopped.await;
                    })
                    .await
            }))
        }
        None => None,
    };
    let config_path = args.config;
    let stopping = async {
        loop {
            tokio::select! {
                _ = sigterm.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = sighup.recv() => {
                    let Some(path) = config_path.as_deref() else {
                        tracing::info!("SIGHUP without -c FILE: nothing to reload");
                        continue;
                    };
                    let Some(stores) = &stores else {
                        tracing::warn!("SIGHUP: kids started without a store tree; adding one needs a restart");
                        continue;
                    };
                    let reloaded = load(path).and_then(|mut c| {
                        c.ignore_case |= cli_ignore_case;
                        stores.reload(&c).map_err(|e| e.to_string())
                    });
                    match reloaded {
                        Ok(()) => tracing::info!(file = path, "reloaded the store tree"),
                        Err(e) => tracing::error!(error = %e, "reload failed; keeping the running store tree"),
                    }
                }
            }
        }
    };
    let mut server = ServerConfig::default();
    server.max_clients = config.max_clients;
    server.conn = config.conn_config();
    server.limits = config.limits();
    if let Some(bytes) = config.max_buffered {
        server.max_buffered = (bytes > 0).then_some(bytes);
    }
    serve(listeners, router, server, stopping).await?;
    let _ = http_stop.send(());
    if let Some(explorer) = explorer {
        explorer.await??;
    }
    if let Some(stores) = stores {
        stores.shutdown().await;
    }
    Ok(())
}
