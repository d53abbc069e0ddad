//! kill -9: a sink server process under load (pipelined PUBLISH and XADD
//! on several connections, a session consumer acknowledging, a stream
//! group consumer XACKing) is killed at a random moment and restarted on
//! the same data directory, cycle after cycle; nothing it acknowledged may
//! be missing after the restart.
//!
//! The server is this test binary itself, run again as a child with
//! [`CHILD_ENV`] set (the ignored test [`child`] serves then): the child is
//! always the code under test, never a stale build of the example.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kids_core::Frame;
use kids_core::net::{Listener, ServerConfig};
use sink_core::{Broker, BrokerConfig, FsyncPolicy};
use test_support::{Process, Stream};

use super::server::Raw;
use super::support::{Rng, pushed};

/// The data directory of the child server; unset, [`child`] does nothing.
const CHILD_ENV: &str = "SINK_CRASH_CHILD_DIR";
const CYCLES: usize = 20;
const PUBLISHERS: usize = 4;
/// The child's segment size.
const SEGMENT_BYTES: u64 = 64 << 10;

/// The child: serves a broker on the directory [`CHILD_ENV`] names, with
/// `fsync always` and small segments, until killed; says where it listens on stderr as the
/// example does.
#[test]
#[ignore = "the server process of crash_cycles, run by it"]
fn child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Small segments: the log rolls (a checkpoint opens each new
        // segment) many times per cycle, so kills land around rolls too.
        let config = BrokerConfig::default()
            .fsync(FsyncPolicy::Always)
            .segment_bytes(SEGMENT_BYTES);
        let (broker, _) =
            Broker::open(&dir, config, Instant::now(), super::support::WALL).expect("open the log");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        eprintln!("sink listening on {}", tcp.local_addr().expect("addr"));
        sink_core::net::serve(
            vec![Listener::Tcp(tcp)],
            broker,
            ServerConfig::default(),
            std::future::pending(),
        )
        .await
        .expect("serve");
    });
}

/// Starts the child server on `dir`; returns it and its port.
fn start(dir: &std::path::Path) -> (Process, u16) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--exact", "sink::crash::child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir);
    let process = Process::start("sink", cmd).expect("start the child server");
    let line = process
        .wait_for_line(Stream::Stderr, |l| l.starts_with("sink listening on "))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (process, port)
}

/// What one publishing connection got acknowledged, and everything it sent.
#[derive(Default)]
struct Published {
    /// PUBLISH: offset -> payload.
    messages: Vec<(u64, String)>,
    /// XADD: id -> payload.
    entries: Vec<(String, String)>,
    /// Every payload sent, acknowledged or not.
    sent: Vec<String>,
}

/// Pipelines PUBLISH (topic `c`) and XADD (stream `cs`) in batches of
/// 16 to 64 until the connection fails; records what was acknowledged.
async fn publish(port: u16, cycle: usize, worker: usize, seed: u64) -> Published {
    let mut out = Published::default();
    let mut rng = Rng(seed | 1);
    let Ok(mut conn) = Raw::connect(port).await else {
        return out;
    };
    let mut seq = 0u64;
    loop {
        let depth = 16 + rng.below(49) as usize;
        let batch: Vec<(bool, String)> = (0..depth)
            .map(|_| {
                seq += 1;
                (rng.below(3) != 0, format!("c{cycle}-w{worker}-{seq}"))
            })
            .collect();
        let commands: Vec<Vec<&str>> = batch
            .iter()
            .map(|(is_pub, p)| {
                if *is_pub {
                    vec!["PUBLISH", "c", p.as_str()]
                } else {
                    vec!["XADD", "cs", "*", "p", p.as_str()]
                }
            })
            .collect();
        out.sent.extend(batch.iter().map(|b| b.1.clone()));
        if conn.send(&commands).await.is_err() {
            return out;
        }
        for (is_pub, payload) in batch {
            match conn.next().await {
                Ok(Frame::Integer(o)) if is_pub => out.messages.push((o as u64, payload)),
                Ok(Frame::Bulk(id)) if !is_pub => out
                    .entries
                    .push((String::from_utf8_lossy(&id).into_owned(), payload)),
                Ok(other) => panic!("unexpected reply {other:?}"),
                Err(_) => return out,
            }
        }
    }
}

/// Loads session `work` (topic `c`), acknowledging what it received every
/// few pushes, until the connection fails; returns the last cursor the
/// server acknowledged.
async fn consume_session(port: u16, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut acked = 0;
    let Ok(mut conn) = Raw::connect(port).await else {
        return acked;
    };
    if !matches!(
        conn.call(&["SESSION", "LOAD", "work"]).await,
        Ok(Frame::Simple(_))
    ) {
        return acked;
    }
    let mut last = 0;
    let mut unacked = 0;
    loop {
        match conn.next().await {
            Ok(f) => match pushed(&f) {
                Some((o, _, _)) => {
                    last = o;
                    unacked += 1;
                }
                None => match f {
                    Frame::Integer(c) => acked = c as u64,
                    other => panic!("session consumer got {other:?}"),
                },
            },
            Err(_) => return acked,
        }
        if unacked > rng.below(64) {
            unacked = 0;
            let ack = vec![
                "SESSION".to_owned(),
                "ACK".into(),
                "work".into(),
                last.to_string(),
            ];
            if conn.send(&[ack]).await.is_err() {
                return acked;
            }
        }
    }
}

/// Group `g` on `cs`: what consumer `w` was delivered, what it sent XACK
/// for, and what XACK acknowledged.
#[derive(Default)]
struct GroupWork {
    delivered: Vec<String>,
    ack_sent: Vec<String>,
    acked: Vec<String>,
}

/// XREADGROUP `>` then XACK of what came, until the connection fails.
async fn consume_group(port: u16) -> GroupWork {
    let mut out = GroupWork::default();
    let Ok(mut conn) = Raw::connect(port).await else {
        return out;
    };
    loop {
        let read = conn
            .call(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "w",
                "COUNT",
                "50",
                "BLOCK",
                "50",
                "STREAMS",
                "cs",
                ">",
            ])
            .await;
        let ids = match read {
            Ok(Frame::Null | Frame::NullArray) => continue,
            Ok(f) => entry_ids(&f),
            Err(_) => return out,
        };
        out.delivered.extend(ids.iter().cloned());
        let mut cmd = vec!["XACK".to_owned(), "cs".into(), "g".into()];
        cmd.extend(ids.iter().cloned());
        out.ack_sent.extend(ids.iter().cloned());
        if conn.send(&[cmd]).await.is_err() {
            return out;
        }
        match conn.next().await {
            Ok(Frame::Integer(n)) => {
                assert_eq!(n as usize, ids.len(), "XACK of pending entries");
                out.acked.extend(ids);
            }
            Ok(other) => panic!("XACK answered {other:?}"),
            Err(_) => return out,
        }
    }
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn array(f: &Frame) -> &[Frame] {
    match f {
        Frame::Array(v) => v,
        other => panic!("not an array: {other:?}"),
    }
}

/// The ids of an XREADGROUP/XREAD reply with one stream.
fn entry_ids(reply: &Frame) -> Vec<String> {
    array(reply)
        .iter()
        .flat_map(|s| array(&array(s)[1]).iter().map(|e| text(&array(e)[0])))
        .collect()
}

/// A stream id as (milliseconds, sequence).
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or_else(|| panic!("id {id:?}"));
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// Every entry of `cs`: id -> payload, by XRANGE pages.
async fn all_entries(conn: &mut Raw) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut from = "-".to_owned();
    loop {
        let page = conn
            .call(&["XRANGE", "cs", &from, "+", "COUNT", "1000"])
            .await
            .expect("xrange");
        let entries = array(&page);
        for e in entries {
            let e = array(e);
            let fields = array(&e[1]);
            assert_eq!(text(&fields[0]), "p");
            out.insert(text(&e[0]), text(&fields[1]));
        }
        match entries.last() {
            Some(last) if entries.len() == 1000 => from = format!("({}", text(&array(last)[0])),
            _ => return out,
        }
    }
}

/// SESSION INFO `name`'s cursor.
async fn session_cursor(conn: &mut Raw, name: &str) -> u64 {
    let info = conn.call(&["SESSION", "INFO", name]).await.expect("info");
    let fields = array(&info);
    let at = fields
        .iter()
        .position(|f| *f == Frame::Bulk(Bytes::from_static(b"cursor")))
        .unwrap_or_else(|| panic!("no cursor in {info:?}"));
    match fields[at + 1] {
        Frame::Integer(c) => c as u64,
        ref other => panic!("cursor {other:?}"),
    }
}

/// Totals over the whole run.
#[derive(Default)]
struct Totals {
    /// offset -> payload of every acknowledged PUBLISH.
    messages: BTreeMap<u64, String>,
    /// id -> payload of every acknowledged XADD.
    entries: BTreeMap<String, String>,
    sent: HashSet<String>,
    work_acked: u64,
    group_delivered: BTreeSet<String>,
    group_ack_sent: BTreeSet<String>,
    group_acked: BTreeSet<String>,
    verified_messages: usize,
    verified_entries: usize,
}

#[test]
fn crash_cycles_lose_nothing_acknowledged() {
    let seed = std::env::var("SINK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash seed {seed} (SINK_CRASH_SEED={seed} replays the kill times)");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut t = Totals::default();
    let started = Instant::now();

    let (mut server, mut port) = start(dir.path());
    rt.block_on(async {
        let mut c = Raw::connect(port).await.expect("connect");
        for cmd in [
            &["SESSION", "CREATE", "verify", "*"][..],
            &["SESSION", "CREATE", "work", "c"],
            &["XGROUP", "CREATE", "cs", "g", "$", "MKSTREAM"],
        ] {
            let ok = c.call(cmd).await.expect("setup");
            assert_eq!(ok, Frame::Simple(Bytes::from_static(b"OK")), "{cmd:?}");
        }
    });
    for cycle in 0..CYCLES {
        let delay = Duration::from_millis(30 + rng.below(270));
        let task_seed = rng.next();
        let (published, work_acked, group) = rt.block_on(async {
            let publishers: Vec<_> = (0..PUBLISHERS)
                .map(|w| tokio::spawn(publish(port, cycle, w, task_seed ^ (w as u64 + 1))))
                .collect();
            let session = tokio::spawn(consume_session(port, task_seed.rotate_left(7)));
            let group = tokio::spawn(consume_group(port));
            tokio::time::sleep(delay).await;
            server.kill().expect("SIGKILL the server");
            let mut all = Vec::new();
            for p in publishers {
                all.push(p.await.expect("publisher"));
            }
            (
                all,
                session.await.expect("session consumer"),
                group.await.expect("group consumer"),
            )
        });
        let (mut n_msg, mut n_ent) = (0, 0);
        for p in published {
            n_msg += p.messages.len();
            n_ent += p.entries.len();
            t.sent.extend(p.sent);
            for (o, payload) in p.messages {
                assert!(
                    t.messages.insert(o, payload).is_none(),
                    "offset {o} given twice"
                );
            }
            for (id, payload) in p.entries {
                assert!(
                    t.entries.insert(id.clone(), payload).is_none(),
                    "id {id} given twice"
                );
            }
        }
        t.work_acked = t.work_acked.max(work_acked);
        t.group_delivered.extend(group.delivered);
        t.group_ack_sent.extend(group.ack_sent);
        t.group_acked.extend(group.acked);

        (server, port) = start(dir.path());
        let (verified, extra, entries, cursor, pending) = rt.block_on(verify(port, &t));
        t.verified_messages += verified;
        t.verified_entries = entries;
        eprintln!(
            "cycle {cycle}: killed after {delay:?}; acknowledged {n_msg} PUBLISH and {n_ent} XADD; \
             after restart verified {verified} messages since the last check ({extra} durable but unanswered), \
             {entries} stream entries in all; session cursor {cursor} >= acked {}; group: {pending} pending, {} acked",
            t.work_acked,
            t.group_acked.len()
        );
    }
    eprintln!(
        "crash: {CYCLES} kill -9 cycles in {:?} ({} files in the data directory): {} PUBLISH and {} XADD acknowledged, {} messages and {} entries verified, 0 lost",
        started.elapsed(),
        std::fs::read_dir(dir.path()).map_or(0, Iterator::count),
        t.messages.len(),
        t.entries.len(),
        t.verified_messages,
        t.verified_entries
    );
    drop(server);
}

/// After a restart: the `verify` session (filter `*`, created before any
/// publish) holds every acknowledged PUBLISH after its cursor with its
/// payload; `cs` holds every acknowledged XADD; `work`'s cursor is at least
/// what was acknowledged; no XACKed entry is pending and every delivered
/// one not XACKed is. Returns (messages verified, extra messages, entries,
/// work's cursor, pending count).
async fn verify(port: u16, t: &Totals) -> (usize, usize, usize, u64, usize) {
    let mut c = Raw::connect(port).await.expect("connect after restart");
    let from = session_cursor(&mut c, "verify").await;

    // Read the session to a marker published now: everything before it.
    let mut s = Raw::connect(port).await.expect("connect");
    let ok = s.call(&["SESSION", "LOAD", "verify"]).await.expect("load");
    assert_eq!(ok, Frame::Simple(Bytes::from_static(b"OK")));
    let Frame::Integer(marker) = c.call(&["PUBLISH", "mark", "m"]).await.expect("marker") else {
        panic!("the marker's offset");
    };
    let marker = marker as u64;
    let mut seen = BTreeMap::new();
    let mut since_ack = 0;
    loop {
        let f = s.next().await.expect("a push");
        if matches!(f, Frame::Integer(_)) {
            continue; // an ACK's reply
        }
        let (o, topic, payload) = pushed(&f).unwrap_or_else(|| panic!("not a push: {f:?}"));
        let o = o as u64;
        if o == marker {
            break;
        }
        assert!(o > from, "offset {o} at or before the cursor {from}");
        let payload = String::from_utf8_lossy(&payload).into_owned();
        if topic.as_ref() != b"mark" {
            assert!(
                t.sent.contains(&payload),
                "offset {o}: {payload:?} was never sent"
            );
        }
        assert!(seen.insert(o, payload).is_none(), "offset {o} twice");
        since_ack += 1;
        if since_ack == 512 {
            since_ack = 0;
            s.send(&[vec![
                "SESSION".to_owned(),
                "ACK".into(),
                "verify".into(),
                o.to_string(),
            ]])
            .await
            .expect("ack");
        }
    }
    let mut verified = 0;
    for (o, payload) in t.messages.range(from + 1..) {
        assert_eq!(
            seen.get(o),
            Some(payload),
            "acknowledged offset {o} lost or changed"
        );
        verified += 1;
    }
    let extra = seen.len() - verified;
    // Nothing is read twice by the next check: the cursor moves to the marker.
    s.send(&[vec![
        "SESSION".to_owned(),
        "ACK".into(),
        "verify".into(),
        marker.to_string(),
    ]])
    .await
    .expect("ack");
    loop {
        match s.next().await.expect("the ack's reply") {
            Frame::Integer(c) if c as u64 == marker => break,
            Frame::Integer(_) => {}
            other => panic!("{other:?}"),
        }
    }

    let entries = all_entries(&mut c).await;
    for (id, payload) in &t.entries {
        assert_eq!(
            entries.get(id),
            Some(payload),
            "acknowledged entry {id} lost or changed"
        );
    }
    for (id, payload) in &entries {
        assert!(
            t.sent.contains(payload),
            "entry {id}: {payload:?} was never sent"
        );
    }

    let cursor = session_cursor(&mut c, "work").await;
    assert!(
        cursor >= t.work_acked,
        "work's cursor {cursor} < acknowledged {}",
        t.work_acked
    );

    let pending = c
        .call(&["XPENDING", "cs", "g", "-", "+", "1000000"])
        .await
        .expect("xpending");
    let pending: BTreeSet<String> = array(&pending).iter().map(|p| text(&array(p)[0])).collect();
    for id in &t.group_acked {
        assert!(!pending.contains(id), "XACKed {id} is pending again");
    }
    for id in &t.group_delivered {
        assert!(
            pending.contains(id) || t.group_ack_sent.contains(id),
            "{id} was delivered, never XACKed, and is not pending"
        );
    }
    let groups = c.call(&["XINFO", "GROUPS", "cs"]).await.expect("xinfo");
    let group = array(&array(&groups)[0]);
    let at = group
        .iter()
        .position(|f| *f == Frame::Bulk(Bytes::from_static(b"last-delivered-id")))
        .unwrap_or_else(|| panic!("no last-delivered-id in {groups:?}"));
    let last = parse_id(&text(&group[at + 1]));
    if let Some(max) = t.group_delivered.iter().map(|id| parse_id(id)).max() {
        assert!(
            last >= max,
            "last-delivered-id {last:?} < delivered {max:?}"
        );
    }
    (verified, extra, entries.len(), cursor, pending.len())
}
