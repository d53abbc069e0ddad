//! The pub/sub router: channel index, pattern set, fan-out and statistics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::pubsub::glob::Glob;
use crate::pubsub::nlimit::NLimits;
use crate::pubsub::patterns::{PatternEntry, Patterns};
use crate::pubsub::tail::{Tail, TailConfig, TailShared};
use crate::resp::Proto;
use crate::server::outbox::{Outbox, Pushed};

/// Sees every published message before it is routed.
///
/// The log store engine attaches here. Calls for the messages of one
/// publisher arrive in that publisher's order; a tap that needs one total
/// order across publishers takes it under its own lock, which also orders
/// routing, since a refused message is not routed.
pub trait Tap: Send + Sync + 'static {
    /// Called for each message; an error refuses it, and the publisher gets a
    /// `-TRYLATER` reply it can retry on. After a refused `LOG` (the agent
    /// verb), the connection refuses every later `LOG` until it reconnects or
    /// sends `RESET`, so a pipelining agent that re-sends from the refused
    /// message keeps its order; `PUBLISH` is refused one message at a time.
    ///
    /// # Errors
    /// [`Refused`] when the tap cannot take the message now.
    ///
    /// `Ok(Some(ticket))` means the tap took the message but has not stored
    /// it yet: a transport should hold the publisher's reply until
    /// [`Tap::poll_stored`] says the ticket is stored. `Ok(None)`: stored
    /// already (or nothing to wait for).
    fn publish(
        &self,
        channel: &Bytes,
        message: &Bytes,
        now: Instant,
    ) -> Result<Option<u64>, Refused>;

    /// Ready once every message up to `ticket` is stored (`true`), or will
    /// never be (`false`: the tap stopped without storing it; the transport
    /// must not acknowledge it, and closes the connection instead).
    fn poll_stored(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let _ = (ticket, cx);
        Poll::Ready(true)
    }

    /// Ready when the tap has room for more messages; a transport does not
    /// read more requests until it is (the `block` policy).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }

    /// Appends `key:value` lines to the `# Stores` section of `INFO`.
    fn info(&self, out: &mut String) {
        let _ = out;
    }
}

/// A tap's refusal of one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// Shown to the publisher after `-TRYLATER `.
    pub reason: String,
}

/// Settings of a [`Router`].
///
/// ```
/// use kids_core::{NLimits, RouterConfig};
/// let config = RouterConfig::default().ignore_case(true).nlimits(NLimits::default());
/// assert!(config.is_ignore_case());
/// ```
#[derive(Debug, Clone)]
pub struct RouterConfig {
    ignore_case: bool,
    nlimits: NLimits,
    max_tracked_topics: usize,
    max_pattern_len: usize,
    max_channel_len: usize,
    max_patterns_per_client: usize,
    slice_steps: usize,
    max_tails: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            ignore_case: false,
            nlimits: NLimits::default(),
            max_tracked_topics: 1024,
            max_pattern_len: 256,
            max_channel_len: 4 * 1024,
            max_patterns_per_client: 10_000,
            slice_steps: 1 << 17,
            max_tails: 16,
        }
    }
}

impl RouterConfig {
    /// Match patterns ignoring ASCII case (kids' `ignore_case`).
    pub fn ignore_case(mut self, on: bool) -> Self {
        self.ignore_case = on;
        self
    }
    /// Output limits per client class.
    pub fn nlimits(mut self, limits: NLimits) -> Self {
        self.nlimits = limits;
        self
    }
    /// How many topics without subscribers get their own counters in INFO;
    /// messages to further topics are counted together.
    pub fn max_tracked_topics(mut self, n: usize) -> Self {
        self.max_tracked_topics = n;
        self
    }
    /// Longest glob pattern accepted by PSUBSCRIBE and PUBSUB CHANNELS
    /// (a kids bound: Redis has none); longer ones get an error reply, and
    /// a PSUBSCRIBE naming one is refused whole. Default 256 bytes: one pattern matched against one channel costs at
    /// most their lengths multiplied, so with the channel bound a single
    /// match stays within about a million steps.
    pub fn max_pattern_len(mut self, bytes: usize) -> Self {
        self.max_pattern_len = bytes;
        self
    }
    /// The pattern length bound.
    pub fn pattern_len(&self) -> usize {
        self.max_pattern_len
    }
    /// Longest channel name a client may publish, log or subscribe to (a
    /// kids bound: Redis has none); longer ones get an `-ERR` reply and
    /// nothing is routed. A `SUBSCRIBE` or `PSUBSCRIBE` naming one over its
    /// bound is refused whole: the error is its only reply. Default 4 KiB.
    pub fn max_channel_len(mut self, bytes: usize) -> Self {
        self.max_channel_len = bytes;
        self
    }
    /// The channel name bound.
    pub fn channel_len(&self) -> usize {
        self.max_channel_len
    }
    /// Most patterns one client may subscribe to at once (a kids bound:
    /// Redis has none); a `PSUBSCRIBE` that would pass it is refused whole
    /// with one `-ERR` reply, and subscribes to none of its patterns (one
    /// already held, or named twice, counts once). Default 10,000.
    pub fn max_patterns_per_client(mut self, n: usize) -> Self {
        self.max_patterns_per_client = n;
        self
    }
    /// The patterns-per-client bound.
    pub fn patterns_per_client(&self) -> usize {
        self.max_patterns_per_client
    }
    /// Work a connection's publish may do at once matching patterns (in
    /// matcher steps, about a nanosecond each) before it lets the other
    /// connections run and carries on ([`Router::publish_sliced`]). Default
    /// 131,072: well under a millisecond. A slice ends between patterns, so
    /// one can run over by a single match (at most `max_pattern_len` x
    /// `max_channel_len` steps).
    pub fn slice_steps(mut self, steps: usize) -> Self {
        self.slice_steps = steps.max(1);
        self
    }
    /// The slice bound.
    pub fn slice_steps_value(&self) -> usize {
        self.slice_steps
    }
    /// How many [`Tail`]s may be open at once (default 16): each costs a
    /// glob match on every publish.
    pub fn max_tails(mut self, n: usize) -> Self {
        self.max_tails = n;
        self
    }
    /// The bound set by [`RouterConfig::max_tracked_topics`].
    pub fn tracked_topics_bound(&self) -> usize {
        self.max_tracked_topics
    }
    /// Whether patterns ignore case.
    pub fn is_ignore_case(&self) -> bool {
        self.ignore_case
    }
    /// The output limits.
    pub fn limits(&self) -> &NLimits {
        &self.nlimits
    }
}

/// Routes published messages to the subscribers of channels and patterns.
///
/// Cheap to clone (an `Arc`) and shareable across the threads of a
/// multi-threaded runtime. Each published message is encoded once per frame
/// shape (RESP2 `message`, RESP3 push, and the same per matching pattern), and
/// the same [`Bytes`] is handed to every receiver's [`Outbox`]. A receiver
/// whose outbox goes over its `nlimit` is closed and counted, never silently
/// skipped.
///
/// ```
/// use std::time::Instant;
/// use kids_core::{Router, RouterConfig, Session};
///
/// let now = Instant::now();
/// let router = Router::new(RouterConfig::default(), now);
/// let mut subscriber = Session::new(&router);
/// subscriber.handle(vec!["SUBSCRIBE".into(), "news".into()], now);
/// assert_eq!(router.publish("news".into(), "hello".into(), now), Ok(1));
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: RouterConfig,
    started: Instant,
    next_id: AtomicU64,
    /// Keyed by names clients send: foldhash with a random seed per map.
    topics: RwLock<HashMap<Bytes, Topic, foldhash::fast::RandomState>>,
    patterns: RwLock<Patterns>,
    tap: RwLock<Option<Arc<dyn Tap>>>,
    /// Whether `tap` holds one, read without its lock on every request.
    has_tap: AtomicBool,
    counters: Counters,
    rates: Mutex<Rates>,
    tails: RwLock<Vec<Arc<TailShared>>>,
    /// Whether `tails` holds any, read without its lock on every publish.
    has_tails: AtomicBool,
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<Arc<Outbox>>,
    messages: AtomicU64,
    last_count: AtomicU64,
    rate_bits: AtomicU64,
    bytes: AtomicU64,
    last_bytes: AtomicU64,
    byte_rate_bits: AtomicU64,
    /// Nanoseconds from the router's start to the last message, plus one (0: none yet).
    last_at: AtomicU64,
}

impl Topic {
    /// Counts one message of `len` bytes published at `at` (nanoseconds since the start, plus one).
    fn count(&self, len: usize, at: u64) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        // The latest, whichever of racing publishers stores last.
        self.last_at.fetch_max(at, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    closed_nlimit: AtomicU64,
    untracked: AtomicU64,
    clients: AtomicUsize,
}

#[derive(Default)]
struct Rates {
    last: Option<(Instant, u64, u64)>,
    in_per_sec: f64,
    out_per_sec: f64,
}

/// What [`Router::publish_sliced`] did.
#[derive(Debug)]
pub enum Published {
    /// Routed to every receiver.
    Done {
        /// Receivers, as [`Router::publish`] counts them.
        receivers: usize,
        /// The tap's ticket, as [`Router::publish_ticketed`] returns it.
        ticket: Option<u64>,
    },
    /// Cut short: pass it to [`Router::resume`] until that says it is done.
    Sliced(Fanout),
}

/// A publish whose pattern matching was cut short by
/// [`Router::publish_sliced`]: the patterns still to check.
#[derive(Debug)]
pub struct Fanout {
    channel: Bytes,
    message: Bytes,
    ids: Vec<u32>,
    next: usize,
    /// Patterns added at or after this sequence number came after the publish.
    seq: u64,
    receivers: usize,
    ticket: Option<u64>,
    now: Instant,
}

impl Fanout {
    /// The tap's ticket for the message, as [`Router::publish_ticketed`] returns it.
    pub fn ticket(&self) -> Option<u64> {
        self.ticket
    }

    /// Patterns still to check.
    pub fn remaining(&self) -> usize {
        self.ids.len() - self.next
    }
}

/// A snapshot of the router's counters, for INFO and monitoring.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages published.
    pub messages_in: u64,
    /// Messages queued for receivers (one per receiver).
    pub messages_out: u64,
    /// Messages lost with clients closed by an nlimit.
    pub messages_dropped: u64,
    /// Messages refused by the tap (the publisher was told to retry).
    pub messages_refused: u64,
    /// Clients closed for going over an nlimit.
    pub clients_closed_nlimit: u64,
    /// Sessions currently open.
    pub connected_clients: usize,
    /// Publish rate over the last [`Router::tick`] interval.
    pub messages_in_per_sec: f64,
    /// Delivery rate over the last [`Router::tick`] interval.
    pub messages_out_per_sec: f64,
    /// Per-topic message counts and rates, by topic name.
    pub topics: Vec<TopicStats>,
    /// Messages to topics beyond `max_tracked_topics`.
    pub untracked_messages: u64,
    /// Seconds since the router was created.
    pub uptime_secs: u64,
}

/// Counters of one topic.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic (channel) name.
    pub name: Bytes,
    /// Messages published to it.
    pub messages: u64,
    /// Its publish rate over the last tick interval.
    pub per_sec: f64,
    /// Its current number of channel subscribers.
    pub subscribers: usize,
    /// Message bytes published to it (payloads only).
    pub bytes: u64,
    /// Its payload bytes per second over the last tick interval.
    pub bytes_per_sec: f64,
    /// Time since its last message; `None` before the first.
    pub last_message_age: Option<Duration>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Encodes a `message` or `pmessage` frame in one allocation.
pub(crate) fn message_frame(
    proto: Proto,
    pattern: Option<&[u8]>,
    channel: &[u8],
    message: &[u8],
) -> Bytes {
    let mut buf = BytesMut::with_capacity(
        48 + pattern.map_or(0, <[u8]>::len) + channel.len() + message.len(),
    );
    let mut w = crate::resp::ReplyWriter::new(&mut buf, proto);
    match pattern {
        None => {
            w.push(3);
            w.raw(b"$7\r\nmessage\r\n");
        }
        Some(p) => {
            w.push(4);
            w.raw(b"$8\r\npmessage\r\n");
            w.bulk(p);
        }
    }
    w.bulk(channel);
    w.bulk(message);
    buf.freeze()
}

/// Lazily encoded frames of one message, one per protocol version.
struct Frames<'a> {
    pattern: Option<&'a [u8]>,
    channel: &'a [u8],
    message: &'a [u8],
    resp2: Option<Bytes>,
    resp3: Option<Bytes>,
}

impl<'a> Frames<'a> {
    fn new(pattern: Option<&'a [u8]>, channel: &'a [u8], message: &'a [u8]) -> Self {
        Self {
            pattern,
            channel,
            message,
            resp2: None,
            resp3: None,
        }
    }

    fn get(&mut self, proto: Proto) -> Bytes {
        let slot = match proto {
            Proto::Resp2 => &mut self.resp2,
            Proto::Resp3 => &mut self.resp3,
        };
        slot.get_or_insert_with(|| message_frame(proto, self.pattern, self.channel, self.message))
            .clone()
    }
}

impl Router {
    /// A router with no subscribers; `now` starts its uptime.
    pub fn new(config: RouterConfig, now: Instant) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                started: now,
                next_id: AtomicU64::new(1),
                topics: RwLock::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
                patterns: RwLock::new(Patterns::default()),
                tap: RwLock::new(None),
                has_tap: AtomicBool::new(false),
                counters: Counters::default(),
                rates: Mutex::new(Rates::default()),
                tails: RwLock::new(Vec::new()),
                has_tails: AtomicBool::new(false),
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &RouterConfig {
        &self.inner.config
    }

    /// Attaches the tap that sees every published message (replacing any other).
    pub fn set_tap(&self, tap: Arc<dyn Tap>) {
        *write(&self.inner.tap) = Some(tap);
        self.inner.has_tap.store(true, Ordering::Release);
    }

    /// Detaches the tap.
    pub fn clear_tap(&self) {
        *write(&self.inner.tap) = None;
        self.inner.has_tap.store(false, Ordering::Release);
    }

    /// Ready once the tap stored every message up to `ticket` (`true`, and
    /// at once without a tap) or never will (`false`), as [`Tap::poll_stored`].
    pub fn poll_stored(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<bool> {
        match read(&self.inner.tap).as_ref() {
            Some(tap) => tap.poll_stored(ticket, cx),
            None => Poll::Ready(true),
        }
    }

    /// Sessions open on this router now.
    pub fn connected_clients(&self) -> usize {
        self.inner.counters.clients.load(Ordering::Relaxed)
    }

    /// Ready when the tap has room for more messages (at once without a tap).
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.inner.has_tap.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match read(&self.inner.tap).as_ref() {
            Some(tap) => tap.poll_room(cx),
            None => Poll::Ready(()),
        }
    }

    /// The tap's `INFO` lines; `None` without a tap.
    pub fn tap_info(&self) -> Option<String> {
        read(&self.inner.tap).as_ref().map(|tap| {
            let mut out = String::new();
            tap.info(&mut out);
            out
        })
    }

    pub(crate) fn new_outbox(&self) -> Arc<Outbox> {
        self.inner.counters.clients.fetch_add(1, Ordering::Relaxed);
        Arc::new(Outbox::new(
            self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        ))
    }

    pub(crate) fn drop_outbox(&self) {
        self.inner.counters.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes `message` on `channel`; returns the number of receivers (a
    /// client counts once per channel subscription and once per matching
    /// pattern), as Redis's `PUBLISH` reply.
    ///
    /// # Errors
    /// [`Refused`] when the tap refused the message; it was not routed.
    pub fn publish(&self, channel: Bytes, message: Bytes, now: Instant) -> Result<usize, Refused> {
        self.publish_ticketed(channel, message, now).map(|(n, _)| n)
    }

    /// As [`Router::publish`], with the tap's ticket: hold the publisher's
    /// reply until [`Router::poll_stored`] is ready for it.
    ///
    /// # Errors
    /// [`Refused`] when the tap refused the message; it was not routed.
    pub fn publish_ticketed(
        &self,
        channel: Bytes,
        message: Bytes,
        now: Instant,
    ) -> Result<(usize, Option<u64>), Refused> {
        match self.publish_within(channel, message, now, usize::MAX)? {
            Published::Done { receivers, ticket } => Ok((receivers, ticket)),
            Published::Sliced(mut rest) => loop {
                if let Some(receivers) = self.resume(&mut rest) {
                    return Ok((receivers, rest.ticket));
                }
            },
        }
    }

    /// As [`Router::publish_ticketed`], but the pattern matching stops after
    /// [`RouterConfig::slice_steps`] of work, so that a server on one
    /// thread can serve its other connections before it carries on
    /// ([`Router::resume`]). The tap has seen the message, and its channel
    /// subscribers have it, either way; the patterns it is matched against
    /// are those subscribed when the publish began and still subscribed
    /// when their turn comes.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kids_core::{Published, Router, RouterConfig, Session};
    ///
    /// let now = Instant::now();
    /// let router = Router::new(RouterConfig::default().slice_steps(10), now);
    /// let mut subscriber = Session::new(&router);
    /// let patterns: Vec<bytes::Bytes> = std::iter::once("PSUBSCRIBE".into())
    ///     .chain((0..100).map(|i| format!("*a*{i}*").into()))
    ///     .collect();
    /// subscriber.handle(patterns, now);
    /// let mut slices = 1;
    /// let receivers = match router.publish_sliced("xa7".into(), "m".into(), now).unwrap() {
    ///     Published::Done { receivers, .. } => receivers,
    ///     Published::Sliced(mut rest) => loop {
    ///         slices += 1;
    ///         if let Some(n) = router.resume(&mut rest) {
    ///             break n;
    ///         }
    ///     },
    /// };
    /// assert_eq!(receivers, 1); // *a*7*
    /// assert!(slices > 1);
    /// ```
    ///
    /// # Errors
    /// [`Refused`] when the tap refused the message; it was not routed.
    pub fn publish_sliced(
        &self,
        channel: Bytes,
        message: Bytes,
        now: Instant,
    ) -> Result<Published, Refused> {
        self.publish_within(channel, message, now, self.inner.config.slice_steps)
    }

    fn publish_within(
        &self,
        channel: Bytes,
        message: Bytes,
        now: Instant,
        budget: usize,
    ) -> Result<Published, Refused> {
        let inner = &*self.inner;
        let mut ticket = None;
        if inner.has_tap.load(Ordering::Acquire)
            && let Some(tap) = read(&inner.tap).as_ref()
        {
            match tap.publish(&channel, &message, now) {
                Ok(t) => ticket = t,
                Err(refused) => {
                    inner.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(refused);
                }
            }
        }
        inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        if inner.has_tails.load(Ordering::Acquire) {
            for tail in read(&inner.tails).iter() {
                tail.offer(&channel, &message, now);
            }
        }
        let at = self.stamp(now);
        let mut receivers = 0;
        let tracked = {
            let topics = read(&inner.topics);
            match topics.get(&channel) {
                Some(topic) => {
                    topic.count(message.len(), at);
                    let mut frames = Frames::new(None, &channel, &message);
                    for outbox in &topic.subscribers {
                        self.deliver(&mut frames, outbox, now, &mut receivers);
                    }
                    true
                }
                // The table is full: count it here, without the write lock.
                None if topics.len() >= inner.config.max_tracked_topics => {
                    inner.counters.untracked.fetch_add(1, Ordering::Relaxed);
                    true
                }
                None => false,
            }
        };
        if !tracked {
            self.track_new_topic(&channel, message.len(), at);
        }
        let cut = {
            let patterns = read(&inner.patterns);
            self.match_patterns(&patterns, &channel, &message, now, budget, &mut receivers)
        };
        match cut {
            None => {
                inner
                    .counters
                    .messages_out
                    .fetch_add(receivers as u64, Ordering::Relaxed);
                Ok(Published::Done { receivers, ticket })
            }
            Some((ids, seq)) => Ok(Published::Sliced(Fanout {
                channel,
                message,
                ids,
                next: 0,
                seq,
                receivers,
                ticket,
                now,
            })),
        }
    }

    /// The key the pattern index files `channel` under: lowered when
    /// patterns ignore case.
    fn pattern_key<'c>(&self, channel: &'c [u8]) -> std::borrow::Cow<'c, [u8]> {
        if self.inner.config.ignore_case && channel.iter().any(u8::is_ascii_uppercase) {
            std::borrow::Cow::Owned(channel.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(channel)
        }
    }

    /// Matches `channel` against the patterns that can match it, delivering
    /// to each that does, until `budget` steps are spent; then returns the
    /// ids of the patterns left and the sequence number they must be under.
    fn match_patterns(
        &self,
        patterns: &Patterns,
        channel: &Bytes,
        message: &Bytes,
        now: Instant,
        budget: usize,
        receivers: &mut usize,
    ) -> Option<(Vec<u32>, u64)> {
        if patterns.len() == 0 {
            return None;
        }
        let key = self.pattern_key(channel);
        let buckets = patterns.candidates(&key);
        let mut steps = 0usize;
        for (b, bucket) in buckets.iter().enumerate() {
            for (i, &id) in bucket.iter().enumerate() {
                if steps >= budget {
                    let mut rest = bucket[i..].to_vec();
                    buckets[b + 1..]
                        .iter()
                        .for_each(|b| rest.extend_from_slice(b));
                    return Some((rest, patterns.next_seq()));
                }
                if let Some(entry) = patterns.get(id) {
                    self.match_one(entry, channel, message, now, &mut steps, receivers);
                }
            }
        }
        None
    }

    fn match_one(
        &self,
        entry: &PatternEntry,
        channel: &[u8],
        message: &[u8],
        now: Instant,
        steps: &mut usize,
        receivers: &mut usize,
    ) {
        *steps += 1;
        if entry.glob.matches_counted(channel, steps) {
            let mut frames = Frames::new(Some(entry.glob.source()), channel, message);
            for outbox in &entry.subscribers {
                self.deliver(&mut frames, outbox, now, receivers);
            }
            *steps += entry.subscribers.len();
        }
    }

    fn deliver(
        &self,
        frames: &mut Frames<'_>,
        outbox: &Arc<Outbox>,
        now: Instant,
        receivers: &mut usize,
    ) {
        let limits = &self.inner.config.nlimits;
        match outbox.push_with(|proto| frames.get(proto), true, None, now, limits) {
            Pushed::Queued => *receivers += 1,
            Pushed::Closed { dropped } => {
                *receivers += 1;
                self.note_nlimit_close(outbox, dropped);
            }
            Pushed::AlreadyClosed => {}
        }
    }

    /// Carries a sliced publish on for another [`RouterConfig::slice_steps`]
    /// of work; `Some(receivers)` once it is done (the `PUBLISH` reply).
    pub fn resume(&self, rest: &mut Fanout) -> Option<usize> {
        let budget = self.inner.config.slice_steps;
        {
            let patterns = read(&self.inner.patterns);
            let mut steps = 0usize;
            while rest.next < rest.ids.len() {
                if steps >= budget {
                    return None;
                }
                let id = rest.ids[rest.next];
                rest.next += 1;
                // Gone, or a pattern added since the publish began in its slot.
                if let Some(entry) = patterns.get(id).filter(|e| e.seq < rest.seq) {
                    let (channel, message) = (&rest.channel, &rest.message);
                    self.match_one(
                        entry,
                        channel,
                        message,
                        rest.now,
                        &mut steps,
                        &mut rest.receivers,
                    );
                }
            }
        }
        rest.ids = Vec::new();
        self.inner
            .counters
            .messages_out
            .fetch_add(rest.receivers as u64, Ordering::Relaxed);
        Some(rest.receivers)
    }

    /// Counts a client closed by its nlimit and the messages lost with it.
    pub(crate) fn note_nlimit_close(&self, outbox: &Outbox, dropped: u64) {
        let c = &self.inner.counters;
        c.closed_nlimit.fetch_add(1, Ordering::Relaxed);
        c.dropped.fetch_add(dropped, Ordering::Relaxed);
        tracing::info!(client = outbox.id(), dropped, "client closed by nlimit");
    }

    /// `now` as [`Topic::last_at`] holds it.
    fn stamp(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.inner.started).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn track_new_topic(&self, channel: &Bytes, len: usize, at: u64) {
        let inner = &*self.inner;
        let mut topics = write(&inner.topics);
        // Another publisher may have added it, or filled the table, meanwhile.
        if let Some(topic) = topics.get(channel) {
            topic.count(len, at);
        } else if topics.len() < inner.config.max_tracked_topics {
            // A copy: the request's slice would pin the client's whole read buffer.
            let topic = Topic::default();
            topic.count(len, at);
            topics.insert(Bytes::copy_from_slice(channel), topic);
        } else {
            inner.counters.untracked.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn subscribe(&self, channel: &Bytes, outbox: &Arc<Outbox>) {
        let mut topics = write(&self.inner.topics);
        match topics.get_mut(channel) {
            Some(topic) => topic.subscribers.push(outbox.clone()),
            None => {
                // A copy: the request's slice would pin the client's whole read buffer.
                let topic = Topic {
                    subscribers: vec![outbox.clone()],
                    ..Topic::default()
                };
                topics.insert(Bytes::copy_from_slice(channel), topic);
            }
        }
    }

    pub(crate) fn unsubscribe(&self, channel: &Bytes, outbox: &Arc<Outbox>) {
        let mut topics = write(&self.inner.topics);
        let over = topics.len() > self.inner.config.max_tracked_topics;
        if let Some(topic) = topics.get_mut(channel) {
            topic.subscribers.retain(|o| !Arc::ptr_eq(o, outbox));
            // Keep the counters of a tracked topic unless the table is over its bound.
            if topic.subscribers.is_empty() && over {
                let messages = topic.messages.load(Ordering::Relaxed);
                self.inner
                    .counters
                    .untracked
                    .fetch_add(messages, Ordering::Relaxed);
                topics.remove(channel);
            }
        }
    }

    pub(crate) fn psubscribe(&self, pattern: &Bytes, outbox: &Arc<Outbox>) {
        // Compiled before taking the lock: publishers keep running meanwhile.
        let glob = Glob::new(pattern, self.inner.config.ignore_case);
        write(&self.inner.patterns).subscribe(glob, outbox);
    }

    pub(crate) fn punsubscribe(&self, pattern: &Bytes, outbox: &Arc<Outbox>) {
        write(&self.inner.patterns).unsubscribe(pattern, outbox);
    }

    /// Channels with at least one subscriber, optionally filtered by a glob
    /// (`PUBSUB CHANNELS`).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let glob = pattern.map(|p| Glob::new(p, self.inner.config.ignore_case));
        read(&self.inner.topics)
            .iter()
            .filter(|(name, t)| {
                !t.subscribers.is_empty() && glob.as_ref().is_none_or(|g| g.matches(name))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Channel subscribers of `channel` (`PUBSUB NUMSUB`).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        read(&self.inner.topics)
            .get(channel)
            .map_or(0, |t| t.subscribers.len())
    }

    /// Distinct patterns subscribed to (`PUBSUB NUMPAT`).
    pub fn numpat(&self) -> usize {
        read(&self.inner.patterns).len()
    }

    /// Opens a sampled [`Tail`] of the messages published on channels
    /// matching `glob` (Redis glob syntax; a name without special
    /// characters matches only itself). It is not a subscriber: see [`Tail`].
    /// `now` starts its rate's clock.
    ///
    /// # Errors
    /// [`Error::Tail`](crate::Error::Tail) when `glob` is longer than
    /// [`RouterConfig::max_pattern_len`] or [`RouterConfig::max_tails`]
    /// tails are open.
    pub fn tail(
        &self,
        glob: &[u8],
        config: TailConfig,
        now: Instant,
    ) -> Result<Tail, crate::Error> {
        let inner = &*self.inner;
        if glob.len() > inner.config.max_pattern_len {
            return Err(crate::Error::Tail(format!(
                "the glob is {} bytes, over the bound of {}",
                glob.len(),
                inner.config.max_pattern_len
            )));
        }
        let shared = Arc::new(TailShared::new(
            Glob::new(glob, inner.config.ignore_case),
            config,
            now,
        ));
        let mut tails = write(&inner.tails);
        if tails.len() >= inner.config.max_tails {
            return Err(crate::Error::Tail(format!(
                "{} tails are open, the most allowed",
                tails.len()
            )));
        }
        tails.push(shared.clone());
        inner.has_tails.store(true, Ordering::Release);
        Ok(Tail {
            shared,
            router: self.clone(),
        })
    }

    pub(crate) fn close_tail(&self, tail: &Arc<TailShared>) {
        let mut tails = write(&self.inner.tails);
        tails.retain(|t| !Arc::ptr_eq(t, tail));
        self.inner
            .has_tails
            .store(!tails.is_empty(), Ordering::Release);
    }

    /// Tails open now.
    pub fn tails(&self) -> usize {
        read(&self.inner.tails).len()
    }

    /// How many subscribed patterns match `channel`, spending at most
    /// `budget` matching steps (one per pattern looked at and per byte
    /// compared; those spent are taken off it): `None` when the budget ran
    /// out first. Only the patterns that can match are checked (the index by
    /// literal prefix and suffix).
    pub fn matching_patterns(&self, channel: &[u8], budget: &mut usize) -> Option<usize> {
        let patterns = read(&self.inner.patterns);
        if patterns.len() == 0 {
            return Some(0);
        }
        let key = self.pattern_key(channel);
        let (mut count, mut steps) = (0, 0usize);
        let limit = *budget;
        let counted = 'all: {
            for bucket in patterns.candidates(&key) {
                for &id in bucket {
                    steps += 1;
                    let Some(entry) = patterns.get(id) else {
                        continue;
                    };
                    match entry.glob.matches_within(channel, &mut steps, limit) {
                        Some(true) => count += 1,
                        Some(false) => {}
                        None => break 'all false,
                    }
                }
            }
            steps <= limit
        };
        *budget = limit.saturating_sub(steps);
        counted.then_some(count)
    }

    /// Updates the per-second rates reported by [`Router::stats`]; call it
    /// about once a second.
    pub fn tick(&self, now: Instant) {
        let c = &self.inner.counters;
        let (msg_in, msg_out) = (
            c.messages_in.load(Ordering::Relaxed),
            c.messages_out.load(Ordering::Relaxed),
        );
        let mut rates = crate::lock(&self.inner.rates);
        let elapsed = match rates.last {
            Some((t, last_in, last_out)) => {
                let secs = now.saturating_duration_since(t).as_secs_f64();
                if secs <= 0.0 {
                    return;
                }
                rates.in_per_sec = msg_in.saturating_sub(last_in) as f64 / secs;
                rates.out_per_sec = msg_out.saturating_sub(last_out) as f64 / secs;
                Some(secs)
            }
            None => None,
        };
        rates.last = Some((now, msg_in, msg_out));
        drop(rates);
        for topic in read(&self.inner.topics).values() {
            let count = topic.messages.load(Ordering::Relaxed);
            let last = topic.last_count.swap(count, Ordering::Relaxed);
            let bytes = topic.bytes.load(Ordering::Relaxed);
            let last_bytes = topic.last_bytes.swap(bytes, Ordering::Relaxed);
            if let Some(secs) = elapsed {
                let rate = count.saturating_sub(last) as f64 / secs;
                topic.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
                let rate = bytes.saturating_sub(last_bytes) as f64 / secs;
                topic
                    .byte_rate_bits
                    .store(rate.to_bits(), Ordering::Relaxed);
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self, now: Instant) -> Stats {
        let c = &self.inner.counters;
        let rates = crate::lock(&self.inner.rates);
        let (in_per_sec, out_per_sec) = (rates.in_per_sec, rates.out_per_sec);
        drop(rates);
        let mut topics: Vec<TopicStats> = read(&self.inner.topics)
            .iter()
            .map(|(name, t)| TopicStats {
                name: name.clone(),
                messages: t.messages.load(Ordering::Relaxed),
                per_sec: f64::from_bits(t.rate_bits.load(Ordering::Relaxed)),
                subscribers: t.subscribers.len(),
                bytes: t.bytes.load(Ordering::Relaxed),
                bytes_per_sec: f64::from_bits(t.byte_rate_bits.load(Ordering::Relaxed)),
                last_message_age: match t.last_at.load(Ordering::Relaxed) {
                    0 => None,
                    at => Some(now.saturating_duration_since(
                        self.inner.started + Duration::from_nanos(at - 1),
                    )),
                },
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Stats {
            messages_in: c.messages_in.load(Ordering::Relaxed),
            messages_out: c.messages_out.load(Ordering::Relaxed),
            messages_dropped: c.dropped.load(Ordering::Relaxed),
            messages_refused: c.refused.load(Ordering::Relaxed),
            clients_closed_nlimit: c.closed_nlimit.load(Ordering::Relaxed),
            connected_clients: c.clients.load(Ordering::Relaxed),
            messages_in_per_sec: in_per_sec,
            messages_out_per_sec: out_per_sec,
            topics,
            untracked_messages: c.untracked.load(Ordering::Relaxed),
            uptime_secs: now.saturating_duration_since(self.inner.started).as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frame_shape_is_encoded_once_and_shared() {
        let now = Instant::now();
        let router = Router::new(RouterConfig::default(), now);
        let boxes: Vec<Arc<Outbox>> = (0..4).map(|_| router.new_outbox()).collect();
        let resp3 = Bytes::from_static(b"+OK\r\n");
        boxes[3].push_switching(resp3, Proto::Resp3, now, router.config().limits());
        for b in &boxes {
            router.subscribe(&Bytes::from_static(b"c"), b);
        }
        router.psubscribe(&Bytes::from_static(b"c*"), &boxes[0]);
        router.psubscribe(&Bytes::from_static(b"c*"), &boxes[1]);
        assert_eq!(router.publish("c".into(), "m".into(), now), Ok(6));
        let last = |i: usize| *boxes[i].queued_ptrs().last().expect("queued");
        let first = |i: usize| boxes[i].queued_ptrs()[0];
        // RESP2 `message`: one allocation for boxes 0, 1, 2.
        assert_eq!(first(0), first(1));
        assert_eq!(first(0), last(2));
        // RESP3 push: its own encoding.
        assert_ne!(last(3), first(0));
        // `pmessage` for the pattern: one more shared encoding.
        assert_eq!(last(0), last(1));
        assert_ne!(last(0), first(0));
    }

    #[test]
    fn stored_names_do_not_pin_the_request_buffer() {
        let now = Instant::now();
        let router = Router::new(RouterConfig::default(), now);
        // A request buffer: a large payload followed by the channel name.
        let mut buf = vec![b'x'; 1 << 20];
        buf.extend_from_slice(b"topic");
        let buf = Bytes::from(buf);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let name = buf.slice(1 << 20..);
        let outbox = router.new_outbox();
        router.subscribe(&name, &outbox);
        router.track_new_topic(&buf.slice(1 << 20..(1 << 20) + 3), 1, 1);
        router.psubscribe(&name, &outbox);
        for (key, _) in read(&router.inner.topics).iter() {
            assert!(
                !range.contains(&(key.as_ptr() as usize)),
                "topic key points into the request buffer"
            );
        }
        for e in read(&router.inner.patterns).iter() {
            assert!(!range.contains(&(e.glob.source().as_ptr() as usize)));
        }
    }
}
