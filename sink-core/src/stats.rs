//! Counters, latency histograms and the numbers `INFO` reports.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::FsyncPolicy;

/// Counters kept under the broker's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages published.
    pub published: u64,
    /// Messages delivered to sessions.
    pub delivered: u64,
    /// Segments removed by retention.
    pub released_segments: u64,
}

/// A histogram with power-of-two buckets: cheap to record, good enough
/// for percentiles of latencies and batch sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; 48],
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; 48],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let b = (64 - v.leading_zeros() as usize).min(self.buckets.len() - 1);
        self.buckets[b] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their mean.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The largest.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// An upper bound of the `q` quantile (0..=1): the top of its bucket,
    /// at most the largest value seen.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let top = if i == 0 { 0 } else { (1u64 << i) - 1 };
                return top.min(self.max);
            }
        }
        self.max
    }
}

/// One session, as `INFO` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Its name.
    pub name: Bytes,
    /// The last offset acknowledged.
    pub cursor: u64,
    /// Messages in the log after the cursor (any topic).
    pub lag_messages: u64,
    /// Bytes of log after the cursor.
    pub lag_bytes: u64,
    /// Unacknowledged messages delivered.
    pub window_fill: usize,
    /// The window.
    pub window: u32,
    /// The client that has it loaded.
    pub owner: Option<u64>,
}

/// Everything `INFO` reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Info {
    /// First offset retained.
    pub first_offset: u64,
    /// Last offset given out.
    pub last_offset: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes in the log.
    pub log_bytes: u64,
    /// Every session.
    pub sessions: Vec<SessionInfo>,
    /// The session whose cursor keeps the oldest segment, if one does.
    pub pinned_by: Option<Bytes>,
    /// Streams.
    pub streams: usize,
    /// Approximate bytes the streams hold in memory: entries, keys,
    /// groups, consumers and pending entries
    /// ([`Streams::memory_bytes`](crate::stream::Streams::memory_bytes)).
    pub stream_bytes: u64,
    /// Counters.
    pub stats: Stats,
    /// fsync latencies, µs.
    pub fsync_us: Histogram,
    /// Records per commit round (group commit size).
    pub group_size: Histogram,
    /// Commit rounds.
    pub commits: u64,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Why the log failed, if it did.
    pub failed: Option<String>,
}

impl Info {
    /// The `INFO` text of `sections` (all when empty): `server`, `log`,
    /// `persistence`, `sessions`, `streams`, `stats`.
    pub fn render(&self, sections: &[&str], version: &str, clients: usize) -> String {
        let want = |s: &str| {
            sections.is_empty()
                || sections.iter().any(|w| {
                    w.eq_ignore_ascii_case(s)
                        || w.eq_ignore_ascii_case("all")
                        || w.eq_ignore_ascii_case("everything")
                        || w.eq_ignore_ascii_case("default")
                })
        };
        let mut out = String::new();
        if want("server") {
            let _ = write!(
                out,
                "# Server\r\nredis_version:{version}\r\nsink_version:{}\r\nconnected_clients:{clients}\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            );
        }
        if want("log") {
            let _ = write!(
                out,
                "# Log\r\nfirst_offset:{}\r\nlast_offset:{}\r\nsegments:{}\r\nlog_bytes:{}\r\npinned_by:{}\r\n\r\n",
                self.first_offset,
                self.last_offset,
                self.segments,
                self.log_bytes,
                self.pinned_by
                    .as_ref()
                    .map_or(String::new(), |n| String::from_utf8_lossy(n).into_owned()),
            );
        }
        if want("persistence") {
            let policy = match self.fsync {
                FsyncPolicy::Always => "always".to_string(),
                FsyncPolicy::Interval(d) => format!("interval {}ms", d.as_millis()),
                FsyncPolicy::Never => "never".to_string(),
            };
            let f = &self.fsync_us;
            let g = &self.group_size;
            let _ = write!(
                out,
                "# Persistence\r\nfsync:{policy}\r\nlog_ok:{}\r\nlog_error:{}\r\ncommits:{}\r\nfsyncs:{}\r\nfsync_us_p50:{}\r\nfsync_us_p90:{}\r\nfsync_us_p99:{}\r\nfsync_us_max:{}\r\ngroup_commit_mean:{:.2}\r\ngroup_commit_p50:{}\r\ngroup_commit_p99:{}\r\ngroup_commit_max:{}\r\n\r\n",
                u8::from(self.failed.is_none()),
                self.failed.as_deref().unwrap_or(""),
                self.commits,
                f.count(),
                f.quantile(0.5),
                f.quantile(0.9),
                f.quantile(0.99),
                f.max(),
                g.mean(),
                g.quantile(0.5),
                g.quantile(0.99),
                g.max(),
            );
        }
        if want("sessions") {
            let _ = write!(out, "# Sessions\r\nsessions:{}\r\n", self.sessions.len());
            for s in &self.sessions {
                let _ = write!(
                    out,
                    "session:name={},cursor={},lag_messages={},lag_bytes={},window_fill={},window={},loaded_by={}\r\n",
                    String::from_utf8_lossy(&s.name).replace([',', '\r', '\n'], "_"),
                    s.cursor,
                    s.lag_messages,
                    s.lag_bytes,
                    s.window_fill,
                    s.window,
                    s.owner.map_or(String::from("-"), |o| o.to_string()),
                );
            }
            out.push_str("\r\n");
        }
        if want("streams") {
            let _ = write!(
                out,
                "# Streams\r\nstreams:{}\r\nstream_bytes:{}\r\n\r\n",
                self.streams, self.stream_bytes
            );
        }
        if want("stats") {
            let _ = write!(
                out,
                "# Stats\r\npublished:{}\r\ndelivered:{}\r\nreleased_segments:{}\r\n\r\n",
                self.stats.published, self.stats.delivered, self.stats.released_segments
            );
        }
        if out.ends_with("\r\n\r\n") {
            out.truncate(out.len() - 2);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_bound_the_values() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
        let p50 = h.quantile(0.5);
        assert!((50..=63).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
