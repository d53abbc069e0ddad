//! Sampled tails: a bounded, lossy view of the messages of a glob, for
//! people watching (the explorer page), never a subscriber.
//!
//! A tail is not a client: it is not counted in a `PUBLISH` reply, in
//! `messages_out` or in `connected_clients`, and it can never slow a
//! publisher down or be closed by an `nlimit`. Past its rate, or when its
//! reader is behind, it keeps a count of what it skipped instead.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::pubsub::glob::Glob;

/// Bounds of one [`Tail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailConfig {
    /// Messages kept per second at most; the rest are skipped and counted.
    /// Default 100.
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
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<TailMessage>,
    window: Option<Instant>,
    kept_in_window: u32,
    skipped: u64,
    skipped_total: u64,
}

impl TailShared {
    pub(crate) fn new(glob: Glob, config: TailConfig) -> Self {
        Self {
            glob,
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// Offers a published message: kept if it matches and the rate and the
    /// queue allow, counted as skipped if it matches and they do not.
    pub(crate) fn offer(&self, channel: &Bytes, message: &Bytes, now: Instant) {
        if !self.glob.matches(channel) {
            return;
        }
        let mut st = crate::lock(&self.state);
        if st
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1))
        {
            st.window = Some(now);
            st.kept_in_window = 0;
        }
        if st.kept_in_window >= self.config.max_per_sec || st.queue.len() >= self.config.capacity {
            st.skipped += 1;
            st.skipped_total += 1;
            return;
        }
        st.kept_in_window += 1;
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
        TailBatch {
            messages: st.queue.drain(..).collect(),
            skipped: std::mem::take(&mut st.skipped),
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
/// let tail = router.tail(b"web.*", TailConfig::default().max_per_sec(2)).unwrap();
/// for i in 0..5 {
///     router.publish("web.1".into(), format!("GET /{i}").into(), now).unwrap();
/// }
/// router.publish("db".into(), "not seen".into(), now).unwrap();
/// let batch = tail.take();
/// assert_eq!(batch.messages.len(), 2); // the rate: 2 a second
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
    use super::*;

    fn shared(config: TailConfig) -> TailShared {
        TailShared::new(Glob::new(b"a*", false), config)
    }

    #[test]
    fn the_rate_resets_each_second_and_skips_are_counted() {
        let t = shared(TailConfig::default().max_per_sec(2));
        let now = Instant::now();
        for _ in 0..5 {
            t.offer(&"ab".into(), &"m".into(), now);
        }
        t.offer(&"b".into(), &"m".into(), now);
        let b = t.take();
        assert_eq!((b.messages.len(), b.skipped, b.skipped_total), (2, 3, 3));
        let later = now + Duration::from_secs(1);
        for _ in 0..3 {
            t.offer(&"a".into(), &"m".into(), later);
        }
        let b = t.take();
        assert_eq!((b.messages.len(), b.skipped, b.skipped_total), (2, 1, 4));
    }

    #[test]
    fn a_reader_behind_loses_to_the_capacity_not_memory() {
        let t = shared(TailConfig::default().max_per_sec(u32::MAX).capacity(3));
        let now = Instant::now();
        for _ in 0..10 {
            t.offer(&"a".into(), &"m".into(), now);
        }
        let b = t.take();
        assert_eq!((b.messages.len(), b.skipped), (3, 7));
    }

    #[test]
    fn previews_are_cut_and_copied() {
        let t = shared(TailConfig::default().preview(4));
        let now = Instant::now();
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
