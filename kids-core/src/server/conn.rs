//! The sans-IO connection: one protocol state machine between a byte stream and its outbox.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::pubsub::nlimit::NLimits;
use crate::server::Budget;
use crate::server::outbox::{CloseReason, Outbox};

/// What the connection should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading requests.
    Continue,
    /// Stop reading; close once the outbox has been written out (`QUIT`, protocol errors).
    Close,
    /// The request waits, kept by the protocol, until replies it holds are
    /// released ([`Protocol::poll_release`]): feed no more requests until then.
    Wait,
}

/// A per-connection protocol state machine, as [`Connection`] drives it.
///
/// Replies go into the protocol's [`Outbox`] (at [`Protocol::flush`], or at
/// once), where other connections may push too (pub/sub messages); the
/// connection writes the outbox out in order.
pub trait Protocol {
    /// One decoded request.
    type Request;
    /// What the codec fails with.
    type Error;

    /// Handles one request; replies may wait in the protocol until [`Protocol::flush`].
    fn handle(&mut self, request: Self::Request, now: Instant) -> Flow;

    /// The codec failed: nothing after this point of the stream can be
    /// read. Write the reply the protocol owes such a client, if any;
    /// usually returns [`Flow::Close`].
    fn decode_error(&mut self, error: Self::Error, now: Instant) -> Flow;

    /// A batch of requests read together has been handled: move buffered
    /// replies into the outbox (unless they are held).
    fn flush(&mut self, now: Instant);

    /// The ordered output of the connection.
    fn outbox(&self) -> &Outbox;

    /// The output limits the outbox is checked against.
    fn nlimits(&self) -> &NLimits;

    /// True while replies are held (until something is stored): the
    /// connection reads nothing and polls [`Protocol::poll_release`].
    fn is_holding(&self) -> bool {
        false
    }

    /// `Ready` once held replies are released (flushed) or dropped, with
    /// what to do next; the request that waited, if any, is handled by then.
    fn poll_release(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Flow> {
        let _ = (cx, now);
        Poll::Ready(Flow::Continue)
    }

    /// True while the protocol cut the work of a request short so that
    /// other connections may run first (kids' publish to a channel that
    /// many patterns may match): the connection then yields
    /// ([`Step::Yield`]) and calls [`Protocol::poll_release`] again, which
    /// carries on. [`Protocol::is_holding`] is true meanwhile.
    fn must_yield(&self) -> bool {
        false
    }

    /// `Ready` when the protocol can take more requests (a full store queue
    /// holds publishers back); the connection reads nothing until then.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }

    /// True while a request waits on the client's behalf for as long as it
    /// takes ([`Flow::Wait`]; a blocking reserve): the connection then goes
    /// on reading meanwhile, at most a batch ahead and decoding nothing, so
    /// that a client that hangs up is noticed ([`Protocol::hang_up`]), as
    /// beanstalkd watches a waiting client for a hang-up.
    fn watches_hang_up(&self) -> bool {
        false
    }

    /// The client ended its stream while [`Protocol::watches_hang_up`]: the
    /// protocol may give the wait up (released through
    /// [`Protocol::poll_release`] as usual). The requests read before the
    /// end are still handled; then the connection closes once it has
    /// written what it owes.
    fn hang_up(&mut self, now: Instant) {
        let _ = now;
    }

    /// True when the protocol bounds this client's output itself (kids'
    /// `nlimit` for subscribers, which must stay able to unsubscribe):
    /// reading then goes on whatever output is pending.
    fn bounds_output(&self) -> bool {
        false
    }

    /// True while the client may stay idle past [`ConnConfig::idle_timeout`]
    /// (a subscriber waiting for messages).
    fn may_idle(&self) -> bool {
        false
    }

    /// Output the protocol makes by itself rather than in reply to a
    /// request (a durable log's session pushing its backlog, then live
    /// records): called on every pass while the connection's unsent output
    /// is under [`ConnConfig::max_pending_output`], so a producer never
    /// runs ahead of a slow client. `Ready` when it pushed something into
    /// the outbox; `Pending` when it has nothing now, with `cx` registered
    /// to be woken when it may have.
    fn poll_produce(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        let _ = (cx, now);
        Poll::Pending
    }

    /// When the protocol wants to be polled again by itself (a blocked
    /// command's timeout): [`Connection::poll_timeout`] includes it, and at
    /// that time the connection polls [`Protocol::poll_release`] and
    /// [`Protocol::poll_produce`] again. Not an idle timeout: reaching it
    /// closes nothing.
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// A request decoder the connection drives: a bounded [`Decoder`] that can
/// say whether it holds part of a request it has consumed.
pub trait RequestCodec: Decoder {
    /// True when part of a request has been consumed and more is expected.
    fn is_mid_request(&self) -> bool {
        false
    }

    /// Memory held for the request in progress beyond the read buffer
    /// (arguments decoded so far): charged to the server's [`Budget`]
    /// with the buffers.
    fn held_bytes(&self) -> usize {
        0
    }

    /// The client ended its stream: a request made of what is left in
    /// `buf`, if the protocol takes one (a line protocol's last line
    /// without its newline, as [`Decoder::decode_eof`] reads it). Called
    /// until it returns `Ok(None)`. By default nothing: a request cut
    /// short by the end of the stream is not handled.
    ///
    /// # Errors
    /// As [`Decoder::decode`]: the protocol's [`Protocol::decode_error`] follows.
    fn decode_last(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let _ = buf;
        Ok(None)
    }
}

/// A byte stream, as the connection uses it.
pub trait Transport {
    /// Reads into the spare capacity of `buf`, appending; `Ready(Ok(0))` is
    /// the end of the stream.
    ///
    /// # Errors
    /// The stream failed.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;

    /// Writes a prefix of `buf`; `Ready(Ok(n))` with its length.
    ///
    /// # Errors
    /// The stream failed.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
}

/// What [`Connection::poll`] asks of its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The connection is finished: close the stream.
    Closed,
    /// Let the other ready connections run, then poll again: output pushed
    /// by others waits (their pushes join it), a whole read batch was
    /// handled and more may wait (one batch per client per pass, as Redis
    /// reads), or the protocol cut a request's work short
    /// ([`Protocol::must_yield`]).
    Yield,
}

/// The connection policy's settings; every server built on the toolkit
/// inherits them.
///
/// ```
/// use std::time::Duration;
/// use kids_core::server::ConnConfig;
/// let config = ConnConfig::default()
///     .idle_timeout(Some(Duration::from_secs(300)))
///     .request_timeout(Some(Duration::from_secs(10)));
/// assert_eq!(config.request_timeout_value(), Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnConfig {
    read_chunk: usize,
    read_batch: usize,
    write_chunk: usize,
    max_pending_output: u64,
    max_input: usize,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    coalesce: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            read_chunk: 16 * 1024,
            read_batch: 64 * 1024,
            write_chunk: 64 * 1024,
            max_pending_output: 1 << 20,
            max_input: (1 << 30) + (64 << 10),
            idle_timeout: None,
            request_timeout: Some(Duration::from_secs(60)),
            coalesce: true,
        }
    }
}

impl ConnConfig {
    /// Bytes the read buffer grows by when it is short of room (default 16 KiB).
    pub fn read_chunk(mut self, bytes: usize) -> Self {
        self.read_chunk = bytes.max(1);
        self
    }
    /// Bytes read, at most, before the requests in them are handled
    /// together (default 64 KiB; one read always happens, so a larger
    /// request still grows).
    pub fn read_batch(mut self, bytes: usize) -> Self {
        self.read_batch = bytes.max(1);
        self
    }
    /// Bytes gathered from the outbox per write (default 64 KiB).
    pub fn write_chunk(mut self, bytes: usize) -> Self {
        self.write_chunk = bytes.max(1);
        self
    }
    /// Own unsent output above which the connection stops reading requests
    /// (default 1 MiB), unless the protocol bounds it ([`Protocol::bounds_output`]).
    pub fn max_pending_output(mut self, bytes: u64) -> Self {
        self.max_pending_output = bytes;
        self
    }
    /// Bytes of input the connection holds, at most, whatever its codec
    /// allows; over it the client is closed (default 1 GiB + 64 KiB, just
    /// above Redis's query buffer limit, which the RESP codec applies first).
    pub fn max_input(mut self, bytes: usize) -> Self {
        self.max_input = bytes;
        self
    }
    /// Close a client that sent nothing and was sent nothing for this long,
    /// unless its protocol lets it idle (default: never, as Redis's `timeout 0`).
    pub fn idle_timeout(mut self, after: Option<Duration>) -> Self {
        self.idle_timeout = after;
        self
    }
    /// Close a client that left a request half-sent for this long, counted
    /// from the request's first byte (default 60 s).
    pub fn request_timeout(mut self, after: Option<Duration>) -> Self {
        self.request_timeout = after;
        self
    }
    /// Write output that other connections pushed once per pass of the
    /// event loop ([`Step::Yield`]) rather than at every push (default on).
    ///
    /// The tokio adapter yields with `tokio::task::yield_now`, which runs
    /// the task again only after the runtime has polled its sockets: the
    /// publishes that arrived meanwhile join the same write. On a
    /// current-thread runtime that halves the writes to a subscriber of a
    /// few publishers (and its client's reads), for a delay of one pass.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }
    /// The idle timeout.
    pub fn idle_timeout_value(&self) -> Option<Duration> {
        self.idle_timeout
    }
    /// The half-sent request timeout.
    pub fn request_timeout_value(&self) -> Option<Duration> {
        self.request_timeout
    }
}

/// Why a connection ended, once [`Connection::poll`] returned [`Step::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// The protocol or the peer finished it, and everything owed was written.
    Finished,
    /// Its outbox went over an nlimit.
    NLimit,
    /// Idle past [`ConnConfig::idle_timeout`].
    Idle,
    /// A request was left half-sent past [`ConnConfig::request_timeout`].
    RequestTimeout,
    /// It held more input than [`ConnConfig::max_input`].
    InputLimit,
}

/// One client connection: a [`Protocol`] and its [`RequestCodec`] between a
/// [`Transport`] and the protocol's [`Outbox`], with no IO of its own.
///
/// The driver calls [`Connection::poll`] whenever the task is woken (by the
/// stream, the outbox, a release, the budget) with the current time, and
/// arms a timer for [`Connection::poll_timeout`].
#[derive(Debug)]
pub struct Connection<P, C> {
    protocol: P,
    codec: C,
    config: ConnConfig,
    budget: Option<Arc<Budget>>,
    charged: u64,
    rbuf: BytesMut,
    wbuf: BytesMut,
    wpos: usize,
    reading: bool,
    /// Decoding stopped on a request the protocol made wait.
    waiting: bool,
    /// The stream ended while a request waited (read ahead of it).
    eof: bool,
    last_active: Instant,
    /// When the bytes of a request still incomplete began to arrive.
    partial_since: Option<Instant>,
    /// Everything owed was written when the connection last went idle: the
    /// next output others push waits for one yield, so more joins it.
    writer_idle: bool,
    ended: Option<Ended>,
}

impl<P, C> Connection<P, C>
where
    P: Protocol,
    C: RequestCodec<Item = P::Request, Error = P::Error>,
{
    /// A connection of `protocol` decoding with `codec`; `budget` is the
    /// server's, shared by its connections.
    pub fn new(
        protocol: P,
        codec: C,
        config: ConnConfig,
        budget: Option<Arc<Budget>>,
        now: Instant,
    ) -> Self {
        Self {
            protocol,
            codec,
            config,
            budget,
            charged: 0,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            wpos: 0,
            reading: true,
            waiting: false,
            eof: false,
            last_active: now,
            partial_since: None,
            writer_idle: true,
            ended: None,
        }
    }

    /// The protocol state machine.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The protocol state machine, mutably.
    pub fn protocol_mut(&mut self) -> &mut P {
        &mut self.protocol
    }

    /// Why the connection ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// True while requests are still read.
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// Since when the connection has been idle (the last byte read or
    /// written), or `None` while it is busy: part of a request read, a
    /// request waiting, replies held or owed, reading stopped, or a
    /// protocol that idles on purpose ([`Protocol::may_idle`], a
    /// subscriber). The accept loop closes the connection idle longest
    /// when it is full and told to make room
    /// (`ServerConfig::evict_idle`, feature `tokio`).
    pub fn idle_since(&self) -> Option<Instant> {
        let idle = self.ended.is_none()
            && self.reading
            && !self.waiting
            && self.partial_since.is_none()
            && !self.protocol.is_holding()
            && !self.protocol.may_idle()
            && self.wpos == self.wbuf.len()
            && self.protocol.outbox().pending() == 0;
        idle.then_some(self.last_active)
    }

    /// Stops reading (a draining server): the connection finishes once
    /// everything it owes is written.
    pub fn stop_reading(&mut self) {
        self.reading = false;
    }

    /// The earliest time [`Connection::poll`] must run again for a timeout,
    /// if one is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.own_timeout(), self.protocol.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The idle or half-sent request timeout, whichever comes first.
    fn own_timeout(&self) -> Option<Instant> {
        let idle = self
            .config
            .idle_timeout
            .filter(|_| self.reading && !self.protocol.may_idle() && !self.protocol.is_holding())
            .map(|d| self.last_active + d);
        let partial = self
            .config
            .request_timeout
            .zip(self.partial_since)
            .filter(|_| self.reading)
            .map(|(d, since)| since + d);
        match (idle, partial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Decodes and handles the requests in the read buffer until it is
    /// empty, a request waits, or the protocol closes; then flushes.
    fn handle_input(&mut self, now: Instant) {
        self.waiting = false;
        while self.reading {
            let flow = match self.codec.decode(&mut self.rbuf) {
                Ok(Some(request)) => self.protocol.handle(request, now),
                Ok(None) => break,
                Err(e) => {
                    // Nothing after a broken request can be read.
                    self.reading = false;
                    self.protocol.decode_error(e, now)
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => self.reading = false,
                Flow::Wait => {
                    self.waiting = true;
                    break;
                }
            }
        }
        // Not while the protocol holds the connection back: it is not the
        // client that is slow then.
        let partial = !self.waiting
            && !self.protocol.is_holding()
            && (!self.rbuf.is_empty() || self.codec.is_mid_request());
        self.partial_since = match (partial, self.partial_since) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
        };
        if !self.protocol.is_holding() {
            self.protocol.flush(now);
        }
    }

    /// Handles the requests [`RequestCodec::decode_last`] makes of what the
    /// end of the stream left in the read buffer.
    fn handle_last(&mut self, now: Instant) {
        let mut any = false;
        while self.reading {
            let flow = match self.codec.decode_last(&mut self.rbuf) {
                Ok(Some(request)) => self.protocol.handle(request, now),
                Ok(None) => break,
                Err(e) => {
                    self.reading = false;
                    self.protocol.decode_error(e, now)
                }
            };
            any = true;
            match flow {
                Flow::Continue => {}
                Flow::Close => break,
                Flow::Wait => {
                    self.waiting = true;
                    break;
                }
            }
        }
        if any && !self.protocol.is_holding() {
            self.protocol.flush(now);
        }
    }

    fn end(&mut self, why: Ended) -> Poll<io::Result<Step>> {
        self.ended = Some(why);
        self.uncharge();
        Poll::Ready(Ok(Step::Closed))
    }

    /// The stream failed: the connection ends with its error.
    fn failed(&mut self, e: io::Error) -> Poll<io::Result<Step>> {
        let _ = self.end(Ended::Finished);
        Poll::Ready(Err(e))
    }

    fn outbox_closed(&mut self) -> Poll<io::Result<Step>> {
        let reason = self.protocol.outbox().closed();
        tracing::debug!(
            client = self.protocol.outbox().id(),
            ?reason,
            "outbox closed"
        );
        self.end(match reason {
            Some(CloseReason::NLimit) => Ended::NLimit,
            _ => Ended::Finished,
        })
    }

    fn uncharge(&mut self) {
        if let Some(b) = &self.budget {
            b.charge(self.charged, 0);
            self.charged = 0;
        }
    }

    fn recharge(&mut self) {
        if let Some(b) = &self.budget {
            let now_held = self.rbuf.len() as u64
                + self.codec.held_bytes() as u64
                + self.protocol.outbox().pending();
            if now_held != self.charged {
                b.charge(self.charged, now_held);
                self.charged = now_held;
            }
        }
    }

    /// Drives reads and writes until both would block, the peer leaves, or
    /// the connection ends. `Ready(Ok(Step::Closed))` when it ended (see
    /// [`Connection::ended`]); `Ready(Ok(Step::Yield))` when the driver
    /// should let other tasks run and poll again; `Pending` with every
    /// waker it needs registered.
    ///
    /// # Errors
    /// The transport's error that ended the connection.
    pub fn poll<T: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
        now: Instant,
    ) -> Poll<io::Result<Step>> {
        if self.ended.is_some() {
            return Poll::Ready(Ok(Step::Closed));
        }
        if let Some(at) = self.own_timeout()
            && now >= at
        {
            let why = if self.partial_since.is_some_and(|since| {
                self.config
                    .request_timeout
                    .is_some_and(|d| now >= since + d)
            }) {
                Ended::RequestTimeout
            } else {
                Ended::Idle
            };
            tracing::debug!(client = self.protocol.outbox().id(), ?why, "closing client");
            return self.end(why);
        }
        let result = self.poll_inner(cx, io, now);
        if self.ended.is_none() {
            self.recharge();
        }
        result
    }

    fn poll_inner<T: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
        now: Instant,
    ) -> Poll<io::Result<Step>> {
        let mut own_input = false;
        // The stream said it has nothing more: no read again in this poll
        // (its waker is registered; more bytes wake the task).
        let mut read_blocked = false;
        // A full batch was read and handled in this poll.
        let mut read_more = false;
        loop {
            // Closed by its nlimit: leave at once.
            if self.protocol.outbox().is_closed() {
                return self.outbox_closed();
            }
            let mut progress = false;
            if (self.waiting || self.protocol.is_holding())
                && let Poll::Ready(flow) = self.protocol.poll_release(cx, now)
            {
                if flow == Flow::Close {
                    self.reading = false;
                }
                // Requests read behind the one that waited.
                self.handle_input(now);
                progress = true;
                own_input = true;
            }
            if self.reading
                && self.waiting
                && !self.eof
                && !read_blocked
                && self.rbuf.len() < self.config.read_batch
                && self.protocol.watches_hang_up()
            {
                // Read ahead of the waiting request, only to see a hang-up;
                // what is read is handled once the wait ends.
                let (got, eof, blocked) = match self.read_batch(cx, io) {
                    Ok(r) => r,
                    Err(e) => return self.failed(e),
                };
                read_blocked = blocked;
                if got {
                    self.last_active = now;
                    progress = true;
                }
                if eof {
                    self.eof = true;
                    self.protocol.hang_up(now);
                    progress = true;
                }
            }
            if self.reading && !self.waiting && !read_blocked && !read_more && self.may_read(cx) {
                let (got, eof, blocked) = if self.eof {
                    (false, true, true)
                } else {
                    match self.read_batch(cx, io) {
                        Ok(r) => r,
                        Err(e) => return self.failed(e),
                    }
                };
                read_blocked = blocked;
                // A whole batch and maybe more: the rest after the others
                // had their turn, as Redis reads each client once per pass.
                read_more = got && !blocked && !eof;
                if got {
                    self.last_active = now;
                    self.handle_input(now);
                    progress = true;
                    own_input = true;
                    if self.rbuf.len() > self.config.max_input {
                        tracing::warn!(
                            client = self.protocol.outbox().id(),
                            "closing client over the input bound"
                        );
                        return self.end(Ended::InputLimit);
                    }
                }
                if eof {
                    if self.waiting {
                        // Requests read behind the one that waits are still
                        // handled when it is released; the end is seen then.
                        self.eof = true;
                    } else {
                        // The client is gone: handle what it left, if the codec
                        // takes it, write out what it is owed, then close.
                        self.handle_last(now);
                        self.reading = false;
                    }
                    progress = true;
                }
            }
            if self.protocol.outbox().pending() < self.config.max_pending_output
                && self.protocol.poll_produce(cx, now).is_ready()
            {
                progress = true;
                own_input = true;
            }
            if self.wpos == self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
                if self.config.coalesce
                    && self.writer_idle
                    && !own_input
                    && self.protocol.outbox().pending() > 0
                {
                    // Pushed by other connections to an idle writer: let
                    // them push more first, then write it all.
                    self.writer_idle = false;
                    return Poll::Ready(Ok(Step::Yield));
                }
                // Borrowed only now: held across the yield above, the
                // thread's spare would be lost to the connections run meanwhile.
                if self.wbuf.capacity() == 0 && self.protocol.outbox().pending() > 0 {
                    self.wbuf = spare::take(Spare::Write);
                }
                match self
                    .protocol
                    .outbox()
                    .poll_drain(cx, &mut self.wbuf, self.config.write_chunk)
                {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(CloseReason::NLimit)) => return self.end(Ended::NLimit),
                    Poll::Ready(Err(_)) => return self.end(Ended::Finished),
                    Poll::Pending => {}
                }
            }
            if self.wpos < self.wbuf.len() {
                match io.poll_write(cx, &self.wbuf[self.wpos..]) {
                    Poll::Ready(Ok(0)) => return self.failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.wpos += n;
                        let limits = *self.protocol.nlimits();
                        self.protocol.outbox().consumed(n, &limits);
                        self.last_active = now;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return self.failed(e),
                    Poll::Pending => {
                        // Blocked on a client that does not read: a close
                        // by its nlimit must still end the connection at once.
                        if self.protocol.outbox().poll_closed(cx).is_ready() {
                            return self.outbox_closed();
                        }
                    }
                }
            }
            if !self.reading
                && !self.protocol.is_holding()
                && self.wpos == self.wbuf.len()
                && self.protocol.outbox().pending() == 0
            {
                return self.end(Ended::Finished);
            }
            if !progress && (self.protocol.must_yield() || (read_more && self.reading)) {
                // Work cut short: the others run, then poll_release carries on.
                return Poll::Ready(Ok(Step::Yield));
            }
            if !progress {
                self.writer_idle =
                    self.wpos == self.wbuf.len() && self.protocol.outbox().pending() == 0;
                // Idle: give memory back until the next batch.
                if self.rbuf.is_empty() && !self.codec.is_mid_request() {
                    spare::give_back(Spare::Read, std::mem::take(&mut self.rbuf));
                }
                if self.wpos == self.wbuf.len() {
                    spare::give_back(Spare::Write, std::mem::take(&mut self.wbuf));
                    self.wpos = 0;
                }
                return Poll::Pending;
            }
        }
    }

    /// Whether requests may be read now; registers the task with whatever
    /// it waits for otherwise.
    fn may_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.protocol.is_holding() {
            return false;
        }
        if !self.protocol.bounds_output()
            && self.protocol.outbox().pending() >= self.config.max_pending_output
        {
            // Woken by the outbox as it drains (the writer side runs here).
            return false;
        }
        if self.protocol.poll_room(cx).is_pending() {
            return false;
        }
        match &self.budget {
            Some(b) => b.poll_room(cx).is_ready(),
            None => true,
        }
    }

    /// Reads what the stream holds, up to a batch: handled together.
    /// Returns (got bytes, end of stream, the stream has nothing more now).
    fn read_batch<T: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
    ) -> io::Result<(bool, bool, bool)> {
        let (mut got, mut eof, mut blocked) = (false, false, false);
        // At least one read: a request larger than a batch still grows.
        if self.rbuf.capacity() == 0 {
            self.rbuf = spare::take(Spare::Read);
        }
        let stop_at = self.rbuf.len().max(self.config.read_batch - 1) + 1;
        while self.rbuf.len() < stop_at {
            if self.rbuf.capacity() - self.rbuf.len() < self.config.read_chunk / 2 {
                self.rbuf.reserve(self.config.read_chunk);
            }
            match io.poll_read(cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    eof = true;
                    break;
                }
                Poll::Ready(Ok(_)) => got = true,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {
                    blocked = true;
                    break;
                }
            }
        }
        Ok((got, eof, blocked))
    }
}

/// Which spare buffer.
#[derive(Clone, Copy)]
enum Spare {
    Read,
    Write,
}

/// One read and one write buffer per thread, lent to the connection being
/// polled and given back when it goes idle with nothing left in them. An
/// idle connection then holds no buffer (as before), and a busy one does not
/// allocate and free one per batch: the allocator's work per request was a
/// visible share of a small request's cost. A connection that keeps data in
/// a buffer (a request cut short, a write the client does not take) keeps
/// the buffer; the thread allocates another when it needs one.
mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::Spare;

    /// Buffers grown past this are freed rather than kept.
    const KEEP_UP_TO: usize = 256 * 1024;

    thread_local! {
        static SPARE: RefCell<[BytesMut; 2]> = RefCell::new([BytesMut::new(), BytesMut::new()]);
    }

    pub(super) fn take(which: Spare) -> BytesMut {
        SPARE
            .try_with(|s| std::mem::take(&mut s.borrow_mut()[which as usize]))
            .unwrap_or_default()
    }

    pub(super) fn give_back(which: Spare, mut buf: BytesMut) {
        if buf.capacity() == 0 || buf.capacity() > KEEP_UP_TO {
            return;
        }
        buf.clear();
        let _ = SPARE.try_with(|s| {
            let slot = &mut s.borrow_mut()[which as usize];
            if slot.capacity() == 0 {
                *slot = buf;
            }
        });
    }
}

impl<P, C> Drop for Connection<P, C> {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.charge(self.charged, 0);
        }
    }
}
