//! The tokio adapter (feature `tokio`): statsd lines over UDP and TCP, a flush timer, carbon sinks over TCP, and a health port.
//!
//! TCP input and the admin port run on kids-core's server toolkit (one
//! accept loop and connection policy for every server of the SDK): each
//! connection is a small [`Protocol`] over a [`LineDecoder`], with the
//! toolkit's connection cap, idle timeout and eviction of the client idle
//! longest ([`TcpConfig`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use kids_core::net::{Listener, ServerConfig, serve_with};
use kids_core::server::{ConnConfig, Flow, Protocol, RequestCodec};
use kids_core::{NLimits, Outbox as ConnOutbox};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, watch};
use tokio_util::codec::Decoder;

use crate::aggregate::{Aggregator, Config};
use crate::error::{Error, LineError};
use crate::health::{FlushLag, Registry, Report, SinkErrors};
use crate::line::LineDecoder;
use crate::output::Flush;
use crate::sink::{Outbox, OutboxConfig, SinkStats};

/// How a sink writes a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Graphite's plaintext protocol (carbon's port 2003).
    Plaintext,
    /// Graphite's pickle protocol (carbon's port 2004).
    Pickle,
    /// statsite's stream format (`key|value|timestamp\n`) on the standard
    /// input of a shell command started for each flush, as statsite's
    /// `stream_cmd` does, so its sink scripts keep working. A command that
    /// exits non-zero counts as a failure, and the flush is offered again.
    Stream,
}

/// One destination of flushes: a carbon server, or a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTarget {
    /// `host:port` of a carbon; for [`Format::Stream`], the shell command.
    pub addr: String,
    /// The protocol.
    pub format: Format,
    /// Its queue's bounds and backoff.
    pub outbox: OutboxConfig,
}

impl SinkTarget {
    /// A plaintext sink at `addr` with the default queue.
    pub fn plaintext(addr: impl Into<String>) -> SinkTarget {
        SinkTarget {
            addr: addr.into(),
            format: Format::Plaintext,
            outbox: OutboxConfig::default(),
        }
    }

    /// A pickle sink at `addr` (carbon's pickle port) with the default queue.
    pub fn pickle(addr: impl Into<String>) -> SinkTarget {
        SinkTarget {
            addr: addr.into(),
            format: Format::Pickle,
            outbox: OutboxConfig::default(),
        }
    }

    /// A statsite stream sink: `command` (run by `sh -c`) reads each flush
    /// on its standard input.
    pub fn stream(command: impl Into<String>) -> SinkTarget {
        SinkTarget {
            addr: command.into(),
            format: Format::Stream,
            outbox: OutboxConfig::default(),
        }
    }
}

/// The TCP input's connection policy ([`Statsd::serve_tcp`]).
///
/// ```
/// use std::time::Duration;
/// use stats_core::net::TcpConfig;
///
/// let tcp = TcpConfig {
///     idle_timeout: Some(Duration::from_secs(60)),
///     ..TcpConfig::default()
/// };
/// assert_eq!(tcp.max_connections, 1024);
/// assert!(tcp.evict_idle);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Connections served at once, at most. Default
    /// [`Statsd::MAX_TCP_CONNECTIONS`] (1,024).
    pub max_connections: usize,
    /// A connection that sent nothing for this long is closed; `None`:
    /// never. Default 5 minutes: statsd clients that keep a connection
    /// open send at least every flush interval or two.
    pub idle_timeout: Option<Duration>,
    /// When `max_connections` is reached, the connection idle longest is
    /// closed to serve the new one (only a connection in the middle of a
    /// line is never idle); otherwise a new one is closed at once. Default on.
    pub evict_idle: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_connections: Statsd::MAX_TCP_CONNECTIONS,
            idle_timeout: Some(Duration::from_secs(300)),
            evict_idle: true,
        }
    }
}

struct Sink {
    target: SinkTarget,
    outbox: Mutex<Outbox>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A statsd server: an [`Aggregator`] fed from sockets, flushed on a timer
/// to any number of sinks, each with its own bounded queue.
///
/// ```no_run
/// # async fn run() -> Result<(), stats_core::Error> {
/// use std::sync::Arc;
/// use stats_core::Config;
/// use stats_core::net::{SinkTarget, Statsd};
///
/// let statsd = Arc::new(Statsd::new(Config::etsy(), vec![SinkTarget::plaintext("127.0.0.1:2003")])?);
/// let udp = tokio::net::UdpSocket::bind("127.0.0.1:8125").await?;
/// tokio::spawn({ let s = statsd.clone(); async move { s.serve_udp(udp).await } });
/// statsd.run(std::future::pending()).await; // or a shutdown signal
/// # Ok(()) }
/// ```
pub struct Statsd {
    agg: Mutex<Aggregator>,
    sinks: Vec<Arc<Sink>>,
    lag: FlushLag,
    interval: Duration,
    drain_timeout: Duration,
    /// Becomes true just before the final flush: nothing is ingested from
    /// then on, and the TCP servers stop.
    closed: watch::Sender<bool>,
    tcp: TcpConfig,
    /// TCP clients refused at `max_connections`, and idle ones closed to
    /// make room (admin `stats`).
    tcp_refused: Arc<AtomicU64>,
    tcp_evicted: Arc<AtomicU64>,
}

impl Statsd {
    /// Most TCP connections served at once, by default ([`TcpConfig`]).
    pub const MAX_TCP_CONNECTIONS: usize = 1024;

    /// A server aggregating with `config` and writing to `sinks`.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration is out of range.
    pub fn new(config: Config, sinks: Vec<SinkTarget>) -> Result<Statsd, Error> {
        let interval = config.flush_interval;
        Ok(Statsd {
            agg: Mutex::new(Aggregator::new(config)?),
            sinks: sinks
                .into_iter()
                .map(|target| {
                    Arc::new(Sink {
                        outbox: Mutex::new(Outbox::new(target.outbox)),
                        target,
                        wake: Notify::new(),
                    })
                })
                .collect(),
            lag: FlushLag::new(interval, SystemTime::now()),
            interval,
            drain_timeout: Duration::from_secs(5),
            closed: watch::Sender::new(false),
            tcp_refused: Arc::default(),
            tcp_evicted: Arc::default(),
            tcp: TcpConfig::default(),
        })
    }

    /// The TCP input's connection policy (default [`TcpConfig::default`]).
    pub fn tcp_config(mut self, tcp: TcpConfig) -> Self {
        self.tcp = tcp;
        self
    }

    /// How long [`run`](Statsd::run) waits, at shutdown, for sinks to take
    /// the last flush. Default 5 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Ingests one packet (a datagram, or whole lines). After
    /// [`run`](Statsd::run) has made its final flush, packets are refused
    /// (returns `false`): nothing is counted that would not be sent.
    pub fn ingest(&self, packet: &[u8]) -> bool {
        let mut agg = lock(&self.agg);
        if *self.closed.borrow() {
            return false;
        }
        agg.ingest(packet);
        true
    }

    /// Whether the final flush was made (ingestion has stopped).
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Runs `f` on the aggregator (for its totals, say).
    pub fn with_aggregator<T>(&self, f: impl FnOnce(&Aggregator) -> T) -> T {
        f(&lock(&self.agg))
    }

    /// Receives datagrams, each parsed whole, until the final flush or a
    /// socket error.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn serve_udp(&self, socket: UdpSocket) -> io::Result<()> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = socket.recv(&mut buf).await?;
            if !self.ingest(&buf[..n]) {
                return Ok(());
            }
        }
    }

    /// Serves TCP connections until the final flush; each sends
    /// newline-separated lines (the last may lack its newline). A line over
    /// the bound is counted as [`LineError::TooLong`] and skipped. The
    /// connections follow [`TcpConfig`] (see [`Statsd::tcp_config`]): at
    /// most `max_connections` at once, the one idle longest closed to make
    /// room for a new one, idle ones closed after `idle_timeout`.
    ///
    /// # Errors
    /// None in practice: failed accepts are logged and retried.
    pub async fn serve_tcp(self: &Arc<Self>, listener: TcpListener) -> io::Result<()> {
        let mut config = ServerConfig::default();
        config.max_clients = Some(self.tcp.max_connections);
        config.evict_idle = self.tcp.evict_idle;
        // statsd answers nothing: a client over the cap is closed, unanswered.
        config.busy_reply = Bytes::new();
        config.conn = ConnConfig::default().idle_timeout(self.tcp.idle_timeout);
        config.refused = Some(Arc::clone(&self.tcp_refused));
        config.evicted = Some(Arc::clone(&self.tcp_evicted));
        let max_line = self.with_aggregator(|a| a.config().limits.max_line);
        self.serve_lines(listener, config, max_line, TcpInput::new)
            .await
    }

    /// Answers Etsy-style management commands on TCP, one per line:
    /// `health` gets the health report line, `stats` the ingest totals
    /// ([`Statsd::stats`]), `quit` closes. Runs until the final flush.
    ///
    /// # Errors
    /// None in practice: failed accepts are logged and retried.
    pub async fn serve_admin(self: &Arc<Self>, listener: TcpListener) -> io::Result<()> {
        let mut config = ServerConfig::default();
        config.max_clients = Some(64);
        config.busy_reply = Bytes::from_static(b"ERROR too many admin connections\n");
        self.serve_lines(listener, config, 1024, AdminConn::new)
            .await
    }

    /// Serves a line protocol made by `make` (given the server and a client
    /// id) on the toolkit's accept loop until the final flush.
    async fn serve_lines<P>(
        self: &Arc<Self>,
        listener: TcpListener,
        config: ServerConfig,
        max_line: usize,
        make: fn(Arc<Statsd>, u64) -> P,
    ) -> io::Result<()>
    where
        P: Protocol<Request = Result<Bytes, LineError>, Error = Error> + Send + 'static,
    {
        let me = Arc::clone(self);
        let next_id = std::sync::atomic::AtomicU64::new(0);
        serve_with(
            vec![Listener::Tcp(listener)],
            config,
            move || {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                (make(Arc::clone(&me), id), TcpLines::new(max_line))
            },
            self.until_closed(),
        )
        .await
    }

    /// Completes once the final flush is made.
    async fn until_closed(&self) {
        let _ = self.closed.subscribe().wait_for(|closed| *closed).await;
    }

    /// The admin port's `stats` answer: ingest totals, one `name: value`
    /// line each, then `END`.
    pub fn stats(&self) -> String {
        let (t, keys) = self.with_aggregator(|a| (a.totals().clone(), a.keys()));
        let mut s = format!(
            "packets: {}\nlines: {}\nvalues: {}\nbad_lines: {}\ndropped_keys: {}\n\
             overflowed_values: {}\ndropped_kv: {}\nkeys: {keys}\nflushes: {}\n\
             tcp_refused: {}\ntcp_evicted: {}\n",
            t.packets,
            t.lines,
            t.values,
            t.bad_total(),
            t.dropped_keys,
            t.overflows,
            t.dropped_kv,
            t.flushes,
            self.tcp_refused.load(Ordering::Relaxed),
            self.tcp_evicted.load(Ordering::Relaxed),
        );
        for reason in LineError::ALL {
            s.push_str(&format!(
                "bad_lines.{}: {}\n",
                reason.as_str(),
                t.bad(reason)
            ));
        }
        s + "END\n"
    }

    /// Flushes now: the interval's points are rendered and queued to every
    /// sink, and returned.
    pub fn flush(&self, now: SystemTime) -> Flush {
        let flush = lock(&self.agg).flush(now);
        self.lag.flushed(now);
        let n = flush.points().len();
        if n == 0 {
            return flush;
        }
        // Each format rendered once, whatever the number of its sinks.
        let mut rendered: [Option<Bytes>; 3] = Default::default();
        for sink in &self.sinks {
            let format = sink.target.format;
            let batch = rendered[format as usize]
                .get_or_insert_with(|| match format {
                    Format::Plaintext => flush.plaintext(),
                    Format::Pickle => flush.pickle(),
                    Format::Stream => flush.stream(),
                })
                .clone();
            lock(&sink.outbox).push(batch, n);
            sink.wake.notify_one();
        }
        flush
    }

    /// Each sink's counts, in the order given.
    pub fn sink_stats(&self) -> Vec<SinkStats> {
        self.sinks
            .iter()
            .map(|s| lock(&s.outbox).stats().clone())
            .collect()
    }

    /// Whether every sink failed its last attempt (and there is at least one).
    pub fn sinks_down(&self) -> bool {
        !self.sinks.is_empty()
            && self
                .sinks
                .iter()
                .all(|s| lock(&s.outbox).stats().consecutive_failures > 0)
    }

    /// The health report: flush lag, and each sink's errors.
    pub fn health(&self, now: SystemTime) -> Report {
        let mut registry = Registry::new();
        registry.register(self.lag.clone());
        for sink in &self.sinks {
            let s = Arc::clone(sink);
            registry.register(SinkErrors::new(
                format!("sink {}", sink.target.addr),
                move || lock(&s.outbox).stats().clone(),
            ));
        }
        registry.check(now)
    }

    /// Writes the sinks and flushes every interval until `shutdown`
    /// completes; then stops ingesting, flushes once more, ends any backoff,
    /// waits up to the drain timeout for the sinks to take what they hold,
    /// counts what they did not as dropped, and returns. `on_flush` sees each flush (the
    /// example prints it when no sink answers).
    pub async fn run_with(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()>,
        mut on_flush: impl FnMut(&Flush),
    ) {
        let writers: Vec<_> = self
            .sinks
            .iter()
            .map(|sink| tokio::spawn(write_sink(Arc::clone(sink))))
            .collect();
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let flush = self.flush(SystemTime::now());
                    on_flush(&flush);
                }
                () = &mut shutdown => break,
            }
        }
        // From here on nothing is ingested: what the final flush holds is all.
        self.closed.send_replace(true);
        let flush = self.flush(SystemTime::now());
        on_flush(&flush);
        for sink in &self.sinks {
            lock(&sink.outbox).retry_now();
            sink.wake.notify_one();
        }
        let drained = async {
            while !self.sinks.iter().all(|s| lock(&s.outbox).is_empty()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(self.drain_timeout, drained).await;
        for w in writers {
            w.abort();
        }
        for sink in &self.sinks {
            let lost = lock(&sink.outbox).drop_all();
            if lost > 0 {
                tracing::warn!(sink = %sink.target.addr, points = lost, "shutting down with points not sent");
            }
        }
    }

    /// [`run_with`](Statsd::run_with) without a flush callback.
    pub async fn run(self: &Arc<Self>, shutdown: impl Future<Output = ()>) {
        self.run_with(shutdown, |_| {}).await;
    }
}

impl std::fmt::Debug for Statsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statsd")
            .field("interval", &self.interval)
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

/// A [`LineDecoder`] as the toolkit's request codec: a chunk of whole
/// lines, or a line refused for its length (not an error of the stream:
/// the connection carries on).
struct TcpLines(LineDecoder);

impl TcpLines {
    fn new(max_line: usize) -> Self {
        TcpLines(LineDecoder::new(max_line))
    }
}

fn chunk(decoded: Result<Option<Bytes>, Error>) -> Result<Option<Result<Bytes, LineError>>, Error> {
    match decoded {
        Ok(lines) => Ok(lines.map(Ok)),
        Err(Error::Line(e)) => Ok(Some(Err(e))),
        Err(e) => Err(e),
    }
}

impl Decoder for TcpLines {
    type Item = Result<Bytes, LineError>;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        chunk(self.0.decode(src))
    }
}

impl RequestCodec for TcpLines {
    fn is_mid_request(&self) -> bool {
        self.0.is_discarding()
    }

    fn decode_last(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        chunk(self.0.decode_eof(buf))
    }
}

/// One TCP input connection: lines in, nothing out.
struct TcpInput {
    statsd: Arc<Statsd>,
    outbox: ConnOutbox,
    limits: NLimits,
}

impl TcpInput {
    fn new(statsd: Arc<Statsd>, id: u64) -> Self {
        TcpInput {
            statsd,
            outbox: ConnOutbox::new(id),
            limits: NLimits::default(),
        }
    }
}

impl Protocol for TcpInput {
    type Request = Result<Bytes, LineError>;
    type Error = Error;

    fn handle(&mut self, request: Self::Request, _now: Instant) -> Flow {
        match request {
            Ok(lines) if self.statsd.ingest(&lines) => Flow::Continue,
            // After the final flush: nothing more is taken.
            Ok(_) => Flow::Close,
            Err(e) => {
                lock(&self.statsd.agg).count_bad(e);
                Flow::Continue
            }
        }
    }

    fn decode_error(&mut self, error: Error, _now: Instant) -> Flow {
        tracing::debug!(%error, "statsd tcp connection ended");
        Flow::Close
    }

    fn flush(&mut self, _now: Instant) {}

    fn outbox(&self) -> &ConnOutbox {
        &self.outbox
    }

    fn nlimits(&self) -> &NLimits {
        &self.limits
    }
}

/// One admin connection: a command per line, an answer to each.
struct AdminConn {
    statsd: Arc<Statsd>,
    outbox: ConnOutbox,
    limits: NLimits,
    replies: BytesMut,
}

impl AdminConn {
    fn new(statsd: Arc<Statsd>, id: u64) -> Self {
        AdminConn {
            statsd,
            outbox: ConnOutbox::new(id),
            limits: NLimits::default(),
            replies: BytesMut::new(),
        }
    }
}

impl Protocol for AdminConn {
    type Request = Result<Bytes, LineError>;
    type Error = Error;

    fn handle(&mut self, request: Self::Request, _now: Instant) -> Flow {
        let Ok(lines) = request else {
            self.replies
                .extend_from_slice(b"ERROR line too long (health, stats, quit)\n");
            return Flow::Continue;
        };
        for line in lines.split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let answer = match line.trim() {
                "" => continue,
                "health" => format!("{}\n", self.statsd.health(SystemTime::now())),
                "stats" => self.statsd.stats(),
                "quit" => return Flow::Close,
                other => format!("ERROR unknown command {other:?} (health, stats, quit)\n"),
            };
            self.replies.extend_from_slice(answer.as_bytes());
        }
        Flow::Continue
    }

    fn decode_error(&mut self, _error: Error, _now: Instant) -> Flow {
        Flow::Close
    }

    fn flush(&mut self, now: Instant) {
        if !self.replies.is_empty() {
            let replies = self.replies.split().freeze();
            self.outbox.send(replies, now, &self.limits);
        }
    }

    fn outbox(&self) -> &ConnOutbox {
        &self.outbox
    }

    fn nlimits(&self) -> &NLimits {
        &self.limits
    }
}

/// Binds a UDP socket with a receive buffer of `recv_buffer` bytes (the
/// kernel may cap it: see `net.core.rmem_max`), so that bursts are not lost
/// while a flush holds the aggregator.
///
/// # Errors
/// Binding failed.
pub fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Writes one sink's queue to its carbon server, reconnecting with backoff.
async fn write_sink(sink: Arc<Sink>) {
    // Try at once, so that a carbon that is down shows before the first flush.
    if sink.target.format != Format::Stream
        && let Err(e) = connect(&sink.target.addr).await
    {
        tracing::warn!(sink = %sink.target.addr, error = %e, "carbon is not answering; retrying with backoff");
        lock(&sink.outbox).failed(None, Instant::now(), &e.to_string());
    }
    loop {
        // The backoff runs on the monotonic clock: a wall clock stepped back
        // must not hold the retries for as long.
        let now = Instant::now();
        let (batch, retry_at) = {
            let mut outbox = lock(&sink.outbox);
            (outbox.next(now), outbox.retry_at())
        };
        let Some(batch) = batch else {
            match retry_at.and_then(|at| at.checked_duration_since(now)) {
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = sink.wake.notified() => {}
                    }
                }
                None => sink.wake.notified().await,
            }
            continue;
        };
        // A connection per batch, as Etsy statsd and statsite's graphite sink
        // do: a connection kept open across a carbon restart would take the
        // next batch into a socket nobody reads.
        let result = match sink.target.format {
            Format::Stream => run_stream_command(&sink.target.addr, &batch.bytes).await,
            Format::Plaintext | Format::Pickle => send(&sink.target.addr, &batch.bytes).await,
        };
        let mut outbox = lock(&sink.outbox);
        match result {
            Ok(()) => outbox.sent(batch.seq),
            Err(e) => {
                // Once per outage: the retries that follow are debug events.
                if outbox.stats().consecutive_failures == 0 {
                    tracing::warn!(sink = %sink.target.addr, error = %e, "carbon write failed; retrying with backoff");
                } else {
                    tracing::debug!(sink = %sink.target.addr, error = %e, "carbon write failed again");
                }
                outbox.failed(batch.seq, Instant::now(), &e.to_string());
            }
        }
    }
}

/// Connects, writes the batch whole, and closes the connection.
async fn send(addr: &str, batch: &[u8]) -> io::Result<()> {
    let mut stream = connect(addr).await?;
    let write = async {
        stream.write_all(batch).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}

async fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Runs `sh -c command` with `batch` on its standard input (its output goes
/// where ours goes), and waits for it: 30 s at most. A command that fails is
/// reported by its exit status, even when it exited before reading its
/// input; one that exits 0 without reading the whole batch fails too.
async fn run_stream_command(command: &str, batch: &[u8]) -> io::Result<()> {
    let run = async {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // Standard input is closed at the end of this statement.
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(batch).await,
            None => Ok(()),
        };
        let status = child.wait().await?;
        match written {
            _ if !status.success() => Err(io::Error::other(format!(
                "{command:?} exited with {status}"
            ))),
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("{command:?} exited with {status} before reading the whole flush: {e}"),
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stream command timed out"))?
}
