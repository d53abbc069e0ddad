//! Fixtures: a broker in a temporary directory, and clients driven
//! without sockets on a simulated clock.

use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kids_core::server::{ConnConfig, Connection, MemoryStream};
use kids_core::{Frame, FrameCodec, Limits, Proto, RequestDecoder};
use sink_core::{Broker, BrokerConfig, FsyncPolicy, SinkConn, SinkServer};
use tokio_util::codec::Decoder;

/// A broker on a temporary directory with its own clock.
pub(crate) struct Node {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) broker: Broker,
    pub(crate) server: Arc<SinkServer>,
    pub(crate) config: BrokerConfig,
    pub(crate) now: Instant,
}

pub(crate) const WALL: u64 = 1_700_000_000_000;

impl Node {
    pub(crate) fn new(config: BrokerConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let (broker, _) = Broker::open(dir.path(), config.clone(), now, WALL).expect("open");
        let server = SinkServer::new(broker.clone());
        Self {
            dir,
            broker,
            server,
            config,
            now,
        }
    }

    pub(crate) fn never() -> Self {
        Self::new(BrokerConfig::default().fsync(FsyncPolicy::Never))
    }

    /// Reopens the broker on the same directory (a restart), its clock going on.
    pub(crate) fn restart(&mut self) -> sink_core::Recovered {
        let (broker, rec) =
            Broker::open(self.dir.path(), self.config.clone(), self.now, WALL).expect("reopen");
        self.broker = broker.clone();
        self.server = SinkServer::new(broker);
        rec
    }

    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    pub(crate) fn commit(&self) {
        self.broker.commit(self.now).expect("commit");
    }

    pub(crate) fn client(&self) -> Client {
        Client::on(&self.server, self.now)
    }
}

/// A client of a [`Node`], without sockets.
pub(crate) struct Client {
    pub(crate) conn: Connection<SinkConn, RequestDecoder>,
    pub(crate) io: MemoryStream,
    codec: FrameCodec,
    out: BytesMut,
    /// A waker of its own, as each connection's task has (the broker tells
    /// waiting writers apart by their wakers).
    waker: Waker,
}

/// Wakes nothing: the tests poll by hand.
struct Nobody;

impl std::task::Wake for Nobody {
    fn wake(self: Arc<Self>) {}
}

impl Client {
    /// A new client of `server`.
    pub(crate) fn on(server: &Arc<SinkServer>, now: Instant) -> Self {
        Client {
            conn: Connection::new(
                server.connect(now),
                RequestDecoder::new(Limits::default()),
                ConnConfig::default(),
                None,
                now,
            ),
            io: MemoryStream::default(),
            codec: FrameCodec::new(Limits::default(), Proto::Resp2),
            out: BytesMut::new(),
            waker: Waker::from(Arc::new(Nobody)),
        }
    }

    /// Sends one command.
    pub(crate) fn send(&mut self, args: &[&[u8]]) {
        let mut b = BytesMut::new();
        Frame::command(args.iter().map(|a| Bytes::copy_from_slice(a))).encode(Proto::Resp2, &mut b);
        self.io.send(&b);
    }

    /// Drives the connection until it waits.
    pub(crate) fn poll(&mut self, now: Instant) {
        let mut cx = Context::from_waker(&self.waker);
        for _ in 0..64 {
            match self.conn.poll(&mut cx, &mut self.io, now) {
                std::task::Poll::Pending => return,
                std::task::Poll::Ready(_) => {}
            }
        }
    }

    /// Every whole frame written so far.
    pub(crate) fn frames(&mut self) -> Vec<Frame> {
        self.out.extend_from_slice(&self.io.take_output());
        let mut v = Vec::new();
        while let Some(f) = self
            .codec
            .decode(&mut self.out)
            .expect("valid RESP from sink")
        {
            v.push(f);
        }
        v
    }

    /// Sends a command, commits, and returns the frames written.
    pub(crate) fn call(&mut self, node: &Node, args: &[&[u8]]) -> Vec<Frame> {
        self.send(args);
        self.poll(node.now);
        node.commit();
        self.poll(node.now);
        self.frames()
    }
}

pub(crate) fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// A session push: (offset, topic, payload).
pub(crate) fn pushed(f: &Frame) -> Option<(i64, Bytes, Bytes)> {
    match f {
        Frame::Array(v) | Frame::Push(v) if v.len() == 5 && v[0] == bulk("session") => {
            match (&v[2], &v[3], &v[4]) {
                (Frame::Integer(o), Frame::Bulk(t), Frame::Bulk(p)) => {
                    Some((*o, t.clone(), p.clone()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A small deterministic generator (xorshift64*), so failures replay.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
