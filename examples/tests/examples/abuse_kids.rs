//! The kids abuse suite: what a hostile or careless client did to kids,
//! repeated against the real program, checking that another client is
//! still served, that memory stays bounded and that the bound is counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kids_core::{Frame, Proto};
use test_support::Process;

use super::start_kids;

/// Starts kids on its defaults plus the config text `conf`.
fn kids_with(conf: &str) -> (Process, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kids.conf");
    std::fs::write(&path, conf).expect("config");
    let (process, addr) = start_kids(&["-c".as_ref(), path.as_os_str()], 0);
    (process, addr, dir)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A command as a client sends it (kids' own RESP encoder).
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    Frame::command(args).encode(Proto::Resp2, &mut out);
    out.to_vec()
}

/// Reads one reply line (`+`, `-`, `:`) or a bulk header with its body.
fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("reply");
    l
}

/// Round trips of PING on a fresh connection of its own, one every `gap`,
/// until `stop` (at least `min` of them).
fn ping_while(addr: &str, stop: &AtomicBool, min: usize, gap: Duration) -> Vec<Duration> {
    let mut s = connect(addr);
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut rtts = Vec::new();
    while rtts.len() < min || !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        s.write_all(b"PING\r\n").expect("ping");
        assert_eq!(line(&mut r), "+PONG\r\n");
        rtts.push(t.elapsed());
        thread::sleep(gap);
    }
    rtts
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The first row of the issue: 100,000 patterns like `*a*a*a*a*a*a*a*bN`,
/// then publishes to the longest channel name allowed, while another
/// client PINGs. Half of the patterns end in `*` (no literal end to be
/// filed under): every publish must match them all, and does so in slices.
#[test]
fn hostile_patterns_do_not_stall_other_clients() {
    let (kids, addr, _dir) = kids_with("");
    let before = kids.rss_bytes().expect("rss");
    let pinger = |addr: &str| {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, flag) = (addr.to_string(), Arc::clone(&stop));
        let handle = thread::spawn(move || ping_while(&addr, &flag, 20, Duration::from_millis(5)));
        (stop, handle)
    };
    let (stop, building) = pinger(&addr);
    // 10 clients of 10,000 patterns each (the default bound per client).
    let mut subscribers = Vec::new();
    for c in 0..10 {
        let s = connect(&addr);
        let pats: Vec<Vec<u8>> = (0..10_000)
            .map(|i| {
                let n = c * 10_000 + i;
                let tail = if n % 2 == 0 { "" } else { "*" };
                format!("*a*a*a*a*a*a*a*b{n}{tail}").into_bytes()
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"PSUBSCRIBE"];
        args.extend(pats.iter().map(Vec::as_slice));
        (&s).write_all(&command(&args)).expect("psubscribe");
        subscribers.push(s);
    }
    // Every confirmation read: the last one of each client counts 10,000.
    for s in &subscribers {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut last = String::new();
        for _ in 0..10_000 * 6 {
            last = line(&mut r);
        }
        assert_eq!(last, ":10000\r\n");
    }
    stop.store(true, Ordering::Relaxed);
    let mut build_rtts = building.join().expect("pinger");
    // One more pattern on a full client is refused, Redis-style.
    let mut r = BufReader::new(subscribers[0].try_clone().expect("clone"));
    (&subscribers[0])
        .write_all(&command(&[b"PSUBSCRIBE", b"one-too-many*"]))
        .expect("psubscribe");
    assert_eq!(
        line(&mut r),
        "-ERR max number of patterns per client reached (10000)\r\n"
    );

    let mut publisher = connect(&addr);
    let mut replies = BufReader::new(publisher.try_clone().expect("clone"));
    // A 64 KB channel name is refused.
    let huge = vec![b'a'; 64 * 1024];
    publisher
        .write_all(&command(&[b"PUBLISH", &huge, b"m"]))
        .expect("publish");
    assert_eq!(
        line(&mut replies),
        "-ERR channel name longer than 4096 bytes\r\n"
    );
    // The longest allowed, published back to back while the PINGs go on.
    let (stop, publishing) = pinger(&addr);
    let longest = vec![b'a'; 4 * 1024];
    let started = Instant::now();
    let mut published = 0;
    while started.elapsed() < Duration::from_secs(3) || published < 2 {
        publisher
            .write_all(&command(&[b"PUBLISH", &longest, b"m"]))
            .expect("publish");
        assert_eq!(line(&mut replies), ":0\r\n");
        published += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut rtts = publishing.join().expect("pinger");
    let rss = kids.rss_bytes().expect("rss");
    // A message that matches reaches its pattern, and the other kind too.
    let hit = [&longest[..4 * 1024 - 5], b"b1234"].concat();
    publisher
        .write_all(&command(&[b"PUBLISH", &hit, b"m"]))
        .expect("publish");
    // ...*b1234 (filed by its suffix), and ...*b1* and ...*b123* (visited
    // by every publish).
    assert_eq!(line(&mut replies), ":3\r\n");
    let worst = *rtts.iter().max().expect("rtts");
    let med = median(&mut rtts);
    let build_worst = *build_rtts.iter().max().expect("rtts");
    let build_med = median(&mut build_rtts);
    eprintln!(
        "kids abuse: {} PINGs while 10 clients subscribed 100,000 patterns: median \
         {build_med:?}, worst {build_worst:?}; {} PINGs while {published} publishes ran \
         against them: median {med:?}, worst {worst:?}; RSS {} MB before, {} MB after",
        build_rtts.len(),
        rtts.len(),
        before >> 20,
        rss >> 20
    );
    assert!(
        build_med < Duration::from_millis(10),
        "PING round trip median {build_med:?} while patterns were added"
    );
    assert!(
        med < Duration::from_millis(10),
        "PING round trip median {med:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "worst PING round trip {worst:?}"
    );
    assert!(
        rss < before + (256 << 20),
        "RSS grew from {before} to {rss}"
    );
    kids.check_running().expect("kids still running");
}

/// The second row: `*1048576` then 1,048,575 empty arguments, unfinished,
/// on 10 connections. Each argument costs memory though it holds no byte:
/// the query buffer bound counts that, so each client is closed at the
/// bound and the server's memory stays near 10 x the bound.
#[test]
fn a_million_empty_arguments_are_counted_against_the_query_buffer() {
    let (kids, addr, _dir) = kids_with("query_buffer 8mb;");
    let before = kids.rss_bytes().expect("rss");
    let mut body = b"*1048576\r\n".to_vec();
    for _ in 0..1_048_575 {
        body.extend_from_slice(b"$0\r\n\r\n");
    }
    let attackers: Vec<_> = (0..10)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            thread::spawn(move || {
                let mut s = connect(&addr);
                // The server closes the connection part way: the write fails.
                let _ = s.write_all(&body);
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                String::from_utf8_lossy(&rest).into_owned()
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        thread::spawn(move || ping_while(&addr, &stop, 10, Duration::from_millis(10)))
    };
    let mut peak = kids.rss_bytes().expect("rss");
    for a in attackers {
        let said = a.join().expect("attacker");
        assert!(
            said.is_empty() || said.contains("query buffer"),
            "closed with {said:?}"
        );
        peak = peak.max(kids.rss_bytes().expect("rss"));
    }
    stop.store(true, Ordering::Relaxed);
    let mut rtts = pinger.join().expect("pinger");
    // Every attacker is gone: only the connection asking is left.
    let mut s = connect(&addr);
    test_support::wait_for("the attackers' connections to close", || {
        s.write_all(b"INFO clients\r\n").expect("info");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("info");
        String::from_utf8_lossy(&buf[..n]).contains("connected_clients:1\r\n")
    });
    let med = median(&mut rtts);
    eprintln!(
        "kids abuse: 10 x 1,048,575 empty arguments at query_buffer 8mb: RSS {} MB before, \
         {} MB at most after; PING median {med:?}",
        before >> 20,
        peak >> 20
    );
    // 10 clients of at most 8 MB each, their read buffers, and slack.
    assert!(
        peak < before + (160 << 20),
        "RSS grew from {before} to {peak}"
    );
    assert!(med < Duration::from_millis(100), "PING median {med:?}");
    kids.check_running().expect("kids still running");
}
