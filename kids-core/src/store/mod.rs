//! The store tree: where messages go after the router, and when they count as stored.
//!
//! ```text
//!  StorePipeline ──▶ root: dyn Store ──┬─ file      topic files, rotated         (FileStore)
//!   (bounded queue,                    ├─ network   pipelined LOG to another kids (NetworkStore + Link)
//!    tickets)                          ├─ buffer    write-ahead spool, then the primary, in order
//!                                      ├─ priority  the first child that takes it
//!                                      ├─ multiple  every child, success any|all
//!                                      └─ null      discards
//!  any node may be wrapped in Filtered (topic globs)
//! ```
//! A store *takes* a message with [`Store::store`] and makes everything it
//! took durable, as far as it promises, at [`Store::commit`]: a file store
//! writes its lines to the kernel, a buffer appends them to its spool, a
//! network store hands them to its connection. [`Store::acked`] says how
//! many of the messages taken, counted from the first and in order, are
//! safe downstream: written to a file, in a spool, or acknowledged by the
//! peer. Parents map their children's counts back to their own, so a buffer
//! releases a spool segment only when every record in it was acknowledged.
//! Time is an argument: every call takes a [`Now`], both clocks read once
//! by the caller; timers run on its monotonic `instant`, file names and
//! rotation buckets come from its `wall` clock.

pub(crate) mod file;
pub(crate) mod forward;
pub(crate) mod pipeline;
pub(crate) mod view;

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::{
    Batch, Error, FileStore, FileStoreConfig, Forwarder, ForwarderConfig, Glob, LogFs, Position,
    SegmentConfig, SegmentLog, StdFs, StoreConfig, StoreKind, StoreProblem, StoreRole, Success,
    lock,
};

/// The moment a store call happens, on both clocks, read once by the caller.
///
/// `instant` drives every timer: flush intervals, retry backoffs, the
/// acknowledged-mark throttle, replay-rate refills. It never goes back, so a
/// wall clock stepped back (NTP, a VM resumed) stops no timer. `wall` only
/// names files, picks rotation buckets and stamps data.
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use kids_core::Now;
/// let now = Now::new(Instant::now(), SystemTime::now());
/// let later = now.after(Duration::from_secs(1));
/// assert_eq!(later.instant - now.instant, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub instant: Instant,
    /// Wall-clock time, for file names, rotation buckets and data.
    pub wall: SystemTime,
}

impl Now {
    /// The moment `instant` on the monotonic clock and `wall` on the wall clock.
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        Self { instant, wall }
    }

    /// Both clocks `d` later (a simulated clock's step).
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            wall: self.wall + d,
        }
    }
}

/// Why a store did not take (or could not commit) messages.
///
/// [`StoreError::Down`] and [`StoreError::Unstored`] say what happened; the
/// [`Cause`] they hold, their [`source`](std::error::Error::source), says
/// why. A store of your own gives its reason in words with
/// [`StoreError::down`] and [`StoreError::unstored`]; a kids-core [`Error`]
/// converts with `?` (as `Down`).
///
/// ```
/// use std::error::Error as _;
/// use kids_core::StoreError;
/// let e = StoreError::down("disk full");
/// assert_eq!(e.to_string(), "store unavailable");
/// assert_eq!(e.source().unwrap().to_string(), "disk full");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store holds as much as it may; try again later.
    #[error("store full")]
    Full,
    /// The store cannot work now (a peer is down, a disk is full); what
    /// it took is still held and a later commit tries again.
    #[error("store unavailable")]
    Down(#[source] Cause),
    /// A commit failed so that what the store took since its last commit
    /// may never be stored (an fsync failed: the bytes are not known to be
    /// on disk, and retrying the fsync would prove nothing). The store does
    /// not hold those messages any more; their publishers must be told
    /// they were not stored.
    #[error("messages not stored")]
    Unstored(#[source] Cause),
}

impl StoreError {
    /// [`StoreError::Down`] for a reason given in words.
    pub fn down(reason: impl Into<String>) -> Self {
        StoreError::Down(Cause::Other(reason.into()))
    }

    /// [`StoreError::Unstored`] for a reason given in words.
    pub fn unstored(reason: impl Into<String>) -> Self {
        StoreError::Unstored(Cause::Other(reason.into()))
    }

    /// Why the store is down or gave messages up; `None` for [`StoreError::Full`].
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            StoreError::Full => None,
            StoreError::Down(c) | StoreError::Unstored(c) => Some(c),
        }
    }
}

/// A kids-core failure under a store (a file, spool or segment log
/// operation) makes it [`StoreError::Down`]: held and retried.
impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Down(Cause::Error(e))
    }
}

/// Why a store is [`StoreError::Down`] or gave messages up
/// ([`StoreError::Unstored`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// A kids-core operation failed: a file, the spool, the segment log.
    #[error(transparent)]
    Error(#[from] Error),
    /// No child of a priority store took the message, and the last one
    /// that wants its topic was down ([`Store::is_up`] said no).
    #[error("child store {index} is down")]
    ChildDown {
        /// The child's index among the priority store's children.
        index: usize,
    },
    /// A reason given in words, by a store implemented outside kids-core
    /// ([`StoreError::down`], [`StoreError::unstored`]).
    #[error("{0}")]
    Other(String),
}

/// One node of the store tree.
///
/// Implement it to plug your own destination under a [`StorePipeline`](crate::StorePipeline):
///
/// ```
/// use std::time::{Instant, SystemTime};
/// use bytes::Bytes;
/// use kids_core::{Now, Store, StoreError};
///
/// /// Keeps messages in memory; durable as soon as taken.
/// #[derive(Debug, Default)]
/// struct Memory { lines: Vec<(Bytes, Bytes)> }
///
/// impl Store for Memory {
///     fn store(&mut self, topic: &Bytes, message: &Bytes, _now: Now) -> Result<(), StoreError> {
///         self.lines.push((topic.clone(), message.clone()));
///         Ok(())
///     }
///     fn commit(&mut self, _now: Now) -> Result<(), StoreError> { Ok(()) }
///     fn taken(&self) -> u64 { self.lines.len() as u64 }
///     fn acked(&mut self) -> u64 { self.lines.len() as u64 }
///     fn poll(&mut self, _now: Now) -> Result<(), StoreError> { Ok(()) }
///     fn info(&self, name: &str, out: &mut String) {
///         out.push_str(&format!("store_{name}:kind=memory,taken={}\r\n", self.lines.len()));
///     }
/// }
///
/// let mut m = Memory::default();
/// m.store(&"web".into(), &"GET /".into(), Now::new(Instant::now(), SystemTime::now())).unwrap();
/// assert_eq!(m.acked(), 1);
/// ```
pub trait Store: Send + fmt::Debug {
    /// Takes one message; it becomes durable, as far as this store
    /// promises, at the next [`Store::commit`].
    ///
    /// # Errors
    /// [`StoreError`] when the message was not taken: the caller keeps it.
    fn store(&mut self, topic: &Bytes, message: &Bytes, now: Now) -> Result<(), StoreError>;

    /// Makes every message taken so far durable as far as this store promises.
    ///
    /// # Errors
    /// [`StoreError::Down`] when that failed; the messages are still held
    /// and the next commit tries again. [`StoreError::Unstored`] when the
    /// messages taken since the last successful commit are given up (their
    /// publishers must not be told they were stored).
    fn commit(&mut self, now: Now) -> Result<(), StoreError>;

    /// Messages taken so far.
    fn taken(&self) -> u64;

    /// Of the messages taken, how many (the first ones, in order) are safe
    /// downstream. Never more than [`Store::taken`], never decreasing.
    fn acked(&mut self) -> u64;

    /// Periodic work: rotation, flush intervals, replaying a spool.
    ///
    /// # Errors
    /// [`StoreError::Down`] for a failure the caller should log; messages
    /// are still held.
    fn poll(&mut self, now: Now) -> Result<(), StoreError>;

    /// Whether [`Store::store`] is expected to succeed now.
    fn is_up(&self) -> bool {
        true
    }

    /// Whether this store wants messages of `topic` at all (a [`Filtered`]
    /// node says no to topics outside its globs): a priority store passes
    /// a message to the first child that wants it and is up, a multiple
    /// store to every child that wants it.
    fn accepts(&self, topic: &[u8]) -> bool {
        let _ = topic;
        true
    }

    /// True when nothing this store took is still on its way downstream,
    /// so it can be replaced without re-sending anything (a reload waits,
    /// for a while, for the running tree to settle).
    fn is_settled(&mut self) -> bool {
        self.acked() >= self.taken()
    }

    /// Appends `store_<name>:field=value,...` INFO lines for this store and its children.
    fn info(&self, name: &str, out: &mut String);
}

/// A doorbell the store worker sleeps on: publishers and network
/// connections ring it when there is work.
#[derive(Debug, Default)]
pub struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    /// Wakes the sleeper (or makes its next wait return at once).
    pub fn ring(&self) {
        let mut rung = lock(&self.rung);
        if !*rung {
            *rung = true;
            self.cv.notify_one();
        }
    }

    /// Sleeps until rung or `timeout` passed.
    pub fn wait(&self, timeout: Duration) {
        let mut rung = lock(&self.rung);
        if !*rung {
            rung = self
                .cv
                .wait_timeout(rung, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *rung = false;
    }
}

/// The children a message went to, each with its taken count after it.
#[derive(Debug)]
enum Deps {
    /// One child (priority, filter): no allocation per message.
    One((usize, u64)),
    /// Any number (multiple; empty: nothing to wait for).
    Many(Vec<(usize, u64)>),
}

impl Deps {
    const NONE: Deps = Deps::Many(Vec::new());

    fn as_slice(&self) -> &[(usize, u64)] {
        match self {
            Deps::One(d) => std::slice::from_ref(d),
            Deps::Many(v) => v,
        }
    }
}

/// Which children must have a message safe for the parent to count it safe.
#[derive(Debug, Default)]
struct Ledger {
    taken: u64,
    acked: u64,
    /// (parent count after the message, the children it went to).
    pending: VecDeque<(u64, Deps)>,
}

impl Ledger {
    fn record(&mut self, deps: Deps) {
        self.taken += 1;
        if deps.as_slice().is_empty() && self.pending.is_empty() {
            self.acked = self.taken;
        } else {
            self.pending.push_back((self.taken, deps));
        }
    }

    fn advance(&mut self, any: bool, child_acked: &[u64]) -> u64 {
        while let Some((seq, deps)) = self.pending.front() {
            let deps = deps.as_slice();
            let safe = |&(c, n): &(usize, u64)| child_acked.get(c).is_some_and(|&a| a >= n);
            let done = deps.is_empty()
                || if any {
                    deps.iter().any(safe)
                } else {
                    deps.iter().all(safe)
                };
            if !done {
                break;
            }
            self.acked = *seq;
            self.pending.pop_front();
        }
        self.acked
    }
}

/// The children of a priority or multiple store, and the ledger that maps
/// their acknowledgements back to the parent's messages.
#[derive(Debug)]
struct Children {
    stores: Vec<Box<dyn Store>>,
    ledger: Ledger,
}

impl Children {
    fn new(stores: Vec<Box<dyn Store>>) -> Self {
        Self {
            stores,
            ledger: Ledger::default(),
        }
    }

    /// Runs `f` on every child; the first error, after all ran, an
    /// [`StoreError::Unstored`] before any other (messages were given up).
    fn each(
        &mut self,
        mut f: impl FnMut(&mut Box<dyn Store>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut first = Ok(());
        for c in &mut self.stores {
            if let Err(e) = f(c)
                && (first.is_ok() || matches!(e, StoreError::Unstored(_)))
                && !matches!(first, Err(StoreError::Unstored(_)))
            {
                first = Err(e);
            }
        }
        first
    }

    fn commit(&mut self, now: Now) -> Result<(), StoreError> {
        self.each(|c| c.commit(now))
    }

    fn poll(&mut self, now: Now) -> Result<(), StoreError> {
        self.each(|c| c.poll(now))
    }

    fn acked(&mut self, any: bool) -> u64 {
        let acked: Vec<u64> = self.stores.iter_mut().map(|c| c.acked()).collect();
        self.ledger.advance(any, &acked)
    }

    fn is_settled(&mut self) -> bool {
        self.stores.iter_mut().all(|c| c.is_settled())
    }

    fn info(&self, name: &str, out: &mut String) {
        for (i, c) in self.stores.iter().enumerate() {
            c.info(&format!("{name}_{i}"), out);
        }
    }
}

/// Passes on only the topics matching one of its globs; others count as
/// stored at once (they are not this branch's to keep).
#[derive(Debug)]
pub struct Filtered {
    globs: Vec<Glob>,
    inner: Box<dyn Store>,
    ledger: Ledger,
    skipped: u64,
}

impl Filtered {
    /// Wraps `inner` so that it sees only topics matching one of `globs`.
    pub fn new(globs: Vec<Glob>, inner: Box<dyn Store>) -> Self {
        Self {
            globs,
            inner,
            ledger: Ledger::default(),
            skipped: 0,
        }
    }
}

impl Store for Filtered {
    fn store(&mut self, topic: &Bytes, message: &Bytes, now: Now) -> Result<(), StoreError> {
        if self.accepts(topic) {
            self.inner.store(topic, message, now)?;
            self.ledger.record(Deps::One((0, self.inner.taken())));
        } else {
            self.skipped += 1;
            self.ledger.record(Deps::NONE);
        }
        Ok(())
    }
    fn commit(&mut self, now: Now) -> Result<(), StoreError> {
        self.inner.commit(now)
    }
    fn taken(&self) -> u64 {
        self.ledger.taken
    }
    fn acked(&mut self) -> u64 {
        let a = self.inner.acked();
        self.ledger.advance(false, &[a])
    }
    fn poll(&mut self, now: Now) -> Result<(), StoreError> {
        self.inner.poll(now)
    }
    fn is_up(&self) -> bool {
        self.inner.is_up()
    }
    fn is_settled(&mut self) -> bool {
        self.inner.is_settled()
    }
    fn accepts(&self, topic: &[u8]) -> bool {
        self.globs.iter().any(|g| g.matches(topic)) && self.inner.accepts(topic)
    }
    fn info(&self, name: &str, out: &mut String) {
        let globs: Vec<String> = self
            .globs
            .iter()
            .map(|g| String::from_utf8_lossy(g.source()).into_owned())
            .collect();
        let _ = write!(
            out,
            "store_{name}_filter:topics={},skipped={}\r\n",
            globs.join(" "),
            self.skipped
        );
        self.inner.info(name, out);
    }
}

/// Discards every message (counted).
#[derive(Debug, Default)]
pub struct NullStore {
    taken: u64,
}

impl Store for NullStore {
    fn store(&mut self, _: &Bytes, _: &Bytes, _: Now) -> Result<(), StoreError> {
        self.taken += 1;
        Ok(())
    }
    fn commit(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn taken(&self) -> u64 {
        self.taken
    }
    fn acked(&mut self) -> u64 {
        self.taken
    }
    fn poll(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn info(&self, name: &str, out: &mut String) {
        let _ = write!(out, "store_{name}:kind=null,discarded={}\r\n", self.taken);
    }
}

/// The first child that wants the topic, is up and takes the message gets it.
#[derive(Debug)]
pub struct PriorityStore {
    children: Children,
    fallbacks: u64,
    unrouted: u64,
}

impl PriorityStore {
    /// Children in order of preference.
    pub fn new(children: Vec<Box<dyn Store>>) -> Self {
        Self {
            children: Children::new(children),
            fallbacks: 0,
            unrouted: 0,
        }
    }
}

impl Store for PriorityStore {
    fn store(&mut self, topic: &Bytes, message: &Bytes, now: Now) -> Result<(), StoreError> {
        let mut last = None;
        for (i, child) in self.children.stores.iter_mut().enumerate() {
            if !child.accepts(topic) {
                continue;
            }
            if !child.is_up() {
                last = Some(StoreError::Down(Cause::ChildDown { index: i }));
                continue;
            }
            match child.store(topic, message, now) {
                Ok(()) => {
                    if i > 0 {
                        self.fallbacks += 1;
                    }
                    let n = child.taken();
                    self.children.ledger.record(Deps::One((i, n)));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => {
                // No child wants this topic: not this tree's to keep.
                self.unrouted += 1;
                self.children.ledger.record(Deps::NONE);
                Ok(())
            }
        }
    }
    fn commit(&mut self, now: Now) -> Result<(), StoreError> {
        self.children.commit(now)
    }
    fn taken(&self) -> u64 {
        self.children.ledger.taken
    }
    fn acked(&mut self) -> u64 {
        self.children.acked(false)
    }
    fn poll(&mut self, now: Now) -> Result<(), StoreError> {
        self.children.poll(now)
    }
    fn is_up(&self) -> bool {
        self.children.stores.iter().any(|c| c.is_up())
    }
    fn is_settled(&mut self) -> bool {
        self.children.is_settled()
    }
    fn info(&self, name: &str, out: &mut String) {
        let l = &self.children.ledger;
        let _ = write!(
            out,
            "store_{name}:kind=priority,taken={},acked={},fallbacks={},unrouted={}\r\n",
            l.taken, l.acked, self.fallbacks, self.unrouted
        );
        self.children.info(name, out);
    }
}

/// Every child that wants the topic gets the message; `success any` counts
/// it stored once one child took it (and safe once one has it safe),
/// `success all` once every one did.
#[derive(Debug)]
pub struct MultipleStore {
    children: Children,
    success: Success,
    partial: u64,
}

impl MultipleStore {
    /// Children, and what counts as success.
    pub fn new(children: Vec<Box<dyn Store>>, success: Success) -> Self {
        Self {
            children: Children::new(children),
            success,
            partial: 0,
        }
    }
}

impl Store for MultipleStore {
    fn store(&mut self, topic: &Bytes, message: &Bytes, now: Now) -> Result<(), StoreError> {
        let mut deps = Vec::with_capacity(self.children.stores.len());
        let mut last = None;
        for (i, child) in self.children.stores.iter_mut().enumerate() {
            if !child.accepts(topic) {
                continue;
            }
            match child.store(topic, message, now) {
                Ok(()) => deps.push((i, child.taken())),
                Err(e) => last = Some(e),
            }
        }
        // `any` fails when every child that wants the topic failed, `all`
        // when one did: either way with the last child's error.
        let failed = match self.success {
            Success::Any if !deps.is_empty() => None,
            _ => last,
        };
        if let Some(e) = failed {
            if !deps.is_empty() {
                // Some children took it: a retry stores it there twice.
                self.partial += 1;
            }
            return Err(e);
        }
        // Empty when no child wants this topic: nothing to wait for.
        self.children.ledger.record(Deps::Many(deps));
        Ok(())
    }
    fn commit(&mut self, now: Now) -> Result<(), StoreError> {
        self.children.commit(now)
    }
    fn taken(&self) -> u64 {
        self.children.ledger.taken
    }
    fn acked(&mut self) -> u64 {
        self.children.acked(self.success == Success::Any)
    }
    fn poll(&mut self, now: Now) -> Result<(), StoreError> {
        self.children.poll(now)
    }
    fn is_settled(&mut self) -> bool {
        self.children.is_settled()
    }
    fn is_up(&self) -> bool {
        let mut up = self.children.stores.iter().map(|c| c.is_up());
        match self.success {
            Success::Any => up.any(|u| u),
            Success::All => up.all(|u| u),
        }
    }
    fn info(&self, name: &str, out: &mut String) {
        let l = &self.children.ledger;
        let _ = write!(
            out,
            "store_{name}:kind=multiple,success={},taken={},acked={},partial_failures={}\r\n",
            match self.success {
                Success::Any => "any",
                Success::All => "all",
            },
            l.taken,
            l.acked,
            self.partial
        );
        self.children.info(name, out);
    }
}

/// Where a network store connects.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// TCP host and port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix domain socket.
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The state a [`NetworkStore`] shares with the task that drives its
/// connection (`net::drive_link` with the `tokio` feature, or your own).
#[derive(Debug)]
pub struct Link {
    target: Target,
    forwarder: Mutex<Forwarder>,
    driver: Mutex<Option<Waker>>,
    bell: Arc<Bell>,
    closed: AtomicBool,
}

impl Link {
    /// A link to `target`; `bell` is rung when acknowledgements arrive.
    pub fn new(target: Target, config: ForwarderConfig, bell: Arc<Bell>) -> Self {
        Self {
            target,
            forwarder: Mutex::new(Forwarder::new(config)),
            driver: Mutex::new(None),
            bell,
            closed: AtomicBool::new(false),
        }
    }

    /// Where to connect.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The forwarding state, for the driver.
    pub fn forwarder(&self) -> MutexGuard<'_, Forwarder> {
        lock(&self.forwarder)
    }

    /// Ready when the driver has something to do: messages to transmit,
    /// or the link was closed.
    pub fn poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_closed() || self.forwarder().wants_transmit() {
            return Poll::Ready(());
        }
        *lock(&self.driver) = Some(cx.waker().clone());
        // A message offered between the check and the registration rang no one.
        if self.is_closed() || self.forwarder().wants_transmit() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// The driver made progress (acknowledgements, a connection): wakes the store worker.
    pub fn notify_progress(&self) {
        self.bell.ring();
    }

    /// True once the store that owned the link is gone: the driver should stop.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn wake_driver(&self) {
        if let Some(w) = lock(&self.driver).take() {
            w.wake();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_driver();
    }
}

/// Forwards to another kids through a [`Link`]; safe once the peer replied.
#[derive(Debug)]
pub struct NetworkStore {
    link: Arc<Link>,
    taken: u64,
}

impl NetworkStore {
    /// A store feeding `link`.
    pub fn new(link: Arc<Link>) -> Self {
        Self { link, taken: 0 }
    }
}

impl Drop for NetworkStore {
    fn drop(&mut self) {
        self.link.close();
    }
}

impl Store for NetworkStore {
    fn store(&mut self, topic: &Bytes, message: &Bytes, _: Now) -> Result<(), StoreError> {
        self.link
            .forwarder()
            .offer(topic.clone(), message.clone())
            .map_err(|_| StoreError::Full)?;
        self.taken += 1;
        Ok(())
    }
    fn commit(&mut self, _: Now) -> Result<(), StoreError> {
        self.link.wake_driver();
        Ok(())
    }
    fn taken(&self) -> u64 {
        self.taken
    }
    fn acked(&mut self) -> u64 {
        self.link.forwarder().stats().acked
    }
    /// Nothing to do: [`Store::commit`] wakes the driver after new
    /// messages, and the driver reads acknowledgements itself.
    fn poll(&mut self, _: Now) -> Result<(), StoreError> {
        Ok(())
    }
    fn is_up(&self) -> bool {
        let f = self.link.forwarder();
        f.is_connected() && !f.is_full()
    }
    fn info(&self, name: &str, out: &mut String) {
        let (s, connected, queued) = {
            let f = self.link.forwarder();
            (f.stats(), f.is_connected(), f.len())
        };
        let _ = write!(
            out,
            "store_{name}:kind=network,target={},connected={},queued={queued},sent={},acked={},resent={},failures={}\r\n",
            self.link.target,
            u8::from(connected),
            s.sent,
            s.acked,
            s.resent,
            s.failures
        );
    }
}

/// Encodes a spool record: `[topic length u32 LE][topic][message]`; the
/// segment log around it bounds and checksums the whole record.
///
/// ```
/// use kids_core::{decode_record, encode_record};
/// let rec = bytes::Bytes::from(encode_record(b"web", b"GET /"));
/// assert_eq!(decode_record(&rec), Some(("web".into(), "GET /".into())));
/// ```
pub fn encode_record(topic: &[u8], message: &[u8]) -> Vec<u8> {
    [&(topic.len() as u32).to_le_bytes()[..], topic, message].concat()
}

/// Adds the spool record of `topic` and `message` to `batch` (the layout
/// of [`encode_record`], without building it first).
pub(crate) fn push_record(batch: &mut Batch, topic: &[u8], message: &[u8]) {
    batch.push(&[&(topic.len() as u32).to_le_bytes(), topic, message]);
}

/// Splits a spool record into topic and message without copying; `None`
/// when it is shorter than its header or its topic length runs past its end.
pub fn decode_record(rec: &Bytes) -> Option<(Bytes, Bytes)> {
    let head: [u8; 4] = rec.get(..4)?.try_into().ok()?;
    let n = u32::from_le_bytes(head) as usize;
    let end = 4usize.checked_add(n)?;
    if end > rec.len() {
        return None;
    }
    Some((rec.slice(4..end), rec.slice(end..)))
}

/// Settings of a [`BufferStore`].
///
/// ```
/// use kids_core::BufferConfig;
/// let config = BufferConfig::new("/data/kids/spool").replay_rate(50_000).rotate_secs(300);
/// assert_eq!(config.dir().to_str(), Some("/data/kids/spool"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    dir: PathBuf,
    segment: SegmentConfig,
    rotate_secs: Option<u64>,
    replay_rate: Option<u64>,
}

impl BufferConfig {
    /// A spool in `dir`; no replay limit, segments rolled by size only.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment: SegmentConfig::default(),
            rotate_secs: None,
            replay_rate: None,
        }
    }
    /// The segment log's settings (segment size, fsync policy).
    pub fn segment(mut self, config: SegmentConfig) -> Self {
        self.segment = config;
        self
    }
    /// Also start a new spool segment at every multiple of `secs` (UTC), so
    /// acknowledged data is released sooner.
    pub fn rotate_secs(mut self, secs: u64) -> Self {
        self.rotate_secs = Some(secs.max(1));
        self
    }
    /// Records per second replayed after the primary failed, until the spool
    /// caught up (new messages wait behind the replay, never overtake it).
    pub fn replay_rate(mut self, per_sec: u64) -> Self {
        self.replay_rate = Some(per_sec.max(1));
        self
    }
    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Counters of a [`BufferStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferStats {
    /// Records appended to the spool.
    pub spooled: u64,
    /// Records handed to the primary.
    pub forwarded: u64,
    /// Of those, records handed while replaying a backlog.
    pub replayed: u64,
    /// Records handed to the primary and acknowledged by it.
    pub acked: u64,
    /// Times the primary refused a record or was found down.
    pub primary_failures: u64,
    /// Records whose payload could not be split into topic and message (logged, skipped).
    pub undecodable: u64,
    /// Spool bytes found at open past the acknowledged mark (records,
    /// framing included): replayed, and possibly duplicates downstream.
    pub recovered_bytes: u64,
    /// Records given up because the spool failed in a way that cannot be
    /// retried (a failed fsync): their publishers were told they were not
    /// stored. The spool is reopened.
    pub unstored: u64,
    /// Times the spool was reopened after such a failure.
    pub reopened: u64,
}

/// Write-ahead buffer: every message goes to the spool first and reaches
/// the primary from there, in order. While the primary is down the spool
/// grows; when it is back, the backlog replays at the configured rate
/// before newer messages, which queue behind it. A spool segment is
/// removed only once the primary acknowledged every record in it.
///
/// On a full disk the buffer keeps forwarding and releasing (which needs no
/// space, and frees it) while its commits fail and the pipeline holds new
/// messages; once releasing made room, commits succeed again. A spool that
/// failed an fsync gives up the messages of that commit
/// ([`StoreError::Unstored`]) and is reopened at its next use.
///
/// ```
/// use std::time::{Instant, SystemTime};
/// use kids_core::{BufferConfig, BufferStore, Now, NullStore, Store};
/// # let dir = tempfile::tempdir().unwrap();
/// let mut buffer = BufferStore::new(Box::new(NullStore::default()), BufferConfig::new(dir.path()));
/// let now = Now::new(Instant::now(), SystemTime::now());
/// buffer.store(&"web".into(), &"GET /".into(), now).unwrap();
/// buffer.commit(now).unwrap(); // in the spool: safe
/// assert_eq!(buffer.acked(), 1);
/// buffer.poll(now).unwrap(); // handed to the primary, acknowledged, released
/// assert_eq!(buffer.stats().acked, 1);
/// ```
#[derive(Debug)]
pub struct BufferStore {
    primary: Box<dyn Store>,
    config: BufferConfig,
    fs: Arc<dyn LogFs>,
    spool: Option<SegmentLog>,
    /// The spool was open before: a reopen keeps the read position.
    opened: bool,
    /// Records taken and not yet committed to the spool.
    staged: Batch,
    /// Next record to hand to the primary.
    cursor: Position,
    /// (primary's taken count after a record, position after that record).
    handed: VecDeque<(u64, Position)>,
    backlog: bool,
    tokens: f64,
    last_refill: Option<Instant>,
    bucket: Option<u64>,
    released: Position,
    saved: Position,
    last_save: Option<Instant>,
    taken: u64,
    acked: u64,
    stats: BufferStats,
}

/// Records read from the spool per poll at most.
const PUMP_BATCH: usize = 4096;

impl BufferStore {
    /// A buffer in front of `primary`; the spool opens at first use.
    pub fn new(primary: Box<dyn Store>, config: BufferConfig) -> Self {
        Self::with_fs(primary, config, Arc::new(StdFs))
    }

    /// As [`BufferStore::new`], the spool doing its file operations through
    /// `fs` (tests inject faults with it).
    pub fn with_fs(primary: Box<dyn Store>, config: BufferConfig, fs: Arc<dyn LogFs>) -> Self {
        Self {
            primary,
            config,
            fs,
            spool: None,
            opened: false,
            staged: Batch::default(),
            cursor: Position::default(),
            handed: VecDeque::new(),
            backlog: false,
            tokens: 0.0,
            last_refill: None,
            bucket: None,
            released: Position::default(),
            saved: Position::default(),
            last_save: None,
            taken: 0,
            acked: 0,
            stats: BufferStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// True while a backlog is being replayed (or waits for the primary).
    pub fn is_replaying(&self) -> bool {
        self.backlog
    }

    fn spool(&mut self) -> Result<&mut SegmentLog, Error> {
        if self.spool.as_ref().is_some_and(SegmentLog::is_poisoned) {
            // What the files hold is what counts now: reopen (and recover).
            self.spool = None;
        }
        let log = match self.spool.take() {
            Some(log) => log,
            None => self.open_spool()?,
        };
        Ok(self.spool.insert(log))
    }

    /// Opens (and recovers) the spool: at the saved mark the first time,
    /// where this buffer was after a reopen.
    fn open_spool(&mut self) -> Result<SegmentLog, Error> {
        let (log, recovery) =
            SegmentLog::open_with(&self.config.dir, self.config.segment, self.fs.clone())?;
        if self.opened {
            // A reopen: go on where this buffer was, inside what the files kept.
            self.cursor = self.cursor.clamp(log.start(), log.end());
            self.stats.reopened += 1;
            tracing::warn!(dir = %self.config.dir.display(), truncated = recovery.truncated_bytes, "spool reopened after a failure");
        } else {
            self.cursor = log.mark();
            self.released = self.cursor;
            self.saved = self.cursor;
            // Past the acknowledged point: replayed, maybe duplicates.
            let bytes = log.bytes_from(self.cursor);
            if bytes > 0 {
                self.backlog = true;
                tracing::info!(dir = %self.config.dir.display(), bytes, truncated = recovery.truncated_bytes, "spool holds records to replay");
            }
            self.stats.recovered_bytes = bytes;
        }
        self.opened = true;
        Ok(log)
    }

    fn refill(&mut self, now: Now) -> usize {
        let Some(rate) = self.config.replay_rate else {
            return PUMP_BATCH;
        };
        if !self.backlog {
            return PUMP_BATCH;
        }
        let rate = rate as f64;
        let elapsed = match self.last_refill {
            Some(t) => now.instant.saturating_duration_since(t).as_secs_f64(),
            None => 0.0,
        };
        self.last_refill = Some(now.instant);
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        (self.tokens as usize).min(PUMP_BATCH)
    }

    fn pump(&mut self, now: Now) -> Result<(), StoreError> {
        if !self.primary.is_up() {
            let end = self.spool()?.end();
            if self.cursor < end {
                if !self.backlog {
                    self.stats.primary_failures += 1;
                }
                self.backlog = true;
            }
            return Ok(());
        }
        let budget = self.refill(now);
        if budget == 0 {
            return Ok(());
        }
        let mut at = self.cursor;
        let entries = self.spool()?.read_entries(&mut at, budget)?;
        let mut handed = 0usize;
        for (i, (pos, rec)) in entries.iter().enumerate() {
            let next = entries.get(i + 1).map_or(at, |e| e.0);
            let Some((topic, message)) = decode_record(rec) else {
                self.stats.undecodable += 1;
                tracing::error!(dir = %self.config.dir.display(), ?pos, "spool record without a topic: skipped");
                self.handed.push_back((self.primary.taken(), next));
                self.cursor = next;
                continue;
            };
            match self.primary.store(&topic, &message, now) {
                Ok(()) => {
                    self.handed.push_back((self.primary.taken(), next));
                    self.cursor = next;
                    self.stats.forwarded += 1;
                    if self.backlog {
                        self.stats.replayed += 1;
                    }
                    handed += 1;
                }
                Err(e) => {
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "buffer: primary refused; spooling"
                    );
                    if !self.backlog {
                        self.stats.primary_failures += 1;
                    }
                    self.backlog = true;
                    self.cursor = *pos;
                    break;
                }
            }
        }
        if self.config.replay_rate.is_some() && self.backlog {
            self.tokens = (self.tokens - handed as f64).max(0.0);
        }
        if handed > 0 {
            self.primary.commit(now)?;
        }
        let end = self.spool()?.end();
        if self.backlog && self.cursor >= end && self.primary.is_up() {
            self.backlog = false;
            self.last_refill = None;
            self.tokens = 0.0;
        }
        Ok(())
    }

    /// Releases the spool segments the primary acknowledged, and saves
    /// the mark. Needs no free space: on a full disk this is what makes room.
    fn release(&mut self, now: Now) -> Result<(), StoreError> {
        let acked = self.primary.acked();
        while let Some(&(n, end)) = self.handed.front() {
            if n > acked {
                break;
            }
            self.released = end;
            self.stats.acked += 1;
            self.handed.pop_front();
        }
        // Every time, not only after new acknowledgements: after an append
        // failed for want of space, a fully released spool rolls its
        // active segment so that it can go too.
        let released = self.released;
        self.spool()?.release_before(released)?;
        // Saved at most once a second, attempted or not (and on drop): a
        // stale mark means replaying some acknowledged records after a
        // crash, never losing one.
        let due = self
            .last_save
            .is_none_or(|t| now.instant.saturating_duration_since(t) >= Duration::from_secs(1));
        if self.released != self.saved && due {
            self.last_save = Some(now.instant);
            self.save()?;
        }
        Ok(())
    }

    /// Appends the staged records to the spool with one write.
    fn spool_staged(&mut self) -> Result<(), StoreError> {
        if !self.staged.is_empty() {
            let n = self.staged.len() as u64;
            let mut staged = std::mem::take(&mut self.staged);
            let result = self.spool().and_then(|s| s.append_batch(&mut staged));
            if let Err(e) = result {
                if !self.spool.as_ref().is_some_and(SegmentLog::is_poisoned) {
                    // Not written (a full disk): kept, the next commit appends them again.
                    self.staged = staged;
                    return Err(e.into());
                }
                // Written but not known durable: given up, never counted as spooled.
                self.stats.unstored += n;
                self.acked = self.taken;
                return Err(StoreError::Unstored(Cause::Error(e)));
            }
            self.stats.spooled += n;
        }
        self.acked = self.taken;
        Ok(())
    }

    fn save(&mut self) -> Result<(), Error> {
        if let Some(spool) = &self.spool {
            spool.save_mark(self.released)?;
            self.saved = self.released;
        }
        Ok(())
    }
}

impl Drop for BufferStore {
    fn drop(&mut self) {
        if let Err(e) = self.spool_staged() {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                records = self.staged.len(),
                "buffer: spooling on drop failed"
            );
        }
        if self.spool.is_some()
            && self.released != self.saved
            && let Err(e) = self.save()
        {
            tracing::warn!(error = %e, "buffer: saving the acknowledged mark failed");
        }
    }
}

impl Store for BufferStore {
    fn store(&mut self, topic: &Bytes, message: &Bytes, _: Now) -> Result<(), StoreError> {
        push_record(&mut self.staged, topic, message);
        self.taken += 1;
        Ok(())
    }

    fn commit(&mut self, _: Now) -> Result<(), StoreError> {
        self.spool_staged()
    }

    fn taken(&self) -> u64 {
        self.taken
    }

    fn acked(&mut self) -> u64 {
        self.acked
    }

    /// Rotates the spool, releases what the primary acknowledged, and
    /// hands it the next records. Each step runs even when one before it
    /// failed (a failed rotation or mark save on a full disk must not stop
    /// the forwarding that frees space); the first error is returned.
    fn poll(&mut self, now: Now) -> Result<(), StoreError> {
        self.spool()?;
        let mut first = Ok(());
        let mut note = |r: Result<(), StoreError>| {
            if let Err(e) = r
                && first.is_ok()
            {
                first = Err(e);
            }
        };
        if let Some(secs) = self.config.rotate_secs {
            let bucket = now
                .wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / secs);
            if self.bucket.is_some_and(|b| b != bucket) {
                let spool = self.spool()?;
                if spool.end().offset > 0 {
                    note(spool.roll().map_err(StoreError::from));
                }
            }
            self.bucket = Some(bucket);
        }
        note(self.primary.poll(now));
        note(self.release(now));
        note(self.pump(now));
        note(self.release(now));
        first
    }

    /// Settled when every spooled record was handed on and acknowledged,
    /// or when the primary is down (waiting would not help).
    fn is_settled(&mut self) -> bool {
        let caught_up = self.spool.as_ref().is_some_and(|s| self.cursor >= s.end());
        self.staged.is_empty() && ((caught_up && self.handed.is_empty()) || !self.primary.is_up())
    }

    fn info(&self, name: &str, out: &mut String) {
        let (bytes, segments, backlog) = self.spool.as_ref().map_or((0, 0, 0), |s| {
            (s.len_bytes(), s.segment_count(), s.bytes_from(self.cursor))
        });
        let s = self.stats;
        let _ = write!(
            out,
            "store_{name}:kind=buffer,spool={},spool_bytes={bytes},spool_segments={segments},backlog_bytes={backlog},primary_up={},replaying={},spooled={},forwarded={},replayed={},acked={},primary_failures={},recovered_bytes={},undecodable={},unstored={},reopened={}\r\n",
            self.config.dir.display(),
            u8::from(self.primary.is_up()),
            u8::from(self.backlog),
            s.spooled,
            s.forwarded,
            s.replayed,
            s.acked,
            s.primary_failures,
            s.recovered_bytes,
            s.undecodable,
            s.unstored,
            s.reopened
        );
        self.primary.info(&format!("{name}_primary"), out);
    }
}

/// A store tree built from a config, and the links its network stores
/// need driven.
#[derive(Debug)]
#[non_exhaustive]
pub struct BuiltStore {
    /// The root of the tree.
    pub store: Box<dyn Store>,
    /// One per network store: give each to a driver (`net::drive_link`).
    pub links: Vec<Arc<Link>>,
}

/// Builds the store tree a `store` block describes.
///
/// `bell` is the pipeline's ([`StorePipeline::bell`](crate::StorePipeline::bell)):
/// network links ring it when acknowledgements arrive.
///
/// ```
/// use std::sync::Arc;
/// use kids_core::{Bell, Config, build_store};
/// let config = Config::parse("agent.conf", "store buffer {
///     store network primary { host 127.0.0.1; port 3388; }
///     store file secondary { path /tmp/kids-spool; }
/// }").unwrap();
/// let built = build_store(config.store.as_ref().unwrap(), false, &Arc::new(Bell::default())).unwrap();
/// assert_eq!(built.links.len(), 1);
/// ```
///
/// # Errors
/// [`Error::StoreConfig`] for a tree that cannot work, with what
/// [`StoreConfig::problem`] finds (a parsed config has passed it already; a
/// deserialized one is checked here).
pub fn build_store(
    config: &StoreConfig,
    ignore_case: bool,
    bell: &Arc<Bell>,
) -> Result<BuiltStore, Error> {
    let mut links = Vec::new();
    let store = build_node(config, ignore_case, bell, &mut links)?;
    Ok(BuiltStore { store, links })
}

/// An `Option` that [`StoreConfig::problem`] found set; were it not, the
/// problem it would have found.
fn checked<T>(v: Option<T>, problem: StoreProblem) -> Result<T, Error> {
    v.ok_or(Error::StoreConfig(problem))
}

fn build_node(
    c: &StoreConfig,
    ignore_case: bool,
    bell: &Arc<Bell>,
    links: &mut Vec<Arc<Link>>,
) -> Result<Box<dyn Store>, Error> {
    if let Some((_, problem)) = c.problem() {
        return Err(Error::StoreConfig(problem));
    }
    let store: Box<dyn Store> = match c.kind {
        StoreKind::Null => Box::new(NullStore::default()),
        StoreKind::File => {
            let mut fc =
                FileStoreConfig::new(checked(c.path.clone(), StoreProblem::FileWithoutPath)?);
            if let Some(name) = &c.name {
                fc = fc.name(name.clone());
            }
            if let Some(r) = c.rotate_secs {
                fc = fc.rotate_secs(r);
            }
            if let Some(f) = c.flush_secs {
                fc = fc.flush_secs(f);
            }
            if let Some(f) = c.fsync {
                fc = fc.fsync(f);
            }
            if let Some(o) = c.utc_offset_secs {
                fc = fc.utc_offset_secs(o);
            }
            Box::new(FileStore::new(fc))
        }
        StoreKind::Network => {
            let target = match &c.socket {
                Some(s) => Target::Unix(PathBuf::from(s)),
                None => Target::Tcp {
                    host: checked(c.host.clone(), StoreProblem::NetworkWithoutTarget)?,
                    port: c.port.unwrap_or(3388),
                },
            };
            let mut fc = ForwarderConfig::default();
            if let Some(w) = c.window {
                fc = fc.window(w);
            }
            if let Some(t) = c.timeout_secs {
                fc = fc.timeout(Duration::from_secs(t.max(1)));
            }
            let link = Arc::new(Link::new(target, fc, bell.clone()));
            links.push(link.clone());
            Box::new(NetworkStore::new(link))
        }
        StoreKind::Buffer => {
            let role = |r| {
                checked(
                    c.stores.iter().find(|s| s.role == Some(r)),
                    StoreProblem::BufferRoles,
                )
            };
            let (primary, spool) = (role(StoreRole::Primary)?, role(StoreRole::Secondary)?);
            if let Some((_, problem)) = spool.problem() {
                return Err(Error::StoreConfig(problem));
            }
            let mut seg = SegmentConfig::default();
            if let Some(f) = spool.fsync {
                seg = seg.fsync(f);
            }
            let mut bc =
                BufferConfig::new(checked(spool.path.clone(), StoreProblem::FileWithoutPath)?)
                    .segment(seg);
            if let Some(r) = spool.rotate_secs {
                bc = bc.rotate_secs(r);
            }
            if let Some(r) = c.replay_rate {
                bc = bc.replay_rate(r);
            }
            let primary = build_node(primary, ignore_case, bell, links)?;
            Box::new(BufferStore::new(primary, bc))
        }
        StoreKind::Priority | StoreKind::Multiple => {
            let children = c
                .stores
                .iter()
                .map(|s| build_node(s, ignore_case, bell, links))
                .collect::<Result<Vec<_>, _>>()?;
            if c.kind == StoreKind::Priority {
                Box::new(PriorityStore::new(children))
            } else {
                Box::new(MultipleStore::new(
                    children,
                    c.success.unwrap_or(Success::All),
                ))
            }
        }
    };
    if c.topics.is_empty() {
        Ok(store)
    } else {
        let globs = c
            .topics
            .iter()
            .map(|t| Glob::new(t.as_bytes(), ignore_case))
            .collect();
        Ok(Box::new(Filtered::new(globs, store)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn spool_records_round_trip(topic in proptest::collection::vec(any::<u8>(), 0..64),
                                    message in proptest::collection::vec(any::<u8>(), 0..256)) {
            let rec = Bytes::from(encode_record(&topic, &message));
            let (t, m) = decode_record(&rec).expect("decodes");
            prop_assert_eq!(&t[..], &topic[..]);
            prop_assert_eq!(&m[..], &message[..]);
        }
    }

    #[test]
    fn every_cut_of_a_record_is_refused_or_a_shorter_message() {
        let rec = Bytes::from(encode_record(b"topic", b"message"));
        for cut in 0..=rec.len() {
            let part = rec.slice(..cut);
            match decode_record(&part) {
                None => assert!(cut < 4 + 5, "cut {cut}"),
                Some((t, m)) => {
                    assert_eq!(&t[..], b"topic");
                    assert_eq!(&m[..], &b"message"[..cut - 9]);
                }
            }
        }
    }

    #[test]
    fn a_topic_length_past_the_end_is_refused() {
        let mut rec = (u32::MAX).to_le_bytes().to_vec();
        rec.extend_from_slice(b"short");
        assert_eq!(decode_record(&Bytes::from(rec)), None);
        assert_eq!(decode_record(&Bytes::new()), None);
    }
}
