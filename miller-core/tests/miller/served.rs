//! The served engine for tests: a store served on a loopback port on a
//! thread of its own, and a blocking beanstalk client on the crate's
//! client codec.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use kids_core::net::{Listener, ServerConfig};
use miller_core::engine::{Engine, EngineConfig};
use miller_core::proto::{ClientCodec, Request, Response};
use miller_core::store::{Store, StoreConfig};
use tokio_util::codec::{Decoder, Encoder};

/// A served store, stopped (drained) when dropped.
pub(crate) struct Served {
    pub(crate) port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves the store in `dir` with `config` on a free loopback port.
    pub(crate) fn start(dir: &Path, config: StoreConfig) -> Self {
        let engine = Engine::new(EngineConfig::default());
        let (store, _) = Store::open(dir, config, engine, Instant::now(), SystemTime::now())
            .expect("open the store");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = miller_core::net::runtime(&store).expect("runtime");
            rt.block_on(async move {
                let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                port_tx
                    .send(tcp.local_addr().expect("addr").port())
                    .expect("port");
                miller_core::net::serve(
                    vec![Listener::Tcp(tcp)],
                    store,
                    ServerConfig::default(),
                    miller_core::proto::DEFAULT_MAX_JOB_SIZE,
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("serve");
            });
        });
        let port = port_rx.recv().expect("the server's port");
        Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking beanstalk client.
pub(crate) struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: ClientCodec,
}

impl Client {
    pub(crate) fn connect(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            codec: ClientCodec::with_max_body(1 << 20),
        })
    }

    /// Sends `requests` in one write (pipelined).
    pub(crate) fn send(&mut self, requests: &[Request]) -> io::Result<()> {
        let mut out = BytesMut::new();
        for r in requests {
            self.codec
                .encode(r.clone(), &mut out)
                .map_err(io::Error::other)?;
        }
        self.stream.write_all(&out)
    }

    /// The next reply.
    pub(crate) fn recv(&mut self) -> io::Result<Response> {
        loop {
            if let Some(r) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(r);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[allow(dead_code, reason = "used by some test modules")]
    pub(crate) fn call(&mut self, request: Request) -> io::Result<Response> {
        self.send(&[request])?;
        self.recv()
    }
}
