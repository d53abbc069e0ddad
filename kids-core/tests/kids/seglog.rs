//! The segment log under `kill -9` (a child process appends and
//! acknowledges records; it is killed mid-append; every acknowledged record
//! survives) and under injected faults: a disk that fills mid-record, a
//! failed fsync, short writes, a truncation that fails; the acknowledged
//! mark's durability, released positions, and readers beside the writer.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use kids_core::{Batch, Error, Fsync, Position, SegmentConfig, SegmentLog};
use test_support::Process;

use super::support::FaultFs;

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

fn faulty(dir: &std::path::Path, config: SegmentConfig) -> (SegmentLog, FaultFs) {
    let fs = FaultFs::default();
    let (log, _) = SegmentLog::open_with(dir, config, Arc::new(fs.clone())).expect("open");
    (log, fs)
}

fn segment_len(dir: &std::path::Path, id: u64) -> u64 {
    std::fs::metadata(dir.join(format!("{id:020}.seg")))
        .expect("segment")
        .len()
}

fn is_enospc(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.raw_os_error() == Some(28))
}

#[test]
fn a_write_that_fails_partway_is_cut_back_to_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, fs) = faulty(dir.path(), SegmentConfig::default());
    log.append(b"first record").unwrap(); // 20 bytes
    // Room for the header and part of the next batch's first record.
    fs.set_free(Some(13));
    let mut batch = Batch::default();
    batch.push(&[b"second record"]);
    batch.push(&[b"third"]);
    let err = log.append_batch(&mut batch).expect_err("the disk is full");
    assert!(is_enospc(&err), "{err:?}");
    assert_eq!(batch.len(), 2, "the batch is kept, to be appended again");
    assert_eq!(
        log.end(),
        Position {
            segment: 1,
            offset: 20
        }
    );
    assert_eq!(
        segment_len(dir.path(), 1),
        20,
        "no partial record left behind"
    );
    assert!(!log.is_poisoned());
    // Room again: the same batch goes in at the same place.
    fs.set_free(None);
    let at = log.append_batch(&mut batch).unwrap();
    assert_eq!(
        at,
        Position {
            segment: 1,
            offset: 20
        }
    );
    log.append(b"fourth").unwrap();
    drop(log);
    let (log, recovery) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    assert_eq!((recovery.records, recovery.truncated_bytes), (4, 0));
    let mut at = log.start();
    assert_eq!(
        log.read(&mut at, 10).unwrap(),
        [&b"first record"[..], b"second record", b"third", b"fourth"]
    );
}

#[test]
fn a_partial_write_that_cannot_be_undone_poisons_the_log_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, fs) = faulty(dir.path(), SegmentConfig::default());
    log.append(b"kept").unwrap(); // 12 bytes
    fs.set_free(Some(10));
    fs.fail_truncate(true);
    assert!(is_enospc(
        &log.append(b"cut short by the full disk").unwrap_err()
    ));
    assert!(log.is_poisoned());
    fs.set_free(None);
    fs.fail_truncate(false);
    for attempt in [log.append(b"refused"), log.sync().map(|()| log.end())] {
        assert!(
            matches!(attempt, Err(Error::Poisoned { .. })),
            "{attempt:?}"
        );
    }
    assert!(matches!(log.roll(), Err(Error::Poisoned { .. })));
    assert_eq!(
        segment_len(dir.path(), 1),
        22,
        "the torn bytes are still there"
    );
    drop(log);
    // Reopening cuts the torn tail; positions go on from the last whole record.
    let (mut log, recovery) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    assert_eq!((recovery.records, recovery.truncated_bytes), (1, 10));
    assert_eq!(
        log.append(b"after").unwrap(),
        Position {
            segment: 1,
            offset: 12
        }
    );
    let mut at = log.start();
    assert_eq!(log.read(&mut at, 10).unwrap(), [&b"kept"[..], b"after"]);
}

#[test]
fn a_failed_fsync_poisons_the_log_and_is_never_retried_as_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, fs) = faulty(dir.path(), SegmentConfig::default().fsync(Fsync::Every(1)));
    let reader = log.reader();
    log.append(b"synced").unwrap();
    let committed = reader.end();
    fs.fail_next_sync();
    let err = log.append(b"not known durable").expect_err("fsync fails");
    assert!(
        matches!(&err, Error::Io(e) if e.raw_os_error() == Some(5)),
        "{err:?}"
    );
    assert!(log.is_poisoned());
    // The next sync would succeed on this disk: it must not be believed.
    assert!(matches!(log.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(log.append(b"more"), Err(Error::Poisoned { .. })));
    assert_eq!(
        reader.end(),
        committed,
        "readers never see the unsynced record"
    );
    assert!(
        matches!(
            reader.wait_advance(committed, Duration::ZERO),
            Err(Error::Poisoned { .. })
        ),
        "a reader waiting at the end learns nothing more will come"
    );
}

#[test]
fn short_writes_are_carried_on_to_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, fs) = faulty(dir.path(), SegmentConfig::default());
    fs.short_writes(Some(3));
    for i in 0..10u8 {
        log.append(&[i + 1; 17]).unwrap();
    }
    assert_eq!(log.end().offset, 10 * 25);
    drop(log);
    let (log, recovery) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    assert_eq!((recovery.records, recovery.truncated_bytes), (10, 0));
    let mut at = log.start();
    let got = log.read(&mut at, 100).unwrap();
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, r)| r[..] == [i as u8 + 1; 17])
    );
}

#[test]
fn save_mark_syncs_its_file_before_the_rename_and_the_directory_after() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, fs) = faulty(dir.path(), SegmentConfig::default());
    let at = log.append(b"x").unwrap();
    fs.take_journal();
    log.save_mark(at).unwrap();
    assert_eq!(
        fs.take_journal(),
        [
            "write acked.pos.tmp",
            "sync acked.pos.tmp",
            "rename acked.pos.tmp acked.pos",
            "sync_dir"
        ]
    );
    assert_eq!(log.mark(), at);
    // A full disk: the mark is not saved, the old one stays.
    let later = log.append(b"y").unwrap();
    fs.set_free(Some(0));
    assert!(log.save_mark(later).is_err());
    assert_eq!(log.mark(), at);
}

#[test]
fn a_position_inside_a_released_segment_is_an_error_not_a_jump_to_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = SegmentConfig::default().max_segment_bytes(64);
    let (mut log, _) = SegmentLog::open(dir.path(), config).unwrap();
    for i in 0..9u32 {
        log.append(format!("record-{i:02}").as_bytes()).unwrap(); // 17 bytes: three a segment
    }
    let mut reader = log.reader();
    let mut lagging = log.start();
    assert_eq!(reader.read(&mut lagging, 1).unwrap().len(), 1); // inside segment 1
    let mut at_end_of_1 = log.start();
    log.read(&mut at_end_of_1, 3).unwrap(); // the end of segment 1
    assert_eq!(
        at_end_of_1,
        Position {
            segment: 1,
            offset: 51
        }
    );
    log.release_before(at_end_of_1).unwrap();
    let start = Position {
        segment: 2,
        offset: 0,
    };
    assert_eq!(log.start(), start);
    for result in [
        log.read(&mut lagging.clone(), 10).map(|_| ()),
        reader.read(&mut lagging.clone(), 10).map(|_| ()),
        reader.wait_advance(lagging, Duration::ZERO).map(|_| ()),
    ] {
        match result {
            Err(Error::Released { at, start: s }) => assert_eq!((at, s), (lagging, start)),
            other => panic!("expected Released, got {other:?}"),
        }
    }
    // The exact end of the segment released is where the log starts now.
    let mut at = at_end_of_1;
    assert_eq!(reader.read(&mut at, 1).unwrap(), [&b"record-03"[..]]);
    let mut at = at_end_of_1;
    assert_eq!(log.read(&mut at, 1).unwrap(), [&b"record-03"[..]]);
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn readers_read_up_to_the_committed_end_and_are_woken_when_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        SegmentLog::open(dir.path(), SegmentConfig::default().fsync(Fsync::Every(2))).unwrap();
    let mut reader = log.reader();
    let mut other = reader.clone();
    let count = Arc::new(Count::default());
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let from = reader.start();
    assert!(reader.poll_advance(from, &mut cx).is_pending());
    log.append(b"one").unwrap();
    assert!(
        reader.poll_advance(from, &mut cx).is_pending(),
        "written, not yet synced: not committed under Every(2)"
    );
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    log.append(b"two").unwrap(); // the second append syncs
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the commit");
    assert!(matches!(reader.poll_advance(from, &mut cx), Poll::Ready(Ok(end)) if end == log.end()));
    let mut at = from;
    assert_eq!(reader.read(&mut at, 10).unwrap(), [&b"one"[..], b"two"]);
    assert_eq!(at, reader.end());
    log.append(b"three").unwrap();
    let mut at2 = from;
    assert_eq!(
        other.read(&mut at2, 10).unwrap().len(),
        2,
        "up to the committed end only"
    );
    log.sync().unwrap();
    assert_eq!(other.read(&mut at2, 10).unwrap(), [&b"three"[..]]);

    // A reader on another thread waits for the end to move.
    let waiting = std::thread::spawn(move || {
        let end = reader
            .wait_advance(at2, Duration::from_secs(60))
            .expect("no error")
            .expect("the end moved within a minute");
        let mut at = at2;
        (end, reader.read(&mut at, 10).expect("read"))
    });
    log.append(b"four").unwrap();
    log.sync().unwrap();
    let (end, got) = waiting.join().unwrap();
    assert_eq!(end, log.end());
    assert_eq!(got, [&b"four"[..]]);
}

#[test]
fn a_writer_in_fsync_holds_no_lock_its_readers_need() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, fs) = faulty(dir.path(), SegmentConfig::default().fsync(Fsync::Every(1)));
    log.append(b"committed").unwrap();
    let mut reader = log.reader();
    let (entered, go) = fs.hold_syncs();
    let writer = std::thread::spawn(move || {
        log.append(b"being synced").unwrap();
        log
    });
    entered.recv().expect("the writer is inside fsync");
    // Were the readers' lock held across the fsync, these would never return.
    let mut at = reader.start();
    assert_eq!(reader.read(&mut at, 10).unwrap(), [&b"committed"[..]]);
    assert_eq!(reader.end(), at);
    let waker = Waker::noop();
    assert!(
        reader
            .poll_advance(at, &mut Context::from_waker(waker))
            .is_pending()
    );
    go.send(()).unwrap();
    let log = writer.join().unwrap();
    assert_eq!(reader.read(&mut at, 10).unwrap(), [&b"being synced"[..]]);
    assert_eq!(at, log.end());
}
