//! The tokio adapter (feature `tokio`): serve a [`Server`] on TCP or unix sockets, and a [`Client`] with reconnect and per-call deadlines.
//!
//! ```no_run
//! use wish_core::{Server, ServerConfig, net};
//!
//! # async fn run() -> Result<(), wish_core::Error> {
//! let server = Server::new(ServerConfig::default()); // .with_service(CalcServer::new(handler))?
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(net::serve(listener, server, std::future::pending()));
//! let client = net::Client::new(net::Endpoint::Tcp(addr.to_string()));
//! // CalcClient::new(client).plus(...).await
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::codec::{Decoder, FramedRead, FramedWrite};

use crate::client::{CallOptions, Channel, Multiplexer, RawReply, request_frame};
use crate::error::{Code, Error, FrameError, Status};
use crate::frame::{Body, Frame, FrameCodec};
use crate::limits::ReadLimits;
use crate::options::MethodDesc;
use crate::server::Server;

/// What [`serve`] accepts connections on.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A unix domain socket listener.
    Unix(tokio::net::UnixListener),
}

impl From<tokio::net::TcpListener> for Listener {
    fn from(listener: tokio::net::TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

impl From<tokio::net::UnixListener> for Listener {
    fn from(listener: tokio::net::UnixListener) -> Listener {
        Listener::Unix(listener)
    }
}

/// Accepts connections (TCP or unix socket) and serves each until
/// `shutdown` completes. Then it stops accepting, lets every connection
/// answer the calls it has read (reading no more), and returns once they
/// are done, or after [`ServerConfig::drain_timeout`](crate::ServerConfig),
/// when the calls still running are dropped.
///
/// Each connection is one task. A call whose handler finishes when first
/// polled is answered by that task, and the answers of one read go out in
/// one write; a handler that awaits goes on in a task of its own. A method
/// whose handler computes for over 100 µs before its first await, eight
/// calls in a row, has its calls started as tasks (see
/// [`Server::first_poll_took`]), so they run side by side on a
/// multi-threaded runtime, until its first polls are quick again; a handler
/// that computes for long on every call does better to say so with
/// `tokio::task::spawn_blocking`.
///
/// # Errors
/// Only if accepting fails for a reason other than a transient one.
pub async fn serve(
    listener: impl Into<Listener>,
    server: Server,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    serve_with(listener, server, FrameCodec::new(), shutdown).await
}

/// As [`serve`], with this codec's bounds.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: impl Into<Listener>,
    server: Server,
    codec: FrameCodec,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let listener = listener.into();
    let (stop, stopping) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    let accepting = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            accepted = accept(&listener) => match accepted {
                Ok(Some(stream)) => {
                    let (server, codec, stop) = (server.clone(), codec.clone(), stopping.clone());
                    match stream {
                        Accepted::Tcp(stream, peer) => {
                            conns.spawn(connection(stream, server, codec, stop, peer.to_string()))
                        }
                        Accepted::Unix(stream) => {
                            conns.spawn(connection(stream, server, codec, stop, "unix socket".into()))
                        }
                    };
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            },
            // Reap finished connections, so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    };
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(server.config().drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            "drain timed out; dropping the calls still running"
        );
    }
    accepting
}

/// A connection just accepted.
enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// Accepts one connection; `None` after a transient failure.
async fn accept(listener: &Listener) -> Result<Option<Accepted>, Error> {
    let accepted = match listener {
        Listener::Tcp(l) => l.accept().await.map(|(stream, peer)| {
            let _ = stream.set_nodelay(true);
            Accepted::Tcp(stream, peer)
        }),
        Listener::Unix(l) => l.accept().await.map(|(stream, _)| Accepted::Unix(stream)),
    };
    match accepted {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => accept_error(e).await.map(|()| None),
    }
}

async fn connection<S>(
    stream: S,
    server: Server,
    codec: FrameCodec,
    stop: watch::Receiver<bool>,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    if let Err(e) = run_connection(stream, server, codec, stop).await {
        tracing::debug!(%peer, error = %e, "wish connection ended");
    }
}

async fn accept_error(e: std::io::Error) -> Result<(), Error> {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock => Ok(()),
        // Out of file descriptors and the like: wait rather than spin.
        _ if e.raw_os_error().is_some() => {
            tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }
        _ => Err(e.into()),
    }
}

/// Serves one connection: reads requests, runs up to
/// [`ServerConfig::max_in_flight`](crate::ServerConfig) calls at once (then
/// stops reading), answers each as it completes, in any order. A cancel
/// frame aborts its call; a deadline turns into [`Code::DEADLINE_EXCEEDED`].
/// A frame that does not decode is answered with an error frame of id 0,
/// and the connection is closed; so is one that breaks the server's
/// [`ReadLimits`] (read timeout, idle timeout, budget of partial frames).
///
/// # Errors
/// The frame, limit or IO error that ended the connection.
pub async fn serve_connection<S>(stream: S, server: Server, codec: FrameCodec) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (_never, stop) = watch::channel(false);
    run_connection(stream, server, codec, stop).await
}

/// A request payload larger than this is encoded before the client's
/// outgoing buffer is locked, so that callers do not wait for its copy or
/// compression.
const ENCODE_APART: usize = 16 * 1024;

/// A connection's read buffer starts this big, and is given back once a
/// frame that made it grow is read and its buffer is empty.
const READ_BUF: usize = 8 * 1024;
/// Buffers bigger than this are given back when they empty.
const KEEP_BUF: usize = 64 * 1024;
/// How long a connection being closed may take to send its error frame.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// [`serve_connection`], which also stops reading when `stop` turns true.
///
/// It reads into its own buffer rather than through `FramedRead`, so that it
/// knows what is left of a frame after each read: the [`ReadLimits`] of the
/// connection (read timeout, idle timeout, the server's budget of partial
/// frames) apply to that.
async fn run_connection<S>(
    stream: S,
    server: Server,
    codec: FrameCodec,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = tokio::io::split(stream);
    let mut decoder = codec.clone();
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut writer = FramedWrite::new(write, codec);
    let mut limits = ReadLimits::new(&server, Instant::now());
    let max = server.config().max_in_flight.max(1);
    let mut calls = Calls::default();
    // Answers of calls done when first polled, written after their batch.
    let mut ready: Vec<Frame> = Vec::new();
    let mut reading = true;
    // Bytes were read since the buffer was last decoded.
    let mut fresh = false;
    // Not reading for now, at the bound of calls in flight.
    let mut paused = false;
    // One timer for the limits' deadline, reset only when that changes.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        if reading && (fresh || calls.tasks.len() < max) {
            let mut completed = false;
            // The clock, read once for the calls of this batch.
            let mut clock: Option<BatchClock> = None;
            while calls.tasks.len() < max {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        completed = true;
                        let clock = clock.get_or_insert_with(BatchClock::now);
                        if let Err(e) = calls.start(frame, &server, clock, &mut ready).await {
                            return Err(goodbye(&mut writer, e.status(), e.into()).await);
                        }
                    }
                    Ok(None) => break,
                    Err(Error::Frame(e)) => {
                        return Err(goodbye(&mut writer, e.status(), e.into()).await);
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut now = clock.map(|c| c.mark);
            if !ready.is_empty() {
                // The answers of the calls done at once, after the whole
                // batch: a cancel read in it still drops its call's answer.
                for answer in ready.drain(..) {
                    send_answer(&mut writer, answer).await?;
                }
                writer.flush().await?;
                let written = Instant::now();
                limits.handle_answer(written);
                now = Some(written);
            }
            let now = now.unwrap_or_else(Instant::now);
            if fresh {
                if let Err(e) = limits.handle_read(buf.len(), completed, now) {
                    return Err(goodbye(&mut writer, e.status(), e.into()).await);
                }
            } else if completed {
                // Frames that waited in the buffer for calls to finish: no
                // fresh byte, so the clock of what is left goes on.
                limits.handle_decoded(buf.len(), now);
            }
            fresh = false;
            if buf.is_empty() && buf.capacity() > KEEP_BUF {
                buf = BytesMut::with_capacity(READ_BUF);
            }
        }
        let can_read = reading && calls.tasks.len() < max;
        if reading && can_read == paused {
            // Backpressure starts or ends: the read clock stops or goes on.
            paused = !can_read;
            limits.handle_paused(paused, Instant::now());
        }
        let deadline = if can_read {
            limits.deadline(!calls.tasks.is_empty())
        } else {
            None
        };
        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(at.into());
            }
            armed = deadline;
        }
        if can_read && buf.capacity() - buf.len() < READ_BUF / 2 {
            buf.reserve(READ_BUF);
        }
        tokio::select! {
            changed = stop.changed(), if reading => {
                if changed.is_err() || *stop.borrow() {
                    // Shutting down: answer what was read, read nothing more;
                    // a partial frame is dropped, as at the end of input.
                    reading = false;
                    buf.clear();
                    limits.handle_read(0, false, Instant::now())?;
                }
            }
            n = read.read_buf(&mut buf), if can_read => match n? {
                0 => {
                    // The peer is done sending; a partial frame is dropped.
                    reading = false;
                    buf.clear();
                    limits.handle_read(0, false, Instant::now())?;
                }
                _ => fresh = true,
            },
            () = &mut timer, if deadline.is_some() => {
                if let Err(e) = limits.handle_timeout(Instant::now(), !calls.tasks.is_empty()) {
                    return Err(goodbye(&mut writer, e.status(), e.into()).await);
                }
            }
            done = calls.tasks.join_next_with_id(), if !calls.tasks.is_empty() => {
                let mut done = done;
                // Answer every call that is ready, then flush once.
                while let Some(result) = done {
                    if let Some(frame) = calls.finished(result) {
                        send_answer(&mut writer, frame).await?;
                    }
                    done = calls.tasks.try_join_next_with_id();
                }
                writer.flush().await?;
                limits.handle_answer(Instant::now());
            }
            else => break,
        }
    }
    writer.flush().await?;
    Ok(())
}

/// Queues an answer on the connection's writer (flushed by the caller). An
/// answer too large to encode fails its call; the others go on.
async fn send_answer<W>(writer: &mut FramedWrite<W, FrameCodec>, frame: Frame) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
{
    let id = frame.id;
    match writer.feed(frame).await {
        Ok(()) => Ok(()),
        Err(Error::Frame(e)) => {
            let status = Status::new(e.code(), format!("answer not sent: {e}"));
            writer.feed(Frame::error(id, status)).await
        }
        Err(e) => Err(e),
    }
}

/// A handler whose first poll takes this long, [`LONG_POLLS`](crate::LONG_POLLS)
/// times in a row, has its method's later calls started as tasks of their
/// own rather than polled first by the connection.
const INLINE_BUDGET: Duration = Duration::from_micros(100);

/// The clock of a batch of frames decoded from one read: read once when the
/// batch starts, and once more after each call polled on the connection,
/// which times that poll. A call's start time is the last reading, carried
/// over to the wall clock.
#[derive(Clone, Copy)]
struct BatchClock {
    /// The wall clock when the batch started.
    wall: SystemTime,
    /// The monotonic clock then.
    start: Instant,
    /// The last reading: the end of the last poll.
    mark: Instant,
}

impl BatchClock {
    fn now() -> BatchClock {
        let start = Instant::now();
        BatchClock {
            wall: SystemTime::now(),
            start,
            mark: start,
        }
    }

    /// The wall clock at the last reading, for the server (cache, `CallContext`).
    fn wall(&self) -> SystemTime {
        self.wall + (self.mark - self.start)
    }
}

/// The calls of one connection: their tasks, and their ids both ways.
#[derive(Default)]
struct Calls {
    tasks: JoinSet<Frame>,
    aborts: HashMap<u64, AbortHandle>,
    ids: HashMap<tokio::task::Id, u64>,
}

impl Calls {
    /// Starts the call a request frame asks for, or stops the one a cancel
    /// frame names.
    ///
    /// A call is first polled by the connection itself: a handler that
    /// answers at once (an arithmetic, a cache hit, an error) costs no task,
    /// and its answer goes to `ready`, written after the batch (so a cancel
    /// in the same batch still drops it). One that is not done yet goes on
    /// in a task of its own, so slow calls overlap and are answered in any
    /// order. A method whose first polls take longer than [`INLINE_BUDGET`]
    /// again and again (a handler that computes for long without awaiting)
    /// is then started as a task at once, so that its calls run on every
    /// worker thread rather than one after another on the connection's; see
    /// [`Server::first_poll_took`]. A handler's first poll thus has the
    /// connection task's waker, and the later ones its own task's: a future
    /// must use the waker of its latest poll, as the `Future` contract says.
    async fn start(
        &mut self,
        frame: Frame,
        server: &Server,
        clock: &mut BatchClock,
        ready: &mut Vec<Frame>,
    ) -> Result<(), FrameError> {
        match frame.body {
            Body::Request(req) => {
                if frame.id == 0 {
                    return Err(FrameError::ReservedId);
                }
                if self.aborts.contains_key(&frame.id) {
                    return Err(FrameError::IdInFlight(frame.id));
                }
                let id = frame.id;
                let deadline = req.deadline;
                let method = req.method;
                let call = server.handle(id, req, clock.wall());
                let stats = server.clone();
                let mut call = Box::pin(async move {
                    match deadline {
                        None => call.await,
                        Some(d) => match tokio::time::timeout(d, call).await {
                            Ok(frame) => frame,
                            Err(_) => {
                                stats.stats().cancelled.fetch_add(1, Ordering::Relaxed);
                                Frame::error(id, Status::deadline_exceeded())
                            }
                        },
                    }
                });
                let inline = server.runs_inline(method);
                if inline {
                    let polled = std::future::poll_fn(|cx| {
                        // As a task's would, a panic fails this call only.
                        let poll = std::panic::AssertUnwindSafe(|| call.as_mut().poll(cx));
                        Poll::Ready(std::panic::catch_unwind(poll))
                    })
                    .await;
                    // Since the last reading: this poll, and decoding its frame.
                    let end = Instant::now();
                    server.first_poll_took(method, end - clock.mark > INLINE_BUDGET);
                    clock.mark = end;
                    match polled {
                        Ok(Poll::Ready(answer)) => {
                            ready.push(answer);
                            return Ok(());
                        }
                        Ok(Poll::Pending) => {}
                        Err(_) => {
                            ready.push(Frame::error(id, Status::internal("handler panicked")));
                            return Ok(());
                        }
                    }
                }
                let handle = if inline {
                    self.tasks.spawn(call)
                } else {
                    // Its first poll is timed on its task: a method whose
                    // handler got quick again comes back to the connection.
                    let server = server.clone();
                    let mut first = true;
                    self.tasks.spawn(std::future::poll_fn(move |cx| {
                        if !std::mem::take(&mut first) {
                            return call.as_mut().poll(cx);
                        }
                        let started = Instant::now();
                        let poll = call.as_mut().poll(cx);
                        server.first_poll_took(method, started.elapsed() > INLINE_BUDGET);
                        poll
                    }))
                };
                self.ids.insert(handle.id(), id);
                self.aborts.insert(id, handle);
                Ok(())
            }
            Body::Cancel => {
                if let Some(at) = ready.iter().position(|answer| answer.id == frame.id) {
                    // Done in this batch, not written yet: not answered.
                    ready.remove(at);
                } else if let Some(handle) = self.aborts.remove(&frame.id) {
                    // A call already done (its deadline passed, counted then;
                    // or its answer not yet written) is not stopped by it:
                    // its answer is dropped, and it is not counted again.
                    if !handle.is_finished() {
                        server.stats().cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    handle.abort();
                }
                Ok(())
            }
            Body::Response(_) | Body::Error(_) => Err(FrameError::WrongDirection),
        }
    }

    /// The frame that answers a finished call task, if one is due: none for a
    /// cancelled call (even one that had finished before its cancel was read),
    /// an internal error for a panicked handler.
    fn finished(
        &mut self,
        result: Result<(tokio::task::Id, Frame), tokio::task::JoinError>,
    ) -> Option<Frame> {
        let task = match &result {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let id = self.ids.remove(&task)?;
        // The id may have been cancelled, and even reused by a newer call since.
        if self.aborts.get(&id).map(AbortHandle::id) != Some(task) {
            return None;
        }
        self.aborts.remove(&id);
        match result {
            Ok((_, frame)) => Some(frame),
            Err(e) => e
                .is_panic()
                .then(|| Frame::error(id, Status::internal("handler panicked"))),
        }
    }
}

/// Tells the client why its connection is being closed (an error frame
/// with id 0, `status`, if it goes within [`GOODBYE_TIMEOUT`]), and gives
/// back the error to return.
async fn goodbye<W>(writer: &mut FramedWrite<W, FrameCodec>, status: Status, err: Error) -> Error
where
    W: AsyncWrite + Unpin,
{
    let farewell = writer.send(Frame::error(0, status));
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, farewell).await;
    err
}

/// Where a [`Client`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

/// Client settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Calls in flight on the connection; more fail with
    /// [`Code::RESOURCE_EXHAUSTED`]. Default 65,536.
    pub max_in_flight: usize,
    /// Frames queued for the socket before callers wait. Default 1024.
    pub write_queue: usize,
    /// How long connecting may take. Default 5 s.
    pub connect_timeout: Duration,
    /// The codec's bounds and compression threshold.
    pub codec: FrameCodec,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_in_flight: 65_536,
            write_queue: 1024,
            connect_timeout: Duration::from_secs(5),
            codec: FrameCodec::new(),
        }
    }
}

type Waiter = oneshot::Sender<Result<RawReply, Status>>;

/// A [`Channel`] over one connection, multiplexing many calls on it.
///
/// It connects on the first call, and again on the first call after the
/// connection is lost; calls in flight on a lost connection fail with
/// [`Code::UNAVAILABLE`] (they are not retried: the server may have run
/// them). A call dropped before its answer sends a cancel frame; a call
/// with a deadline fails with [`Code::DEADLINE_EXCEEDED`] when it passes.
///
/// A call encodes its request frame itself, into the connection's outgoing
/// buffer; one writer task sends all that is buffered with each write, so
/// calls made together share a system call. One reader task hands each
/// answer to its caller.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    endpoint: Endpoint,
    config: ClientConfig,
    /// The connection calls use, looked up without waiting.
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so that one call connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
}

struct Conn {
    calls: Mutex<Multiplexer<Waiter>>,
    out: Arc<Outbox>,
    /// The writer task, stopped when the connection is lost.
    writer: Mutex<Option<tokio::task::AbortHandle>>,
    codec: FrameCodec,
    /// Frames buffered before a call waits for the writer.
    max_queued: usize,
    closed: AtomicBool,
}

/// The frames encoded and not yet written, shared by the callers of a
/// connection and its writer task.
struct Outbox {
    queue: Mutex<Queued>,
    /// Wakes the writer: frames were buffered, or the connection was dropped.
    ready: Notify,
    /// Wakes callers waiting for room.
    room: Notify,
}

#[derive(Default)]
struct Queued {
    buf: BytesMut,
    frames: usize,
    /// Every handle of the connection is gone: write what is left, then shut down.
    done: bool,
    /// The writer stopped (a write failed): nothing buffered will be sent.
    failed: bool,
}

impl Outbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queued> {
        crate::lock(&self.queue)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.out.queue().done = true;
        self.out.ready.notify_one();
    }
}

impl Conn {
    fn calls(&self) -> std::sync::MutexGuard<'_, Multiplexer<Waiter>> {
        crate::lock(&self.calls)
    }

    /// The connection is lost: every call waiting fails, callers waiting
    /// for room are told, and the writer stops (it may be stuck writing to a
    /// server that no longer reads).
    fn close(&self, why: &str) {
        self.closed.store(true, Ordering::Release);
        let waiters: Vec<Waiter> = self.calls().drain().collect();
        for w in waiters {
            let _ = w.send(Err(Status::unavailable(why.to_string())));
        }
        self.out.queue().failed = true;
        self.out.room.notify_waiters();
        if let Some(writer) = crate::lock(&self.writer).take() {
            writer.abort();
        }
    }

    /// Encodes `frame` into the outgoing buffer, once there is room. A
    /// large frame is encoded (and compressed) before the buffer is locked.
    async fn send(&self, frame: &Frame) -> Result<(), Error> {
        let mut encoded = None;
        if let Body::Request(req) = &frame.body
            && req.payload.len() > ENCODE_APART
        {
            let mut own = BytesMut::new();
            self.codec.encode_ref(frame, &mut own)?;
            encoded = Some(own);
        }
        loop {
            let room = self.out.room.notified();
            tokio::pin!(room);
            {
                let mut queued = self.out.queue();
                if queued.failed {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "connection closed",
                    )));
                }
                if queued.frames < self.max_queued {
                    match &encoded {
                        Some(bytes) => queued.buf.extend_from_slice(bytes),
                        None => self.codec.encode_ref(frame, &mut queued.buf)?,
                    }
                    queued.frames += 1;
                    let first = queued.frames == 1;
                    drop(queued);
                    if first {
                        self.out.ready.notify_one();
                    }
                    return Ok(());
                }
                // Registered before the lock is let go: the writer's next
                // take of the buffer wakes it.
                room.as_mut().enable();
            }
            room.await;
        }
    }

    /// Buffers a cancel frame for call `id`, without waiting.
    fn cancel(&self, id: u64) {
        let mut queued = self.out.queue();
        if queued.failed {
            return;
        }
        let first = queued.frames == 0;
        if self
            .codec
            .encode_ref(&Frame::cancel(id), &mut queued.buf)
            .is_ok()
        {
            queued.frames += 1;
            drop(queued);
            if first {
                self.out.ready.notify_one();
            }
        }
    }
}

impl Client {
    /// A client of `endpoint` with default settings; it connects on first use.
    pub fn new(endpoint: Endpoint) -> Client {
        Client::with_config(endpoint, ClientConfig::default())
    }

    /// A client with these settings.
    pub fn with_config(endpoint: Endpoint, config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                endpoint,
                config,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Connects now rather than on the first call.
    ///
    /// # Errors
    /// [`Code::UNAVAILABLE`] if the server cannot be reached.
    pub async fn connect(&self) -> Result<(), Status> {
        self.inner.conn().await.map(|_| ())
    }
}

impl ClientInner {
    /// The open connection, if there is one.
    fn open_conn(&self) -> Option<Arc<Conn>> {
        crate::lock(&self.current)
            .as_ref()
            .filter(|conn| !conn.closed.load(Ordering::Acquire))
            .cloned()
    }

    async fn conn(&self) -> Result<Arc<Conn>, Status> {
        if let Some(conn) = self.open_conn() {
            return Ok(conn);
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(conn) = self.open_conn() {
            return Ok(conn);
        }
        let conn = tokio::time::timeout(self.config.connect_timeout, self.open())
            .await
            .map_err(|_| Status::unavailable("connect timed out"))?
            .map_err(|e| Status::unavailable(format!("connect: {e}")))?;
        *crate::lock(&self.current) = Some(conn.clone());
        Ok(conn)
    }

    async fn open(&self) -> std::io::Result<Arc<Conn>> {
        match &self.endpoint {
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(self.start(stream))
            }
            Endpoint::Unix(path) => Ok(self.start(tokio::net::UnixStream::connect(path).await?)),
        }
    }

    fn start<S: AsyncRead + AsyncWrite + Send + 'static>(&self, stream: S) -> Arc<Conn> {
        let (read, mut write) = tokio::io::split(stream);
        let out = Arc::new(Outbox {
            queue: Mutex::new(Queued::default()),
            ready: Notify::new(),
            room: Notify::new(),
        });
        let conn = Arc::new(Conn {
            calls: Mutex::new(Multiplexer::new(self.config.max_in_flight)),
            out: out.clone(),
            writer: Mutex::new(None),
            codec: self.config.codec.clone(),
            max_queued: self.config.write_queue.max(1),
            closed: AtomicBool::new(false),
        });
        // The writer holds the outbox, and the connection weakly: once every
        // `Client` clone and every call is gone, the connection drops, the
        // writer sends what is left and shuts the socket down, the server
        // closes its side, and the reader ends too.
        let writing = Arc::downgrade(&conn);
        let writer = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                let done = {
                    let mut queued = out.queue();
                    std::mem::swap(&mut buf, &mut queued.buf);
                    queued.frames = 0;
                    queued.done
                };
                if buf.is_empty() {
                    if done {
                        break;
                    }
                    out.ready.notified().await;
                    // The caller that woke this task may have others ready
                    // after it (answers come in batches, and each wakes its
                    // caller): let them buffer their frames too, so that one
                    // write carries them all. Yield once, and again while
                    // frames keep coming (at most 8 times); a lone caller
                    // costs one yield. Without it a woken task often runs
                    // right after its waker, and each frame costs a write.
                    let mut seen = out.queue().frames;
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                        let now = out.queue().frames;
                        if now == seen {
                            break;
                        }
                        seen = now;
                    }
                    continue;
                }
                out.room.notify_waiters();
                if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut write, &buf).await {
                    out.queue().failed = true;
                    out.room.notify_waiters();
                    if let Some(conn) = writing.upgrade() {
                        conn.close(&format!("write: {e}"));
                    }
                    return;
                }
                buf.clear();
                if buf.capacity() > KEEP_BUF {
                    buf = BytesMut::new();
                }
            }
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut write).await;
        });
        *crate::lock(&conn.writer) = Some(writer.abort_handle());
        let mut reader = FramedRead::new(read, self.config.codec.clone());
        let reading = Arc::downgrade(&conn);
        tokio::spawn(async move {
            let why = loop {
                match reader.next().await {
                    None => break "connection closed by the server".to_string(),
                    Some(Err(e)) => break format!("read: {e}"),
                    Some(Ok(frame)) => {
                        if frame.id == 0
                            && let Body::Error(status) = &frame.body
                        {
                            break format!("server closed the connection: {status}");
                        }
                        let Some(conn) = reading.upgrade() else {
                            return;
                        };
                        let done = conn.calls().complete(frame);
                        if let Some((waiter, reply)) = done {
                            let _ = waiter.send(reply);
                        }
                    }
                }
            };
            if let Some(conn) = reading.upgrade() {
                conn.close(&why);
            }
        });
        conn
    }
}

/// Removes its call and sends a cancel frame if dropped before the answer came.
struct CancelOnDrop {
    conn: Arc<Conn>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed && self.conn.calls().remove(self.id).is_some() {
            self.conn.cancel(self.id);
        }
    }
}

impl Channel for Client {
    fn call(
        &self,
        method: &'static MethodDesc,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<RawReply, Status>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let conn = inner.conn().await?;
            let (tx, rx) = oneshot::channel();
            let id = conn
                .calls()
                .insert(tx)
                .ok_or_else(|| Status::new(Code::RESOURCE_EXHAUSTED, "too many calls in flight"))?;
            // The reader may have closed the connection (and drained its
            // calls) since `conn()` looked: then nothing would answer this one.
            if conn.closed.load(Ordering::Acquire) {
                conn.calls().remove(id);
                return Err(Status::unavailable("connection closed"));
            }
            let mut guard = CancelOnDrop {
                conn: conn.clone(),
                id,
                armed: true,
            };
            let frame = request_frame(id, method, request, options);
            match conn.send(&frame).await {
                Ok(()) => {}
                // Too large to encode: this call fails, the others go on.
                Err(Error::Frame(e)) => {
                    guard.armed = false;
                    conn.calls().remove(id);
                    return Err(Status::new(e.code(), format!("request not sent: {e}")));
                }
                Err(_) => {
                    guard.armed = false;
                    conn.calls().remove(id);
                    return Err(Status::unavailable("connection closed"));
                }
            }
            let answer = match options.deadline {
                None => rx.await,
                Some(d) => match tokio::time::timeout(d, rx).await {
                    Ok(answer) => answer,
                    // The guard cancels the call on the server.
                    Err(_) => return Err(Status::deadline_exceeded()),
                },
            };
            guard.armed = false;
            answer.unwrap_or_else(|_| Err(Status::unavailable("connection closed")))
        })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}
