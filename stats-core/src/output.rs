//! What a flush produces: named points, and renderers for graphite plaintext, graphite pickle and statsite's stream format.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sketch::{Samples, sorted_sums};

/// Which original's output names and semantics to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// statsite: `counts.<k>`, `timers.<k>.p95`, `gauges.<k>`, `sets.<k>`, `kv.<k>`;
    /// numbers printed as C's `%f`.
    Statsite,
    /// Etsy statsd's graphite backend with `legacyNamespace: false`:
    /// `stats.counters.<k>.rate`, `stats.timers.<k>.mean_90`, ...; numbers
    /// printed as JavaScript prints them. [`Config::legacy_namespace`]
    /// gives Etsy's default `legacyNamespace: true` names instead.
    ///
    /// [`Config::legacy_namespace`]: crate::Config::legacy_namespace
    Etsy,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "statsite" => Ok(Mode::Statsite),
            "etsy" => Ok(Mode::Etsy),
            other => Err(format!("unknown mode {other:?} (statsite or etsy)")),
        }
    }
}

/// One graphite data point of a flush.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The dotted metric path.
    pub path: String,
    /// The value.
    pub value: f64,
    /// Whether the value is a count, printed without decimals in statsite mode.
    pub count: bool,
}

impl From<(String, f64, bool)> for Point {
    fn from((path, value, count): (String, f64, bool)) -> Point {
        Point { path, value, count }
    }
}

/// Everything one flush sends: points stamped with one timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Flush {
    mode: Mode,
    timestamp: u64,
    points: Vec<Point>,
}

impl Flush {
    /// A flush of these points.
    pub fn new(mode: Mode, timestamp: u64, points: Vec<Point>) -> Flush {
        Flush {
            mode,
            timestamp,
            points,
        }
    }

    /// The flush time, in Unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The points, in the order they are sent.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// The value of the point at `path`, if there is one.
    pub fn get(&self, path: &str) -> Option<f64> {
        self.points.iter().find(|p| p.path == path).map(|p| p.value)
    }

    /// Graphite's plaintext protocol: `path value timestamp\n` per point.
    pub fn plaintext(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.points.len() * 48);
        // The same for every point: formatted once.
        let end = format!(" {}\n", self.timestamp);
        for p in &self.points {
            out.put_slice(p.path.as_bytes());
            out.put_u8(b' ');
            self.number(&mut out, p);
            out.put_slice(end.as_bytes());
        }
        out.freeze()
    }

    /// statsite's stream format, as its sink scripts read it on stdin:
    /// `key|value|timestamp\n` per point.
    pub fn stream(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.points.len() * 48);
        let end = format!("|{}\n", self.timestamp);
        for p in &self.points {
            out.put_slice(p.path.as_bytes());
            out.put_u8(b'|');
            self.number(&mut out, p);
            out.put_slice(end.as_bytes());
        }
        out.freeze()
    }

    /// Graphite's pickle protocol: messages of at most
    /// [`Flush::PICKLE_BATCH`] points, each a 4-byte big-endian length and a
    /// pickle (protocol 2) of a list of `(path, (timestamp, value))` tuples.
    pub fn pickle(&self) -> Bytes {
        let mut out = BytesMut::new();
        for batch in self.points.chunks(Self::PICKLE_BATCH) {
            let start = out.len();
            out.put_u32(0);
            out.put_slice(b"\x80\x02]("); // PROTO 2, EMPTY_LIST, MARK
            for p in batch {
                out.put_u8(b'X'); // BINUNICODE: u32 little-endian length, UTF-8
                out.put_u32_le(p.path.len() as u32);
                out.put_slice(p.path.as_bytes());
                match i32::try_from(self.timestamp) {
                    Ok(ts) => {
                        out.put_u8(b'J'); // BININT
                        out.put_i32_le(ts);
                    }
                    Err(_) => {
                        out.put_slice(b"\x8a\x09"); // LONG1, 9 bytes: always positive
                        out.put_u64_le(self.timestamp);
                        out.put_u8(0);
                    }
                }
                out.put_u8(b'G'); // BINFLOAT, big-endian
                out.put_f64(p.value);
                out.put_slice(b"\x86\x86"); // TUPLE2 (ts, value), TUPLE2 (path, ...)
            }
            out.put_slice(b"e."); // APPENDS, STOP
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.freeze()
    }

    /// Points per pickle message: well under carbon's message bound.
    pub const PICKLE_BATCH: usize = 500;

    fn number(&self, out: &mut BytesMut, p: &Point) {
        match self.mode {
            Mode::Statsite if p.count => {
                let _ = write!(out, "{}", p.value as i64);
            }
            Mode::Statsite => {
                let _ = write!(out, "{:.6}", p.value);
            }
            Mode::Etsy => js_number(out, p.value),
        }
    }
}

/// Writes a number as JavaScript's `String(n)` does.
fn js_number(out: &mut BytesMut, v: f64) {
    if v.is_nan() {
        out.put_slice(b"NaN");
    } else if v.is_infinite() {
        out.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else if v == 0.0 {
        out.put_u8(b'0');
    } else if v.abs() >= 1e21 || v.abs() < 1e-6 {
        let text = format!("{v:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.put_slice(text.as_bytes()),
        }
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Names the points of each metric type for a mode.
#[derive(Debug, Clone)]
pub(crate) struct Naming {
    mode: Mode,
    prefix: String,
    /// Etsy's `legacyNamespace: true`: counters as `stats.<k>` and
    /// `stats_counts.<k>`, `statsd.numStats`, the prefix fixed to `stats`.
    legacy: bool,
}

type Points = Vec<(String, f64, bool)>;

impl Naming {
    pub(crate) fn new(mode: Mode, prefix: &str, legacy: bool) -> Naming {
        let legacy = legacy && mode == Mode::Etsy;
        let mut prefix = if legacy { "stats" } else { prefix }.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('.') {
            prefix.push('.');
        }
        Naming {
            mode,
            prefix,
            legacy,
        }
    }

    /// `prefix + kind + name [+ "." + suffix] [+ ";" + tags]`: graphite tags,
    /// kept in the key after its first `;`, go after the whole path.
    fn path(&self, kind: &str, key: &str, suffix: &str) -> String {
        join(&self.prefix, kind, key, suffix)
    }

    pub(crate) fn counter(&self, out: &mut Points, key: &str, sum: f64, interval: f64) {
        match self.mode {
            Mode::Statsite => out.push((self.path("counts.", key, ""), sum, false)),
            Mode::Etsy if self.legacy => {
                out.push((self.path("", key, ""), sum / interval, false));
                out.push((join("stats_counts.", "", key, ""), sum, false));
            }
            Mode::Etsy => {
                out.push((self.path("counters.", key, "rate"), sum / interval, false));
                out.push((self.path("counters.", key, "count"), sum, false));
            }
        }
    }

    pub(crate) fn gauge(&self, out: &mut Points, key: &str, value: f64) {
        out.push((self.path("gauges.", key, ""), value, false));
    }

    pub(crate) fn set(&self, out: &mut Points, key: &str, count: u64) {
        match self.mode {
            Mode::Statsite => out.push((self.path("sets.", key, ""), count as f64, true)),
            Mode::Etsy => out.push((self.path("sets.", key, "count"), count as f64, true)),
        }
    }

    pub(crate) fn kv(&self, out: &mut Points, key: &str, value: f64) {
        out.push((self.path("kv.", key, ""), value, false));
    }

    pub(crate) fn idle_timer(&self, out: &mut Points, key: &str) {
        match self.mode {
            Mode::Statsite => {}
            Mode::Etsy => {
                out.push((self.path("timers.", key, "count"), 0.0, true));
                out.push((self.path("timers.", key, "count_ps"), 0.0, false));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn timer(
        &self,
        out: &mut Points,
        key: &str,
        samples: &mut Samples,
        weighted: f64,
        interval: f64,
        percentiles: &[f64],
        bins: Option<&[f64]>,
    ) {
        let (Some(lower), Some(upper), Some(mean), Some(stdev)) = (
            samples.min(),
            samples.max(),
            samples.mean(),
            samples.stdev(),
        ) else {
            return;
        };
        let count = samples.count();
        let n = count as f64;
        let p = |suffix: &str| self.path("timers.", key, suffix);
        match self.mode {
            Mode::Statsite => {
                out.push((p("sum"), samples.sum(), false));
                out.push((p("sum_sq"), samples.sum_sq(), false));
                out.push((p("mean"), mean, false));
                out.push((p("lower"), lower, false));
                out.push((p("upper"), upper, false));
                // statsite's count is the sampled count (each sample counts 1/rate).
                out.push((p("count"), weighted.trunc(), true));
                // statsite reports the sample standard deviation (n - 1), 0 for one sample.
                let sample_stdev = if count > 1 {
                    stdev * (n / (n - 1.0)).sqrt()
                } else {
                    0.0
                };
                out.push((p("stdev"), sample_stdev, false));
                for &pct in percentiles {
                    let q = samples.quantile(pct / 100.0).unwrap_or(0.0);
                    if pct == 50.0 {
                        out.push((p("median"), q, false));
                    }
                    out.push((p(&format!("p{}", pct_name(pct))), q, false));
                }
                out.push((p("rate"), samples.sum() / interval, false));
                out.push((p("sample_rate"), weighted.trunc() / interval, false));
                if let Some(bins) = bins {
                    let counts = samples.histogram(bins);
                    for (i, (bound, n)) in bins.iter().zip(counts).enumerate() {
                        let name = if i == 0 {
                            format!("histogram.bin_<{bound:.2}")
                        } else if bound.is_infinite() {
                            format!("histogram.bin_>{:.2}", bins[i - 1])
                        } else {
                            format!("histogram.bin_{:.2}", bins[i - 1])
                        };
                        out.push((p(&name), n as f64, true));
                    }
                }
            }
            Mode::Etsy => {
                // While every sample is kept, Etsy's own arithmetic (sums
                // over the sorted values, a two-pass deviation), so that the
                // figures match its to the last digit; then the running ones.
                let (sum, sum_sq, mean, stdev) = match samples.exact_sorted() {
                    Some(values) => etsy_moments(values),
                    None => (samples.sum(), samples.sum_sq(), mean, stdev),
                };
                for &pct in percentiles {
                    let Some(below) = samples.below(pct) else {
                        continue;
                    };
                    let name = etsy_pct(pct);
                    out.push((p(&format!("count_{name}")), below.count as f64, true));
                    out.push((p(&format!("mean_{name}")), below.mean(), false));
                    let bound = if pct > 0.0 { "upper" } else { "lower" };
                    out.push((p(&format!("{bound}_{name}")), below.upper, false));
                    out.push((p(&format!("sum_{name}")), below.sum, false));
                    out.push((p(&format!("sum_squares_{name}")), below.sum_sq, false));
                }
                out.push((p("std"), stdev, false));
                out.push((p("upper"), upper, false));
                out.push((p("lower"), lower, false));
                out.push((p("count"), weighted, true));
                out.push((p("count_ps"), weighted / interval, false));
                out.push((p("sum"), sum, false));
                out.push((p("sum_squares"), sum_sq, false));
                out.push((p("mean"), mean, false));
                // Etsy's median: the middle sample, or the mean of the two middle ones.
                let low = samples.quantile(0.5).unwrap_or(0.0);
                let median = if count.is_multiple_of(2) {
                    let high = samples.quantile((n / 2.0 + 1.0) / n).unwrap_or(low);
                    (low + high) / 2.0
                } else {
                    low
                };
                out.push((p("median"), median, false));
                if let Some(bins) = bins {
                    let counts = samples.histogram(bins);
                    for (bound, n) in bins.iter().zip(counts) {
                        let name = if bound.is_infinite() {
                            "histogram.bin_inf".to_owned()
                        } else {
                            format!("histogram.bin_{}", pct_name(*bound))
                        };
                        out.push((p(&name), n as f64, true));
                    }
                }
            }
        }
    }

    /// Etsy's `numStats`: how many keys this flush wrote (`statsd.numStats`
    /// without the prefix in the legacy namespace, as Etsy writes it).
    pub(crate) fn internal(&self, out: &mut Points, keys: usize) {
        let prefix = if self.legacy { "" } else { &self.prefix };
        out.push((join(prefix, "statsd.", "numStats", ""), keys as f64, true));
    }
}

/// Sum, sum of squares, mean and population deviation of sorted `values`
/// (not empty) as Etsy statsd computes them: running sums from the
/// smallest, then `sqrt(Σ(v - mean)² / n)` in a second pass.
fn etsy_moments(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let (sum, sum_sq) = sorted_sums(values);
    let mean = sum / n;
    let diffs = values
        .iter()
        .fold(0.0, |acc, &v| acc + (v - mean) * (v - mean));
    (sum, sum_sq, mean, (diffs / n).sqrt())
}

/// `prefix + kind + name [+ "." + suffix] [+ ";" + tags]`: graphite tags,
/// kept in the key after its first `;`, go after the whole path.
fn join(prefix: &str, kind: &str, key: &str, suffix: &str) -> String {
    let (name, tags) = key.split_once(';').unwrap_or((key, ""));
    let mut path = String::with_capacity(prefix.len() + kind.len() + key.len() + suffix.len() + 2);
    path.push_str(prefix);
    path.push_str(kind);
    path.push_str(name);
    if !suffix.is_empty() {
        path.push('.');
        path.push_str(suffix);
    }
    if !tags.is_empty() {
        path.push(';');
        path.push_str(tags);
    }
    path
}

/// A number as a path segment: as JavaScript prints it, its first `.` made
/// `_` (a dot would make a new level of the graphite tree): a percentile
/// (`p95`, `p99_9`: statsite writes 99.9 as `p100`, which clashes with 100),
/// or an Etsy histogram bound (`bin_0_5`).
fn pct_name(pct: f64) -> String {
    js_text(pct).replacen('.', "_", 1)
}

/// A threshold as Etsy names it: `90`, `99_9`, `top10`.
fn etsy_pct(pct: f64) -> String {
    pct_name(pct).replacen('-', "top", 1)
}

fn js_text(v: f64) -> String {
    let mut out = BytesMut::new();
    js_number(&mut out, v);
    String::from_utf8_lossy(&out).into_owned()
}
