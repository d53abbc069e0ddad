//! Shared fixtures: real peers on loopback ports and an in-process kids server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use kids_core::net::{Listener, ServerConfig, serve};
use kids_core::{Frame, FrameCodec, Now, Router, RouterConfig};
use tokio_util::codec::Decoder;

/// A simulated moment `secs` after the Unix epoch on the wall clock, and as
/// far after one fixed instant on the monotonic clock: tests step it with
/// [`Now::after`], or move the wall clock alone.
pub(crate) fn at_secs(secs: u64) -> Now {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Now::new(
        base + Duration::from_secs(secs),
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    )
}

/// A free loopback port (bound, read, released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Finds a peer binary. Without it the test is skipped with one line, unless
/// REQUIRE_PEERS=1 (as CI sets), where a missing peer fails the test.
pub(crate) fn peer(binary: &str, package: &str) -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p.to_string_lossy().into_owned()),
        None if std::env::var("REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("{binary} not found and REQUIRE_PEERS=1: install the Debian package {package}")
        }
        None => {
            eprintln!(
                "SKIPPED: {binary} not found (Debian package {package}); set REQUIRE_PEERS=1 to fail instead"
            );
            None
        }
    }
}

/// A child process killed when dropped.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real redis-server on a free loopback port.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    _child: ChildGuard,
}

impl RedisServer {
    /// Starts one, or `None` (skipped) when redis-server is not installed.
    pub(crate) fn start() -> Option<Self> {
        let bin = peer("redis-server", "redis-server")?;
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Self {
            port,
            _child: ChildGuard(child),
        };
        wait_for_ping(port);
        Some(server)
    }
}

/// Waits until something on `port` answers PING (at most 10 s).
pub(crate) fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server on port {port} never answered PING"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kids served in-process on a free loopback port, stopped when dropped.
pub(crate) struct KidsServer {
    pub(crate) port: u16,
    pub(crate) router: Router,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KidsServer {
    pub(crate) fn start(config: RouterConfig) -> Self {
        let router = Router::new(config, Instant::now());
        let std_listener = TcpListener::bind("127.0.0.1:0").expect("bind kids");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let r = router.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                serve(
                    vec![Listener::Tcp(listener)],
                    r,
                    ServerConfig::default(),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("serve");
            });
        });
        wait_for_ping(port);
        Self {
            port,
            router,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for KidsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw client connection that reads whole frames and keeps their exact bytes.
pub(crate) struct Raw {
    pub(crate) stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Raw {
    pub(crate) fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::default(),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one frame; returns its exact bytes and its value.
    pub(crate) fn frame(&mut self) -> (Vec<u8>, Frame) {
        loop {
            let before = self.buf.clone();
            if let Some(f) = self.codec.decode(&mut self.buf).expect("well-formed reply") {
                let used = before.len() - self.buf.len();
                return (before[..used].to_vec(), f);
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("read a reply (10 s timeout)");
            assert!(
                n > 0,
                "connection closed while a frame was expected; have {:?}",
                self.buf
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads everything until the peer closes.
    pub(crate) fn until_eof(&mut self) -> Vec<u8> {
        let mut out = self.buf.split().to_vec();
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("waiting for the server to close: {e}; have {out:?}"),
            }
        }
    }
}

/// RESP encoding of a command.
pub(crate) fn cmd(args: &[&str]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Frame::command(args).encode(kids_core::Proto::Resp2, &mut buf);
    buf.to_vec()
}
