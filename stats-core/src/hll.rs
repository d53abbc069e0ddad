//! Set members: exact up to a cap, then HyperLogLog (precision 12) over a fixed 64-bit hash.
//!
//! [`Uniques`] is what the aggregator keeps for one set key over one flush
//! interval: the [`hash64`] of each member in a `HashSet` up to a small cap,
//! then a [`HyperLogLog`] fed with those hashes and every later one.
//!
//! ```text
//!  member ──► hash64 (XXH64, seed 0) ──► len < cap ? ──yes──► HashSet<u64>
//!                                            │no
//!                                            ▼
//!                              HyperLogLog, 4096 registers (~1.6% error)
//! ```

use std::collections::HashSet;
use std::fmt;

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// One XXH64 accumulator round over an 8-byte lane.
fn xxh_round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

/// Folds one of the four stripe accumulators into the hash.
fn xxh_merge(hash: u64, acc: u64) -> u64 {
    (hash ^ xxh_round(0, acc)).wrapping_mul(P1).wrapping_add(P4)
}

/// The 64-bit hash of set members: XXH64 with seed 0.
///
/// This is the published XXH64 algorithm (Yann Collet's xxHash
/// specification), implemented here: the value for given bytes is fixed
/// forever and the same on every platform, and equals what any other XXH64
/// implementation returns with seed 0 (`xxhash.xxh64(b).intdigest()` in
/// Python, `XXH64(b, len, 0)` in C). It is fast and well mixed, not
/// cryptographic: do not use it where an adversary chooses the input and
/// collisions matter.
///
/// ```
/// assert_eq!(stats_core::hash64(b""), 0xEF46_DB37_51D8_E999);
/// assert_eq!(stats_core::hash64(b"abc"), 0x44BC_2CF5_AD77_0999);
/// ```
pub fn hash64(bytes: &[u8]) -> u64 {
    let (stripes, mut tail) = bytes.as_chunks::<32>();
    let mut hash = if stripes.is_empty() {
        P5
    } else {
        let mut acc = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        for stripe in stripes {
            for (a, lane) in acc.iter_mut().zip(stripe.as_chunks::<8>().0) {
                *a = xxh_round(*a, u64::from_le_bytes(*lane));
            }
        }
        let [a1, a2, a3, a4] = acc;
        let mut hash = a1
            .rotate_left(1)
            .wrapping_add(a2.rotate_left(7))
            .wrapping_add(a3.rotate_left(12))
            .wrapping_add(a4.rotate_left(18));
        for a in acc {
            hash = xxh_merge(hash, a);
        }
        hash
    };
    hash = hash.wrapping_add(bytes.len() as u64);
    while let Some((lane, rest)) = tail.split_first_chunk::<8>() {
        hash = (hash ^ xxh_round(0, u64::from_le_bytes(*lane)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
        tail = rest;
    }
    if let Some((word, rest)) = tail.split_first_chunk::<4>() {
        hash = (hash ^ u64::from(u32::from_le_bytes(*word)).wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        tail = rest;
    }
    for &byte in tail {
        hash = (hash ^ u64::from(byte).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(P2);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(P3);
    hash ^ (hash >> 32)
}

/// A HyperLogLog cardinality sketch with precision 12: 4096 one-byte
/// registers, a standard error of about `1.04 / sqrt(4096)` ≈ 1.6%.
///
/// A 64-bit hash `h` selects register `h >> 52` (its top 12 bits) and
/// offers it `ρ` = 1 + the number of leading zeros of the other 52 bits
/// (at most 53); the register keeps the largest `ρ` seen.
///
/// [`estimate`](Self::estimate) is the estimator of Flajolet, Fusy, Gandouet
/// and Meunier (2007), "HyperLogLog: the analysis of a near-optimal
/// cardinality estimation algorithm":
///
/// * raw `E = α·m² / Σ 2^(−M[j])` with `m = 4096` and
///   `α = 0.7213 / (1 + 1.079 / m)`;
/// * if `E ≤ 2.5·m` and `V > 0` registers are zero, linear counting
///   `m · ln(m / V)` instead;
/// * no large-range correction: with 64-bit hashes there is nothing to
///   correct at any reachable cardinality (as in HyperLogLog++, Heule et al.
///   2013, whose empirical bias correction is not implemented here).
///
/// ```
/// use stats_core::{HyperLogLog, hash64};
///
/// let mut hll = HyperLogLog::new();
/// for i in 0..1000u32 {
///     hll.insert(&i.to_le_bytes());
/// }
/// assert!((hll.estimate() - 1000.0).abs() < 50.0);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HyperLogLog {
    registers: Box<[u8]>,
}

impl HyperLogLog {
    /// Number of index bits: `2^12 = 4096` registers.
    pub const PRECISION: u32 = 12;
    /// Number of registers.
    const REGISTERS: usize = 1 << Self::PRECISION;

    /// An empty sketch (estimate 0).
    pub fn new() -> Self {
        Self {
            registers: vec![0; Self::REGISTERS].into_boxed_slice(),
        }
    }

    /// Adds the member `bytes`, hashed with [`hash64`]. Returns whether a
    /// register changed: `true` means the member was certainly not seen
    /// before, `false` that it may have been.
    pub fn insert(&mut self, bytes: &[u8]) -> bool {
        self.insert_hash(hash64(bytes))
    }

    /// Adds a member by its 64-bit hash (which must be well mixed, such as
    /// [`hash64`]). Returns whether a register changed.
    pub fn insert_hash(&mut self, hash: u64) -> bool {
        let index = (hash >> (64 - Self::PRECISION)) as usize;
        let rest = hash << Self::PRECISION;
        let rho = rest.leading_zeros().min(64 - Self::PRECISION) + 1;
        match self.registers.get_mut(index) {
            Some(register) if u32::from(*register) < rho => {
                *register = rho as u8;
                true
            }
            _ => false,
        }
    }

    /// The estimated number of distinct members (see the type's docs for
    /// the exact estimator). 0 when empty; never NaN or negative.
    pub fn estimate(&self) -> f64 {
        let m = Self::REGISTERS as f64;
        let mut inverse_sum = 0.0;
        let mut zeros = 0u32;
        for &register in self.registers.iter() {
            inverse_sum += 0.5f64.powi(i32::from(register));
            zeros += u32::from(register == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / inverse_sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        }
    }

    /// Adds every member of `other`: afterwards `self` is the sketch of the
    /// union (register-wise maximum). Always compatible (fixed precision).
    pub fn merge(&mut self, other: &HyperLogLog) {
        for (mine, &theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(theirs);
        }
    }
}

impl Default for HyperLogLog {
    /// [`HyperLogLog::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HyperLogLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperLogLog")
            .field("precision", &Self::PRECISION)
            .field("estimate", &self.estimate())
            .finish_non_exhaustive()
    }
}

/// Where [`Uniques`] keeps its members.
#[derive(Debug, Clone)]
enum Mode {
    /// The hash of every member.
    Exact(HashSet<u64>),
    /// Past the cap.
    Sketch(HyperLogLog),
}

/// The distinct members of one statsd set key over one flush interval.
///
/// Members are identified by their [`hash64`]: two members with the same
/// hash count once (for `n` members, a collision has probability about
/// `n² / 2^65`). Up to `exact_cap` hashes are kept in a `HashSet` and
/// counted exactly; the new member that would go over the cap moves them all
/// into a [`HyperLogLog`], which takes every later member (for the rest of
/// the interval, or until [`clear`](Self::clear)).
///
/// ```
/// use stats_core::Uniques;
///
/// let mut users = Uniques::new(Uniques::DEFAULT_EXACT_CAP);
/// assert!(users.insert(b"alice"));
/// assert!(users.insert(b"bob"));
/// assert!(!users.insert(b"alice"));
/// assert_eq!(users.count(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Uniques {
    exact_cap: usize,
    mode: Mode,
}

impl Uniques {
    /// A sensible default for `exact_cap`: 1024 members (about 16 KB of
    /// hash set), the size where the 4 KB HyperLogLog is still very
    /// accurate (it uses linear counting there).
    pub const DEFAULT_EXACT_CAP: usize = 1024;

    /// An empty set counted exactly up to `exact_cap` distinct members,
    /// then estimated. `exact_cap == 0` means a HyperLogLog from the first
    /// member on.
    pub fn new(exact_cap: usize) -> Self {
        Self {
            exact_cap,
            mode: Mode::Exact(HashSet::new()),
        }
    }

    /// Adds a member and says whether it was new.
    ///
    /// In exact mode the answer is exact (the member that moves the set to
    /// the HyperLogLog counts as new). In HyperLogLog mode `true` means a
    /// register changed, so the member was certainly new, and `false` means
    /// it may have been seen: most new members give `false` once the set is
    /// large.
    pub fn insert(&mut self, member: &[u8]) -> bool {
        let hash = hash64(member);
        match &mut self.mode {
            Mode::Exact(set) if set.contains(&hash) => false,
            Mode::Exact(set) if set.len() < self.exact_cap => set.insert(hash),
            Mode::Exact(set) => {
                let mut hll = HyperLogLog::new();
                for &h in set.iter() {
                    hll.insert_hash(h);
                }
                hll.insert_hash(hash);
                self.mode = Mode::Sketch(hll);
                true
            }
            Mode::Sketch(hll) => hll.insert_hash(hash),
        }
    }

    /// The number of distinct members: exact in exact mode, the HyperLogLog
    /// estimate rounded to the nearest integer after.
    pub fn count(&self) -> u64 {
        match &self.mode {
            Mode::Exact(set) => set.len() as u64,
            // `as` saturates; the estimate is finite and non-negative.
            Mode::Sketch(hll) => hll.estimate().round() as u64,
        }
    }

    /// Whether the members are still counted exactly (at most `exact_cap`
    /// distinct ones so far).
    pub fn is_exact(&self) -> bool {
        matches!(self.mode, Mode::Exact(_))
    }

    /// Forgets every member and goes back to exact mode (keeping the cap
    /// and, if still exact, the allocation).
    pub fn clear(&mut self) {
        match &mut self.mode {
            Mode::Exact(set) => set.clear(),
            Mode::Sketch(_) => self.mode = Mode::Exact(HashSet::new()),
        }
    }
}

impl Default for Uniques {
    /// [`Uniques::new`] with [`DEFAULT_EXACT_CAP`](Uniques::DEFAULT_EXACT_CAP).
    fn default() -> Self {
        Self::new(Self::DEFAULT_EXACT_CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `xxhash.xxh64(buf[:n], seed=0).intdigest()` from Python's `xxhash`
    /// 3.x, where `buf[k] = (31 * k + 17) % 256`.
    const VECTORS: [(usize, u64); 46] = [
        (0, 0xEF46DB3751D8E999),
        (1, 0xAD10CD9780AC4FF7),
        (2, 0x1474BF556EB3C02F),
        (3, 0x647841B2CB59B37B),
        (4, 0x7EB3FD11E6BB5199),
        (5, 0x179616C7BF94EABD),
        (6, 0x89FC3EF95F6849D0),
        (7, 0xB86A7EA48DB0A7D9),
        (8, 0x54F3DCF28BADCB29),
        (9, 0x95C551D7C07A014F),
        (10, 0xE03BE5BFC977371B),
        (11, 0x5CD32C51B477F9FC),
        (12, 0xA6E55A6D4EB4554B),
        (13, 0x45EE7528CA0E2E10),
        (14, 0xCBB5D080AB0FFBE2),
        (15, 0x737577DD6BFE6953),
        (16, 0xF2907725ACE3449E),
        (17, 0x8E9CB8FE3E9B9BA1),
        (18, 0xDFF93D6EE83CD21A),
        (19, 0xFF63871BE8C9E1B3),
        (20, 0x2E529D0D3ACDDE5A),
        (21, 0x27DCA64C109FB747),
        (22, 0xE033EDDA7DACEBAF),
        (23, 0x741EFD6779D2560C),
        (24, 0x899861B143A649CB),
        (25, 0x9FB728A56822A841),
        (26, 0x723FAD66812D1501),
        (27, 0x9C03355702B1683B),
        (28, 0xE271767328EFDA0C),
        (29, 0x65004B26069C3070),
        (30, 0xB814131B46286578),
        (31, 0xDEF11A149FD0A622),
        (32, 0xF4B4A521D06D7ECE),
        (33, 0x13CC087AB6A8C567),
        (34, 0xE76AA8E6EE7D6171),
        (35, 0x7CE455B122599AE8),
        (36, 0x4793A9562E3DB734),
        (37, 0x3ABC44F57C0433BB),
        (38, 0xCBC1376F23A52200),
        (39, 0xBF8E6E86A47004B8),
        (40, 0x007E78D239BFFF71),
        (63, 0x9BA876B5FAB23BEC),
        (64, 0xE0D1E30E36173940),
        (65, 0x8F1BBB41831C3C18),
        (100, 0x78FE464B2559D761),
        (1000, 0x484C5C5BEE6653FB),
    ];

    #[test]
    fn xxh64_known_strings() {
        // Also checked against Python's xxhash.xxh64(s).intdigest().
        let known: [(&[u8], u64); 6] = [
            (b"", 0xEF46DB3751D8E999),
            (b"a", 0xD24EC4F1A98C6E5B),
            (b"abc", 0x44BC2CF5AD770999),
            (b"message digest", 0x066ED728FCEEB3BE),
            (b"abcdefghijklmnopqrstuvwxyz", 0xCFE1F278FA89835C),
            (
                b"The quick brown fox jumps over the lazy dog",
                0x0B242D361FDA71BC,
            ),
        ];
        for (input, want) in known {
            assert_eq!(hash64(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn xxh64_every_length_path() {
        let buf: Vec<u8> = (0..1024u32).map(|k| ((31 * k + 17) % 256) as u8).collect();
        for (n, want) in VECTORS {
            assert_eq!(hash64(&buf[..n]), want, "length {n}");
        }
    }

    /// Distinct well-mixed hashes without hashing: splitmix64 of a counter.
    fn mixed(i: u64) -> u64 {
        let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn hll_empty_and_small() {
        let mut hll = HyperLogLog::default();
        assert_eq!(hll.estimate(), 0.0);
        assert!(hll.insert(b"x"));
        assert!(!hll.insert(b"x"), "same member: no register changes");
        // Linear counting: 4096 ln(4096 / 4095).
        assert!(
            (hll.estimate() - 1.000_122).abs() < 1e-6,
            "{}",
            hll.estimate()
        );
        for i in 0..100 {
            hll.insert_hash(mixed(i));
        }
        let e = hll.estimate();
        assert!((e - 101.0).abs() <= 3.0, "{e}");
    }

    #[test]
    fn hll_register_extremes() {
        let mut hll = HyperLogLog::new();
        assert!(hll.insert_hash(0));
        assert_eq!(hll.registers[0], 53);
        assert!(hll.insert_hash(u64::MAX));
        assert_eq!(hll.registers[4095], 1);
        assert!(!hll.insert_hash(1));
        assert_eq!(
            hll.registers[0], 53,
            "1 has 51 leading zeros past the index: rho 52"
        );
        let mut full = HyperLogLog::new();
        for i in 0..4096u64 {
            full.insert_hash(i << 52);
        }
        let e = full.estimate();
        assert!(e.is_finite() && e > 0.0, "{e}");
    }

    #[test]
    fn hll_merge_is_union() {
        let mut a = HyperLogLog::new();
        let mut b = HyperLogLog::new();
        let mut all = HyperLogLog::new();
        for i in 0..20_000 {
            if i % 3 == 0 {
                a.insert_hash(mixed(i));
            } else {
                b.insert_hash(mixed(i));
            }
            all.insert_hash(mixed(i));
        }
        a.merge(&b);
        assert_eq!(a, all);
        let before = a.clone();
        a.merge(&before);
        assert_eq!(a, all, "merge is idempotent");
        let e = a.estimate();
        assert!((e / 20_000.0 - 1.0).abs() < 0.06, "{e}");
        assert!(format!("{a:?}").starts_with("HyperLogLog"));
    }

    #[test]
    fn uniques_exact() {
        let mut u = Uniques::new(10);
        assert_eq!(u.count(), 0);
        assert!(u.insert(b"a"));
        assert!(u.insert(b""));
        assert!(!u.insert(b"a"));
        assert_eq!(u.count(), 2);
        assert!(u.is_exact());
    }

    #[test]
    fn uniques_switch_at_cap() {
        let mut u = Uniques::new(4);
        for m in [&b"a"[..], b"b", b"c", b"d"] {
            assert!(u.insert(m));
        }
        assert!(u.is_exact(), "holds exactly exact_cap members");
        assert!(!u.insert(b"d"), "a duplicate at the cap does not switch");
        assert!(u.is_exact());
        assert!(u.insert(b"e"), "the member over the cap counts as new");
        assert!(!u.is_exact());
        assert_eq!(u.count(), 5);
        assert!(!u.insert(b"a"), "seen members change no register");
        assert_eq!(u.count(), 5);

        u.clear();
        assert!(u.is_exact());
        assert_eq!(u.count(), 0);

        let mut zero = Uniques::new(0);
        assert!(zero.insert(b"x"));
        assert!(!zero.is_exact());
        assert_eq!(zero.count(), 1);
    }

    #[test]
    fn uniques_estimate_after_switch() {
        let mut u = Uniques::default();
        for i in 0..5000u32 {
            u.insert(format!("member-{i}").as_bytes());
        }
        assert!(!u.is_exact());
        let c = u.count() as f64;
        assert!((c / 5000.0 - 1.0).abs() < 0.05, "{c}");
    }
}
