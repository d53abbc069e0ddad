//! The segment log under `kill -9`: a child process appends and acknowledges
//! records; it is killed mid-append; every acknowledged record survives.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

use kids_core::{SegmentConfig, SegmentLog};
use test_support::Process;

const CHILD_DIR: &str = "KIDS_SEGLOG_CHILD_DIR";

fn config() -> SegmentConfig {
    SegmentConfig::default().max_segment_bytes(256 * 1024)
}

/// Record `i`: its index and a body of varying length, so kills land anywhere in a record.
fn record(i: u64) -> Vec<u8> {
    let mut r = format!("rec-{i:010}:").into_bytes();
    r.extend(std::iter::repeat_n(
        b'a' + (i % 26) as u8,
        (i * 7 % 500) as usize,
    ));
    r
}

fn all(log: &SegmentLog) -> Vec<bytes::Bytes> {
    let mut at = log.start();
    log.read(&mut at, usize::MAX).expect("read the log")
}

/// The child half of `kill9_mid_append_loses_nothing_acknowledged`; does
/// nothing unless that test starts it with the directory to append to.
#[test]
#[ignore = "child process of kill9_mid_append_loses_nothing_acknowledged, which runs it"]
fn seglog_child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let (mut log, _) = SegmentLog::open(dir, config()).expect("child opens the log");
    let start = all(&log).len() as u64;
    let mut out = std::io::stdout().lock();
    for i in start.. {
        log.append(&record(i)).expect("append");
        // Acknowledged: append returned, so the record is in the kernel.
        writeln!(out, "ACK {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn kill9_mid_append_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked_total = 0u64;
    for round in 0..3 {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "kids::seglog::seglog_child_appender",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path());
        let (child, stdout) =
            Process::start_with_stdout("the appender", cmd).expect("start the child");
        let mut last_ack = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child line");
            if let Some(n) = line.strip_prefix("ACK ") {
                let n: u64 = n.parse().expect("ack number");
                last_ack = Some(n);
                if n >= acked_total + 20_000 {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL the child mid-append");
        acked_total = last_ack.unwrap_or_else(|| {
            panic!(
                "the child acknowledged no record; its stderr:\n{}",
                child.tail(20)
            )
        }) + 1;

        let (log, recovery) = SegmentLog::open(dir.path(), config()).expect("reopen after kill -9");
        let records = all(&log);
        assert!(
            records.len() as u64 >= acked_total,
            "round {round}: {} records, {acked_total} acknowledged",
            records.len()
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                &r[..],
                &record(i as u64)[..],
                "round {round}: record {i} intact and in order"
            );
        }
        assert_eq!(recovery.records, records.len() as u64);
        assert!(log.segment_count() > 1, "the run spans several segments");
    }
}
