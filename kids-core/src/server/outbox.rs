//! A connection's outbound queue, shared by its session and the router.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::pubsub::nlimit::{ClientClass, NLimits};
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
    state: Mutex<State>,
    /// Bytes queued or drained but not yet written: added under the lock
    /// (where the nlimit is checked), taken off without it.
    pending: AtomicU64,
    /// Set once the outbox is closed, readable without the lock.
    closed: AtomicBool,
    /// A soft limit's timer runs (`State::soft_since` is set).
    soft_armed: AtomicBool,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<(Bytes, bool)>,
    queued_messages: u64,
    soft_since: Option<Instant>,
    class: ClientClass,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
    /// Woken only when the outbox closes, so a writer blocked on its socket notices.
    close_waker: Option<Waker>,
    proto: Proto,
}

impl Outbox {
    /// An empty, open outbox for the client `id`: the output queue of a
    /// connection of any protocol on the server toolkit.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_messages: 0,
                soft_since: None,
                class: ClientClass::Normal,
                closed: None,
                waker: None,
                close_waker: None,
                proto: Proto::Resp2,
            }),
            pending: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            soft_armed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// The client id (`CLIENT ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues `reply` and switches the protocol version in one step, so every
    /// message routed before it is encoded in the old version and precedes it,
    /// and every message after it uses the new one (HELLO, RESET).
    pub(crate) fn push_switching(
        &self,
        reply: Bytes,
        proto: Proto,
        now: Instant,
        limits: &NLimits,
    ) -> Pushed {
        self.push_with(|_| reply, false, Some(proto), now, limits)
    }

    /// Queues a reply chunk for the connection's writer. Returns false when
    /// nothing was queued: the outbox was closed, or this chunk took it
    /// over its `nlimit` (it is closed now, and the writer closes the
    /// connection).
    pub fn send(&self, chunk: Bytes, now: Instant, limits: &NLimits) -> bool {
        matches!(self.push(chunk, false, now, limits), Pushed::Queued)
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
        self.push_with(|_| chunk, message, None, now, limits)
    }

    /// Offers the chunk `make` returns for the client's protocol version,
    /// chosen under the same lock as the push, so a concurrent HELLO cannot
    /// put a frame of the wrong version after its reply; `switch` changes the
    /// version after this chunk.
    pub(crate) fn push_with(
        &self,
        make: impl FnOnce(Proto) -> Bytes,
        message: bool,
        switch: Option<Proto>,
        now: Instant,
        limits: &NLimits,
    ) -> Pushed {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Pushed::AlreadyClosed;
        }
        let chunk = make(st.proto);
        if let Some(p) = switch {
            st.proto = p;
        }
        let len = chunk.len() as u64;
        let pending = self.pending.fetch_add(len, Ordering::AcqRel) + len;
        st.queue.push_back((chunk, message));
        st.queued_messages += u64::from(message);
        let limit = *limits.of(st.class);
        let mut since = st.soft_since;
        let over = limit.exceeded(pending, &mut since, now);
        st.soft_since = since;
        self.soft_armed.store(since.is_some(), Ordering::Release);
        let (pushed, close_waker) = if over {
            let dropped = st.queued_messages;
            st.closed = Some(CloseReason::NLimit);
            self.closed.store(true, Ordering::Release);
            st.queue = VecDeque::new();
            st.queued_messages = 0;
            (Pushed::Closed { dropped }, st.close_waker.take())
        } else {
            (Pushed::Queued, None)
        };
        let waker = st.waker.take();
        drop(st);
        for w in [waker, close_waker].into_iter().flatten() {
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
            register(&mut st.waker, cx);
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

    /// `Ready` with the reason once the outbox is closed; otherwise registers
    /// the waker to be woken when it closes (not on every push).
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let mut st = self.lock();
        if let Some(reason) = st.closed {
            return Poll::Ready(reason);
        }
        register(&mut st.close_waker, cx);
        Poll::Pending
    }

    /// Reports that `n` drained bytes reached the socket. Takes the lock
    /// only when a soft limit's timer runs, to stop it once under the limit.
    pub fn consumed(&self, n: usize, limits: &NLimits) {
        let n = n as u64;
        let before = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            })
            .unwrap_or_default();
        if self.soft_armed.load(Ordering::Acquire) {
            let mut st = self.lock();
            let limit = *limits.of(st.class);
            if limit.soft == 0 || before.saturating_sub(n) < limit.soft {
                st.soft_since = None;
                self.soft_armed.store(false, Ordering::Release);
            }
        }
    }

    /// Bytes queued or drained but not yet written.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// True once the outbox is closed (without taking its lock).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
            self.closed.store(true, Ordering::Release);
        }
        st.queue = VecDeque::new();
        st.queued_messages = 0;
        let wakers = [st.waker.take(), st.close_waker.take()];
        drop(st);
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }
}

#[cfg(test)]
impl Outbox {
    /// The start addresses of the queued chunks, to check sharing.
    pub(crate) fn queued_ptrs(&self) -> Vec<usize> {
        self.lock()
            .queue
            .iter()
            .map(|(c, _)| c.as_ptr() as usize)
            .collect()
    }
}

/// Stores the task's waker in `slot`, unless the one there already wakes it.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}
