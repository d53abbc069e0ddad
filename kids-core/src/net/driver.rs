//! The toolkit's tokio adapter: one accept loop and one connection driver for any protocol.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use crate::Limits;
use crate::server::{Budget, ConnConfig, Connection, Protocol, RequestCodec, Step, Transport};

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

/// A socket to accept clients on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A unix domain socket listener.
    Unix(UnixListener),
}

/// Settings of [`serve`](super::serve) and [`serve_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Bounds of the RESP request decoder ([`serve`](super::serve) only; a
    /// server of another protocol bounds its own codec).
    pub limits: Limits,
    /// The connection policy: read batching, output pause, timeouts.
    pub conn: ConnConfig,
    /// Bytes all connections together may buffer (read buffers and unsent
    /// output) before every connection stops reading new requests until
    /// output drains; `None`: no server-wide bound. Default 4 GiB, above
    /// what one client may hold, so no single client can stall the others.
    pub max_buffered: Option<u64>,
    /// How long connections may take to write out what they hold after shutdown.
    pub drain_timeout: Duration,
    /// How often [`Router::tick`](crate::Router::tick) runs (INFO rates; [`serve`](super::serve) only).
    pub tick_interval: Duration,
    /// Clients served at once, at most (`max_clients`); a client over it
    /// is sent [`ServerConfig::busy_reply`] and closed (unless
    /// [`ServerConfig::evict_idle`] makes room for it).
    pub max_clients: Option<usize>,
    /// When `max_clients` is reached, close the client idle longest
    /// ([`Connection::idle_since`]) to serve the new one, rather than
    /// refusing the new one; a new client is refused only when none is
    /// idle. For protocols whose clients connect and go quiet (statsd's TCP
    /// input), so that idle clients cannot lock new ones out. Default off.
    pub evict_idle: bool,
    /// What a client over `max_clients` is sent (Redis's
    /// `-ERR max number of clients reached` line by default).
    pub busy_reply: Bytes,
    /// After a failed accept (out of descriptors, say), the loop waits this
    /// long, doubling up to 1 s while accepts keep failing.
    pub accept_backoff: Duration,
    /// Counts the clients refused at `max_clients`, when set (for the
    /// server's own statistics). Default `None`.
    pub refused: Option<Arc<AtomicU64>>,
    /// Counts the idle clients closed to make room at `max_clients`
    /// ([`ServerConfig::evict_idle`]), when set. Default `None`.
    pub evicted: Option<Arc<AtomicU64>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            conn: ConnConfig::default(),
            max_buffered: Some(4 << 30),
            drain_timeout: Duration::from_secs(5),
            tick_interval: Duration::from_secs(1),
            max_clients: None,
            evict_idle: false,
            busy_reply: Bytes::from_static(b"-ERR max number of clients reached\r\n"),
            accept_backoff: Duration::from_millis(10),
            refused: None,
            evicted: None,
        }
    }
}

/// Accepts clients on every listener until `shutdown` completes, each served
/// by a [`Connection`] of the protocol and codec `make` returns; then stops
/// accepting, lets every connection write out what it already holds (up to
/// [`ServerConfig::drain_timeout`]), closes the rest and returns.
///
/// This is the one accept loop of the SDK's servers: kids' [`serve`](super::serve)
/// is `serve_with` of a [`Session`](crate::Session) and a
/// [`RequestDecoder`](crate::RequestDecoder).
///
/// # Errors
/// Only when there is no listener; failed accepts of single clients are
/// logged and retried after a backoff.
pub async fn serve_with<F, P, C>(
    listeners: Vec<Listener>,
    config: ServerConfig,
    make: F,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    F: Fn() -> (P, C) + Send + Sync + 'static,
    P: Protocol + Send + 'static,
    C: RequestCodec<Item = P::Request, Error = P::Error> + Send + 'static,
{
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener to serve on",
        ));
    }
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared {
        make,
        budget: config.max_buffered.map(|b| Arc::new(Budget::new(b))),
        clients: AtomicUsize::new(0),
        idle: config.evict_idle.then(|| Arc::new(IdleClients::new())),
        config: config.clone(),
    });
    for listener in listeners {
        let (shared, stop, conns) = (Arc::clone(&shared), stop_rx.clone(), tracker.clone());
        tracker.spawn(accept_loop(listener, shared, stop, conns));
    }
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
    Ok(())
}

struct Shared<F> {
    make: F,
    budget: Option<Arc<Budget>>,
    clients: AtomicUsize,
    /// Who is idle since when, kept only with [`ServerConfig::evict_idle`].
    idle: Option<Arc<IdleClients>>,
    config: ServerConfig,
}

/// The clients of a server that evicts idle ones, and since when each is idle.
struct IdleClients {
    epoch: Instant,
    next: AtomicU64,
    clients: Mutex<HashMap<u64, Arc<Tracked>>>,
}

/// One client, as [`IdleClients`] sees it.
struct Tracked {
    /// Nanoseconds from the epoch to when it went idle, plus one; 0 while busy.
    idle_since: AtomicU64,
    /// Where the accept loop asks it to close for a new client; it answers
    /// whether it does.
    ask: mpsc::Sender<oneshot::Sender<bool>>,
}

/// Where a connection says since when it is idle.
struct IdleMark {
    epoch: Instant,
    tracked: Arc<Tracked>,
}

/// Where a connection is asked to close for a new client.
type Asks = mpsc::Receiver<oneshot::Sender<bool>>;

impl IdleClients {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters a new client, busy: its id (for [`ClientSlot`] to remove it)
    /// and the connection's side.
    fn track(&self) -> (u64, IdleMark, Asks) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (ask, asks) = mpsc::channel(1);
        let tracked = Arc::new(Tracked {
            idle_since: AtomicU64::new(0),
            ask,
        });
        self.lock().insert(id, Arc::clone(&tracked));
        let mark = IdleMark {
            epoch: self.epoch,
            tracked,
        };
        (id, mark, asks)
    }

    /// Asks the clients idle, longest idle first, to close for a new one
    /// until one does: true then; false when none is idle or every one
    /// asked had become busy since it last said (it read bytes that had
    /// reached its socket, and keeps them).
    async fn make_room(&self) -> bool {
        let mut asked = Vec::new();
        loop {
            let oldest = self
                .lock()
                .iter()
                .filter(|(id, _)| !asked.contains(*id))
                .filter_map(|(id, t)| match t.idle_since.load(Ordering::Relaxed) {
                    0 => None,
                    since => Some((since, *id, t.ask.clone())),
                })
                .min_by_key(|(since, id, _)| (*since, *id));
            let Some((_, id, ask)) = oldest else {
                return false;
            };
            asked.push(id);
            let (answer, answered) = oneshot::channel();
            // Full: another accept loop asks it already; closed: it ended.
            if ask.try_send(answer).is_ok() && answered.await == Ok(true) {
                return true;
            }
        }
    }
}

impl IdleMark {
    fn set(&self, idle_since: Option<Instant>) {
        let v = idle_since.map_or(0, |at| {
            at.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
        });
        self.tracked.idle_since.store(v, Ordering::Relaxed);
    }
}

/// Counts a client for `max_clients`, and keeps its entry in
/// [`IdleClients`], while it lives.
struct ClientSlot<F> {
    shared: Arc<Shared<F>>,
    tracked: Option<u64>,
}

impl<F> Drop for ClientSlot<F> {
    fn drop(&mut self) {
        if let (Some(idle), Some(id)) = (&self.shared.idle, self.tracked) {
            idle.lock().remove(&id);
        }
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop<F, P, C>(
    listener: Listener,
    shared: Arc<Shared<F>>,
    mut stop: watch::Receiver<Stop>,
    conns: TaskTracker,
) where
    F: Fn() -> (P, C) + Send + Sync + 'static,
    P: Protocol + Send + 'static,
    C: RequestCodec<Item = P::Request, Error = P::Error> + Send + 'static,
{
    let mut backoff = shared.config.accept_backoff;
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok(s) => {
                backoff = shared.config.accept_backoff;
                s
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let count = shared.clients.fetch_add(1, Ordering::Relaxed);
        let mut slot = ClientSlot {
            shared: Arc::clone(&shared),
            tracked: None,
        };
        if shared.config.max_clients.is_some_and(|max| count >= max) {
            let made_room = match &shared.idle {
                Some(idle) => tokio::select! {
                    made = idle.make_room() => made,
                    _ = stop.changed() => return,
                },
                None => false,
            };
            if made_room {
                tracing::debug!("max_clients reached: closing the client idle longest");
                count_one(shared.config.evicted.as_deref());
            } else {
                tracing::warn!("max_clients reached: refusing a client");
                count_one(shared.config.refused.as_deref());
                let reply = &shared.config.busy_reply;
                match &stream {
                    Stream::Tcp(s) => drop(s.try_write(reply)),
                    Stream::Unix(s) => drop(s.try_write(reply)),
                }
                continue;
            }
        }
        let (protocol, codec) = (shared.make)();
        let conn = Connection::new(
            protocol,
            codec,
            shared.config.conn,
            shared.budget.clone(),
            Instant::now(),
        );
        let stop = stop.clone();
        let (mark, asks) = match &shared.idle {
            Some(idle) => {
                let (id, mark, asks) = idle.track();
                slot.tracked = Some(id);
                (Some(mark), Some(asks))
            }
            None => (None, None),
        };
        match stream {
            Stream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                conns.spawn(async move {
                    let _slot = slot;
                    log_end(drive(s, conn, stop, mark, asks).await);
                });
            }
            Stream::Unix(s) => {
                conns.spawn(async move {
                    let _slot = slot;
                    log_end(drive(s, conn, stop, mark, asks).await);
                });
            }
        }
    }
}

fn count_one(counter: Option<&AtomicU64>) {
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn log_end(result: io::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A stream accepted by a listener, or connected by a network store.
pub(crate) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Stream> {
    match listener {
        Listener::Tcp(l) => Ok(Stream::Tcp(l.accept().await?.0)),
        Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
    }
}

/// A tokio byte stream as a [`Transport`].
struct Io<S>(S);

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for Io<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
}

/// Runs `conn` on `stream` until it ends or `stop` says so: at
/// [`Stop::Drain`] it stops reading and writes out what it holds first, at
/// [`Stop::Abort`] it closes at once. Timeouts run on a timer armed at
/// [`Connection::poll_timeout`]; [`Step::Yield`] yields to the runtime, so
/// output that other connections push in one pass is written together.
///
/// # Errors
/// The IO error that ended the connection, if one did.
pub async fn run_connection<S, P, C>(
    stream: S,
    conn: Connection<P, C>,
    stop: watch::Receiver<Stop>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: Protocol,
    C: RequestCodec<Item = P::Request, Error = P::Error>,
{
    drive(stream, conn, stop, None, None).await
}

/// [`run_connection`], telling `mark` since when the connection is idle
/// after each poll. Asked to close for a new client, it polls once more
/// (bytes may have reached the socket since it last said) and closes only
/// if it is still idle since then, as a draining connection does; else it
/// answers no and serves on.
async fn drive<S, P, C>(
    stream: S,
    mut conn: Connection<P, C>,
    mut stop: watch::Receiver<Stop>,
    mark: Option<IdleMark>,
    mut asks: Option<Asks>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: Protocol,
    C: RequestCodec<Item = P::Request, Error = P::Error>,
{
    let mut io = Io(stream);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    let mut level = Stop::Drain;
    // Since when the last poll found it idle, and an ask to close waiting
    // for the next poll's answer.
    let mut recorded: Option<Instant> = None;
    let mut asked: Option<oneshot::Sender<bool>> = None;
    let result = loop {
        let step = tokio::select! {
            biased;
            r = poll_fn(|cx| {
                let polled = conn.poll(cx, &mut io, Instant::now());
                if let Some(mark) = &mark {
                    let since = conn.idle_since();
                    if let Some(answer) = asked.take() {
                        let evict = polled.is_pending() && since.is_some() && since == recorded;
                        if answer.send(evict).is_ok() && evict {
                            tracing::debug!("closing the client idle longest for a new one");
                            conn.stop_reading();
                            // Idle: the next poll finishes it.
                            cx.waker().wake_by_ref();
                        }
                    }
                    recorded = conn.idle_since();
                    mark.set(recorded);
                }
                if polled.is_pending()
                    && let Some(at) = conn.poll_timeout()
                {
                    // Re-armed only for an earlier deadline: a later one is
                    // checked when the armed timer fires.
                    if armed.is_none_or(|a| at < a) {
                        timer.as_mut().reset(at.into());
                        armed = Some(at);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        armed = None;
                        cx.waker().wake_by_ref();
                    }
                }
                polled
            }) => r,
            () = wait_for(&mut stop, level) => {
                if level == Stop::Abort {
                    break Ok(());
                }
                conn.stop_reading();
                level = Stop::Abort;
                continue;
            }
            Some(answer) = asked_to_close(&mut asks) => {
                // Answered by the next poll.
                asked = Some(answer);
                continue;
            }
        };
        match step {
            Ok(Step::Closed) => break Ok(()),
            Ok(Step::Yield) => tokio::task::yield_now().await,
            Err(e) => break Err(e),
        }
    };
    let _ = io.0.shutdown().await;
    result
}

/// The next ask to close for a new client; never without `asks`.
async fn asked_to_close(asks: &mut Option<Asks>) -> Option<oneshot::Sender<bool>> {
    match asks {
        Some(asks) => asks.recv().await,
        None => std::future::pending().await,
    }
}

async fn wait_for(stop: &mut watch::Receiver<Stop>, at_least: Stop) {
    if stop.wait_for(|s| *s >= at_least).await.is_err() {
        // The server is gone without a shutdown: keep serving.
        std::future::pending::<()>().await;
    }
}
