//! Sessions: named server-side cursors over the log, as a state machine
//! with no IO and time passed in.
//!
//! ```text
//!  create(name, filters) ──▶ idle ──load(client)──▶ loaded by client ──unload──▶ idle
//!                             │  ▲                      │ deliver(offset): window fills
//!                             │  └──── takeover ────────┤ ack(offset): cursor moves, window empties
//!                             ▼                         ▼
//!                      expire(now): idle past ttl   load by another client:
//!                      (stops pinning the log)      taken over, or refused (Busy)
//! ```
//! The cursor is the last offset acknowledged (0: none). Loading starts
//! delivery at the offset after it, so after a disconnect everything past
//! the cursor is sent again: at least once, deduplicable by offset.

use std::collections::{BTreeMap, VecDeque};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kids_core::Glob;

/// What a second load of a session that is in use does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Takeover {
    /// The new client takes the session over; the old one is told and stops
    /// receiving (the default: a consumer that restarts need not wait for
    /// the old connection to time out).
    #[default]
    Allow,
    /// The load is refused with `BUSY` while another client holds it.
    Refuse,
}

/// Settings of the session registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionsConfig {
    /// Unacknowledged messages a loaded session may hold before delivery pauses.
    pub window: u32,
    /// What a second load does.
    pub takeover: Takeover,
    /// A session not loaded for this long is deleted and stops pinning the
    /// log; `None`: never.
    pub idle_ttl: Option<Duration>,
    /// Sessions that may exist at once.
    pub max_sessions: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            window: 1024,
            takeover: Takeover::Allow,
            idle_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            max_sessions: 10_000,
        }
    }
}

/// A topic filter: an exact topic, or a glob when it has `*`, `?` or `[`.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Matches one topic.
    Exact(Bytes),
    /// Matches topics by glob, as kids' `PSUBSCRIBE`.
    Glob(Glob),
}

impl Filter {
    /// The filter for `text`.
    pub fn new(text: &[u8]) -> Self {
        if text.iter().any(|c| matches!(c, b'*' | b'?' | b'[')) {
            Filter::Glob(Glob::new(text, false))
        } else {
            Filter::Exact(Bytes::copy_from_slice(text))
        }
    }

    /// True when `topic` passes.
    pub fn matches(&self, topic: &[u8]) -> bool {
        match self {
            Filter::Exact(t) => t.as_ref() == topic,
            Filter::Glob(g) => g.matches(topic),
        }
    }

    /// The filter as given.
    pub fn source(&self) -> &[u8] {
        match self {
            Filter::Exact(t) => t,
            Filter::Glob(g) => g.source(),
        }
    }
}

/// Why a session operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No session of that name.
    #[error("ERR no such session")]
    Unknown,
    /// The session exists with other filters.
    #[error("ERR session exists with other filters")]
    Exists,
    /// Another client has it loaded and takeover is refused.
    #[error("BUSY session is loaded by client {client}")]
    Busy {
        /// The client holding it.
        client: u64,
    },
    /// Messages after the cursor are no longer in the log.
    #[error(
        "GAP session cursor {cursor} is before the first retained offset {first}: messages were lost to retention; SESSION ACK the offset before it to go on"
    )]
    Gap {
        /// The session's cursor.
        cursor: u64,
        /// The first offset still retained.
        first: u64,
    },
    /// The client does not hold this session.
    #[error("ERR session is not loaded by this client")]
    NotLoaded,
    /// An acknowledgement past the log's end.
    #[error("ERR offset {offset} is past the last offset {last}")]
    PastEnd {
        /// The offset acknowledged.
        offset: u64,
        /// The last offset given out.
        last: u64,
    },
    /// The log failed: nothing more is written until the broker is reopened.
    #[error("ERR sink log failed: {0}")]
    LogFailed(String),
    /// Too many sessions.
    #[error("ERR too many sessions (max {max})")]
    TooMany {
        /// The bound.
        max: usize,
    },
}

/// One session.
#[derive(Debug)]
pub struct Session {
    name: Bytes,
    filters: Vec<Filter>,
    cursor: u64,
    last_active: Instant,
    owner: Option<Owner>,
}

#[derive(Debug)]
struct Owner {
    client: u64,
    lease: u64,
    /// Offsets delivered past the cursor, oldest first.
    inflight: VecDeque<u64>,
    /// The highest offset delivered.
    delivered: u64,
    waker: Option<Waker>,
}

impl Session {
    /// Its name.
    pub fn name(&self) -> &Bytes {
        &self.name
    }
    /// Its filters.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }
    /// The last offset acknowledged.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }
    /// The client that has it loaded.
    pub fn owner(&self) -> Option<u64> {
        self.owner.as_ref().map(|o| o.client)
    }
    /// Unacknowledged messages delivered.
    pub fn inflight(&self) -> usize {
        self.owner.as_ref().map_or(0, |o| o.inflight.len())
    }
    /// True when `topic` passes one of its filters.
    pub fn matches(&self, topic: &[u8]) -> bool {
        self.filters.iter().any(|f| f.matches(topic))
    }
}

/// What a successful load gives the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Delivery starts after this offset.
    pub cursor: u64,
    /// Identifies this load: a takeover makes it stale.
    pub lease: u64,
    /// The client that held it before, when this load took it over.
    pub took_from: Option<u64>,
}

/// Whether a loaded session may deliver now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Deliver; the window has room.
    Yes,
    /// The window is full: wait for an acknowledgement.
    WindowFull,
    /// The load is no longer this client's (taken over, expired, deleted).
    Lost,
}

/// Every session, by name.
#[derive(Debug, Default)]
pub struct Sessions {
    config: SessionsConfig,
    by_name: BTreeMap<Bytes, Session>,
    next_lease: u64,
}

impl Sessions {
    /// An empty registry.
    pub fn new(config: SessionsConfig) -> Self {
        Self {
            config,
            by_name: BTreeMap::new(),
            next_lease: 1,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    /// Creates `name` with `filters`, its cursor at `cursor` (normally the
    /// last offset given out: only messages after creation are delivered).
    /// Creating an existing session with the same filters is a no-op
    /// returning `false`.
    ///
    /// # Errors
    /// [`SessionError::Exists`] when it exists with other filters;
    /// [`SessionError::TooMany`] over the bound.
    pub fn create(
        &mut self,
        name: &[u8],
        filters: &[&[u8]],
        cursor: u64,
        now: Instant,
    ) -> Result<bool, SessionError> {
        if let Some(s) = self.by_name.get(name) {
            let same = s.filters.len() == filters.len()
                && s.filters.iter().zip(filters).all(|(a, b)| a.source() == *b);
            return if same {
                Ok(false)
            } else {
                Err(SessionError::Exists)
            };
        }
        if self.by_name.len() >= self.config.max_sessions {
            return Err(SessionError::TooMany {
                max: self.config.max_sessions,
            });
        }
        self.restore(name, filters, cursor, now);
        Ok(true)
    }

    /// Puts a session back as the log recorded it (recovery), replacing one
    /// of the same name.
    pub fn restore(&mut self, name: &[u8], filters: &[&[u8]], cursor: u64, now: Instant) {
        let name = Bytes::copy_from_slice(name);
        self.by_name.insert(
            name.clone(),
            Session {
                name,
                filters: filters.iter().map(|f| Filter::new(f)).collect(),
                cursor,
                last_active: now,
                owner: None,
            },
        );
    }

    /// Loads `name` for `client`. `first` is the first offset the log
    /// still holds; `last` the last offset given out.
    ///
    /// # Errors
    /// [`SessionError::Unknown`], [`SessionError::Busy`] (takeover refused),
    /// [`SessionError::Gap`] when messages after the cursor were removed.
    pub fn load(
        &mut self,
        name: &[u8],
        client: u64,
        first: u64,
        now: Instant,
    ) -> Result<Lease, SessionError> {
        let takeover = self.config.takeover;
        let lease = self.next_lease;
        let s = self.by_name.get_mut(name).ok_or(SessionError::Unknown)?;
        if s.cursor.saturating_add(1) < first {
            return Err(SessionError::Gap {
                cursor: s.cursor,
                first,
            });
        }
        let mut took_from = None;
        if let Some(o) = &mut s.owner
            && o.client != client
        {
            if takeover == Takeover::Refuse {
                return Err(SessionError::Busy { client: o.client });
            }
            took_from = Some(o.client);
            if let Some(w) = o.waker.take() {
                w.wake();
            }
        }
        self.next_lease += 1;
        s.last_active = now;
        s.owner = Some(Owner {
            client,
            lease,
            inflight: VecDeque::new(),
            delivered: s.cursor,
            waker: None,
        });
        Ok(Lease {
            cursor: s.cursor,
            lease,
            took_from,
        })
    }

    /// Whether the holder of `lease` may deliver now; registers `waker` to
    /// be woken by an acknowledgement, a takeover or a delete.
    pub fn may_deliver(&mut self, name: &[u8], lease: u64, waker: Option<&Waker>) -> Deliver {
        let window = self.config.window as usize;
        let Some(o) = self.owner_of(name, lease) else {
            return Deliver::Lost;
        };
        // Kept in any case: a takeover or a delete must wake a holder
        // that waits for the log too.
        if let Some(w) = waker
            && !o.waker.as_ref().is_some_and(|k| k.will_wake(w))
        {
            o.waker = Some(w.clone());
        }
        if o.inflight.len() >= window.max(1) {
            return Deliver::WindowFull;
        }
        Deliver::Yes
    }

    /// Records that `offset` was delivered under `lease` (one at or before
    /// the cursor, acknowledged ahead of delivery, is not counted).
    pub fn delivered(&mut self, name: &[u8], lease: u64, offset: u64) {
        let cursor = self.by_name.get(name).map_or(0, |s| s.cursor);
        if let Some(o) = self.owner_of(name, lease)
            && offset > o.delivered
            && offset > cursor
        {
            o.delivered = offset;
            o.inflight.push_back(offset);
        }
    }

    /// A cumulative acknowledgement: the cursor moves to `offset` (never
    /// back). The loading client may acknowledge what it was delivered (or
    /// any offset up to `last`, skipping); a client that has not loaded it
    /// may move a session that nobody holds (after a gap). Returns the
    /// cursor, and whether it moved (then the caller logs it).
    ///
    /// # Errors
    /// [`SessionError::Unknown`], [`SessionError::NotLoaded`] when another
    /// client holds it, [`SessionError::PastEnd`].
    pub fn ack(
        &mut self,
        name: &[u8],
        client: u64,
        offset: u64,
        last: u64,
        now: Instant,
    ) -> Result<(u64, bool), SessionError> {
        let s = self.by_name.get_mut(name).ok_or(SessionError::Unknown)?;
        if offset > last {
            return Err(SessionError::PastEnd { offset, last });
        }
        if let Some(o) = &mut s.owner {
            if o.client != client {
                return Err(SessionError::NotLoaded);
            }
            while o.inflight.front().is_some_and(|&d| d <= offset) {
                o.inflight.pop_front();
            }
            if let Some(w) = o.waker.take() {
                w.wake();
            }
        }
        s.last_active = now;
        if offset > s.cursor {
            s.cursor = offset;
            Ok((offset, true))
        } else {
            Ok((s.cursor, false))
        }
    }

    /// Moves a cursor as the log recorded it (recovery).
    pub fn restore_ack(&mut self, name: &[u8], cursor: u64) {
        if let Some(s) = self.by_name.get_mut(name) {
            s.cursor = s.cursor.max(cursor);
        }
    }

    /// Ends `client`'s load of `name` (unload, disconnect), if it is still its own.
    pub fn unload(&mut self, name: &[u8], lease: u64, now: Instant) {
        if let Some(s) = self.by_name.get_mut(name)
            && s.owner.as_ref().is_some_and(|o| o.lease == lease)
        {
            s.owner = None;
            s.last_active = now;
        }
    }

    /// Deletes `name`; the client holding it, if any, is woken to find it lost.
    /// Returns whether it existed.
    pub fn delete(&mut self, name: &[u8]) -> bool {
        match self.by_name.remove(name) {
            Some(mut s) => {
                if let Some(w) = s.owner.as_mut().and_then(|o| o.waker.take()) {
                    w.wake();
                }
                true
            }
            None => false,
        }
    }

    /// Deletes sessions nobody has loaded for longer than the idle ttl;
    /// returns their names (the caller logs the deletions).
    pub fn expire(&mut self, now: Instant) -> Vec<Bytes> {
        let Some(ttl) = self.config.idle_ttl else {
            return Vec::new();
        };
        let gone: Vec<Bytes> = self
            .by_name
            .values()
            .filter(|s| s.owner.is_none() && now.saturating_duration_since(s.last_active) >= ttl)
            .map(|s| s.name.clone())
            .collect();
        for name in &gone {
            self.by_name.remove(name);
            tracing::info!(session = %String::from_utf8_lossy(name), "session expired");
        }
        gone
    }

    /// The lease of the load that holds `name`, if one does.
    pub fn lease_of(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name)?.owner.as_ref().map(|o| o.lease)
    }

    /// The session of that name.
    pub fn get(&self, name: &[u8]) -> Option<&Session> {
        self.by_name.get(name)
    }

    /// Every session, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.by_name.values()
    }

    /// The number of sessions.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The session with the lowest cursor: the one that pins the oldest message.
    pub fn slowest(&self) -> Option<&Session> {
        self.by_name.values().min_by_key(|s| s.cursor)
    }

    fn owner_of(&mut self, name: &[u8], lease: u64) -> Option<&mut Owner> {
        self.by_name
            .get_mut(name)?
            .owner
            .as_mut()
            .filter(|o| o.lease == lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(window: u32, takeover: Takeover) -> Sessions {
        Sessions::new(SessionsConfig {
            window,
            takeover,
            idle_ttl: Some(Duration::from_secs(60)),
            max_sessions: 3,
        })
    }

    #[test]
    fn create_load_deliver_ack_window() {
        let t0 = Instant::now();
        let mut s = reg(2, Takeover::Allow);
        assert_eq!(s.create(b"m", &[b"a.*"], 5, t0), Ok(true));
        assert_eq!(s.create(b"m", &[b"a.*"], 9, t0), Ok(false), "idempotent");
        assert_eq!(s.create(b"m", &[b"b"], 9, t0), Err(SessionError::Exists));
        let lease = s.load(b"m", 1, 0, t0).unwrap();
        assert_eq!((lease.cursor, lease.took_from), (5, None));
        assert_eq!(s.may_deliver(b"m", lease.lease, None), Deliver::Yes);
        s.delivered(b"m", lease.lease, 6);
        s.delivered(b"m", lease.lease, 8);
        s.delivered(b"m", lease.lease, 8); // a duplicate is not counted twice
        assert_eq!(s.get(b"m").unwrap().inflight(), 2);
        assert_eq!(s.may_deliver(b"m", lease.lease, None), Deliver::WindowFull);
        assert_eq!(s.ack(b"m", 1, 6, 10, t0), Ok((6, true)));
        assert_eq!(s.may_deliver(b"m", lease.lease, None), Deliver::Yes);
        assert_eq!(s.ack(b"m", 1, 4, 10, t0), Ok((6, false)), "never back");
        assert_eq!(
            s.ack(b"m", 1, 11, 10, t0),
            Err(SessionError::PastEnd {
                offset: 11,
                last: 10
            })
        );
        assert_eq!(s.ack(b"m", 2, 8, 10, t0), Err(SessionError::NotLoaded));
        assert_eq!(s.get(b"m").unwrap().cursor(), 6);
    }

    #[test]
    fn an_ack_wakes_a_full_window() {
        let t0 = Instant::now();
        let mut s = reg(1, Takeover::Allow);
        s.create(b"m", &[b"x"], 0, t0).unwrap();
        let l = s.load(b"m", 1, 0, t0).unwrap();
        s.delivered(b"m", l.lease, 1);
        let (waker, count) = counting_waker();
        assert_eq!(
            s.may_deliver(b"m", l.lease, Some(&waker)),
            Deliver::WindowFull
        );
        s.ack(b"m", 1, 1, 1, t0).unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn takeover_allowed_or_refused() {
        let t0 = Instant::now();
        let mut s = reg(8, Takeover::Allow);
        s.create(b"m", &[b"x"], 3, t0).unwrap();
        let a = s.load(b"m", 1, 0, t0).unwrap();
        s.delivered(b"m", a.lease, 4);
        let b = s.load(b"m", 2, 0, t0).unwrap();
        assert_eq!(b.took_from, Some(1));
        assert_eq!(b.cursor, 3, "the unacknowledged 4 is sent again");
        assert_eq!(s.may_deliver(b"m", a.lease, None), Deliver::Lost);
        assert_eq!(s.may_deliver(b"m", b.lease, None), Deliver::Yes);
        s.unload(b"m", a.lease, t0); // the old client's unload changes nothing
        assert_eq!(s.get(b"m").unwrap().owner(), Some(2));

        let mut r = reg(8, Takeover::Refuse);
        r.create(b"m", &[b"x"], 0, t0).unwrap();
        r.load(b"m", 1, 0, t0).unwrap();
        assert_eq!(
            r.load(b"m", 2, 0, t0),
            Err(SessionError::Busy { client: 1 })
        );
        assert!(r.load(b"m", 1, 0, t0).is_ok(), "its own client may reload");
    }

    #[test]
    fn a_takeover_wakes_the_old_holder() {
        let t0 = Instant::now();
        let mut s = reg(1, Takeover::Allow);
        s.create(b"m", &[b"x"], 0, t0).unwrap();
        let a = s.load(b"m", 1, 0, t0).unwrap();
        s.delivered(b"m", a.lease, 1);
        let (waker, count) = counting_waker();
        assert_eq!(
            s.may_deliver(b"m", a.lease, Some(&waker)),
            Deliver::WindowFull
        );
        s.load(b"m", 2, 0, t0).unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn expiry_spares_loaded_and_recent_sessions() {
        let t0 = Instant::now();
        let mut s = reg(8, Takeover::Allow);
        s.create(b"idle", &[b"x"], 0, t0).unwrap();
        s.create(b"busy", &[b"x"], 0, t0).unwrap();
        let l = s.load(b"busy", 1, 0, t0).unwrap();
        assert!(s.expire(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(
            s.expire(t0 + Duration::from_secs(60)),
            vec![Bytes::from("idle")]
        );
        assert!(s.get(b"busy").is_some());
        s.unload(b"busy", l.lease, t0 + Duration::from_secs(100));
        assert!(s.expire(t0 + Duration::from_secs(159)).is_empty());
        assert_eq!(s.expire(t0 + Duration::from_secs(160)).len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn gap_when_the_cursor_fell_off_the_log() {
        let t0 = Instant::now();
        let mut s = reg(8, Takeover::Allow);
        s.create(b"m", &[b"x"], 10, t0).unwrap();
        assert!(
            s.load(b"m", 1, 11, t0).is_ok(),
            "the next offset is retained"
        );
        s.unload(b"m", 1, t0);
        let l = s.load(b"m", 1, 12, t0);
        assert_eq!(
            l,
            Err(SessionError::Gap {
                cursor: 10,
                first: 12
            })
        );
        // Accepting the loss explicitly: ack the offset before the first retained.
        assert_eq!(s.ack(b"m", 9, 11, 20, t0), Ok((11, true)));
        assert!(s.load(b"m", 1, 12, t0).is_ok());
    }

    #[test]
    fn filters_exact_and_glob_and_bounded_count() {
        let t0 = Instant::now();
        let mut s = reg(8, Takeover::Allow);
        s.create(b"m", &[b"web", b"activity.*"], 0, t0).unwrap();
        let m = s.get(b"m").unwrap();
        assert!(m.matches(b"web"));
        assert!(!m.matches(b"web2"));
        assert!(m.matches(b"activity.INVITE"));
        s.create(b"n", &[b"x"], 0, t0).unwrap();
        s.create(b"o", &[b"x"], 0, t0).unwrap();
        assert_eq!(
            s.create(b"p", &[b"x"], 0, t0),
            Err(SessionError::TooMany { max: 3 })
        );
        assert!(s.delete(b"o"));
        assert!(!s.delete(b"o"));
        assert_eq!(s.slowest().map(|s| s.cursor()), Some(0));
    }

    fn counting_waker() -> (Waker, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        (Waker::from(Arc::new(Count(n.clone()))), n)
    }
}
