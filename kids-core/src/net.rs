//! The tokio adapter: serves a [`Router`] on TCP and unix sockets (feature `tokio`).
//!
//! Each connection runs one task that owns its socket, a
//! [`RequestDecoder`] and a [`Session`]: it reads a batch, handles every
//! request in it, flushes the replies, and writes whatever the session's
//! [`Outbox`](crate::Outbox) holds, all in order. Reading pauses while the
//! connection's own unsent output is over 1 MiB, so a client that pipelines
//! without reading cannot grow the server's memory without bound.
//!
//! ```no_run
//! use std::time::Instant;
//! use kids_core::net::{Listener, ServerConfig, serve};
//! use kids_core::{Router, RouterConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let router = Router::new(RouterConfig::default(), Instant::now());
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:3388").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // Keep `stop`; sending on it (or dropping it) shuts the server down gracefully.
//! # drop(stop);
//! serve(vec![Listener::Tcp(tcp)], router, ServerConfig::default(), async {
//!     let _ = stopped.await;
//! })
//! .await
//! # }
//! ```

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_util::codec::Decoder;
use tokio_util::task::TaskTracker;

use crate::outbox::CloseReason;
use crate::{Error, Flow, ForwardAction, Limits, Link, RequestDecoder, Router, Session, Target};

/// Own output above which a connection without subscriptions stops reading
/// requests (subscribers are bounded by their pubsub nlimit instead, and must
/// stay able to UNSUBSCRIBE while messages queue up).
const READ_PAUSE: u64 = 1 << 20;

/// Where a server is in its life, as connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Stop {
    /// Serving.
    Run,
    /// Stop reading; write out what is held, then close.
    Drain,
    /// Close now.
    Abort,
}
/// Bytes read per call.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes read, at most, before the requests in them are handled together.
const READ_BATCH: usize = 64 * 1024;
/// Bytes gathered from the outbox per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// A socket to accept clients on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A unix domain socket listener.
    Unix(UnixListener),
}

/// Settings of [`serve`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Bounds of the request decoder.
    pub limits: Limits,
    /// How long connections may take to write out what they hold after shutdown.
    pub drain_timeout: Duration,
    /// How often [`Router::tick`] runs (INFO rates).
    pub tick_interval: Duration,
    /// Clients served at once, at most (`max_clients`); a client over it
    /// gets Redis's `-ERR max number of clients reached` and is closed.
    pub max_clients: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(5),
            tick_interval: Duration::from_secs(1),
            max_clients: None,
        }
    }
}

/// Accepts clients on every listener until `shutdown` completes, then stops
/// accepting, lets every connection write out what it already holds (up to
/// [`ServerConfig::drain_timeout`]) and returns.
///
/// # Errors
/// Only when no listener could accept at all; failed accepts of single
/// clients are logged and skipped.
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener to serve on",
        ));
    }
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let tracker = TaskTracker::new();
    for listener in listeners {
        let (router, config, stop) = (router.clone(), config.clone(), stop_rx.clone());
        let conns = tracker.clone();
        tracker.spawn(accept_loop(listener, router, config, stop, conns));
    }
    let ticker = {
        let (router, mut stop, every) = (router.clone(), stop_rx.clone(), config.tick_interval);
        tracker.spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = interval.tick() => router.tick(Instant::now()),
                    _ = stop.changed() => return,
                }
            }
        })
    };
    shutdown.await;
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(Stop::Drain);
    tracker.close();
    if tokio::time::timeout(config.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
        let _ = stop_tx.send(Stop::Abort);
        tracker.wait().await;
    }
    drop(ticker);
    Ok(())
}

async fn accept_loop(
    listener: Listener,
    router: Router,
    config: ServerConfig,
    mut stop: watch::Receiver<Stop>,
    conns: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            _ = stop.changed() => return,
        };
        if let Ok(conn) = &accepted
            && config
                .max_clients
                .is_some_and(|max| router.connected_clients() >= max)
        {
            tracing::warn!("max_clients reached: refusing a client");
            let reply = b"-ERR max number of clients reached\r\n";
            match conn {
                Accepted::Tcp(s) => drop(s.try_write(reply)),
                Accepted::Unix(s) => drop(s.try_write(reply)),
            }
            continue;
        }
        match accepted {
            Ok(Accepted::Tcp(s)) => {
                let _ = s.set_nodelay(true);
                conns.spawn(serve_connection(
                    s,
                    router.clone(),
                    config.limits,
                    stop.clone(),
                ));
            }
            Ok(Accepted::Unix(s)) => {
                conns.spawn(serve_connection(
                    s,
                    router.clone(),
                    config.limits,
                    stop.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A stream accepted by a listener, or connected by a network store.
enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => Ok(Accepted::Tcp(l.accept().await?.0)),
        Listener::Unix(l) => Ok(Accepted::Unix(l.accept().await?.0)),
    }
}

/// Serves one client on any byte stream until it disconnects, `QUIT`s, breaks
/// the protocol, goes over an `nlimit`, or `stop` says so: at
/// [`Stop::Drain`] it stops reading and writes out what it holds first, at
/// [`Stop::Abort`] it closes at once.
///
/// # Errors
/// The IO error that ended the connection, if one did.
pub async fn serve_connection<S>(
    stream: S,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<Stop>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io: stream,
        session: Session::new(&router),
        router,
        decoder: RequestDecoder::new(limits),
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        wpos: 0,
        reading: true,
    };
    let result = tokio::select! {
        r = poll_fn(|cx| conn.poll(cx)) => r,
        _ = wait_for(&mut stop, Stop::Drain) => {
            conn.reading = false;
            tokio::select! {
                r = poll_fn(|cx| conn.poll(cx)) => r,
                _ = wait_for(&mut stop, Stop::Abort) => Ok(()),
            }
        }
    };
    let _ = conn.io.shutdown().await;
    result
}

async fn wait_for(stop: &mut watch::Receiver<Stop>, at_least: Stop) {
    if stop.wait_for(|s| *s >= at_least).await.is_err() {
        // The server is gone without a shutdown: keep serving.
        std::future::pending::<()>().await;
    }
}

struct Conn<S> {
    io: S,
    session: Session,
    router: Router,
    decoder: RequestDecoder,
    rbuf: BytesMut,
    wbuf: BytesMut,
    wpos: usize,
    reading: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Handles the requests in the read buffer until it is empty, a request
    /// waits for the session's ticket, or the session closes; then flushes
    /// the replies unless they wait for a ticket.
    fn handle_input(&mut self, now: Instant) {
        while self.reading {
            let flow = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(req)) => self.session.handle(req, now),
                Ok(None) => break,
                Err(Error::Protocol(e)) => {
                    if e == crate::ProtocolError::QueryBufferLimit {
                        tracing::warn!(
                            client = self.session.id(),
                            "closing client that reached the query buffer limit"
                        );
                    }
                    // Nothing after a broken request can be read.
                    self.reading = false;
                    self.session.protocol_error(&e, now)
                }
                Err(_) => break,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => self.reading = false,
                Flow::Wait => break,
            }
        }
        if self.session.ticket().is_none() {
            self.session.flush(now);
        }
    }

    /// Drives reads and writes until both would block, the peer leaves, or
    /// the session closes and everything it holds is written.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limits = *self.router.config().limits();
        loop {
            // Closed by its nlimit: leave at once, even while
            // a write is blocked on a client that does not read.
            if let Poll::Ready(reason) = self.session.outbox().poll_closed(cx) {
                tracing::debug!(
                    client = self.session.id(),
                    ?reason,
                    "outbox closed, closing client"
                );
                return Poll::Ready(Ok(()));
            }
            let mut progress = false;
            if let Some(ticket) = self.session.ticket()
                && let Poll::Ready(stored) = self.router.poll_stored(ticket, cx)
            {
                let now = Instant::now();
                let flow = if stored {
                    self.session.stored(now)
                } else {
                    // Never to be stored: drop the held replies and close once
                    // what was answered before is written; the publisher
                    // re-sends after reconnecting.
                    tracing::warn!(
                        client = self.session.id(),
                        "stores stopped before storing this client's messages; closing unanswered"
                    );
                    self.session.unstored()
                };
                if flow == Flow::Close {
                    self.reading = false;
                }
                // Requests read behind the one that waited.
                self.handle_input(now);
                progress = true;
            }
            let paused = self.session.ticket().is_some()
                || (self.session.subscriptions() == 0
                    && self.session.outbox().pending() >= READ_PAUSE);
            // A full store queue holds publishers back; subscribers stay
            // able to UNSUBSCRIBE (they are bounded by their nlimit).
            let room = self.session.subscriptions() > 0 || self.router.poll_room(cx).is_ready();
            if self.reading && !paused && room {
                // Read what the socket holds, up to a batch: handled together,
                // its publishes wait for one commit of the stores.
                let (mut got, mut eof) = (false, false);
                // At least one read: a request larger than a batch still grows.
                let stop_at = self.rbuf.len().max(READ_BATCH - 1) + 1;
                while self.rbuf.len() < stop_at {
                    if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                    match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
                    {
                        Poll::Ready(Ok(0)) => {
                            eof = true;
                            break;
                        }
                        Poll::Ready(Ok(_)) => got = true,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => break,
                    }
                }
                if got {
                    self.handle_input(Instant::now());
                    progress = true;
                }
                if eof {
                    // The client is gone; write out what it is owed, then close.
                    self.reading = false;
                    progress = true;
                }
            }
            if self.wpos == self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
                match self
                    .session
                    .outbox()
                    .poll_drain(cx, &mut self.wbuf, WRITE_CHUNK)
                {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(CloseReason::NLimit)) => {
                        tracing::debug!(client = self.session.id(), "closing client over nlimit");
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                    Poll::Pending => {}
                }
            }
            if self.wpos < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.wpos += n;
                        self.session.outbox().consumed(n, &limits);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !self.reading
                && self.session.ticket().is_none()
                && self.wpos == self.wbuf.len()
                && self.session.outbox().pending() == 0
            {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                // Idle: give memory back until the next batch.
                if self.rbuf.is_empty() && !self.decoder.is_mid_request() {
                    self.rbuf = BytesMut::new();
                }
                if self.wpos == self.wbuf.len() {
                    self.wbuf = BytesMut::new();
                    self.wpos = 0;
                }
                return Poll::Pending;
            }
        }
    }
}

/// Drives the connection of a network store's [`Link`] until the store is
/// dropped: connects (eagerly, so a buffer sees its primary up), writes
/// pipelined `LOG`s while the window allows, reads acknowledgements, gives
/// the connection up on an error reply, a bad reply or a reply timeout, and
/// reconnects after the forwarder's backoff. Unacknowledged messages are
/// re-sent, in order, on the next connection.
pub async fn drive_link(link: Arc<Link>) {
    loop {
        // Back off until the next attempt; the link's closing wakes this too.
        loop {
            if link.is_closed() {
                return;
            }
            let Some(at) = link.forwarder().retry_at() else {
                break;
            };
            if Instant::now() >= at {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = poll_fn(|cx| link.poll_work(cx)) => {}
            }
        }
        let reason = match connect(link.target()).await {
            Ok(Accepted::Tcp(s)) => {
                let _ = s.set_nodelay(true);
                tracing::info!(target = %link.target(), "forwarding: connected");
                pump_link(&link, s).await
            }
            Ok(Accepted::Unix(s)) => {
                tracing::info!(target = %link.target(), "forwarding: connected");
                pump_link(&link, s).await
            }
            Err(e) => format!("connect failed: {e}"),
        };
        if link.is_closed() {
            return;
        }
        tracing::warn!(target = %link.target(), %reason, "forwarding: connection lost; will retry");
        link.forwarder().on_disconnect(Instant::now());
        link.notify_progress();
    }
}

async fn connect(target: &Target) -> io::Result<Accepted> {
    let limit = Duration::from_secs(10);
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    match target {
        Target::Tcp { host, port } => tokio::time::timeout(
            limit,
            tokio::net::TcpStream::connect((host.as_str(), *port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map(Accepted::Tcp),
        Target::Unix(path) => tokio::time::timeout(limit, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| timed_out())?
            .map(Accepted::Unix),
    }
}

/// Runs one connection; returns why it ended.
async fn pump_link<S: AsyncRead + AsyncWrite + Unpin>(link: &Link, stream: S) -> String {
    use tokio::io::AsyncReadExt;
    link.forwarder().on_connected();
    link.notify_progress();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::new();
    loop {
        if link.is_closed() {
            return "store closed".into();
        }
        wbuf.clear();
        link.forwarder().poll_transmit(&mut wbuf, Instant::now());
        if !wbuf.is_empty() {
            if let Err(e) = writer.write_all(&wbuf).await {
                return format!("write failed: {e}");
            }
            continue;
        }
        let deadline = link.forwarder().poll_timeout();
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut rbuf) => match read {
                Ok(0) => return "peer closed the connection".into(),
                Err(e) => return format!("read failed: {e}"),
                Ok(_) => {
                    let action = link.forwarder().handle_input(&mut rbuf, Instant::now());
                    link.notify_progress();
                    if let ForwardAction::Disconnect(why) = action {
                        return why;
                    }
                }
            },
            () = poll_fn(|cx| link.poll_work(cx)) => {}
            () = timer => {
                if let ForwardAction::Disconnect(why) = link.forwarder().handle_timeout(Instant::now()) {
                    return why;
                }
            }
        }
    }
}

/// How long an idle store worker sleeps between polls of its stores.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Drives a [`Worker`](crate::Worker) of `pipeline` for `root` on the
/// calling thread until [`StorePipeline::shutdown`](crate::StorePipeline::shutdown);
/// then stores what is queued (giving up after `drain` on a root that keeps
/// refusing) and waits up to `drain` for the tree to have everything
/// acknowledged downstream. The thread sleeps on the pipeline's bell.
pub fn run_pipeline(pipeline: &crate::StorePipeline, root: Box<dyn crate::Store>, drain: Duration) {
    /// However the worker ends, a panic included, publishers are not left
    /// waiting: new messages are refused, held tickets resolve as unstored.
    struct Finish<'a>(&'a crate::StorePipeline);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            self.0.shutdown();
            self.0.finish();
        }
    }
    let _finish = Finish(pipeline);
    let mut worker = pipeline.worker(root);
    let mut give_up: Option<Instant> = None;
    loop {
        let busy = worker.step(now());
        if pipeline.is_stopping() {
            // What a refusing root never took was never acknowledged either.
            let deadline = *give_up.get_or_insert_with(|| Instant::now() + drain);
            if worker.is_idle() || Instant::now() >= deadline {
                break;
            }
        }
        if !busy {
            pipeline.bell().wait(IDLE_POLL);
        }
    }
    let deadline = Instant::now() + drain;
    while !worker.is_drained() && Instant::now() < deadline {
        worker.step(now());
        pipeline.bell().wait(IDLE_POLL);
    }
    if !worker.is_drained() {
        tracing::warn!(
            unacknowledged = worker.unacked(),
            "store drain timeout: messages not yet acknowledged downstream"
        );
    }
}

/// Both clocks, read once: the worker's `now`.
fn now() -> crate::Now {
    crate::Now::new(Instant::now(), std::time::SystemTime::now())
}

/// Runs [`run_pipeline`] on a new thread named `kids-store` (file IO blocks,
/// so the worker does not run on the async runtime).
///
/// # Errors
/// [`Error::Io`] when the thread cannot be started.
pub fn spawn_pipeline(
    pipeline: &crate::StorePipeline,
    root: Box<dyn crate::Store>,
    drain: Duration,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let pipeline = pipeline.clone();
    Ok(std::thread::Builder::new()
        .name("kids-store".into())
        .spawn(move || run_pipeline(&pipeline, root, drain))?)
}

/// A running store tree: the [`StorePipeline`](crate::StorePipeline) tapped
/// into a router, its worker thread, and a driver task per network link.
///
/// ```no_run
/// use std::time::Instant;
/// use kids_core::{Config, Router};
/// use kids_core::net::Stores;
///
/// # async fn run() -> Result<(), kids_core::Error> {
/// let config = Config::parse("agent.conf", &std::fs::read_to_string("agent.conf")?)?;
/// let router = Router::new(config.router_config(), Instant::now());
/// let stores = Stores::start(&config, &router)?;
/// // ... serve(listeners, router, ...) ...
/// stores.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Stores {
    pipeline: crate::StorePipeline,
    worker: Option<std::thread::JoinHandle<()>>,
    ignore_case: bool,
    /// True once a `store` block's tree runs (not the null store of a
    /// config without one): a reload may then not fall back to discarding.
    has_tree: AtomicBool,
}

/// How long a stopping store tree may wait for downstream acknowledgements.
const STORE_DRAIN: Duration = Duration::from_secs(10);

impl Stores {
    /// Builds the config's store tree (a null store when it has none), taps
    /// it into `router`, starts its worker thread and its link drivers (on
    /// the current tokio runtime).
    ///
    /// # Errors
    /// [`Error::Config`] for a tree or queue that cannot work, [`Error::Io`]
    /// when the overflow spool or the worker thread cannot be started.
    pub fn start(config: &crate::Config, router: &Router) -> Result<Self, Error> {
        let pipeline = crate::StorePipeline::new(config.pipeline_config())?;
        let root = Self::build(config.store.as_ref(), config.ignore_case, &pipeline)?;
        let worker = spawn_pipeline(&pipeline, root, STORE_DRAIN)?;
        router.set_tap(Arc::new(pipeline.clone()));
        Ok(Self {
            pipeline,
            worker: Some(worker),
            ignore_case: config.ignore_case,
            has_tree: AtomicBool::new(config.store.is_some()),
        })
    }

    fn build(
        store: Option<&crate::StoreConfig>,
        ignore_case: bool,
        pipeline: &crate::StorePipeline,
    ) -> Result<Box<dyn crate::Store>, Error> {
        let Some(store) = store else {
            return Ok(Box::new(crate::NullStore::default()));
        };
        let built = crate::build_store(store, ignore_case, pipeline.bell())?;
        for link in built.links {
            tokio::spawn(drive_link(link));
        }
        Ok(built.store)
    }

    /// Replaces the store tree with the one `config` describes (SIGHUP).
    /// Queued messages stay queued and go to the new tree; the old tree is
    /// committed and kept until everything it took is acknowledged. The
    /// queue settings are those of [`Stores::start`].
    ///
    /// # Errors
    /// [`Error::Config`] when the new tree cannot work, or when `config`
    /// has no `store` block while a store tree runs (the null store in its
    /// place would discard every message, and publishers would be told it
    /// was stored); the old tree stays.
    pub fn reload(&self, config: &crate::Config) -> Result<(), Error> {
        if config.store.is_none() && self.has_tree.load(Ordering::Relaxed) {
            return Err(Error::Config(
                "the reloaded config has no `store` block; removing the store tree needs a restart"
                    .into(),
            ));
        }
        if config.ignore_case != self.ignore_case {
            tracing::warn!(
                "reload: ignore_case changes need a restart; topic filters use the new value"
            );
        }
        let root = Self::build(config.store.as_ref(), config.ignore_case, &self.pipeline)?;
        self.pipeline.replace_root(root);
        if config.store.is_some() {
            self.has_tree.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stores everything queued, waits (up to 10 s) for downstream
    /// acknowledgements, and stops the worker. Serve's drain should have
    /// finished first, so that no publisher is still being answered.
    pub async fn shutdown(mut self) {
        self.pipeline.shutdown();
        if let Some(worker) = self.worker.take() {
            let joined = tokio::task::spawn_blocking(move || worker.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("store worker ended abnormally");
            }
        }
    }
}
