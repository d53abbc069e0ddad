//! Accuracy oracle: timer quantiles against sorting, set counts against known cardinalities.

use stats_core::{Samples, Uniques};

/// splitmix64: a small deterministic generator, so runs are reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in the open interval (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller, one of the pair).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The splitmix64 finaliser: a bijection on u64, so distinct inputs give
/// distinct outputs.
fn mix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

type Distribution = (&'static str, fn(&mut SplitMix) -> f64);

/// Skewed timer-like distributions, and one centred on zero.
const DISTRIBUTIONS: [Distribution; 6] = [
    ("lognormal sigma 1", |r| r.normal().exp()),
    ("lognormal sigma 2", |r| (2.0 * r.normal()).exp()),
    ("pareto alpha 1.5", |r| r.uniform().powf(-1.0 / 1.5)),
    ("exponential mean 100", |r| -100.0 * r.uniform().ln()),
    ("bimodal 20 / 900", |r| {
        if r.uniform() < 0.8 {
            20.0 * (0.25 * r.normal()).exp()
        } else {
            900.0 * (0.4 * r.normal()).exp()
        }
    }),
    ("normal mean 0 sd 50", |r| 50.0 * r.normal()),
];

/// Quantiles checked, in parts per million: p50 p75 p90 p95 p99 p99.9.
const QUANTILES_PPM: [u64; 6] = [500_000, 750_000, 900_000, 950_000, 990_000, 999_000];

/// Exact nearest-rank quantile by integer arithmetic: rank ceil(ppm * n / 10^6).
fn nearest_rank(sorted: &[f64], ppm: u64) -> f64 {
    let n = sorted.len() as u64;
    let k = (ppm * n).div_ceil(1_000_000).clamp(1, n);
    sorted[(k - 1) as usize]
}

fn rel_err(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

/// Sorts finite values ascending: an LSD radix sort (four 16-bit digits)
/// of order-preserving keys, many times faster than a comparison sort in a
/// debug build. The caller checks the result is sorted.
fn radix_sort(values: &[f64]) -> Vec<f64> {
    // Positive: set the sign bit; negative: flip every bit.
    let key = |v: f64| {
        let b = v.to_bits();
        if b >> 63 == 1 { !b } else { b | 1 << 63 }
    };
    let mut keys: Vec<u64> = values.iter().map(|&v| key(v)).collect();
    let mut scratch = vec![0u64; keys.len()];
    for shift in [0, 16, 32, 48] {
        let digit = |k: u64| (k >> shift) as usize & 0xFFFF;
        let mut starts = vec![0usize; 1 << 16];
        for &k in &keys {
            starts[digit(k)] += 1;
        }
        let mut total = 0;
        for start in &mut starts {
            let count = *start;
            *start = total;
            total += count;
        }
        for &k in &keys {
            let d = digit(k);
            scratch[starts[d]] = k;
            starts[d] += 1;
        }
        std::mem::swap(&mut keys, &mut scratch);
    }
    keys.into_iter()
        .map(|k| f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k }))
        .collect()
}

fn sample(dist: fn(&mut SplitMix) -> f64, seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    (0..n).map(|_| dist(&mut rng)).collect()
}

/// Etsy's `numInThreshold` for an integer percentage: round(pct * n / 100),
/// halves up, in integers.
fn etsy_num(pct: u64, n: usize) -> usize {
    (pct as usize * n * 2 + 100) / 200
}

#[test]
fn sketch_quantiles_within_one_percent_of_nearest_rank() {
    const N: usize = 1_000_000;
    let mut worst = Vec::new();
    for (seed, (name, dist)) in DISTRIBUTIONS.into_iter().enumerate() {
        let values = sample(dist, 0x5EED + seed as u64, N);
        let mut samples = Samples::new(1000);
        for &v in &values {
            assert!(samples.insert(v));
        }
        assert!(!samples.is_exact(), "{name}: the sketch is in use");
        let sorted = radix_sort(&values);
        assert_eq!(sorted.len(), N);
        assert!(
            sorted.windows(2).all(|w| w[0] <= w[1]),
            "{name}: radix sort"
        );

        let mut max_err: f64 = 0.0;
        for ppm in QUANTILES_PPM {
            let want = nearest_rank(&sorted, ppm);
            let got = samples.quantile(ppm as f64 / 1e6).unwrap_or(f64::NAN);
            let err = rel_err(got, want);
            assert!(
                err <= 0.01,
                "{name}: p{} = {got}, exact {want}, relative error {err:.5}",
                ppm as f64 / 1e4
            );
            max_err = max_err.max(err);
        }
        assert_eq!(
            samples.quantile(0.0),
            sorted.first().copied(),
            "{name}: min"
        );
        assert_eq!(samples.quantile(1.0), sorted.last().copied(), "{name}: max");

        // Etsy's *_90 and *_top10 figures from the buckets.
        for pct in [90.0f64, 50.0, -10.0] {
            let num = etsy_num(pct.abs() as u64, N);
            let part = if pct > 0.0 {
                &sorted[..num]
            } else {
                &sorted[N - num..]
            };
            let want_upper = if pct > 0.0 { part[num - 1] } else { part[0] };
            let want_sum: f64 = part.iter().sum();
            let abs_sum: f64 = part.iter().map(|v| v.abs()).sum();
            let got = samples.below(pct);
            let Some(got) = got else {
                panic!("{name}: below({pct}) is None");
            };
            assert_eq!(got.count, num as u64, "{name}: below({pct}) count");
            let sum_err = (got.sum - want_sum).abs() / abs_sum;
            assert!(
                sum_err <= 0.01,
                "{name}: below({pct}) sum error {sum_err:.5}"
            );
            let upper_err = rel_err(got.upper, want_upper);
            assert!(
                upper_err <= 0.01,
                "{name}: below({pct}) upper error {upper_err:.5}"
            );
        }

        // Histogram bins at quantiles: a sample can only change bin when it
        // lies within 1% of a bound.
        let bounds: Vec<f64> = [100_000, 500_000, 900_000, 990_000]
            .iter()
            .map(|&ppm| nearest_rank(&sorted, ppm) * 1.000_1)
            .chain([f64::INFINITY])
            .collect();
        let got = samples.histogram(&bounds);
        let below = |b: f64| sorted.partition_point(|&v| v < b) as i64;
        let mut cumulative = 0i64;
        for (j, &b) in bounds.iter().enumerate() {
            cumulative += got[j] as i64;
            if b.is_infinite() {
                assert_eq!(cumulative, N as i64, "{name}: the inf bin takes the rest");
                continue;
            }
            let exact = below(b);
            let near = below(b + 0.01 * b.abs()) - below(b - 0.01 * b.abs());
            assert!(
                (cumulative - exact).abs() <= near,
                "{name}: bin {j} (< {b}) cumulative {cumulative}, exact {exact}, {near} near"
            );
        }
        worst.push((name, max_err));
    }
    assert!(worst.iter().all(|&(_, e)| e <= 0.01), "{worst:?}");
}

#[test]
fn exact_mode_is_exactly_nearest_rank() {
    const N: usize = 20_000;
    for (seed, (name, dist)) in DISTRIBUTIONS.into_iter().enumerate() {
        let values = sample(dist, 0xE7AC7 + seed as u64, N);
        let mut samples = Samples::new(N);
        for &v in &values {
            samples.insert(v);
        }
        assert!(
            samples.is_exact(),
            "{name}: exactly at the cap is still exact"
        );
        let mut sorted = values;
        sorted.sort_unstable_by(f64::total_cmp);
        let mut rng = SplitMix(seed as u64);
        let random = (0..200).map(|_| rng.next_u64() % 1_000_001);
        for ppm in QUANTILES_PPM
            .into_iter()
            .chain([0, 1, 50, 999_999, 1_000_000])
            .chain(random)
        {
            let got = samples.quantile(ppm as f64 / 1e6);
            assert_eq!(got, Some(nearest_rank(&sorted, ppm)), "{name}: ppm {ppm}");
        }
        for pct in [90u64, 95, 99, 50, 1] {
            let num = etsy_num(pct, N);
            let got = samples.below(pct as f64).map(|b| (b.count, b.upper));
            assert_eq!(
                got,
                Some((num as u64, sorted[num - 1])),
                "{name}: below({pct})"
            );
        }
    }
}

/// Member `i` of run `seed`: 8 distinct bytes per (seed, i).
fn member(seed: u64, i: u64) -> [u8; 8] {
    mix(seed << 40 | i).to_le_bytes()
}

/// Counts `n` distinct members of run `seed` with a small exact cap.
fn count_distinct(seed: u64, n: u64) -> u64 {
    let mut set = Uniques::new(64);
    for i in 0..n {
        set.insert(&member(seed, i));
    }
    assert!(n <= 64 || !set.is_exact());
    set.count()
}

#[test]
fn hll_rmse_over_20_seeds() {
    const N: u64 = 100_000;
    let errors: Vec<f64> = (1..=20)
        .map(|seed| count_distinct(seed, N) as f64 / N as f64 - 1.0)
        .collect();
    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
    let bias = errors.iter().sum::<f64>() / errors.len() as f64;
    assert!(
        rmse <= 0.025,
        "RMSE {rmse:.5} over 20 seeds of {N}; errors {errors:?}"
    );
    assert!(
        bias.abs() <= 0.015,
        "mean relative error {bias:.5}; errors {errors:?}"
    );
}

#[test]
fn hll_across_cardinalities() {
    // Standard error is ~1.1% under linear counting (n <= 10240) and 1.04 /
    // 64 = 1.6% above: the bounds are about four of those.
    let cases: [(u64, f64); 10] = [
        (10, 0.0),
        (100, 0.03),
        (1_000, 0.05),
        (5_000, 0.05),
        (10_000, 0.065),
        (12_000, 0.065),
        (20_000, 0.065),
        (50_000, 0.065),
        (200_000, 0.065),
        (1_000_000, 0.065),
    ];
    for (n, bound) in cases {
        let seeds = if n >= 200_000 { 1 } else { 4 };
        for seed in 100..100 + seeds {
            let got = count_distinct(seed, n);
            let err = (got as f64 / n as f64 - 1.0).abs();
            assert!(
                err <= bound,
                "n {n} seed {seed}: counted {got}, relative error {err:.5} > {bound}"
            );
        }
    }

    // Members as the text a statsd client sends.
    let mut set = Uniques::new(Uniques::DEFAULT_EXACT_CAP);
    for i in 0..30_000 {
        set.insert(format!("user-{i}").as_bytes());
    }
    let err = (set.count() as f64 / 30_000.0 - 1.0).abs();
    assert!(
        err <= 0.065,
        "user-N members: counted {}, relative error {err:.5}",
        set.count()
    );
}

#[test]
fn uniques_exact_mode_counts_exactly() {
    let mut set = Uniques::new(Uniques::DEFAULT_EXACT_CAP);
    let mut new = 0;
    for round in 0..3 {
        for i in 0..Uniques::DEFAULT_EXACT_CAP as u64 {
            new += u64::from(set.insert(&member(7, i)));
        }
        assert!(set.is_exact(), "round {round}");
        assert_eq!(set.count(), Uniques::DEFAULT_EXACT_CAP as u64);
    }
    assert_eq!(new, Uniques::DEFAULT_EXACT_CAP as u64);
}
