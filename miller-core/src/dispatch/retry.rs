//! Retry decisions: exponential backoff with jitter, then bury; and the dedupe window. No IO, no clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A small seeded random number generator (SplitMix64): jitter is an input,
/// so a test with a seed gets the same delays every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a failed job is retried: try `n` (1-based) that fails is released
/// with a delay of `min(max_delay, base × factor^(n-1))`, less a random
/// part of up to `jitter` of it; the try numbered `max_attempts` that fails
/// buries the job instead.
///
/// The worker numbers tries from the server's `stats-job` `reserves`
/// counter, which a server restoring its jobs after a restart (miller's
/// served engine) starts again at zero: across such restarts a job may get
/// more than `max_attempts` tries, never fewer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The delay after the first failure.
    pub base: Duration,
    /// How much each later delay grows (at least 1).
    pub factor: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// Tries in all before the job is buried (at least 1).
    pub max_attempts: u32,
    /// The share of each delay taken off at random, in `[0, 1]`: 0.2 makes
    /// a 10 s delay one between 8 and 10 s.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 1 s, doubling, at most 1 h, 5 tries, 20 % jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(3600),
            max_attempts: 5,
            jitter: 0.2,
        }
    }
}

/// What to do with a job whose try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Release it, ready again after the delay.
    Release(Duration),
    /// Bury it: no tries left.
    Bury,
}

impl RetryPolicy {
    /// The decision after try `attempt` (1-based) failed.
    pub fn after_failure(&self, attempt: u32, rng: &mut Rng) -> Retry {
        if attempt >= self.max_attempts.max(1) {
            return Retry::Bury;
        }
        Retry::Release(self.delay(attempt, rng))
    }

    /// The delay after try `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let exp = attempt.saturating_sub(1).min(1000) as i32;
        let raw = self.base.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let capped = raw.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * rng.unit();
        // `max_delay` as f64 may round above `Duration::MAX`: no panic then.
        Duration::try_from_secs_f64((capped * (1.0 - jitter)).max(0.0)).unwrap_or(self.max_delay)
    }
}

/// The dedupe window of one handler: a key seen at time `t` makes the
/// same key a duplicate until `t + window` (for ever when that instant
/// cannot be represented: a window of `Duration::MAX` never ends). Memory is bounded: past
/// `max_keys` live keys the oldest is forgotten early (a later duplicate of
/// it is then put again: at least once, never lost).
#[derive(Debug, Clone)]
pub struct DedupeWindow {
    window: Duration,
    max_keys: usize,
    seen: HashMap<Vec<u8>, Instant>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

/// The default bound of a dedupe window's keys.
pub const DEFAULT_DEDUPE_KEYS: usize = 100_000;

impl DedupeWindow {
    /// A window of `window`, holding at most `max_keys` keys (at least 1).
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `key` is a duplicate at `now` (seen less than the window ago).
    pub fn is_duplicate(&mut self, key: &[u8], now: Instant) -> bool {
        self.expire(now);
        let window = self.window;
        self.seen.get(key).is_some_and(|&t| within(t, window, now))
    }

    /// Records `key` as seen at `now` (call once its job is confirmed).
    pub fn record(&mut self, key: Vec<u8>, now: Instant) {
        self.expire(now);
        if self.seen.contains_key(&key) {
            return;
        }
        while self.seen.len() >= self.max_keys {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone(), now);
        self.order.push_back((now, key));
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if within(*t, self.window, now) {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }
}

/// Whether `now` is before `t + window` (always, when that overflows).
fn within(t: Instant, window: Duration, now: Instant) -> bool {
    t.checked_add(window).is_none_or(|end| now < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_buries() {
        let p = RetryPolicy {
            base: Duration::from_secs(2),
            factor: 3.0,
            max_delay: Duration::from_secs(30),
            max_attempts: 5,
            jitter: 0.0,
        };
        let mut rng = Rng::new(1);
        let got: Vec<_> = (1..=5).map(|n| p.after_failure(n, &mut rng)).collect();
        assert_eq!(
            got,
            [
                Retry::Release(Duration::from_secs(2)),
                Retry::Release(Duration::from_secs(6)),
                Retry::Release(Duration::from_secs(18)),
                Retry::Release(Duration::from_secs(30)),
                Retry::Bury,
            ]
        );
        assert_eq!(p.after_failure(u32::MAX, &mut rng), Retry::Bury);
        assert_eq!(p.delay(u32::MAX, &mut rng), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_share_and_follows_the_seed() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..RetryPolicy::default()
        };
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = p.delay(4, &mut a);
            assert_eq!(d, p.delay(4, &mut b), "same seed, same delays");
            assert!(
                d > Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
            distinct.insert(d);
        }
        assert!(distinct.len() > 900, "jitter spreads the delays");
    }

    #[test]
    fn dedupe_window_expires_and_is_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = DedupeWindow::new(s(10), 2);
        assert!(!w.is_duplicate(b"a", t0));
        w.record(b"a".to_vec(), t0);
        assert!(w.is_duplicate(b"a", t0 + s(9)));
        assert!(!w.is_duplicate(b"a", t0 + s(10)), "the window has passed");
        assert!(w.is_empty());
        w.record(b"a".to_vec(), t0 + s(20));
        w.record(b"b".to_vec(), t0 + s(21));
        w.record(b"c".to_vec(), t0 + s(22));
        assert_eq!(w.len(), 2, "bounded");
        assert!(
            !w.is_duplicate(b"a", t0 + s(22)),
            "the oldest was forgotten"
        );
        assert!(w.is_duplicate(b"b", t0 + s(22)) && w.is_duplicate(b"c", t0 + s(22)));
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let t0 = Instant::now();
        let mut w = DedupeWindow::new(Duration::MAX, 4);
        w.record(b"a".to_vec(), t0);
        assert!(w.is_duplicate(b"a", t0 + Duration::from_secs(1_000_000)));
        assert_eq!(w.len(), 1, "a window that never ends keeps its key");
        let p = RetryPolicy {
            base: Duration::MAX,
            factor: f64::MAX,
            max_delay: Duration::MAX,
            max_attempts: u32::MAX,
            jitter: 0.0,
        };
        let mut rng = Rng::new(3);
        for n in [1, 2, 100, u32::MAX - 1] {
            assert!(matches!(p.after_failure(n, &mut rng), Retry::Release(_)));
        }
    }
}
