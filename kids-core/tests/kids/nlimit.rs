//! nlimit: Redis's output-buffer limits, on a simulated clock and over TCP.

use std::io::Read;
use std::time::{Duration, Instant};

use kids_core::{NLimit, NLimits, Router, RouterConfig, Session};
use test_support::{Poll, wait_for};

use super::support::{KidsServer, Raw, cmd};

fn req(args: &[&str]) -> Vec<bytes::Bytes> {
    args.iter()
        .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

/// A router whose subscribers may hold `hard` / `soft` bytes for `secs`.
fn router(hard: u64, soft: u64, secs: u64, t0: Instant) -> Router {
    let limits = NLimits {
        pubsub: NLimit::new(hard, soft, Duration::from_secs(secs)),
        ..NLimits::default()
    };
    Router::new(RouterConfig::default().nlimits(limits), t0)
}

fn subscriber(router: &Router, t: Instant) -> Session {
    let mut s = Session::new(router);
    s.handle(req(&["SUBSCRIBE", "c"]), t);
    s.take_output();
    s
}

const MSG: &str = "0123456789012345678901234567890123456789012345678901234567890123"; // 64 bytes
/// Bytes of one RESP2 `message` frame of MSG on channel `c`.
const FRAME: u64 = 4 + 13 + 7 + 5 + 64 + 2; // *3, $7 message, $1 c, $64, payload, CRLF

#[test]
fn hard_limit_closes_at_once_and_counts_drops() {
    let t = Instant::now();
    let r = router(10 * FRAME, 0, 0, t);
    let (slow, mut fast) = (subscriber(&r, t), subscriber(&r, t));
    for i in 0..10 {
        // Nine fit; the tenth reaches the hard bound and closes the slow one.
        assert_eq!(r.publish("c".into(), MSG.into(), t), Ok(2), "publish {i}");
        fast.take_output();
    }
    assert!(slow.outbox().closed().is_some());
    assert_eq!(r.publish("c".into(), MSG.into(), t), Ok(1));
    let stats = r.stats(t);
    assert_eq!(stats.clients_closed_nlimit, 1);
    assert_eq!(stats.messages_dropped, 10);
    assert_eq!(fast.take_output().len() as u64, FRAME);
}

#[test]
fn soft_limit_needs_time_and_resets_when_drained() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let r = router(0, 2 * FRAME, 10, t0);
    let mut sub = subscriber(&r, t0);
    r.publish("c".into(), MSG.into(), t0).unwrap();
    r.publish("c".into(), MSG.into(), t0).unwrap(); // at soft: timer starts at t0
    r.publish("c".into(), MSG.into(), t0 + s(10)).unwrap(); // 10 s: not more than 10
    assert!(sub.outbox().closed().is_none());
    sub.take_output(); // drained: timer resets
    r.publish("c".into(), MSG.into(), t0 + s(11)).unwrap();
    r.publish("c".into(), MSG.into(), t0 + s(11)).unwrap(); // at soft again: timer restarts at 11
    r.publish("c".into(), MSG.into(), t0 + s(21)).unwrap();
    assert!(
        sub.outbox().closed().is_none(),
        "timer was reset by the drain"
    );
    r.publish("c".into(), MSG.into(), t0 + s(22)).unwrap();
    assert!(
        sub.outbox().closed().is_some(),
        "above soft for more than 10 s"
    );
    assert_eq!(r.stats(t0).clients_closed_nlimit, 1);
}

#[test]
fn hard_and_soft_together() {
    let t0 = Instant::now();
    let r = router(5 * FRAME, 2 * FRAME, 60, t0);
    let soft_victim = subscriber(&r, t0);
    let mut hard_victim = subscriber(&r, t0);
    hard_victim.handle(req(&["SUBSCRIBE", "big"]), t0);
    hard_victim.take_output();
    for _ in 0..2 {
        r.publish("c".into(), MSG.into(), t0).unwrap();
    }
    // Soft reached at t0 for both; five frames on "big" hit the hard bound at once.
    for _ in 0..3 {
        r.publish("big".into(), MSG.into(), t0).unwrap();
    }
    assert!(hard_victim.outbox().closed().is_some());
    assert!(soft_victim.outbox().closed().is_none());
    r.publish("c".into(), MSG.into(), t0 + Duration::from_secs(61))
        .unwrap();
    assert!(soft_victim.outbox().closed().is_some());
    assert_eq!(r.stats(t0).clients_closed_nlimit, 2);
}

#[test]
fn normal_class_limits_a_client_that_never_reads() {
    let t = Instant::now();
    let limits = NLimits {
        normal: NLimit::new(64, 0, Duration::ZERO),
        ..NLimits::default()
    };
    let r = Router::new(RouterConfig::default().nlimits(limits), t);
    let mut s = Session::new(&r);
    for _ in 0..9 {
        s.handle(req(&["PING"]), t);
        s.flush(t); // 7 bytes a reply: the tenth flush reaches 64
    }
    assert!(s.outbox().closed().is_none());
    s.handle(req(&["PING"]), t);
    s.flush(t);
    assert!(s.outbox().closed().is_some());
}

#[test]
fn over_tcp_a_stalled_subscriber_is_closed_and_others_keep_receiving() {
    let limits = NLimits {
        pubsub: NLimit::new(256 * 1024, 0, Duration::ZERO),
        ..NLimits::default()
    };
    let kids = KidsServer::start(RouterConfig::default().nlimits(limits));
    let mut stalled = Raw::connect(kids.port);
    stalled.send(&cmd(&["SUBSCRIBE", "c"]));
    stalled.frame();
    let mut reader = Raw::connect(kids.port);
    reader.send(&cmd(&["SUBSCRIBE", "c"]));
    reader.frame();
    // The reader drains on its own thread; the publisher waits for it after
    // every batch, so the reader never holds more than one batch (about 103 KB,
    // under the 256 KiB bound) however slowly the machine runs it, while the
    // stalled client's backlog grows until its nlimit closes it.
    let payload = "x".repeat(1000);
    let (n, batch) = (20_000u64, 100u64); // 20 MB: far past what socket buffers plus 256 KiB hold
    let frame_len = (4 + 13 + 7 + 7 + payload.len() + 2) as u64; // *3, $7 message, $1 c, $1000, payload, CRLF
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reader_stream = reader.stream.try_clone().expect("clone");
    let progress = received.clone();
    let reading = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while total < n * frame_len {
            let got = reader_stream
                .read(&mut buf)
                .expect("reader keeps receiving");
            assert!(got > 0, "reader was disconnected after {total} bytes");
            total += got as u64;
            progress.store(total, std::sync::atomic::Ordering::Release);
        }
        total
    });
    let mut publisher = Raw::connect(kids.port);
    let mut receivers = Vec::new();
    for sent in (batch..=n).step_by(batch as usize) {
        let mut bytes = Vec::new();
        for _ in 0..batch {
            bytes.extend(cmd(&["PUBLISH", "c", &payload]));
        }
        publisher.send(&bytes);
        for _ in 0..batch {
            if let kids_core::Frame::Integer(k) = publisher.frame().1 {
                receivers.push(k);
            }
        }
        Poll::default().pause(Duration::from_millis(1)).wait_for(
            "the reader to receive what was sent",
            || {
                // Finished first: a reader that finished has stored its total.
                let finished = reading.is_finished();
                let done = received.load(std::sync::atomic::Ordering::Acquire) >= sent * frame_len;
                assert!(done || !finished, "the reader stopped receiving");
                done
            },
        );
    }
    assert_eq!(
        reading.join().expect("reader thread"),
        n * frame_len,
        "every message reached the reader"
    );
    assert_eq!(receivers.len() as u64, n);
    assert_eq!(receivers.last(), Some(&1), "the stalled subscriber is gone");
    // Closed and gone while it still is not reading: its subscription ended.
    wait_for("the stalled subscriber to be disconnected", || {
        kids.router.numsub(b"c") == 1
    });
    let stats = kids.router.stats(Instant::now());
    assert_eq!(stats.clients_closed_nlimit, 1);
    assert!(stats.messages_dropped > 0);
    // The stalled client finds its connection closed once it reads.
    let mut rest = Vec::new();
    let _ = stalled.stream.read_to_end(&mut rest);
    assert!(
        (rest.len() as u64) < n * frame_len / 2,
        "the stalled client did not get everything"
    );
}
