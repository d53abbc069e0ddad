//! The file store on a simulated clock: rotation, templates, flush, fsync, sanitising.

use std::path::Path;
use std::time::{Duration, SystemTime};

use kids_core::{FileStore, FileStoreConfig, Fsync};

use super::support::at_secs;

/// 2013-11-30 12:00:00 UTC.
const NOON: u64 = 1_385_812_800;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn store(root: &Path, f: impl FnOnce(FileStoreConfig) -> FileStoreConfig) -> FileStore {
    FileStore::new(f(FileStoreConfig::new(format!(
        "{}/[topic]/[date]",
        root.display()
    ))))
}

#[test]
fn rotates_at_bucket_boundaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = store(dir.path(), |c| c.rotate_secs(300).flush_secs(0));
    for (secs, line) in [
        (NOON, "a"),
        (NOON + 299, "b"),
        (NOON + 300, "c"),
        (NOON + 301, "d"),
        (NOON + 900, "e"),
    ] {
        s.append(b"web", line.as_bytes(), at(secs)).expect("append");
    }
    let day = dir.path().join("web/2013-11-30");
    assert_eq!(read(day.join("12-00-00.log")), "a\nb\n");
    assert_eq!(read(day.join("12-05-00.log")), "c\nd\n");
    assert_eq!(read(day.join("12-15-00.log")), "e\n");
    assert!(
        !day.join("12-10-00.log").exists(),
        "no file for an empty bucket"
    );
    assert_eq!(s.stats().rotated, 2);
    assert_eq!(s.stats().messages, 5);
}

#[test]
fn idle_topics_are_closed_when_their_bucket_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = store(dir.path(), |c| c.rotate_secs(60).flush_secs(3600));
    s.append(b"quiet", b"one", at(NOON)).expect("append");
    s.tick(at_secs(NOON)).expect("tick"); // first tick flushes
    s.append(b"quiet", b"two", at(NOON + 1)).expect("append");
    s.tick(at_secs(NOON + 30)).expect("tick");
    let file = dir.path().join("quiet/2013-11-30/12-00-00.log");
    assert_eq!(
        read(&file),
        "one\n",
        "buffered until the flush interval or the bucket end"
    );
    s.tick(at_secs(NOON + 60)).expect("tick");
    assert_eq!(
        read(&file),
        "one\ntwo\n",
        "closed (and so written) when its bucket ended"
    );
    assert_eq!(s.stats().rotated, 1);
}

#[test]
fn flush_interval_writes_buffered_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = store(dir.path(), |c| c.flush_secs(5));
    s.tick(at_secs(NOON)).expect("tick");
    s.append(b"t", b"x", at(NOON + 1)).expect("append");
    let file = dir.path().join("t/2013-11-30/12-00-00.log");
    s.tick(at_secs(NOON + 4)).expect("tick");
    assert_eq!(read(&file), "", "not yet: 4 s since the last flush");
    s.tick(at_secs(NOON + 5)).expect("tick");
    assert_eq!(read(&file), "x\n");
}

#[test]
fn fsync_policies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut every = store(dir.path(), |c| c.fsync(Fsync::Every(3)));
    for i in 0..7 {
        every
            .append(b"e", format!("{i}").as_bytes(), at(NOON))
            .expect("append");
    }
    assert_eq!(every.stats().syncs, 2);
    let mut on_rotate = store(dir.path(), |c| c.fsync(Fsync::OnRotate).rotate_secs(60));
    on_rotate.append(b"r", b"1", at(NOON)).expect("append");
    on_rotate.append(b"r", b"2", at(NOON + 60)).expect("append");
    assert_eq!(on_rotate.stats().syncs, 1, "one sync: the rotated file");
    // Closed for room, a file is done with too: synced under `rotate`.
    let mut lru = store(dir.path(), |c| c.fsync(Fsync::OnRotate).max_open_files(1));
    lru.append(b"l1", b"1", at(NOON)).expect("append");
    lru.append(b"l2", b"2", at(NOON)).expect("append");
    assert_eq!(lru.stats().syncs, 1, "l1 closed to make room for l2");
    // Under `every N`, a rotation syncs only what is not synced yet.
    let mut every_rot = store(dir.path(), |c| c.fsync(Fsync::Every(2)).rotate_secs(60));
    every_rot.append(b"x", b"1", at(NOON)).expect("append");
    every_rot.append(b"x", b"2", at(NOON)).expect("append"); // sync 1: two written
    every_rot.append(b"x", b"3", at(NOON + 60)).expect("append"); // rotation: nothing unsynced
    assert_eq!(every_rot.stats().syncs, 1);
    let mut never = store(dir.path(), |c| c.rotate_secs(60));
    never.append(b"n", b"1", at(NOON)).expect("append");
    never.append(b"n", b"2", at(NOON + 60)).expect("append");
    assert_eq!(never.stats().syncs, 0);
}

#[test]
fn hostile_topics_stay_inside_the_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("logs");
    let mut s = FileStore::new(
        FileStoreConfig::new(format!("{}/[topic]", root.display()))
            .name("[topic].log")
            .flush_secs(0),
    );
    for topic in [&b"../escape"[..], b"..", b"/etc/passwd", b"a\0b", b"."] {
        s.append(topic, b"x", at(NOON)).expect("append");
    }
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("logs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".._escape", "_.", "_..", "_etc_passwd", "a_b"]);
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("root").count(),
        1,
        "nothing written beside logs/"
    );
}

#[test]
fn utc_offset_moves_names_and_buckets_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = store(dir.path(), |c| {
        c.rotate_secs(86_400)
            .utc_offset_secs(8 * 3600)
            .flush_secs(0)
            .name("day.log")
    });
    // 15:59 and 16:00 UTC are 23:59 on the 30th and 00:00 on the 1st at +08:00.
    s.append(b"t", b"late", at(NOON + 4 * 3600 - 60))
        .expect("append");
    s.append(b"t", b"early", at(NOON + 4 * 3600))
        .expect("append");
    assert_eq!(read(dir.path().join("t/2013-11-30/day.log")), "late\n");
    assert_eq!(read(dir.path().join("t/2013-12-01/day.log")), "early\n");
}

#[test]
fn open_files_are_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = store(dir.path(), |c| c.max_open_files(2).flush_secs(3600));
    for t in ["a", "b", "c", "a"] {
        s.append(t.as_bytes(), t.as_bytes(), at(NOON))
            .expect("append");
    }
    assert_eq!(
        s.stats().opened,
        4,
        "a was closed (and written) to make room, then reopened"
    );
    assert_eq!(read(dir.path().join("a/2013-11-30/12-00-00.log")), "a\n");
    s.close_all().expect("close");
    assert_eq!(read(dir.path().join("a/2013-11-30/12-00-00.log")), "a\na\n");
}

#[test]
fn an_unwritable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").expect("blocker");
    let mut s = FileStore::new(FileStoreConfig::new(format!(
        "{}/[topic]",
        blocker.display()
    )));
    assert!(matches!(
        s.append(b"t", b"x", at(NOON)),
        Err(kids_core::Error::Io(_))
    ));
}
