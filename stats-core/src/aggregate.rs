//! The aggregator: folds statsd lines into per-key state and, at each flush, turns that state into graphite points.

use std::time::{Duration, SystemTime};

use crate::error::{Error, LineError};
use crate::hll::Uniques;
use crate::line::{Kind, Limits, Line, Parser, Value, simple_counter};
use crate::output::{Flush, Mode, Naming, Point};
use crate::sketch::Samples;

/// hashbrown with its default hasher (foldhash, seeded per map): fast on
/// short keys, and one hash per lookup-or-insert through `entry_ref`.
type Map<V> = hashbrown::HashMap<Box<str>, V>;

/// What happens to a key that received nothing during a flush interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// It is forgotten, and sends nothing (statsite; Etsy with `deleteIdleStats`).
    Drop,
    /// It sends zero: counters 0, timers a count of 0, sets 0 (Etsy's
    /// default). Whether gauges are resent is [`Config::keep_gauges`].
    Zero,
}

/// A histogram for the timers whose name contains `metric` (or every timer when
/// `metric` is empty): counts of samples below each bin's upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramConfig {
    /// A substring of the timer names this applies to; empty means all (Etsy's `all`).
    pub metric: String,
    /// Ascending upper bounds; `f64::INFINITY` (Etsy's `inf`) catches the rest.
    pub bins: Vec<f64>,
}

/// How an [`Aggregator`] aggregates and names what it flushes.
///
/// [`Config::statsite`] and [`Config::etsy`] give each original's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Output names and the semantics that differ between the two originals.
    pub mode: Mode,
    /// The flush interval: counters' rates are per second of it.
    pub flush_interval: Duration,
    /// Timer percentiles, in percent: statsite's quantiles (`p95`), Etsy's
    /// thresholds (`mean_90`); a negative Etsy threshold takes the top values.
    pub percentiles: Vec<f64>,
    /// Histograms of timers; the first whose `metric` matches applies.
    pub histograms: Vec<HistogramConfig>,
    /// What an idle key sends.
    pub idle: Idle,
    /// Flushes in a row a key may receive nothing before it is forgotten,
    /// whatever the mode: with [`Idle::Zero`] it sends zero at its first
    /// `forget_after - 1` idle flushes and is forgotten at the next; a kept
    /// gauge ([`Config::keep_gauges`]) is resent as long. `1` is Etsy's
    /// `deleteIdleStats` (and what [`Idle::Drop`] always does).
    ///
    /// Default 60 (10 minutes at the default 10 s interval). Etsy statsd
    /// never forgets by default, but then a burst of new names that fills
    /// [`Config::max_keys`] would lock every later name out for the life of
    /// the process; with a finite value the key table empties of the
    /// burst's names `forget_after` flushes after it ends, and zeros keep
    /// their meaning for any key that misses up to 10 minutes of updates.
    pub forget_after: u32,
    /// Whether a gauge keeps its value from one flush to the next, and is sent
    /// at every flush (Etsy's default); otherwise it is sent only after a
    /// flush interval that set it, and a change (`+N`) starts again from 0.
    pub keep_gauges: bool,
    /// Exact samples kept per timer per interval before switching to a
    /// sketch. Default [`Samples::DEFAULT_EXACT_CAP`] (1,000: 8 KB a key).
    pub exact_samples: usize,
    /// Exact members kept per set per interval before switching to HyperLogLog.
    pub exact_members: usize,
    /// Most keys held at once, all types together; lines for new keys beyond
    /// it are dropped and counted in [`Totals::dropped_keys`]. Default
    /// 100,000. Memory is bounded by this times a key's bound: a timer holds
    /// at most `exact_samples` values or a sketch of at most 2 × 4096
    /// buckets (64 KiB), a set at most `exact_members` hashes or 4 KiB of
    /// HyperLogLog registers.
    pub max_keys: usize,
    /// Most `kv` values held per interval; more are dropped and counted.
    pub max_kv: usize,
    /// Bounds on each line.
    pub limits: Limits,
    /// Put before every path: statsite's `global_prefix` (default empty),
    /// Etsy's `globalPrefix` (default `stats`).
    pub prefix: String,
    /// Etsy mode only: name points as Etsy's graphite backend does with
    /// `legacyNamespace: true`, its default: a counter as `stats.<k>` (the
    /// rate) and `stats_counts.<k>` (the count), `numStats` as
    /// `statsd.numStats`; timers, gauges and sets keep their names. As in
    /// Etsy, [`Config::prefix`] is not used then (the namespace is `stats`).
    ///
    /// Default false: `stats.counters.<k>.rate` and `.count`, Etsy's
    /// `legacyNamespace: false`, where every type has its own branch. A
    /// dashboard built on a stock Etsy install needs true.
    pub legacy_namespace: bool,
}

impl Config {
    /// The default of [`Config::forget_after`]: 60 flushes.
    pub const DEFAULT_FORGET_AFTER: u32 = 60;

    /// statsite's defaults: quantiles 50, 95 and 99, idle keys dropped, gauges not kept.
    pub fn statsite() -> Config {
        Config {
            mode: Mode::Statsite,
            flush_interval: Duration::from_secs(10),
            percentiles: vec![50.0, 95.0, 99.0],
            histograms: Vec::new(),
            idle: Idle::Drop,
            forget_after: Config::DEFAULT_FORGET_AFTER,
            keep_gauges: false,
            exact_samples: Samples::DEFAULT_EXACT_CAP,
            exact_members: Uniques::DEFAULT_EXACT_CAP,
            max_keys: 100_000,
            max_kv: 100_000,
            limits: Limits::default(),
            prefix: String::new(),
            legacy_namespace: false,
        }
    }

    /// Etsy statsd's defaults: threshold 90, idle keys send zero, gauges kept.
    pub fn etsy() -> Config {
        Config {
            mode: Mode::Etsy,
            percentiles: vec![90.0],
            idle: Idle::Zero,
            keep_gauges: true,
            prefix: "stats".to_owned(),
            ..Config::statsite()
        }
    }

    /// The defaults of a mode.
    pub fn for_mode(mode: Mode) -> Config {
        match mode {
            Mode::Statsite => Config::statsite(),
            Mode::Etsy => Config::etsy(),
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        if self.flush_interval < Duration::from_secs(1) {
            return bad(
                "flush interval must be at least 1 s (graphite keeps one point per second)",
            );
        }
        if self
            .percentiles
            .iter()
            .any(|p| !p.is_finite() || *p == 0.0 || p.abs() > 100.0)
        {
            return bad("percentiles must be in [-100, 100], not 0");
        }
        for h in &self.histograms {
            if h.bins.is_empty()
                || h.bins.iter().any(|b| b.is_nan())
                || h.bins.windows(2).any(|w| w[0] >= w[1])
            {
                return bad("histogram bins must be ascending numbers");
            }
        }
        if self.max_keys == 0 {
            return bad("max_keys must be at least 1");
        }
        if self.forget_after == 0 {
            return bad("forget_after must be at least 1 flush");
        }
        if self.legacy_namespace && self.mode != Mode::Etsy {
            return bad("the legacy namespace is Etsy statsd's: it needs the etsy mode");
        }
        Ok(())
    }
}

impl Default for Config {
    /// [`Config::statsite`].
    fn default() -> Self {
        Config::statsite()
    }
}

/// Counts since the aggregator was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets (datagrams, or TCP chunks) ingested.
    pub packets: u64,
    /// Lines counted.
    pub lines: u64,
    /// Values counted (a line may hold several).
    pub values: u64,
    /// Bad lines, per reason, in the order of [`LineError::ALL`].
    pub bad_lines: [u64; LineError::ALL.len()],
    /// Values dropped because their key was new and [`Config::max_keys`] was reached.
    pub dropped_keys: u64,
    /// `kv` values dropped because [`Config::max_kv`] was reached.
    pub dropped_kv: u64,
    /// Values refused because a sum, a square or a gauge would no longer be a
    /// finite number (`c:1e308|c` twice), and points not sent for the same reason.
    pub overflows: u64,
    /// Flushes made.
    pub flushes: u64,
}

impl Totals {
    /// Bad lines of one reason.
    pub fn bad(&self, reason: LineError) -> u64 {
        self.bad_lines[reason.index()]
    }

    /// Bad lines of every reason.
    pub fn bad_total(&self) -> u64 {
        self.bad_lines.iter().sum()
    }
}

#[derive(Debug, Default)]
struct Counter {
    sum: f64,
    touched: bool,
    /// Flushes in a row without a value.
    idle: u32,
}

impl Counter {
    /// Adds `value`, unless the sum would no longer be finite (then `false`,
    /// and the counter is as it was).
    fn add(&mut self, value: f64) -> bool {
        let sum = self.sum + value;
        if sum.is_finite() {
            self.sum = sum;
            self.touched = true;
        }
        sum.is_finite()
    }
}

#[derive(Debug)]
struct Gauge {
    value: f64,
    touched: bool,
    idle: u32,
}

#[derive(Debug)]
struct Timer {
    samples: Samples,
    /// Samples counted with their sample rate (Etsy's `count`).
    weighted: f64,
    idle: u32,
}

#[derive(Debug)]
struct Set {
    members: Uniques,
    touched: bool,
    idle: u32,
}

/// Counts one more flush of an entry: back to 0 if it was `touched`.
/// Returns whether it is still to be kept (idle fewer than `forget_after`).
fn age(idle: &mut u32, touched: bool, forget_after: u32) -> bool {
    *idle = if touched { 0 } else { idle.saturating_add(1) };
    kept(*idle, forget_after)
}

/// Whether an entry idle for `idle` flushes is still kept.
fn kept(idle: u32, forget_after: u32) -> bool {
    idle < forget_after
}

/// Folds statsd lines into per-key state, and flushes it as graphite points.
///
/// It does no IO and reads no clock: feed it packets with
/// [`ingest`](Aggregator::ingest) and call [`flush`](Aggregator::flush) with
/// the time every flush interval.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use stats_core::{Aggregator, Config};
///
/// let mut agg = Aggregator::new(Config::etsy()).unwrap();
/// agg.ingest(b"api.hits:1|c\napi.hits:2|c|@0.5\nlat:10:20:30|ms");
/// let flush = agg.flush(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// assert_eq!(flush.get("stats.counters.api.hits.count"), Some(5.0));
/// assert_eq!(flush.get("stats.counters.api.hits.rate"), Some(0.5));
/// assert_eq!(flush.get("stats.timers.lat.mean"), Some(20.0));
/// ```
#[derive(Debug)]
pub struct Aggregator {
    config: Config,
    parser: Parser,
    naming: Naming,
    counters: Map<Counter>,
    gauges: Map<Gauge>,
    timers: Map<Timer>,
    sets: Map<Set>,
    kv: Vec<(Box<str>, f64)>,
    key: String,
    totals: Totals,
    /// Totals at the last flush, for Etsy's per-interval internal counters.
    flushed: Totals,
    /// The timestamp of the last flush.
    last_timestamp: Option<u64>,
    /// Flushes that logged the drop warning (what the tests check: a
    /// `tracing` subscriber set per test races with other test threads
    /// over the callsite's cached interest).
    warned: u64,
}

impl Aggregator {
    /// An aggregator with this configuration.
    ///
    /// # Errors
    /// [`Error::Config`] when a value is out of range (a flush interval under
    /// 1 s, a percentile of 0 or beyond ±100, unordered histogram bins).
    pub fn new(config: Config) -> Result<Aggregator, Error> {
        config.check()?;
        Ok(Aggregator {
            parser: Parser::new(config.limits),
            naming: Naming::new(config.mode, &config.prefix, config.legacy_namespace),
            config,
            counters: Map::default(),
            gauges: Map::default(),
            timers: Map::default(),
            sets: Map::default(),
            kv: Vec::new(),
            key: String::new(),
            totals: Totals::default(),
            flushed: Totals::default(),
            last_timestamp: None,
            warned: 0,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts since the aggregator was made.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Keys held now, all types together.
    pub fn keys(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.timers.len() + self.sets.len()
    }

    /// Ingests one packet: a UDP datagram, or a chunk of whole lines from
    /// [`LineDecoder`](crate::LineDecoder). Bad lines are counted per reason
    /// in [`totals`](Aggregator::totals); the other lines of the packet count.
    pub fn ingest(&mut self, packet: &[u8]) {
        self.totals.packets += 1;
        let parser = self.parser;
        // Checked once, so that clean names are borrowed without a check each.
        let text = std::str::from_utf8(packet).ok();
        let mut at = 0;
        while at < packet.len() {
            // Most lines are `name:1|c`: those skip building a Line.
            if let Some(simple) = simple_counter(packet, at, &parser.limits()) {
                let name = &packet[at..simple.name_end];
                let name = match text.and_then(|t| t.get(at..simple.name_end)) {
                    Some(name) => Some(name),
                    None => std::str::from_utf8(name).ok(),
                };
                if let Some(name) = name {
                    self.add_counter(name, simple.value);
                    at = simple.next;
                    continue;
                }
            }
            let (line, next) = parser.scan(packet, at, text);
            at = next;
            match line {
                Some(Ok(line)) => self.add(&line),
                Some(Err(e)) => self.totals.bad_lines[e.index()] += 1,
                None => {}
            }
        }
    }

    /// [`add`](Aggregator::add) for a counter line of one value, rate 1 and no tags.
    fn add_counter(&mut self, name: &str, value: f64) {
        self.totals.lines += 1;
        let full = self.keys() >= self.config.max_keys;
        match entry(&mut self.counters, name, full, Counter::default) {
            Some(c) => {
                if c.add(value) {
                    self.totals.values += 1;
                } else {
                    self.totals.overflows += 1;
                }
            }
            None => self.totals.dropped_keys += 1,
        }
    }

    /// Counts a bad line found outside [`ingest`](Aggregator::ingest) (by a
    /// [`LineDecoder`](crate::LineDecoder), say).
    pub fn count_bad(&mut self, reason: LineError) {
        self.totals.bad_lines[reason.index()] += 1;
    }

    /// Adds one parsed line.
    pub fn add(&mut self, line: &Line<'_>) {
        self.totals.lines += 1;
        let key: &str = match line.tags() {
            Some(tags) if !tags.is_empty() => {
                let mut key = std::mem::take(&mut self.key);
                tagged_key(&mut key, line);
                self.key = key;
                &self.key
            }
            _ => line.name(),
        };
        let full = self.keys() >= self.config.max_keys;
        let rate = line.rate();
        // Etsy's scaling: value * (1 / rate).
        let scale = if rate == 1.0 { 1.0 } else { 1.0 / rate };
        let mut values = 0u64;
        let mut dropped = 0u64;
        let mut overflows = 0u64;
        match line.kind() {
            Kind::Counter => match entry(&mut self.counters, key, full, Counter::default) {
                Some(c) => {
                    for v in line.values() {
                        if let Value::Number(n) = v {
                            if c.add(n * scale) {
                                values += 1;
                            } else {
                                overflows += 1;
                            }
                        }
                    }
                }
                None => dropped += line.value_count() as u64,
            },
            Kind::Gauge => {
                let make = || Gauge {
                    value: 0.0,
                    touched: false,
                    idle: 0,
                };
                match entry(&mut self.gauges, key, full, make) {
                    Some(g) => {
                        for v in line.values() {
                            let next = match v {
                                Value::Number(n) => n,
                                Value::Delta(d) => g.value + d,
                                Value::Member(_) => continue,
                            };
                            if next.is_finite() {
                                g.value = next;
                                g.touched = true;
                                values += 1;
                            } else {
                                overflows += 1;
                            }
                        }
                    }
                    None => dropped += line.value_count() as u64,
                }
            }
            Kind::Timer | Kind::Histogram | Kind::Distribution => {
                let cap = self.config.exact_samples;
                let make = || Timer {
                    samples: Samples::new(cap),
                    weighted: 0.0,
                    idle: 0,
                };
                match entry(&mut self.timers, key, full, make) {
                    Some(t) => {
                        for v in line.values() {
                            let Value::Number(n) = v else { continue };
                            // A sample whose square or sums would not be finite is refused.
                            let fits = (t.samples.sum() + n).is_finite()
                                && (t.samples.sum_sq() + n * n).is_finite()
                                && (t.weighted + scale).is_finite();
                            if fits && t.samples.insert(n) {
                                t.weighted += scale;
                                values += 1;
                            } else {
                                overflows += 1;
                            }
                        }
                    }
                    None => dropped += line.value_count() as u64,
                }
            }
            Kind::Set => {
                let cap = self.config.exact_members;
                let make = || Set {
                    members: Uniques::new(cap),
                    touched: false,
                    idle: 0,
                };
                match entry(&mut self.sets, key, full, make) {
                    Some(s) => {
                        for v in line.values() {
                            if let Value::Member(m) = v {
                                s.members.insert(m);
                                values += 1;
                            }
                        }
                        s.touched = true;
                    }
                    None => dropped += line.value_count() as u64,
                }
            }
            Kind::KeyValue => {
                for v in line.values() {
                    if let Value::Number(n) = v {
                        if self.kv.len() < self.config.max_kv {
                            self.kv.push((key.into(), n));
                            values += 1;
                        } else {
                            self.totals.dropped_kv += 1;
                        }
                    }
                }
            }
        }
        self.totals.values += values;
        self.totals.dropped_keys += dropped;
        self.totals.overflows += overflows;
    }

    /// Ends the flush interval at `now`: returns its points, named for the
    /// mode, stamped with `now` in Unix seconds (or the second after the last
    /// flush's, if that is later: graphite keeps one point per path and
    /// second), and starts the next interval.
    ///
    /// Keys that received nothing are dropped or send zero, as
    /// [`Config::idle`] says; gauges are kept if [`Config::keep_gauges`].
    pub fn flush(&mut self, now: SystemTime) -> Flush {
        // Graphite keeps one value per path and second: two flushes stamped
        // with one second would overwrite each other, so each gets a later
        // second than the one before.
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .max(self.last_timestamp.map_or(0, |t| t + 1));
        self.last_timestamp = Some(timestamp);
        let interval = self.config.flush_interval.as_secs_f64();
        let mut points = Vec::new();
        let mut written = 0usize;
        let idle = self.config.idle;
        let zero = idle == Idle::Zero;
        let forget_after = self.config.forget_after;
        let last = self.flushed.clone();
        self.internal_counters();
        // What is counted from here on (points not finite, below) goes out
        // with the next flush.
        self.flushed = self.totals.clone();
        let naming = &self.naming;

        let mut counters: Vec<_> = self.counters.iter_mut().collect();
        // The internal counters first (Etsy writes its own from start-up).
        counters.sort_unstable_by(|(a, _), (b, _)| {
            let rank = |k: &str| {
                INTERNAL
                    .iter()
                    .position(|i| i.0 == k)
                    .unwrap_or(INTERNAL.len())
            };
            (rank(a), a).cmp(&(rank(b), b))
        });
        for (key, c) in counters {
            let touched = c.touched;
            if age(&mut c.idle, touched, forget_after) && (touched || zero) {
                written += 1;
                naming.counter(&mut points, key, c.sum, interval);
            }
            c.sum = 0.0;
            c.touched = false;
        }

        let mut timers: Vec<_> = self.timers.iter_mut().collect();
        timers.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, t) in timers {
            let touched = t.samples.count() > 0;
            let kept = age(&mut t.idle, touched, forget_after);
            if touched {
                written += 1;
                let bins = self
                    .config
                    .histograms
                    .iter()
                    .find(|h| h.metric.is_empty() || key.contains(h.metric.as_str()))
                    .map(|h| h.bins.as_slice());
                naming.timer(
                    &mut points,
                    key,
                    &mut t.samples,
                    t.weighted,
                    interval,
                    &self.config.percentiles,
                    bins,
                );
            } else if zero && kept {
                written += 1;
                naming.idle_timer(&mut points, key);
            }
            t.samples.clear();
            t.weighted = 0.0;
        }

        let mut gauges: Vec<_> = self.gauges.iter_mut().collect();
        gauges.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, g) in gauges {
            let touched = g.touched;
            if age(&mut g.idle, touched, forget_after) && (touched || self.config.keep_gauges) {
                written += 1;
                naming.gauge(&mut points, key, g.value);
            }
            g.touched = false;
        }

        let mut sets: Vec<_> = self.sets.iter_mut().collect();
        sets.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, s) in sets {
            let touched = s.touched;
            if age(&mut s.idle, touched, forget_after) && (touched || zero) {
                written += 1;
                naming.set(&mut points, key, s.members.count());
            }
            s.members.clear();
            s.touched = false;
        }

        for (key, value) in self.kv.drain(..) {
            naming.kv(&mut points, &key, value);
        }

        if self.config.mode == Mode::Etsy {
            naming.internal(&mut points, written);
        }

        // Forget what went idle: at once unless idle keys send zero, else
        // after `forget_after` idle flushes; kept gauges after as many.
        // (statsite starts each interval empty).
        forget(&mut self.counters, |c| zero && kept(c.idle, forget_after));
        forget(&mut self.timers, |t| zero && kept(t.idle, forget_after));
        forget(&mut self.sets, |s| zero && kept(s.idle, forget_after));
        // A gauge not kept starts each interval again from 0.
        let keep_gauges = self.config.keep_gauges;
        forget(&mut self.gauges, |g| {
            keep_gauges && kept(g.idle, forget_after)
        });
        // Every value that went in was finite and kept its sums finite; a
        // point that is not finite anyway is not sent, and is counted.
        let before = points.len();
        points.retain(|(_, value, _)| value.is_finite());
        self.totals.overflows += (before - points.len()) as u64;
        self.totals.flushes += 1;
        self.warn_drops(&last);
        Flush::new(
            self.config.mode,
            timestamp,
            points.into_iter().map(Point::from).collect(),
        )
    }

    /// One warning per flush that summarises what was dropped since the
    /// flush before (`then`, its totals).
    fn warn_drops(&mut self, then: &Totals) {
        let now = &self.totals;
        let bad_lines = now.bad_total() - then.bad_total();
        let dropped_keys = now.dropped_keys - then.dropped_keys;
        let overflowed_values = now.overflows - then.overflows;
        let dropped_kv = now.dropped_kv - then.dropped_kv;
        if bad_lines + dropped_keys + overflowed_values + dropped_kv > 0 {
            self.warned += 1;
            tracing::warn!(
                bad_lines,
                dropped_keys,
                overflowed_values,
                dropped_kv,
                keys = self.keys(),
                max_keys = self.config.max_keys,
                "values dropped this flush interval (counted in statsd.* metrics)"
            );
        }
    }

    /// The aggregator's own counters ([`INTERNAL`]), fed as ordinary
    /// counters of the interval before a flush. In Etsy mode its own three
    /// are always there; in statsite mode (which has none of its own) only
    /// the drop counters are, and each only when it counted something. A
    /// drop counter enters the table the first time it counts something,
    /// and from then on lives as any counter of the mode.
    fn internal_counters(&mut self) {
        let (now, then) = (&self.totals, &self.flushed);
        let counts = [
            now.bad_total() - then.bad_total(),
            now.packets - then.packets,
            now.lines - then.lines,
            now.dropped_keys - then.dropped_keys,
            now.overflows - then.overflows,
            now.dropped_kv - then.dropped_kv,
        ];
        let etsy = self.config.mode == Mode::Etsy;
        for (&(key, in_etsy, in_statsite), n) in INTERNAL.iter().zip(counts) {
            let sent = if etsy {
                in_etsy || n > 0
            } else {
                in_statsite && n > 0
            };
            if sent {
                // Not subject to `max_keys`: the drops must be seen most when it is full.
                // A count is finite as f64: add() takes it and marks it touched.
                self.counters.entry(key.into()).or_default().add(n as f64);
            }
        }
    }
}

/// The aggregator's own counters, in the order they are written: Etsy
/// statsd's three, then the drops it does not count. Each with whether Etsy
/// mode sends it at every flush (else only when it counted something), and
/// whether statsite mode sends it at all (then only when it counted something).
pub(crate) const INTERNAL: [(&str, bool, bool); 6] = [
    ("statsd.bad_lines_seen", true, true),
    ("statsd.packets_received", true, false),
    ("statsd.metrics_received", true, false),
    ("statsd.dropped_keys", false, true),
    ("statsd.overflowed_values", false, true),
    ("statsd.dropped_kv", false, true),
];

/// Removes the entries `keep` refuses, and gives memory back once the
/// table is mostly empty (after a burst of names, say).
fn forget<V>(map: &mut Map<V>, mut keep: impl FnMut(&V) -> bool) {
    // Sized for what this interval held, so that a steady load never
    // shrinks and grows the table again at every flush.
    let used = map.len();
    map.retain(|_, v| keep(v));
    if map.capacity() > 1024 && used < map.capacity() / 4 {
        map.shrink_to(used * 2);
    }
}

/// The entry for `key`, made if absent and the table is not `full`.
fn entry<'m, V>(
    map: &'m mut Map<V>,
    key: &str,
    full: bool,
    make: impl FnOnce() -> V,
) -> Option<&'m mut V> {
    if full && !map.contains_key(key) {
        return None;
    }
    Some(map.entry_ref(key).or_insert_with(make))
}

/// Writes `name;tag=value;...` (graphite's tagged series) for a tagged line.
/// A tag without a value gets the value `true`.
fn tagged_key(key: &mut String, line: &Line<'_>) {
    // Appends `raw` sanitised, without the tag separators; whether it added anything.
    fn push_clean(key: &mut String, raw: &[u8]) -> bool {
        let before = key.len();
        key.extend(
            crate::line::sanitize(raw)
                .chars()
                .filter(|c| *c != ';' && *c != '='),
        );
        key.len() > before
    }
    key.clear();
    key.push_str(line.name());
    for (tag, value) in line.tag_pairs() {
        let mark = key.len();
        key.push(';');
        if !push_clean(key, tag) {
            key.truncate(mark);
            continue;
        }
        key.push('=');
        if !value.is_some_and(|v| push_clean(key, v)) {
            key.push_str("true");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn drops_warn_once_per_flush_and_not_in_a_flush_without_any() {
        let mut agg = Aggregator::new(Config {
            max_keys: 1,
            ..Config::etsy()
        })
        .expect("config");
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
        // Bad lines, keys over the cap and an overflow, in many packets.
        for _ in 0..10 {
            agg.ingest(b"a:1|c\nb:1|c\nnot a line\nt:1e308|ms\nt:1e308|ms");
        }
        agg.flush(at(0));
        assert_eq!(agg.warned, 1);
        agg.ingest(b"a:1|c");
        agg.flush(at(10));
        assert_eq!(agg.warned, 1, "nothing dropped");
        agg.ingest(b"bad");
        agg.flush(at(20));
        assert_eq!(agg.warned, 2);
    }

    /// No value that goes in makes a point that is not finite (each is
    /// checked as it comes); one made anyway (here put in by hand) is not
    /// sent, and its count goes out with the next flush.
    #[test]
    fn a_point_dropped_at_the_flush_is_counted_in_the_next_flush() {
        let mut agg = Aggregator::new(Config::etsy()).expect("config");
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
        agg.kv.push(("k".into(), f64::INFINITY));
        let f = agg.flush(at(0));
        assert!(f.points().iter().all(|p| p.value.is_finite()));
        assert_eq!(agg.totals().overflows, 1);
        let f = agg.flush(at(10));
        assert_eq!(
            f.get("stats.counters.statsd.overflowed_values.count"),
            Some(1.0)
        );
    }
}
