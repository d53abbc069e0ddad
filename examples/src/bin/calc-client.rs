//! calc-client: calls the calc service of a running `calc-server`.
//!
//! Run it: `cargo run --release -p examples --bin calc-client -- multiply 3 4`
//! prints `12`, and on stderr whether the answer was computed or came from
//! the server's cache. Operations: `plus`, `minus`, `multiply`, `divide`.
//!
//! Options: `--host H`, `--port P` (default 127.0.0.1:7300), `--socket PATH`,
//! `--no-cache` (bypass the cache for this call), `--deadline MS`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use examples::calc::{AdvancedClient, CalcRequest, SimpleClient};
use wish_core::CallOptions;
use wish_core::net::{Client, Endpoint};

const USAGE: &str = "usage: calc-client [--host H] [--port P] [--socket PATH] [--no-cache] [--deadline MS] plus|minus|multiply|divide A B";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calc-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let (mut host, mut port, mut socket) = ("127.0.0.1".to_string(), 7300u16, None);
    let mut options = CallOptions::new();
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--socket" => socket = Some(value()?),
            "--no-cache" => options = options.no_cache(),
            "--deadline" => {
                let ms = value()?.parse().map_err(|e| format!("--deadline: {e}"))?;
                options = options.deadline(Duration::from_millis(ms));
            }
            _ => words.push(arg),
        }
    }
    let [op, a, b] = <[String; 3]>::try_from(words).map_err(|_| USAGE.to_string())?;
    let number = |s: &str| s.parse::<i32>().map_err(|e| format!("{s}: {e}"));
    let request = CalcRequest {
        a: number(&a)?,
        b: number(&b)?,
    };
    let endpoint = match socket {
        Some(path) => Endpoint::Unix(path.into()),
        None => Endpoint::Tcp(format!("{host}:{port}")),
    };
    let channel = Client::new(endpoint);
    let (simple, advanced) = (
        SimpleClient::new(channel.clone()),
        AdvancedClient::new(channel),
    );
    let reply = match op.as_str() {
        "plus" => simple.plus_with(request, options).await,
        "minus" => simple.minus_with(request, options).await,
        "multiply" => advanced.multiply_with(request, options).await,
        "divide" => advanced.divide_with(request, options).await,
        _ => return Err(USAGE.to_string()),
    }
    .map_err(|status| status.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", reply.value.c).map_err(|e| e.to_string())?;
    eprintln!(
        "({})",
        if reply.from_cache {
            "from the server's cache"
        } else {
            "computed by the server"
        }
    );
    Ok(())
}
