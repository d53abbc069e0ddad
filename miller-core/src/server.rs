//! One beanstalk connection served by a [`Store`]: the protocol state
//! machine kids-core's server toolkit drives, with [`ServerCodec`] as its
//! request codec.
//!
//! ```text
//!  bytes ─▶ ServerCodec ─▶ Incoming ─▶ BeanstalkConn::handle ─▶ Store::handle (engine + journal)
//!                             │ Refused (BAD_FORMAT, …)              │ reply, lsn to wait for
//!                             ▼                                      ▼
//!                      reply buffered in order ◀──────────── reply buffered in order
//!                             │ flushed once what it waits for is durable: everything
//!                             │ staged before it, or for a job handed out (reserve,
//!                             │ peek) that job's own records
//!                             ▼ (Protocol::is_holding / poll_release)
//!                           Outbox ─▶ socket
//! ```
//! A reserve that must wait parks the connection ([`Flow::Wait`]): no
//! request after it is handled (pipelined requests are answered in order,
//! as beanstalkd does) until the engine completes it, woken through
//! [`Store::poll_reply`]; [`Protocol::deadline`] is the engine's next
//! timer, so its timeout and `DEADLINE_SOON` fire on time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use kids_core::server::{Flow, Protocol};
use kids_core::{NLimits, Outbox};

use crate::engine::{ClientId, Handled, PutRefused};
use crate::proto::{DEFAULT_MAX_JOB_SIZE, Incoming, Response, ServerCodec};
use crate::store::Store;

/// What every connection of one beanstalk server shares.
#[derive(Debug)]
pub struct BeanstalkServer {
    store: Store,
    max_job_size: u32,
    next_id: AtomicU64,
    limits: NLimits,
}

impl BeanstalkServer {
    /// A server of `store` taking bodies of at most `max_job_size` bytes
    /// (the engine's own bound should be the same).
    pub fn new(store: Store, max_job_size: u32) -> Arc<Self> {
        Arc::new(Self {
            store,
            max_job_size,
            next_id: AtomicU64::new(1),
            limits: NLimits::default(),
        })
    }

    /// A server of `store` with beanstalkd's default `max-job-size`.
    pub fn with_defaults(store: Store) -> Arc<Self> {
        Self::new(store, DEFAULT_MAX_JOB_SIZE)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A new connection's protocol state and its codec.
    pub fn connect(self: &Arc<Self>, now: Instant) -> (BeanstalkConn, ServerCodec) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = BeanstalkConn {
            client: self.store.connect(now),
            outbox: Arc::new(Outbox::new(id)),
            server: Arc::clone(self),
            pending: BytesMut::new(),
            hold: None,
            parked: false,
            closing: false,
            now,
        };
        (conn, ServerCodec::with_max_job_size(self.max_job_size))
    }
}

/// One client's protocol state.
#[derive(Debug)]
pub struct BeanstalkConn {
    client: ClientId,
    server: Arc<BeanstalkServer>,
    outbox: Arc<Outbox>,
    /// Replies not yet in the outbox, in order.
    pending: BytesMut,
    /// Replies wait until the records up to this lsn are durable.
    hold: Option<u64>,
    /// A reserve waits for a job or its timeout.
    parked: bool,
    /// `quit`, or a reply that can never be given: close once flushed.
    closing: bool,
    now: Instant,
}

impl BeanstalkConn {
    /// The engine's id of this client.
    pub fn client(&self) -> ClientId {
        self.client
    }

    fn reply(&mut self, reply: &Response, lsn: u64) {
        reply.encode(&mut self.pending);
        if lsn > 0 {
            self.hold = Some(self.hold.map_or(lsn, |h| h.max(lsn)));
        }
    }

    fn send_pending(&mut self, now: Instant) {
        if !self.pending.is_empty() {
            let chunk = self.pending.split().freeze();
            self.outbox.send(chunk, now, &self.server.limits);
        }
    }

    /// Held replies will never be durable (the log failed or the store
    /// stopped): close unanswered; the client sends again after reconnecting.
    fn never_durable(&mut self) -> Flow {
        tracing::warn!(
            client = self.client.0,
            "journal failed or stopped before these changes were durable; closing unanswered"
        );
        self.pending.clear();
        self.hold = None;
        self.parked = false;
        self.closing = true;
        Flow::Close
    }
}

impl Protocol for BeanstalkConn {
    type Request = Incoming;
    type Error = crate::Error;

    fn handle(&mut self, request: Incoming, now: Instant) -> Flow {
        self.now = now;
        let store = &self.server.store;
        match request {
            Incoming::Refused(reply) => {
                let why = match reply {
                    Response::JobTooBig => Some(PutRefused::TooBig),
                    Response::ExpectedCrlf => Some(PutRefused::ExpectedCrlf),
                    _ => None,
                };
                let (reply, lsn) = match why {
                    Some(why) => store.put_refused(self.client, why),
                    None => (reply, 0),
                };
                self.reply(&reply, lsn);
                Flow::Continue
            }
            Incoming::Request(request) => match store.handle(self.client, request, now) {
                (Handled::Reply(reply), lsn) => {
                    self.reply(&reply, lsn);
                    Flow::Continue
                }
                (Handled::Wait, lsn) => {
                    if lsn > 0 {
                        self.hold = Some(self.hold.map_or(lsn, |h| h.max(lsn)));
                    }
                    self.parked = true;
                    Flow::Wait
                }
                (Handled::Close, _) => {
                    self.closing = true;
                    Flow::Close
                }
            },
        }
    }

    fn decode_error(&mut self, error: crate::Error, _now: Instant) -> Flow {
        tracing::debug!(client = self.client.0, error = %error, "closing client");
        self.closing = true;
        Flow::Close
    }

    fn flush(&mut self, now: Instant) {
        if let Some(lsn) = self.hold {
            // With nothing to fsync the connection writes its own records:
            // its replies wait for no other thread.
            let store = &self.server.store;
            if store.commit_unsynced(now) && store.is_durable(lsn) {
                self.hold = None;
            }
        }
        if self.hold.is_none() {
            self.send_pending(now);
        }
    }

    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn nlimits(&self) -> &NLimits {
        &self.server.limits
    }

    fn is_holding(&self) -> bool {
        self.hold.is_some() || self.parked
    }

    fn poll_release(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Flow> {
        self.now = now;
        let store = self.server.store.clone();
        if self.parked {
            match store.poll_reply(self.client, cx, now) {
                Poll::Ready(Some((reply, lsn))) => {
                    self.parked = false;
                    self.reply(&reply, lsn);
                }
                Poll::Ready(None) => {
                    // Shutting down: the reserve is never answered.
                    self.parked = false;
                    self.closing = true;
                }
                Poll::Pending => {
                    // Earlier replies go out while the reserve waits, once durable.
                    if let Some(lsn) = self.hold {
                        match store.poll_durable(lsn, cx) {
                            Poll::Ready(true) => self.hold = None,
                            Poll::Ready(false) => return Poll::Ready(self.never_durable()),
                            Poll::Pending => {}
                        }
                    }
                    if self.hold.is_none() {
                        self.send_pending(now);
                    }
                    return Poll::Pending;
                }
            }
        }
        if let Some(lsn) = self.hold {
            match store.poll_durable(lsn, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(true) => self.hold = None,
                Poll::Ready(false) => return Poll::Ready(self.never_durable()),
            }
        }
        self.send_pending(now);
        Poll::Ready(if self.closing {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.server.store.poll_room(cx)
    }

    fn may_idle(&self) -> bool {
        self.parked
    }

    fn watches_hang_up(&self) -> bool {
        self.parked
    }

    fn hang_up(&mut self, _now: Instant) {
        // As beanstalkd: the waiting reserve is answered TIMED_OUT, then
        // what was read before the end is handled and the connection closes.
        self.server.store.hang_up(self.client);
    }

    fn deadline(&self) -> Option<Instant> {
        if self.parked {
            self.server.store.next_deadline()
        } else {
            None
        }
    }
}

impl Drop for BeanstalkConn {
    fn drop(&mut self) {
        self.server.store.disconnect(self.client, self.now);
    }
}
