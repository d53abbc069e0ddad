//! miller-master: events from sink sessions and kids subscriptions become jobs on beanstalk tubes.
//!
//! Run it: `cargo run -p examples --bin miller-master -- -c examples/conf/miller.conf`
//! (a beanstalkd on 127.0.0.1:11300, a sink on 3390 and a kids on 3388, as
//! the file says; the format is documented in miller-core's
//! `dispatch::MillerConfig`). Every source runs its own loop and queue
//! connection. It prints `miller-master running: …` on stderr once
//! started; SIGTERM or Ctrl-C stops reading, lets a batch in flight finish
//! (an unacknowledged sink batch comes again to the next master), exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use examples::miller::registry;
use miller_core::Client;
use miller_core::dispatch::{KidsSource, Master, MillerConfig, SinkSource, SourceConfig};
use tokio::sync::watch;

const USAGE: &str = "usage: miller-master -c FILE";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("-c"), Some(path), None) => path,
        _ => {
            eprintln!("miller-master: {USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match MillerConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("miller-master: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = match registry(&config) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("miller-master: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("miller-master: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("miller-master: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: MillerConfig,
    registry: Arc<miller_core::dispatch::Registry>,
) -> Result<(), Box<dyn std::error::Error>> {
    if config.sources.is_empty() {
        return Err(format!("{}: no `source` to read events from", config.file).into());
    }
    let stopping = examples::shutdown_signal()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for source in &config.sources {
        let mut master = Master::new(registry.clone(), config.master.clone());
        let addr = config.beanstalk.clone();
        let connect = move || Client::connect(addr.clone());
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match source.clone() {
            SourceConfig::Sink(s) => {
                let mut src = SinkSource::new(s.addr, s.session, s.filters, s.app);
                tasks.spawn(async move { master.run(&mut src, connect, stopped).await });
            }
            SourceConfig::Kids(k) => {
                let mut src = KidsSource::new(k.addr, k.channels, k.patterns, k.app);
                tasks.spawn(async move { master.run(&mut src, connect, stopped).await });
            }
            other => return Err(format!("unsupported source {other:?}").into()),
        }
    }
    eprintln!(
        "miller-master running: {} source(s), beanstalk {}",
        config.sources.len(),
        config.beanstalk
    );
    tokio::select! {
        () = stopping => {}
        Some(r) = tasks.join_next() => {
            r??;
            return Err("a source ended".into());
        }
    }
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
