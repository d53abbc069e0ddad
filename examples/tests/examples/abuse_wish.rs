//! The wish abuse suite (issue 14): calc-server against clients that stall in the middle of big frames, and against requests without a required field.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use wish_core::{Body, Code, Frame, FrameCodec, method_id};

use super::{CALC_HOST, start_calc_server};

/// Connections that stall, each in its own 4 MiB frame (fewer if the file
/// descriptor limit is lower: see [`stallers`]).
const STALLERS: usize = 500;
/// What each announces, and what it sends of it.
const ANNOUNCED: usize = 4 * 1024 * 1024;
const SENT: usize = 1024 * 1024;
/// The read timeout calc-server runs with here.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// calc-server's budget of bytes in partial frames (its default).
const BUDGET: u64 = 64 * 1024 * 1024;
/// How much calc-server's memory may grow while the stallers are at it.
///
/// The budget, twice (a buffer's capacity may be up to twice what it holds,
/// and growing it copies), plus 100 KiB of buffers, task and socket state for
/// each connection: 128 MiB + 49 MiB, 176 MiB in all, against the 505 MB
/// the server held without the bounds (it peaks near 76 MiB here). Without
/// the budget (`--max-partial-bytes 4000000000`) this test sees 240 MiB,
/// and more on a faster machine, where fewer stallers time out meanwhile.
const RSS_BOUND: u64 = 2 * BUDGET + STALLERS as u64 * 100 * 1024;

/// The method called.
const MULTIPLY: &str = "calc.Advanced.Multiply";

/// How many stallers this process may open: [`STALLERS`], or its file
/// descriptor limit less 100 if that is lower.
fn stallers() -> usize {
    let soft = test_support::open_files_limit().unwrap_or(usize::MAX);
    let n = STALLERS.min(soft.saturating_sub(100));
    if n < STALLERS {
        eprintln!("abuse_wish: {n} stalling connections, not {STALLERS}: ulimit -n is {soft}");
    }
    n
}

fn connect(port: &str) -> TcpStream {
    let stream = TcpStream::connect(format!("{CALC_HOST}:{port}")).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    stream
}

/// The start of a request frame of `len` bytes (after its length field),
/// written by hand as PROTOCOL.md section 2 lays it out.
fn request_head(len: usize, id: u64) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(&(len as u32).to_be_bytes());
    head.push(1); // version
    head.push(1); // kind: request
    head.push(0); // flags
    head.extend_from_slice(&id.to_be_bytes());
    head.extend_from_slice(&method_id(MULTIPLY).to_be_bytes());
    head
}

/// Sends one request frame with `payload` and reads the frame that answers it.
fn call(port: &str, payload: &'static [u8]) -> Frame {
    let mut stream = connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut codec = FrameCodec::new();
    let mut out = BytesMut::new();
    codec
        .encode(
            Frame::request(1, method_id(MULTIPLY), Bytes::from_static(payload)),
            &mut out,
        )
        .expect("encode");
    stream.write_all(&out).expect("send the request");
    let mut buf = BytesMut::new();
    loop {
        if let Some(frame) = codec.decode(&mut buf).expect("a frame") {
            return frame;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read the answer");
        assert!(n > 0, "closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What ended a staller: the status of the error frame the server closed it
/// with, if it got through before the close (a close with unread bytes is a
/// reset, which may lose it), and when the close was seen.
fn wait_closed(mut stream: TcpStream) -> (Option<Code>, Instant) {
    stream
        .set_read_timeout(Some(READ_TIMEOUT + Duration::from_secs(20)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("a stalled connection still open {READ_TIMEOUT:?} + 20 s on")
            }
            Err(_) => break,
        }
    }
    let seen = Instant::now();
    let mut buf = BytesMut::from(&got[..]);
    let code = match FrameCodec::new().decode(&mut buf) {
        Ok(Some(Frame {
            id: 0,
            body: Body::Error(status),
        })) => Some(status.code()),
        _ => None,
    };
    (code, seen)
}

#[test]
fn stalled_big_frames_are_bounded_and_timed_out_while_others_are_served() {
    let timeout = format!("{}ms", READ_TIMEOUT.as_millis());
    let (server, port) = start_calc_server(&["--read-timeout", &timeout]);
    let rss = || server.rss_bytes().expect("calc-server's RSS");
    // A call first, so that the runtime's threads and the cache exist.
    let warm = call(&port, b"\x08\x03\x10\x04");
    assert!(matches!(warm.body, Body::Response(_)), "{warm:?}");
    let before = rss();

    let n = stallers();
    let body = vec![0u8; SENT - 19];
    let mut stalled = Vec::with_capacity(n);
    let mut peak = before;
    for i in 0..n {
        let mut stream = connect(&port);
        let started = Instant::now();
        let head = request_head(ANNOUNCED, i as u64 + 1);
        // A connection closed over the budget fails the write: expected.
        let _ = stream
            .write_all(&head)
            .and_then(|()| stream.write_all(&body));
        // Each waits for its close on a thread of its own, so that the time
        // it sees the close is when it came, not when its turn came.
        let waiting = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || wait_closed(stream))
            .expect("a thread per staller");
        stalled.push((waiting, started));
        if i % 20 == 19 {
            peak = peak.max(rss());
        }
    }
    peak = peak.max(rss());
    let grown = peak.saturating_sub(before);
    eprintln!(
        "abuse_wish: {n} stallers of {SENT} bytes each: RSS {} MiB before, peak growth {} MiB (bound {} MiB)",
        before >> 20,
        grown >> 20,
        RSS_BOUND >> 20
    );
    assert!(
        grown < RSS_BOUND,
        "calc-server grew by {grown} bytes holding stalled frames (bound {RSS_BOUND})"
    );

    // A fresh client is answered, stallers or not.
    let asked = Instant::now();
    let answer = call(&port, b"\x08\x06\x10\x07");
    let waited = asked.elapsed();
    match answer.body {
        Body::Response(r) => assert_eq!(&r.payload[..], b"\x08\x2a", "6 * 7"),
        other => panic!("the fresh client got {other:?}"),
    }
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");

    // Every staller is closed: over the budget, or by the read timeout,
    // never before it has passed since its first byte. A close over the
    // budget may be a reset that loses its error frame: a close without one
    // counts as over the budget only if it came before the read timeout
    // could explain it.
    let (mut timed_out, mut over_budget, mut reset) = (0, 0, 0);
    for (waiting, started) in stalled {
        let (code, seen) = waiting.join().expect("a staller's wait");
        let after = seen - started;
        match code {
            Some(Code::DEADLINE_EXCEEDED) => {
                timed_out += 1;
                assert!(
                    after >= READ_TIMEOUT,
                    "closed {after:?} after its first byte, before the read timeout"
                );
            }
            Some(Code::RESOURCE_EXHAUSTED) => over_budget += 1,
            None if after < READ_TIMEOUT => reset += 1,
            None => panic!("closed without a reason {after:?} after its first byte"),
            Some(other) => panic!("closed with {other}"),
        }
    }
    eprintln!(
        "abuse_wish: {timed_out} stallers closed by the read timeout, {over_budget} over the budget, {reset} reset before the timeout"
    );
    assert!(timed_out > 0, "the read timeout closed none");
    // Only the budget's worth of stallers fit in it at once, so most are
    // refused; how many exactly depends on the timeouts meanwhile.
    assert!(
        over_budget > 0,
        "the budget refused none with RESOURCE_EXHAUSTED ({reset} resets)"
    );
    assert!(server.check_running().is_ok(), "calc-server died");
}

#[test]
fn multiply_without_the_required_b_is_invalid_argument() {
    let (_server, port) = start_calc_server(&[]);
    // CalcRequest { a: 3 }, and no b (field 2).
    let answer = call(&port, b"\x08\x03");
    match answer.body {
        Body::Error(status) => {
            assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{status}");
            assert!(
                status.message().contains("b of calc.CalcRequest"),
                "names the field: {status}"
            );
        }
        other => panic!("answered {other:?}"),
    }
    // With b it is answered: the check is of presence, not of value.
    let answer = call(&port, b"\x08\x03\x10\x00");
    match answer.body {
        Body::Response(r) => assert_eq!(&r.payload[..], b"\x08\x00", "3 * 0"),
        other => panic!("answered {other:?}"),
    }
}
