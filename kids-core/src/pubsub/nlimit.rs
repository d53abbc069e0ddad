//! `nlimit`: Redis's client output buffer limits, with `now` passed in.

use std::time::{Duration, Instant};

/// The class of a client for output limits: `pubsub` once it holds a
/// subscription, `normal` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientClass {
    /// A client with no subscription.
    Normal,
    /// A client subscribed to at least one channel or pattern.
    Pubsub,
}

/// One `nlimit CLASS HARD SOFT SECONDS` line. A zero bound is no bound.
///
/// The algorithm is Redis's `checkClientOutputBufferLimits`: a client is
/// closed as soon as its pending output reaches `hard` bytes, or once it has
/// stayed at or above `soft` bytes for more than `soft_seconds`; dropping
/// below `soft` resets that timer.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kids_core::NLimit;
///
/// let limit = NLimit::new(32 << 20, 16 << 20, Duration::from_secs(600));
/// let t0 = Instant::now();
/// let mut since = None;
/// assert!(!limit.exceeded(20 << 20, &mut since, t0)); // soft timer starts
/// assert!(!limit.exceeded(20 << 20, &mut since, t0 + Duration::from_secs(600)));
/// assert!(limit.exceeded(20 << 20, &mut since, t0 + Duration::from_secs(601)));
/// assert!(limit.exceeded(32 << 20, &mut None, t0)); // hard
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NLimit {
    /// Close when this many bytes are pending (0: never).
    pub hard: u64,
    /// Close when at least this many bytes stay pending for longer than `soft_seconds` (0: never).
    pub soft: u64,
    /// How long the soft bound may be exceeded.
    pub soft_seconds: Duration,
}

impl NLimit {
    /// A limit from its three values.
    pub const fn new(hard: u64, soft: u64, soft_seconds: Duration) -> Self {
        Self {
            hard,
            soft,
            soft_seconds,
        }
    }

    /// No limit at all.
    pub const fn unlimited() -> Self {
        Self::new(0, 0, Duration::ZERO)
    }

    /// Whether a client with `pending` bytes must be closed at `now`;
    /// `soft_since` is the client's soft-limit timer, updated in place.
    pub fn exceeded(&self, pending: u64, soft_since: &mut Option<Instant>, now: Instant) -> bool {
        if self.hard != 0 && pending >= self.hard {
            return true;
        }
        if self.soft != 0 && pending >= self.soft {
            match *soft_since {
                None => {
                    *soft_since = Some(now);
                    false
                }
                Some(t) => now.saturating_duration_since(t) > self.soft_seconds,
            }
        } else {
            *soft_since = None;
            false
        }
    }
}

/// The limits of both client classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NLimits {
    /// Limits for clients without subscriptions (default: none, as Redis).
    pub normal: NLimit,
    /// Limits for subscribers (default: Redis's `32mb 8mb 60`).
    pub pubsub: NLimit,
}

impl Default for NLimits {
    fn default() -> Self {
        Self {
            normal: NLimit::unlimited(),
            pubsub: NLimit::new(32 << 20, 8 << 20, Duration::from_secs(60)),
        }
    }
}

impl NLimits {
    /// The limit for `class`.
    pub fn of(&self, class: ClientClass) -> &NLimit {
        match class {
            ClientClass::Normal => &self.normal,
            ClientClass::Pubsub => &self.pubsub,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_timer_resets_below_soft() {
        let l = NLimit::new(0, 100, Duration::from_secs(10));
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut since = None;
        assert!(!l.exceeded(100, &mut since, t));
        assert!(!l.exceeded(150, &mut since, t + s(9)));
        assert!(!l.exceeded(99, &mut since, t + s(10)));
        assert_eq!(since, None);
        assert!(!l.exceeded(100, &mut since, t + s(11)));
        assert!(!l.exceeded(100, &mut since, t + s(21)));
        assert!(l.exceeded(100, &mut since, t + s(22)));
    }

    #[test]
    fn zero_is_unlimited() {
        let mut since = None;
        assert!(!NLimit::unlimited().exceeded(u64::MAX, &mut since, Instant::now()));
        assert_eq!(since, None);
    }
}
