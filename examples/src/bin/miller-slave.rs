//! miller-slave: reserves jobs from beanstalk tubes and runs the handlers they name.
//!
//! Run it: `cargo run -p examples --bin miller-slave -- -c examples/conf/miller.conf --tubes zhihu`
//! (`--tubes a,b` overrides the file's `worker { tubes …; }`). It prints
//! `miller-slave running: …` on stderr once started; SIGTERM or Ctrl-C stops
//! reserving, lets jobs in flight finish within the grace (`worker { grace
//! 30s; }`), releases those still running, and exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use examples::miller::registry;
use miller_core::Client;
use miller_core::dispatch::{MillerConfig, Worker};

const USAGE: &str = "usage: miller-slave -c FILE [--tubes T1,T2]";

fn parse_args() -> Result<(String, Option<Vec<String>>), String> {
    let (mut config, mut tubes) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "-c" => config = Some(value()?),
            "--tubes" | "--miller-beanstalk-tubes" => {
                tubes = Some(
                    value()?
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            _ => return Err(format!("unknown option {flag}; {USAGE}")),
        }
    }
    Ok((config.ok_or(USAGE)?, tubes))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let (path, tubes) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("miller-slave: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match MillerConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("miller-slave: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(tubes) = tubes {
        config.worker.tubes = tubes;
    }
    let registry = match registry(&config) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("miller-slave: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("miller-slave: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let stopping = examples::shutdown_signal()?;
        let worker = Worker::new(registry, config.worker.clone());
        let addr = config.beanstalk.clone();
        eprintln!(
            "miller-slave running: tubes {}, concurrency {}, beanstalk {addr}",
            config.worker.tubes.join(","),
            config.worker.concurrency
        );
        worker
            .run(move || Client::connect(addr.clone()), stopping)
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("miller-slave: {e}");
            ExitCode::FAILURE
        }
    }
}
