//! A server-wide bound on the bytes its connections buffer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

/// Bytes buffered by every connection of a server together (read buffers
/// and unsent output), against a limit.
///
/// Each [`Connection`](crate::server::Connection) charges what it holds as
/// it changes; while the total is over the limit, connections read no new
/// requests (output keeps draining, so the total falls), and they are woken
/// once it is back under.
///
/// ```
/// use kids_core::server::Budget;
/// let budget = Budget::new(1000);
/// budget.charge(0, 600);
/// assert!(!budget.is_over());
/// budget.charge(0, 500);
/// assert!(budget.is_over());
/// assert_eq!(budget.used(), 1100);
/// budget.charge(500, 0);
/// assert!(!budget.is_over());
/// ```
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// True while more than the limit is charged.
    pub fn is_over(&self) -> bool {
        self.used() > self.limit
    }

    /// Replaces a charge of `old` bytes with one of `new` bytes; wakes the
    /// connections waiting for room when this brings the total under the limit.
    pub fn charge(&self, old: u64, new: u64) {
        if new >= old {
            self.used.fetch_add(new - old, Ordering::Relaxed);
            return;
        }
        let before = self.used.fetch_sub(old - new, Ordering::Relaxed);
        let after = before - (old - new);
        if before > self.limit && after <= self.limit {
            let waiters = std::mem::take(&mut *crate::lock(&self.waiters));
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    /// `Ready` while the total is within the limit; otherwise registers
    /// the task to be woken when it is again.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_over() {
            return Poll::Ready(());
        }
        let mut waiters = crate::lock(&self.waiters);
        // Checked again under the lock: a release in between woke nobody.
        if !self.is_over() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
