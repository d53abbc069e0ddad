//! A real beanstalkd for tests: on a free loopback port, killed when dropped.

use std::path::Path;
use std::process::Command;

use crate::{Process, free_port, peer, wait_for};

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
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()]).args(args);
        let process = Process::start("beanstalkd", cmd).expect("start beanstalkd");
        wait_for(&format!("beanstalkd on port {port} to accept"), || {
            process.check_running().unwrap_or_else(|e| panic!("{e}"));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Self {
            port,
            process,
        })
    }

    /// The process, to signal or kill it.
    pub fn process(&self) -> &Process {
        &self.process
    }
}
