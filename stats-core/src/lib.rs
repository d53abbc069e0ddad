//! # stats-core: a statsd aggregator that writes to graphite
//!
//! What: the monitoring half of the stack. Applications send statsd lines
//! (`api.hits:1|c`, `db.query:12.5|ms`) over UDP or TCP; an aggregator folds
//! them per flush interval and writes the results to graphite (carbon). It
//! drops into a statsite or Etsy statsd deployment: [`Mode::Statsite`] and
//! [`Mode::Etsy`] reproduce each one's output names and the few semantics
//! where they differ (see `COMPAT.md`, which records both from their sources).
//!
//! Why: percentiles that can be trusted (timers keep exact samples up to a
//! cap, then a DDSketch with 0.5% relative error, where statsite's sketch
//! can be far off at the tail), bounded memory on every path, and ingest at
//! tens of millions of lines per second per core.
//!
//! How: this crate does no IO and reads no clock. A [`Parser`] reads lines
//! without allocating; an [`Aggregator`] folds them and, when its caller says
//! it is time, [`flush`](Aggregator::flush)es them into a [`Flush`] of named
//! points, which renders as graphite plaintext, graphite pickle, or
//! statsite's stream format. An [`Outbox`] per sink queues rendered flushes
//! with a bound, retry and backoff, and counts what it drops. Health checks
//! ([`Registry`], [`FlushLag`], [`SinkErrors`]) report Nagios-style. The
//! `tokio` feature (module `net`) runs all of it over real sockets: UDP
//! directly, TCP and the admin port on kids-core's server toolkit (the
//! SDK's one accept loop: a connection cap where the client idle longest
//! makes room for a new one, and an idle timeout; `net::TcpConfig`).
//!
//! ```text
//!  app ──UDP datagram / TCP lines──▶ Parser::lines ──▶ Aggregator::ingest
//!        name:v[:v]|type|@rate|#tags      (bad lines counted per reason)
//!                                                        │ every flush interval: flush(now)
//!                                                        ▼
//!                     Flush (points named for the mode) ─┬─ plaintext ─▶ Outbox ─▶ carbon :2003
//!                                                        ├─ pickle ────▶ Outbox ─▶ carbon :2004
//!                                                        └─ stream ────▶ statsite sink scripts
//! ```
//!
//! ## What each type reports
//! - counters (`c`): the sum, with `@rate` applied (`2|c|@0.5` counts 4); Etsy
//!   mode adds the rate per second of the flush interval.
//! - gauges (`g`): the last value; `+N`/`-N` change it. Etsy mode keeps a
//!   gauge and resends it every flush ([`Config::keep_gauges`]); statsite
//!   mode starts each interval empty. A gauge cannot be set to a negative
//!   value directly (`-5` is a change): set 0, then send `-5`.
//! - timers (`ms`), histograms (`h`) and distributions (`d`): count, sum, sum
//!   of squares, mean, lower, upper, standard deviation, median, the
//!   configured percentiles ([`Config::percentiles`]) and optional histogram
//!   bins ([`Config::histograms`]). Samples are exact up to
//!   [`Config::exact_samples`] per key per interval, then go into a
//!   [`DdSketch`].
//! - sets (`s`): the number of distinct members; exact up to
//!   [`Config::exact_members`], then a [`HyperLogLog`] of precision 12 over
//!   [`hash64`] (XXH64, seed 0).
//! - key/values (`kv`): passed through, one point per value.
//!
//! Tags (`|#env:prod` or `name;env=prod`) become graphite tags after the
//! whole path (`stats.counters.req.count;env=prod`). Idle keys send zero or
//! nothing ([`Idle`]), and are forgotten after [`Config::forget_after`] idle
//! flushes in either mode (default 60), so a burst of names that fills
//! [`Config::max_keys`] locks new names out for that long at most. Every
//! buffer is bounded: line, name, values per line and tags ([`Limits`]),
//! keys ([`Config::max_keys`]), kv values ([`Config::max_kv`]), sink queues
//! ([`OutboxConfig`]); whatever goes over a bound is counted ([`Totals`],
//! [`SinkStats`]), never lost silently.
//!
//! ## Its own metrics
//! Each flush carries the aggregator's own counters, named as any counter of
//! the mode (`stats.counters.statsd.dropped_keys.count` and `.rate` in Etsy
//! mode, `stats_counts.statsd.dropped_keys` and `stats.statsd.dropped_keys`
//! with [`Config::legacy_namespace`], `counts.statsd.dropped_keys` in
//! statsite mode), and each flush that
//! dropped something logs one `tracing` warning summing it up:
//!
//! | counter | counts, per interval | etsy mode | statsite mode |
//! |---|---|---|---|
//! | `statsd.bad_lines_seen` | lines that did not parse (every [`LineError`], TCP lines over the bound included) | always (Etsy's) | when not 0 |
//! | `statsd.packets_received` | UDP datagrams and TCP chunks | always (Etsy's) | no |
//! | `statsd.metrics_received` | lines that parsed | always (Etsy's) | no |
//! | `statsd.dropped_keys` | values of new keys over [`Config::max_keys`] | from its first drop on | when not 0 |
//! | `statsd.overflowed_values` | values refused because a sum, sum of squares, scaled count or gauge would not be finite, and points not sent for not being finite | from its first drop on | when not 0 |
//! | `statsd.dropped_kv` | `kv` values over [`Config::max_kv`] | from its first drop on | when not 0 |
//!
//! Etsy mode also sends Etsy's `stats.statsd.numStats` (`statsd.numStats`
//! in the legacy namespace). A counter that
//! "lives from its first drop on" then behaves as any Etsy counter: it sends
//! zero while idle, until forgotten. The same totals since start are in
//! [`Aggregator::totals`] (and the admin port's `stats`, feature `tokio`).
//!
//! Overflow, precisely: a counter value is refused when the key's sum plus
//! the value scaled by its sample rate (`1e300|c|@1e-10`: 1e310) would not
//! be finite (`c:1e308|c` twice: the second); a timer sample when the
//! running sum, the sum of squares (so any sample above about 1.3e154) or
//! the rate-weighted count would not be; a gauge when its new value would
//! not be. The values taken before stay; nothing infinite or NaN is sent.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use stats_core::{Aggregator, Config};
//!
//! let mut agg = Aggregator::new(Config::statsite())?;
//! agg.ingest(b"api.hits:1|c\napi.hits:2|c|@0.5\nlat:10:20:30|ms\nusers:alice|s\nbad line");
//! let flush = agg.flush(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
//! assert_eq!(flush.get("counts.api.hits"), Some(5.0));
//! assert_eq!(flush.get("timers.lat.p95"), Some(30.0));
//! assert_eq!(agg.totals().bad_total(), 1);
//! // Drops are flushed too, as `statsd.*` counters.
//! assert_eq!(flush.get("counts.statsd.bad_lines_seen"), Some(1.0));
//! let plaintext = flush.plaintext();
//! assert!(plaintext.starts_with(
//!     b"counts.statsd.bad_lines_seen 1.000000 1700000000\ncounts.api.hits 5.000000 1700000000\n"
//! ));
//! # Ok::<(), stats_core::Error>(())
//! ```

mod aggregate;
mod error;
mod health;
mod hll;
mod line;
#[cfg(feature = "tokio")]
pub mod net;
mod output;
mod sink;
mod sketch;

pub use aggregate::{Aggregator, Config, HistogramConfig, Idle, Totals};
pub use error::{Error, LineError};
pub use health::{FlushLag, HealthCheck, Perf, Registry, Report, SinkErrors, Status};
pub use hll::{HyperLogLog, Uniques, hash64};
pub use line::{Kind, Limits, Line, LineDecoder, Lines, Metric, Parser, Value, Values, sanitize};
pub use output::{Flush, Mode, Point};
pub use sink::{Batch, Outbox, OutboxConfig, SinkStats};
pub use sketch::{Below, DdSketch, Samples};
