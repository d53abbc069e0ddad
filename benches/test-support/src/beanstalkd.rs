//! A real beanstalkd for tests: on a free loopback port, killed when dropped.

use std::path::Path;
use std::process::Command;

use crate::{Process, Stream, peer, wait_for};

/// A real `beanstalkd` (Debian's package `beanstalkd`) on a free loopback
/// port, killed when dropped: the reference miller's engine is compared with.
#[derive(Debug)]
pub struct Beanstalkd {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    process: Process,
}

impl Beanstalkd {
    /// Starts one in memory only and waits until it accepts connections;
    /// `None` when beanstalkd is not installed (skipped with a line, as
    /// [`peer`] says, or a failure under `REQUIRE_PEERS=1`).
    ///
    /// # Panics
    /// When beanstalkd is installed but does not start.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts one with a binlog in `dir` and the given extra arguments
    /// (such as `-f 0`, fsync every write, or `-F`, never).
    ///
    /// # Panics
    /// When beanstalkd is installed but does not start.
    pub fn start_with_binlog(dir: &Path, args: &[&str]) -> Option<Self> {
        let dir = dir.to_string_lossy().into_owned();
        let mut all = vec!["-b", dir.as_str()];
        all.extend_from_slice(args);
        Self::start_with(&all)
    }

    fn start_with(args: &[&str]) -> Option<Self> {
        let bin = peer("beanstalkd", "beanstalkd")?;
        // Port 0: the kernel picks a free port as beanstalkd binds it, and
        // `-V` makes beanstalkd print it (`bind FD 127.0.0.1:PORT`). A port
        // chosen here and passed in could be taken by another server in the
        // meantime, and the connections meant for this beanstalkd would
        // reach that one instead.
        let mut cmd = Command::new(bin);
        cmd.args(["-V", "-l", "127.0.0.1", "-p", "0"]).args(args);
        let process = Process::start("beanstalkd", cmd).expect("start beanstalkd");
        let line = process
            .wait_for_line(Stream::Stdout, |l| l.starts_with("bind "))
            .unwrap_or_else(|e| panic!("{e}"));
        let port = bound_port(&line).unwrap_or_else(|| {
            panic!("beanstalkd printed {line:?}: no port (beanstalkd 1.12 or later prints the one it binds)")
        });
        // it prints the port once bound, just before it listens
        wait_for(&format!("beanstalkd on port {port} to accept"), || {
            process.check_running().unwrap_or_else(|e| panic!("{e}"));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Self { port, process })
    }

    /// The process, to signal or kill it.
    pub fn process(&self) -> &Process {
        &self.process
    }
}

/// The port of beanstalkd's `bind FD HOST:PORT` line; `None` when it has
/// none, or 0 (beanstalkd before 1.12 printed the port it was given).
fn bound_port(line: &str) -> Option<u16> {
    let (_, port) = line.rsplit_once(':')?;
    port.parse().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_beanstalkd_binds() {
        assert_eq!(bound_port("bind 3 127.0.0.1:40685"), Some(40685));
        assert_eq!(bound_port("bind 3 [::1]:11300"), Some(11300));
        assert_eq!(bound_port("bind 3 127.0.0.1:0"), None);
        assert_eq!(bound_port("bind 3 127.0.0.1:x"), None);
        assert_eq!(bound_port("bind 3"), None);
    }

    #[test]
    fn several_started_at_once_are_as_many_servers() {
        let started: Vec<Beanstalkd> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(Beanstalkd::start)).collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        // empty when beanstalkd is not installed: peer() said so
        for b in &started {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port)).unwrap();
            let stats = stats(&mut s);
            assert!(
                stats.contains(&format!("\npid: {}\n", b.process().id())),
                "port {} is served by another process than the one started:\n{stats}",
                b.port
            );
        }
    }

    /// The body of `stats` on `s`.
    fn stats(s: &mut std::net::TcpStream) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        s.write_all(b"stats\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        r.read_line(&mut head).unwrap();
        let len: usize = head
            .strip_prefix("OK ")
            .and_then(|n| n.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("stats answered {head:?}"));
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }
}
