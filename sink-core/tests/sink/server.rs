//! sink served over TCP in-process (`sink_core::net::serve` on loopback),
//! driven by real clients: the `redis` crate, a raw RESP connection for
//! session pushes, `redis-cli`, and redis-py.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kids_core::net::{Listener, ServerConfig};
use kids_core::{Frame, FrameCodec, Limits, Proto};
use sink_core::{Broker, BrokerConfig, FsyncPolicy};
use test_support::{REQUIRE_PEERS, on_path, peer, redis_cli as cli};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, oneshot};
use tokio_util::codec::Decoder;

use super::support::{Rng, bulk, pushed};

/// A sink server on a loopback port, on a runtime and thread of its own,
/// its log in a temporary directory; stopped (and checked to stop cleanly)
/// when dropped.
pub(crate) struct Server {
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    pub(crate) fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig::default().fsync(FsyncPolicy::Always);
        let (broker, _) =
            Broker::open(dir.path(), config, Instant::now(), super::support::WALL).expect("open");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        tcp.set_nonblocking(true).expect("nonblocking");
        let port = tcp.local_addr().expect("addr").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let tcp = tokio::net::TcpListener::from_std(tcp)?;
                sink_core::net::serve(
                    vec![Listener::Tcp(tcp)],
                    broker,
                    ServerConfig::default(),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await
            })
        });
        Server {
            port,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let served = t.join().expect("the server thread");
            if !std::thread::panicking() {
                served.expect("serve returns Ok after shutdown");
            }
        }
    }
}

/// A raw RESP2 connection: pipelined commands out, frames (replies and
/// pushes, in the order they came) in.
pub(crate) struct Raw {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl Raw {
    pub(crate) async fn connect(port: u16) -> io::Result<Raw> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream,
            codec: FrameCodec::new(Limits::default(), Proto::Resp2),
            buf: BytesMut::new(),
        })
    }

    /// Writes every command at once.
    pub(crate) async fn send<A: AsRef<[u8]>>(&mut self, commands: &[Vec<A>]) -> io::Result<()> {
        let mut out = BytesMut::new();
        for c in commands {
            Frame::command(c.iter().map(AsRef::as_ref)).encode(Proto::Resp2, &mut out);
        }
        self.stream.write_all(&out).await
    }

    /// The next frame; an error when the connection closed or failed.
    pub(crate) async fn next(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(f);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Sends one command and returns the next frame.
    pub(crate) async fn call(&mut self, args: &[&str]) -> io::Result<Frame> {
        self.send(&[args.to_vec()]).await?;
        self.next().await
    }
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) | Frame::Error(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        other => format!("{other:?}"),
    }
}

async fn connection(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url().as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// A command for the `redis` crate from its words.
fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An entry as XRANGE gives it: id and field-value pairs.
type Entry = (String, Vec<String>);

#[test]
fn redis_crate_publish_streams_and_a_raw_session_consumer() {
    let server = Server::start();
    runtime().block_on(async {
        let mut c = connection(&server).await;
        let create: String = cmd(&["SESSION", "CREATE", "mail", "web*"])
            .query_async(&mut c)
            .await
            .expect("session create");
        assert_eq!(create, "OK");

        let mut offsets = Vec::new();
        for i in 0..5 {
            let topic = if i % 2 == 0 { "web.a" } else { "db" };
            let o: u64 = redis::cmd("PUBLISH")
                .arg(topic)
                .arg(format!("m{i}"))
                .query_async(&mut c)
                .await
                .expect("publish");
            offsets.push(o);
        }
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        let logged: u64 = cmd(&["LOG", "web.b", "m5"])
            .query_async(&mut c)
            .await
            .expect("log");
        assert!(logged > offsets[4]);

        // Streams through redis::cmd.
        let mut ids = Vec::new();
        for i in 0..3 {
            let id: String = cmd(&["XADD", "orders", "*", "n", &i.to_string(), "kind", "new"])
                .query_async(&mut c)
                .await
                .expect("xadd");
            ids.push(id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let len: u64 = redis::cmd("XLEN")
            .arg("orders")
            .query_async(&mut c)
            .await
            .expect("xlen");
        assert_eq!(len, 3);
        let range: Vec<Entry> = cmd(&["XRANGE", "orders", "-", "+"])
            .query_async(&mut c)
            .await
            .expect("xrange");
        let expected: Vec<Entry> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let fields = ["n", &i.to_string(), "kind", "new"].map(str::to_owned);
                (id.clone(), fields.to_vec())
            })
            .collect();
        assert_eq!(range, expected);
        let ok: String = cmd(&["XGROUP", "CREATE", "orders", "billing", "0"])
            .query_async(&mut c)
            .await
            .expect("xgroup create");
        assert_eq!(ok, "OK");
        let read: Vec<(String, Vec<Entry>)> = cmd(&[
            "XREADGROUP",
            "GROUP",
            "billing",
            "alice",
            "COUNT",
            "2",
            "STREAMS",
            "orders",
            ">",
        ])
        .query_async(&mut c)
        .await
        .expect("xreadgroup");
        assert_eq!(read, [("orders".to_owned(), expected[..2].to_vec())]);
        let acked: u64 = cmd(&["XACK", "orders", "billing", &ids[0]])
            .query_async(&mut c)
            .await
            .expect("xack");
        assert_eq!(acked, 1);
        type Summary = (u64, String, String, Vec<(String, String)>);
        let summary: Summary = cmd(&["XPENDING", "orders", "billing"])
            .query_async(&mut c)
            .await
            .expect("xpending");
        assert_eq!(
            summary,
            (
                1,
                ids[1].clone(),
                ids[1].clone(),
                vec![("alice".to_owned(), "1".to_owned())]
            )
        );
        let detail: Vec<(String, String, u64, u64)> =
            cmd(&["XPENDING", "orders", "billing", "-", "+", "10"])
                .query_async(&mut c)
                .await
                .expect("xpending extended");
        assert_eq!(detail.len(), 1);
        assert_eq!(
            (&detail[0].0, &detail[0].1, detail[0].3),
            (&ids[1], &"alice".to_owned(), 1)
        );

        // The session: every web* message after its creation, pushed in
        // offset order after +OK, on a raw connection.
        let mut raw = Raw::connect(server.port).await.expect("raw connect");
        assert_eq!(
            raw.call(&["SESSION", "LOAD", "mail"]).await.expect("load"),
            Frame::Simple(Bytes::from_static(b"OK"))
        );
        let want = [
            (offsets[0], "web.a", "m0"),
            (offsets[2], "web.a", "m2"),
            (offsets[4], "web.a", "m4"),
            (logged, "web.b", "m5"),
        ];
        for (offset, topic, payload) in want {
            let f = raw.next().await.expect("a push");
            let (o, t, p) = pushed(&f).unwrap_or_else(|| panic!("not a push: {f:?}"));
            assert_eq!(
                (o as u64, &t[..], &p[..]),
                (offset, topic.as_bytes(), payload.as_bytes())
            );
        }
        let cursor = raw
            .call(&["SESSION", "ACK", "mail", &offsets[2].to_string()])
            .await
            .expect("ack");
        assert_eq!(cursor, Frame::Integer(offsets[2] as i64));
        let listed: Vec<String> = redis::cmd("SESSION")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .expect("session list");
        assert_eq!(listed, ["mail"]);
        drop(raw);
        // A second load starts after the cursor: the unacknowledged are sent again.
        let mut raw = Raw::connect(server.port).await.expect("raw connect");
        assert_eq!(
            raw.call(&["SESSION", "LOAD", "mail"]).await.expect("load"),
            Frame::Simple(Bytes::from_static(b"OK"))
        );
        for offset in [offsets[4], logged] {
            let f = raw.next().await.expect("a push");
            assert_eq!(pushed(&f).map(|p| p.0 as u64), Some(offset), "{f:?}");
        }
    });
}

#[test]
fn xread_block_is_answered_by_another_connections_xadd_and_times_out_with_nil() {
    let server = Server::start();
    runtime().block_on(async {
        let mut c = connection(&server).await;
        let _: String = cmd(&["XADD", "feed", "*", "k", "before"])
            .query_async(&mut c)
            .await
            .expect("xadd");
        let mut reader = Raw::connect(server.port).await.expect("connect");
        reader
            .send(&[vec!["XREAD", "BLOCK", "5000", "STREAMS", "feed", "$"]])
            .await
            .expect("send");
        let answer = tokio::spawn(async move { reader.next().await });
        // The read may reach the server after the first XADD: keep adding
        // until it answers. It answers with an entry added after it blocked.
        let mut added = Vec::new();
        let reply = loop {
            let id: String = cmd(&["XADD", "feed", "*", "k", &format!("v{}", added.len())])
                .query_async(&mut c)
                .await
                .expect("xadd");
            added.push(id);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if answer.is_finished() {
                break answer.await.expect("task").expect("reply");
            }
        };
        let Frame::Array(streams) = &reply else {
            panic!("XREAD BLOCK answered {reply:?}");
        };
        let [Frame::Array(stream)] = &streams[..] else {
            panic!("one stream: {reply:?}");
        };
        assert_eq!(stream[0], bulk("feed"));
        let Frame::Array(entries) = &stream[1] else {
            panic!("entries: {reply:?}");
        };
        assert_eq!(entries.len(), 1, "{reply:?}");
        let Frame::Array(entry) = &entries[0] else {
            panic!("entry: {reply:?}");
        };
        let id = text(&entry[0]);
        let i = added
            .iter()
            .position(|a| *a == id)
            .unwrap_or_else(|| panic!("{id} is none of the entries added: {added:?}"));
        assert_eq!(
            entry[1],
            Frame::Array(vec![bulk("k"), bulk(&format!("v{i}"))])
        );

        // Nothing added: a short block answers nil.
        let mut reader = Raw::connect(server.port).await.expect("connect");
        let nil = reader
            .call(&["XREAD", "BLOCK", "100", "STREAMS", "feed", "$"])
            .await
            .expect("reply");
        assert!(matches!(nil, Frame::Null | Frame::NullArray), "{nil:?}");
        let pong = reader.call(&["PING"]).await.expect("ping");
        assert_eq!(pong, Frame::Simple(Bytes::from_static(b"PONG")));
    });
}

#[test]
fn redis_cli_publish_xadd_and_sessions() {
    let Some(bin) = peer("redis-cli", "redis-tools") else {
        return;
    };
    let server = Server::start();
    let p = server.port;
    assert_eq!(cli(&bin, p, &["SESSION", "CREATE", "cli", "t"]), "OK\n");
    let first: u64 = cli(&bin, p, &["PUBLISH", "t", "x"])
        .trim()
        .parse()
        .expect("PUBLISH prints an integer");
    let second: u64 = cli(&bin, p, &["PUBLISH", "t", "y"])
        .trim()
        .parse()
        .expect("an integer");
    assert!(second > first);
    let id = cli(&bin, p, &["XADD", "s", "*", "f", "v"]);
    let (ms, seq) = id.trim().split_once('-').expect("an entry id");
    assert!(
        ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
        "{id}"
    );
    assert_eq!(cli(&bin, p, &["XLEN", "s"]), "1\n");
    assert_eq!(
        cli(&bin, p, &["XRANGE", "s", "-", "+"]),
        format!("{}\nf\nv\n", id.trim())
    );
    assert_eq!(cli(&bin, p, &["SESSION", "CREATE", "other", "u*"]), "OK\n");
    assert_eq!(cli(&bin, p, &["SESSION", "LIST"]), "cli\nother\n");
    assert_eq!(
        cli(&bin, p, &["SESSION", "ACK", "cli", &first.to_string()]),
        format!("{first}\n")
    );
    let info = cli(&bin, p, &["SESSION", "INFO", "cli"]);
    assert!(info.contains(&format!("cursor\n{first}\n")), "{info}");
}

/// A python3 that has redis-py, or `None` (skipped, one line; a failure
/// under `REQUIRE_PEERS=1`). Debian's python3 is tried after the first on
/// `PATH` (a pyenv shim, say, without Debian's packages).
fn python_with_redis() -> Option<PathBuf> {
    let candidates = [on_path("python3"), Some(PathBuf::from("/usr/bin/python3"))];
    for py in candidates.into_iter().flatten() {
        let ok = Command::new(&py)
            .args(["-c", "import redis"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    if std::env::var(REQUIRE_PEERS).as_deref() == Ok("1") {
        panic!("python3 with redis-py not found and {REQUIRE_PEERS}=1: install python3-redis");
    }
    eprintln!(
        "SKIPPED: python3 with redis-py not found (Debian package python3-redis); set {REQUIRE_PEERS}=1 to fail instead"
    );
    None
}

#[test]
fn redis_py_streams_groups_and_a_session_consumer() {
    let Some(py) = python_with_redis() else {
        return;
    };
    let server = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sink/clients.py");
    let out = Command::new(py)
        .arg(&script)
        .arg(server.port.to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clients.py failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    let get = |k: &str| {
        *lines
            .get(k)
            .unwrap_or_else(|| panic!("clients.py printed no {k}:\n{stdout}"))
    };
    assert_eq!(get("xlen"), "3");
    assert_eq!(get("xreadgroup"), "3");
    assert_eq!(get("xack"), "1");
    assert_eq!(get("pending"), "2");
    assert_eq!(get("session"), "py.a:s0 py.b:s1 py.a:s2");
    assert_eq!(get("done"), "ok");
}

/// The seam between publishing and session delivery, with real threads: a
/// publisher pipelines messages on topics `a` and `b` while a consumer
/// loads the session (filter `a`) hundreds of times, reads some pushes,
/// acknowledges one of them and disconnects. Each load's pushes must be
/// exactly the `a` offsets after its starting cursor, in order, without a
/// gap; a last load gets exactly those after the last acknowledged cursor.
#[test]
fn publishing_races_session_loads_and_acks() {
    const N: usize = 2000;
    const LOADS: usize = 300;
    let seed = 0x5eed_0001_u64 ^ u64::from(std::process::id());
    eprintln!("seam seed {seed:#x}");
    let server = Server::start();
    let port = server.port;
    runtime().block_on(async move {
        let mut setup = Raw::connect(port).await.expect("connect");
        let ok = setup.call(&["SESSION", "CREATE", "seam", "a"]).await.expect("create");
        assert_eq!(ok, Frame::Simple(Bytes::from_static(b"OK")));
        let start_cursor = 0u64;

        // offset -> (topic, payload), from the publisher's replies.
        let published = Arc::new(Mutex::new(BTreeMap::<u64, (String, String)>::new()));
        let publishing_done = Arc::new(AtomicBool::new(false));
        let publisher = {
            let published = Arc::clone(&published);
            let done = Arc::clone(&publishing_done);
            tokio::spawn(async move {
                let mut rng = Rng(seed | 1);
                let mut conn = Raw::connect(port).await.expect("publisher connect");
                let mut i = 0;
                while i < N {
                    let depth = (1 + rng.below(24) as usize).min(N - i);
                    let batch: Vec<(String, String)> = (i..i + depth)
                        .map(|j| {
                            let topic = if rng.below(3) == 0 { "b" } else { "a" };
                            (topic.to_owned(), format!("{topic}-{j}"))
                        })
                        .collect();
                    let commands: Vec<Vec<&str>> = batch
                        .iter()
                        .map(|(t, p)| vec!["PUBLISH", t.as_str(), p.as_str()])
                        .collect();
                    conn.send(&commands).await.expect("publish");
                    for m in batch {
                        match conn.next().await.expect("reply") {
                            Frame::Integer(o) => {
                                published.lock().await.insert(o as u64, m);
                            }
                            other => panic!("PUBLISH answered {other:?}"),
                        }
                    }
                    i += depth;
                    tokio::time::sleep(Duration::from_millis(rng.below(6))).await;
                }
                done.store(true, Ordering::SeqCst);
            })
        };

        // Each load: (starting cursor, offsets pushed with topic and payload).
        type Load = (u64, Vec<(u64, Bytes, Bytes)>);
        let done = Arc::clone(&publishing_done);
        let consumer = tokio::spawn(async move {
            let mut overlapping = 0;
            let mut rng = Rng(seed.rotate_left(17) | 1);
            let mut cursor = start_cursor;
            let mut loads: Vec<Load> = Vec::new();
            for _ in 0..LOADS {
                overlapping += usize::from(!done.load(Ordering::SeqCst));
                let mut conn = Raw::connect(port).await.expect("consumer connect");
                conn.send(&[vec!["SESSION", "LOAD", "seam"]]).await.expect("load");
                let ok = conn.next().await.expect("load reply");
                assert_eq!(ok, Frame::Simple(Bytes::from_static(b"OK")));
                let mut got = Vec::new();
                let want = 1 + rng.below(40) as usize;
                while got.len() < want {
                    // Pacing only: stop reading when nothing came for a while.
                    match tokio::time::timeout(Duration::from_millis(5), conn.next()).await {
                        Ok(f) => {
                            let f = f.expect("a push");
                            got.push(pushed(&f).unwrap_or_else(|| panic!("not a push: {f:?}")));
                        }
                        Err(_) => break,
                    }
                }
                let got_u: Vec<(u64, Bytes, Bytes)> =
                    got.into_iter().map(|(o, t, p)| (o as u64, t, p)).collect();
                let ack = (!got_u.is_empty() && rng.below(4) != 0)
                    .then(|| got_u[rng.below(got_u.len() as u64) as usize].0);
                let mut load = (cursor, got_u);
                if let Some(offset) = ack {
                    conn.send(&[vec!["SESSION".to_owned(), "ACK".into(), "seam".into(), offset.to_string()]])
                        .await
                        .expect("ack");
                    // Pushes may come before the reply.
                    loop {
                        let f = conn.next().await.expect("ack reply");
                        if let Some((o, t, p)) = pushed(&f) {
                            load.1.push((o as u64, t, p));
                            continue;
                        }
                        assert_eq!(f, Frame::Integer(offset.max(cursor) as i64));
                        break;
                    }
                    cursor = cursor.max(offset);
                }
                loads.push(load);
                drop(conn);
                if rng.below(2) == 0 {
                    tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
                }
            }
            (cursor, loads, overlapping)
        });
        publisher.await.expect("publisher");
        let (cursor, loads, overlapping) = consumer.await.expect("consumer");
        let published = published.lock().await.clone();
        assert_eq!(published.len(), N);
        let matching: Vec<u64> = published
            .iter()
            .filter(|(_, (t, _))| t == "a")
            .map(|(o, _)| *o)
            .collect();
        let after = |c: u64| matching.iter().copied().filter(move |&o| o > c);
        let mut pushes = 0;
        for (i, (start, got)) in loads.iter().enumerate() {
            let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
            let expected: Vec<u64> = after(*start).take(offsets.len()).collect();
            assert_eq!(offsets, expected, "load {i} from cursor {start}");
            for (o, t, p) in got {
                let (topic, payload) = &published[o];
                assert_eq!((&t[..], &p[..]), (topic.as_bytes(), payload.as_bytes()));
            }
            pushes += got.len();
        }

        // The last load: exactly what follows the last acknowledged cursor,
        // then a sentinel published after it caught up (nothing in between).
        let rest: Vec<u64> = after(cursor).collect();
        let mut conn = Raw::connect(port).await.expect("connect");
        let ok = conn.call(&["SESSION", "LOAD", "seam"]).await.expect("load");
        assert_eq!(ok, Frame::Simple(Bytes::from_static(b"OK")));
        for want in &rest {
            let f = conn.next().await.expect("a push");
            assert_eq!(pushed(&f).map(|p| p.0 as u64), Some(*want), "{f:?}");
        }
        let sentinel = setup.call(&["PUBLISH", "a", "sentinel"]).await.expect("publish");
        let Frame::Integer(sentinel) = sentinel else {
            panic!("{sentinel:?}");
        };
        let f = conn.next().await.expect("the sentinel");
        let (o, _, p) = pushed(&f).unwrap_or_else(|| panic!("not a push: {f:?}"));
        assert_eq!((o, &p[..]), (sentinel, &b"sentinel"[..]));
        let acks = loads.windows(2).filter(|w| w[0].0 != w[1].0).count();
        eprintln!(
            "seam: {N} published ({} on a), {} loads ({overlapping} while publishing), {pushes} pushes checked, {acks} cursor moves, last cursor {cursor}, {} delivered at the last load",
            matching.len(),
            loads.len(),
            rest.len()
        );
    });
}
