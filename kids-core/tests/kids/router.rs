//! Router behaviour through its public API: ignore_case, the tap, INFO
//! statistics on a simulated clock, the topic bound, unix sockets, shutdown.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kids_core::net::{Listener, ServerConfig, serve};
use kids_core::{Refused, Router, RouterConfig, Session, Tap};

fn req(args: &[&str]) -> Vec<Bytes> {
    args.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

fn run(session: &mut Session, args: &[&str], now: Instant) -> Vec<u8> {
    session.handle(req(args), now);
    session.flush(now);
    session.take_output()
}

#[test]
fn ignore_case_applies_to_patterns_only() {
    let now = Instant::now();
    for (ignore, want) in [(false, 1), (true, 2)] {
        let router = Router::new(RouterConfig::default().ignore_case(ignore), now);
        let mut sub = Session::new(&router);
        run(&mut sub, &["PSUBSCRIBE", "NEWS.*"], now);
        run(&mut sub, &["SUBSCRIBE", "news.x"], now);
        assert_eq!(
            router.publish("news.x".into(), "m".into(), now),
            Ok(want),
            "ignore_case={ignore}"
        );
        // Channel names stay exact.
        assert_eq!(router.publish("NEWS.X".into(), "m".into(), now), Ok(1));
    }
}

/// A tap that records everything and refuses messages on "full".
#[derive(Default)]
struct Recorder(Mutex<Vec<(Bytes, Bytes)>>);

impl Tap for Recorder {
    fn publish(
        &self,
        channel: &Bytes,
        message: &Bytes,
        _now: Instant,
    ) -> Result<Option<u64>, Refused> {
        if &channel[..] == b"full" {
            return Err(Refused {
                reason: "store queue full".into(),
            });
        }
        self.0
            .lock()
            .expect("tap lock")
            .push((channel.clone(), message.clone()));
        Ok(None)
    }
}

#[test]
fn tap_sees_every_message_in_order_and_can_refuse() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let tap = Arc::new(Recorder::default());
    router.set_tap(tap.clone());
    let mut publisher = Session::new(&router);
    let mut sub = Session::new(&router);
    run(&mut sub, &["SUBSCRIBE", "full"], now);
    for i in 0..100 {
        let topic = if i % 2 == 0 { "a" } else { "b" };
        assert_eq!(
            run(&mut publisher, &["LOG", topic, &i.to_string()], now),
            b":0\r\n"
        );
    }
    assert_eq!(
        run(&mut publisher, &["PUBLISH", "full", "x"], now),
        b"-TRYLATER store queue full\r\n"
    );
    assert!(
        sub.take_output().is_empty(),
        "a refused message is not routed"
    );
    let seen = tap.0.lock().expect("tap lock");
    assert_eq!(seen.len(), 100);
    for (i, (topic, msg)) in seen.iter().enumerate() {
        assert_eq!(&msg[..], i.to_string().as_bytes());
        assert_eq!(&topic[..], if i % 2 == 0 { b"a" } else { b"b" });
    }
    assert_eq!(router.stats(now).messages_refused, 1);
}

#[test]
fn info_reports_counts_and_rates_on_a_simulated_clock() {
    let t0 = Instant::now();
    let router = Router::new(RouterConfig::default().max_tracked_topics(2), t0);
    let mut sub = Session::new(&router);
    run(&mut sub, &["SUBSCRIBE", "a"], t0);
    router.tick(t0);
    for _ in 0..30 {
        router.publish("a".into(), "m".into(), t0).unwrap();
    }
    for _ in 0..10 {
        router.publish("b".into(), "m".into(), t0).unwrap();
    }
    // A third topic without subscribers is over the bound: counted, not tracked.
    router.publish("c".into(), "m".into(), t0).unwrap();
    router.tick(t0 + Duration::from_secs(2));
    let s = router.stats(t0 + Duration::from_secs(5));
    assert_eq!((s.messages_in, s.messages_out), (41, 30));
    assert_eq!(s.messages_in_per_sec, 20.5);
    assert_eq!(s.messages_out_per_sec, 15.0);
    assert_eq!(s.untracked_messages, 1);
    assert_eq!(s.uptime_secs, 5);
    let names: Vec<&[u8]> = s.topics.iter().map(|t| &t.name[..]).collect();
    assert_eq!(names, [&b"a"[..], b"b"]);
    assert_eq!(
        (
            s.topics[0].messages,
            s.topics[0].per_sec,
            s.topics[0].subscribers
        ),
        (30, 15.0, 1)
    );
    let mut client = Session::new(&router);
    let info = String::from_utf8(run(&mut client, &["INFO", "kids"], t0)).expect("utf8");
    for line in [
        "# Kids",
        "messages_in:41",
        "messages_out:30",
        "messages_in_per_sec:20.50",
        "messages_untracked_topics:1",
        "topic_a:messages=30,per_sec=15.00,subscribers=1",
        "topic_b:messages=10,per_sec=5.00,subscribers=0",
    ] {
        assert!(
            info.contains(&format!("{line}\r\n")),
            "{line:?} missing from {info}"
        );
    }
    let all = String::from_utf8(run(&mut client, &["INFO"], t0)).expect("utf8");
    assert!(
        all.contains("# Server\r\n") && all.contains("# Clients\r\nconnected_clients:2\r\n"),
        "{all}"
    );
}

#[test]
fn unix_socket_and_graceful_shutdown_deliver_what_was_queued() {
    let dir = std::env::temp_dir().join(format!("kids-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("kids.sock");
    let _ = std::fs::remove_file(&path);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let router = Router::new(RouterConfig::default(), Instant::now());
    let listener = {
        let _guard = rt.enter();
        tokio::net::UnixListener::bind(&path).expect("bind unix socket")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(
        vec![Listener::Unix(listener)],
        router.clone(),
        ServerConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut sub = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    sub.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    sub.write_all(b"SUBSCRIBE logs\r\n").expect("subscribe");
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nlogs\r\n:1\r\n";
    let mut buf = vec![0u8; confirm.len()];
    sub.read_exact(&mut buf).expect("confirmation");
    assert_eq!(buf, confirm);
    assert_eq!(
        router.publish("logs".into(), "last words".into(), Instant::now()),
        Ok(1)
    );
    stop.send(()).expect("stop");
    rt.block_on(server).expect("join").expect("serve");
    let mut rest = Vec::new();
    sub.read_to_end(&mut rest).expect("read until close");
    assert_eq!(
        rest,
        b"*3\r\n$7\r\nmessage\r\n$4\r\nlogs\r\n$10\r\nlast words\r\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_log_refuses_later_logs_until_reset_but_publish_is_per_message() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let tap = Arc::new(Recorder::default());
    router.set_tap(tap.clone());
    let mut agent = Session::new(&router);
    assert_eq!(run(&mut agent, &["LOG", "a", "1"], now), b":0\r\n");
    assert_eq!(
        run(&mut agent, &["LOG", "full", "2"], now),
        b"-TRYLATER store queue full\r\n"
    );
    let refused = run(&mut agent, &["LOG", "a", "3"], now);
    assert!(
        refused.starts_with(b"-TRYLATER an earlier LOG on this connection was refused"),
        "{refused:?}"
    );
    assert_eq!(
        run(&mut agent, &["PUBLISH", "a", "4"], now),
        b":0\r\n",
        "PUBLISH keeps Redis semantics"
    );
    assert_eq!(run(&mut agent, &["RESET"], now), b"+RESET\r\n");
    assert_eq!(run(&mut agent, &["LOG", "a", "5"], now), b":0\r\n");
    let mut app = Session::new(&router);
    assert_eq!(
        run(&mut app, &["PUBLISH", "full", "x"], now),
        b"-TRYLATER store queue full\r\n"
    );
    assert_eq!(run(&mut app, &["PUBLISH", "a", "6"], now), b":0\r\n");
    let seen: Vec<Vec<u8>> = tap
        .0
        .lock()
        .expect("tap lock")
        .iter()
        .map(|(_, m)| m.to_vec())
        .collect();
    assert_eq!(seen, [&b"1"[..], b"4", b"5", b"6"]);
}

#[test]
fn review_fixes_quit_hello_patterns_and_own_reply_limits() {
    let now = Instant::now();
    // QUIT ends subscriptions at once: nothing can follow +OK.
    let router = Router::new(RouterConfig::default().max_pattern_len(8), now);
    let mut sub = Session::new(&router);
    run(&mut sub, &["SUBSCRIBE", "c"], now);
    sub.handle(req(&["QUIT"]), now);
    assert_eq!(router.publish("c".into(), "late".into(), now), Ok(0));
    assert_eq!(sub.take_output(), b"+OK\r\n");

    // HELLO 2 from a RESP3 subscriber: later messages are RESP2 and follow the reply.
    let mut s = Session::new(&router);
    run(&mut s, &["HELLO", "3"], now);
    run(&mut s, &["SUBSCRIBE", "c"], now);
    s.handle(req(&["HELLO", "2"]), now);
    router
        .publish("c".into(), "m".into(), now)
        .expect("publish");
    s.flush(now);
    let out = s.take_output();
    assert!(
        out.starts_with(b"*14\r\n$6\r\nserver\r\n"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        out.ends_with(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );

    // Patterns are bounded (a kids limit; Redis has none).
    assert_eq!(
        run(&mut s, &["PSUBSCRIBE", "123456789"], now),
        b"-ERR pattern longer than 8 bytes\r\n"
    );
    assert_eq!(
        run(&mut s, &["PSUBSCRIBE", "12345678"], now),
        b"*3\r\n$10\r\npsubscribe\r\n$8\r\n12345678\r\n:2\r\n"
    );

    // A client closed by its own oversized reply is counted like any other.
    let limits = kids_core::NLimits {
        pubsub: kids_core::NLimit::new(100, 0, Duration::ZERO),
        ..Default::default()
    };
    let strict = Router::new(RouterConfig::default().nlimits(limits), now);
    let mut big = Session::new(&strict);
    run(&mut big, &["SUBSCRIBE", "c"], now);
    strict
        .publish("c".into(), "queued".into(), now)
        .expect("publish");
    big.handle(req(&["PING", &"x".repeat(200)]), now);
    big.flush(now);
    assert!(big.outbox().closed().is_some());
    let stats = strict.stats(now);
    assert_eq!(
        (stats.clients_closed_nlimit, stats.messages_dropped),
        (1, 1)
    );
}

#[test]
fn drain_timeout_closes_connections_that_never_read() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let limits = kids_core::NLimits {
        pubsub: kids_core::NLimit::unlimited(),
        ..Default::default()
    };
    let router = Router::new(RouterConfig::default().nlimits(limits), Instant::now());
    let listener = {
        let _guard = rt.enter();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        tokio::net::TcpListener::from_std(std_listener).expect("listener")
    };
    let port = listener.local_addr().expect("addr").port();
    let mut config = ServerConfig::default();
    config.drain_timeout = Duration::from_millis(200);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(
        vec![Listener::Tcp(listener)],
        router.clone(),
        config,
        async {
            let _ = stopped.await;
        },
    ));
    let mut sub = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sub.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    sub.write_all(b"SUBSCRIBE c\r\n").expect("subscribe");
    let mut confirm = [0u8; 30];
    sub.read_exact(&mut confirm).expect("confirmation");
    assert_eq!(&confirm, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
    // Far more than the socket buffers hold; the subscriber never reads again.
    let payload = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..1000 {
        router
            .publish("c".into(), payload.clone(), Instant::now())
            .expect("publish");
    }
    stop.send(()).expect("stop");
    let done = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await });
    assert!(
        done.is_ok(),
        "serve returned after the drain timeout instead of waiting for the reader"
    );
    drop(sub);
}

#[test]
fn client_setinfo_and_command_count() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let mut s = Session::new(&router);
    // CLIENT SETINFO is Redis 7.2 (the differential peer is 7.0): checked here.
    assert_eq!(
        run(&mut s, &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"], now),
        b"+OK\r\n"
    );
    assert_eq!(
        run(&mut s, &["client", "setinfo", "lib-ver", "1.8.1"], now),
        b"+OK\r\n"
    );
    assert_eq!(
        run(&mut s, &["CLIENT", "SETINFO", "LIB-NAME", "a b"], now),
        b"-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        run(&mut s, &["CLIENT", "SETINFO", "color", "x"], now),
        b"-ERR Unrecognized option 'color'\r\n"
    );
    assert_eq!(
        run(&mut s, &["CLIENT", "SETINFO", "LIB-NAME"], now),
        b"-ERR wrong number of arguments for 'client|setinfo' command\r\n"
    );
    // COMMAND COUNT agrees with the table COMMAND returns, and COMMAND DOCS covers it.
    let mut codec = kids_core::FrameCodec::default();
    let decode = |bytes: Vec<u8>, codec: &mut kids_core::FrameCodec| {
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        tokio_util::codec::Decoder::decode(codec, &mut buf)
            .expect("valid")
            .expect("whole")
    };
    let count = decode(run(&mut s, &["COMMAND", "COUNT"], now), &mut codec);
    let kids_core::Frame::Array(all) = decode(run(&mut s, &["COMMAND"], now), &mut codec) else {
        panic!("array")
    };
    assert_eq!(count, kids_core::Frame::Integer(all.len() as i64));
    let kids_core::Frame::Array(docs) = decode(run(&mut s, &["COMMAND", "DOCS"], now), &mut codec)
    else {
        panic!("array")
    };
    assert_eq!(
        docs.len(),
        2 * all.len(),
        "RESP2 map: name and doc per command"
    );
    for name in [
        "publish",
        "log",
        "subscribe",
        "psubscribe",
        "unsubscribe",
        "punsubscribe",
        "ping",
        "hello",
        "client",
        "pubsub",
        "info",
    ] {
        assert!(
            docs.contains(&kids_core::Frame::bulk(name)),
            "COMMAND DOCS lacks {name}"
        );
    }
}

#[test]
fn name_and_pattern_bounds_are_redis_style_errors() {
    let now = Instant::now();
    let config = RouterConfig::default()
        .max_channel_len(8)
        .max_pattern_len(4)
        .max_patterns_per_client(3);
    let router = Router::new(config, now);
    let mut watcher = Session::new(&router);
    run(&mut watcher, &["PSUBSCRIBE", "*"], now);
    let mut c = Session::new(&router);
    // A channel name over the bound: an error, and nothing routed.
    assert_eq!(
        run(&mut c, &["PUBLISH", "123456789", "m"], now),
        b"-ERR channel name longer than 8 bytes\r\n"
    );
    assert_eq!(run(&mut c, &["PUBLISH", "12345678", "m"], now), b":1\r\n");
    assert_eq!(
        run(&mut c, &["LOG", "123456789", "m"], now),
        b"-ERR channel name longer than 8 bytes\r\n"
    );
    let delivered = watcher.take_output();
    assert_eq!(
        delivered.windows(9).filter(|w| w == b"123456789").count(),
        0,
        "the refused channel was routed"
    );
    // A name over the bound refuses the whole command with one error, the
    // only reply: no confirmation for the other names, none subscribed.
    let mut s = Session::new(&router);
    assert_eq!(
        run(&mut s, &["SUBSCRIBE", "ok", "123456789", "fine"], now),
        b"-ERR channel name longer than 8 bytes\r\n"
    );
    assert_eq!(router.numsub(b"ok"), 0);
    let out = run(&mut s, &["SUBSCRIBE", "ok"], now);
    assert!(out.ends_with(b"$2\r\nok\r\n:1\r\n"), "{out:?}");
    // Patterns: one too long refuses them all.
    assert_eq!(
        run(&mut s, &["PSUBSCRIBE", "a*", "toolong*", "b*"], now),
        b"-ERR pattern longer than 4 bytes\r\n"
    );
    assert_eq!(router.numpat(), 1, "only the watcher's *");
    // Over the count: refused whole; a pattern held or named twice is one.
    let out = run(&mut s, &["PSUBSCRIBE", "a*", "b*", "a*"], now);
    assert_eq!(
        String::from_utf8_lossy(&out).matches("psubscribe").count(),
        3
    );
    assert_eq!(
        run(&mut s, &["PSUBSCRIBE", "a*", "c*", "d*", "c*"], now),
        b"-ERR max number of patterns per client reached (3)\r\n"
    );
    assert_eq!(router.numpat(), 3, "*, a*, b*");
    let out = run(&mut s, &["PSUBSCRIBE", "a*", "c*", "b*", "c*"], now);
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("-ERR"), "{text}");
    assert_eq!(text.matches("psubscribe").count(), 4, "{text}");
    assert!(text.ends_with(":4\r\n"), "3 patterns and a channel: {text}");
    assert_eq!(router.numpat(), 4, "*, a*, b*, c*");
    assert_eq!(
        run(&mut s, &["PSUBSCRIBE", "d*"], now),
        b"-ERR max number of patterns per client reached (3)\r\n"
    );
    // Room again after a PUNSUBSCRIBE.
    run(&mut s, &["PUNSUBSCRIBE", "b*"], now);
    let out = run(&mut s, &["PSUBSCRIBE", "d*"], now);
    assert!(!out.starts_with(b"-"), "{}", String::from_utf8_lossy(&out));
}

/// The hostile patterns, `*a*a*a*a*a*a*a*bN`: filed by their literal
/// suffix, so a publish to a channel that cannot match visits none of them.
#[test]
fn a_publish_checks_only_the_patterns_that_can_match() {
    let now = Instant::now();
    // One step of pattern work per slice: a publish that visited any
    // pattern that cannot match would be cut short.
    let config = RouterConfig::default()
        .max_patterns_per_client(100_000)
        .slice_steps(1);
    let router = Router::new(config, now);
    let mut s = Session::new(&router);
    let mut args = vec!["PSUBSCRIBE".to_string()];
    args.extend((0..100_000).map(|i| format!("*a*a*a*a*a*a*a*b{i}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.handle(req(&args), now);
    assert_eq!(router.numpat(), 100_000);
    let long = "a".repeat(4 * 1024);
    match router.publish_sliced(long.clone().into(), "m".into(), now) {
        Ok(kids_core::Published::Done { receivers, .. }) => assert_eq!(receivers, 0),
        other => panic!("visited patterns that cannot match: {other:?}"),
    }
    // The one that matches is found, and only it.
    let hit = format!("{long}b77");
    assert_eq!(router.publish(hit.into(), "m".into(), now), Ok(1));
    // Prefix-filed patterns the same way.
    let mut t = Session::new(&router);
    let mut args = vec!["PSUBSCRIBE".to_string()];
    args.extend((0..10_000).map(|i| format!("news.{i}.*")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.handle(req(&args), now);
    match router.publish_sliced("sport.1.x".into(), "m".into(), now) {
        Ok(kids_core::Published::Done { receivers, .. }) => assert_eq!(receivers, 0),
        other => panic!("visited patterns that cannot match: {other:?}"),
    }
    assert_eq!(router.publish("news.42.x".into(), "m".into(), now), Ok(1));
}

/// Patterns with no literal end are visited by every publish; the work is
/// cut into slices, and the slices together deliver what one publish would.
#[test]
fn a_sliced_publish_reaches_exactly_the_patterns_a_whole_one_does() {
    let now = Instant::now();
    let whole = Router::new(RouterConfig::default(), now);
    let sliced = Router::new(RouterConfig::default().slice_steps(50), now);
    let pats: Vec<String> = (0..2000).map(|i| format!("*{}*", i % 1500)).collect();
    let mut sessions = Vec::new();
    for router in [&whole, &sliced] {
        for chunk in pats.chunks(100) {
            let mut s = Session::new(router);
            let mut args = vec!["PSUBSCRIBE"];
            args.extend(chunk.iter().map(String::as_str));
            s.handle(req(&args), now);
            sessions.push(s);
        }
    }
    let channel = "x-12-345-678-1499";
    let want = whole.publish(channel.into(), "m".into(), now).unwrap();
    assert!(want > 10, "{want}");
    let mut rest = match sliced
        .publish_sliced(channel.into(), "m".into(), now)
        .unwrap()
    {
        kids_core::Published::Sliced(rest) => rest,
        done => panic!("not sliced: {done:?}"),
    };
    // A pattern added meanwhile is not one the publish began with; a
    // pattern removed meanwhile gets nothing.
    let mut late = Session::new(&sliced);
    late.handle(req(&["PSUBSCRIBE", "*1499"]), now);
    late.flush(now);
    late.take_output();
    let mut slices = 1;
    let got = loop {
        slices += 1;
        if let Some(n) = sliced.resume(&mut rest) {
            break n;
        }
    };
    assert!(slices > 10, "{slices} slices");
    assert_eq!(got, want);
    assert!(
        late.take_output().is_empty(),
        "a later pattern got the message"
    );
    assert_eq!(
        sliced.stats(now).messages_out,
        whole.stats(now).messages_out
    );
}
