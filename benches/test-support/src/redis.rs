//! A real redis-server for tests: on a free loopback port, without
//! persistence, killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Poll, Process, WAIT_LIMIT, free_port, peer};

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
        Self::start_on(free_port)
    }

    /// [`RedisServer::start`] on the ports `next_port` gives.
    fn start_on(mut next_port: impl FnMut() -> u16) -> Option<Self> {
        let bin = peer("redis-server", "redis-server")?;
        let mut taken = Vec::new();
        for _ in 0..START_ATTEMPTS {
            // redis cannot be asked to pick a port and say which: another
            // server may take this one before redis binds it, and answer in
            // its place; only the one whose process_id is ours counts
            let port = next_port();
            let mut cmd = Command::new(&bin);
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
            let ready = Poll::default().until(|| {
                if let Err(e) = process.check_running() {
                    return Some(Err(e));
                }
                (server_pid(port) == Some(process.id())).then_some(Ok(()))
            });
            match ready {
                Some(Ok(())) => {
                    return Some(Self {
                        port,
                        _process: process,
                    });
                }
                Some(Err(e)) if e.contains("Address already in use") => taken.push(port),
                Some(Err(e)) => panic!("{e}"),
                None => panic!(
                    "redis-server on port {port} did not answer INFO within {WAIT_LIMIT:?}; its last output:\n{}",
                    process.tail(20)
                ),
            }
        }
        panic!("redis-server: ports {taken:?} were taken before it could bind them")
    }
}

/// How many ports [`RedisServer::start`] tries.
const START_ATTEMPTS: usize = 5;

/// The `process_id` that a Redis server on 127.0.0.1:`port` gives in `INFO
/// server` now; `None` when nothing answers so.
fn server_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head).ok()?;
    let len: usize = head.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_server_holds_is_passed_over() {
        let Some(other) = RedisServer::start() else {
            return; // not installed: peer() said so
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = listener.local_addr().unwrap().port();
        let mut offered = vec![held, other.port];
        let ours = RedisServer::start_on(|| offered.pop().unwrap_or_else(free_port)).unwrap();
        assert!(offered.is_empty(), "both taken ports were tried");
        assert_eq!(server_pid(ours.port), Some(ours._process.id()));
        assert_eq!(server_pid(other.port), Some(other._process.id()));
    }

    #[test]
    fn a_port_without_a_server_has_no_pid() {
        let port = free_port();
        assert_eq!(server_pid(port), None);
    }
}
