//! The engine against beanstalkd: the same scripted sessions (raw request
//! bytes, several connections, time passing) sent to a real beanstalkd and
//! to a [`Target`] of ours, replies compared byte for byte after masking
//! only what cannot agree (pid, uptime, rusage, host names, instance id).
//!
//! A [`Target`] is anything that takes request bytes on a connection and
//! gives reply bytes back: [`EngineTarget`] drives an `Engine` directly
//! through the server codec on a simulated clock; the served engine plugs
//! in the same way over TCP ([`TcpTarget`]).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use miller_core::engine::{ClientId, Engine, EngineConfig, Handled, PutRefused};
use miller_core::proto::{ClientCodec, Incoming, Response, ServerCodec};
use miller_core::store::StoreConfig;
use test_support::Beanstalkd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::served::Served;

/// Something that speaks beanstalk: connections, bytes in, replies out.
pub(super) trait Target {
    /// Opens connection number `conn` (numbered from 0 in order).
    fn connect(&mut self) -> impl Future<Output = ()>;
    /// Sends `bytes` on `conn` and returns the bytes of the next `replies`
    /// whole replies on it (those of earlier parked reserves first).
    fn send(&mut self, conn: usize, bytes: &[u8], replies: usize) -> impl Future<Output = Vec<u8>>;
    /// Lets `d` pass.
    fn pass(&mut self, d: Duration) -> impl Future<Output = ()>;
    /// Closes `conn`.
    fn close(&mut self, conn: usize) -> impl Future<Output = ()>;
    /// The bytes `conn` still gets until the server closes it (after `quit`).
    fn drain(&mut self, conn: usize) -> impl Future<Output = Vec<u8>>;
}

/// How many whole replies `buf` holds, and the length they take.
fn whole_replies(buf: &[u8], want: usize) -> Option<usize> {
    let mut codec = ClientCodec::new();
    let mut b = BytesMut::from(buf);
    let total = b.len();
    for _ in 0..want {
        codec.decode(&mut b).ok()??;
    }
    Some(total - b.len())
}

/// A real server over TCP (beanstalkd, or the served engine).
pub(super) struct TcpTarget {
    port: u16,
    conns: Vec<Option<(TcpStream, Vec<u8>)>>,
}

impl TcpTarget {
    /// A target on 127.0.0.1:`port`.
    pub(super) fn new(port: u16) -> Self {
        Self {
            port,
            conns: Vec::new(),
        }
    }
}

impl Target for TcpTarget {
    async fn connect(&mut self) {
        let s = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        self.conns.push(Some((s, Vec::new())));
    }

    async fn send(&mut self, conn: usize, bytes: &[u8], replies: usize) -> Vec<u8> {
        let (s, buf) = self.conns[conn].as_mut().unwrap();
        s.write_all(bytes).await.unwrap();
        if replies == 0 {
            // let the server take the request in before the next step
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read = async {
            loop {
                if let Some(n) = whole_replies(buf, replies) {
                    return buf.drain(..n).collect::<Vec<u8>>();
                }
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection {conn} closed");
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("replies within 10 s")
    }

    async fn pass(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    async fn close(&mut self, conn: usize) {
        self.conns[conn] = None;
        // let the server see the close before the next step
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    async fn drain(&mut self, conn: usize) -> Vec<u8> {
        let (mut s, mut buf) = self.conns[conn].take().unwrap();
        let read = async {
            let mut chunk = [0u8; 65536];
            // a reset after the server's close ends it as well as EOF
            while let Ok(n @ 1..) = s.read(&mut chunk).await {
                buf.extend_from_slice(&chunk[..n]);
            }
            buf
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server closes within 10 s")
    }
}

struct EngineConn {
    client: ClientId,
    codec: ServerCodec,
    input: BytesMut,
    output: Vec<u8>,
    parked: bool,
    /// The engine closed it (`quit`): replies already given stay readable.
    closed: bool,
}

/// `Engine` driven directly through `ServerCodec`, on a simulated clock
/// that moves 1 ms per send and 10 µs per request (as time passes on a
/// real server) and by `pass`.
pub(super) struct EngineTarget {
    engine: Engine,
    now: Instant,
    conns: Vec<Option<EngineConn>>,
}

impl Default for EngineTarget {
    fn default() -> Self {
        Self {
            engine: Engine::new(EngineConfig::default()),
            now: Instant::now(),
            conns: Vec::new(),
        }
    }
}

impl EngineTarget {
    /// An engine that has seen one connection come and go, as a reference
    /// server started by test-support has (it connects once to see it up),
    /// so `total-connections` agrees.
    pub(super) fn after_probe() -> Self {
        let mut target = Self::default();
        let probe = target.engine.connect(target.now);
        target.engine.disconnect(probe, target.now);
        target
    }

    fn pump(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            if c.parked || c.closed {
                return;
            }
            let Ok(Some(incoming)) = c.codec.decode(&mut c.input) else {
                return;
            };
            let client = c.client;
            // time passes between requests on a real server too
            self.now += Duration::from_micros(10);
            let reply = match incoming {
                Incoming::Refused(Response::JobTooBig) => {
                    Some(self.engine.put_refused(client, PutRefused::TooBig))
                }
                Incoming::Refused(Response::ExpectedCrlf) => {
                    Some(self.engine.put_refused(client, PutRefused::ExpectedCrlf))
                }
                Incoming::Refused(reply) => Some(reply),
                Incoming::Request(request) => match self.engine.handle(client, request, self.now) {
                    Handled::Reply(reply) => Some(reply),
                    Handled::Wait => {
                        c.parked = true;
                        None
                    }
                    Handled::Close => {
                        self.engine.disconnect(client, self.now);
                        c.closed = true;
                        c.input.clear();
                        None
                    }
                },
            };
            if let (Some(reply), Some(c)) = (reply, self.conns[i].as_mut()) {
                let mut out = BytesMut::new();
                reply.encode(&mut out);
                c.output.extend_from_slice(&out);
            }
            self.wake();
        }
    }

    fn wake(&mut self) {
        let woken: Vec<ClientId> = self.engine.take_woken().collect();
        for client in woken {
            let Some(i) = self
                .conns
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.client == client && !c.closed))
            else {
                continue;
            };
            if let Some(reply) = self.engine.poll_reply(client) {
                let c = self.conns[i].as_mut().unwrap();
                let mut out = BytesMut::new();
                reply.encode(&mut out);
                c.output.extend_from_slice(&out);
                c.parked = false;
                self.pump(i);
            }
        }
    }
}

impl Target for EngineTarget {
    async fn connect(&mut self) {
        let client = self.engine.connect(self.now);
        self.conns.push(Some(EngineConn {
            client,
            codec: ServerCodec::new(),
            input: BytesMut::new(),
            output: Vec::new(),
            parked: false,
            closed: false,
        }));
    }

    async fn send(&mut self, conn: usize, bytes: &[u8], replies: usize) -> Vec<u8> {
        self.now += Duration::from_millis(1);
        self.engine.tick(self.now);
        self.wake();
        self.conns[conn]
            .as_mut()
            .unwrap()
            .input
            .extend_from_slice(bytes);
        self.pump(conn);
        let c = self.conns[conn].as_mut().unwrap();
        let n = whole_replies(&c.output, replies).unwrap_or_else(|| {
            panic!(
                "engine: {replies} replies wanted on {conn}, have {:?}",
                String::from_utf8_lossy(&c.output)
            )
        });
        c.output.drain(..n).collect()
    }

    async fn pass(&mut self, d: Duration) {
        // Step through each deadline, as a server's timer would.
        let end = self.now + d;
        while let Some(at) = self.engine.next_deadline().filter(|&at| at <= end) {
            self.now = self.now.max(at);
            self.engine.tick(self.now);
            self.wake();
        }
        self.now = end;
        self.engine.tick(self.now);
        self.wake();
    }

    async fn close(&mut self, conn: usize) {
        if let Some(c) = self.conns[conn].take()
            && !c.closed
        {
            self.engine.disconnect(c.client, self.now);
            self.wake();
        }
    }

    async fn drain(&mut self, conn: usize) -> Vec<u8> {
        let c = self.conns[conn].take().unwrap();
        assert!(c.closed, "engine: connection {conn} still open");
        c.output
    }
}

/// One step of a scripted session.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// Open the next connection.
    Connect,
    /// Send bytes on a connection and read this many replies.
    Send(usize, Vec<u8>, usize),
    /// Let time pass.
    Pass(Duration),
    /// Close a connection.
    Close(usize),
    /// Read what a connection gets until the server closes it.
    Drain(usize),
}

fn send(conn: usize, text: &str, replies: usize) -> Step {
    Step::Send(conn, text.as_bytes().to_vec(), replies)
}

/// Masks the stats values that cannot agree between two servers.
fn mask(replies: &[u8]) -> String {
    const MASKED: &[&str] = &[
        "pid",
        "rusage-utime",
        "rusage-stime",
        "uptime",
        "id",
        "hostname",
        "os",
        "platform",
    ];
    let mut codec = ClientCodec::new();
    let mut buf = BytesMut::from(replies);
    let mut out = BytesMut::new();
    while let Ok(Some(reply)) = codec.decode(&mut buf) {
        let reply = match reply {
            Response::Ok(body) if body.starts_with(b"---\ncurrent-jobs-urgent") => {
                let text = String::from_utf8_lossy(&body)
                    .lines()
                    .map(|line| match line.split_once(": ") {
                        Some((k, _)) if MASKED.contains(&k) => format!("{k}: *\n"),
                        _ => format!("{line}\n"),
                    })
                    .collect::<String>();
                Response::Ok(text.into())
            }
            other => other,
        };
        reply.encode(&mut out);
    }
    out.extend_from_slice(&buf);
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `script` against `target`: each step's replies, masked.
pub(super) async fn run(target: &mut impl Target, script: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for step in script {
        match step {
            Step::Connect => target.connect().await,
            Step::Send(conn, bytes, replies) => {
                out.push(mask(&target.send(*conn, bytes, *replies).await))
            }
            Step::Pass(d) => target.pass(*d).await,
            Step::Close(conn) => target.close(*conn).await,
            Step::Drain(conn) => out.push(mask(&target.drain(*conn).await)),
        }
    }
    out
}

/// Compares `ours` with beanstalkd on `script`, step by step.
pub(super) async fn compare(ours: &mut impl Target, reference: &mut impl Target, script: &[Step]) {
    // both at once: each on its own server, only real time is shared
    let (theirs, mine) = tokio::join!(run(reference, script), run(ours, script));
    let sends = script
        .iter()
        .filter(|s| matches!(s, Step::Send(..) | Step::Drain(_)));
    for ((step, a), b) in sends.zip(&theirs).zip(&mine) {
        if a != b {
            let lines = |s: &str| s.split_inclusive('\n').map(short).collect::<Vec<_>>();
            let (a, b) = (lines(a), lines(b));
            let first = a.iter().zip(&b).position(|(x, y)| x != y);
            let first = first.unwrap_or(a.len().min(b.len()));
            panic!(
                "replies differ after {}\n from reply line {first}:\n beanstalkd {:?}\n ours       {:?}",
                describe(step),
                &a[first..],
                &b[first..],
            );
        }
    }
}

/// `text`, cut to its first and last 60 characters when longer.
fn short(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 140 {
        return text.to_owned();
    }
    let head: String = chars[..60].iter().collect();
    let tail: String = chars[chars.len() - 60..].iter().collect();
    format!("{head}…({} chars)…{tail}", chars.len())
}

/// A step, its bytes as text.
fn describe(step: &Step) -> String {
    match step {
        Step::Send(conn, bytes, replies) => format!(
            "send on {conn} ({replies} replies): {:?}",
            short(&String::from_utf8_lossy(bytes))
        ),
        other => format!("{other:?}"),
    }
}

/// The sessions: every command, every error reply, a 65,535-byte body,
/// TTR expiry, DEADLINE_SOON, delays, bury/kick, pause-tube, stats.
pub(super) fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    let big = vec![b'b'; 65_535];
    let mut put_big = b"put 1 0 10 65535\r\n".to_vec();
    put_big.extend_from_slice(&big);
    put_big.extend_from_slice(b"\r\n");
    let mut too_big = b"put 1 0 10 65536\r\n".to_vec();
    too_big.extend_from_slice(&[b'x'; 65_536]);
    too_big.extend_from_slice(b"\r\n");
    vec![
        (
            "commands and error replies",
            vec![
                Step::Connect,
                Step::Connect,
                send(0, "put 5 0 10 3\r\nabc\r\n", 1),
                send(0, "put 1 0 10 1\r\nx\r\n", 1),
                Step::Send(0, put_big, 1),
                Step::Send(0, too_big, 1),
                send(0, "put 1 0 10 2\r\nabcd", 1),
                send(0, "put 0 0 10 0\r\n\r\n", 1),
                send(0, "stats-job 1\r\n", 1),
                send(0, "peek 3\r\n", 1),
                send(0, "peek-ready\r\npeek-delayed\r\npeek-buried\r\n", 3),
                send(0, "use other\r\nlist-tube-used\r\nlist-tubes\r\n", 3),
                send(
                    0,
                    "watch other\r\nwatch x\r\nlist-tubes-watched\r\nignore default\r\nlist-tubes-watched\r\n",
                    5,
                ),
                send(0, "ignore x\r\nignore other\r\nignore nope\r\n", 3),
                send(1, "reserve\r\n", 1),
                send(1, "reserve-with-timeout 0\r\n", 1),
                send(0, "release 2 1 0\r\ntouch 2\r\nbury 2 1\r\ndelete 2\r\n", 4),
                send(1, "touch 2\r\nrelease 2 9 0\r\nreserve\r\nbury 2 7\r\n", 4),
                send(
                    1,
                    "peek-buried\r\nuse default\r\npeek-buried\r\nkick 1\r\nkick 1\r\n",
                    5,
                ),
                send(1, "reserve-job 2\r\nreserve-job 99\r\nreserve-job 2\r\n", 3),
                send(0, "reserve-job 2\r\nkick-job 2\r\nkick-job 1\r\n", 3),
                send(1, "delete 2\r\ndelete 2\r\n", 2),
                send(
                    0,
                    "stats-tube default\r\nstats-tube nope\r\nstats-tube -bad\r\n",
                    3,
                ),
                send(0, "pause-tube nope 1\r\nbogus\r\nput\r\nuse -x\r\n", 4),
                send(0, "reserve-with-timeout 0\r\n", 1),
                send(1, "stats\r\n", 1),
                send(0, "quit\r\n", 0),
                Step::Close(0),
                send(1, "list-tubes\r\nstats\r\n", 2),
            ],
        ),
        (
            "delays, TTR expiry, DEADLINE_SOON, pause-tube, waiting clients",
            vec![
                Step::Connect,
                Step::Connect,
                Step::Connect,
                send(0, "put 1 1 1 1\r\nd\r\n", 1),
                send(0, "stats-job 1\r\npeek-delayed\r\n", 2),
                send(1, "reserve-with-timeout 0\r\n", 1),
                send(1, "reserve-with-timeout 3\r\n", 0),
                Step::Pass(Duration::from_millis(1300)),
                send(1, "", 1),
                send(1, "stats-job 1\r\n", 1),
                send(1, "reserve-with-timeout 5\r\n", 0),
                Step::Pass(Duration::from_millis(100)),
                send(1, "", 1),
                send(1, "stats-job 1\r\nreserve\r\n", 2),
                Step::Pass(Duration::from_millis(1300)),
                // beanstalkd 1.12 loses the TTR timer of an idle connection
                // (its epoll wakes a little early and drops it from the
                // heap); any reply re-arms it. Ours expires on time: the
                // holder speaks first so that both have expired the job.
                send(1, "list-tube-used\r\n", 1),
                Step::Pass(Duration::from_millis(50)),
                send(0, "stats-job 1\r\nstats\r\n", 2),
                send(0, "put 3 0 2 1\r\nt\r\n", 1),
                send(2, "watch default\r\nreserve\r\n", 2),
                send(2, "reserve\r\n", 1),
                // apart: a served engine handles requests read together at
                // one instant, so `pause-time-left` would still be 1 after
                // the pause-tube before them (beanstalkd: 0, its clock moved)
                send(0, "pause-tube default 1\r\n", 1),
                send(0, "stats-tube default\r\n", 1),
                send(2, "reserve-with-timeout 5\r\n", 0),
                send(0, "put 0 0 5 1\r\np\r\n", 1),
                Step::Pass(Duration::from_millis(1300)),
                send(2, "", 1),
                send(2, "list-tube-used\r\n", 1),
                Step::Pass(Duration::from_millis(50)),
                send(0, "stats-tube default\r\n", 1),
                send(1, "reserve-with-timeout 1\r\n", 0),
                Step::Close(2),
                send(1, "", 1),
                send(1, "stats\r\n", 1),
            ],
        ),
        (
            "pipelined and split requests, long lines, tube names, quit",
            pipelined(),
        ),
        (
            "several connections: blocked reserves, order, timeouts, closes",
            connections(),
        ),
        (
            "kicked delays, pause-tube, tubes that vanish, the last tube",
            tubes(),
        ),
        (
            "pause-tube 0 resumes a paused tube at once",
            vec![
                Step::Connect,
                Step::Connect,
                send(0, "use p\r\nput 0 0 10 1\r\nx\r\npause-tube p 100\r\n", 3),
                send(
                    1,
                    "watch p\r\nignore default\r\nreserve-with-timeout 5\r\n",
                    2,
                ),
                send(0, "stats-tube p\r\n", 1),
                send(0, "pause-tube p 0\r\n", 1),
                send(1, "", 1),
                send(0, "stats-tube p\r\n", 1),
            ],
        ),
    ]
}

/// `text` then `n` repeats of `fill` then `tail`.
fn with_fill(text: &str, fill: u8, n: usize, tail: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.resize(out.len() + n, fill);
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Several requests in one write, requests split across writes, lines over
/// 224 bytes, bodies over max-job-size, 200-byte tube names, `quit`.
fn pipelined() -> Vec<Step> {
    let n200 = "n".repeat(200);
    let n201 = "n".repeat(201);
    let names = format!(
        "use {n200}\r\nlist-tube-used\r\nwatch {n200}\r\nlist-tubes\r\nuse {n201}\r\n\
         watch {n201}\r\nignore {n201}\r\nstats-tube {n201}\r\npause-tube {n201} 1\r\n"
    );
    vec![
        Step::Connect,
        Step::Connect,
        // several commands and puts with their bodies in one segment
        send(
            0,
            "put 0 0 10 3\r\nabc\r\nput 1 0 10 3\r\ndef\r\nstats-tube default\r\nreserve\r\npeek-ready\r\n",
            5,
        ),
        // a command split across writes, its CRLF too
        send(0, "stats-j", 0),
        send(0, "ob 1\r", 0),
        send(0, "\nlist-tubes-watched\r\n", 2),
        // a put's body split across writes, and its line from its body
        send(0, "put 2 0 10 5\r\nhe", 0),
        send(0, "llo\r", 0),
        send(0, "\npeek-ready\r\n", 2),
        send(0, "put 3 0 10 2\r", 0),
        send(0, "\nok\r\n", 1),
        // a body without its CRLF in a pipeline: the rest is read as lines
        send(
            0,
            "put 4 0 10 2\r\nok\r\nput 5 0 10 2\r\nnope\r\nlist-tube-used\r\n",
            4,
        ),
        send(
            1,
            "reserve-with-timeout 0\r\nreserve-with-timeout 0\r\nreserve-with-timeout 0\r\n\
             reserve-with-timeout 0\r\nreserve-with-timeout 0\r\n",
            5,
        ),
        // lines over 224 bytes: thrown away to their end, then BAD_FORMAT
        Step::Send(0, with_fill("", b'x', 500, "\r\nlist-tube-used\r\n"), 2),
        Step::Send(0, with_fill("", b'y', 300, ""), 0),
        Step::Send(0, with_fill("", b'y', 300, "\r\nlist-tube-used\r\n"), 2),
        // 223 bytes and CRLF: the line is read 224 bytes at a time, so its
        // CR is cut from its LF and the next line's CRLF ends it
        Step::Send(
            0,
            with_fill(
                "use ",
                b'a',
                219,
                "\r\nlist-tube-used\r\nlist-tube-used\r\n",
            ),
            2,
        ),
        // 224 bytes with CRLF is a line (its 218-byte name is not a name)
        Step::Send(0, with_fill("use ", b'a', 218, "\r\n"), 1),
        Step::Send(0, names.into_bytes(), 9),
        send(0, &format!("stats-tube {n200}\r\n"), 1),
        // bodies over max-job-size are skipped as they come
        Step::Send(
            0,
            with_fill(
                "put 0 0 10 200000\r\n",
                b's',
                200_000,
                "\r\nlist-tube-used\r\n",
            ),
            2,
        ),
        Step::Send(0, with_fill("put 0 0 10 70000\r\n", b's', 30_000, ""), 0),
        Step::Send(
            0,
            with_fill("", b's', 40_000, "\r\nstats-tube default\r\n"),
            2,
        ),
        send(
            0,
            &format!("ignore default\r\nignore {n200}\r\nlist-tubes-watched\r\n"),
            3,
        ),
        // quit: what comes after it in the same write is never answered
        send(1, "list-tube-used\r\nquit\r\nstats\r\n", 0),
        Step::Drain(1),
        send(0, "stats\r\n", 1),
    ]
}

/// A reserve blocked on one connection answered by a put on another,
/// waiting reserves served in beanstalkd's order, a reserve that times
/// out, connections closed while holding jobs or waiting.
fn connections() -> Vec<Step> {
    vec![
        Step::Connect,
        Step::Connect,
        Step::Connect,
        Step::Connect,
        Step::Connect,
        // what follows a blocked reserve in its write waits for it
        send(1, "reserve\r\nlist-tube-used\r\n", 0),
        send(0, "put 0 0 10 1\r\na\r\n", 1),
        send(1, "", 2),
        send(1, "reserve\r\n", 0),
        send(2, "reserve\r\n", 0),
        send(3, "reserve-with-timeout 10\r\n", 0),
        send(4, "reserve\r\n", 0),
        send(0, "stats\r\n", 1),
        send(
            0,
            "put 0 0 10 1\r\nb\r\nput 0 0 10 1\r\nc\r\nput 0 0 10 1\r\nd\r\nput 0 0 10 1\r\ne\r\n",
            4,
        ),
        send(1, "", 1),
        send(2, "", 1),
        send(3, "", 1),
        send(4, "", 1),
        send(2, "reserve-with-timeout 1\r\n", 0),
        Step::Pass(Duration::from_millis(1200)),
        send(2, "", 1),
        // closed while holding a job: the job is ready again
        Step::Close(3),
        send(0, "peek-ready\r\nstats-job 4\r\nstats-job 5\r\n", 3),
        send(2, "reserve-with-timeout 0\r\n", 1),
        // closed while holding a job and waiting
        send(4, "reserve\r\n", 0),
        Step::Close(4),
        send(0, "stats\r\n", 1),
        send(0, "put 0 0 10 1\r\nf\r\n", 1),
        send(0, "stats-tube default\r\n", 1),
        send(
            1,
            "reserve-with-timeout 0\r\nreserve-with-timeout 0\r\nreserve-with-timeout 0\r\n",
            3,
        ),
        send(0, "stats\r\n", 1),
    ]
}

/// Delayed jobs kicked, a reserve waiting out a paused tube, tubes that
/// vanish once nothing uses them, `ignore` of the last tube,
/// `DEADLINE_SOON` at once for a TTR of one second.
fn tubes() -> Vec<Step> {
    vec![
        Step::Connect,
        Step::Connect,
        send(
            0,
            "use d\r\nput 0 100 10 1\r\nx\r\nput 0 100 10 1\r\ny\r\nput 0 100 10 1\r\nz\r\n",
            4,
        ),
        send(
            0,
            "kick 1\r\npeek-delayed\r\nstats-tube d\r\nkick-job 3\r\nkick-job 1\r\nkick 5\r\n\
             kick 5\r\npeek-delayed\r\nstats-job 2\r\n",
            9,
        ),
        send(
            1,
            "watch d\r\nignore default\r\nignore d\r\nlist-tubes-watched\r\n",
            4,
        ),
        send(0, "pause-tube d 1\r\n", 1),
        send(0, "stats-tube d\r\n", 1),
        send(1, "reserve\r\n", 0),
        Step::Pass(Duration::from_millis(1300)),
        send(1, "", 1),
        send(0, "stats-tube d\r\n", 1),
        send(
            1,
            "delete 1\r\nreserve\r\ndelete 2\r\nreserve\r\ndelete 3\r\n",
            5,
        ),
        send(0, "list-tubes\r\nuse default\r\nlist-tubes\r\n", 3),
        send(
            1,
            "watch default\r\nignore d\r\nlist-tubes\r\nstats-tube d\r\n",
            4,
        ),
        // a tube only a job holds stays until the job is gone
        send(
            0,
            "use e\r\nput 0 0 10 1\r\nq\r\nuse default\r\nlist-tubes\r\nstats-tube e\r\n",
            5,
        ),
        send(
            0,
            "peek-ready\r\ndelete 4\r\nlist-tubes\r\nstats-tube e\r\n",
            4,
        ),
        send(0, "put 0 0 1 1\r\ns\r\n", 1),
        send(
            1,
            "reserve\r\nreserve-with-timeout 0\r\nreserve-with-timeout 2\r\ndelete 5\r\n\
             reserve-with-timeout 0\r\n",
            5,
        ),
        send(0, "stats\r\n", 1),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs every script at once, each on a thread of its own against a fresh
/// beanstalkd (so that ids agree) and the target `ours` makes for it.
fn each_script<T: Target>(ours: impl Fn() -> T + Sync) {
    std::thread::scope(|scope| {
        for (name, script) in scripts() {
            let ours = &ours;
            std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(scope, move || {
                    let Some(reference) = Beanstalkd::start() else {
                        return;
                    };
                    let mut target = ours();
                    rt().block_on(compare(
                        &mut target,
                        &mut TcpTarget::new(reference.port),
                        &script,
                    ));
                    eprintln!("session agrees: {name}");
                })
                .unwrap();
        }
    });
}

#[test]
fn the_engine_answers_as_beanstalkd() {
    each_script(EngineTarget::after_probe);
}

/// The served engine over loopback, and the server it runs on.
struct ServedTarget {
    tcp: TcpTarget,
    _served: Served,
    _dir: tempfile::TempDir,
}

impl ServedTarget {
    /// A fresh store served on a free port, seen once by a probe as
    /// test-support's beanstalkd is, so `total-connections` agrees.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let served = Served::start(dir.path(), StoreConfig::default());
        drop(std::net::TcpStream::connect(("127.0.0.1", served.port)).unwrap());
        Self {
            tcp: TcpTarget::new(served.port),
            _served: served,
            _dir: dir,
        }
    }
}

impl Target for ServedTarget {
    async fn connect(&mut self) {
        self.tcp.connect().await;
    }
    async fn send(&mut self, conn: usize, bytes: &[u8], replies: usize) -> Vec<u8> {
        self.tcp.send(conn, bytes, replies).await
    }
    async fn pass(&mut self, d: Duration) {
        self.tcp.pass(d).await;
    }
    async fn close(&mut self, conn: usize) {
        self.tcp.close(conn).await;
    }
    async fn drain(&mut self, conn: usize) -> Vec<u8> {
        self.tcp.drain(conn).await
    }
}

#[test]
fn the_served_engine_answers_as_beanstalkd() {
    each_script(ServedTarget::start);
}
