//! The broker and its connections on a simulated clock, without sockets:
//! durable replies, group commit, sessions, retention, recovery.

use std::time::Duration;

use bytes::Bytes;
use kids_core::Frame;
use sink_core::{BrokerConfig, FsyncPolicy, Retention, SessionsConfig, Takeover};

use super::support::{Client, Node, Rng, bulk, pushed};

fn err_text(f: &Frame) -> String {
    match f {
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn offsets(frames: &[Frame]) -> Vec<i64> {
    frames.iter().filter_map(pushed).map(|p| p.0).collect()
}

#[test]
fn publish_answers_with_its_offset_only_once_durable() {
    let node = Node::new(BrokerConfig::default()); // fsync always
    let mut c = node.client();
    c.send(&[b"PUBLISH", b"web", b"GET /"]);
    c.send(&[b"PUBLISH", b"web", b"GET /about"]);
    c.poll(node.now);
    assert!(
        c.frames().is_empty(),
        "held until the fsync that covers them"
    );
    node.commit();
    c.poll(node.now);
    assert_eq!(c.frames(), vec![Frame::Integer(1), Frame::Integer(2)]);
    let info = node.broker.info();
    assert_eq!(info.fsync_us.count(), 1, "one fsync for the pipelined pair");
    assert_eq!(info.group_size.max(), 2);
}

#[test]
fn concurrent_publishers_share_one_fsync() {
    let node = Node::new(BrokerConfig::default());
    let mut clients: Vec<Client> = (0..4).map(|_| node.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..10 {
            c.send(&[b"LOG", b"t", format!("{i}-{j}").as_bytes()]);
        }
        c.poll(node.now);
    }
    node.commit();
    let mut all = Vec::new();
    for c in &mut clients {
        c.poll(node.now);
        let f = c.frames();
        assert_eq!(f.len(), 10);
        all.extend(f.into_iter().map(|f| match f {
            Frame::Integer(n) => n,
            other => panic!("{other:?}"),
        }));
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=40).collect::<Vec<i64>>(),
        "dense, one per message"
    );
    let info = node.broker.info();
    assert_eq!((info.fsync_us.count(), info.group_size.max()), (1, 40));
}

#[test]
fn bad_input_gets_clear_errors() {
    let node = Node::never();
    let mut c = node.client();
    let f = c.call(&node, &[b"PUBLISH", b"", b"x"]);
    assert!(err_text(&f[0]).contains("invalid topic length 0"));
    let f = c.call(&node, &[b"SESSION", b"ACK", b"nope", b"1"]);
    assert_eq!(err_text(&f[0]), "ERR no such session");
    let f = c.call(&node, &[b"SESSION", b"CREATE", b"m", b"a"]);
    assert_eq!(f, vec![Frame::Simple(Bytes::from("OK"))]);
    let f = c.call(&node, &[b"SESSION", b"ACK", b"m", b"x"]);
    assert_eq!(
        err_text(&f[0]),
        "ERR value is not an integer or out of range"
    );
    let f = c.call(&node, &[b"SESSION", b"ACK", b"m", b"9"]);
    assert_eq!(err_text(&f[0]), "ERR offset 9 is past the last offset 0");
    let f = c.call(&node, &[b"SESSION", b"CREATE", b"m", b"b"]);
    assert_eq!(err_text(&f[0]), "ERR session exists with other filters");
    let f = c.call(&node, &[b"SESSION", b"FROB", b"m"]);
    assert_eq!(
        err_text(&f[0]),
        "ERR unknown subcommand 'FROB'. Try SESSION HELP."
    );
    let f = c.call(&node, &[b"SESSION", b"LOAD"]);
    assert_eq!(
        err_text(&f[0]),
        "ERR wrong number of arguments for 'session|load' command"
    );
    let long = vec![b'n'; 2000];
    let f = c.call(&node, &[b"SESSION", b"CREATE", &long, b"a"]);
    assert!(err_text(&f[0]).contains("invalid session name length 2000"));
}

#[test]
fn a_session_gets_the_backlog_then_live_messages_with_offsets() {
    let node = Node::never();
    let mut p = node.client();
    p.call(&node, &[b"PUBLISH", b"web", b"before"]);
    assert_eq!(
        p.call(&node, &[b"SESSION", b"CREATE", b"m", b"web", b"act.*"]),
        vec![Frame::Simple(Bytes::from("OK"))]
    );
    for (t, m) in [
        ("web", "a"),
        ("other", "b"),
        ("act.INVITE", "c"),
        ("web", "d"),
    ] {
        p.call(&node, &[b"PUBLISH", t.as_bytes(), m.as_bytes()]);
    }
    let mut s = node.client();
    let f = s.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(f[0], Frame::Simple(Bytes::from("OK")));
    let got: Vec<_> = f.iter().filter_map(pushed).collect();
    assert_eq!(
        got,
        vec![
            (2, Bytes::from("web"), Bytes::from("a")),
            (4, Bytes::from("act.INVITE"), Bytes::from("c")),
            (5, Bytes::from("web"), Bytes::from("d")),
        ]
    );
    p.call(&node, &[b"PUBLISH", b"act.X", b"live"]);
    s.poll(node.now);
    assert_eq!(offsets(&s.frames()), vec![6]);
    // Nothing acknowledged: a new load sends it all again.
    let f = s.call(&node, &[b"SESSION", b"UNLOAD", b"m"]);
    assert_eq!(f, vec![Frame::Simple(Bytes::from("OK"))]);
    let f = s.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(offsets(&f), vec![2, 4, 5, 6]);
    // A cumulative ack moves the cursor; a reload starts after it.
    let f = s.call(&node, &[b"SESSION", b"ACK", b"m", b"4"]);
    assert_eq!(f, vec![Frame::Integer(4)]);
    s.call(&node, &[b"SESSION", b"UNLOAD", b"m"]);
    let f = s.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(offsets(&f), vec![5, 6]);
    let info = node.broker.info();
    let m = &info.sessions[0];
    assert_eq!((m.cursor, m.lag_messages, m.window_fill), (4, 2, 2));
}

#[test]
fn delivery_pauses_when_the_window_is_full_and_resumes_on_ack() {
    let node = Node::new(BrokerConfig::default().fsync(FsyncPolicy::Never).sessions(
        SessionsConfig {
            window: 3,
            ..SessionsConfig::default()
        },
    ));
    let mut p = node.client();
    p.call(&node, &[b"SESSION", b"CREATE", b"m", b"*"]);
    for i in 0..10 {
        p.call(&node, &[b"PUBLISH", b"t", format!("{i}").as_bytes()]);
    }
    let mut s = node.client();
    let f = s.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(offsets(&f), vec![1, 2, 3]);
    s.poll(node.now);
    assert!(s.frames().is_empty(), "window full");
    let f = s.call(&node, &[b"SESSION", b"ACK", b"m", b"2"]);
    assert_eq!(f[0], Frame::Integer(2));
    assert_eq!(offsets(&f), vec![4, 5]);
    let f = s.call(&node, &[b"SESSION", b"ACK", b"m", b"5"]);
    assert_eq!(offsets(&f), vec![6, 7, 8]);
    // An ack past what was delivered skips ahead: 9 and 10 are never sent.
    let f = s.call(&node, &[b"SESSION", b"ACK", b"m", b"10"]);
    assert_eq!(f, vec![Frame::Integer(10)]);
    let f = s.call(&node, &[b"PUBLISH", b"t", b"after"]);
    assert_eq!(
        f.iter().filter_map(pushed).count() + usize::from(f.contains(&Frame::Integer(11))),
        2
    );
    assert_eq!(offsets(&f), vec![11]);
}

#[test]
fn a_second_load_takes_the_session_over_or_is_refused() {
    let node = Node::never();
    let mut a = node.client();
    a.call(&node, &[b"SESSION", b"CREATE", b"m", b"*"]);
    a.call(&node, &[b"PUBLISH", b"t", b"1"]);
    assert_eq!(
        offsets(&a.call(&node, &[b"SESSION", b"LOAD", b"m"])),
        vec![1]
    );
    let mut b = node.client();
    let f = b.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(
        offsets(&f),
        vec![1],
        "unacknowledged: sent again to the new holder"
    );
    a.poll(node.now);
    let f = a.frames();
    assert!(
        matches!(&f[..], [Frame::Array(v)] if v[0] == bulk("session-end")),
        "{f:?}"
    );
    // The old holder may no longer acknowledge.
    let f = a.call(&node, &[b"SESSION", b"ACK", b"m", b"1"]);
    assert_eq!(err_text(&f[0]), "ERR session is not loaded by this client");

    let node = Node::new(BrokerConfig::default().fsync(FsyncPolicy::Never).sessions(
        SessionsConfig {
            takeover: Takeover::Refuse,
            ..SessionsConfig::default()
        },
    ));
    let mut a = node.client();
    a.call(&node, &[b"SESSION", b"CREATE", b"m", b"*"]);
    a.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    let mut b = node.client();
    let f = b.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert!(err_text(&f[0]).starts_with("BUSY session is loaded by client"));
    drop(a); // the holder disconnects: the session is free again
    let f = b.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(f[0], Frame::Simple(Bytes::from("OK")));
}

#[test]
fn idle_sessions_expire_and_stop_pinning() {
    let mut node = Node::new(BrokerConfig::default().fsync(FsyncPolicy::Never).sessions(
        SessionsConfig {
            idle_ttl: Some(Duration::from_secs(10)),
            ..SessionsConfig::default()
        },
    ));
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"idle", b"*"]);
    c.call(&node, &[b"SESSION", b"CREATE", b"held", b"*"]);
    c.call(&node, &[b"SESSION", b"LOAD", b"held"]);
    node.advance(Duration::from_secs(9));
    node.broker.tick(node.now).expect("tick");
    assert_eq!(node.broker.with_sessions(|s| s.len()), 2);
    node.advance(Duration::from_secs(2));
    node.broker.tick(node.now).expect("tick");
    node.commit();
    let names: Vec<Bytes> = node
        .broker
        .with_sessions(|s| s.iter().map(|x| x.name().clone()).collect());
    assert_eq!(
        names,
        vec![Bytes::from("held")],
        "a loaded session never expires"
    );
    drop(c);
    node.restart();
    assert_eq!(
        node.broker.with_sessions(|s| s.len()),
        1,
        "the expiry was logged"
    );
}

#[test]
fn sessions_and_cursors_survive_a_restart() {
    let mut node = Node::never();
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"m", b"a*"]);
    for i in 0..5 {
        c.call(&node, &[b"PUBLISH", b"ab", format!("{i}").as_bytes()]);
    }
    c.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    c.call(&node, &[b"SESSION", b"ACK", b"m", b"3"]);
    drop(c);
    let rec = node.restart();
    assert_eq!((rec.sessions, rec.next_offset), (1, 6));
    let mut c = node.client();
    let f = c.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(offsets(&f), vec![4, 5], "everything past the cursor, again");
    let f = c.call(&node, &[b"PUBLISH", b"ab", b"new"]);
    assert!(
        f.contains(&Frame::Integer(6)),
        "offsets go on after a restart: {f:?}"
    );
}

#[test]
fn a_torn_tail_is_cut_and_every_whole_record_kept() {
    let mut node = Node::never();
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"m", b"*"]);
    for i in 0..20 {
        c.call(&node, &[b"PUBLISH", b"t", format!("m{i}").as_bytes()]);
    }
    drop(c);
    // A crash mid-write: half a record at the end of the active segment.
    let seg = std::fs::read_dir(node.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 5]);
    std::fs::write(&seg, &bytes).expect("write");
    let rec = node.restart();
    assert_eq!(rec.truncated_bytes, 10);
    assert_eq!(rec.next_offset, 21);
    let mut c = node.client();
    let f = c.call(&node, &[b"SESSION", b"LOAD", b"m"]);
    assert_eq!(offsets(&f), (1..=20).collect::<Vec<i64>>());
}

fn small_segments(retention: Retention) -> Node {
    Node::new(
        BrokerConfig::default()
            .fsync(FsyncPolicy::Always)
            .segment_bytes(2048)
            .retention(retention),
    )
}

fn publish_n(node: &Node, c: &mut Client, n: usize) {
    for i in 0..n {
        c.send(&[
            b"PUBLISH",
            b"t",
            format!("message {i:04} padding padding padding").as_bytes(),
        ]);
    }
    c.poll(node.now);
    node.commit();
    c.poll(node.now);
    let f = c.frames();
    assert_eq!(f.len(), n, "{f:?}");
}

#[test]
fn segments_go_once_every_session_is_past_them() {
    let mut node = small_segments(Retention::default());
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"slow", b"*"]);
    for _ in 0..10 {
        publish_n(&node, &mut c, 20);
    }
    let info = node.broker.info();
    assert!(info.segments >= 5, "{info:?}");
    assert_eq!(info.first_offset, 1, "the session pins everything");
    assert_eq!(info.pinned_by, Some(Bytes::from("slow")));
    c.call(&node, &[b"SESSION", b"LOAD", b"slow"]);
    c.call(&node, &[b"SESSION", b"ACK", b"slow", b"150"]);
    node.broker.tick(node.now).expect("tick");
    let info = node.broker.info();
    assert!(
        info.first_offset > 100 && info.first_offset <= 151,
        "{}",
        info.first_offset
    );
    assert!(info.stats.released_segments > 0);
    // Everything after the cursor is still there, after a restart too.
    drop(c);
    node.restart();
    let mut c = node.client();
    let f = c.call(&node, &[b"SESSION", b"LOAD", b"slow"]);
    assert_eq!(offsets(&f), (151..=200).collect::<Vec<i64>>());
    // Without sessions, old segments go at once.
    c.call(&node, &[b"SESSION", b"DELETE", b"slow"]);
    publish_n(&node, &mut c, 40);
    node.broker.tick(node.now).expect("tick");
    assert!(node.broker.info().segments <= 2);
}

#[test]
fn a_session_behind_forced_retention_gets_a_gap_error_not_a_silent_skip() {
    let mut node = small_segments(Retention {
        max_bytes: Some(6000),
        max_age: None,
    });
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"slow", b"*"]);
    for _ in 0..10 {
        publish_n(&node, &mut c, 20);
    }
    node.broker.tick(node.now).expect("tick");
    let first = node.broker.first_offset();
    assert!(first > 1);
    let f = c.call(&node, &[b"SESSION", b"LOAD", b"slow"]);
    let text = err_text(&f[0]);
    assert!(
        text.starts_with("GAP session cursor 0 is before the first retained offset")
            && text.contains(&format!("offset {first}")),
        "{text}"
    );
    // Accepting the loss explicitly, then loading works from there.
    let f = c.call(
        &node,
        &[
            b"SESSION",
            b"ACK",
            b"slow",
            (first - 1).to_string().as_bytes(),
        ],
    );
    assert_eq!(f[0], Frame::Integer(first as i64 - 1));
    let f = c.call(&node, &[b"SESSION", b"LOAD", b"slow"]);
    assert_eq!(offsets(&f).first().copied(), Some(first as i64));
    drop(c);
    // The same after a restart: state came back from a checkpoint.
    let rec = node.restart();
    assert_eq!(rec.sessions, 1);
    assert_eq!(node.broker.first_offset(), first);
}

#[test]
fn old_segments_go_past_max_age() {
    let mut node = small_segments(Retention {
        max_age: Some(Duration::from_secs(60)),
        max_bytes: None,
    });
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"slow", b"*"]);
    for _ in 0..5 {
        publish_n(&node, &mut c, 20);
    }
    node.broker.tick(node.now).expect("tick");
    assert_eq!(node.broker.first_offset(), 1, "young: kept for the session");
    node.advance(Duration::from_secs(61));
    publish_n(&node, &mut c, 20);
    node.broker.tick(node.now).expect("tick");
    // Every closed segment of old messages went; the active one stays.
    let info = node.broker.info();
    assert!(info.first_offset > 50, "{info:?}");
    assert!(info.segments <= 2, "{info:?}");
    let f = c.call(&node, &[b"SESSION", b"LOAD", b"slow"]);
    assert!(err_text(&f[0]).starts_with("GAP"));
}

#[test]
fn live_subscribers_get_only_later_messages() {
    let node = Node::never();
    let mut p = node.client();
    p.call(&node, &[b"PUBLISH", b"news", b"old"]);
    let mut s = node.client();
    let f = s.call(&node, &[b"SUBSCRIBE", b"news"]);
    assert_eq!(
        f,
        vec![Frame::Array(vec![
            bulk("subscribe"),
            bulk("news"),
            Frame::Integer(1)
        ])]
    );
    let f = s.call(&node, &[b"PSUBSCRIBE", b"n*"]);
    assert_eq!(f.len(), 1);
    p.call(&node, &[b"PUBLISH", b"news", b"fresh"]);
    p.call(&node, &[b"PUBLISH", b"nope", b"p"]);
    s.poll(node.now);
    assert_eq!(
        s.frames(),
        vec![
            Frame::Array(vec![bulk("message"), bulk("news"), bulk("fresh")]),
            Frame::Array(vec![
                bulk("pmessage"),
                bulk("n*"),
                bulk("news"),
                bulk("fresh")
            ]),
            Frame::Array(vec![bulk("pmessage"), bulk("n*"), bulk("nope"), bulk("p")]),
        ]
    );
    let f = s.call(&node, &[b"PUBLISH", b"x", b"y"]);
    assert!(err_text(&f[0]).starts_with("ERR Can't execute 'publish'"));
}

/// Publishers and commits racing session loads, unloads and acks in a
/// random order, thousands of times: every load delivers exactly the
/// matching offsets after the cursor, in order, with no gap and no
/// duplicate where the backlog turns into live delivery.
#[test]
fn loads_racing_publishes_never_gap_or_duplicate() {
    for seed in 1..=40u64 {
        let node = Node::new(
            BrokerConfig::default()
                .fsync(FsyncPolicy::Always)
                .segment_bytes(4096),
        );
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut p = node.client();
        p.call(&node, &[b"SESSION", b"CREATE", b"m", b"even.*"]);
        let mut s = node.client();
        let mut expected_next: Option<i64> = None; // after a load: the first offset due
        let mut cursor = 0i64;
        let mut loaded = false;
        let mut seen_this_load: Vec<i64> = Vec::new();
        for _ in 0..200 {
            match rng.below(6) {
                0 | 1 => {
                    // A pipelined burst, matching or not.
                    for _ in 0..=rng.below(4) {
                        let topic: &[u8] = if rng.below(2) == 0 {
                            b"even.a"
                        } else {
                            b"odd.b"
                        };
                        p.send(&[b"PUBLISH", topic, b"x"]);
                    }
                    p.poll(node.now);
                }
                2 => node.commit(),
                3 => {
                    if loaded {
                        s.send(&[b"SESSION", b"UNLOAD", b"m"]);
                    } else {
                        s.send(&[b"SESSION", b"LOAD", b"m"]);
                        expected_next = Some(cursor + 1);
                        seen_this_load.clear();
                    }
                    loaded = !loaded;
                }
                4 if loaded && !seen_this_load.is_empty() => {
                    let upto = seen_this_load[rng.below(seen_this_load.len() as u64) as usize];
                    s.send(&[b"SESSION", b"ACK", b"m", upto.to_string().as_bytes()]);
                    cursor = cursor.max(upto);
                }
                _ => {}
            }
            s.poll(node.now);
            p.poll(node.now);
            let _ = p.frames();
            for f in s.frames() {
                if let Some((o, topic, _)) = pushed(&f) {
                    assert!(loaded, "seed {seed}: a push after unload");
                    assert_eq!(&topic[..], b"even.a");
                    let due = expected_next.expect("loaded");
                    assert!(o >= due, "seed {seed}: duplicate {o}, expected {due}");
                    seen_this_load.push(o);
                    expected_next = Some(o + 1);
                }
            }
        }
        // Settle, then check the last load saw every matching offset after its cursor.
        node.commit();
        p.poll(node.now);
        let _ = p.frames();
        // Acks still held behind one another are committed too.
        for _ in 0..3 {
            s.poll(node.now);
            node.commit();
        }
        s.poll(node.now);
        let _ = s.frames();
        s.call(&node, &[b"SESSION", b"UNLOAD", b"m"]);
        let frames = s.call(&node, &[b"SESSION", b"LOAD", b"m"]);
        let got = offsets(&frames);
        let all = matching_offsets(&node);
        let want: Vec<i64> = all.into_iter().filter(|&o| o > cursor).collect();
        assert_eq!(got, want, "seed {seed}: a gap or a duplicate");
    }
}

/// Every matching offset in the log, read by a fresh session-less reader.
fn matching_offsets(node: &Node) -> Vec<i64> {
    let mut r = node.broker.reader();
    let mut at = r.start();
    let mut out = Vec::new();
    loop {
        let batch = r.read(&mut at, 1024).expect("read");
        if batch.is_empty() {
            return out;
        }
        for rec in batch {
            if let Ok(sink_core::record::Record::Message { offset, topic, .. }) =
                sink_core::record::decode(&rec)
                && topic == b"even.a"
            {
                out.push(offset as i64);
            }
        }
    }
}

/// A file system whose fsyncs fail once `fail` is set, as a disk that
/// reports EIO.
#[derive(Debug, Default)]
struct FailingFs {
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug)]
struct FailingFile {
    file: std::sync::Arc<dyn kids_core::LogFile>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl kids_core::LogFs for FailingFs {
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        kids_core::StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<std::ffi::OsString>> {
        kids_core::StdFs.list(dir)
    }
    fn open(
        &self,
        path: &std::path::Path,
        mode: kids_core::OpenMode,
    ) -> std::io::Result<std::sync::Arc<dyn kids_core::LogFile>> {
        Ok(std::sync::Arc::new(FailingFile {
            file: kids_core::StdFs.open(path, mode)?,
            fail: self.fail.clone(),
        }))
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        kids_core::StdFs.remove(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        kids_core::StdFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        kids_core::StdFs.sync_dir(dir)
    }
}

impl kids_core::LogFile for FailingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.file.write_at(buf, offset)
    }
    fn sync(&self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.file.sync()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.file.size()
    }
}

#[test]
fn a_failed_fsync_closes_writers_unanswered_and_refuses_later_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FailingFs::default();
    let fail = fs.fail.clone();
    let now = std::time::Instant::now();
    let (broker, _) = sink_core::Broker::open_with(
        dir.path(),
        BrokerConfig::default(),
        std::sync::Arc::new(fs),
        now,
        super::support::WALL,
    )
    .expect("open");
    let server = sink_core::SinkServer::new(broker.clone());
    let mut c = Client::on(&server, now);
    c.send(&[b"PUBLISH", b"t", b"durable"]);
    c.poll(now);
    broker.commit(now).expect("a good commit");
    c.poll(now);
    assert_eq!(c.frames(), vec![Frame::Integer(1)]);

    c.send(&[b"PUBLISH", b"t", b"lost?"]);
    c.poll(now);
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(broker.commit(now).is_err(), "the fsync failed");
    c.poll(now);
    assert!(c.frames().is_empty(), "never acknowledged");
    assert!(
        c.conn.ended().is_some(),
        "closed: the client sends again elsewhere"
    );

    let mut d = Client::on(&server, now);
    d.send(&[b"PUBLISH", b"t", b"later"]);
    d.poll(now);
    let f = d.frames();
    assert!(err_text(&f[0]).starts_with("ERR sink log failed"), "{f:?}");
    assert!(node_info_failed(&broker));
}

fn node_info_failed(broker: &sink_core::Broker) -> bool {
    broker.info().failed.is_some()
}

/// Raw bytes in, everything written out: for pipelines that mix commands.
fn raw(node: &Node, c: &mut Client, bytes: &[u8]) -> Vec<u8> {
    c.io.send(bytes);
    c.poll(node.now);
    c.io.take_output()
}

#[test]
fn quit_hello_reset_and_protocol_errors_never_flush_replies_before_they_are_durable() {
    let node = Node::new(BrokerConfig::default());
    for (after, want) in [
        (&b"QUIT\r\n"[..], &b":1\r\n+OK\r\n"[..]),
        (b"RESET\r\n", b":2\r\n+RESET\r\n"),
        (
            b"*1\r\n$x\r\n",
            b":3\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
    ] {
        let mut c = node.client();
        let mut input = b"PUBLISH t x\r\n".to_vec();
        input.extend_from_slice(after);
        assert_eq!(raw(&node, &mut c, &input), b"", "nothing before the fsync");
        node.commit();
        c.poll(node.now);
        assert_eq!(
            c.io.take_output(),
            want,
            "{}",
            String::from_utf8_lossy(after)
        );
    }
    let mut c = node.client();
    assert_eq!(raw(&node, &mut c, b"PUBLISH t x\r\nHELLO 3\r\n"), b"");
    node.commit();
    c.poll(node.now);
    let out = c.io.take_output();
    assert!(
        out.starts_with(b":4\r\n%"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn a_read_never_shows_what_a_crash_could_take_back() {
    let node = Node::new(BrokerConfig::default());
    let mut a = node.client();
    let mut b = node.client();
    assert_eq!(raw(&node, &mut a, b"XADD s * f v\r\n"), b"");
    // B's read sees the entry only once it is durable.
    assert_eq!(raw(&node, &mut b, b"XLEN s\r\n"), b"");
    assert_eq!(raw(&node, &mut b, b""), b"");
    node.commit();
    b.poll(node.now);
    assert_eq!(b.io.take_output(), b":1\r\n");
    a.poll(node.now);
    assert!(a.io.take_output().ends_with(b"-0\r\n"));
    // So does a second create of a session the first has not made durable.
    assert_eq!(raw(&node, &mut a, b"SESSION CREATE m x\r\n"), b"");
    assert_eq!(raw(&node, &mut b, b"SESSION CREATE m x\r\n"), b"");
    node.commit();
    b.poll(node.now);
    assert_eq!(b.io.take_output(), b"+OK\r\n");
}

#[test]
fn an_oversized_entry_is_refused_and_the_log_goes_on() {
    let node = Node::new(BrokerConfig::default().fsync(FsyncPolicy::Never));
    let mut c = node.client();
    let big = vec![b'x'; node.broker.config().max_payload + 70_000];
    let f = c.call(&node, &[b"XADD", b"s", b"*", b"f", &big]);
    assert!(err_text(&f[0]).contains("over the limit"), "{f:?}");
    let f = c.call(&node, &[b"PUBLISH", b"t", &big]);
    assert!(err_text(&f[0]).contains("over the limit"), "{f:?}");
    assert_eq!(
        c.call(&node, &[b"PUBLISH", b"t", b"small"]),
        vec![Frame::Integer(1)]
    );
    assert!(node.broker.info().failed.is_none());
}

#[test]
fn a_held_reply_is_not_kept_behind_a_blocked_read() {
    let node = Node::new(BrokerConfig::default());
    let mut c = node.client();
    let id = match &c.call(&node, &[b"XADD", b"s", b"*", b"f", b"v"])[0] {
        Frame::Bulk(id) => id.clone(),
        other => panic!("{other:?}"),
    };
    c.call(&node, &[b"XGROUP", b"CREATE", b"s", b"g", b"0"]);
    c.call(
        &node,
        &[b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"s", b">"],
    );
    // An ack (a write, held until durable) then a read that blocks.
    let mut input = format!("XACK s g {}\r\n", String::from_utf8_lossy(&id)).into_bytes();
    input.extend_from_slice(b"XREADGROUP GROUP g c BLOCK 0 STREAMS s >\r\n");
    assert_eq!(raw(&node, &mut c, &input), b"");
    node.commit();
    c.poll(node.now);
    assert_eq!(
        c.io.take_output(),
        b":1\r\n",
        "the ack's reply, while the read waits"
    );
}

#[test]
fn a_checkpoint_cut_short_at_the_head_of_the_oldest_segment_gives_way_to_the_next_whole_one() {
    use sink_core::record::{self, SessionOp};
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) =
            kids_core::SegmentLog::open(dir.path(), kids_core::SegmentConfig::default())
                .expect("open");
        let mut b = kids_core::Batch::default();
        // Segment 1: a checkpoint cut short by a crash (its predecessors released since).
        record::push_checkpoint(&mut b, 1);
        record::push_session(
            &mut b,
            &SessionOp::Create {
                name: b"a",
                cursor: 0,
                filters: vec![b"x"],
            },
        );
        log.append_batch(&mut b).expect("append");
        log.roll().expect("roll");
        // Segment 2: the whole checkpoint written when the broker came back.
        record::push_checkpoint(&mut b, 1);
        record::push_session(
            &mut b,
            &SessionOp::Create {
                name: b"a",
                cursor: 0,
                filters: vec![b"x"],
            },
        );
        record::push_session(
            &mut b,
            &SessionOp::Create {
                name: b"b",
                cursor: 0,
                filters: vec![b"y"],
            },
        );
        record::push_checkpoint_end(&mut b);
        record::push_message(&mut b, 1, super::support::WALL, b"y", b"hello");
        log.append_batch(&mut b).expect("append");
    }
    let (broker, rec) = sink_core::Broker::open(
        dir.path(),
        BrokerConfig::default(),
        std::time::Instant::now(),
        super::support::WALL,
    )
    .expect("open");
    assert_eq!((rec.sessions, rec.next_offset), (2, 2));
    assert!(broker.with_sessions(|s| s.get(b"b").is_some()));
}

#[test]
fn a_caught_up_session_with_rare_topics_does_not_keep_the_whole_log() {
    let node = small_segments(Retention::default());
    let mut c = node.client();
    c.call(&node, &[b"SESSION", b"CREATE", b"rare", b"rare.*"]);
    let mut s = node.client();
    s.call(&node, &[b"SESSION", b"LOAD", b"rare"]);
    for _ in 0..60 {
        publish_n(&node, &mut c, 40);
        s.poll(node.now);
        node.commit();
    }
    c.call(&node, &[b"PUBLISH", b"rare.one", b"wanted"]);
    s.poll(node.now);
    let f = s.frames();
    assert_eq!(offsets(&f), vec![2401], "still delivered: {f:?}");
    node.commit();
    node.broker.tick(node.now).expect("tick");
    let info = node.broker.info();
    assert!(info.sessions[0].cursor >= 1024, "{:?}", info.sessions[0]);
    assert!(
        info.first_offset > 1000,
        "old segments went: {}",
        info.first_offset
    );
    // What was delivered and not acknowledged is not skipped.
    assert!(info.sessions[0].cursor < 2401);
}

#[test]
fn the_serving_thread_commits_before_it_sleeps_unless_writers_are_on_their_way() {
    let node = Node::new(BrokerConfig::default());
    let mut c = node.client();
    assert!(!node.broker.commit_before_park(node.now), "nothing staged");
    c.send(&[b"PUBLISH", b"t", b"x"]);
    c.poll(node.now);
    assert!(
        node.broker.commit_before_park(node.now),
        "a lone writer: committed here"
    );
    c.poll(node.now);
    assert_eq!(c.frames(), vec![Frame::Integer(1)]);
    // Three writers released by one commit: while only one of them has
    // written again, the commit is left to the committer (it gathers them).
    let mut more: Vec<Client> = (0..2).map(|_| node.client()).collect();
    c.send(&[b"PUBLISH", b"t", b"a"]);
    c.poll(node.now);
    for m in &mut more {
        m.send(&[b"PUBLISH", b"t", b"b"]);
        m.poll(node.now);
    }
    node.commit();
    c.poll(node.now);
    more.iter_mut().for_each(|m| m.poll(node.now));
    c.send(&[b"PUBLISH", b"t", b"c"]);
    c.poll(node.now);
    assert!(
        !node.broker.commit_before_park(node.now),
        "two more writers are due"
    );
    for m in &mut more {
        m.send(&[b"PUBLISH", b"t", b"d"]);
        m.poll(node.now);
    }
    assert!(
        node.broker.commit_before_park(node.now),
        "all three wrote: one fsync for them"
    );
    assert_eq!(node.broker.info().group_size.max(), 3);
}

#[test]
fn interval_and_never_answer_once_written_and_fsync_as_their_policy_says() {
    let every = Duration::from_millis(100);
    let mut node = Node::new(BrokerConfig::default().fsync(FsyncPolicy::Interval(every)));
    let mut c = node.client();
    c.send(&[b"PUBLISH", b"t", b"x"]);
    c.poll(node.now);
    assert!(c.frames().is_empty(), "not before it is written");
    node.commit();
    c.poll(node.now);
    assert_eq!(c.frames(), vec![Frame::Integer(1)], "written: answered");
    assert_eq!(
        node.broker.info().fsync_us.count(),
        0,
        "the interval is not due"
    );
    node.advance(every);
    node.commit();
    assert_eq!(node.broker.info().fsync_us.count(), 1, "due: one fsync");
    node.commit();
    assert_eq!(
        node.broker.info().fsync_us.count(),
        1,
        "not again before the next interval"
    );

    let node = Node::never();
    let mut c = node.client();
    for _ in 0..3 {
        assert_eq!(c.call(&node, &[b"PUBLISH", b"t", b"x"]).len(), 1);
    }
    assert_eq!(node.broker.info().fsync_us.count(), 0, "never");
}
