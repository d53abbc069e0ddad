//! One output's queue: bounded, with retry and exponential backoff, counting what it drops. No IO: the caller sends and reports back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

/// A batch handed out by [`Outbox::next`]: report it with its `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Identifies the batch to [`Outbox::sent`] and [`Outbox::failed`].
    pub seq: u64,
    /// The rendered bytes.
    pub bytes: Bytes,
}

/// The queue of one output (a carbon server, a file, a pipe).
///
/// [`push`](Outbox::push) never blocks and never fails: when the queue is
/// full the oldest batch that is not being sent is dropped and counted, so a
/// sink that is down never holds up ingestion. The writer takes the batch
/// to send from [`next`](Outbox::next) and reports [`sent`](Outbox::sent) or
/// [`failed`](Outbox::failed) with its `seq`; after a failure the same batch
/// is offered again once the backoff has passed
/// ([`retry_at`](Outbox::retry_at)). Resending a graphite batch is harmless:
/// a point is keyed by path and timestamp, so carbon stores it once.
///
/// The backoff runs on the monotonic clock (`Instant`): the wall clock only
/// stamps the points, so a wall clock stepped back or forward neither stalls
/// nor hurries the retries.
///
/// ```
/// use std::time::{Duration, Instant};
/// use bytes::Bytes;
/// use stats_core::{Outbox, OutboxConfig};
///
/// let t0 = Instant::now();
/// let mut out = Outbox::new(OutboxConfig::default());
/// out.push(Bytes::from_static(b"a 1 1700000000\n"), 1);
/// let batch = out.next(t0).unwrap();
/// out.failed(batch.seq, t0, "connection refused");
/// assert!(out.next(t0).is_none()); // backing off
/// let later = out.retry_at().unwrap();
/// assert_eq!(later, t0 + Duration::from_millis(100));
/// let again = out.next(later).unwrap();
/// assert_eq!(again, batch);
/// out.sent(again.seq);
/// assert_eq!(out.stats().sent_points, 1);
/// ```
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    /// Oldest first: sequence number, bytes, points.
    queue: VecDeque<(u64, Bytes, usize)>,
    bytes: usize,
    next_seq: u64,
    /// The batch a writer holds: it is never evicted.
    sending: Option<u64>,
    retry_at: Option<Instant>,
    stats: SinkStats,
}

impl Outbox {
    /// An empty queue.
    pub fn new(config: OutboxConfig) -> Outbox {
        Outbox {
            config,
            queue: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            sending: None,
            retry_at: None,
            stats: SinkStats::default(),
        }
    }

    /// Queues a rendered batch of `points` points, dropping the oldest
    /// batches (counted) while over a bound; the batch being sent stays.
    pub fn push(&mut self, batch: Bytes, points: usize) {
        self.bytes += batch.len();
        self.queue.push_back((self.next_seq, batch, points));
        self.next_seq += 1;
        let min_len = 1 + usize::from(self.sending.is_some());
        while self.queue.len() > self.config.max_batches.max(min_len)
            || (self.bytes > self.config.max_bytes && self.queue.len() > min_len)
        {
            let oldest = match self.queue.front() {
                Some((seq, _, _)) if Some(*seq) == self.sending => 1,
                _ => 0,
            };
            if let Some((_, old, n)) = self.queue.remove(oldest) {
                self.bytes -= old.len();
                self.stats.dropped_batches += 1;
                self.stats.dropped_points += n as u64;
            }
        }
        self.stats.queued_batches = self.queue.len();
    }

    /// The batch to send now, the oldest, unless the queue is empty or a
    /// backoff runs until after `now`. It stays queued (and is never
    /// evicted) until reported.
    pub fn next(&mut self, now: Instant) -> Option<Batch> {
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let (seq, bytes, _) = self.queue.front()?;
        self.sending = Some(*seq);
        Some(Batch {
            seq: *seq,
            bytes: bytes.clone(),
        })
    }

    /// When a backoff ends, if one is running.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Ends a backoff now (at shutdown, say).
    pub fn retry_now(&mut self) {
        self.retry_at = None;
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The batch `seq` was written whole: it leaves the queue.
    pub fn sent(&mut self, seq: u64) {
        if let Some(at) = self.queue.iter().position(|(s, _, _)| *s == seq)
            && let Some((_, batch, n)) = self.queue.remove(at)
        {
            self.bytes -= batch.len();
            self.stats.sent_batches += 1;
            self.stats.sent_points += n as u64;
        }
        self.sending = None;
        self.retry_at = None;
        self.stats.consecutive_failures = 0;
        self.stats.queued_batches = self.queue.len();
    }

    /// Sending failed at `now` (`seq` is the batch tried, or `None` for a
    /// failure before any batch, such as a first connection): the batch
    /// stays first, and is offered again after a delay that doubles with
    /// each failure in a row, from `backoff_min` up to `backoff_max`.
    pub fn failed(&mut self, seq: impl Into<Option<u64>>, now: Instant, error: &str) {
        if seq.into() == self.sending {
            self.sending = None;
        }
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

    /// Gives up on everything queued (at shutdown): it is counted as dropped.
    /// Returns the points dropped.
    pub fn drop_all(&mut self) -> u64 {
        let mut points = 0;
        for (_, _, n) in self.queue.drain(..) {
            self.stats.dropped_batches += 1;
            points += n as u64;
        }
        self.stats.dropped_points += points;
        self.bytes = 0;
        self.sending = None;
        self.stats.queued_batches = 0;
        points
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

    #[test]
    fn the_batch_being_sent_is_never_evicted_nor_mistaken_for_another() {
        let mut out = Outbox::new(OutboxConfig {
            max_batches: 1,
            ..OutboxConfig::default()
        });
        out.push(batch(1), 1);
        let t0 = Instant::now();
        let sending = out.next(t0).unwrap();
        // Two flushes while it is written: the older of them is dropped, not it.
        out.push(batch(2), 2);
        out.push(batch(3), 3);
        assert_eq!(
            (out.stats().dropped_batches, out.stats().dropped_points),
            (1, 2)
        );
        out.sent(sending.seq);
        assert_eq!(
            out.stats().sent_points,
            1,
            "the batch written is the one counted"
        );
        assert_eq!(out.next(t0).map(|b| b.bytes), Some(batch(3)));
        assert_eq!(out.drop_all(), 3);
        assert!(out.is_empty());
        assert_eq!(out.stats().dropped_batches, 2);
    }

    /// The wall clock stamps the flushes, the monotonic clock times the
    /// backoff: a wall clock stepped back an hour between a failure and its
    /// retry neither holds the retry back for that hour nor reorders what
    /// is sent.
    #[test]
    fn a_wall_clock_stepped_back_an_hour_does_not_hold_the_backoff() {
        use crate::aggregate::{Aggregator, Config};

        let mut agg = Aggregator::new(Config::default()).unwrap();
        let mut out = Outbox::new(OutboxConfig {
            backoff_min: Duration::from_secs(1),
            ..OutboxConfig::default()
        });
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mono = Instant::now();
        agg.ingest(b"hits:1|c");
        let first = agg.flush(wall);
        out.push(first.plaintext(), first.points().len());
        let batch = out.next(mono).unwrap();
        out.failed(batch.seq, mono, "connection refused");
        assert!(out.next(mono).is_none(), "backing off");

        // 10 s later on the monotonic clock, the wall clock has been stepped
        // back an hour (by NTP, or an operator) and stamps the next flush.
        let wall = wall + Duration::from_secs(10) - Duration::from_secs(3600);
        let mono = mono + Duration::from_secs(10);
        agg.ingest(b"hits:2|c");
        let second = agg.flush(wall);
        out.push(second.plaintext(), second.points().len());

        let retry = out
            .next(mono)
            .expect("retried once its 1 s backoff passed, whatever the wall clock says");
        assert_eq!(retry, batch);
        out.sent(retry.seq);
        let next = out.next(mono).expect("then the next flush");
        assert_eq!(next.bytes, second.plaintext());
        // The stamps still increase: the aggregator never goes back a second.
        let text = String::from_utf8_lossy(&next.bytes).into_owned();
        assert!(text.ends_with(" 1700000001\n"), "{text}");
    }

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
        assert_eq!(out.next(Instant::now()).map(|b| b.bytes), Some(batch(2)));
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
        let t0 = Instant::now();
        let mut out = Outbox::new(OutboxConfig {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            ..OutboxConfig::default()
        });
        out.push(batch(1), 1);
        let mut delays = Vec::new();
        for _ in 0..5 {
            out.failed(None, t0, "down");
            delays.push(out.retry_at().unwrap().duration_since(t0).as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert!(out.next(t0).is_none());
        let b = out.next(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(b.bytes, batch(1));
        out.sent(b.seq);
        assert_eq!(out.stats().consecutive_failures, 0);
        assert_eq!(out.stats().failures, 5);
        assert!(out.retry_at().is_none());
        assert!(out.is_empty());
    }
}
