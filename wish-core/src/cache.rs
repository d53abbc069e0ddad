//! The cache, expire and timestamped options: cache and timestamp stores, and the layer that applies them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::options::MethodDesc;
use crate::wire;

/// A cache key: the method's id and the request's canonical bytes (its
/// top-level fields in field-number order; see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The method's id.
    pub method: u32,
    /// The canonical request bytes.
    pub request: Bytes,
}

impl CacheKey {
    /// The key as one byte string (method id big-endian, then the request),
    /// for stores keyed by bytes such as memcached or redis.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.request.len());
        out.extend_from_slice(&self.method.to_be_bytes());
        out.extend_from_slice(&self.request);
        out
    }

    fn weight(&self, value: &CachedResponse) -> usize {
        self.request.len() + value.payload.len() + 64
    }
}

/// A cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// The response message, encoded.
    pub payload: Bytes,
    /// When the call that produced it started: anything that changed after
    /// that may not be reflected in it.
    pub computed_at: SystemTime,
    /// When it stops being served, if the method has `(expire)`.
    pub expires_at: Option<SystemTime>,
}

/// The answer of a store: ready at once (in-memory stores, no allocation) or
/// a boxed future (stores across the network).
pub enum StoreFuture<'a, T> {
    /// The answer, at once.
    Ready(Option<T>),
    /// The answer, later.
    Pending(BoxFuture<'a, T>),
}

impl<T: Unpin> Future for StoreFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            StoreFuture::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                None => Poll::Pending,
            },
            StoreFuture::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<T> StoreFuture<'_, T> {
    /// A ready answer.
    pub fn ready(value: T) -> Self {
        StoreFuture::Ready(Some(value))
    }
}

/// Where cached responses live. [`LruCache`] keeps them in memory; implement
/// this over memcached or redis to share a cache between servers.
///
/// A store may forget entries at any time: that is only a miss. It must not
/// return an entry for another key.
pub trait CacheStore: Send + Sync + 'static {
    /// The entry for `key`, unless it expired at `now`.
    fn get(&self, key: &CacheKey, now: SystemTime) -> StoreFuture<'_, Option<CachedResponse>>;
    /// Stores an entry.
    fn put(&self, key: CacheKey, value: CachedResponse) -> StoreFuture<'_, ()>;
    /// Forgets an entry (a stale one, found by the timestamp check).
    fn remove(&self, key: &CacheKey) -> StoreFuture<'_, ()>;
}

/// The last-modified times of entities, for `timestamped` methods.
///
/// Whatever changes an entity calls [`touch`](TimestampStore::touch) with it
/// (`"a=1"`), and every cached response computed before that stops being
/// served. A store that forgets an entity must answer with a time no earlier
/// than the one it forgot ([`MemoryTimestamps`] does this with a floor), or
/// stale answers come back.
///
/// [`last_modified`](TimestampStore::last_modified) is on the path of every
/// cache hit of a `timestamped` method: it borrows the entities, which the
/// [`CacheLayer`] renders without allocating; a store whose answer comes
/// later copies what it needs into its future.
pub trait TimestampStore: Send + Sync + 'static {
    /// Records that `entity` changed at `now`.
    fn touch(&self, entity: &str, now: SystemTime) -> StoreFuture<'_, ()>;
    /// The latest change among `entities` (`["a=1", "b=2"]`), if any is known.
    fn last_modified(&self, entities: &[&str]) -> StoreFuture<'_, Option<SystemTime>>;
}

/// A bounded least-recently-used [`CacheStore`] in memory.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use bytes::Bytes;
/// use wish_core::{CacheKey, CacheStore, CachedResponse, LruCache};
///
/// # futures::executor::block_on(async {
/// let cache = LruCache::new(1000, 1 << 20);
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
/// let key = CacheKey { method: 1, request: Bytes::from_static(b"\x08\x01") };
/// let value = CachedResponse {
///     payload: Bytes::from_static(b"\x08\x02"),
///     computed_at: now,
///     expires_at: Some(now + Duration::from_secs(10)),
/// };
/// cache.put(key.clone(), value.clone()).await;
/// assert_eq!(cache.get(&key, now).await, Some(value));
/// assert_eq!(cache.get(&key, now + Duration::from_secs(10)).await, None);
/// # });
/// ```
///
/// Its index hashes keys with a fast hasher seeded at random for each cache
/// (keys come from the network: they cannot be chosen to collide without
/// the seed), not with std's slower SipHash.
pub struct LruCache {
    inner: Mutex<Lru>,
}

struct Lru {
    map: HashMap<CacheKey, usize, foldhash::fast::RandomState>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Most recently used; `NIL` when empty.
    head: usize,
    /// Least recently used.
    tail: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

struct Slot {
    key: CacheKey,
    value: CachedResponse,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

impl LruCache {
    /// A cache of at most `max_entries` entries and about `max_bytes` bytes
    /// (keys, payloads and 64 bytes of bookkeeping each).
    pub fn new(max_entries: usize, max_bytes: usize) -> LruCache {
        LruCache {
            inner: Mutex::new(Lru {
                map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                slots: Vec::new(),
                free: Vec::new(),
                head: NIL,
                tail: NIL,
                bytes: 0,
                max_entries: max_entries.max(1),
                max_bytes,
            }),
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        crate::lock(&self.inner)
    }
}

impl Default for LruCache {
    /// 100,000 entries, 64 MiB.
    fn default() -> Self {
        LruCache::new(100_000, 64 << 20)
    }
}

impl Lru {
    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head != NIL {
            self.slots[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn remove_slot(&mut self, i: usize) {
        self.unlink(i);
        let slot = &self.slots[i];
        self.bytes -= slot.key.weight(&slot.value);
        self.map.remove(&slot.key);
        // Drop the payload now rather than when the slot is reused.
        self.slots[i].value.payload = Bytes::new();
        self.slots[i].key.request = Bytes::new();
        self.free.push(i);
    }

    fn get(&mut self, key: &CacheKey, now: SystemTime) -> Option<CachedResponse> {
        let i = *self.map.get(key)?;
        if self.slots[i].value.expires_at.is_some_and(|at| at <= now) {
            self.remove_slot(i);
            return None;
        }
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(self.slots[i].value.clone())
    }

    fn put(&mut self, key: CacheKey, value: CachedResponse) {
        if let Some(&i) = self.map.get(&key) {
            self.remove_slot(i);
        }
        let weight = key.weight(&value);
        if weight > self.max_bytes {
            return;
        }
        while self.tail != NIL
            && (self.map.len() >= self.max_entries || self.bytes + weight > self.max_bytes)
        {
            self.remove_slot(self.tail);
        }
        let slot = Slot {
            key: key.clone(),
            value,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.bytes += weight;
        self.map.insert(key, i);
        self.push_front(i);
    }
}

impl CacheStore for LruCache {
    fn get(&self, key: &CacheKey, now: SystemTime) -> StoreFuture<'_, Option<CachedResponse>> {
        StoreFuture::ready(self.lock().get(key, now))
    }

    fn put(&self, key: CacheKey, value: CachedResponse) -> StoreFuture<'_, ()> {
        self.lock().put(key, value);
        StoreFuture::ready(())
    }

    fn remove(&self, key: &CacheKey) -> StoreFuture<'_, ()> {
        let mut lru = self.lock();
        if let Some(&i) = lru.map.get(key) {
            lru.remove_slot(i);
        }
        StoreFuture::ready(())
    }
}

/// A bounded [`TimestampStore`] in memory.
///
/// When full it forgets its oldest touches and raises a floor to their time:
/// entities it does not know answer with the floor, so forgetting can make
/// a cached answer stale early, never fresh late. Its index hashes as
/// [`LruCache`]'s does.
pub struct MemoryTimestamps {
    inner: Mutex<Stamps>,
}

struct Stamps {
    times: HashMap<String, SystemTime, foldhash::fast::RandomState>,
    floor: Option<SystemTime>,
    max: usize,
}

impl MemoryTimestamps {
    /// A store of at most `max_entities` entities.
    pub fn new(max_entities: usize) -> MemoryTimestamps {
        MemoryTimestamps {
            inner: Mutex::new(Stamps {
                times: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                floor: None,
                max: max_entities.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Stamps> {
        crate::lock(&self.inner)
    }
}

impl Default for MemoryTimestamps {
    /// 1,000,000 entities.
    fn default() -> Self {
        MemoryTimestamps::new(1_000_000)
    }
}

impl TimestampStore for MemoryTimestamps {
    fn touch(&self, entity: &str, now: SystemTime) -> StoreFuture<'_, ()> {
        let mut s = self.lock();
        if !s.times.contains_key(entity) && s.times.len() >= s.max {
            // Forget the oldest sixteenth of the touches at once: one scan per
            // max/16 new entities, not one per entity.
            let mut times: Vec<SystemTime> = s.times.values().copied().collect();
            let n = (s.max / 16).max(1).min(times.len());
            let (_, cutoff, _) = times.select_nth_unstable(n - 1);
            let cutoff = *cutoff;
            s.times.retain(|_, at| *at > cutoff);
            s.floor = s.floor.max(Some(cutoff));
        }
        match s.times.get_mut(entity) {
            Some(at) => *at = (*at).max(now),
            None => {
                s.times.insert(entity.to_owned(), now);
            }
        }
        StoreFuture::ready(())
    }

    fn last_modified(&self, entities: &[&str]) -> StoreFuture<'_, Option<SystemTime>> {
        let s = self.lock();
        let latest = entities
            .iter()
            .map(|e| s.times.get(*e).copied().or(s.floor))
            .max()
            .flatten();
        StoreFuture::ready(latest)
    }
}

/// The cache, expire and timestamped options, applied the same way by a
/// server and by a client: look a call up before it is made, store its
/// answer after.
#[derive(Clone)]
pub struct CacheLayer {
    cache: Arc<dyn CacheStore>,
    timestamps: Arc<dyn TimestampStore>,
}

/// What [`CacheLayer::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh cached answer.
    Hit(CachedResponse),
    /// Make the call; give this to [`CacheLayer::store`] with its answer.
    Miss(Pending),
    /// The method is not cached, the call asked not to be, or the request is
    /// not well-formed enough to key.
    Skip,
}

/// What [`CacheLayer::probe`] found: a fresh cached answer, or the call to
/// make, with its request handed back.
pub(crate) enum Probe {
    /// A fresh cached answer.
    Hit(CachedResponse),
    /// Make the call with this request; if there is a `Pending`, give it to
    /// [`CacheLayer::store`] with the answer.
    Call(Option<Pending>, Bytes),
}

/// A call that missed the cache, waiting for its answer.
#[derive(Debug)]
pub struct Pending {
    key: CacheKey,
    started: SystemTime,
    expire: Option<u32>,
}

impl CacheLayer {
    /// A layer over these stores.
    pub fn new(cache: Arc<dyn CacheStore>, timestamps: Arc<dyn TimestampStore>) -> CacheLayer {
        CacheLayer { cache, timestamps }
    }

    /// The timestamp store, for handlers that touch entities.
    pub fn timestamps(&self) -> &Arc<dyn TimestampStore> {
        &self.timestamps
    }

    /// Looks up a call to `method` with `request`, started at `now`.
    pub async fn lookup(&self, method: &MethodDesc, request: &Bytes, now: SystemTime) -> Lookup {
        match self.probe(method, request.clone(), now).await {
            Probe::Hit(hit) => Lookup::Hit(hit),
            Probe::Call(Some(pending), _) => Lookup::Miss(pending),
            Probe::Call(None, _) => Lookup::Skip,
        }
    }

    /// [`lookup`](CacheLayer::lookup) with the request by value, for callers
    /// that own it: the key takes it over when it is canonical already, so a
    /// hit copies nothing, not even a `Bytes` (whose first clone allocates
    /// when it was made from a `Vec`).
    pub(crate) async fn probe(
        &self,
        method: &MethodDesc,
        request: Bytes,
        now: SystemTime,
    ) -> Probe {
        if !method.options.cache {
            return Probe::Call(None, request);
        }
        // A timestamped request whose entities cannot be read is not cached:
        // it could never be checked for freshness.
        let listed = if method.options.timestamped {
            method.options.timestamped_fields
        } else {
            &[]
        };
        let mut entities = wire::Entities::new();
        let keyed = wire::key(&request, listed, method.request_oneofs, &mut entities);
        let (canonical, sorted_from) = match keyed {
            None => return Probe::Call(None, request),
            Some(wire::Canonical::Same) => (request, None),
            Some(wire::Canonical::Sorted(sorted)) => (sorted, Some(request)),
        };
        let key = CacheKey {
            method: method.id,
            request: canonical,
        };
        if let Some(hit) = self.cache.get(&key, now).await {
            // Fresh if newer than every entity the request names. The store's
            // future does not borrow the entities.
            let changed = if entities.is_empty() {
                StoreFuture::ready(None)
            } else {
                entities.with_names(|names| self.timestamps.last_modified(names))
            };
            if changed
                .await
                .is_none_or(|changed| hit.computed_at > changed)
            {
                return Probe::Hit(hit);
            }
            self.cache.remove(&key).await;
        }
        let request = sorted_from.unwrap_or_else(|| key.request.clone());
        let pending = Pending {
            key,
            started: now,
            expire: method.options.expire,
        };
        Probe::Call(Some(pending), request)
    }

    /// Stores the answer of a call that missed. Only answers are stored, never errors.
    ///
    /// It counts as computed when the call started, or at `computed_at` if
    /// that is earlier (an answer a server took from its own cache).
    pub async fn store(&self, pending: Pending, payload: Bytes, computed_at: Option<SystemTime>) {
        let value = CachedResponse {
            payload,
            computed_at: computed_at.map_or(pending.started, |at| at.min(pending.started)),
            expires_at: pending
                .expire
                .map(|s| pending.started + Duration::from_secs(u64::from(s))),
        };
        self.cache.put(pending.key, value).await;
    }
}

impl Default for CacheLayer {
    /// An [`LruCache`] and [`MemoryTimestamps`] with their defaults.
    fn default() -> Self {
        CacheLayer::new(
            Arc::new(LruCache::default()),
            Arc::new(MemoryTimestamps::default()),
        )
    }
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey {
            method: 1,
            request: Bytes::from(vec![n]),
        }
    }

    fn value(t: u64) -> CachedResponse {
        CachedResponse {
            payload: Bytes::from_static(b"xyz"),
            computed_at: SystemTime::UNIX_EPOCH + Duration::from_secs(t),
            expires_at: None,
        }
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let lru = LruCache::new(2, 1 << 20);
        let now = SystemTime::UNIX_EPOCH;
        let mut l = lru.lock();
        l.put(key(1), value(1));
        l.put(key(2), value(2));
        assert!(l.get(&key(1), now).is_some());
        l.put(key(3), value(3));
        assert!(l.get(&key(2), now).is_none(), "2 was least recently used");
        assert!(l.get(&key(1), now).is_some());
        assert!(l.get(&key(3), now).is_some());
        assert_eq!(l.map.len(), 2);
    }

    #[test]
    fn lru_bounds_bytes() {
        let lru = LruCache::new(100, 3 * (1 + 3 + 64));
        let mut l = lru.lock();
        for n in 0..10 {
            l.put(key(n), value(0));
        }
        assert_eq!(l.map.len(), 3);
        assert_eq!(l.bytes, 3 * 68);
        // Replacing a key does not count it twice.
        l.put(key(9), value(1));
        assert_eq!(l.bytes, 3 * 68);
        // An entry bigger than the whole cache is not stored.
        let big = LruCache::new(100, 10);
        big.lock().put(key(1), value(0));
        assert!(big.lock().map.is_empty());
    }

    #[test]
    fn a_full_timestamp_store_forgets_a_sixteenth_at_once() {
        let ts = MemoryTimestamps::new(32);
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        for i in 1..=33 {
            drop(ts.touch(&format!("a={i}"), t(i)));
        }
        let s = ts.lock();
        assert_eq!(s.times.len(), 31, "the two oldest of 32 went");
        assert_eq!(s.floor, Some(t(2)));
        assert!(s.times.contains_key("a=3") && s.times.contains_key("a=33"));
    }

    #[test]
    fn forgotten_timestamps_raise_the_floor() {
        let ts = MemoryTimestamps::new(2);
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        drop(ts.touch("a=1", t(10)));
        drop(ts.touch("a=2", t(20)));
        drop(ts.touch("a=3", t(30)));
        let s = ts.lock();
        assert_eq!(s.times.len(), 2);
        assert_eq!(s.floor, Some(t(10)));
        drop(s);
        let last = |e: &[&str]| futures::executor::block_on(ts.last_modified(e));
        assert_eq!(last(&["a=1"]), Some(t(10)), "forgotten: the floor");
        assert_eq!(last(&["a=3"]), Some(t(30)));
        assert_eq!(last(&["x=9", "a=2"]), Some(t(20)));
    }
}
