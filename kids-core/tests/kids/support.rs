//! Shared fixtures: a real redis-server on a loopback port, an in-process kids server, a raw RESP client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kids_core::net::{Listener, ServerConfig, serve};
use kids_core::{Frame, FrameCodec, Router, RouterConfig};
use test_support::{Process, free_port, peer, wait_for};
use tokio_util::codec::Decoder;

/// A real redis-server on a free loopback port, killed when dropped.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    _process: Process,
}

impl RedisServer {
    /// Starts one, or `None` (skipped) when redis-server is not installed.
    pub(crate) fn start() -> Option<Self> {
        let bin = peer("redis-server", "redis-server")?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let process = Process::start("redis-server", cmd).expect("start redis-server");
        wait_for(
            &format!("redis-server on port {port} to answer PING"),
            || {
                process.check_running().unwrap_or_else(|e| panic!("{e}"));
                answers_ping(port)
            },
        );
        Some(Self {
            port,
            _process: process,
        })
    }
}

/// Whether something on `port` answers PING now.
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
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
        wait_for(&format!("kids on port {port} to answer PING"), || {
            answers_ping(port)
        });
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
