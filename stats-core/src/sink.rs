//! One output's queue: bounded, with retry and exponential backoff, counting what it drops. No IO: the caller sends and reports back.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Bounds and backoff of one [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most batches (flushes) waiting; when full, the oldest is dropped and counted. Default 60.
    pub max_batches: usize,
    /// Most bytes waiting, all batches together. Default 64 MiB.
    pub max_bytes: usize,
    /// The first retry delay after a failure. Default 100 ms.
    pub backoff_min: Duration,
    /// The longest retry delay; each failure doubles it up to this. Default 30 s.
    pub backoff_max: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_batches: 60,
            max_bytes: 64 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What an [`Outbox`] has done since it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Batches written whole.
    pub sent_batches: u64,
    /// Points in them.
    pub sent_points: u64,
    /// Batches dropped because the queue was full.
    pub dropped_batches: u64,
    /// Points in them.
    pub dropped_points: u64,
    /// Failed attempts, in all.
    pub failures: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Batches waiting now.
    pub queued_batches: usize,
}

/// The queue of one output (a carbon server, a file, a pipe).
///
/// [`push`](Outbox::push) never blocks and never fails: when the queue is
/// full the oldest batch is dropped and counted, so a sink that is down
/// never holds up ingestion. The writer asks [`next`](Outbox::next) for the
/// batch to send and reports [`sent`](Outbox::sent) or
/// [`failed`](Outbox::failed); after a failure the same batch is offered
/// again once the backoff has passed ([`retry_at`](Outbox::retry_at)).
/// Resending a graphite batch is harmless: a point is keyed by path and
/// timestamp, so carbon stores it once.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use bytes::Bytes;
/// use stats_core::{Outbox, OutboxConfig};
///
/// let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let mut out = Outbox::new(OutboxConfig::default());
/// out.push(Bytes::from_static(b"a 1 1700000000\n"), 1);
/// assert!(out.next(t0).is_some());
/// out.failed(t0, "connection refused");
/// assert!(out.next(t0).is_none()); // backing off
/// let later = out.retry_at().unwrap();
/// assert_eq!(later, t0 + Duration::from_millis(100));
/// assert!(out.next(later).is_some());
/// out.sent();
/// assert_eq!(out.stats().sent_points, 1);
/// ```
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    queue: VecDeque<(Bytes, usize)>,
    bytes: usize,
    retry_at: Option<SystemTime>,
    stats: SinkStats,
}

impl Outbox {
    /// An empty queue.
    pub fn new(config: OutboxConfig) -> Outbox {
        Outbox {
            config,
            queue: VecDeque::new(),
            bytes: 0,
            retry_at: None,
            stats: SinkStats::default(),
        }
    }

    /// Queues a rendered batch of `points` points, dropping the oldest
    /// batches (counted) while over a bound.
    pub fn push(&mut self, batch: Bytes, points: usize) {
        self.bytes += batch.len();
        self.queue.push_back((batch, points));
        while self.queue.len() > self.config.max_batches.max(1)
            || (self.bytes > self.config.max_bytes && self.queue.len() > 1)
        {
            if let Some((old, n)) = self.queue.pop_front() {
                self.bytes -= old.len();
                self.stats.dropped_batches += 1;
                self.stats.dropped_points += n as u64;
            }
        }
        self.stats.queued_batches = self.queue.len();
    }

    /// The batch to send now: the oldest, unless the queue is empty or a
    /// backoff runs until after `now`.
    pub fn next(&self, now: SystemTime) -> Option<&Bytes> {
        match self.retry_at {
            Some(at) if now < at => None,
            _ => self.queue.front().map(|(b, _)| b),
        }
    }

    /// When a backoff ends, if one is running.
    pub fn retry_at(&self) -> Option<SystemTime> {
        self.retry_at
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The batch from [`next`](Outbox::next) was written whole: it leaves the queue.
    pub fn sent(&mut self) {
        if let Some((batch, n)) = self.queue.pop_front() {
            self.bytes -= batch.len();
            self.stats.sent_batches += 1;
            self.stats.sent_points += n as u64;
        }
        self.retry_at = None;
        self.stats.consecutive_failures = 0;
        self.stats.queued_batches = self.queue.len();
    }

    /// Sending failed at `now`: the batch stays first, and is offered again
    /// after a delay that doubles with each failure in a row, from
    /// `backoff_min` up to `backoff_max`.
    pub fn failed(&mut self, now: SystemTime, error: &str) {
        let doublings = self.stats.consecutive_failures.min(31);
        let delay = self
            .config
            .backoff_min
            .saturating_mul(1u32 << doublings)
            .min(self.config.backoff_max);
        self.retry_at = Some(now + delay);
        self.stats.failures += 1;
        self.stats.consecutive_failures = self.stats.consecutive_failures.saturating_add(1);
        self.stats.last_error = Some(error.to_owned());
    }

    /// What the queue has done.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn batch(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let mut out = Outbox::new(OutboxConfig {
            max_batches: 2,
            ..OutboxConfig::default()
        });
        out.push(batch(1), 3);
        out.push(batch(2), 4);
        out.push(batch(3), 5);
        assert_eq!(out.stats().dropped_batches, 1);
        assert_eq!(out.stats().dropped_points, 3);
        assert_eq!(out.next(UNIX_EPOCH), Some(&batch(2)));
    }

    #[test]
    fn byte_bound_drops_old_batches_but_keeps_the_newest() {
        let mut out = Outbox::new(OutboxConfig {
            max_bytes: 15,
            ..OutboxConfig::default()
        });
        out.push(batch(1), 1);
        out.push(batch(2), 1);
        assert_eq!(out.stats().dropped_batches, 1);
        out.push(Bytes::from(vec![9; 100]), 1);
        assert_eq!(
            out.stats().queued_batches,
            1,
            "one oversized batch is still sent"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let mut out = Outbox::new(OutboxConfig {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            ..OutboxConfig::default()
        });
        out.push(batch(1), 1);
        let mut delays = Vec::new();
        for _ in 0..5 {
            out.failed(t0, "down");
            delays.push(
                out.retry_at()
                    .unwrap()
                    .duration_since(t0)
                    .unwrap()
                    .as_secs(),
            );
        }
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert!(out.next(t0).is_none());
        assert_eq!(out.next(t0 + Duration::from_secs(5)), Some(&batch(1)));
        out.sent();
        assert_eq!(out.stats().consecutive_failures, 0);
        assert_eq!(out.stats().failures, 5);
        assert!(out.retry_at().is_none());
        assert!(out.is_empty());
    }
}
