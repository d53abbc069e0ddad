//! Sampled tails: a bounded, lossy view of the messages of a glob, for
//! people watching (the explorer page), never a subscriber.
//!
//! A tail is not a client: it is not counted in a `PUBLISH` reply, in
//! `messages_out` or in `connected_clients`, and it is never closed by an
//! `nlimit`. What it costs a publish is bounded: a glob match linear in the
//! channel's length (a message whose match would cost more is counted as
//! skipped), and one atomic load once past its rate. Past its rate, when its
//! reader is behind, or past that match bound, it counts what it skipped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

use crate::pubsub::glob::Glob;

/// Bounds of one [`Tail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailConfig {
    /// Messages kept per second at most, in bursts of a tenth of it at
    /// most (at least one); the rest are skipped and counted. Default 100.
    pub max_per_sec: u32,
    /// Bytes of each message kept (its preview). Default 1024.
    pub preview: usize,
    /// Messages held until [`Tail::take`] at most. Default 256.
    pub capacity: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            max_per_sec: 100,
            preview: 1024,
            capacity: 256,
        }
    }
}

impl TailConfig {
    /// Sets [`TailConfig::max_per_sec`].
    pub fn max_per_sec(mut self, n: u32) -> Self {
        self.max_per_sec = n;
        self
    }

    /// Sets [`TailConfig::preview`].
    pub fn preview(mut self, bytes: usize) -> Self {
        self.preview = bytes;
        self
    }

    /// Sets [`TailConfig::capacity`].
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }
}

/// One message seen by a [`Tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailMessage {
    /// The channel it was published on.
    pub channel: Bytes,
    /// Its first [`TailConfig::preview`] bytes (a copy).
    pub preview: Bytes,
    /// Its whole length in bytes.
    pub size: usize,
    /// When it was published (the `now` of the publish).
    pub at: Instant,
}

impl TailMessage {
    /// Whether [`TailMessage::preview`] is shorter than the message.
    pub fn truncated(&self) -> bool {
        self.preview.len() < self.size
    }
}

/// What [`Tail::take`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailBatch {
    /// The messages kept since the last take, oldest first.
    pub messages: Vec<TailMessage>,
    /// Messages skipped since the last take.
    pub skipped: u64,
    /// Messages skipped since the tail was opened.
    pub skipped_total: u64,
}

/// The part of a tail the router holds.
pub(crate) struct TailShared {
    glob: Glob,
    config: TailConfig,
    /// The rate's clock starts here.
    base: Instant,
    /// Nanoseconds between kept messages (1 s / `max_per_sec`).
    interval: u64,
    /// How far ahead of `now` the schedule may run: a burst's worth.
    tolerance: u64,
    /// When the next message is due at the rate, in nanoseconds from `base`
    /// (the GCRA's theoretical arrival time). Written under `state`'s lock;
    /// read without it, so that a message over the rate costs no lock.
    due: AtomicU64,
    /// Skips not yet taken.
    skipped: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<TailMessage>,
    /// Skips taken so far.
    skipped_total: u64,
}

impl TailShared {
    pub(crate) fn new(glob: Glob, config: TailConfig, now: Instant) -> Self {
        const SEC: u64 = 1_000_000_000;
        let interval = match config.max_per_sec {
            0 => u64::MAX,
            n => SEC / u64::from(n),
        };
        let burst = u64::from(config.max_per_sec / 10).max(1);
        Self {
            glob,
            config,
            base: now,
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            due: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    /// Offers a published message: kept if it matches and the rate and the
    /// queue allow, counted as skipped if it matches and they do not. The
    /// rate is a generic cell rate: one message every `1 / max_per_sec`,
    /// bursts of a tenth of a second's worth.
    pub(crate) fn offer(&self, channel: &Bytes, message: &Bytes, now: Instant) {
        // A bounded match: linear in the channel's length. A glob that
        // would need more (stars before long literals) counts the message
        // as skipped rather than slow the publisher down.
        let limit = 4 * (channel.len() + self.glob.source().len()) + 64;
        match self.glob.matches_within(channel, &mut 0, limit) {
            Some(false) => return,
            Some(true) => {}
            None => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let t =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let early = |due: u64| t.saturating_add(self.tolerance) < due;
        if early(self.due.load(Ordering::Acquire)) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut st = crate::lock(&self.state);
        let due = self.due.load(Ordering::Acquire);
        if early(due) || st.queue.len() >= self.config.capacity || self.interval == u64::MAX {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.due
            .store(due.max(t).saturating_add(self.interval), Ordering::Release);
        let keep = message.len().min(self.config.preview);
        // Copies: a slice would pin the publisher's whole read buffer.
        st.queue.push_back(TailMessage {
            channel: Bytes::copy_from_slice(channel),
            preview: Bytes::copy_from_slice(&message[..keep]),
            size: message.len(),
            at: now,
        });
    }

    pub(crate) fn take(&self) -> TailBatch {
        let mut st = crate::lock(&self.state);
        let skipped = self.skipped.swap(0, Ordering::Relaxed);
        st.skipped_total += skipped;
        TailBatch {
            messages: st.queue.drain(..).collect(),
            skipped,
            skipped_total: st.skipped_total,
        }
    }
}

/// A sampled view of the messages published on channels matching a glob,
/// opened with [`Router::tail`](crate::Router::tail); closed when dropped.
///
/// ```
/// use std::time::Instant;
/// use kids_core::{Router, RouterConfig, TailConfig};
///
/// let now = Instant::now();
/// let router = Router::new(RouterConfig::default(), now);
/// let tail = router.tail(b"web.*", TailConfig::default().max_per_sec(20), now).unwrap();
/// for i in 0..5 {
///     router.publish("web.1".into(), format!("GET /{i}").into(), now).unwrap();
/// }
/// router.publish("db".into(), "not seen".into(), now).unwrap();
/// let batch = tail.take();
/// assert_eq!(batch.messages.len(), 2); // 20 a second: bursts of 2
/// assert_eq!(&batch.messages[0].preview[..], b"GET /0");
/// assert_eq!(batch.skipped, 3);
/// // A tail is not a subscriber: PUBLISH counts no receiver for it.
/// assert_eq!(router.publish("web.1".into(), "x".into(), now), Ok(0));
/// ```
pub struct Tail {
    pub(crate) shared: std::sync::Arc<TailShared>,
    pub(crate) router: crate::Router,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("glob", self.shared.glob.source())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Tail {
    /// Takes the messages kept since the last take and the skipped counts.
    pub fn take(&self) -> TailBatch {
        self.shared.take()
    }

    /// The glob it follows.
    pub fn glob(&self) -> &Bytes {
        self.shared.glob.source()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.router.close_tail(&self.shared);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn shared(config: TailConfig, now: Instant) -> TailShared {
        TailShared::new(Glob::new(b"a*", false), config, now)
    }

    #[test]
    fn the_rate_is_spread_over_the_second_and_skips_are_counted() {
        let start = Instant::now();
        let t = shared(TailConfig::default().max_per_sec(100), start);
        // A burst is cut at a tenth of the rate.
        for _ in 0..50 {
            t.offer(&"ab".into(), &"m".into(), start);
        }
        t.offer(&"b".into(), &"m".into(), start); // not matching: not counted
        let b = t.take();
        assert_eq!((b.messages.len(), b.skipped, b.skipped_total), (10, 40, 40));
        // A message every millisecond for a second: 100 kept, evenly.
        let mut kept_at = Vec::new();
        for ms in 1..=1000 {
            let now = start + Duration::from_millis(ms);
            t.offer(&"a".into(), &"m".into(), now);
            kept_at.extend(t.take().messages.iter().map(|m| m.at));
        }
        assert_eq!(kept_at.len(), 100);
        assert!(
            kept_at
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::from_millis(10))
        );
        assert_eq!(t.take().skipped_total, 40 + 900);
    }

    #[test]
    fn a_slow_rate_still_keeps_one() {
        let now = Instant::now();
        let t = shared(TailConfig::default().max_per_sec(2), now);
        for _ in 0..3 {
            t.offer(&"a".into(), &"m".into(), now);
        }
        assert_eq!(t.take().messages.len(), 1);
        t.offer(&"a".into(), &"m".into(), now + Duration::from_millis(499));
        assert_eq!(t.take().messages.len(), 0);
        t.offer(&"a".into(), &"m".into(), now + Duration::from_millis(1000));
        assert_eq!(t.take().messages.len(), 1);
    }

    #[test]
    fn a_reader_behind_loses_to_the_capacity_not_memory() {
        let now = Instant::now();
        let t = shared(TailConfig::default().max_per_sec(u32::MAX).capacity(3), now);
        for _ in 0..10 {
            t.offer(&"a".into(), &"m".into(), now);
        }
        let b = t.take();
        assert_eq!((b.messages.len(), b.skipped), (3, 7));
    }

    #[test]
    fn a_glob_too_costly_for_a_channel_counts_a_skip() {
        let now = Instant::now();
        let glob = Glob::new(format!("*{}b", "a".repeat(200)).as_bytes(), false);
        let t = TailShared::new(glob, TailConfig::default(), now);
        let channel = Bytes::from("a".repeat(4000));
        t.offer(&channel, &"m".into(), now);
        let b = t.take();
        assert_eq!((b.messages.len(), b.skipped), (0, 1));
        // A cheap one that matches is kept.
        t.offer(
            &Bytes::from(format!("{}b", "a".repeat(200))),
            &"m".into(),
            now,
        );
        assert_eq!(t.take().messages.len(), 1);
    }

    #[test]
    fn previews_are_cut_and_copied() {
        let now = Instant::now();
        let t = shared(TailConfig::default().preview(4), now);
        let buf = Bytes::from(vec![b'x'; 100]);
        t.offer(&"a".into(), &buf, now);
        t.offer(&"a".into(), &"abc".into(), now);
        let b = t.take();
        assert_eq!(b.messages[0].preview.len(), 4);
        assert_eq!(b.messages[0].size, 100);
        assert!(b.messages[0].truncated());
        assert!(!b.messages[1].truncated());
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        assert!(!range.contains(&(b.messages[0].preview.as_ptr() as usize)));
    }
}
