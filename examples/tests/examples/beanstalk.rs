//! The beanstalk example: serves the beanstalk protocol, keeps what it
//! acknowledged across a restart, and exits 0 on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use test_support::{Process, Stream};

use super::sigterm_and_wait;

fn start(data: &Path) -> (Process, u16) {
    start_with(data, &[])
}

fn start_with(data: &Path, args: &[&str]) -> (Process, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beanstalk"));
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--fsync", "always"])
        .args(args)
        .arg("--data-dir")
        .arg(data);
    let process = Process::start("beanstalk", cmd).unwrap_or_else(|e| panic!("{e}"));
    let line = process
        .wait_for_line(Stream::Stderr, |l| l.starts_with("beanstalk listening on "))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (process, port)
}

/// Sends `request` and reads until `expected.len()` bytes came.
fn exchange(conn: &mut TcpStream, request: &[u8], expected: &[u8]) {
    conn.write_all(request).expect("send");
    let mut got = vec![0u8; expected.len()];
    conn.read_exact(&mut got).expect("reply");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

#[test]
fn beanstalk_serves_recovers_and_exits_0_on_sigterm() {
    let data = tempfile::tempdir().expect("tempdir");
    let (child, port) = start(data.path());
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    exchange(
        &mut conn,
        b"put 0 0 60 5\r\nhello\r\nput 0 0 60 3\r\nbye\r\ndelete 2\r\n",
        b"INSERTED 1\r\nINSERTED 2\r\nDELETED\r\n",
    );
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "exit status {status:?}");
    let (child, port) = start(data.path());
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    exchange(
        &mut conn,
        b"peek 1\r\npeek 2\r\nreserve\r\n",
        b"FOUND 1 5\r\nhello\r\nNOT_FOUND\r\nRESERVED 1 5\r\nhello\r\n",
    );
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "exit status {status:?}");
}

/// `stats` names the host as beanstalkd does (its name and uname's kernel
/// version), and `--request-timeout` bounds a half-sent request (`0`
/// waits for ever, as beanstalkd).
#[test]
fn beanstalk_reports_its_host_and_applies_its_request_timeout() {
    let data = tempfile::tempdir().expect("tempdir");
    let (child, port) = start_with(data.path(), &["--request-timeout", "1s"]);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"stats\r\n").expect("send");
    let mut stats = Vec::new();
    while !stats.ends_with(b"\n\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).expect("stats");
        stats.push(byte[0]);
    }
    let stats = String::from_utf8_lossy(&stats);
    for (file, field) in [("hostname", "hostname"), ("version", "os")] {
        if let Ok(value) = std::fs::read_to_string(format!("/proc/sys/kernel/{file}")) {
            let want = format!("\n{field}: {}\n", value.trim());
            assert!(stats.contains(&want), "{want:?} in {stats}");
        }
    }
    // Half a put, then silence: closed once the timeout passes.
    conn.write_all(b"put 0 0 60 5\r\nhel").expect("send");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("closed, not timed out");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(sigterm_and_wait(&child).success());
    let out = Command::new(env!("CARGO_BIN_EXE_beanstalk"))
        .args(["--request-timeout", "soon"])
        .output()
        .expect("run beanstalk");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--request-timeout"), "{err}");
}
