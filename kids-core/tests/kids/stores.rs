//! The store tree and the pipeline in front of it, on a simulated clock:
//! buffer spooling and ordered replay, release only after acknowledgement,
//! replay rate, priority / multiple / null / topic filters, the queue's
//! full policies and tickets.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kids_core::{
    Bell, BufferConfig, BufferStore, Config, Filtered, Flow, Fsync, Glob, MultipleStore, Now,
    NullStore, PipelineConfig, PriorityStore, QueueFull, Router, RouterConfig, SegmentConfig,
    Session, Store, StoreError, StorePipeline, Success, Tap, build_store,
};

use super::support::FaultFs;

#[derive(Debug, Default)]
struct FakeState {
    down: bool,
    got: Vec<(Bytes, Bytes)>,
    /// Acknowledged on commit when set; else only through `ack`.
    auto_ack: bool,
    acked: u64,
    /// Takes this many more, then refuses while still saying it is up.
    budget: Option<usize>,
}

/// A primary the test controls: up or down, acknowledging now or later.
#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn auto() -> Self {
        let f = Fake::default();
        f.0.lock().unwrap().auto_ack = true;
        f
    }
    fn set_down(&self, down: bool) {
        self.0.lock().unwrap().down = down;
    }
    fn ack_all(&self) {
        let mut s = self.0.lock().unwrap();
        s.acked = s.got.len() as u64;
    }
    fn messages(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .got
            .iter()
            .map(|(t, m)| {
                format!(
                    "{}:{}",
                    String::from_utf8_lossy(t),
                    String::from_utf8_lossy(m)
                )
            })
            .collect()
    }
}

impl Store for Fake {
    fn store(&mut self, topic: &Bytes, message: &Bytes, _: Now) -> Result<(), StoreError> {
        let mut s = self.0.lock().unwrap();
        if s.down || s.budget == Some(0) {
            return Err(StoreError::down("fake is down"));
        }
        if let Some(b) = s.budget.as_mut() {
            *b -= 1;
        }
        s.got.push((topic.clone(), message.clone()));
        Ok(())
    }
    fn commit(&mut self, _: Now) -> Result<(), StoreError> {
        let mut s = self.0.lock().unwrap();
        if s.auto_ack {
            s.acked = s.got.len() as u64;
        }
        Ok(())
    }
    fn taken(&self) -> u64 {
        self.0.lock().unwrap().got.len() as u64
    }
    fn acked(&mut self) -> u64 {
        self.0.lock().unwrap().acked
    }
    fn poll(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn is_up(&self) -> bool {
        !self.0.lock().unwrap().down
    }
    fn info(&self, name: &str, out: &mut String) {
        out.push_str(&format!("store_{name}:kind=fake\r\n"));
    }
}

/// 2013-11-30 12:00:00 UTC, on a simulated clock.
fn t0() -> Now {
    super::support::at_secs(1_385_812_800)
}

fn put(store: &mut dyn Store, topic: &str, msg: &str, now: Now) {
    store
        .store(
            &Bytes::copy_from_slice(topic.as_bytes()),
            &Bytes::copy_from_slice(msg.as_bytes()),
            now,
        )
        .expect("store takes it");
}

fn seg_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

fn small_segments(dir: &std::path::Path) -> BufferConfig {
    BufferConfig::new(dir).segment(SegmentConfig::default().max_segment_bytes(256))
}

#[test]
fn buffer_spools_while_primary_down_and_replays_in_order_before_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Fake::auto();
    let mut buf = BufferStore::new(Box::new(primary.clone()), BufferConfig::new(dir.path()));
    let now = t0();
    put(&mut buf, "a", "1", now);
    buf.commit(now).unwrap();
    buf.poll(now).unwrap();
    assert_eq!(primary.messages(), ["a:1"]);

    primary.set_down(true);
    for i in 2..=5 {
        put(&mut buf, "a", &i.to_string(), now);
        buf.commit(now).unwrap();
        assert_eq!(buf.acked(), i, "in the spool counts as stored");
        buf.poll(now).unwrap();
    }
    assert!(buf.is_replaying());
    assert_eq!(
        primary.messages(),
        ["a:1"],
        "nothing reaches a down primary"
    );

    primary.set_down(false);
    // A new message arrives as the primary comes back: it waits behind the backlog.
    put(&mut buf, "a", "6", now);
    buf.commit(now).unwrap();
    buf.poll(now).unwrap();
    assert_eq!(
        primary.messages(),
        ["a:1", "a:2", "a:3", "a:4", "a:5", "a:6"]
    );
    assert!(!buf.is_replaying());
    let s = buf.stats();
    assert_eq!((s.spooled, s.forwarded, s.acked), (6, 6, 6));
    assert!(s.replayed >= 4, "{s:?}");
    assert_eq!(s.primary_failures, 1);
}

#[test]
fn buffer_releases_a_spool_segment_only_after_every_record_in_it_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Fake::default(); // acknowledges only when told
    let mut buf = BufferStore::new(Box::new(primary.clone()), small_segments(dir.path()));
    let now = t0();
    for i in 0..40 {
        put(&mut buf, "t", &format!("message-{i:04}"), now);
        buf.commit(now).unwrap();
    }
    buf.poll(now).unwrap();
    assert_eq!(primary.messages().len(), 40);
    let before = seg_files(dir.path());
    assert!(before > 3, "small segments: {before}");
    buf.poll(now).unwrap();
    assert_eq!(
        seg_files(dir.path()),
        before,
        "nothing acknowledged, nothing removed"
    );
    primary.ack_all();
    buf.poll(now).unwrap();
    assert_eq!(
        seg_files(dir.path()),
        1,
        "all acknowledged: only the active segment stays"
    );
    assert_eq!(buf.stats().acked, 40);
}

#[test]
fn buffer_replay_rate_limits_records_per_second_of_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Fake::auto();
    let mut buf = BufferStore::new(
        Box::new(primary.clone()),
        BufferConfig::new(dir.path()).replay_rate(10),
    );
    let mut now = t0();
    primary.set_down(true);
    for i in 0..35 {
        put(&mut buf, "t", &i.to_string(), now);
    }
    buf.commit(now).unwrap();
    buf.poll(now).unwrap();
    primary.set_down(false);
    buf.poll(now).unwrap();
    assert_eq!(primary.messages().len(), 0, "no time has passed: no tokens");
    for second in 1..=3 {
        now = now.after(Duration::from_secs(1));
        buf.poll(now).unwrap();
        assert_eq!(primary.messages().len(), 10 * second, "10 per second");
    }
    now = now.after(Duration::from_secs(1));
    buf.poll(now).unwrap();
    assert_eq!(primary.messages().len(), 35);
    assert!(!buf.is_replaying());
    let expected: Vec<String> = (0..35).map(|i| format!("t:{i}")).collect();
    assert_eq!(primary.messages(), expected);
}

#[test]
fn buffer_reopened_replays_what_was_not_acknowledged_and_not_what_was() {
    let dir = tempfile::tempdir().unwrap();
    let now = t0();
    {
        let primary = Fake::auto();
        let mut buf = BufferStore::new(Box::new(primary.clone()), BufferConfig::new(dir.path()));
        for i in 0..5 {
            put(&mut buf, "t", &format!("acked-{i}"), now);
        }
        buf.commit(now).unwrap();
        buf.poll(now).unwrap();
        assert_eq!(primary.messages().len(), 5);
        primary.set_down(true);
        for i in 0..3 {
            put(&mut buf, "t", &format!("spooled-{i}"), now);
        }
        buf.commit(now).unwrap();
        buf.poll(now).unwrap();
    } // dropped: as after a crash, the spool holds what was not acknowledged
    let primary = Fake::auto();
    let mut buf = BufferStore::new(Box::new(primary.clone()), BufferConfig::new(dir.path()));
    buf.poll(now).unwrap();
    assert_eq!(
        primary.messages(),
        ["t:spooled-0", "t:spooled-1", "t:spooled-2"]
    );
    // Three records of 8 (framing) + 4 (topic length) + 1 + 9 bytes.
    assert_eq!(buf.stats().recovered_bytes, 3 * 22);
}

#[test]
fn buffer_resumes_from_the_record_a_primary_refused_midway_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let now = t0();
    let primary = Fake::auto();
    primary.0.lock().unwrap().budget = Some(3); // up, but takes only 3
    let mut buf = BufferStore::new(Box::new(primary.clone()), BufferConfig::new(dir.path()));
    for i in 0..10 {
        put(&mut buf, "t", &i.to_string(), now);
    }
    buf.commit(now).unwrap();
    buf.poll(now).unwrap();
    assert_eq!(primary.messages(), ["t:0", "t:1", "t:2"]);
    assert!(buf.is_replaying(), "the refusal starts a backlog");
    primary.0.lock().unwrap().budget = None;
    buf.poll(now).unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("t:{i}")).collect();
    assert_eq!(primary.messages(), expected);
    assert_eq!(buf.stats().primary_failures, 1);
}

#[test]
fn buffer_starts_a_new_spool_segment_at_each_rotation_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Fake::default(); // nothing acknowledged: nothing released
    let mut buf = BufferStore::new(
        Box::new(primary.clone()),
        BufferConfig::new(dir.path()).rotate_secs(300),
    );
    let mut now = t0(); // 12:00:00, a boundary
    for _ in 0..3 {
        put(&mut buf, "t", "m", now);
        buf.commit(now).unwrap();
        buf.poll(now).unwrap();
        now = now.after(Duration::from_secs(100));
    }
    assert_eq!(seg_files(dir.path()), 1, "12:00 to 12:03:20: one bucket");
    now = now.after(Duration::from_secs(100)); // 12:05:00
    buf.poll(now).unwrap();
    put(&mut buf, "t", "m", now);
    buf.commit(now).unwrap();
    assert_eq!(seg_files(dir.path()), 2, "12:05 starts a segment");
    now = now.after(Duration::from_secs(300));
    buf.poll(now).unwrap();
    buf.poll(now).unwrap();
    assert_eq!(seg_files(dir.path()), 3);
    // An empty active segment is not rolled again.
    now = now.after(Duration::from_secs(300));
    buf.poll(now).unwrap();
    assert_eq!(seg_files(dir.path()), 3);
}

#[test]
fn priority_takes_the_first_child_that_is_up_and_counts_fallbacks() {
    let (a, b) = (Fake::auto(), Fake::auto());
    let mut p = PriorityStore::new(vec![Box::new(a.clone()), Box::new(b.clone())]);
    let now = t0();
    put(&mut p, "t", "1", now);
    a.set_down(true);
    put(&mut p, "t", "2", now);
    b.set_down(true);
    assert!(
        p.store(&"t".into(), &"3".into(), now).is_err(),
        "nobody up: refused, kept by the caller"
    );
    assert!(!p.is_up());
    p.commit(now).unwrap();
    assert_eq!(p.acked(), 2);
    assert_eq!(a.messages(), ["t:1"]);
    assert_eq!(b.messages(), ["t:2"]);
    let mut info = String::new();
    p.info("root", &mut info);
    assert!(info.contains("fallbacks=1"), "{info}");
}

#[test]
fn priority_acknowledges_in_order_across_children() {
    let (a, b) = (Fake::default(), Fake::auto());
    let mut p = PriorityStore::new(vec![Box::new(a.clone()), Box::new(b.clone())]);
    let now = t0();
    put(&mut p, "t", "1", now); // to a, not yet acknowledged
    a.set_down(true);
    put(&mut p, "t", "2", now); // to b, acknowledged at commit
    p.commit(now).unwrap();
    assert_eq!(p.acked(), 0, "message 1 is not safe yet, so neither counts");
    a.ack_all();
    assert_eq!(p.acked(), 2);
}

#[test]
fn multiple_all_needs_every_child_and_any_needs_one() {
    let now = t0();
    let (a, b) = (Fake::auto(), Fake::default());
    let mut all = MultipleStore::new(vec![Box::new(a.clone()), Box::new(b.clone())], Success::All);
    put(&mut all, "t", "1", now);
    all.commit(now).unwrap();
    assert_eq!(all.acked(), 0, "b has not acknowledged");
    b.ack_all();
    assert_eq!(all.acked(), 1);
    b.set_down(true);
    assert!(
        all.store(&"t".into(), &"2".into(), now).is_err(),
        "all: one child down refuses"
    );
    assert_eq!(
        a.messages(),
        ["t:1", "t:2"],
        "a took it (a retry duplicates it there)"
    );

    let (c, d) = (Fake::auto(), Fake::default());
    let mut any = MultipleStore::new(vec![Box::new(c.clone()), Box::new(d.clone())], Success::Any);
    d.set_down(true);
    put(&mut any, "t", "1", now);
    any.commit(now).unwrap();
    assert_eq!(any.acked(), 1, "any: one child safe is enough");
    c.set_down(true);
    assert!(any.store(&"t".into(), &"2".into(), now).is_err());
}

#[test]
fn filter_passes_matching_topics_only_and_the_rest_count_as_stored() {
    let now = t0();
    let inner = Fake::default();
    let mut f = Filtered::new(
        vec![Glob::new(b"web.*", false), Glob::new(b"db", false)],
        Box::new(inner.clone()),
    );
    put(&mut f, "web.front", "1", now);
    put(&mut f, "mail", "2", now);
    put(&mut f, "db", "3", now);
    put(&mut f, "other", "4", now);
    f.commit(now).unwrap();
    assert_eq!(inner.messages(), ["web.front:1", "db:3"]);
    assert_eq!(f.taken(), 4);
    assert_eq!(f.acked(), 0, "web.front is not acknowledged yet");
    inner.ack_all();
    assert_eq!(f.acked(), 4);
}

#[test]
fn null_discards_and_counts() {
    let now = t0();
    let mut n = NullStore::default();
    put(&mut n, "t", "1", now);
    assert_eq!(n.acked(), 1);
    let mut info = String::new();
    n.info("root", &mut info);
    assert_eq!(info, "store_root:kind=null,discarded=1\r\n");
}

#[test]
fn build_store_builds_the_seed_agent_and_rejects_trees_that_cannot_work() {
    let bell = Arc::new(Bell::default());
    let agent = Config::parse(
        "agent.conf",
        include_str!("../../../examples/conf/agent.conf"),
    )
    .unwrap();
    let built = build_store(agent.store.as_ref().unwrap(), false, &bell).unwrap();
    assert_eq!(built.links.len(), 1);
    assert_eq!(built.links[0].target().to_string(), "kids:3388");

    let cases = [
        ("store file { name x; }", "1:1: `store file` needs a `path`"),
        (
            "store network { port 1; }",
            "1:1: `store network` needs a `host` (and `port`) or a `socket`",
        ),
        (
            "store buffer { store null primary {} }",
            "1:1: `store buffer` needs exactly one `primary` and one `secondary`",
        ),
        (
            "store buffer {\n store null primary {}\n store null secondary {} }",
            "3:2: the `secondary` of a buffer is its spool",
        ),
        (
            "store buffer { store null primary {} store file secondary { path /x/[topic]; } }",
            "1:38: the `secondary` of a buffer is its spool: its `path` is one directory, templates such as `[topic]` are not allowed",
        ),
        (
            "store priority { }",
            "1:1: `store priority` needs at least one store inside",
        ),
        (
            "store multiple { }",
            "1:1: `store multiple` needs at least one store inside",
        ),
    ];
    for (src, want) in cases {
        // Some are caught by the parser already (with line and column), the
        // rest when the tree is built.
        let err = match Config::parse("t.conf", src) {
            Err(e) => e.to_string(),
            Ok(config) => build_store(config.store.as_ref().unwrap(), false, &bell)
                .map(|_| ())
                .expect_err(src)
                .to_string(),
        };
        assert!(err.contains(want), "{src}: {err}");
    }
}

/// Publishes as a transport would: the replies are flushed only when no
/// ticket holds them; returns what the client would have received.
fn publish(session: &mut Session, topic: &str, msg: &str) -> Vec<u8> {
    let flow = session.handle(
        vec![
            "PUBLISH".into(),
            topic.to_string().into(),
            msg.to_string().into(),
        ],
        Instant::now(),
    );
    assert_eq!(flow, Flow::Continue);
    if session.ticket().is_none() {
        session.flush(Instant::now());
    }
    session.take_output()
}

#[test]
fn queue_policy_error_refuses_with_trylater_and_counts_it() {
    let pipeline = StorePipeline::new(PipelineConfig::new(2, QueueFull::Error)).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let mut s = Session::new(&router);
    // Held until stored: nothing reaches the client yet.
    assert_eq!(publish(&mut s, "t", "1"), b"");
    assert_eq!(publish(&mut s, "t", "2"), b"");
    assert_eq!(
        publish(&mut s, "t", "3"),
        b"",
        "the refusal follows the held replies"
    );
    assert_eq!(pipeline.stats().refused, 1);
    let now = Instant::now();
    assert_eq!(
        s.handle(vec!["INFO".into(), "stores".into()], now),
        Flow::Wait,
        "INFO would flush the held replies: it waits"
    );
    let sink = Fake::auto();
    pipeline.worker(Box::new(sink.clone())).step(t0());
    assert_eq!(sink.messages(), ["t:1", "t:2"]);
    let ticket = s.ticket().expect("held");
    assert!(pipeline.is_stored(ticket));
    assert_eq!(
        s.stored(now),
        Flow::Continue,
        "handles the INFO that waited"
    );
    s.flush(now);
    let out = String::from_utf8(s.take_output()).unwrap();
    let (replies, info) = out.split_at(":0\r\n:0\r\n-TRYLATER store queue full\r\n".len());
    assert_eq!(replies, ":0\r\n:0\r\n-TRYLATER store queue full\r\n");
    assert!(info.contains("queue_refused:1\r\n"), "{info}");
    assert!(info.contains("queue_policy:error\r\n"), "{info}");
    // Drained: publishing works again.
    assert_eq!(publish(&mut s, "t", "4"), b"");
    assert!(s.ticket().is_some());
}

#[test]
fn a_request_that_would_release_held_replies_waits_for_the_ticket() {
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let now = Instant::now();
    let mut worker = pipeline.worker(Box::new(Fake::auto()));
    // PUBLISH then QUIT, SUBSCRIBE, or a protocol error: each would flush.
    let mut quit = Session::new(&router);
    publish(&mut quit, "t", "1");
    assert_eq!(quit.handle(vec!["QUIT".into()], now), Flow::Wait);
    let mut sub = Session::new(&router);
    publish(&mut sub, "t", "2");
    assert_eq!(
        sub.handle(vec!["SUBSCRIBE".into(), "c".into()], now),
        Flow::Wait
    );
    let mut broken = Session::new(&router);
    publish(&mut broken, "t", "3");
    assert_eq!(
        broken.protocol_error(&kids_core::ProtocolError::UnbalancedQuotes, now),
        Flow::Wait
    );
    for s in [&mut quit, &mut sub, &mut broken] {
        assert!(s.ticket().is_some());
        assert_eq!(
            s.take_output(),
            b"",
            "no reply before the message is stored"
        );
    }
    worker.step(t0());
    assert_eq!(quit.stored(now), Flow::Close);
    assert_eq!(quit.take_output(), b":0\r\n+OK\r\n");
    assert_eq!(sub.stored(now), Flow::Continue);
    sub.flush(now);
    assert_eq!(
        sub.take_output(),
        b":0\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
    );
    assert_eq!(broken.stored(now), Flow::Close);
    assert_eq!(
        broken.take_output(),
        b":0\r\n-ERR Protocol error: unbalanced quotes in request\r\n"
    );
}

#[test]
fn a_ticket_that_will_never_be_stored_drops_the_held_replies() {
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let mut s = Session::new(&router);
    publish(&mut s, "t", "1");
    let ticket = s.ticket().expect("held");
    pipeline.shutdown();
    pipeline.finish(); // the worker stopped without storing it
    let waker = std::task::Waker::noop();
    assert_eq!(
        router.poll_stored(ticket, &mut Context::from_waker(waker)),
        Poll::Ready(false)
    );
    assert_eq!(s.unstored(), Flow::Close);
    s.flush(Instant::now());
    assert_eq!(s.take_output(), b"", "never acknowledged");
    assert!(
        pipeline
            .publish(&"t".into(), &"2".into(), Instant::now())
            .is_err(),
        "a stopped pipeline refuses"
    );
}

#[test]
fn queue_policy_block_holds_readers_until_there_is_room() {
    let pipeline = StorePipeline::new(PipelineConfig::new(2, QueueFull::Block)).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let mut s = Session::new(&router);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert_eq!(router.poll_room(&mut cx), Poll::Ready(()));
    publish(&mut s, "t", "1");
    publish(&mut s, "t", "2");
    assert_eq!(
        router.poll_room(&mut cx),
        Poll::Pending,
        "full: the transport stops reading"
    );
    // A batch already read may overfill, up to twice the size, and is counted.
    publish(&mut s, "t", "3");
    assert_eq!(pipeline.stats().overfilled, 1);
    publish(&mut s, "t", "4");
    publish(&mut s, "t", "5");
    assert_eq!(pipeline.stats().refused, 1, "twice the size: refused");
    let ticket = s.ticket().expect("a ticket for the last stored publish");
    assert_eq!(router.poll_stored(ticket, &mut cx), Poll::Pending);
    let sink = Fake::auto();
    pipeline.worker(Box::new(sink.clone())).step(t0());
    assert_eq!(router.poll_room(&mut cx), Poll::Ready(()));
    assert_eq!(router.poll_stored(ticket, &mut cx), Poll::Ready(true));
    assert_eq!(sink.messages(), ["t:1", "t:2", "t:3", "t:4"]);
    s.stored(Instant::now());
    assert_eq!(
        s.take_output(),
        b":0\r\n:0\r\n:0\r\n:0\r\n-TRYLATER store queue full\r\n"
    );
}

#[test]
fn queue_policy_spool_keeps_order_across_queue_and_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline =
        StorePipeline::new(PipelineConfig::new(3, QueueFull::Spool).spool_dir(dir.path())).unwrap();
    let now = Instant::now();
    for i in 0..10 {
        let t = pipeline
            .publish(&"t".into(), &Bytes::from(i.to_string()), now)
            .expect("spool policy never refuses");
        // The first three are queued (a ticket to wait for); the rest are in the spool already.
        assert_eq!(t.is_some(), i < 3, "message {i}");
    }
    assert_eq!(pipeline.stats().spooled, 7);
    let sink = Fake::auto();
    let mut worker = pipeline.worker(Box::new(sink.clone()));
    for _ in 0..5 {
        worker.step(t0());
    }
    let expected: Vec<String> = (0..10).map(|i| format!("t:{i}")).collect();
    assert_eq!(sink.messages(), expected);
    assert!(worker.is_idle());
    // Caught up: new messages use the queue again.
    assert!(
        pipeline
            .publish(&"t".into(), &"10".into(), now)
            .unwrap()
            .is_some()
    );
}

#[test]
fn worker_holds_messages_the_root_refuses_and_answers_only_when_stored() {
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let root = Fake::auto();
    root.set_down(true);
    let mut worker = pipeline.worker(Box::new(root.clone()));
    let t = pipeline
        .publish(&"t".into(), &"1".into(), Instant::now())
        .unwrap()
        .unwrap();
    worker.step(t0());
    assert!(
        !pipeline.is_stored(t),
        "refused by the root: not stored, not answered"
    );
    assert!(pipeline.stats().store_errors >= 1);
    root.set_down(false);
    worker.step(t0());
    assert!(pipeline.is_stored(t));
    assert_eq!(root.messages(), ["t:1"]);
}

#[test]
fn replacing_the_root_waits_for_the_old_tree_to_settle_and_loses_nothing() {
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let old = Fake::default(); // acknowledges only when told
    let mut worker = pipeline.worker(Box::new(old.clone()));
    pipeline
        .publish(&"t".into(), &"1".into(), Instant::now())
        .unwrap();
    worker.step(t0());
    let t2 = pipeline
        .publish(&"t".into(), &"2".into(), Instant::now())
        .unwrap()
        .unwrap();
    let new = Fake::auto();
    pipeline.replace_root(Box::new(new.clone()));
    worker.step(t0());
    assert!(
        new.messages().is_empty(),
        "message 2 waits while the old tree holds message 1"
    );
    assert!(!pipeline.is_stored(t2));
    // The old tree never settles: after the grace period the new one takes over,
    // and the old one is kept until it acknowledged what it holds.
    worker.step(t0().after(Duration::from_secs(6)));
    worker.step(t0().after(Duration::from_secs(6)));
    assert_eq!(old.messages(), ["t:1"]);
    assert_eq!(new.messages(), ["t:2"]);
    assert!(pipeline.is_stored(t2));
    assert_eq!(
        worker.unacked(),
        1,
        "the old tree is kept while it holds message 1"
    );
    old.ack_all();
    worker.step(t0().after(Duration::from_secs(7)));
    assert!(worker.is_drained());
    assert_eq!(pipeline.stats().reloads, 1);

    // A settled tree is replaced at once.
    let newer = Fake::auto();
    pipeline.replace_root(Box::new(newer.clone()));
    pipeline
        .publish(&"t".into(), &"3".into(), Instant::now())
        .unwrap();
    worker.step(t0().after(Duration::from_secs(7)));
    worker.step(t0().after(Duration::from_secs(7)));
    assert_eq!(newer.messages(), ["t:3"]);
    assert_eq!(pipeline.stats().reloads, 2);
}

#[test]
fn priority_and_multiple_route_by_their_childrens_topic_filters() {
    let now = t0();
    let (web, rest) = (Fake::auto(), Fake::auto());
    let mut p = PriorityStore::new(vec![
        Box::new(Filtered::new(
            vec![Glob::new(b"web*", false)],
            Box::new(web.clone()),
        )),
        Box::new(rest.clone()),
    ]);
    put(&mut p, "web1", "a", now);
    put(&mut p, "db", "b", now);
    assert_eq!(web.messages(), ["web1:a"]);
    assert_eq!(
        rest.messages(),
        ["db:b"],
        "not web: the next child, not a silent skip"
    );

    let (x, y) = (Fake::auto(), Fake::auto());
    let mut m = MultipleStore::new(
        vec![
            Box::new(Filtered::new(
                vec![Glob::new(b"x", false)],
                Box::new(x.clone()),
            )),
            Box::new(Filtered::new(
                vec![Glob::new(b"y", false)],
                Box::new(y.clone()),
            )),
        ],
        Success::All,
    );
    put(&mut m, "x", "1", now);
    put(&mut m, "y", "2", now);
    put(&mut m, "z", "3", now); // nobody's: stored nowhere, nothing to wait for
    m.commit(now).unwrap();
    assert_eq!(x.messages(), ["x:1"]);
    assert_eq!(y.messages(), ["y:2"]);
    assert_eq!(m.acked(), 3);
}

#[test]
fn over_a_socket_replies_wait_for_the_store_and_a_stopped_store_answers_nothing() {
    use kids_core::net::{Listener, ServerConfig, serve};
    use std::io::{ErrorKind, Read, Write};
    use test_support::wait_for;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pipeline = StorePipeline::new(PipelineConfig::new(1, QueueFull::Block)).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let tcp = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    rt.spawn(serve(
        vec![Listener::Tcp(tcp)],
        router.clone(),
        ServerConfig::default(),
        std::future::pending::<()>(),
    ));
    let connect = || {
        let c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c
    };

    // PUBLISH and QUIT in one write: both replies wait for the store.
    let mut a = connect();
    a.write_all(b"PUBLISH t 1\r\nQUIT\r\n").expect("send");
    wait_for("the message queued", || pipeline.stats().accepted == 1);
    // The queue (size 1) is full: a second publisher is not read (block policy).
    let mut b = connect();
    b.write_all(b"PUBLISH t 2\r\n").expect("send");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        pipeline.stats().accepted,
        1,
        "the blocked publisher waits unread"
    );
    a.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    assert_eq!(
        a.read(&mut byte).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "no reply before the message is stored"
    );
    a.set_nonblocking(false).expect("blocking");
    let root = Fake::auto();
    let mut worker = pipeline.worker(Box::new(root.clone()));
    worker.step(t0());
    let mut got = Vec::new();
    a.read_to_end(&mut got).expect("replies, then close");
    assert_eq!(got, b":0\r\n+OK\r\n");
    // Room again: the second publisher is read; its store then stops for good.
    wait_for("the second message queued", || {
        pipeline.stats().accepted == 2
    });
    pipeline.shutdown();
    pipeline.finish();
    let mut got = Vec::new();
    b.read_to_end(&mut got).expect("closed");
    assert_eq!(got, b"", "never stored, never acknowledged");
    assert_eq!(root.messages(), ["t:1"]);
}

#[test]
fn the_overflow_spool_resumes_after_what_it_stored_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(1, QueueFull::Spool).spool_dir(dir.path());
    let now = Instant::now();
    {
        let pipeline = StorePipeline::new(config.clone()).unwrap();
        for i in 0..5 {
            pipeline
                .publish(&"t".into(), &Bytes::from(i.to_string()), now)
                .unwrap();
        }
        assert_eq!(pipeline.stats().spooled, 4);
        let root = Fake::auto();
        let mut worker = pipeline.worker(Box::new(root.clone()));
        for _ in 0..4 {
            worker.step(t0());
        }
        assert_eq!(root.messages().len(), 5);
        // One more overflows and is not stored before the "crash".
        pipeline.publish(&"t".into(), &"a".into(), now).unwrap();
        pipeline.publish(&"t".into(), &"b".into(), now).unwrap();
    }
    let pipeline = StorePipeline::new(config).unwrap();
    let root = Fake::auto();
    let mut worker = pipeline.worker(Box::new(root.clone()));
    for _ in 0..4 {
        worker.step(t0());
    }
    assert_eq!(
        root.messages(),
        ["t:b"],
        "only what was spooled and never stored comes back"
    );
}

#[test]
fn a_spool_directory_needs_the_spool_policy() {
    let dir = tempfile::tempdir().unwrap();
    let err = StorePipeline::new(PipelineConfig::new(8, QueueFull::Block).spool_dir(dir.path()))
        .map(|_| ())
        .expect_err("a directory the policy never uses");
    assert!(
        matches!(
            err,
            kids_core::Error::SpoolDirUnused {
                when_full: QueueFull::Block
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "only the queue policy `spool` takes a spool directory"
    );
}

/// A root whose commits fail as its plan says: the plan gets each commit's
/// number (from 1) and returns the error that commit fails with, if any (a
/// full disk for the first few, a failed fsync at one).
struct FaultyCommits {
    inner: Fake,
    attempts: Arc<Mutex<u32>>,
    plan: Box<dyn Fn(u32) -> Option<StoreError> + Send>,
}

impl FaultyCommits {
    fn new(inner: Fake, plan: impl Fn(u32) -> Option<StoreError> + Send + 'static) -> Self {
        Self {
            inner,
            attempts: Arc::default(),
            plan: Box::new(plan),
        }
    }
}

impl std::fmt::Debug for FaultyCommits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyCommits").finish_non_exhaustive()
    }
}

impl Store for FaultyCommits {
    fn store(&mut self, t: &Bytes, m: &Bytes, now: Now) -> Result<(), StoreError> {
        self.inner.store(t, m, now)
    }
    fn commit(&mut self, now: Now) -> Result<(), StoreError> {
        let n = {
            let mut attempts = self.attempts.lock().unwrap();
            *attempts += 1;
            *attempts
        };
        match (self.plan)(n) {
            Some(e) => Err(e),
            None => self.inner.commit(now),
        }
    }
    fn taken(&self) -> u64 {
        self.inner.taken()
    }
    fn acked(&mut self) -> u64 {
        self.inner.acked()
    }
    fn poll(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn info(&self, name: &str, out: &mut String) {
        self.inner.info(name, out);
    }
}

#[test]
fn a_failed_commit_is_retried_on_a_backoff_and_answers_nobody_until_it_succeeds() {
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let root = FaultyCommits::new(Fake::auto(), |n| {
        (n <= 3).then(|| StoreError::down("disk full"))
    });
    let attempts = root.attempts.clone();
    let inner = root.inner.clone();
    let mut worker = pipeline.worker(Box::new(root));
    let t1 = pipeline
        .publish(&"t".into(), &"1".into(), Instant::now())
        .unwrap()
        .unwrap();
    worker.step(t0());
    assert!(!pipeline.is_stored(t1), "taken, but its commit failed");
    let t2 = pipeline
        .publish(&"t".into(), &"2".into(), Instant::now())
        .unwrap()
        .unwrap();
    // The worker steps often (publishers ring it): the commit is not retried each time.
    for _ in 0..100 {
        worker.step(t0());
    }
    assert_eq!(
        *attempts.lock().unwrap(),
        1,
        "not retried before its backoff"
    );
    assert_eq!(
        inner.messages(),
        ["t:1"],
        "nothing more given to a failing root"
    );
    let ms = |n| t0().after(Duration::from_millis(n));
    worker.step(ms(50)); // second attempt fails: the next in 100 ms
    worker.step(ms(149));
    assert_eq!(*attempts.lock().unwrap(), 2);
    worker.step(ms(150)); // third attempt fails: the next in 200 ms
    worker.step(ms(349));
    assert_eq!(*attempts.lock().unwrap(), 3);
    assert!(!pipeline.is_stored(t1));
    worker.step(ms(350)); // the fourth works; message 2 follows
    assert!(pipeline.is_stored(t1) && pipeline.is_stored(t2));
    assert_eq!(inner.messages(), ["t:1", "t:2"]);
    let s = pipeline.stats();
    assert_eq!(
        (s.stored, s.store_errors),
        (2, 3),
        "both counted once stored"
    );
}

/// A store that panics when it is given a message.
#[derive(Debug)]
struct Panics;

impl Store for Panics {
    fn store(&mut self, _: &Bytes, _: &Bytes, _: Now) -> Result<(), StoreError> {
        panic!("a store bug");
    }
    fn commit(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn taken(&self) -> u64 {
        0
    }
    fn acked(&mut self) -> u64 {
        0
    }
    fn poll(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn info(&self, _: &str, _: &mut String) {}
}

#[test]
fn a_worker_that_panics_leaves_no_publisher_waiting() {
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let mut s = Session::new(&router);
    publish(&mut s, "t", "1");
    let ticket = s.ticket().expect("held");
    let worker =
        kids_core::net::spawn_pipeline(&pipeline, Box::new(Panics), Duration::from_secs(1))
            .unwrap();
    assert!(worker.join().is_err(), "the worker panicked");
    let waker = std::task::Waker::noop();
    assert_eq!(
        router.poll_stored(ticket, &mut Context::from_waker(waker)),
        Poll::Ready(false),
        "the held publish resolves as never stored"
    );
    assert!(
        pipeline
            .publish(&"t".into(), &"2".into(), Instant::now())
            .is_err()
    );
}

#[test]
fn a_reload_without_a_store_block_is_refused_and_the_running_tree_keeps_storing() {
    use kids_core::net::Stores;

    let dir = tempfile::tempdir().unwrap();
    let parse = |src: &str| Config::parse("kids.conf", src).expect("config");
    let running = parse(&format!(
        "store file {{ path {}; name all.log; }}",
        dir.path().display()
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let router = Router::new(running.router_config(), Instant::now());
        let stores = Stores::start(&running, &router).expect("stores");
        // A null store in its place would discard while answering "stored".
        let err = stores
            .reload(&parse("max_clients 10;"))
            .expect_err("no store block");
        assert!(matches!(err, kids_core::Error::StoreTreeRemoved), "{err}");
        assert_eq!(
            err.to_string(),
            "the reloaded config has no `store` block; removing the store tree needs a restart"
        );
        let mut publisher = Session::new(&router);
        publisher.handle(
            vec!["PUBLISH".into(), "t".into(), "kept".into()],
            Instant::now(),
        );
        let ticket = publisher.ticket().expect("a ticket");
        let stored = tokio::time::timeout(
            Duration::from_secs(30),
            std::future::poll_fn(|cx| router.poll_stored(ticket, cx)),
        )
        .await
        .expect("stored in time");
        assert!(stored);
        stores.shutdown().await;
    });
    let file = std::fs::read_to_string(dir.path().join("all.log")).expect("the file tree's file");
    assert_eq!(file, "kept\n");
}

/// `d` later on the monotonic clock, with the wall clock stepped back an
/// hour (NTP, a VM resumed).
fn wall_back_an_hour(now: Now, d: Duration) -> Now {
    Now::new(now.instant + d, now.wall - Duration::from_secs(3600))
}

#[test]
fn timers_keep_firing_when_the_wall_clock_steps_back_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let start = t0();

    // The file store's flush interval.
    let mut files = kids_core::FileStore::new(
        kids_core::FileStoreConfig::new(format!("{}/[topic]", dir.path().display()))
            .name("all.log")
            .flush_secs(5),
    );
    files.tick(start).unwrap();
    files.append(b"f", b"line", start.wall).unwrap();
    let later = wall_back_an_hour(start, Duration::from_secs(6));
    files.tick(later).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("f/all.log")).unwrap(),
        "line\n",
        "flushed 6 s later on the monotonic clock"
    );

    // The buffer's replay rate.
    let primary = Fake::auto();
    let mut buf = BufferStore::new(
        Box::new(primary.clone()),
        BufferConfig::new(dir.path().join("spool")).replay_rate(10),
    );
    primary.set_down(true);
    for i in 0..20 {
        put(&mut buf, "t", &i.to_string(), start);
    }
    buf.commit(start).unwrap();
    buf.poll(start).unwrap();
    primary.set_down(false);
    buf.poll(start).unwrap();
    assert_eq!(primary.messages().len(), 0);
    buf.poll(wall_back_an_hour(start, Duration::from_secs(1)))
        .unwrap();
    assert_eq!(primary.messages().len(), 10, "one second of tokens");

    // The reload's grace period.
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let old = Fake::default(); // never acknowledges: never settles
    let mut worker = pipeline.worker(Box::new(old.clone()));
    pipeline
        .publish(&"t".into(), &"1".into(), Instant::now())
        .unwrap();
    worker.step(start);
    let new = Fake::auto();
    pipeline.replace_root(Box::new(new.clone()));
    pipeline
        .publish(&"t".into(), &"2".into(), Instant::now())
        .unwrap();
    worker.step(start);
    assert!(new.messages().is_empty(), "waiting for the old tree");
    let later = wall_back_an_hour(start, Duration::from_secs(6));
    worker.step(later);
    worker.step(later);
    assert_eq!(new.messages(), ["t:2"], "the grace period ended");
}

/// Publishes `messages` into `pipeline`, returning their tickets.
fn publish_all(pipeline: &StorePipeline, messages: &[String]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| {
            pipeline
                .publish(&"t".into(), &Bytes::from(m.clone()), Instant::now())
                .expect("queued")
                .expect("a ticket")
        })
        .collect()
}

#[test]
fn an_agent_restarted_on_a_full_spool_disk_delivers_every_acknowledged_message_then_takes_new_ones()
{
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let agent = |primary: &Fake| {
        let pipeline = StorePipeline::new(PipelineConfig::new(8192, QueueFull::Block)).unwrap();
        let buffer = BufferStore::with_fs(
            Box::new(primary.clone()),
            BufferConfig::new(dir.path()),
            Arc::new(fs.clone()),
        );
        let worker = pipeline.worker(Box::new(buffer));
        (pipeline, worker)
    };
    // First life: the server is down; more than one replay batch (4,096)
    // is spooled and acknowledged, all in one segment.
    let down = Fake::auto();
    down.set_down(true);
    let (pipeline, mut worker) = agent(&down);
    let acked: Vec<String> = (0..5000).map(|i| format!("m-{i:05}")).collect();
    let tickets = publish_all(&pipeline, &acked);
    worker.step(t0());
    worker.step(t0());
    assert!(
        tickets.iter().all(|&t| pipeline.is_stored(t)),
        "acknowledged"
    );
    // The disk fills: the next publishers wait, unanswered.
    fs.set_free(Some(0));
    let late = publish_all(&pipeline, &["late".to_string()]);
    worker.step(t0());
    assert!(!pipeline.is_stored(late[0]));
    std::mem::forget(worker); // SIGKILL: no drop, no flush

    // Restarted on the full disk, with the server back.
    let up = Fake::auto();
    let (pipeline, mut worker) = agent(&up);
    let new: Vec<String> = (0..10).map(|i| format!("new-{i}")).collect();
    let tickets = publish_all(&pipeline, &new);
    let mut now = t0();
    worker.step(now);
    assert!(
        !pipeline.is_stored(tickets[0]),
        "no room in the spool: new messages are held"
    );
    for _ in 0..100 {
        if tickets.iter().all(|&t| pipeline.is_stored(t)) && worker.is_drained() {
            break;
        }
        now = now.after(Duration::from_millis(100));
        worker.step(now);
    }
    let expected: Vec<String> = acked.iter().chain(&new).map(|m| format!("t:{m}")).collect();
    let got = up.messages();
    assert_eq!(got.len(), expected.len(), "delivered, of 5,010");
    assert!(
        got == expected,
        "every acknowledged message, then the new ones, in order"
    );
    assert!(tickets.iter().all(|&t| pipeline.is_stored(t)));
    assert!(worker.is_drained());
    assert!(
        pipeline.stats().store_errors <= 3,
        "commits retried on a backoff, not every step: {:?}",
        pipeline.stats()
    );
    assert_eq!(seg_files(dir.path()), 1, "the full segment was released");
}

#[test]
fn a_failed_spool_fsync_tells_every_waiting_publisher_its_message_was_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let primary = Fake::auto();
    let buffer = BufferStore::with_fs(
        Box::new(primary.clone()),
        BufferConfig::new(dir.path()).segment(SegmentConfig::default().fsync(Fsync::Every(1))),
        Arc::new(fs.clone()),
    );
    let pipeline = StorePipeline::new(PipelineConfig::default()).unwrap();
    let router = Router::new(RouterConfig::default(), Instant::now());
    router.set_tap(Arc::new(pipeline.clone()));
    let mut worker = pipeline.worker(Box::new(buffer));
    let mut sessions: Vec<Session> = (0..3).map(|_| Session::new(&router)).collect();
    for (i, s) in sessions.iter_mut().enumerate() {
        assert_eq!(
            publish(s, "t", &format!("lost-{i}")),
            b"",
            "held until stored"
        );
    }
    fs.fail_next_sync();
    worker.step(t0());
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    // The spool was reopened: the next message is stored, and a late poll
    // of the failed tickets still says they were not.
    let mut next = Session::new(&router);
    publish(&mut next, "t", "after");
    worker.step(t0());
    let ticket = next.ticket().expect("held");
    assert_eq!(router.poll_stored(ticket, &mut cx), Poll::Ready(true));
    for s in &mut sessions {
        let ticket = s.ticket().expect("held");
        assert_eq!(
            router.poll_stored(ticket, &mut cx),
            Poll::Ready(false),
            "the error reaches every waiting publisher"
        );
        assert_eq!(s.unstored(), Flow::Close);
        s.flush(Instant::now());
        assert_eq!(s.take_output(), b"", "closed unanswered");
    }
    assert_eq!(pipeline.stats().unstored, 3);
    let mut info = String::new();
    pipeline.info(&mut info);
    assert!(info.contains("unstored_messages:3\r\n"), "{info}");
    assert!(info.contains("unstored=3,reopened=1"), "{info}");
    assert_eq!(
        primary.messages().last().map(String::as_str),
        Some("t:after")
    );
}

#[test]
fn overflow_records_in_a_commit_that_was_given_up_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline =
        StorePipeline::new(PipelineConfig::new(1, QueueFull::Spool).spool_dir(dir.path())).unwrap();
    for i in 0..4 {
        // The first is queued; the rest are acknowledged once in the overflow spool.
        pipeline
            .publish(&"t".into(), &Bytes::from(i.to_string()), Instant::now())
            .unwrap();
    }
    let root = Fake::auto();
    let mut worker = pipeline.worker(Box::new(FaultyCommits::new(root.clone(), |n| {
        (n == 2).then(|| StoreError::unstored("fsync failed"))
    })));
    worker.step(t0()); // the queued message
    worker.step(t0()); // the overflow records: given up
    assert_eq!(pipeline.stats().unstored, 3);
    assert!(
        !worker.is_idle(),
        "the overflow records wait to be read again"
    );
    worker.step(t0());
    assert_eq!(
        root.messages(),
        ["t:0", "t:1", "t:2", "t:3", "t:1", "t:2", "t:3"],
        "acknowledged when spooled: stored again, never lost"
    );
    worker.step(t0());
    assert!(worker.is_idle());
}
