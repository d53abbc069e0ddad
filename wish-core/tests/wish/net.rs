//! Over real sockets: many calls on one connection, out-of-order answers, deadlines, cancels, reconnects, bad frames.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use wish_core::net::{Client, ClientConfig, Endpoint, serve, serve_connection};
use wish_core::{
    Body, CallOptions, Channel, Code, Frame, FrameCodec, RequestFrame, Server, ServerConfig,
};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_on_one_connection() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let client = Client::new(Endpoint::Tcp(addr));
    let calls = (0..10_000i32).map(|i| {
        let client = client.clone();
        async move {
            let method = if i % 2 == 0 { ADD } else { MUL };
            let reply = client
                .call(method, pair(i, 3), CallOptions::new())
                .await
                .unwrap();
            let want = if i % 2 == 0 {
                i64::from(i) + 3
            } else {
                i64::from(i) * 3
            };
            assert_eq!(answer(&reply).c, want, "call {i} got another call's answer");
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(arith.handled.load(Ordering::SeqCst), 10_000);
}

/// Many callers at once, each on a task of its own, through a write queue
/// of one frame: each waits for room in turn, and every call is sent and
/// answered (a lost wakeup would hang, so the whole is bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queue_of_one_frame_still_sends_every_call() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let mut config = ClientConfig::default();
    config.write_queue = 1;
    let client = Client::with_config(Endpoint::Tcp(addr), config);
    let calls: Vec<_> = (0..2_000i32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let reply = client.call(ADD, pair(i, 1), CallOptions::new()).await;
                assert_eq!(answer_of(reply), i64::from(i) + 1);
            })
        })
        .collect();
    let all = futures::future::join_all(calls);
    let done = tokio::time::timeout(Duration::from_secs(60), all).await;
    assert!(done.expect("every call answered").iter().all(Result::is_ok));
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2_000);
}

/// Callers waiting for room in a full write queue, on a connection whose
/// server stopped reading, fail with UNAVAILABLE once the connection is
/// lost (here: the server sends a frame that does not decode) instead of
/// waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_for_room_fail_when_the_connection_is_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = ClientConfig::default();
    config.write_queue = 1;
    let client = Client::with_config(Endpoint::Tcp(addr), config);
    let big = wish_core::Bytes::from(vec![0u8; 1 << 20]);
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (client, big) = (client.clone(), big.clone());
            tokio::spawn(async move { client.call(ADD, big, CallOptions::new()).await })
        })
        .collect();
    // The server reads nothing: 24 MiB fill the socket, the writer stops,
    // and the other callers wait for room.
    let (mut stream, _) = listener.accept().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::io::AsyncWriteExt::write_all(&mut stream, &[0, 0, 0, 0])
        .await
        .unwrap();
    let all = futures::future::join_all(calls);
    let results = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every caller answered");
    for result in results {
        let status = result.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::UNAVAILABLE, "{status}");
    }
}

/// A handler that answers at once runs on the connection's task; one that
/// computes for long before it first awaits, again and again, has its
/// method's calls started on tasks of their own (so they can run side by
/// side), until its first polls are quick again.
#[tokio::test]
async fn a_method_whose_handler_computes_long_is_moved_to_tasks_and_back() {
    let (_arith, server, addr) = start_with(ServerConfig::default()).await;
    let client = Client::new(Endpoint::Tcp(addr));
    let spin = |micros: i32| {
        let client = client.clone();
        async move {
            let reply = client
                .call(SPIN, pair(micros, 1), CallOptions::new())
                .await
                .unwrap();
            answer(&reply).text
        }
    };
    // Long polls: one after another on the connection's task.
    let mut tasks = Vec::new();
    for i in 1..wish_core::LONG_POLLS {
        tasks.push(spin(2_000).await);
        assert!(server.runs_inline(SPIN.id), "{i} long polls");
    }
    assert!(tasks.windows(2).all(|w| w[0] == w[1]), "{tasks:?}");
    let connection = tasks[0].clone();
    assert!(connection.starts_with("Some("), "{connection}");
    spin(2_000).await;
    assert!(!server.runs_inline(SPIN.id), "moved after the eighth");
    // Now each call on a task of its own.
    let (a, b) = (spin(2_000).await, spin(0).await);
    assert!(
        a != connection && b != connection && a != b,
        "{a} {b} {connection}"
    );
    let add = client.call(ADD, pair(1, 2), CallOptions::new()).await;
    assert_eq!(answer_of(add), 3);
    assert!(server.runs_inline(ADD.id), "other methods stay");
    // Quick first polls, timed on their tasks, bring it back; one is not enough.
    assert!(!server.runs_inline(SPIN.id));
    let mut quick = 1;
    while !server.runs_inline(SPIN.id) {
        spin(0).await;
        quick += 1;
        assert!(quick <= 1_000, "never came back");
    }
    assert!(quick > wish_core::LONG_POLLS, "after {quick} quick polls");
    assert_eq!(spin(0).await, connection, "on the connection's task again");
}

/// A cancel read in the same batch as its request drops the answer of a
/// call that was done at once: it is not written (PROTOCOL.md 8.4).
#[tokio::test]
async fn a_cancel_in_the_same_read_drops_an_answer_done_at_once() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    // Both frames in one write, so the server reads them together.
    raw.feed(Frame::request(5, ADD.id, pair(1, 1)))
        .await
        .unwrap();
    raw.feed(Frame::cancel(5)).await.unwrap();
    raw.flush().await.unwrap();
    raw.send(Frame::request(6, ADD.id, pair(2, 2)))
        .await
        .unwrap();
    let first = raw.next().await.unwrap().unwrap();
    assert_eq!(
        first.id, 6,
        "the cancelled call was not answered: {first:?}"
    );
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2, "it did run");
}

#[tokio::test]
async fn answers_come_out_of_order_and_a_dropped_call_cancels() {
    let (arith, server, addr) = start_with(ServerConfig::default()).await;
    let client = Client::new(Endpoint::Tcp(addr));
    let slow = client.call(SLEEP, pair(60_000, 1), CallOptions::new());
    let slow = tokio::spawn(slow);
    eventually("the slow call reached its handler", || {
        arith.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    let fast = client
        .call(ADD, pair(2, 2), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        answer(&fast).c,
        4,
        "answered while the first call is still running"
    );
    assert!(!slow.is_finished());
    slow.abort();
    eventually("the server dropped the cancelled handler", || {
        arith.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(server.stats().cancelled.load(Ordering::SeqCst), 1);
    // The connection is still good.
    let again = client
        .call(ADD, pair(5, 5), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(answer(&again).c, 10);
}

#[tokio::test]
async fn a_handler_past_its_deadline_yields_a_deadline_error() {
    let (arith, server, addr) = start_with(ServerConfig::default()).await;
    // Through the client.
    let client = Client::new(Endpoint::Tcp(addr.clone()));
    let err = client
        .call(
            SLEEP,
            pair(60_000, 1),
            CallOptions::new().deadline(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    eventually("the handler was stopped", || {
        arith.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    // The server enforces it by itself, for clients that do not.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    let request = RequestFrame {
        method: SLEEP.id,
        deadline: Some(Duration::from_millis(50)),
        no_cache: false,
        plain_response: false,
        compress: false,
        payload: pair(60_000, 1),
    };
    raw.send(Frame {
        id: 77,
        body: Body::Request(request),
    })
    .await
    .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(answer.id, 77);
    assert!(
        matches!(&answer.body, Body::Error(s) if s.code() == Code::DEADLINE_EXCEEDED),
        "{answer:?}"
    );
    eventually("both handlers stopped", || {
        arith.dropped.load(Ordering::SeqCst) == 2
    })
    .await;
    // Each call was stopped once by its deadline or its cancel; both may
    // count when they cross.
    assert!(server.stats().cancelled.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_cancel_frame_stops_the_call_and_nothing_answers_it() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    let mut sleep = Frame::request(5, SLEEP.id, pair(60_000, 1));
    if let Body::Request(r) = &mut sleep.body {
        r.no_cache = true;
    }
    raw.send(sleep).await.unwrap();
    eventually("the call reached its handler", || {
        arith.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    raw.send(Frame::cancel(5)).await.unwrap();
    eventually("the handler was dropped", || {
        arith.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    raw.send(Frame::request(6, ADD.id, pair(1, 1)))
        .await
        .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(answer.id, 6, "no answer for the cancelled call came first");
    // A cancel for an id not in flight is ignored.
    raw.send(Frame::cancel(1234)).await.unwrap();
    raw.send(Frame::request(7, ADD.id, pair(1, 1)))
        .await
        .unwrap();
    assert_eq!(raw.next().await.unwrap().unwrap().id, 7);
}

#[tokio::test]
async fn a_lost_connection_fails_its_calls_and_the_next_call_reconnects() {
    let arith = Arc::new(Arith::default());
    let server = Server::new(ServerConfig::default())
        .with_service(Svc(arith.clone()))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (conns_tx, mut conns) = tokio::sync::mpsc::unbounded_channel();
    let accepting = server.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let task = tokio::spawn(serve_connection(
                stream,
                accepting.clone(),
                FrameCodec::new(),
            ));
            conns_tx.send(task).unwrap();
        }
    });
    let client = Client::new(Endpoint::Tcp(addr));
    let slow = tokio::spawn(client.call(SLEEP, pair(60_000, 1), CallOptions::new()));
    let first = conns.recv().await.unwrap();
    eventually("the call reached its handler", || {
        arith.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    first.abort(); // the server side of the connection goes away
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    let reply = client
        .call(ADD, pair(20, 22), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(answer(&reply).c, 42, "reconnected");
    assert!(conns.recv().await.is_some(), "on a second connection");
}

#[tokio::test]
async fn a_frame_that_does_not_decode_closes_the_connection_with_a_reason() {
    let (_arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    tokio::io::AsyncWriteExt::write_all(
        raw.get_mut(),
        &[0, 0, 0, 11, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    )
    .await
    .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(answer.id, 0);
    assert!(
        matches!(&answer.body, Body::Error(s) if s.message().contains("version 9")),
        "{answer:?}"
    );
    assert!(raw.next().await.is_none(), "then the server closes");
    // Unknown methods, by contrast, are an answer, not a protocol error.
    let client = Client::new(Endpoint::Tcp(addr));
    static OTHER: wish_core::ServiceDesc = wish_core::ServiceDesc::new(
        "test.Other",
        &[wish_core::MethodDesc::new(
            "test.Other.M",
            wish_core::MethodOptions::new(),
        )],
    );
    let err = client
        .call(&OTHER.methods[0], pair(1, 1), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND);
    assert_eq!(
        answer_of(client.call(ADD, pair(1, 1), CallOptions::new()).await),
        2
    );
}

fn answer_of(reply: Result<wish_core::RawReply, wish_core::Status>) -> i64 {
    answer(&reply.unwrap()).c
}

#[tokio::test]
async fn unix_sockets_serve_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wish.sock");
    let arith = Arc::new(Arith::default());
    let server = Server::new(ServerConfig::default())
        .with_service(Svc(arith))
        .unwrap();
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(serve(listener, server, std::future::pending()));
    let client = Client::new(Endpoint::Unix(path));
    assert_eq!(
        answer_of(client.call(MUL, pair(6, 7), CallOptions::new()).await),
        42
    );
    let cached = client
        .call(MUL, pair(6, 7), CallOptions::new())
        .await
        .unwrap();
    assert!(cached.from_cache);
    let err = Client::new(Endpoint::Unix(dir.path().join("nobody.sock")))
        .call(ADD, pair(1, 1), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
}

#[tokio::test]
async fn a_cancelled_id_can_be_reused_and_cancelled_again() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    for round in 1..=2u64 {
        raw.send(Frame::request(5, SLEEP.id, pair(60_000, 1)))
            .await
            .unwrap();
        eventually("the call reached its handler", || {
            arith.handled.load(Ordering::SeqCst) == round
        })
        .await;
        raw.send(Frame::cancel(5)).await.unwrap();
        eventually("its handler was dropped", || {
            arith.dropped.load(Ordering::SeqCst) == round
        })
        .await;
    }
    raw.send(Frame::request(6, ADD.id, pair(1, 1)))
        .await
        .unwrap();
    assert_eq!(
        raw.next().await.unwrap().unwrap().id,
        6,
        "nothing answered either id-5 call"
    );
}

#[tokio::test]
async fn request_id_0_is_refused() {
    let (_arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    raw.send(Frame::request(0, ADD.id, pair(1, 1)))
        .await
        .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert!(
        matches!(&answer.body, Body::Error(s) if s.message().contains("id 0")),
        "{answer:?}"
    );
    assert!(raw.next().await.is_none());
}

#[tokio::test]
async fn frames_over_the_bound_fail_their_call_only() {
    let (_arith, _server, addr) = start_with(ServerConfig::default()).await;
    let client = Client::new(Endpoint::Tcp(addr));
    // 5,000,000 bytes of text: over the 4 MiB bound even though lz4 would
    // squeeze it into a small frame (which the client would take for a bomb).
    let err = client
        .call(TEXT, pair(1_000_000, 0), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED, "{err}");
    let big = wish_core::Bytes::from(vec![0u8; 5 << 20]);
    let err = client.call(ADD, big, CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED, "{err}");
    assert_eq!(
        answer_of(client.call(ADD, pair(2, 2), CallOptions::new()).await),
        4,
        "the connection goes on"
    );
}

#[tokio::test]
async fn dropping_the_last_client_closes_its_connection() {
    let arith = Arc::new(Arith::default());
    let server = Server::new(ServerConfig::default())
        .with_service(Svc(arith))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let result = serve_connection(stream, server, FrameCodec::new()).await;
        ended_tx.send(result.is_ok()).unwrap();
    });
    let client = Client::new(Endpoint::Tcp(addr));
    assert_eq!(
        answer_of(
            client
                .clone()
                .call(ADD, pair(1, 2), CallOptions::new())
                .await
        ),
        3
    );
    drop(client);
    assert_eq!(
        ended.recv().await,
        Some(true),
        "the server saw the connection end cleanly"
    );
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_only() {
    let (_arith, _server, addr) = start_with(ServerConfig::default()).await;
    let client = Client::new(Endpoint::Tcp(addr));
    let err = client
        .call(PANIC, pair(1, 1), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::INTERNAL, "{err}");
    assert_eq!(
        answer_of(client.call(ADD, pair(1, 1), CallOptions::new()).await),
        2
    );
}

#[tokio::test]
async fn a_request_id_already_in_flight_closes_the_connection() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    raw.send(Frame::request(5, SLEEP.id, pair(60_000, 1)))
        .await
        .unwrap();
    eventually("the call is in flight", || {
        arith.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    raw.send(Frame::request(5, ADD.id, pair(1, 1)))
        .await
        .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(answer.id, 0);
    assert!(
        matches!(&answer.body, Body::Error(s) if s.message().contains("already in flight")),
        "{answer:?}"
    );
    assert!(raw.next().await.is_none(), "then the server closes");
    eventually("and drops the call it was running", || {
        arith.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_client_over_its_in_flight_limit_is_refused_at_once() {
    let (arith, _server, addr) = start_with(ServerConfig::default()).await;
    let mut config = wish_core::net::ClientConfig::default();
    config.max_in_flight = 1;
    let client = Client::with_config(Endpoint::Tcp(addr), config);
    let slow = tokio::spawn(client.call(SLEEP, pair(60_000, 1), CallOptions::new()));
    eventually("the first call is in flight", || {
        arith.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    let err = client
        .call(ADD, pair(1, 1), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED, "{err}");
    slow.abort();
    eventually("the slow call was cancelled", || {
        arith.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        answer_of(client.call(ADD, pair(1, 1), CallOptions::new()).await),
        2
    );
}

#[tokio::test]
async fn the_client_compresses_requests_of_compress_methods_unless_told_not_to() {
    // A raw server that records how each request arrived, and answers it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut raw = Framed::new(stream, FrameCodec::new());
        while let Some(Ok(frame)) = raw.next().await {
            if let Body::Request(r) = frame.body {
                seen_tx
                    .send((r.method, r.compress, r.plain_response, r.payload.len()))
                    .unwrap();
                raw.send(Frame::response(frame.id, wish_core::Bytes::new()))
                    .await
                    .unwrap();
            }
        }
    });
    let client = Client::new(Endpoint::Tcp(addr));
    // A Pair with 4,000 unknown bytes in field 15: compressible, over the threshold.
    let mut big = pair(1, 2).to_vec();
    big.extend_from_slice(&[0x7a, 0xa0, 0x1f]);
    big.extend_from_slice(&[b'z'; 4000]);
    let big = wish_core::Bytes::from(big);
    let n = big.len();
    client
        .call(MUL, big.clone(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        seen.recv().await,
        Some((MUL.id, true, false, n)),
        "(compress): lz4 on the wire"
    );
    client
        .call(MUL, big.clone(), CallOptions::new().no_compress())
        .await
        .unwrap();
    assert_eq!(
        seen.recv().await,
        Some((MUL.id, false, true, n)),
        "no_compress: plain, and asks for plain"
    );
    client.call(ADD, big, CallOptions::new()).await.unwrap();
    assert_eq!(
        seen.recv().await,
        Some((ADD.id, false, false, n)),
        "no (compress) on Add"
    );
}

#[tokio::test]
async fn shutdown_answers_the_calls_already_read_then_stops() {
    let arith = Arc::new(Arith::default());
    let server = Server::new(ServerConfig::default())
        .with_service(Svc(arith.clone()))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, server, async move {
        let _ = stopped.await;
    }));
    let client = Client::new(Endpoint::Tcp(addr.clone()));
    // A call that takes 300 ms, under way when the shutdown comes.
    let slow = tokio::spawn(client.call(SLEEP, pair(300, 9), CallOptions::new()));
    eventually("the call reached its handler", || {
        arith.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    stop.send(()).unwrap();
    let reply = slow.await.unwrap().expect("answered, not dropped");
    assert_eq!(answer(&reply).c, 9);
    serving.await.unwrap().unwrap();
    assert_eq!(arith.dropped.load(Ordering::SeqCst), 0);
    // The connection was closed after the drain, and the listener is gone.
    let err = client
        .call(ADD, pair(1, 1), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn a_client_sending_a_server_frame_is_refused() {
    let (_arith, _server, addr) = start_with(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new());
    raw.send(Frame::error(
        3,
        wish_core::Status::internal("from a client"),
    ))
    .await
    .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(answer.id, 0, "{answer:?}");
    assert!(
        matches!(&answer.body, Body::Error(s)
            if s.code() == Code::INVALID_ARGUMENT
                && s.message() == "a frame of a kind only the other side sends"),
        "{answer:?}"
    );
    assert!(raw.next().await.is_none(), "then the server closes");
}
