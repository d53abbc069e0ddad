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
use test_support::Beanstalkd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

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
}

struct EngineConn {
    client: ClientId,
    codec: ServerCodec,
    input: BytesMut,
    output: Vec<u8>,
    parked: bool,
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
            if c.parked {
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
                        self.conns[i] = None;
                        return;
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
                .position(|c| c.as_ref().is_some_and(|c| c.client == client))
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
        let Some(c) = self.conns[conn].as_mut() else {
            return Vec::new(); // quit
        };
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
        if let Some(c) = self.conns[conn].take() {
            self.engine.disconnect(c.client, self.now);
            self.wake();
        }
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
        }
    }
    out
}

/// Compares `ours` with beanstalkd on `script`, step by step.
pub(super) async fn compare(ours: &mut impl Target, reference: &mut impl Target, script: &[Step]) {
    let theirs = run(reference, script).await;
    let mine = run(ours, script).await;
    let sends = script.iter().filter(|s| matches!(s, Step::Send(..)));
    for ((step, a), b) in sends.zip(&theirs).zip(&mine) {
        assert_eq!(
            b, a,
            "after {step:?}:\n beanstalkd {a:?}\n ours       {b:?}"
        );
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
                send(0, "pause-tube default 1\r\nstats-tube default\r\n", 2),
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
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_engine_answers_as_beanstalkd() {
    rt().block_on(async {
        for (name, script) in scripts() {
            eprintln!("session: {name}");
            // each session on a fresh server, so ids agree
            let Some(fresh) = Beanstalkd::start() else {
                return;
            };
            compare(
                &mut EngineTarget::after_probe(),
                &mut TcpTarget::new(fresh.port),
                &script,
            )
            .await;
        }
    });
}
