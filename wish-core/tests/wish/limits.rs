//! The read limits: the read timeout from a frame's first byte, the idle timeout, the server-wide budget of partial frames; on a simulated clock, then over TCP.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead};
use wish_core::net::{Client, Endpoint, serve};
use wish_core::{
    Body, CallOptions, Channel, Code, Frame, FrameCodec, LimitError, ReadLimits, Server,
    ServerConfig,
};

use super::support::*;

fn server(config: ServerConfig) -> Server {
    Server::new(config)
        .with_service(Svc(std::sync::Arc::default()))
        .unwrap()
}

fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut config = ServerConfig::default();
    f(&mut config);
    config
}

fn partial(server: &Server) -> u64 {
    server.stats().partial_bytes()
}

const S: Duration = Duration::from_secs(1);

#[test]
fn the_read_timeout_counts_from_the_first_byte_of_the_frame() {
    let server = server(config(|c| c.read_timeout = Some(30 * S)));
    let t0 = Instant::now();
    let mut limits = ReadLimits::new(&server, t0);
    assert_eq!(
        limits.deadline(false),
        None,
        "no frame started, no idle timeout"
    );
    limits.handle_read(100, false, t0 + S).unwrap();
    assert_eq!(limits.deadline(false), Some(t0 + 31 * S));
    // More of the same frame trickles in: the deadline stays.
    limits.handle_read(200, false, t0 + 20 * S).unwrap();
    assert_eq!(limits.deadline(true), Some(t0 + 31 * S), "busy or not");
    assert_eq!(partial(&server), 200);
    limits.handle_timeout(t0 + 30 * S, false).unwrap();
    assert_eq!(
        limits.handle_timeout(t0 + 31 * S, false),
        Err(LimitError::ReadTimeout(30 * S))
    );
    assert_eq!(
        server.stats().closed_read_timeout.load(Ordering::Relaxed),
        1
    );
    assert_eq!(partial(&server), 0, "what it held is given back");
}

#[test]
fn a_frame_completed_in_a_read_starts_the_clock_again() {
    let server = server(config(|c| c.read_timeout = Some(30 * S)));
    let t0 = Instant::now();
    let mut limits = ReadLimits::new(&server, t0);
    limits.handle_read(100, false, t0).unwrap();
    // That frame ended in this read; the 50 bytes left start the next one.
    limits.handle_read(50, true, t0 + 10 * S).unwrap();
    assert_eq!(limits.deadline(false), Some(t0 + 40 * S));
    assert_eq!(partial(&server), 50);
    limits.handle_read(0, true, t0 + 11 * S).unwrap();
    assert_eq!(limits.deadline(false), None, "between frames");
    assert_eq!(partial(&server), 0);
}

#[test]
fn frames_decoded_later_without_a_read_do_not_restart_the_clock() {
    let server = server(config(|c| c.read_timeout = Some(30 * S)));
    let t0 = Instant::now();
    let mut limits = ReadLimits::new(&server, t0);
    // A read completes a frame and leaves 300 bytes: two whole frames that
    // wait for calls to finish, and the start of a third.
    limits.handle_read(300, true, t0).unwrap();
    // 10 s on, a call finished and one more frame is decoded, without a read.
    limits.handle_decoded(200, t0 + 10 * S);
    assert_eq!(limits.deadline(false), Some(t0 + 30 * S), "not t0 + 40 s");
    assert_eq!(partial(&server), 200);
    limits.handle_decoded(0, t0 + 11 * S);
    assert_eq!(limits.deadline(false), None);
    assert_eq!(partial(&server), 0);
}

#[test]
fn time_without_reading_at_the_bound_of_calls_does_not_count() {
    let server = server(config(|c| c.read_timeout = Some(30 * S)));
    let t0 = Instant::now();
    let mut limits = ReadLimits::new(&server, t0);
    limits.handle_read(100, false, t0).unwrap();
    // The transport stops reading for 60 s: no deadline meanwhile.
    limits.handle_paused(true, t0 + 10 * S);
    assert_eq!(limits.deadline(false), None);
    limits.handle_paused(true, t0 + 20 * S);
    limits.handle_paused(false, t0 + 70 * S);
    // 10 s were used before the pause: 20 s are left.
    assert_eq!(limits.deadline(false), Some(t0 + 90 * S));
    limits.handle_timeout(t0 + 89 * S, false).unwrap();
    assert_eq!(
        limits.handle_timeout(t0 + 90 * S, false),
        Err(LimitError::ReadTimeout(30 * S))
    );
}

#[test]
fn the_idle_timeout_applies_between_frames_without_calls() {
    let server = server(config(|c| c.idle_timeout = Some(10 * S)));
    let t0 = Instant::now();
    let mut limits = ReadLimits::new(&server, t0);
    assert_eq!(limits.deadline(false), Some(t0 + 10 * S));
    assert_eq!(limits.deadline(true), None, "calls in flight: not idle");
    limits.handle_answer(t0 + 5 * S);
    assert_eq!(limits.deadline(false), Some(t0 + 15 * S));
    limits.handle_timeout(t0 + 14 * S, false).unwrap();
    limits.handle_timeout(t0 + 20 * S, true).unwrap();
    assert_eq!(
        limits.handle_timeout(t0 + 15 * S, false),
        Err(LimitError::Idle(10 * S))
    );
    assert_eq!(server.stats().closed_idle.load(Ordering::Relaxed), 1);
    assert_eq!(
        server.stats().closed_read_timeout.load(Ordering::Relaxed),
        0
    );
}

#[test]
fn over_the_budget_the_connection_that_grows_is_closed_unless_small() {
    let server = server(config(|c| {
        c.max_partial_bytes = 1000;
        c.partial_allowance = 100;
    }));
    let now = Instant::now();
    let mut a = ReadLimits::new(&server, now);
    let mut b = ReadLimits::new(&server, now);
    a.handle_read(900, false, now).unwrap();
    b.handle_read(100, false, now).unwrap();
    // 1050 in all: b's frame is past the allowance, b goes.
    assert_eq!(
        b.handle_read(150, false, now),
        Err(LimitError::OverBudget { max: 1000 })
    );
    assert_eq!(server.stats().closed_over_budget.load(Ordering::Relaxed), 1);
    assert_eq!(partial(&server), 900, "b gave back what it held");
    // A small frame is never refused: 990 + 80 is over, and that is fine.
    a.handle_read(990, false, now).unwrap();
    let mut c = ReadLimits::new(&server, now);
    c.handle_read(80, false, now).unwrap();
    assert_eq!(partial(&server), 1070);
    drop(a);
    assert_eq!(partial(&server), 80, "dropping gives back");
    drop(c);
    assert_eq!(partial(&server), 0);
}

/// A frame's start: a request announcing `len` bytes after its length field.
fn head(len: u32) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    out.extend_from_slice(&ADD.id.to_be_bytes());
    out
}

/// Reads until the server closes; the status of the error frame it sent first.
async fn goodbye(stream: tokio::net::TcpStream) -> Code {
    let mut raw = Framed::new(stream, FrameCodec::new());
    let frame = raw.next().await.expect("a frame").expect("decodes");
    assert_eq!(frame.id, 0);
    // A close with bytes unread is a reset: an error rather than an end.
    assert!(
        !matches!(raw.next().await, Some(Ok(_))),
        "then the server closes"
    );
    match frame.body {
        Body::Error(status) => status.code(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stalled_frame_is_closed_after_the_read_timeout() {
    let (_, server, addr) = start_with(config(|c| c.read_timeout = Some(S / 5))).await;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(&head(1000)).await.unwrap();
    stream.write_all(&[0; 10]).await.unwrap();
    assert_eq!(goodbye(stream).await, Code::DEADLINE_EXCEEDED);
    assert!(started.elapsed() >= S / 5, "not before the timeout");
    assert_eq!(
        server.stats().closed_read_timeout.load(Ordering::Relaxed),
        1
    );
    assert_eq!(partial(&server), 0);
}

#[tokio::test]
async fn bytes_trickling_in_do_not_extend_the_read_timeout() {
    let timeout = S * 3 / 10;
    let (_, server, addr) = start_with(config(|c| c.read_timeout = Some(timeout))).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let started = Instant::now();
    write.write_all(&head(1000)).await.unwrap();
    // A byte every 50 ms, for 3 s: the frame is never whole.
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(S / 20).await;
            if write.write_all(&[0]).await.is_err() {
                break;
            }
        }
    });
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let frame = frames.next().await.expect("a frame").expect("decodes");
    let closed = started.elapsed();
    match frame.body {
        Body::Error(status) => assert_eq!(status.code(), Code::DEADLINE_EXCEEDED),
        other => panic!("{other:?}"),
    }
    assert!(
        closed >= timeout && closed < S,
        "closed {closed:?} after the first byte, with a read timeout of {timeout:?}"
    );
    assert_eq!(
        server.stats().closed_read_timeout.load(Ordering::Relaxed),
        1
    );
    assert_eq!(partial(&server), 0);
    trickle.abort();
}

#[tokio::test]
async fn an_idle_connection_stays_open_unless_there_is_an_idle_timeout() {
    let (_, server, addr) = start_with(config(|c| c.read_timeout = Some(S / 10))).await;
    let client = Client::new(Endpoint::Tcp(addr));
    assert!(
        client
            .call(ADD, pair(1, 2), CallOptions::new())
            .await
            .is_ok()
    );
    tokio::time::sleep(S / 2).await;
    // Same connection: had the server closed it, this call would reconnect
    // and the count below would show it.
    assert!(
        client
            .call(ADD, pair(1, 2), CallOptions::new())
            .await
            .is_ok()
    );
    assert_eq!(
        server.stats().closed_read_timeout.load(Ordering::Relaxed),
        0
    );
    assert_eq!(server.stats().closed_idle.load(Ordering::Relaxed), 0);

    let (_, server, addr) = start_with(config(|c| c.idle_timeout = Some(S / 5))).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_eq!(goodbye(stream).await, Code::UNAVAILABLE);
    assert_eq!(server.stats().closed_idle.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn over_the_budget_big_partial_frames_are_refused_and_small_calls_served() {
    let (_, server, addr) = start_with(config(|c| {
        c.max_partial_bytes = 64 * 1024;
        c.partial_allowance = 1024;
    }))
    .await;
    let mut a = tokio::net::TcpStream::connect(&addr).await.unwrap();
    a.write_all(&head(1 << 20)).await.unwrap();
    a.write_all(&[0; 60 * 1024]).await.unwrap();
    eventually("the first partial frame is read", || {
        partial(&server) >= 60 * 1024
    })
    .await;
    let mut b = tokio::net::TcpStream::connect(&addr).await.unwrap();
    b.write_all(&head(1 << 20)).await.unwrap();
    b.write_all(&[0; 10 * 1024]).await.unwrap();
    assert_eq!(goodbye(b).await, Code::RESOURCE_EXHAUSTED);
    assert_eq!(server.stats().closed_over_budget.load(Ordering::Relaxed), 1);
    // A small call is served while `a` holds the budget.
    let client = Client::new(Endpoint::Tcp(addr));
    let reply = client.call(ADD, pair(2, 3), CallOptions::new()).await;
    assert_eq!(answer(&reply.unwrap()).c, 5);
    drop(a);
    eventually("the budget given back", || partial(&server) == 0).await;
}

#[tokio::test]
async fn shutdown_gives_back_a_partial_frame_while_calls_drain() {
    let server = server(ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, server.clone(), async move {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A call of 2 s, then the start of a frame.
    let mut wire = BytesMut::new();
    FrameCodec::new()
        .encode(Frame::request(1, SLEEP.id, pair(2000, 1)), &mut wire)
        .unwrap();
    wire.extend_from_slice(&head(1000));
    stream.write_all(&wire).await.unwrap();
    eventually("the partial frame is read and the call under way", || {
        partial(&server) > 0 && server.stats().in_flight.load(Ordering::Relaxed) == 1
    })
    .await;
    stop.send(()).unwrap();
    eventually("the partial frame given back", || partial(&server) == 0).await;
    assert_eq!(
        server.stats().in_flight.load(Ordering::Relaxed),
        1,
        "while the call still drains"
    );
    serving.await.unwrap().unwrap();
}

#[test]
fn the_codec_does_not_reserve_what_a_frame_announces() {
    let mut wire = BytesMut::from(&head(4 << 20)[..]);
    wire.extend_from_slice(&[0; 10]);
    assert!(FrameCodec::new().decode(&mut wire).unwrap().is_none());
    assert!(
        wire.capacity() < 64 * 1024,
        "reserved {} bytes for a 4 MiB announcement",
        wire.capacity()
    );
}
