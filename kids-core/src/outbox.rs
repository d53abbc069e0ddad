//! A connection's outbound queue, shared by its session and the router.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::nlimit::{ClientClass, NLimits};
use crate::resp::Proto;

/// Why an outbox stopped accepting output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Its pending output went over an `nlimit`.
    NLimit,
    /// The connection is gone.
    Gone,
}

/// What happened to a chunk offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the connection.
    Queued,
    /// This push went over an nlimit: the outbox is now closed and this many
    /// messages (the offered one included) were dropped with it.
    Closed { dropped: u64 },
    /// The outbox was already closed; nothing was queued.
    AlreadyClosed,
}

/// The ordered output of one connection: replies and pub/sub messages.
///
/// Producers (the connection's own session and any publisher routing to it)
/// push [`Bytes`] chunks; the connection's writer drains them in order with
/// [`Outbox::poll_drain`] and reports what reached the socket with
/// [`Outbox::consumed`]. Pending bytes (queued plus drained but not yet
/// written) are checked against the [`NLimits`] of the client's class on every
/// push; going over closes the outbox, drops its queue and wakes the writer,
/// which then closes the connection.
#[derive(Debug)]
pub struct Outbox {
    id: u64,
    proto: AtomicU8,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<(Bytes, bool)>,
    queued_messages: u64,
    pending: u64,
    soft_since: Option<Instant>,
    class: ClientClass,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
}

impl Outbox {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            proto: AtomicU8::new(2),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_messages: 0,
                pending: 0,
                soft_since: None,
                class: ClientClass::Normal,
                closed: None,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client id (`CLIENT ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn proto(&self) -> Proto {
        if self.proto.load(Ordering::Relaxed) == 3 {
            Proto::Resp3
        } else {
            Proto::Resp2
        }
    }

    pub(crate) fn set_proto(&self, proto: Proto) {
        self.proto.store(proto.number() as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_class(&self, class: ClientClass) {
        self.lock().class = class;
    }

    /// Offers a chunk; `message` marks pub/sub messages (counted as drops if lost).
    pub(crate) fn push(
        &self,
        chunk: Bytes,
        message: bool,
        now: Instant,
        limits: &NLimits,
    ) -> Pushed {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Pushed::AlreadyClosed;
        }
        st.pending += chunk.len() as u64;
        st.queue.push_back((chunk, message));
        st.queued_messages += u64::from(message);
        let limit = *limits.of(st.class);
        let (pending, mut since) = (st.pending, st.soft_since);
        let over = limit.exceeded(pending, &mut since, now);
        st.soft_since = since;
        let pushed = if over {
            let dropped = st.queued_messages;
            st.closed = Some(CloseReason::NLimit);
            st.queue = VecDeque::new();
            st.queued_messages = 0;
            Pushed::Closed { dropped }
        } else {
            Pushed::Queued
        };
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        pushed
    }

    /// Moves queued chunks into `dst`, copying whole chunks until `dst` holds
    /// at least `max` bytes. `Ready(Ok(n))` with the bytes moved (n > 0);
    /// `Pending` (the waker registered) when there is nothing to send;
    /// `Ready(Err(reason))` once the outbox is closed.
    ///
    /// The bytes moved stay pending until reported with [`Outbox::consumed`].
    ///
    /// # Errors
    /// The [`CloseReason`] once the outbox has been closed.
    pub fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        dst: &mut BytesMut,
        max: usize,
    ) -> Poll<Result<usize, CloseReason>> {
        let mut st = self.lock();
        if let Some(reason) = st.closed {
            return Poll::Ready(Err(reason));
        }
        if st.queue.is_empty() {
            match &mut st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let mut moved = 0;
        while let Some((chunk, message)) = st.queue.pop_front() {
            moved += chunk.len();
            dst.put_slice(&chunk);
            st.queued_messages -= u64::from(message);
            if dst.len() >= max {
                break;
            }
        }
        Poll::Ready(Ok(moved))
    }

    /// Reports that `n` drained bytes reached the socket.
    pub fn consumed(&self, n: usize, limits: &NLimits) {
        let mut st = self.lock();
        st.pending = st.pending.saturating_sub(n as u64);
        let limit = *limits.of(st.class);
        if limit.soft == 0 || st.pending < limit.soft {
            st.soft_since = None;
        }
    }

    /// Bytes queued or drained but not yet written.
    pub fn pending(&self) -> u64 {
        self.lock().pending
    }

    /// Why the outbox is closed, if it is.
    pub fn closed(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Closes the outbox (the connection is going away) and drops its queue.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        st.queue = VecDeque::new();
        st.queued_messages = 0;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}
