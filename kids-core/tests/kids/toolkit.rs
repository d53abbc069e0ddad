//! The server toolkit: a connection against an in-memory stream on a simulated
//! clock (no sockets, no sleeps), and a line protocol on the same tokio adapter.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kids_core::server::{
    Budget, ConnConfig, Connection, Ended, Flow, MemoryStream, Protocol, RequestCodec, Step,
};
use kids_core::{NLimits, Outbox, Refused, RequestDecoder, Router, RouterConfig, Session, Tap};
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// Counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter::default());
    (Arc::clone(&c), Waker::from(c))
}

type KidsConn = Connection<Session, RequestDecoder>;

fn kids_conn(router: &Router, config: ConnConfig, now: Instant) -> KidsConn {
    Connection::new(
        Session::new(router),
        RequestDecoder::default(),
        config,
        None,
        now,
    )
}

/// Polls until the connection is idle (`Pending`) or closed; a yield is
/// what a runtime does with it: poll again.
fn settle<P, C>(conn: &mut Connection<P, C>, pipe: &mut MemoryStream, now: Instant) -> Option<Step>
where
    P: Protocol,
    C: RequestCodec<Item = P::Request, Error = P::Error>,
{
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match conn.poll(&mut cx, pipe, now) {
            Poll::Pending => return None,
            Poll::Ready(Ok(Step::Yield)) => {}
            Poll::Ready(Ok(step)) => return Some(step),
            Poll::Ready(Err(e)) => panic!("transport error: {e}"),
        }
    }
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[test]
fn requests_read_together_are_answered_in_one_write() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(&[cmd(&["PING"]), cmd(&["ECHO", "hi"]), cmd(&["PING"])].concat());
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert_eq!(pipe.writes, vec![7 + 8 + 7]);
    assert_eq!(pipe.take_output(), b"+PONG\r\n$2\r\nhi\r\n+PONG\r\n");
}

#[test]
fn a_client_that_does_not_read_stops_being_read() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let config = ConnConfig::default()
        .max_pending_output(64 * 1024)
        .read_batch(4096);
    let mut conn = kids_conn(&router, config, now);
    let mut pipe = MemoryStream::blocked(); // the client reads nothing
    let payload = "x".repeat(1000);
    let echo = cmd(&["ECHO", &payload]);
    for _ in 0..1000 {
        pipe.send(&echo);
    }
    let sent = pipe.input.len();
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    let read = sent - pipe.input.len();
    // It read until its own output passed the bound, then stopped.
    assert!(conn.protocol().outbox().pending() >= 64 * 1024);
    assert!(read < 100 * 1024, "read {read} of {sent} bytes");
    // Once the client reads, the rest is read and answered.
    pipe.blocked = false;
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert!(pipe.input.is_empty());
    let mut expected = Vec::new();
    for _ in 0..1000 {
        expected.extend_from_slice(format!("$1000\r\n{payload}\r\n").as_bytes());
    }
    assert_eq!(pipe.take_output(), expected);
}

#[test]
fn a_subscriber_is_read_whatever_its_output_holds() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let config = ConnConfig::default().max_pending_output(1024);
    let mut conn = kids_conn(&router, config, now);
    let mut pipe = MemoryStream::blocked();
    pipe.send(&cmd(&["SUBSCRIBE", "a"]));
    settle(&mut conn, &mut pipe, now);
    for _ in 0..100 {
        router
            .publish("a".into(), Bytes::from(vec![b'm'; 100]), now)
            .expect("published");
    }
    assert!(conn.protocol().outbox().pending() > 1024);
    pipe.send(&cmd(&["UNSUBSCRIBE", "a"]));
    settle(&mut conn, &mut pipe, now);
    assert!(pipe.input.is_empty(), "UNSUBSCRIBE was not read");
    assert_eq!(conn.protocol().subscriptions(), 0);
}

#[test]
fn an_idle_client_is_closed_but_not_a_subscriber() {
    let t0 = Instant::now();
    let router = Router::new(RouterConfig::default(), t0);
    let config = ConnConfig::default().idle_timeout(Some(Duration::from_secs(300)));
    let mut idle = kids_conn(&router, config, t0);
    let mut sub = kids_conn(&router, config, t0);
    let (mut a, mut b) = (MemoryStream::default(), MemoryStream::default());
    b.send(&cmd(&["SUBSCRIBE", "a"]));
    let t1 = t0 + Duration::from_secs(100);
    settle(&mut idle, &mut a, t1);
    settle(&mut sub, &mut b, t1);
    assert_eq!(idle.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    assert_eq!(sub.poll_timeout(), None);
    // A request moves the deadline.
    a.send(&cmd(&["PING"]));
    settle(&mut idle, &mut a, t1);
    assert_eq!(idle.poll_timeout(), Some(t1 + Duration::from_secs(300)));
    let late = t1 + Duration::from_secs(300);
    assert_eq!(
        settle(&mut idle, &mut a, late - Duration::from_millis(1)),
        None
    );
    assert_eq!(settle(&mut idle, &mut a, late), Some(Step::Closed));
    assert_eq!(idle.ended(), Some(Ended::Idle));
    assert_eq!(
        settle(&mut sub, &mut b, late + Duration::from_secs(3600)),
        None
    );
}

#[test]
fn a_half_sent_request_times_out_from_its_first_byte() {
    let t0 = Instant::now();
    let router = Router::new(RouterConfig::default(), t0);
    let config = ConnConfig::default().request_timeout(Some(Duration::from_secs(10)));
    let mut conn = kids_conn(&router, config, t0);
    let mut pipe = MemoryStream::default();
    assert_eq!(conn.poll_timeout(), None);
    // A whole request leaves no deadline.
    pipe.send(&cmd(&["PING"]));
    settle(&mut conn, &mut pipe, t0);
    assert_eq!(conn.poll_timeout(), None);
    // A trickle of bytes does not move it: it runs from the first one.
    pipe.send(b"*2\r\n$4\r\nEC");
    settle(&mut conn, &mut pipe, t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    pipe.send(b"HO\r\n$1");
    settle(&mut conn, &mut pipe, t0 + Duration::from_secs(9));
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(
        settle(&mut conn, &mut pipe, t0 + Duration::from_secs(10)),
        Some(Step::Closed)
    );
    assert_eq!(conn.ended(), Some(Ended::RequestTimeout));
}

#[test]
fn a_request_finished_in_time_clears_the_deadline() {
    let t0 = Instant::now();
    let router = Router::new(RouterConfig::default(), t0);
    let config = ConnConfig::default().request_timeout(Some(Duration::from_secs(10)));
    let mut conn = kids_conn(&router, config, t0);
    let mut pipe = MemoryStream::default();
    pipe.send(b"*2\r\n$4\r\nECHO\r\n$2\r\nh");
    settle(&mut conn, &mut pipe, t0);
    assert!(conn.poll_timeout().is_some());
    pipe.send(b"i\r\n");
    settle(&mut conn, &mut pipe, t0 + Duration::from_secs(5));
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(pipe.take_output(), b"$2\r\nhi\r\n");
    assert_eq!(
        settle(&mut conn, &mut pipe, t0 + Duration::from_secs(20)),
        None
    );
}

#[test]
fn pushed_messages_wait_one_yield_then_leave_in_one_write() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(&cmd(&["SUBSCRIBE", "a"]));
    settle(&mut conn, &mut pipe, now);
    pipe.take_output();
    let mut cx = Context::from_waker(Waker::noop());
    router
        .publish("a".into(), "1".into(), now)
        .expect("published");
    // An idle writer yields first ...
    assert!(matches!(
        conn.poll(&mut cx, &mut pipe, now),
        Poll::Ready(Ok(Step::Yield))
    ));
    assert!(pipe.writes.is_empty());
    // ... while the other publishers of this pass push too ...
    router
        .publish("a".into(), "2".into(), now)
        .expect("published");
    router
        .publish("a".into(), "3".into(), now)
        .expect("published");
    // ... then writes everything at once.
    assert!(conn.poll(&mut cx, &mut pipe, now).is_pending());
    assert_eq!(pipe.writes.len(), 1);
    let frame = |m: &str| format!("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n{m}\r\n");
    assert_eq!(
        String::from_utf8(pipe.take_output()).expect("utf8"),
        [frame("1"), frame("2"), frame("3")].concat()
    );
    // Its own replies are written at once.
    pipe.send(&cmd(&["PING"]));
    assert!(conn.poll(&mut cx, &mut pipe, now).is_pending());
    assert_eq!(pipe.take_output(), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    // Without coalescing, no yield.
    let mut plain = kids_conn(&router, ConnConfig::default().coalesce(false), now);
    let mut p2 = MemoryStream::default();
    p2.send(&cmd(&["SUBSCRIBE", "b"]));
    settle(&mut plain, &mut p2, now);
    router
        .publish("b".into(), "x".into(), now)
        .expect("published");
    assert!(plain.poll(&mut cx, &mut p2, now).is_pending());
    assert!(p2.take_output().ends_with(b"$1\r\nx\r\n"));
}

#[test]
fn a_draining_connection_writes_what_it_owes_then_ends() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::blocked();
    pipe.send(&cmd(&["ECHO", "owed"]));
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    conn.stop_reading();
    pipe.send(&cmd(&["ECHO", "never read"]));
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    pipe.blocked = false;
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(conn.ended(), Some(Ended::Finished));
    assert_eq!(pipe.take_output(), b"$4\r\nowed\r\n");
}

#[test]
fn eof_writes_what_is_owed_then_ends() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(&cmd(&["PING"]));
    pipe.eof = true;
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(pipe.take_output(), b"+PONG\r\n");
}

/// A tap that stores only when told to.
#[derive(Default)]
struct Held {
    next: AtomicU64,
    stored: AtomicU64,
}

impl Tap for Held {
    fn publish(&self, _: &Bytes, _: &Bytes, _: Instant) -> Result<Option<u64>, Refused> {
        Ok(Some(self.next.fetch_add(1, Ordering::SeqCst) + 1))
    }
    fn poll_stored(&self, ticket: u64, _: &mut Context<'_>) -> Poll<bool> {
        if self.stored.load(Ordering::SeqCst) >= ticket {
            Poll::Ready(true)
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn replies_wait_until_their_messages_are_stored() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let tap = Arc::new(Held::default());
    router.set_tap(Arc::clone(&tap) as Arc<dyn Tap>);
    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(
        &[
            cmd(&["PUBLISH", "t", "1"]),
            cmd(&["PUBLISH", "t", "2"]),
            cmd(&["PING"]),
        ]
        .concat(),
    );
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert!(pipe.output.is_empty(), "answered before stored");
    tap.stored.store(1, Ordering::SeqCst);
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert!(
        pipe.output.is_empty(),
        "answered before the last was stored"
    );
    tap.stored.store(2, Ordering::SeqCst);
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert_eq!(pipe.take_output(), b":0\r\n:0\r\n+PONG\r\n");
}

#[test]
fn the_server_budget_holds_every_connection_back() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let budget = Arc::new(Budget::new(10_000));
    let new = || {
        Connection::new(
            Session::new(&router),
            RequestDecoder::default(),
            ConnConfig::default(),
            Some(Arc::clone(&budget)),
            now,
        )
    };
    let (mut big, mut other) = (new(), new());
    let (mut p1, mut p2) = (MemoryStream::blocked(), MemoryStream::default());
    // One client that does not read runs the server over its budget ...
    p1.send(&cmd(&["ECHO", &"x".repeat(20_000)]));
    settle(&mut big, &mut p1, now);
    assert!(budget.is_over(), "used {}", budget.used());
    // ... so no connection reads, and a waiting one is woken when it drains.
    let (woken, waker) = counter();
    let mut cx = Context::from_waker(&waker);
    p2.send(&cmd(&["PING"]));
    assert!(other.poll(&mut cx, &mut p2, now).is_pending());
    assert!(p2.output.is_empty());
    assert_eq!(woken.0.load(Ordering::SeqCst), 0);
    p1.blocked = false;
    settle(&mut big, &mut p1, now);
    assert!(!budget.is_over());
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    settle(&mut other, &mut p2, now);
    assert_eq!(p2.take_output(), b"+PONG\r\n");
    // Ended connections give their charge back.
    drop((big, other));
    assert_eq!(budget.used(), 0);
}

/// A line protocol on the same toolkit: every line comes back upper-cased;
/// `QUIT` closes; `NAP` blocks the server's thread for 300 ms first (so
/// that a test can have bytes and clients reach the server together).
struct Shout {
    outbox: Outbox,
    out: BytesMut,
    limits: NLimits,
}

impl Shout {
    fn new(id: u64) -> Self {
        Self {
            outbox: Outbox::new(id),
            out: BytesMut::new(),
            limits: NLimits::default(),
        }
    }
}

impl Protocol for Shout {
    type Request = String;
    type Error = LinesCodecError;

    fn handle(&mut self, line: String, _: Instant) -> Flow {
        if line == "QUIT" {
            self.out.extend_from_slice(b"BYE\n");
            return Flow::Close;
        }
        if line == "NAP" {
            std::thread::sleep(Duration::from_millis(300));
        }
        self.out.extend_from_slice(line.to_uppercase().as_bytes());
        self.out.extend_from_slice(b"\n");
        Flow::Continue
    }

    fn decode_error(&mut self, _: LinesCodecError, _: Instant) -> Flow {
        self.out.extend_from_slice(b"ERR line too long\n");
        Flow::Close
    }

    fn flush(&mut self, now: Instant) {
        if !self.out.is_empty() {
            self.outbox
                .send(self.out.split().freeze(), now, &self.limits);
        }
    }

    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn nlimits(&self) -> &NLimits {
        &self.limits
    }
}

/// tokio-util's line codec, bounded, as a request codec; with `true`, a
/// last line without its newline is taken at the end of the stream.
struct Lines(LinesCodec, bool);

impl Decoder for Lines {
    type Item = String;
    type Error = LinesCodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, LinesCodecError> {
        self.0.decode(src)
    }
}

impl RequestCodec for Lines {
    fn decode_last(&mut self, buf: &mut BytesMut) -> Result<Option<String>, LinesCodecError> {
        if self.1 {
            self.0.decode_eof(buf)
        } else {
            Ok(None)
        }
    }
}

/// A [`Shout`] connection reading with `codec`, default settings.
fn shout_conn<C>(codec: C, now: Instant) -> Connection<Shout, C>
where
    C: RequestCodec<Item = String, Error = LinesCodecError>,
{
    Connection::new(Shout::new(1), codec, ConnConfig::default(), None, now)
}

#[test]
fn a_connection_with_half_a_line_is_never_idle() {
    let t0 = Instant::now();
    let mut conn = shout_conn(Lines(LinesCodec::new_with_max_length(64), false), t0);
    let mut pipe = MemoryStream::default();
    assert_eq!(settle(&mut conn, &mut pipe, t0), None);
    assert_eq!(conn.idle_since(), Some(t0), "idle since it was made");
    let t1 = t0 + Duration::from_secs(1);
    pipe.send(b"half");
    assert_eq!(settle(&mut conn, &mut pipe, t1), None);
    assert_eq!(conn.idle_since(), None, "half a line read");
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(settle(&mut conn, &mut pipe, t2), None);
    assert_eq!(conn.idle_since(), None, "still half a line, however long");
    let t3 = t2 + Duration::from_secs(1);
    pipe.send(b" line\n");
    assert_eq!(settle(&mut conn, &mut pipe, t3), None);
    assert_eq!(pipe.take_output(), b"HALF LINE\n");
    assert_eq!(conn.idle_since(), Some(t3), "idle since the line ended");
}

#[test]
fn the_last_line_without_its_newline_counts_at_the_end_of_the_stream() {
    let now = Instant::now();
    let mut conn = shout_conn(Lines(LinesCodec::new_with_max_length(64), true), now);
    let mut pipe = MemoryStream::default();
    pipe.send(b"one\ntwo");
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert_eq!(pipe.take_output(), b"ONE\n", "two may go on");
    pipe.eof = true;
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(pipe.take_output(), b"TWO\n");
    // Without decode_last, the same end drops it.
    let mut conn = shout_conn(Lines(LinesCodec::new_with_max_length(64), false), now);
    let mut pipe = MemoryStream::default();
    pipe.send(b"one\ntwo");
    pipe.eof = true;
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(pipe.take_output(), b"ONE\n");
}

#[test]
fn an_unbounded_codec_is_bounded_by_the_connection() {
    let now = Instant::now();
    let mut conn = Connection::new(
        Shout::new(1),
        Lines(LinesCodec::new(), false),
        ConnConfig::default().max_input(1000),
        None,
        now,
    );
    let mut pipe = MemoryStream::default();
    pipe.send(b"hello\n");
    pipe.send(&[b'a'; 2000]);
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(conn.ended(), Some(Ended::InputLimit));
}

/// A [`Shout`] server with `config` on a loopback port, on its own thread
/// until the sender is used; returns its address, the sender and the thread.
fn shout_server(
    config: kids_core::net::ServerConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tcp = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ids = Arc::new(AtomicU64::new(0));
    let server = std::thread::spawn(move || {
        rt.block_on(kids_core::net::serve_with(
            vec![kids_core::net::Listener::Tcp(tcp)],
            config,
            move || {
                let id = ids.fetch_add(1, Ordering::SeqCst);
                (
                    Shout::new(id),
                    Lines(LinesCodec::new_with_max_length(64), false),
                )
            },
            async {
                let _ = stopped.await;
            },
        ))
    });
    (addr, stop, server)
}

#[test]
fn a_line_protocol_runs_on_the_same_accept_loop() {
    let mut config = kids_core::net::ServerConfig::default();
    config.max_clients = Some(1);
    config.busy_reply = Bytes::from_static(b"ERR busy\n");
    let (addr, stop, server) = shout_server(config);
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    client.write_all(b"hello\nworld\n").expect("write");
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read");
    assert_eq!(line, "HELLO\n");
    line.clear();
    reader.read_line(&mut line).expect("read");
    assert_eq!(line, "WORLD\n");
    // A second client is over max_clients: it gets the protocol's refusal.
    let second = std::net::TcpStream::connect(addr).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut refused = String::new();
    BufReader::new(second)
        .read_line(&mut refused)
        .expect("read refusal");
    assert_eq!(refused, "ERR busy\n");
    // The codec's bound is the protocol's error.
    client.write_all(&[b'x'; 100]).expect("write");
    client.write_all(b"\n").expect("write");
    line.clear();
    reader.read_line(&mut line).expect("read");
    assert_eq!(line, "ERR line too long\n");
    line.clear();
    assert_eq!(reader.read_line(&mut line).expect("eof"), 0, "not closed");
    // A new client after that one left is served, and QUIT closes it.
    let mut third = std::net::TcpStream::connect(addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    third.write_all(b"again\nQUIT\nnot read\n").expect("write");
    let mut all = String::new();
    std::io::Read::read_to_string(&mut third, &mut all).expect("read");
    assert_eq!(all, "AGAIN\nBYE\n");
    stop.send(()).expect("stop");
    server.join().expect("server thread").expect("served");
}

/// Another RESP server on the shared command layer: its own `GREET` and
/// `LISTEN` (which puts it in the subscribed context), Redis's connection
/// commands and error texts from kids-core.
mod greeter {
    use std::sync::Arc;
    use std::time::Instant;

    use kids_core::resp::{self, Arg, Command, RespServer, RespState};
    use kids_core::{NLimits, Outbox, Request};

    #[derive(Debug, Clone, Copy)]
    pub(super) enum Own {
        Greet,
        Listen,
    }

    static OWN: &[Command<Own>] = &[
        Command {
            id: Some(Own::Greet),
            name: "greet",
            arity: 2,
            flags: &["fast"],
            acl: &["@fast"],
            summary: "Greets someone.",
            since: "1.0.0",
            group: "greeter",
            complexity: "O(1)",
            args: &[Arg::new("name", "string", false, false)],
            subcommands: &[],
        },
        Command {
            id: Some(Own::Listen),
            name: "listen",
            arity: 1,
            flags: &[],
            acl: &[],
            summary: "Waits for greetings.",
            since: "1.0.0",
            group: "greeter",
            complexity: "O(1)",
            args: &[],
            subcommands: &[],
        },
    ];

    pub(super) struct Greeter {
        pub(super) resp: RespState,
        listening: bool,
    }

    impl Greeter {
        pub(super) fn new() -> Self {
            Self {
                resp: RespState::new(Arc::new(Outbox::new(7)), NLimits::default()),
                listening: false,
            }
        }
    }

    impl RespServer for Greeter {
        type Command = Own;
        fn commands(&self) -> &'static [Command<Own>] {
            OWN
        }
        fn resp(&mut self) -> &mut RespState {
            &mut self.resp
        }
        fn resp_ref(&self) -> &RespState {
            &self.resp
        }
        fn run(&mut self, command: Own, args: Request, _: Instant) {
            match command {
                Own::Greet => {
                    let mut line = b"hello ".to_vec();
                    line.extend_from_slice(&args[1]);
                    self.resp.writer().simple(&line);
                }
                Own::Listen => {
                    self.listening = true;
                    self.resp.writer().simple(b"OK");
                }
            }
        }
        fn subscriptions(&self) -> usize {
            usize::from(self.listening)
        }
        fn end_subscriptions(&mut self) {
            self.listening = false;
        }
        fn server_name(&self) -> &'static str {
            "greeter"
        }
    }

    pub(super) fn run(g: &mut Greeter, args: &[&str], now: Instant) -> (kids_core::Flow, String) {
        let req: Request = args
            .iter()
            .map(|a| bytes::Bytes::from(a.to_string()))
            .collect();
        let flow = resp::dispatch(g, req, now);
        resp::flush(g, now);
        let mut buf = bytes::BytesMut::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let std::task::Poll::Ready(Ok(n)) =
            g.resp.outbox().poll_drain(&mut cx, &mut buf, usize::MAX)
        {
            g.resp.outbox().consumed(n, &NLimits::default());
        }
        (flow, String::from_utf8(buf.to_vec()).expect("utf8"))
    }
}

#[test]
fn another_resp_server_adds_its_commands_to_the_connection_commands() {
    use greeter::{Greeter, run};
    use kids_core::resp::CONNECTION_COMMANDS;
    let now = Instant::now();
    let mut g = Greeter::new();
    assert_eq!(run(&mut g, &["GREET", "bob"], now).1, "+hello bob\r\n");
    assert_eq!(run(&mut g, &["ping"], now).1, "+PONG\r\n");
    assert_eq!(run(&mut g, &["ECHO", "e"], now).1, "$1\r\ne\r\n");
    assert_eq!(
        run(&mut g, &["COMMAND", "COUNT"], now).1,
        format!(":{}\r\n", CONNECTION_COMMANDS.len() + 2)
    );
    let docs = run(&mut g, &["COMMAND", "DOCS", "greet"], now).1;
    assert!(docs.starts_with("*2\r\n$5\r\ngreet\r\n"), "{docs}");
    assert!(docs.contains("Greets someone."), "{docs}");
    assert_eq!(
        run(&mut g, &["GREET"], now).1,
        "-ERR wrong number of arguments for 'greet' command\r\n"
    );
    assert_eq!(
        run(&mut g, &["NOPE", "a"], now).1,
        "-ERR unknown command 'NOPE', with args beginning with: 'a' \r\n"
    );
    assert_eq!(
        run(&mut g, &["CLIENT", "nope"], now).1,
        "-ERR unknown subcommand 'nope'. Try CLIENT HELP.\r\n"
    );
    assert_eq!(run(&mut g, &["CLIENT", "SETNAME", "g1"], now).1, "+OK\r\n");
    assert_eq!(run(&mut g, &["CLIENT", "GETNAME"], now).1, "$2\r\ng1\r\n");
    let hello = run(&mut g, &["HELLO", "3"], now).1;
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$7\r\ngreeter\r\n"),
        "{hello}"
    );
    assert_eq!(
        run(&mut g, &["HELLO", "2"], now).1.chars().next(),
        Some('*')
    );
    // Its subscribed context is Redis's.
    assert_eq!(run(&mut g, &["LISTEN"], now).1, "+OK\r\n");
    assert_eq!(
        run(&mut g, &["GREET", "x"], now).1,
        "-ERR Can't execute 'greet': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    assert_eq!(
        run(&mut g, &["PING"], now).1,
        "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    );
    assert_eq!(run(&mut g, &["RESET"], now).1, "+RESET\r\n");
    assert_eq!(run(&mut g, &["GREET", "x"], now).1, "+hello x\r\n");
    let (flow, out) = run(&mut g, &["QUIT"], now);
    assert_eq!((flow, out.as_str()), (kids_core::Flow::Close, "+OK\r\n"));
    assert_eq!(run(&mut g, &["PING"], now).0, kids_core::Flow::Close);
}

/// A line protocol that also writes by itself: `COUNT n` starts `n` lines
/// made by [`Protocol::poll_produce`]; `WAIT ms` holds its answer until a
/// deadline ([`Protocol::deadline`]).
struct Ticker {
    shout: Shout,
    left: u32,
    made: u32,
    wait_until: Option<Instant>,
}

impl Protocol for Ticker {
    type Request = String;
    type Error = LinesCodecError;

    fn handle(&mut self, line: String, now: Instant) -> Flow {
        if let Some(n) = line.strip_prefix("COUNT ") {
            self.left = n.parse().unwrap_or(0);
            return Flow::Continue;
        }
        if let Some(ms) = line.strip_prefix("WAIT ") {
            self.wait_until = Some(now + Duration::from_millis(ms.parse().unwrap_or(0)));
            return Flow::Wait;
        }
        self.shout.handle(line, now)
    }
    fn decode_error(&mut self, e: LinesCodecError, now: Instant) -> Flow {
        self.shout.decode_error(e, now)
    }
    fn flush(&mut self, now: Instant) {
        self.shout.flush(now);
    }
    fn outbox(&self) -> &Outbox {
        self.shout.outbox()
    }
    fn nlimits(&self) -> &NLimits {
        self.shout.nlimits()
    }
    fn poll_release(&mut self, _: &mut Context<'_>, now: Instant) -> Poll<Flow> {
        match self.wait_until {
            Some(at) if now < at => Poll::Pending,
            Some(_) => {
                self.wait_until = None;
                self.shout.out.extend_from_slice(b"TIMEOUT\n");
                self.shout.flush(now);
                Poll::Ready(Flow::Continue)
            }
            None => Poll::Ready(Flow::Continue),
        }
    }
    fn poll_produce(&mut self, _: &mut Context<'_>, now: Instant) -> Poll<()> {
        if self.left == 0 {
            return Poll::Pending;
        }
        self.left -= 1;
        self.made += 1;
        self.shout
            .out
            .extend_from_slice(format!("tick {:05}\n", self.made).as_bytes());
        self.shout.flush(now);
        Poll::Ready(())
    }
    fn deadline(&self) -> Option<Instant> {
        self.wait_until
    }
    fn watches_hang_up(&self) -> bool {
        self.wait_until.is_some()
    }
    fn hang_up(&mut self, now: Instant) {
        // give the wait up at once
        self.wait_until = Some(now);
    }
}

fn ticker(config: ConnConfig, now: Instant) -> Connection<Ticker, Lines> {
    Connection::new(
        Ticker {
            shout: Shout::new(9),
            left: 0,
            made: 0,
            wait_until: None,
        },
        Lines(LinesCodec::new_with_max_length(100), false),
        config,
        None,
        now,
    )
}

#[test]
fn output_a_protocol_makes_by_itself_stops_at_the_pending_output_bound() {
    let now = Instant::now();
    let mut conn = ticker(ConnConfig::default().max_pending_output(100), now);
    let mut pipe = MemoryStream::blocked();
    pipe.send(b"COUNT 1000\n");
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    // Lines of 11 bytes: made until 100 bytes wait, not one more pass.
    let pending = conn.protocol().outbox().pending();
    assert!((100..111).contains(&pending), "{pending}");
    assert!(conn.protocol().made < 20, "{}", conn.protocol().made);
    // The client reads: production goes on to the end, in order.
    pipe.blocked = false;
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    let out = String::from_utf8(pipe.take_output()).expect("utf8");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!((lines[0], lines[999]), ("tick 00001", "tick 01000"));
}

#[test]
fn a_protocol_deadline_wakes_a_waiting_request_without_closing() {
    let now = Instant::now();
    let config = ConnConfig::default().idle_timeout(Some(Duration::from_secs(60)));
    let mut conn = ticker(config, now);
    let mut pipe = MemoryStream::default();
    pipe.send(b"WAIT 500\nafter\n");
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert!(pipe.take_output().is_empty(), "held until the deadline");
    assert_eq!(conn.poll_timeout(), Some(now + Duration::from_millis(500)));
    let later = now + Duration::from_millis(500);
    assert_eq!(settle(&mut conn, &mut pipe, later), None);
    assert_eq!(pipe.take_output(), b"TIMEOUT\nAFTER\n");
    assert_eq!(
        conn.ended(),
        None,
        "a protocol deadline is not an idle timeout"
    );
    assert_eq!(conn.poll_timeout(), Some(later + Duration::from_secs(60)));
}

#[test]
fn a_client_hanging_up_while_a_request_waits_is_noticed() {
    let now = Instant::now();
    let mut conn = ticker(ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(b"WAIT 60000\nafter\n");
    assert_eq!(settle(&mut conn, &mut pipe, now), None);
    assert!(pipe.take_output().is_empty(), "held");
    // Read ahead of the wait only to see the end: nothing decoded yet.
    assert!(pipe.input.is_empty());
    pipe.eof = true;
    // The wait is given up, what came before the end is answered, and
    // the connection closes, long before the wait's deadline.
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(pipe.take_output(), b"TIMEOUT\nAFTER\n");
}

/// A router whose publishes are cut into slices of `steps`, and a session
/// subscribed to 1,000 patterns `*xN*` that every publish must visit (so a
/// publish to `ax999b` matches `*x9*`, `*x99*` and `*x999*`; about 8,000
/// steps in all).
fn sliced_router(now: Instant, steps: usize) -> (Router, Session) {
    let router = Router::new(RouterConfig::default().slice_steps(steps), now);
    let mut sub = Session::new(&router);
    let mut args: Vec<Bytes> = vec!["PSUBSCRIBE".into()];
    args.extend((0..1000).map(|i| Bytes::from(format!("*x{i}*"))));
    sub.handle(args, now);
    (router, sub)
}

/// A publish matched against many patterns is cut into slices: between
/// them the connection yields, so the runtime serves the others, and the
/// reply and later requests wait for the last slice, in order.
#[test]
fn a_long_publish_yields_between_slices_and_answers_in_order() {
    let now = Instant::now();
    let (router, _sub) = sliced_router(now, 100);
    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(&[cmd(&["PUBLISH", "ax999b", "m"]), cmd(&["PING"])].concat());
    let mut cx = Context::from_waker(Waker::noop());
    let mut yields = 0;
    loop {
        match conn.poll(&mut cx, &mut pipe, now) {
            Poll::Ready(Ok(Step::Yield)) => {
                yields += 1;
                // Nothing is answered before the publish is done.
                assert!(pipe.take_output().is_empty());
            }
            Poll::Pending => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(yields >= 5, "{yields} yields");
    // *x9*, *x99*, *x999*: the reply after the last slice, then PONG.
    assert_eq!(pipe.take_output(), b":3\r\n+PONG\r\n");
}

/// [`shout_server`] for two clients that evicts idle ones (`ERR busy` to one refused).
fn evicting_shout_server() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let mut config = kids_core::net::ServerConfig::default();
    config.max_clients = Some(2);
    config.evict_idle = true;
    config.busy_reply = Bytes::from_static(b"ERR busy\n");
    shout_server(config)
}

#[test]
fn when_full_the_client_idle_longest_makes_room_if_evict_idle() {
    let (addr, stop, server) = evicting_shout_server();
    let connect = |says: &[u8]| {
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(says).expect("write");
        let mut reader = BufReader::new(c.try_clone().expect("clone"));
        let mut line = String::new();
        if says.ends_with(b"\n") {
            reader.read_line(&mut line).expect("read");
        }
        (c, reader, line)
    };
    let (_old, mut old_reader, line) = connect(b"old\n");
    assert_eq!(line, "OLD\n");
    std::thread::sleep(Duration::from_millis(20));
    let (_newer, mut newer_reader, line) = connect(b"newer\n");
    assert_eq!(line, "NEWER\n");
    // Full: the new client is served, and the one idle longest is closed.
    let (mut third, _, line) = connect(b"third\n");
    assert_eq!(line, "THIRD\n");
    let mut rest = String::new();
    assert_eq!(old_reader.read_line(&mut rest).expect("eof"), 0, "{rest:?}");
    // Both left are busy (each holds half a line): a fourth is refused.
    let mut newer = newer_reader.get_ref().try_clone().expect("clone");
    newer.write_all(b"also half").expect("write");
    third.write_all(b"half").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let (_fourth, mut fourth_reader, _) = connect(b"");
    let mut line = String::new();
    fourth_reader.read_line(&mut line).expect("read refusal");
    assert_eq!(line, "ERR busy\n");
    // The busy ones were left alone.
    newer.write_all(b"\n").expect("write");
    line.clear();
    newer_reader.read_line(&mut line).expect("read");
    assert_eq!(line, "ALSO HALF\n");
    stop.send(()).expect("stop");
    server.join().expect("server thread").expect("served");
}

/// The client idle longest sent half a line just before a new client came
/// to a full server: what reached its socket counts, so it is busy, keeps
/// its half line and is not closed; the next idle one makes room.
#[test]
fn a_client_that_just_sent_half_a_line_is_not_evicted() {
    let (addr, stop, server) = evicting_shout_server();
    let connect = || {
        let c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reader = BufReader::new(c.try_clone().expect("clone"));
        (c, reader)
    };
    let say = |c: &mut std::net::TcpStream, r: &mut BufReader<std::net::TcpStream>, s: &str| {
        c.write_all(s.as_bytes()).expect("write");
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        line
    };
    let (mut old, mut old_reader) = connect();
    assert_eq!(say(&mut old, &mut old_reader, "old\n"), "OLD\n");
    std::thread::sleep(Duration::from_millis(20));
    let (mut napper, mut napper_reader) = connect();
    assert_eq!(say(&mut napper, &mut napper_reader, "hi\n"), "HI\n");
    // While the server naps, a new client connects and then the one idle
    // longest sends half a line: the server sees both at once.
    napper.write_all(b"NAP\n").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    let (mut new, mut new_reader) = connect();
    old.write_all(b"half").expect("write");
    // The napper, idle since, made room; the old one kept its half line.
    assert_eq!(say(&mut new, &mut new_reader, "new\n"), "NEW\n");
    assert_eq!(say(&mut old, &mut old_reader, " line\n"), "HALF LINE\n");
    let mut rest = String::new();
    napper_reader.read_line(&mut rest).expect("read");
    assert_eq!(rest, "NAP\n");
    rest.clear();
    assert_eq!(
        napper_reader.read_line(&mut rest).expect("eof"),
        0,
        "{rest:?}"
    );
    stop.send(()).expect("stop");
    server.join().expect("server thread").expect("served");
}

/// Requests behind a publish that is still routing are handled, in order,
/// even when the client closed its side in the same read; a protocol error
/// among them comes after the replies before it.
#[test]
fn requests_behind_a_sliced_publish_survive_the_clients_end_and_errors_wait() {
    let now = Instant::now();
    let (router, _sub) = sliced_router(now, 100);
    let mut other = Session::new(&router);
    other.handle(vec!["SUBSCRIBE".into(), "other".into()], now);
    other.flush(now);
    other.take_output();

    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(
        &[
            cmd(&["PUBLISH", "ax999b", "m"]),
            cmd(&["PING"]),
            cmd(&["PUBLISH", "other", "not lost"]),
        ]
        .concat(),
    );
    pipe.eof = true;
    assert_eq!(settle(&mut conn, &mut pipe, now), Some(Step::Closed));
    assert_eq!(pipe.take_output(), b":3\r\n+PONG\r\n:1\r\n");
    let got = other.take_output();
    assert!(
        got.windows(8).any(|w| w == b"not lost"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    let mut conn = kids_conn(&router, ConnConfig::default(), now);
    let mut pipe = MemoryStream::default();
    pipe.send(&[cmd(&["PUBLISH", "ax999b", "m"]), b"*1\r\n!bad\r\n".to_vec()].concat());
    settle(&mut conn, &mut pipe, now);
    let out = String::from_utf8_lossy(&pipe.take_output()).into_owned();
    assert!(out.starts_with(":3\r\n-ERR Protocol error"), "{out}");
}

/// A session dropped while its publish is still routing finishes a small
/// one (every pattern gets the message), but spends no more than a bounded
/// number of slices on a large one.
#[test]
fn a_dropped_publisher_finishes_a_short_publish_but_not_an_endless_one() {
    let now = Instant::now();
    // About 8 slices: within what a dropped session still spends.
    let (router, mut sub) = sliced_router(now, 1000);
    sub.flush(now);
    sub.take_output();
    let mut publisher = Session::new(&router);
    publisher.handle(vec!["PUBLISH".into(), "ax999b".into(), "m".into()], now);
    assert!(
        Protocol::is_holding(&publisher),
        "the publish was not sliced"
    );
    drop(publisher);
    let got = sub.take_output();
    assert_eq!(
        String::from_utf8_lossy(&got).matches("pmessage").count(),
        3,
        "{}",
        String::from_utf8_lossy(&got)
    );
    // One step per slice: 1,000 patterns cannot be done in 16 slices.
    let tiny = Router::new(RouterConfig::default().slice_steps(1), now);
    let mut last = Session::new(&tiny);
    last.handle(vec!["PSUBSCRIBE".into(), "*x999*".into()], now);
    let mut others = Session::new(&tiny);
    let mut args: Vec<Bytes> = vec!["PSUBSCRIBE".into()];
    args.extend((0..999).map(|i| Bytes::from(format!("*y{i}*"))));
    others.handle(args, now);
    last.flush(now);
    last.take_output();
    let mut publisher = Session::new(&tiny);
    publisher.handle(vec!["PUBLISH".into(), "ax999b".into(), "m".into()], now);
    drop(publisher);
    assert_eq!(
        tiny.stats(now).messages_out,
        0,
        "the publish went on to the end"
    );
}

/// A client that keeps sending is read one batch per pass: the connection
/// yields after a whole batch, so the others run before it reads more.
#[test]
fn a_whole_read_batch_yields_before_the_next() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let mut conn = kids_conn(&router, ConnConfig::default().read_batch(64), now);
    let mut pipe = MemoryStream::default();
    pipe.send(&cmd(&["PING"]).repeat(100)); // 1,400 bytes: over a batch
    let mut cx = Context::from_waker(Waker::noop());
    // The batch is handled and answered; the stream may hold more, so the
    // connection yields rather than reading on.
    assert!(matches!(
        conn.poll(&mut cx, &mut pipe, now),
        Poll::Ready(Ok(Step::Yield))
    ));
    assert_eq!(pipe.take_output(), b"+PONG\r\n".repeat(100));
    // Polled again, it reads what came meanwhile.
    pipe.send(&cmd(&["PING"]));
    assert!(conn.poll(&mut cx, &mut pipe, now).is_pending());
    assert_eq!(pipe.take_output(), b"+PONG\r\n");
}

/// The bytes a request holds in decoded arguments are charged to the
/// server's budget with the buffers, and given back when it completes.
#[test]
fn arguments_a_request_holds_are_charged_to_the_budget() {
    let now = Instant::now();
    let router = Router::new(RouterConfig::default(), now);
    let budget = Arc::new(Budget::new(1 << 30));
    let mut conn = Connection::new(
        Session::new(&router),
        RequestDecoder::default(),
        ConnConfig::default(),
        Some(Arc::clone(&budget)),
        now,
    );
    let mut pipe = MemoryStream::default();
    // 10,000 of 20,000 empty arguments: no byte of theirs stays buffered.
    let mut wire = b"*20000\r\n".to_vec();
    wire.extend(b"$0\r\n\r\n".repeat(10_000));
    pipe.send(&wire);
    settle(&mut conn, &mut pipe, now);
    assert!(
        budget.used() >= 10_000 * kids_core::ARG_COST as u64,
        "charged {}",
        budget.used()
    );
    pipe.send(&b"$0\r\n\r\n".repeat(10_000));
    settle(&mut conn, &mut pipe, now);
    // Complete: handled (an unknown command), answered, and nothing charged.
    assert!(pipe.take_output().starts_with(b"-ERR unknown command"));
    assert_eq!(budget.used(), 0);
}

/// A connection its protocol holds back (a publish still routing) is not
/// the client's fault: the half-sent request timeout does not close it.
#[test]
fn a_connection_held_by_its_protocol_is_not_timed_out_as_slow() {
    let now = Instant::now();
    let (router, _sub) = sliced_router(now, 100);
    let config = ConnConfig::default().request_timeout(Some(Duration::from_secs(1)));
    let mut conn = kids_conn(&router, config, now);
    let mut pipe = MemoryStream::default();
    // A publish to slice, then half a request.
    pipe.send(&[cmd(&["PUBLISH", "ax999b", "m"]), b"*1\r\n$4\r\nPI".to_vec()].concat());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        conn.poll(&mut cx, &mut pipe, now),
        Poll::Ready(Ok(Step::Yield))
    ));
    let later = now + Duration::from_secs(5);
    while let Poll::Ready(Ok(Step::Yield)) = conn.poll(&mut cx, &mut pipe, later) {}
    assert_eq!(conn.ended(), None, "closed while the server held it");
    assert_eq!(pipe.take_output(), b":3\r\n");
    // Now the half request is the client's: it is timed out from here.
    pipe.send(b"NG\r\n");
    settle(&mut conn, &mut pipe, later);
    assert_eq!(pipe.take_output(), b"+PONG\r\n");
}
