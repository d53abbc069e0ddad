//! Recovery in process: what a store acknowledged comes back after a
//! reopen; a torn tail is cut; a flipped byte is reported, never skipped;
//! compaction keeps the log in proportion to the live jobs.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use kids_core::{SegmentConfig, SegmentLog};
use miller_core::Error;
use miller_core::engine::{ClientId, Engine, EngineConfig, Handled};
use miller_core::proto::{Request, Response};
use miller_core::store::{Recovered, Store, StoreConfig};
use sink_core::FsyncPolicy;

fn open_with(dir: &Path, config: StoreConfig) -> Result<(Store, Recovered), Error> {
    Store::open(
        dir,
        config,
        Engine::new(EngineConfig::default()),
        Instant::now(),
        SystemTime::now(),
    )
}

fn open(dir: &Path) -> (Store, Recovered) {
    open_with(dir, StoreConfig::default()).expect("open")
}

fn call(store: &Store, client: ClientId, request: Request) -> Response {
    match store.handle(client, request, Instant::now()).0 {
        Handled::Reply(r) => r,
        other => panic!("{other:?}"),
    }
}

fn put(body: &str, delay: u32) -> Request {
    Request::Put {
        priority: 100,
        delay,
        ttr: 60,
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn found(id: u64, body: &str) -> Response {
    Response::Found {
        id,
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// Puts a, b, c (reserved, then buried), d (delayed an hour) and e
/// (deleted, the highest id) in tube `t`; commits.
fn populate(store: &Store) {
    let c = store.connect(Instant::now());
    assert_eq!(
        call(store, c, Request::Use("t".into())),
        Response::Using("t".into())
    );
    assert_eq!(
        call(store, c, Request::Watch("t".into())),
        Response::Watching(2)
    );
    for (i, b) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(call(store, c, put(b, 0)), Response::Inserted(i as u64 + 1));
    }
    assert_eq!(call(store, c, put("d", 3600)), Response::Inserted(4));
    assert_eq!(call(store, c, put("e", 0)), Response::Inserted(5));
    assert_eq!(call(store, c, Request::Delete(2)), Response::Deleted);
    assert_eq!(call(store, c, Request::Delete(5)), Response::Deleted);
    assert_eq!(
        call(store, c, Request::ReserveJob(3)),
        Response::Reserved {
            id: 3,
            body: Bytes::from_static(b"c")
        }
    );
    assert_eq!(
        call(store, c, Request::Bury { id: 3, priority: 7 }),
        Response::Buried
    );
    // Reserved, never released: ready again after a restart.
    assert!(matches!(
        call(store, c, Request::ReserveJob(1)),
        Response::Reserved { id: 1, .. }
    ));
    store.commit(Instant::now()).expect("commit");
}

fn check_populated(store: &Store) {
    let c = store.connect(Instant::now());
    assert_eq!(call(store, c, Request::Peek(1)), found(1, "a"));
    assert_eq!(call(store, c, Request::Peek(2)), Response::NotFound);
    assert_eq!(call(store, c, Request::Peek(3)), found(3, "c"));
    assert_eq!(call(store, c, Request::Peek(4)), found(4, "d"));
    assert_eq!(call(store, c, Request::Peek(5)), Response::NotFound);
    call(store, c, Request::Use("t".into()));
    assert_eq!(call(store, c, Request::PeekReady), found(1, "a"));
    assert_eq!(call(store, c, Request::PeekBuried), found(3, "c"));
    assert_eq!(call(store, c, Request::PeekDelayed), found(4, "d"));
    // Ids of deleted jobs are never given again.
    assert_eq!(call(store, c, put("f", 0)), Response::Inserted(6));
}

#[test]
fn puts_deletes_buries_and_delays_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    populate(&store);
    drop(store);
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.jobs, 3);
    check_populated(&store);
    store.commit(Instant::now()).unwrap();
    drop(store);
    // And again: the reopen's own records (a mark, job 6) recover too.
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.jobs, 4);
    let c = store.connect(Instant::now());
    assert_eq!(call(&store, c, Request::Peek(6)), found(6, "f"));
    assert_eq!(call(&store, c, Request::Peek(4)), found(4, "d"));
}

#[test]
fn a_delay_keeps_its_wall_clock_end_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let (store, _) = Store::open(
        dir.path(),
        StoreConfig::default(),
        Engine::new(EngineConfig::default()),
        t0,
        wall,
    )
    .unwrap();
    let c = store.connect(t0);
    store.handle(c, put("late", 100), t0);
    store.commit(t0).unwrap();
    drop(store);
    // Reopened 60 s later by the wall clock: 40 s of the delay are left.
    let t1 = Instant::now();
    let (store, _) = Store::open(
        dir.path(),
        StoreConfig::default(),
        Engine::new(EngineConfig::default()),
        t1,
        wall + Duration::from_secs(60),
    )
    .unwrap();
    let c = store.connect(t1);
    store.tick(t1 + Duration::from_secs(39));
    assert_eq!(
        store
            .handle(c, Request::PeekReady, t1 + Duration::from_secs(39))
            .0,
        Handled::Reply(Response::NotFound)
    );
    store.tick(t1 + Duration::from_secs(41));
    assert_eq!(
        store
            .handle(c, Request::PeekReady, t1 + Duration::from_secs(41))
            .0,
        Handled::Reply(found(1, "late"))
    );
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    populate(&store);
    drop(store);
    let last = segments(dir.path()).pop().unwrap();
    // Half a record: a header announcing 100 bytes, then 10 of them.
    let mut data = std::fs::read(&last).unwrap();
    data.extend_from_slice(&100u32.to_le_bytes());
    data.extend_from_slice(&0u32.to_le_bytes());
    data.extend_from_slice(&[1u8; 10]);
    std::fs::write(&last, &data).unwrap();
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.truncated_bytes, 18);
    check_populated(&store);
}

#[test]
fn a_flipped_byte_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    populate(&store);
    drop(store);
    let first = segments(dir.path()).remove(0);
    let mut data = std::fs::read(&first).unwrap();
    // Inside the body of job 1 ("a"), a whole record with others after it.
    let at = data
        .windows(1)
        .rposition(|w| w == b"a")
        .expect("job 1's body in the first segment");
    data[at] ^= 0x20;
    std::fs::write(&first, &data).unwrap();
    match open_with(dir.path(), StoreConfig::default()) {
        Err(Error::Log(kids_core::Error::Corrupt { path, offset, .. })) => {
            assert_eq!(path, first);
            assert!(offset < at as u64);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn a_whole_record_that_does_not_decode_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    populate(&store);
    drop(store);
    // A record whose CRC is right but whose tag no journal writes.
    let config = SegmentConfig::default().max_segment_bytes(u64::MAX);
    let (mut log, _) = SegmentLog::open(dir.path(), config).unwrap();
    log.append(&[99, 1, 2, 3]).unwrap();
    drop(log);
    match open_with(dir.path(), StoreConfig::default()) {
        Err(Error::Record { reason, .. }) => {
            assert_eq!(reason, miller_core::journal::RecordError::UnknownTag(99));
        }
        other => panic!("expected a record error, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn compaction_keeps_the_log_in_proportion_to_live_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 16 << 10;
    let config = StoreConfig::default()
        .fsync(FsyncPolicy::Never)
        .segment_bytes(seg)
        .compact_budget(4 << 10);
    let (store, _) = open_with(dir.path(), config.clone()).unwrap();
    let c = store.connect(Instant::now());
    let body = "x".repeat(200);
    // Ten jobs that stay (their segment can go only once they are written
    // forward), 40 more live at all times, 20,000 put/delete pairs through them.
    let anchors: Vec<u64> = (0..10)
        .map(|_| match call(&store, c, put(&body, 0)) {
            Response::Inserted(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    let mut live = std::collections::VecDeque::new();
    let mut max_bytes = 0;
    for i in 0..20_040u64 {
        match call(&store, c, put(&body, 0)) {
            Response::Inserted(id) => live.push_back(id),
            other => panic!("{other:?}"),
        }
        if live.len() > 40 {
            let id = live.pop_front().unwrap();
            assert_eq!(call(&store, c, Request::Delete(id)), Response::Deleted);
        }
        if i % 16 == 0 {
            store.commit(Instant::now()).unwrap();
            max_bytes = max_bytes.max(store.log_stats().bytes);
        }
    }
    store.commit(Instant::now()).unwrap();
    let stats = store.log_stats();
    assert_eq!(stats.live_jobs, 50);
    assert!(stats.written > 40_000);
    // Proportional to the live jobs (about 12 KiB of them): twice that,
    // plus a segment or so of slack and one of growth, whatever went through.
    let bound = 2 * stats.live_bytes + 3 * seg;
    assert!(
        max_bytes <= bound,
        "log reached {max_bytes} bytes, over {bound} ({stats:?})"
    );
    assert!(stats.rewritten > 0, "{stats:?}");
    drop(store);
    let (store, recovered) = open_with(dir.path(), config).unwrap();
    assert_eq!(recovered.jobs, 50);
    let c = store.connect(Instant::now());
    for id in live.into_iter().chain(anchors) {
        assert_eq!(
            call(&store, c, Request::Peek(id)),
            Response::Found {
                id,
                body: Bytes::from(body.clone())
            }
        );
    }
}

/// The lsn `request`'s reply waits for.
fn held(store: &Store, client: ClientId, request: Request) -> (Response, u64) {
    match store.handle(client, request, Instant::now()) {
        (Handled::Reply(r), lsn) => (r, lsn),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reply_handing_out_a_job_waits_for_that_jobs_records_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let (a, b) = (store.connect(Instant::now()), store.connect(Instant::now()));
    let (reply, lsn) = held(&store, a, put("one", 0));
    assert_eq!(reply, Response::Inserted(1));
    assert!(lsn > 0 && !store.is_durable(lsn));
    // Reserved before its put is durable: the reply waits for the put.
    let (reply, reserve_lsn) = held(&store, b, Request::Reserve);
    assert_eq!(
        reply,
        Response::Reserved {
            id: 1,
            body: Bytes::from_static(b"one")
        }
    );
    assert_eq!(reserve_lsn, lsn);
    store.commit(Instant::now()).expect("commit");
    assert!(store.is_durable(lsn));
    // Another client's put staged meanwhile: a release of job 1 waits for
    // everything staged, a peek of job 1 then for the release alone.
    let (_, other) = held(&store, a, put("two", 0));
    let (reply, release_lsn) = held(
        &store,
        b,
        Request::Release {
            id: 1,
            priority: 5,
            delay: 0,
        },
    );
    assert_eq!(reply, Response::Released);
    assert!(release_lsn > other);
    let (reply, peek_lsn) = held(&store, a, Request::Peek(1));
    assert_eq!(reply, found(1, "one"));
    assert_eq!(peek_lsn, release_lsn);
    store.commit(Instant::now()).expect("commit");
    // Job 1 durable, a third client's put not yet: reserving job 1 needs no wait.
    let (_, third) = held(&store, a, put("three", 0));
    assert!(third > 0 && !store.is_durable(third));
    let (reply, lsn) = held(&store, b, Request::ReserveJob(1));
    assert_eq!(
        reply,
        Response::Reserved {
            id: 1,
            body: Bytes::from_static(b"one")
        }
    );
    assert_eq!(lsn, 0);
    // Any other reply still waits for everything staged.
    let (reply, lsn) = held(&store, b, Request::Delete(1));
    assert_eq!(reply, Response::Deleted);
    assert!(lsn > third);
}

/// Under `fsync never` a connection writes its own records before its
/// replies (no committer hand-off); what it acknowledged is in the log.
#[test]
fn served_without_fsync_replies_once_written_and_recovers_what_it_acknowledged() {
    use super::served::{Client, Served};
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default().fsync(FsyncPolicy::Never);
    let mut acknowledged = Vec::new();
    {
        let served = Served::start(dir.path(), config.clone());
        let mut a = Client::connect(served.port).unwrap();
        let mut b = Client::connect(served.port).unwrap();
        for i in 0..200u32 {
            let c = if i % 2 == 0 { &mut a } else { &mut b };
            match c.call(put(&format!("job {i}"), 0)).unwrap() {
                Response::Inserted(id) => acknowledged.push((id, format!("job {i}"))),
                other => panic!("{other:?}"),
            }
        }
        // Pipelined: one batch, one write.
        a.send(&[
            put("p1", 0),
            put("p2", 0),
            Request::Delete(acknowledged[0].0),
        ])
        .unwrap();
        for _ in 0..2 {
            assert!(matches!(a.recv().unwrap(), Response::Inserted(_)));
        }
        assert_eq!(a.recv().unwrap(), Response::Deleted);
    }
    let (store, _) = open_with(dir.path(), config).unwrap();
    let c = store.connect(Instant::now());
    assert_eq!(
        call(&store, c, Request::Peek(acknowledged[0].0)),
        Response::NotFound
    );
    for (id, body) in &acknowledged[1..] {
        match call(&store, c, Request::Peek(*id)) {
            Response::Found { body: got, .. } => assert_eq!(got, body.as_bytes()),
            other => panic!("job {id}: {other:?}"),
        }
    }
}

/// Under an interval policy, compaction's copies are durable only once
/// synced: the segments they came from stay until a commit that synced.
#[test]
fn under_an_interval_policy_old_segments_go_only_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default()
        .fsync(FsyncPolicy::Interval(Duration::from_secs(3600)))
        .segment_bytes(16 << 10)
        .compact_budget(4 << 10);
    let (store, _) = open_with(dir.path(), config).unwrap();
    let t0 = Instant::now();
    let c = store.connect(t0);
    let body = "x".repeat(200);
    let mut live = std::collections::VecDeque::new();
    for i in 0..4_000u64 {
        match call(&store, c, put(&body, 0)) {
            Response::Inserted(id) => live.push_back(id),
            other => panic!("{other:?}"),
        }
        if live.len() > 20 {
            let id = live.pop_front().unwrap();
            assert_eq!(call(&store, c, Request::Delete(id)), Response::Deleted);
        }
        if i % 16 == 0 {
            // The same instant: the interval never passes, nothing is synced.
            store.commit(t0).unwrap();
        }
    }
    store.commit(t0).unwrap();
    let unsynced = store.log_stats().segments;
    assert!(
        unsynced > 20,
        "no segment may go before a sync: {unsynced} segments"
    );
    // A commit after the interval syncs, then the old segments go.
    call(&store, c, put(&body, 0));
    store.commit(t0 + Duration::from_secs(7200)).unwrap();
    let synced = store.log_stats().segments;
    assert!(
        synced < unsynced / 2,
        "{synced} segments after a synced commit (were {unsynced})"
    );
}

/// A file system whose fsyncs fail once `fail` is set: the rest is `StdFs`.
#[derive(Debug, Clone)]
struct FailingSync {
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug)]
struct FailingFile {
    inner: std::sync::Arc<dyn kids_core::LogFile>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl kids_core::LogFile for FailingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
}

impl kids_core::LogFs for FailingSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        kids_core::StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
        kids_core::StdFs.list(dir)
    }
    fn open(
        &self,
        path: &Path,
        mode: kids_core::OpenMode,
    ) -> std::io::Result<std::sync::Arc<dyn kids_core::LogFile>> {
        let inner = kids_core::StdFs.open(path, mode)?;
        Ok(std::sync::Arc::new(FailingFile {
            inner,
            fail: self.fail.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        kids_core::StdFs.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        kids_core::StdFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        kids_core::StdFs.sync_dir(dir)
    }
}

/// A failed fsync is never acknowledged: the held reply is never released,
/// the store refuses what comes after (INTERNAL_ERROR), and a reopen keeps
/// everything acknowledged before.
#[test]
fn a_failed_fsync_acknowledges_nothing_and_fails_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FailingSync {
        fail: Default::default(),
    };
    let (store, _) = Store::open_with(
        dir.path(),
        StoreConfig::default().fsync(FsyncPolicy::Always),
        std::sync::Arc::new(fs.clone()),
        Engine::new(EngineConfig::default()),
        Instant::now(),
        SystemTime::now(),
    )
    .unwrap();
    let c = store.connect(Instant::now());
    let (handled, lsn) = store.handle(c, put("kept", 0), Instant::now());
    let Handled::Reply(Response::Inserted(kept)) = handled else {
        panic!("{handled:?}")
    };
    store.commit(Instant::now()).unwrap();
    assert!(store.is_durable(lsn));
    fs.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let (handled, lsn) = store.handle(c, put("unsure", 0), Instant::now());
    assert!(matches!(handled, Handled::Reply(Response::Inserted(_))));
    assert!(store.commit(Instant::now()).is_err(), "the fsync failed");
    assert!(
        !store.is_durable(lsn),
        "a reply held on it is never released"
    );
    assert!(store.is_failed());
    assert_eq!(call(&store, c, put("later", 0)), Response::InternalError);
    assert_eq!(
        call(&store, c, Request::Peek(kept)),
        Response::InternalError
    );
    drop(store);
    let (store, _) = open(dir.path());
    let c = store.connect(Instant::now());
    assert!(
        matches!(call(&store, c, Request::Peek(kept)), Response::Found { body, .. } if body == "kept")
    );
}
