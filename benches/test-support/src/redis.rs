//! A real redis-server for tests: on a free loopback port, without
//! persistence, killed when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Process, free_port, peer, wait_for};

/// A real `redis-server` on a free loopback port (`--save ''
/// --appendonly no`), killed when dropped: the reference that differential
/// tests compare a server of the SDK with.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    _process: Process,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`; `None` when
    /// redis-server is not installed (skipped with a line, as [`peer`]
    /// says, or a failure under `REQUIRE_PEERS=1`).
    ///
    /// # Panics
    /// When redis-server is installed but does not start.
    pub fn start() -> Option<Self> {
        let bin = peer("redis-server", "redis-server")?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let process = Process::start("redis-server", cmd).expect("start redis-server");
        wait_for(
            &format!("redis-server on port {port} to answer PING"),
            || {
                process.check_running().unwrap_or_else(|e| panic!("{e}"));
                answers_ping(port)
            },
        );
        Some(Self {
            port,
            _process: process,
        })
    }
}

/// Whether a RESP server on 127.0.0.1:`port` answers `PING` now.
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Runs `redis-cli -p PORT args...` (the binary `bin`, found with [`peer`])
/// and returns its stdout.
///
/// # Panics
/// When redis-cli does not run or exits with a failure: the message has
/// its stderr.
pub fn redis_cli(bin: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
