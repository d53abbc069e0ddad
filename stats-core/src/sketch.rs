//! Timer samples: exact up to a cap, then a relative-error quantile sketch (DDSketch).
//!
//! [`Samples`] is what the aggregator keeps for one timer key over one flush
//! interval. It stores every sample exactly until a per-key cap is reached,
//! then moves them all into a [`DdSketch`] and keeps inserting there. Count,
//! sum, sum of squares, min and max are always exact.
//!
//! ```text
//!  insert(v) ──► finite? ──no──► ignored, returns false
//!                  │yes
//!                  ▼
//!        count, sum, sum_sq, min, max, Welford (always exact)
//!                  │
//!        len < exact_cap ? ──yes──► Vec<f64> (sorted lazily on read)
//!                  │no
//!                  ▼
//!        DdSketch (quantiles within a relative alpha, 0.5% by default)
//! ```

/// Nearest-rank of quantile `q` (already in `[0, 1]`) among `n >= 1` values:
/// `k = ceil(q * n)` clamped to `[1, n]`.
///
/// A product within a relative 1e-12 of an integer is taken as that integer,
/// so that `0.07 * 100` (which is `7.000000000000001` in binary floating
/// point) gives rank 7 and not 8.
fn nearest_rank(q: f64, n: u64) -> u64 {
    let x = q * n as f64;
    let r = x.round();
    let k = if (x - r).abs() <= 1e-12 * r.max(1.0) {
        r
    } else {
        x.ceil()
    };
    // `as` saturates: NaN becomes 0, huge values become u64::MAX.
    (k as u64).max(1).min(n.max(1))
}

/// JavaScript's `Math.round` for non-negative inputs: the nearest integer,
/// halves rounded up (towards +∞), so 2.5 gives 3.
fn js_round(x: f64) -> f64 {
    let f = x.floor();
    if x - f >= 0.5 { f + 1.0 } else { f }
}

/// Counts `(value, count)` pairs, ascending by value, into Etsy statsd bins.
fn fill_bins(sorted: impl Iterator<Item = (f64, u64)>, bins: &[f64]) -> Vec<u64> {
    let mut items = sorted.peekable();
    bins.iter()
        .map(|&bound| {
            let mut freq = 0u64;
            while let Some((_, c)) = items.next_if(|&(v, _)| v < bound) {
                freq = freq.saturating_add(c);
            }
            freq
        })
        .collect()
}

/// A dense run of bucket counters for one sign of a [`DdSketch`].
///
/// `counts[k]` holds bucket index `offset + k`. The store never holds more
/// than `max_buckets` counters: when it would, the lowest indices are folded
/// into the lowest kept one ("collapsing lowest").
#[derive(Debug, Clone, Default)]
struct Store {
    counts: Vec<u64>,
    offset: i64,
    collapsed: bool,
}

impl Store {
    /// Adds `n` to bucket `index`, growing or collapsing as needed.
    fn add(&mut self, index: i64, n: u64, max_buckets: usize) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(n);
            return;
        }
        let max = max_buckets.max(1) as i64;
        let lo = self.offset;
        let hi = lo + self.counts.len() as i64 - 1;
        let new_hi = hi.max(index);
        let mut new_lo = lo.min(index);
        if new_hi - new_lo + 1 > max {
            new_lo = new_hi - max + 1;
            self.collapsed = true;
        }
        if new_lo != lo || new_hi != hi {
            self.reshape(new_lo, new_hi);
        }
        let slot = (index.max(new_lo) - new_lo) as usize;
        if let Some(c) = self.counts.get_mut(slot) {
            *c = c.saturating_add(n);
        }
    }

    /// Makes the store cover exactly `new_lo..=new_hi`, folding the counters
    /// below `new_lo` into the `new_lo` one.
    fn reshape(&mut self, new_lo: i64, new_hi: i64) {
        let lo = self.offset;
        if new_lo < lo {
            let pad = (lo - new_lo) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, pad));
        } else if new_lo > lo {
            let cut = ((new_lo - lo) as usize).min(self.counts.len());
            let folded = self.counts.drain(..cut).fold(0u64, u64::saturating_add);
            match self.counts.first_mut() {
                Some(first) => *first = first.saturating_add(folded),
                None => self.counts.push(folded),
            }
        }
        self.offset = new_lo;
        self.counts.resize((new_hi - new_lo + 1) as usize, 0);
    }

    /// Non-empty buckets as `(index, count)`, ascending by index.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i64, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(move |(k, &c)| (offset + k as i64, c))
    }
}

/// A DDSketch: a quantile sketch with a relative-error guarantee
/// (Masson, Rim and Lee, "DDSketch: A Fast and Fully-Mergeable Quantile
/// Sketch with Relative-Error Guarantees", VLDB 2019).
///
/// With relative accuracy `alpha` and `gamma = (1 + alpha) / (1 - alpha)`, a
/// positive value `x` goes to bucket `i = ceil(ln(x) / ln(gamma))`, which
/// covers `(gamma^(i-1), gamma^i]` and is represented by
/// `2 * gamma^i / (gamma + 1)`: every value of the bucket is within a relative
/// `alpha` of that representative. Negative values are kept by magnitude in a
/// second store, zeros in a plain counter. The exact minimum and maximum are
/// tracked too, and every representative is clamped to `[min, max]`.
///
/// Each store is a dense `Vec<u64>` holding at most
/// [`max_buckets`](Self::with_max_buckets) counters
/// ([`DEFAULT_MAX_BUCKETS`](Self::DEFAULT_MAX_BUCKETS) by default, which with
/// the default accuracy spans a ratio of about 10^17 between the smallest and
/// the largest magnitude). When a store would need more, its lowest buckets
/// are collapsed into one (the paper's "collapsing lowest" variant): for
/// positive values the smallest ones, for negative values the most negative
/// ones. The relative-error guarantee then holds only for the higher
/// quantiles, those whose rank lies above the collapsed buckets;
/// [`is_collapsed`](Self::is_collapsed) says whether this happened.
///
/// Quantiles use the nearest-rank definition (see [`quantile`](Self::quantile)):
/// the reported value is within a relative `alpha` (plus floating-point
/// rounding) of the exact nearest-rank value, as long as no collapse touched
/// it and the values are normal floating-point numbers (subnormals cannot be
/// represented with relative precision).
///
/// ```
/// use stats_core::DdSketch;
///
/// let mut sketch = DdSketch::new(0.01);
/// for v in 1..=1000 {
///     sketch.insert(f64::from(v));
/// }
/// let p90 = sketch.quantile(0.9).unwrap_or_default();
/// assert!((p90 - 900.0).abs() <= 0.01 * 900.0);
/// assert_eq!(sketch.quantile(1.0), Some(1000.0));
/// ```
#[derive(Debug, Clone)]
pub struct DdSketch {
    relative_accuracy: f64,
    /// `ln(gamma)`.
    ln_gamma: f64,
    /// `ln(2 / (gamma + 1))`, so that a representative is one `exp`.
    ln_factor: f64,
    max_buckets: usize,
    positive: Store,
    /// Keyed by the negated index of the magnitude, so that ascending keys
    /// are ascending values and "collapse lowest" folds the most negative.
    negative: Store,
    zeros: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl DdSketch {
    /// Relative accuracy of [`DdSketch::default`]: 0.5%, so quantiles are
    /// well within 1% of the exact ones.
    pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.005;
    /// Bucket bound per store (positive and negative) of [`DdSketch::new`].
    pub const DEFAULT_MAX_BUCKETS: usize = 4096;

    /// Smallest accepted relative accuracy; smaller inputs are raised to it.
    const MIN_RELATIVE_ACCURACY: f64 = 1e-4;
    /// Largest accepted relative accuracy; larger inputs are lowered to it.
    const MAX_RELATIVE_ACCURACY: f64 = 0.5;
    /// Largest accepted bucket bound per store (8 MiB of counters).
    const MAX_MAX_BUCKETS: usize = 1 << 20;

    /// An empty sketch with the given relative accuracy and
    /// [`DEFAULT_MAX_BUCKETS`](Self::DEFAULT_MAX_BUCKETS) buckets per store.
    ///
    /// The accuracy is clamped to `[0.0001, 0.5]`; NaN gives
    /// [`DEFAULT_RELATIVE_ACCURACY`](Self::DEFAULT_RELATIVE_ACCURACY).
    /// [`relative_accuracy`](Self::relative_accuracy) returns the value used.
    pub fn new(relative_accuracy: f64) -> Self {
        Self::with_max_buckets(relative_accuracy, Self::DEFAULT_MAX_BUCKETS)
    }

    /// An empty sketch with the given relative accuracy (clamped as in
    /// [`new`](Self::new)) and at most `max_buckets` counters per store
    /// (clamped to `[1, 1_048_576]`).
    pub fn with_max_buckets(relative_accuracy: f64, max_buckets: usize) -> Self {
        let alpha = if relative_accuracy.is_nan() {
            Self::DEFAULT_RELATIVE_ACCURACY
        } else {
            relative_accuracy.clamp(Self::MIN_RELATIVE_ACCURACY, Self::MAX_RELATIVE_ACCURACY)
        };
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Self {
            relative_accuracy: alpha,
            ln_gamma: gamma.ln(),
            ln_factor: (2.0 / (gamma + 1.0)).ln(),
            max_buckets: max_buckets.clamp(1, Self::MAX_MAX_BUCKETS),
            positive: Store::default(),
            negative: Store::default(),
            zeros: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The relative accuracy in use (after clamping).
    pub fn relative_accuracy(&self) -> f64 {
        self.relative_accuracy
    }

    /// Adds one value. NaN and ±∞ are ignored and give `false`; `-0.0` is
    /// counted as `0.0`.
    pub fn insert(&mut self, v: f64) -> bool {
        self.insert_n(v, 1)
    }

    /// Adds `n` copies of a value. NaN and ±∞ are ignored and give `false`;
    /// `n == 0` changes nothing and gives `true`. Counts saturate at
    /// `u64::MAX`.
    pub fn insert_n(&mut self, v: f64, n: u64) -> bool {
        if !v.is_finite() {
            return false;
        }
        if n == 0 {
            return true;
        }
        if v > 0.0 {
            self.positive.add(self.index(v), n, self.max_buckets);
        } else if v < 0.0 {
            self.negative.add(-self.index(-v), n, self.max_buckets);
        } else {
            self.zeros = self.zeros.saturating_add(n);
        }
        let v = if v == 0.0 { 0.0 } else { v };
        self.count = self.count.saturating_add(n);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        true
    }

    /// Number of values inserted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact smallest value, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Exact largest value, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Whether a store went over its bucket bound and collapsed its lowest
    /// buckets, so that low quantiles lost their accuracy guarantee.
    pub fn is_collapsed(&self) -> bool {
        self.positive.collapsed || self.negative.collapsed
    }

    /// The nearest-rank `q`-quantile: the value of rank `k = ceil(q * n)`
    /// (1-based, clamped to `[1, n]`) in ascending order, approximated by its
    /// bucket's representative.
    ///
    /// `q` is clamped to `[0, 1]`; `q == 0` gives the exact minimum and
    /// `q == 1` the exact maximum. `None` when the sketch is empty or `q` is
    /// NaN. A rank product within a relative 1e-12 of an integer counts as
    /// that integer (so `q = 0.07` of 100 values is rank 7).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        if q == 0.0 {
            return Some(self.min);
        }
        if q == 1.0 {
            return Some(self.max);
        }
        let rank = nearest_rank(q, self.count);
        let mut seen = 0u64;
        for (value, c) in self.buckets() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(value);
            }
        }
        Some(self.max)
    }

    /// Adds every value of `other` into `self`.
    ///
    /// Both sketches must have the same relative accuracy; otherwise nothing
    /// changes and the result is `false`. The bucket bound of `self` applies
    /// to the result.
    pub fn merge(&mut self, other: &DdSketch) -> bool {
        if self.relative_accuracy.to_bits() != other.relative_accuracy.to_bits() {
            return false;
        }
        if other.count == 0 {
            return true;
        }
        for (index, c) in other.positive.iter() {
            self.positive.add(index, c, self.max_buckets);
        }
        for (index, c) in other.negative.iter() {
            self.negative.add(index, c, self.max_buckets);
        }
        self.positive.collapsed |= other.positive.collapsed;
        self.negative.collapsed |= other.negative.collapsed;
        self.zeros = self.zeros.saturating_add(other.zeros);
        self.count = self.count.saturating_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        true
    }

    /// Non-empty buckets as `(representative value, count)` in ascending
    /// value order: negative values, then zeros, then positive values.
    ///
    /// Representatives are clamped to `[min, max]`, so they are always
    /// finite. Iterate with `.rev()` for descending order.
    pub fn buckets(&self) -> impl DoubleEndedIterator<Item = (f64, u64)> + '_ {
        let negative = self.negative.iter().map(|(key, c)| (-self.value(-key), c));
        let zeros = (self.zeros > 0).then_some((0.0, self.zeros));
        let positive = self
            .positive
            .iter()
            .map(|(index, c)| (self.value(index), c));
        negative
            .chain(zeros)
            .chain(positive)
            .map(|(v, c)| (v.max(self.min).min(self.max), c))
    }

    /// Non-empty buckets as `(largest value the bucket can hold, count)`
    /// in ascending value order, clamped to `[min, max]`: binning by this
    /// edge puts a value equal to a bin bound on the right side of it.
    ///
    /// A positive bucket `i` holds `(gamma^(i-1), gamma^i]`, its edge is
    /// `gamma^i`; a negative one (key `-i`) holds `[-gamma^i, -gamma^(i-1))`,
    /// its edge is the supremum `-gamma^(i-1)`.
    fn upper_edges(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let edge = |index: i64| (index as f64 * self.ln_gamma).exp();
        let negative = self
            .negative
            .iter()
            .map(move |(key, c)| (-edge(-key - 1), c));
        let zeros = (self.zeros > 0).then_some((0.0, self.zeros));
        let positive = self.positive.iter().map(move |(index, c)| (edge(index), c));
        negative
            .chain(zeros)
            .chain(positive)
            .map(|(v, c)| (v.max(self.min).min(self.max), c))
    }

    /// Bucket index of a positive finite magnitude.
    fn index(&self, magnitude: f64) -> i64 {
        // Finite: |ln| <= 745 and ln_gamma >= 2e-4, so |index| < 4e6.
        (magnitude.ln() / self.ln_gamma).ceil() as i64
    }

    /// Representative magnitude of bucket `index`: `2 gamma^i / (gamma + 1)`.
    fn value(&self, index: i64) -> f64 {
        (index as f64 * self.ln_gamma + self.ln_factor).exp()
    }
}

impl Default for DdSketch {
    /// [`DdSketch::new`] with
    /// [`DEFAULT_RELATIVE_ACCURACY`](DdSketch::DEFAULT_RELATIVE_ACCURACY).
    fn default() -> Self {
        Self::new(Self::DEFAULT_RELATIVE_ACCURACY)
    }
}

/// The values of a timer at or below a percentile threshold (or, for a
/// negative threshold, at or above): Etsy statsd's `count_90`, `mean_90`,
/// `upper_90`, `sum_90` and `sum_squares_90`, or for `-10` its `count_top10`,
/// `lower_top10` and so on. Returned by [`Samples::below`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Below {
    /// How many values are in the threshold (`numInThreshold`); never 0.
    pub count: u64,
    /// Sum of those values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_sq: f64,
    /// The threshold boundary: for a positive threshold the largest value
    /// in it (`upper_90`); for a negative one the smallest value of the top
    /// group (`lower_top10`).
    pub upper: f64,
}

impl Below {
    /// `sum / count` (Etsy's `mean_90`).
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Where [`Samples`] keeps its values.
#[derive(Debug, Clone)]
enum Mode {
    /// Every sample, sorted when `sorted` says so.
    Exact { values: Vec<f64>, sorted: bool },
    /// Past the cap: a sketch of every sample.
    Sketch(DdSketch),
}

/// The samples of one timer key over one flush interval.
///
/// Up to `exact_cap` samples are kept exactly in a `Vec<f64>`; the sample
/// that would go over the cap moves all of them into a [`DdSketch`], where
/// every later one goes too (for the rest of the interval, or until
/// [`clear`](Self::clear)). Count, sum, sum of squares, min, max and the
/// standard deviation are exact in both modes; quantiles, [`below`](Self::below)
/// and [`histogram`](Self::histogram) are exact in exact mode and
/// approximate (relative error `alpha` on values) in sketch mode.
///
/// NaN and ±∞ are never stored: [`insert`](Self::insert) ignores them and
/// returns `false`. Sums are plain `f64` sums and may overflow to infinity
/// for magnitudes beyond about 1e154 (squares) or 1e308.
///
/// ```
/// use stats_core::Samples;
///
/// let mut timer = Samples::new(Samples::DEFAULT_EXACT_CAP);
/// for ms in [100.0, 200.0, 300.0] {
///     timer.insert(ms);
/// }
/// assert_eq!(timer.mean(), Some(200.0));
/// assert_eq!(timer.quantile(0.5), Some(200.0));
/// let p90 = timer.below(90.0).map(|b| (b.count, b.upper));
/// assert_eq!(p90, Some((3, 300.0)));
/// ```
#[derive(Debug, Clone)]
pub struct Samples {
    exact_cap: usize,
    relative_accuracy: f64,
    mode: Mode,
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    /// Welford running mean and sum of squared deviations.
    mean: f64,
    m2: f64,
}

impl Samples {
    /// A sensible default for `exact_cap`: 1,000 samples (8 KB) per key per
    /// interval, after which a sketch of a few KB takes over.
    pub const DEFAULT_EXACT_CAP: usize = 1_000;

    /// Empty samples kept exactly up to `exact_cap` values, then in a
    /// [`DdSketch`] with
    /// [`DEFAULT_RELATIVE_ACCURACY`](DdSketch::DEFAULT_RELATIVE_ACCURACY).
    /// `exact_cap == 0` means a sketch from the first sample on. No memory is
    /// reserved up front.
    pub fn new(exact_cap: usize) -> Self {
        Self::with_accuracy(exact_cap, DdSketch::DEFAULT_RELATIVE_ACCURACY)
    }

    /// As [`new`](Self::new), with the sketch's relative accuracy given
    /// (clamped as in [`DdSketch::new`]).
    pub fn with_accuracy(exact_cap: usize, relative_accuracy: f64) -> Self {
        Self {
            exact_cap,
            relative_accuracy: DdSketch::new(relative_accuracy).relative_accuracy(),
            mode: Mode::Exact {
                values: Vec::new(),
                sorted: true,
            },
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
        }
    }

    /// Adds a sample. NaN and ±∞ are ignored and give `false`; `-0.0` is
    /// kept as `0.0`.
    pub fn insert(&mut self, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        let v = if v == 0.0 { 0.0 } else { v };
        if matches!(&self.mode, Mode::Exact { values, .. } if values.len() >= self.exact_cap) {
            self.spill();
        }
        match &mut self.mode {
            Mode::Exact { values, sorted } => {
                *sorted = *sorted && values.last().is_none_or(|&last| last <= v);
                values.push(v);
            }
            Mode::Sketch(sketch) => {
                sketch.insert(v);
            }
        }
        self.count = self.count.saturating_add(1);
        self.sum += v;
        self.sum_sq += v * v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let delta = v - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (v - self.mean);
        true
    }

    /// Moves the exact samples into a sketch.
    fn spill(&mut self) {
        if let Mode::Exact { values, .. } = &self.mode {
            let mut sketch = DdSketch::new(self.relative_accuracy);
            for &v in values.iter() {
                sketch.insert(v);
            }
            self.mode = Mode::Sketch(sketch);
        }
    }

    /// Forgets every sample and goes back to exact mode (keeping the cap,
    /// the accuracy and, if still exact, the allocation).
    pub fn clear(&mut self) {
        match &mut self.mode {
            Mode::Exact { values, sorted } => {
                values.clear();
                *sorted = true;
            }
            Mode::Sketch(_) => {
                self.mode = Mode::Exact {
                    values: Vec::new(),
                    sorted: true,
                };
            }
        }
        self.count = 0;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.mean = 0.0;
        self.m2 = 0.0;
    }

    /// Whether every sample is still kept exactly (at most `exact_cap`
    /// samples so far).
    pub fn is_exact(&self) -> bool {
        matches!(self.mode, Mode::Exact { .. })
    }

    /// Every sample, sorted ascending, while they are kept exactly
    /// ([`is_exact`](Self::is_exact)); `None` once a sketch holds them.
    pub fn exact_sorted(&mut self) -> Option<&[f64]> {
        match &mut self.mode {
            Mode::Exact { values, sorted } => Some(sorted_values(values, sorted)),
            Mode::Sketch(_) => None,
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the samples (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Sum of the squares of the samples (0 when empty).
    pub fn sum_sq(&self) -> f64 {
        self.sum_sq
    }

    /// Smallest sample, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest sample, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// `sum / count`, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Population standard deviation `sqrt(Σ(v - mean)² / n)` (divided by
    /// `n`, not `n - 1`, as Etsy statsd's `std`; statsite's `stdev` divides
    /// by `n - 1`, which the aggregator's statsite mode derives from this),
    /// computed with Welford's update so it stays exact in sketch mode and
    /// does not cancel catastrophically. 0 for one sample, `None` when empty.
    pub fn stdev(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2.max(0.0) / self.count as f64).sqrt())
    }

    /// The nearest-rank `q`-quantile: the value of rank `k = ceil(q * n)`
    /// (1-based, clamped to `[1, n]`) among the samples sorted ascending; so
    /// `q == 0` is the minimum and `q == 1` the maximum. `q` is clamped to
    /// `[0, 1]`; a rank product within a relative 1e-12 of an integer counts
    /// as that integer. `None` when empty or `q` is NaN.
    ///
    /// Exact in exact mode (sorts once, then remembers it); in sketch mode
    /// see [`DdSketch::quantile`].
    pub fn quantile(&mut self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        match &mut self.mode {
            Mode::Exact { values, sorted } => {
                let values = sorted_values(values, sorted);
                let rank = nearest_rank(q.clamp(0.0, 1.0), values.len() as u64);
                values.get((rank - 1) as usize).copied()
            }
            Mode::Sketch(sketch) => sketch.quantile(q),
        }
    }

    /// The samples within the percentile threshold `pct`, as Etsy statsd
    /// computes its `*_90` figures.
    ///
    /// Of the `n` samples sorted ascending, `numInThreshold =
    /// round(|pct| / 100 * n)` (JavaScript `Math.round`: halves round up)
    /// are taken from the bottom when `pct > 0` and from the top when
    /// `pct < 0` (Etsy's `top10` for `-10`); see [`Below`] for what is
    /// reported. As in Etsy, a single sample is within every threshold.
    /// `None` when empty, when `pct` is NaN, or when `numInThreshold` is 0.
    ///
    /// Where Etsy misbehaves this does not: `|pct| > 100` takes all samples
    /// (Etsy reads past the end), and a top group of all `n > 1` samples
    /// (`pct == -100`, or `-90` of two samples) sums them all (Etsy gives
    /// NaN).
    ///
    /// In sketch mode the figures come from the buckets: each value counts as
    /// its bucket's representative (so `sum` and `upper` are within a
    /// relative `alpha` for samples of one sign); when every sample is
    /// taken, the exact sums and min or max are used.
    pub fn below(&mut self, pct: f64) -> Option<Below> {
        if self.count == 0 || pct.is_nan() {
            return None;
        }
        let n = self.count;
        let num = if n == 1 {
            1
        } else {
            (js_round(pct.abs() / 100.0 * n as f64) as u64).min(n)
        };
        if num == 0 {
            return None;
        }
        let top = pct < 0.0;
        match &mut self.mode {
            Mode::Exact { values, sorted } => {
                let values = sorted_values(values, sorted);
                let num = num as usize;
                let part = if top {
                    values.get(values.len().saturating_sub(num)..)
                } else {
                    values.get(..num)
                }?;
                let upper = if top { part.first() } else { part.last() };
                // Etsy's arithmetic, to the last bit: running sums over the
                // sorted values; a top group is the whole sum less the sum
                // below it.
                let (sum, sum_sq) = if top && num < values.len() {
                    let (all, all_sq) = sorted_sums(values);
                    let (rest, rest_sq) = sorted_sums(&values[..values.len() - num]);
                    (all - rest, all_sq - rest_sq)
                } else {
                    sorted_sums(part)
                };
                Some(Below {
                    count: part.len() as u64,
                    sum,
                    sum_sq,
                    upper: *upper?,
                })
            }
            Mode::Sketch(_) if num == n => Some(Below {
                count: n,
                sum: self.sum,
                sum_sq: self.sum_sq,
                upper: if top { self.min } else { self.max },
            }),
            Mode::Sketch(sketch) => {
                if top {
                    below_from_buckets(sketch.buckets().rev(), num)
                } else {
                    below_from_buckets(sketch.buckets(), num)
                }
            }
        }
    }

    /// Counts of samples per bin, where `bins` are upper bounds (exclusive)
    /// as in Etsy statsd's `histogram` setting.
    ///
    /// Sweeping the sorted samples once, bin `j` gets the samples `v` not yet
    /// counted with `v < bins[j]`. With ascending bounds that is "each sample
    /// goes into the first bin whose bound is above it"; a bin whose bound is
    /// not above an earlier one gets 0, and a NaN bound gets 0. A last bound
    /// of `f64::INFINITY` is Etsy's `inf` and takes everything left; samples
    /// not below any bound are not counted (as in Etsy).
    ///
    /// Exact in exact mode. In sketch mode each sample counts as the
    /// largest value its bucket can hold (clamped to `[min, max]`): a sample
    /// equal to a bound (say an integer millisecond timer and a bound of
    /// 100) lands in the right bin, but samples up to a relative
    /// `gamma - 1 ≈ 2 alpha` below a bound may be counted in the bin above.
    pub fn histogram(&mut self, bins: &[f64]) -> Vec<u64> {
        match &mut self.mode {
            Mode::Exact { values, sorted } => {
                let values = sorted_values(values, sorted);
                fill_bins(values.iter().map(|&v| (v, 1)), bins)
            }
            Mode::Sketch(sketch) => fill_bins(sketch.upper_edges(), bins),
        }
    }
}

impl Default for Samples {
    /// [`Samples::new`] with [`DEFAULT_EXACT_CAP`](Samples::DEFAULT_EXACT_CAP).
    fn default() -> Self {
        Self::new(Self::DEFAULT_EXACT_CAP)
    }
}

/// The sum and the sum of squares of `values`, added from the first, as
/// Etsy statsd's cumulative sums over its sorted values.
pub(crate) fn sorted_sums(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((0.0, 0.0), |(sum, sq), &v| (sum + v, sq + v * v))
}

/// Sorts `values` if not yet sorted and returns them.
fn sorted_values<'a>(values: &'a mut [f64], sorted: &mut bool) -> &'a [f64] {
    if !*sorted {
        values.sort_unstable_by(f64::total_cmp);
        *sorted = true;
    }
    values
}

/// The first `num` values of `buckets` (in the order given) as a [`Below`].
fn below_from_buckets(buckets: impl Iterator<Item = (f64, u64)>, num: u64) -> Option<Below> {
    let mut left = num;
    let mut sum = 0.0;
    let mut sum_sq = 0.0;
    let mut upper = None;
    for (v, c) in buckets {
        let take = c.min(left);
        sum += v * take as f64;
        sum_sq += v * v * take as f64;
        left -= take;
        upper = Some(v);
        if left == 0 {
            break;
        }
    }
    Some(Below {
        count: num - left,
        sum,
        sum_sq,
        upper: upper?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Exact nearest-rank quantile of sorted values, by integer arithmetic
    /// on a quantile given in parts per million.
    fn exact_rank(sorted: &[f64], ppm: u64) -> f64 {
        let n = sorted.len() as u64;
        let k = (ppm * n).div_ceil(1_000_000).clamp(1, n);
        sorted[(k - 1) as usize]
    }

    fn rel_err(got: f64, want: f64) -> f64 {
        if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        }
    }

    /// Relative error allowed for a sketch of accuracy `alpha`, with room
    /// for floating-point rounding at bucket edges.
    fn bound(alpha: f64) -> f64 {
        alpha * (1.0 + 1e-9) + 1e-12
    }

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    const QS: [u64; 9] = [
        0, 1, 10_000, 250_000, 500_000, 900_000, 990_000, 999_999, 1_000_000,
    ];

    #[test]
    fn nearest_rank_definition() {
        assert_eq!(nearest_rank(0.0, 10), 1);
        assert_eq!(nearest_rank(0.1, 10), 1);
        assert_eq!(nearest_rank(0.11, 10), 2);
        assert_eq!(nearest_rank(0.5, 10), 5);
        assert_eq!(nearest_rank(1.0, 10), 10);
        assert_eq!(
            nearest_rank(0.07, 100),
            7,
            "0.07 * 100 is 7.000000000000001"
        );
        assert_eq!(nearest_rank(0.999, 1_000_000), 999_000);
        assert_eq!(nearest_rank(0.5, 1), 1);
        assert_eq!(nearest_rank(f64::NAN, 5), 1);
    }

    #[test]
    fn js_round_halves_go_up() {
        assert_eq!(js_round(0.0), 0.0);
        assert_eq!(js_round(0.4), 0.0);
        assert_eq!(js_round(0.5), 1.0);
        assert_eq!(js_round(1.5), 2.0);
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(2.7), 3.0);
        assert_eq!(js_round(0.499_999_999_999_999_94), 0.0);
        assert_eq!(js_round(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn sketch_empty() {
        let s = DdSketch::default();
        assert_eq!(s.count(), 0);
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.quantile(0.0), None);
        assert_eq!(s.min(), None);
        assert_eq!(s.max(), None);
        assert_eq!(s.buckets().count(), 0);
        assert!(!s.is_collapsed());
    }

    #[test]
    fn sketch_ignores_non_finite() {
        let mut s = DdSketch::default();
        assert!(!s.insert(f64::NAN));
        assert!(!s.insert(f64::INFINITY));
        assert!(!s.insert_n(f64::NEG_INFINITY, 3));
        assert_eq!(s.count(), 0);
        assert!(s.insert_n(1.0, 0));
        assert_eq!(s.count(), 0);
        assert_eq!(s.min(), None);
    }

    #[test]
    fn sketch_clamps_accuracy() {
        assert_eq!(DdSketch::new(f64::NAN).relative_accuracy(), 0.005);
        assert_eq!(DdSketch::new(0.0).relative_accuracy(), 1e-4);
        assert_eq!(DdSketch::new(-3.0).relative_accuracy(), 1e-4);
        assert_eq!(DdSketch::new(2.0).relative_accuracy(), 0.5);
        assert_eq!(DdSketch::new(f64::INFINITY).relative_accuracy(), 0.5);
        assert_eq!(DdSketch::new(0.02).relative_accuracy(), 0.02);
        let mut s = DdSketch::with_max_buckets(0.01, 0);
        for v in [1.0, 1e10, 1e-10] {
            s.insert(v);
        }
        assert_eq!(s.positive.counts.len(), 1);
        assert_eq!(s.quantile(1.0), Some(1e10));
    }

    #[test]
    fn sketch_one_value_and_all_equal() {
        for v in [42.5, -3.25, 0.0, 1e-300, f64::MAX, f64::MIN, 5e-324] {
            let mut s = DdSketch::default();
            s.insert_n(v, 1000);
            for q in [0.0, 0.001, 0.5, 0.99, 1.0] {
                assert_eq!(s.quantile(q), Some(v), "v={v} q={q}");
            }
            assert_eq!(s.buckets().collect::<Vec<_>>(), vec![(v, 1000)]);
        }
    }

    #[test]
    fn sketch_q_is_clamped() {
        let mut s = DdSketch::default();
        for v in 1..=100 {
            s.insert(f64::from(v));
        }
        assert_eq!(s.quantile(-1.0), Some(1.0));
        assert_eq!(s.quantile(f64::NEG_INFINITY), Some(1.0));
        assert_eq!(s.quantile(7.0), Some(100.0));
        assert_eq!(s.quantile(f64::NAN), None);
    }

    #[test]
    fn sketch_negatives_zeros_positives() {
        let mut values = Vec::new();
        for i in -500..=500 {
            values.push(f64::from(i) * 1.7);
        }
        values.extend([0.0; 50]);
        values.extend([-0.0; 50]);
        let mut s = DdSketch::new(0.01);
        for &v in &values {
            assert!(s.insert(v));
        }
        let values = sorted(values);
        assert_eq!(s.count(), values.len() as u64);
        assert_eq!(s.min(), Some(-850.0));
        assert_eq!(s.max(), Some(850.0));
        for ppm in QS {
            let want = exact_rank(&values, ppm);
            let got = s.quantile(ppm as f64 / 1e6).unwrap_or(f64::NAN);
            assert!(
                rel_err(got, want) <= bound(0.01),
                "ppm={ppm} got={got} want={want}"
            );
        }
        let buckets: Vec<_> = s.buckets().collect();
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), s.count());
        assert!(buckets.contains(&(0.0, 101)));
        let back: Vec<_> = s.buckets().rev().collect();
        assert_eq!(back.first(), buckets.last());
    }

    #[test]
    fn sketch_insert_n_is_n_inserts() {
        let mut a = DdSketch::default();
        let mut b = DdSketch::default();
        for v in [-2.0, 0.0, 3.5, 1e6] {
            a.insert_n(v, 7);
            for _ in 0..7 {
                b.insert(v);
            }
        }
        assert_eq!(
            a.buckets().collect::<Vec<_>>(),
            b.buckets().collect::<Vec<_>>()
        );
        assert_eq!(a.count(), 28);
    }

    #[test]
    fn sketch_extreme_magnitudes() {
        let mut s = DdSketch::new(1e-9);
        for v in [
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::MIN,
            -f64::MIN_POSITIVE,
        ] {
            s.insert(v);
        }
        assert!(s.is_collapsed(), "the span is far more than 4096 buckets");
        for q in [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0] {
            let got = s.quantile(q).unwrap_or(f64::NAN);
            assert!(got.is_finite(), "q={q} got={got}");
        }
        assert_eq!(s.quantile(0.0), Some(f64::MIN));
        assert_eq!(s.quantile(1.0), Some(f64::MAX));
        assert!(s.buckets().all(|(v, _)| v.is_finite()));
    }

    #[test]
    fn sketch_collapses_lowest_positive() {
        let alpha = 0.01;
        let mut s = DdSketch::with_max_buckets(alpha, 64);
        let mut values = Vec::new();
        let mut v = 1e-3;
        while v < 1e9 {
            values.push(v);
            v *= 1.013;
        }
        for &v in &values {
            s.insert(v);
        }
        assert!(s.is_collapsed());
        assert!(s.positive.counts.len() <= 64);
        assert_eq!(s.count(), values.len() as u64);
        assert_eq!(s.buckets().map(|b| b.1).sum::<u64>(), s.count());
        assert_eq!(s.quantile(0.0), Some(values[0]));
        // 64 buckets of gamma ~ 1.0202 cover a ratio of ~3.6: the top ~2% of
        // a geometric sequence over 12 decades.
        for ppm in [990_000, 999_000, 1_000_000] {
            let want = exact_rank(&values, ppm);
            let got = s.quantile(ppm as f64 / 1e6).unwrap_or(f64::NAN);
            assert!(
                rel_err(got, want) <= bound(alpha),
                "ppm={ppm} got={got} want={want}"
            );
        }
        // Low quantiles are folded into the lowest kept bucket.
        let low = s.quantile(0.1).unwrap_or(f64::NAN);
        assert!(low > 1e8, "collapsed low quantile {low}");
    }

    #[test]
    fn sketch_collapses_most_negative() {
        let alpha = 0.01;
        let mut s = DdSketch::with_max_buckets(alpha, 16);
        // -1 down to -11.
        let values: Vec<f64> = (0..10_000).map(|i| -1.0 - f64::from(i) * 1e-3).collect();
        for &v in &values {
            s.insert(v);
        }
        assert!(s.is_collapsed());
        assert!(s.negative.counts.len() <= 16);
        let values = sorted(values);
        // 16 buckets hold magnitudes up to 1.0202^16 ~ 1.37: the values
        // closest to zero, -1.37 to -1, which are the top ~3.7%.
        for ppm in [970_000, 990_000, 999_000, 1_000_000] {
            let want = exact_rank(&values, ppm);
            let got = s.quantile(ppm as f64 / 1e6).unwrap_or(f64::NAN);
            assert!(
                rel_err(got, want) <= bound(alpha),
                "ppm={ppm} got={got} want={want}"
            );
        }
        assert_eq!(s.quantile(0.0), Some(-10.999));
    }

    #[test]
    fn sketch_store_grows_both_ways() {
        let mut s = DdSketch::new(0.01);
        for v in [100.0, 1.0, 1e4, 0.01, 1e6] {
            s.insert(v);
        }
        assert!(!s.is_collapsed());
        let got: Vec<f64> = s.buckets().map(|b| b.0).collect();
        let want = [0.01, 1.0, 100.0, 1e4, 1e6];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(rel_err(*g, w) <= bound(0.01), "{g} vs {w}");
        }
    }

    #[test]
    fn sketch_merge() {
        let mut a = DdSketch::default();
        let mut b = DdSketch::default();
        let mut all = DdSketch::default();
        for i in 0..1000 {
            let v = f64::from(i) * 0.37 - 50.0;
            if i % 3 == 0 {
                a.insert(v);
            } else {
                b.insert(v);
            }
            all.insert(v);
        }
        assert!(a.merge(&b));
        assert_eq!(a.count(), all.count());
        assert_eq!(a.min(), all.min());
        assert_eq!(a.max(), all.max());
        assert_eq!(
            a.buckets().collect::<Vec<_>>(),
            all.buckets().collect::<Vec<_>>()
        );

        let mut empty = DdSketch::default();
        assert!(empty.merge(&all));
        assert_eq!(empty.quantile(0.5), all.quantile(0.5));
        assert!(empty.merge(&DdSketch::default()));
        assert_eq!(empty.count(), all.count());

        let mut other = DdSketch::new(0.01);
        other.insert(1.0);
        assert!(!a.merge(&other), "different accuracy");
        assert_eq!(a.count(), all.count());
    }

    #[test]
    fn sketch_merge_respects_bound() {
        let mut a = DdSketch::with_max_buckets(0.01, 32);
        let mut b = DdSketch::new(0.01);
        a.insert(1.0);
        for i in 0..1000 {
            b.insert(1.05f64.powi(i));
        }
        assert!(a.merge(&b));
        assert!(a.positive.counts.len() <= 32);
        assert!(a.is_collapsed());
        assert_eq!(a.count(), 1001);
    }

    #[test]
    fn samples_empty() {
        let mut s = Samples::default();
        assert_eq!(s.count(), 0);
        assert_eq!(s.sum(), 0.0);
        assert_eq!(s.sum_sq(), 0.0);
        assert_eq!(s.min(), None);
        assert_eq!(s.max(), None);
        assert_eq!(s.mean(), None);
        assert_eq!(s.stdev(), None);
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.below(90.0), None);
        assert_eq!(s.histogram(&[1.0, f64::INFINITY]), vec![0, 0]);
        assert!(s.is_exact());
    }

    #[test]
    fn samples_reject_non_finite() {
        let mut s = Samples::new(10);
        assert!(!s.insert(f64::NAN));
        assert!(!s.insert(f64::INFINITY));
        assert!(!s.insert(f64::NEG_INFINITY));
        assert!(s.insert(-0.0));
        assert_eq!(s.count(), 1);
        assert_eq!(s.min().map(f64::to_bits), Some(0.0f64.to_bits()));
    }

    #[test]
    fn samples_one_sample() {
        for cap in [0, 1, 10] {
            let mut s = Samples::new(cap);
            s.insert(7.5);
            assert_eq!(s.is_exact(), cap > 0);
            assert_eq!(s.count(), 1);
            assert_eq!(s.sum(), 7.5);
            assert_eq!(s.sum_sq(), 56.25);
            assert_eq!(s.mean(), Some(7.5));
            assert_eq!(s.stdev(), Some(0.0));
            assert_eq!(s.quantile(0.5), Some(7.5));
            let one = Some(Below {
                count: 1,
                sum: 7.5,
                sum_sq: 56.25,
                upper: 7.5,
            });
            // Etsy: a single sample is within every threshold.
            for pct in [90.0, 10.0, 1.0, 0.0, -10.0] {
                assert_eq!(s.below(pct), one, "cap={cap} pct={pct}");
            }
            assert_eq!(s.below(f64::NAN), None);
        }
    }

    #[test]
    fn samples_all_equal() {
        for cap in [0, 1000] {
            let mut s = Samples::new(cap);
            for _ in 0..100 {
                s.insert(0.1);
            }
            assert_eq!(s.stdev(), Some(0.0), "cap={cap}");
            for q in [0.0, 0.3, 0.5, 0.99, 1.0] {
                assert_eq!(s.quantile(q), Some(0.1));
            }
            let b = s.below(90.0).unwrap_or(Below {
                count: 0,
                sum: 0.0,
                sum_sq: 0.0,
                upper: 0.0,
            });
            assert_eq!((b.count, b.upper), (90, 0.1));
            assert!((b.sum - 9.0).abs() < 1e-12);
            assert_eq!(s.histogram(&[0.1, 0.2]), vec![0, 100]);
        }
    }

    #[test]
    fn samples_moments() {
        let mut s = Samples::new(100);
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            s.insert(v);
        }
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum(), 40.0);
        assert_eq!(s.sum_sq(), 232.0);
        assert_eq!(s.mean(), Some(5.0));
        assert_eq!(s.stdev(), Some(2.0), "population, not sample, deviation");
        assert_eq!(s.min(), Some(2.0));
        assert_eq!(s.max(), Some(9.0));
    }

    #[test]
    fn samples_stdev_is_stable() {
        let mut s = Samples::new(0);
        for i in 0..1000 {
            s.insert(1e9 + f64::from(i % 2));
        }
        let sd = s.stdev().unwrap_or(f64::NAN);
        assert!((sd - 0.5).abs() < 1e-9, "{sd}");
    }

    #[test]
    fn samples_exact_quantiles_nearest_rank() {
        let mut s = Samples::new(1000);
        // 1..=100 in a scrambled order.
        for i in 0..100u32 {
            s.insert(f64::from((i * 37) % 100 + 1));
        }
        assert!(s.is_exact());
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(0.005), Some(1.0));
        assert_eq!(s.quantile(0.07), Some(7.0));
        assert_eq!(s.quantile(0.071), Some(8.0));
        assert_eq!(s.quantile(0.5), Some(50.0));
        assert_eq!(s.quantile(0.9), Some(90.0));
        assert_eq!(s.quantile(0.999), Some(100.0));
        assert_eq!(s.quantile(1.0), Some(100.0));
        assert_eq!(s.quantile(-5.0), Some(1.0));
        assert_eq!(s.quantile(5.0), Some(100.0));
        assert_eq!(s.quantile(f64::NAN), None);
        // Inserting after a sort keeps the answers right.
        s.insert(0.5);
        assert_eq!(s.quantile(0.0), Some(0.5));
        assert_eq!(s.quantile(0.5), Some(50.0));
    }

    #[test]
    fn samples_below_like_etsy() {
        // Etsy's own test: timers [100, 200, 300] with thresholds 90 and 80.
        let mut s = Samples::new(10);
        for v in [300.0, 100.0, 200.0] {
            s.insert(v);
        }
        let b90 = s.below(90.0).map(|b| (b.count, b.mean(), b.upper));
        assert_eq!(b90, Some((3, 200.0, 300.0)));
        let b80 = s.below(80.0).map(|b| (b.count, b.mean(), b.upper));
        assert_eq!(b80, Some((2, 150.0, 200.0)));

        let mut s = Samples::new(100);
        for v in (1..=10).rev() {
            s.insert(f64::from(v));
        }
        let b = |s: &mut Samples, pct| s.below(pct).map(|b| (b.count, b.sum, b.sum_sq, b.upper));
        assert_eq!(b(&mut s, 90.0), Some((9, 45.0, 285.0, 9.0)));
        assert_eq!(b(&mut s, 50.0), Some((5, 15.0, 55.0, 5.0)));
        assert_eq!(b(&mut s, 25.0), Some((3, 6.0, 14.0, 3.0)), "2.5 rounds up");
        assert_eq!(b(&mut s, -25.0), Some((3, 27.0, 245.0, 8.0)));
        assert_eq!(b(&mut s, -10.0), Some((1, 10.0, 100.0, 10.0)));
        assert_eq!(b(&mut s, 100.0), Some((10, 55.0, 385.0, 10.0)));
        assert_eq!(b(&mut s, 150.0), Some((10, 55.0, 385.0, 10.0)));
        assert_eq!(b(&mut s, -100.0), Some((10, 55.0, 385.0, 1.0)));
        assert_eq!(b(&mut s, f64::INFINITY), Some((10, 55.0, 385.0, 10.0)));
        assert_eq!(b(&mut s, 4.0), None, "round(0.4) is 0");
        assert_eq!(b(&mut s, 0.0), None);
        assert_eq!(b(&mut s, -0.0), None);
    }

    #[test]
    fn samples_below_in_sketch_mode() {
        let mut exact = Samples::new(100_000);
        let mut sketch = Samples::new(10);
        for i in 0..5000u32 {
            let v = 1.0 + f64::from((i * 7919) % 5000) * 0.25;
            exact.insert(v);
            sketch.insert(v);
        }
        assert!(exact.is_exact() && !sketch.is_exact());
        for pct in [99.0, 90.0, 50.0, 10.0, -10.0, -50.0, 100.0, -100.0] {
            let (Some(e), Some(a)) = (exact.below(pct), sketch.below(pct)) else {
                panic!("pct={pct}: empty threshold");
            };
            assert_eq!(e.count, a.count, "pct={pct}");
            assert!(
                rel_err(a.sum, e.sum) <= bound(0.005),
                "pct={pct} {a:?} {e:?}"
            );
            assert!(
                rel_err(a.sum_sq, e.sum_sq) <= 2.0 * bound(0.005),
                "pct={pct}"
            );
            assert!(rel_err(a.upper, e.upper) <= bound(0.005), "pct={pct}");
        }
        let all = sketch.below(100.0);
        assert_eq!(all.map(|b| (b.sum, b.upper)), Some((sketch.sum(), 1250.75)));
    }

    #[test]
    fn samples_switch_to_sketch_at_cap() {
        let mut s = Samples::new(3);
        for v in [3.0, 1.0, 2.0] {
            s.insert(v);
        }
        assert!(s.is_exact(), "holds exactly exact_cap samples");
        assert_eq!(s.quantile(0.5), Some(2.0));
        s.insert(10.0);
        assert!(
            !s.is_exact(),
            "the sample over the cap moves all to the sketch"
        );
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum(), 16.0);
        assert_eq!(s.min(), Some(1.0));
        assert_eq!(s.max(), Some(10.0));
        let median = s.quantile(0.5).unwrap_or(f64::NAN);
        assert!(rel_err(median, 2.0) <= bound(0.005), "{median}");
        assert_eq!(s.quantile(1.0), Some(10.0));

        let mut zero = Samples::new(0);
        zero.insert(1.0);
        assert!(!zero.is_exact());

        s.clear();
        assert!(s.is_exact());
        assert_eq!(s.count(), 0);
        assert_eq!(s.quantile(0.5), None);
        s.insert(5.0);
        assert_eq!((s.sum(), s.stdev()), (5.0, Some(0.0)));
    }

    #[test]
    fn samples_histogram() {
        for cap in [0, 100] {
            let mut s = Samples::new(cap);
            for v in [13.0, 1.0, 8.0, 2.0, 3.0, 5.0, -4.0] {
                s.insert(v);
            }
            let h = |s: &mut Samples, bins: &[f64]| s.histogram(bins);
            assert_eq!(
                h(&mut s, &[2.5, 5.5, 10.0, f64::INFINITY]),
                vec![3, 2, 1, 1],
                "cap={cap}"
            );
            assert_eq!(
                h(&mut s, &[2.5, 5.5, 10.0]),
                vec![3, 2, 1],
                "over the last bound: dropped"
            );
            assert_eq!(
                h(&mut s, &[5.5, 3.5, 10.0]),
                vec![5, 0, 1],
                "not ascending: Etsy sweep"
            );
            // A sample equal to a bound goes to the next bin, in both modes.
            assert_eq!(
                h(&mut s, &[2.0, 5.0, 13.0, 14.0]),
                vec![2, 2, 2, 1],
                "cap={cap}"
            );
            assert_eq!(h(&mut s, &[-4.0, 1.0, 1.5]), vec![0, 1, 1], "cap={cap}");
            assert_eq!(h(&mut s, &[f64::NAN, 100.0]), vec![0, 7]);
            assert_eq!(h(&mut s, &[]), Vec::<u64>::new());
            assert_eq!(h(&mut s, &[f64::INFINITY]), vec![7]);
            assert_eq!(h(&mut s, &[-100.0]), vec![0]);
        }
    }

    /// Zeros and finite values of either sign with magnitudes from 1e-8 to
    /// 1e9: a span of about 3900 buckets at alpha 0.005, under the bound.
    fn moderate() -> impl Strategy<Value = f64> {
        prop_oneof![
            (1.0f64..10.0, -8i32..9, any::<bool>()).prop_map(|(m, e, negative)| {
                let v = m * 10f64.powi(e);
                if negative { -v } else { v }
            }),
            Just(0.0),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_any_f64(values in prop::collection::vec(any::<f64>(), 0..200),
                                   qs in prop::collection::vec(any::<f64>(), 0..8),
                                   cap in 0usize..50) {
            let mut s = Samples::new(cap);
            let mut d = DdSketch::with_max_buckets(0.01, 8);
            let mut finite = 0;
            for &v in &values {
                prop_assert_eq!(s.insert(v), v.is_finite());
                d.insert(v);
                finite += u64::from(v.is_finite());
            }
            prop_assert_eq!(s.count(), finite);
            prop_assert_eq!(d.count(), finite);
            for &q in &qs {
                let _ = s.quantile(q);
                let _ = d.quantile(q);
                let _ = s.below(q);
            }
            let _ = s.histogram(&qs);
            let _ = s.stdev();
            prop_assert_eq!(d.buckets().map(|b| b.1).sum::<u64>(), finite);
        }

        #[test]
        fn sketch_quantiles_within_alpha(values in prop::collection::vec(moderate(), 1..300),
                                         alpha in prop_oneof![Just(0.005), Just(0.05)]) {
            let mut s = DdSketch::new(alpha);
            for &v in &values {
                s.insert(v);
            }
            let values = sorted(values);
            for ppm in QS {
                let want = exact_rank(&values, ppm);
                let got = s.quantile(ppm as f64 / 1e6).unwrap_or(f64::NAN);
                prop_assert!(rel_err(got, want) <= bound(alpha), "ppm={ppm} got={got} want={want}");
            }
        }

        #[test]
        fn exact_samples_match_sorting(values in prop::collection::vec(-1e6f64..1e6, 1..200),
                                       ppm in 0u64..=1_000_000) {
            let mut s = Samples::new(1000);
            for &v in &values {
                s.insert(v);
            }
            let values = sorted(values);
            prop_assert_eq!(s.quantile(ppm as f64 / 1e6), Some(exact_rank(&values, ppm)));
        }
    }
}
