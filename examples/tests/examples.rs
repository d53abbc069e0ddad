//! Runs each example program as a user would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn kids_serves_and_exits_0_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kids"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kids");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the listening line");
    let addr = line
        .trim()
        .strip_prefix("kids listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n")
        .expect("send");
    let mut reply = [0u8; 15];
    conn.read_exact(&mut reply).expect("replies");
    assert_eq!(&reply, b"+PONG\r\n$2\r\nhi\r\n");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "kids exits 0 on SIGTERM");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after shutdown: {rest:?}");
}

#[test]
fn kids_rejects_unknown_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_kids"))
        .arg("--bogus")
        .output()
        .expect("run kids");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}
