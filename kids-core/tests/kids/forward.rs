//! The forwarder against an in-memory kids server (a real Session), no sockets:
//! windows, acks, failures, re-sends in order, timeouts, backoff; then its
//! tokio driver over a real socket against a scripted peer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kids_core::{
    ForwardAction, Forwarder, ForwarderConfig, QueueFullError, Refused, RequestDecoder, Router,
    RouterConfig, Session, Tap,
};
use test_support::Poll;
use tokio_util::codec::Decoder;

/// The receiving server's store: records what it accepted; refuses while `refuse` > 0.
#[derive(Default)]
struct Sink {
    got: Mutex<Vec<Bytes>>,
    refuse: Mutex<u32>,
}

impl Tap for Sink {
    fn publish(
        &self,
        _topic: &Bytes,
        message: &Bytes,
        _now: Instant,
    ) -> Result<Option<u64>, Refused> {
        let mut refuse = self.refuse.lock().expect("lock");
        if *refuse > 0 {
            *refuse -= 1;
            return Err(Refused {
                reason: "busy".into(),
            });
        }
        self.got.lock().expect("lock").push(message.clone());
        Ok(None)
    }
}

/// One connection to the in-memory server.
struct Server {
    sink: Arc<Sink>,
    router: Router,
    conn: Option<(Session, RequestDecoder)>,
}

impl Server {
    fn new() -> Self {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let sink = Arc::new(Sink::default());
        router.set_tap(sink.clone());
        Self {
            sink,
            router,
            conn: None,
        }
    }

    fn connect(&mut self) {
        self.conn = Some((Session::new(&self.router), RequestDecoder::default()));
    }

    /// Feeds request bytes; returns the reply bytes.
    fn feed(&mut self, bytes: &[u8], now: Instant) -> BytesMut {
        let (session, decoder) = self.conn.as_mut().expect("connected");
        let mut buf = BytesMut::from(bytes);
        while let Some(req) = decoder.decode(&mut buf).expect("valid requests") {
            session.handle(req, now);
        }
        session.flush(now);
        BytesMut::from(&session.take_output()[..])
    }

    fn got(&self) -> Vec<Bytes> {
        self.sink.got.lock().expect("lock").clone()
    }
}

fn msg(i: usize) -> Bytes {
    Bytes::from(format!("line {i}"))
}

/// Runs until everything is acknowledged, passing all bytes each way.
fn drain(fwd: &mut Forwarder, server: &mut Server, now: &mut Instant) {
    for _ in 0..10_000 {
        if fwd.is_empty() {
            return;
        }
        if !fwd.is_connected() {
            // After a failure, wait out the backoff (a new forwarder connects at once).
            if let Some(at) = fwd.poll_timeout() {
                *now = at.max(*now);
            }
            assert!(fwd.should_connect(*now));
            server.connect();
            fwd.on_connected();
        }
        let mut out = BytesMut::new();
        fwd.poll_transmit(&mut out, *now);
        let mut replies = server.feed(&out, *now);
        if let ForwardAction::Disconnect(_) = fwd.handle_input(&mut replies, *now) {
            fwd.on_disconnect(*now);
        }
    }
    panic!("forwarder did not drain");
}

#[test]
fn steady_flow_in_order_within_the_window() {
    let mut now = Instant::now();
    let mut fwd = Forwarder::new(ForwarderConfig::default().window(64));
    let mut server = Server::new();
    for i in 0..10_000 {
        fwd.offer("t".into(), msg(i)).expect("room");
    }
    server.connect();
    fwd.on_connected();
    let mut out = BytesMut::new();
    assert_eq!(
        fwd.poll_transmit(&mut out, now),
        64,
        "no more than the window in flight"
    );
    assert_eq!(fwd.poll_transmit(&mut out, now), 0);
    let mut replies = server.feed(&out, now);
    assert_eq!(fwd.handle_input(&mut replies, now), ForwardAction::Continue);
    drain(&mut fwd, &mut server, &mut now);
    assert_eq!(server.got(), (0..10_000).map(msg).collect::<Vec<_>>());
    let s = fwd.stats();
    assert_eq!(
        (s.accepted, s.acked, s.sent, s.resent, s.failures),
        (10_000, 10_000, 10_000, 0, 0)
    );
}

#[test]
fn the_command_setting_sends_publish_and_its_integer_reply_acknowledges() {
    let now = Instant::now();
    let mut fwd = Forwarder::new(ForwarderConfig::default().command("PUBLISH"));
    let mut server = Server::new();
    fwd.offer("web".into(), "GET /".into()).expect("room");
    server.connect();
    fwd.on_connected();
    let mut out = BytesMut::new();
    assert_eq!(fwd.poll_transmit(&mut out, now), 1);
    assert_eq!(
        &out[..],
        b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nweb\r\n$5\r\nGET /\r\n"
    );
    let mut replies = server.feed(&out, now);
    assert_eq!(&replies[..], b":0\r\n", "no subscribers");
    assert_eq!(fwd.handle_input(&mut replies, now), ForwardAction::Continue);
    assert!(fwd.is_empty());
    assert_eq!(server.got(), [Bytes::from("GET /")]);
}

#[test]
fn a_disconnect_mid_window_resends_in_order_and_counts_it() {
    let mut now = Instant::now();
    let mut fwd = Forwarder::new(ForwarderConfig::default().window(100));
    let mut server = Server::new();
    for i in 0..100 {
        fwd.offer("t".into(), msg(i)).expect("room");
    }
    server.connect();
    fwd.on_connected();
    let mut out = BytesMut::new();
    fwd.poll_transmit(&mut out, now);
    // The server gets the first 40 commands; only 30 replies make it back.
    let cut = (0..40).fold(0, |at, _| at + command_len(&out[at..]));
    let replies = server.feed(&out[..cut], now);
    assert_eq!(
        &replies[..],
        b":0\r\n".repeat(40),
        "one integer reply per LOG"
    );
    let mut first30 = BytesMut::from(&replies[..30 * 4]);
    assert_eq!(fwd.handle_input(&mut first30, now), ForwardAction::Continue);
    fwd.on_disconnect(now);
    assert_eq!(fwd.stats().resent, 70, "70 were in flight");
    assert_eq!(fwd.len(), 70);
    drain(&mut fwd, &mut server, &mut now);
    let got = server.got();
    // Messages 30..40 reached the server twice: the only duplicates, from the retry window.
    let mut want: Vec<Bytes> = (0..40).map(msg).collect();
    want.extend((30..100).map(msg));
    assert_eq!(got, want);
    assert_eq!(fwd.stats().resent, 70, "no failure after the first");
}

/// Bytes of the first RESP command in `b` (a `*3` of bulk strings).
fn command_len(b: &[u8]) -> usize {
    let mut dec = RequestDecoder::default();
    let mut buf = BytesMut::from(b);
    dec.decode(&mut buf).expect("valid").expect("whole");
    b.len() - buf.len()
}

#[test]
fn an_error_reply_is_a_failure_and_the_message_is_retried() {
    let mut now = Instant::now();
    let mut fwd = Forwarder::new(ForwarderConfig::default().window(8));
    let mut server = Server::new();
    *server.sink.refuse.lock().expect("lock") = 3;
    for i in 0..50 {
        fwd.offer("t".into(), msg(i)).expect("room");
    }
    drain(&mut fwd, &mut server, &mut now);
    // Each refusal (-TRYLATER) gave the connection up; the server refused the
    // rest of that window's LOGs too, so the re-sends arrive in order, once.
    assert_eq!(server.got(), (0..50).map(msg).collect::<Vec<_>>());
    assert_eq!(fwd.stats().failures, 3);
}

#[test]
fn reply_timeout_gives_the_connection_up() {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut fwd = Forwarder::new(ForwarderConfig::default().timeout(timeout));
    fwd.offer("t".into(), msg(0)).expect("room");
    fwd.on_connected();
    assert_eq!(fwd.poll_timeout(), None, "nothing in flight yet");
    fwd.poll_transmit(&mut BytesMut::new(), t0);
    assert_eq!(fwd.poll_timeout(), Some(t0 + timeout));
    assert_eq!(
        fwd.handle_timeout(t0 + timeout - Duration::from_millis(1)),
        ForwardAction::Continue
    );
    assert!(matches!(
        fwd.handle_timeout(t0 + timeout),
        ForwardAction::Disconnect(_)
    ));
}

#[test]
fn after_a_reply_timeout_the_unanswered_messages_go_again_in_order() {
    let mut now = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut fwd = Forwarder::new(ForwarderConfig::default().timeout(timeout).window(4));
    for i in 0..10 {
        fwd.offer("t".into(), msg(i)).expect("room");
    }
    fwd.on_connected();
    // Sent into a connection whose peer never answers.
    assert_eq!(fwd.poll_transmit(&mut BytesMut::new(), now), 4);
    now += timeout;
    assert!(matches!(
        fwd.handle_timeout(now),
        ForwardAction::Disconnect(_)
    ));
    fwd.on_disconnect(now);
    let mut server = Server::new();
    drain(&mut fwd, &mut server, &mut now);
    assert_eq!(server.got(), (0..10).map(msg).collect::<Vec<_>>());
    assert_eq!(fwd.stats().resent, 4);
}

#[test]
fn an_undecodable_or_non_integer_reply_gives_the_connection_up() {
    for reply in [&b"?what\r\n"[..], b"$1\r\nx\r\n", b"_\r\n", b"+OK\r\n"] {
        let now = Instant::now();
        let mut fwd = Forwarder::new(ForwarderConfig::default());
        fwd.offer("t".into(), msg(0)).expect("room");
        fwd.on_connected();
        fwd.poll_transmit(&mut BytesMut::new(), now);
        assert!(
            matches!(
                fwd.handle_input(&mut BytesMut::from(reply), now),
                ForwardAction::Disconnect(_)
            ),
            "{reply:?}"
        );
        assert_eq!(fwd.stats().acked, 0, "{reply:?} acknowledges nothing");
        assert_eq!(fwd.len(), 1);
    }
}

/// What the scripted peer does on its n-th connection.
#[derive(Clone, Copy)]
enum Peer {
    /// Answers the first LOG with an error.
    Refuse,
    /// Reads and never answers.
    Silent,
    /// Acknowledges every LOG.
    Ack,
}

#[test]
fn drive_link_survives_an_error_reply_and_a_silent_peer_over_a_socket() {
    use kids_core::{Bell, Link, NetworkStore, Store, Target, net::drive_link};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = [Peer::Refuse, Peer::Silent, Peer::Ack];
        let peer = {
            let got = got.clone();
            tokio::spawn(async move {
                // After the script, every further connection acknowledges (a
                // slow machine may time out an acknowledging connection too).
                for role in script.into_iter().chain(std::iter::repeat(Peer::Ack)) {
                    let (mut sock, _) = listener.accept().await.expect("accept");
                    let got = got.clone();
                    tokio::spawn(async move {
                        let mut dec = RequestDecoder::default();
                        let mut buf = BytesMut::new();
                        loop {
                            match sock.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return, // the forwarder gave up on us
                                Ok(_) => {}
                            }
                            while let Some(req) = dec.decode(&mut buf).expect("LOG commands") {
                                assert_eq!(&req[0][..], b"LOG");
                                let reply: &[u8] = match role {
                                    Peer::Refuse => b"-ERR busy\r\n",
                                    Peer::Silent => b"",
                                    Peer::Ack => {
                                        got.lock().expect("lock").push(req[2].clone());
                                        b":1\r\n"
                                    }
                                };
                                if sock.write_all(reply).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            })
        };
        let link = Arc::new(Link::new(
            Target::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            ForwarderConfig::default()
                .window(4)
                .timeout(Duration::from_secs(1))
                .backoff(Duration::from_millis(10), Duration::from_millis(50)),
            Arc::new(Bell::default()),
        ));
        let mut store = NetworkStore::new(link.clone());
        let now = kids_core::Now::new(Instant::now(), std::time::SystemTime::now());
        for i in 0..20 {
            store.store(&"t".into(), &msg(i), now).expect("room");
        }
        store.commit(now).expect("commit");
        let driver = tokio::spawn(drive_link(link.clone()));
        Poll::default()
            .pause(Duration::from_millis(10))
            .until_async(|| (store.acked() >= 20).then_some(()), tokio::time::sleep)
            .await
            .unwrap_or_else(|| panic!("never acknowledged: {:?}", link.forwarder().stats()));
        assert_eq!(
            *got.lock().expect("lock"),
            (0..20).map(msg).collect::<Vec<_>>()
        );
        let stats = link.forwarder().stats();
        assert!(
            stats.failures >= 2,
            "the error reply and the timeout: {stats:?}"
        );
        assert!(
            stats.resent >= 4,
            "the silent peer's window went again: {stats:?}"
        );
        drop(store); // closes the link: the driver stops
        tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .expect("driver stops when its store is gone")
            .expect("driver task");
        peer.abort();
    });
}

#[test]
fn backoff_doubles_to_its_cap_and_an_ack_resets_it() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut fwd = Forwarder::new(ForwarderConfig::default().backoff(ms(100), ms(500)));
    fwd.offer("t".into(), msg(0)).expect("room");
    let mut now = t0;
    for want in [100, 200, 400, 500, 500] {
        fwd.on_disconnect(now);
        assert_eq!(fwd.poll_timeout(), Some(now + ms(want)));
        assert!(!fwd.should_connect(now + ms(want) - ms(1)));
        now += ms(want);
        assert!(fwd.should_connect(now));
    }
    fwd.on_connected();
    let mut out = BytesMut::new();
    fwd.poll_transmit(&mut out, now);
    assert_eq!(
        fwd.handle_input(&mut BytesMut::from(&b":1\r\n"[..]), now),
        ForwardAction::Continue
    );
    fwd.offer("t".into(), msg(1)).expect("room");
    fwd.on_disconnect(now);
    assert_eq!(fwd.poll_timeout(), Some(now + ms(100)), "reset by the ack");
}

#[test]
fn the_queue_is_bounded_and_replies_are_checked() {
    let now = Instant::now();
    let mut fwd = Forwarder::new(ForwarderConfig::default().max_queue(2));
    fwd.offer("t".into(), msg(0)).expect("room");
    fwd.offer("t".into(), msg(1)).expect("room");
    assert_eq!(fwd.offer("t".into(), msg(2)), Err(QueueFullError));
    fwd.on_connected();
    assert!(
        matches!(
            fwd.handle_input(&mut BytesMut::from(&b":1\r\n"[..]), now),
            ForwardAction::Disconnect(_)
        ),
        "an ack for nothing sent"
    );
    fwd.on_connected();
    fwd.poll_transmit(&mut BytesMut::new(), now);
    assert!(matches!(
        fwd.handle_input(&mut BytesMut::from(&b"+OK\r\n"[..]), now),
        ForwardAction::Disconnect(_)
    ));
    assert_eq!(fwd.len(), 2, "nothing acknowledged, nothing lost");
}
