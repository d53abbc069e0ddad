//! Health checks in the spirit of Nagios: a status 0-3 and a `summary | perfdata` line; built-in checks for flush lag and sink errors.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::sink::SinkStats;

/// A Nagios plugin status; its number is the plugin's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// 0: all is well.
    Ok = 0,
    /// 1: something needs a look.
    Warning = 1,
    /// 2: something is broken.
    Critical = 2,
    /// 3: the check could not tell.
    Unknown = 3,
}

impl Status {
    /// The exit code, 0 to 3.
    pub fn code(self) -> i32 {
        self as i32
    }

    fn severity(self) -> u8 {
        // Unknown ranks between Warning and Critical, as Nagios ranks it.
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Unknown => 2,
            Status::Critical => 3,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        })
    }
}

/// One performance figure: `label=value[uom];[warn];[crit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Perf {
    /// The label (quoted on output if it holds a space or `=`).
    pub label: String,
    /// The value.
    pub value: f64,
    /// The unit: `s`, `%`, `B`, `c` (a counter) or empty.
    pub unit: &'static str,
    /// The warning threshold.
    pub warn: Option<f64>,
    /// The critical threshold.
    pub crit: Option<f64>,
}

impl Perf {
    /// A figure without thresholds.
    pub fn new(label: impl Into<String>, value: f64, unit: &'static str) -> Perf {
        Perf {
            label: label.into(),
            value,
            unit,
            warn: None,
            crit: None,
        }
    }

    /// Adds thresholds.
    pub fn thresholds(mut self, warn: f64, crit: f64) -> Perf {
        self.warn = Some(warn);
        self.crit = Some(crit);
        self
    }
}

impl fmt::Display for Perf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label.contains([' ', '=', '\'']) {
            write!(f, "'{}'", self.label.replace('\'', "''"))?;
        } else {
            f.write_str(&self.label)?;
        }
        write!(f, "={}{}", self.value, self.unit)?;
        if self.warn.is_some() || self.crit.is_some() {
            let t = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            write!(f, ";{};{}", t(self.warn), t(self.crit))?;
        }
        Ok(())
    }
}

/// What a check found: a status, a one-line summary and performance data.
///
/// Displayed as Nagios reads a plugin's output: `STATUS - summary | perfdata`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The status.
    pub status: Status,
    /// One line for a human.
    pub summary: String,
    /// Figures for graphs.
    pub perf: Vec<Perf>,
}

impl Report {
    /// A report without figures.
    pub fn new(status: Status, summary: impl Into<String>) -> Report {
        Report {
            status,
            summary: summary.into(),
            perf: Vec::new(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A newline or `|` in the summary would break the plugin line.
        let summary: String = self
            .summary
            .chars()
            .map(|c| if c == '|' || c.is_control() { ' ' } else { c })
            .collect();
        write!(f, "{} - {}", self.status, summary)?;
        for (i, p) in self.perf.iter().enumerate() {
            f.write_str(if i == 0 { " | " } else { " " })?;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A health check. `now` is passed in.
pub trait HealthCheck: Send + Sync {
    /// A short name, used in the combined summary.
    fn name(&self) -> &str;
    /// Looks, and reports.
    fn check(&self, now: SystemTime) -> Report;
}

/// A set of checks, run together.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use stats_core::{FlushLag, Registry, Status};
///
/// let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let lag = FlushLag::new(Duration::from_secs(10), t0);
/// let mut health = Registry::new();
/// health.register(lag.clone());
/// lag.flushed(t0 + Duration::from_secs(10));
/// let report = health.check(t0 + Duration::from_secs(12));
/// assert_eq!(report.status, Status::Ok);
/// assert_eq!(report.to_string(), "OK - flush: last flush 2s ago | flush_age=2s;20;50");
/// assert_eq!(health.check(t0 + Duration::from_secs(70)).status, Status::Critical);
/// ```
#[derive(Default)]
pub struct Registry {
    checks: Vec<Box<dyn HealthCheck>>,
}

impl Registry {
    /// No checks.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a check.
    pub fn register(&mut self, check: impl HealthCheck + 'static) {
        self.checks.push(Box::new(check));
    }

    /// Runs every check. The status is the worst one's (Critical, then
    /// Unknown, then Warning); the summary names each check with its
    /// summary, the worst first; the figures are all of theirs. With no
    /// checks registered, Unknown.
    pub fn check(&self, now: SystemTime) -> Report {
        let mut reports: Vec<(&str, Report)> = self
            .checks
            .iter()
            .map(|c| (c.name(), c.check(now)))
            .collect();
        if reports.is_empty() {
            return Report::new(Status::Unknown, "no checks registered");
        }
        reports.sort_by_key(|(_, r)| std::cmp::Reverse(r.status.severity()));
        let status = reports[0].1.status;
        let summary = reports
            .iter()
            .map(|(name, r)| format!("{name}: {}", r.summary))
            .collect::<Vec<_>>()
            .join("; ");
        let perf = reports.into_iter().flat_map(|(_, r)| r.perf).collect();
        Report {
            status,
            summary,
            perf,
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|c| c.name()))
            .finish()
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether flushes happen on time: Warning when the last one is older than
/// twice the interval, Critical beyond five times. Clones share their state:
/// keep one to call [`flushed`](FlushLag::flushed), register another.
#[derive(Debug, Clone)]
pub struct FlushLag {
    interval: Duration,
    last: Arc<AtomicU64>,
}

impl FlushLag {
    /// A check for flushes every `interval`, counting from `start`.
    pub fn new(interval: Duration, start: SystemTime) -> FlushLag {
        FlushLag {
            interval,
            last: Arc::new(AtomicU64::new(unix_millis(start))),
        }
    }

    /// Records a flush at `at`.
    pub fn flushed(&self, at: SystemTime) {
        self.last.fetch_max(unix_millis(at), Ordering::Relaxed);
    }
}

impl HealthCheck for FlushLag {
    fn name(&self) -> &str {
        "flush"
    }

    fn check(&self, now: SystemTime) -> Report {
        let age =
            unix_millis(now).saturating_sub(self.last.load(Ordering::Relaxed)) as f64 / 1000.0;
        let interval = self.interval.as_secs_f64();
        let (warn, crit) = (2.0 * interval, 5.0 * interval);
        let status = if age > crit {
            Status::Critical
        } else if age > warn {
            Status::Warning
        } else {
            Status::Ok
        };
        let mut report = Report::new(status, format!("last flush {age}s ago"));
        report
            .perf
            .push(Perf::new("flush_age", age, "s").thresholds(warn, crit));
        report
    }
}

/// Whether a sink delivers: Warning once it has dropped a batch or failed
/// its last attempt, Critical after `critical_failures` failures in a row.
pub struct SinkErrors<F> {
    name: String,
    stats: F,
    critical_failures: u32,
}

impl<F: Fn() -> SinkStats + Send + Sync> SinkErrors<F> {
    /// A check of the sink `name`, reading its stats with `stats`;
    /// Critical after 5 failures in a row.
    pub fn new(name: impl Into<String>, stats: F) -> Self {
        SinkErrors {
            name: name.into(),
            stats,
            critical_failures: 5,
        }
    }

    /// Sets how many failures in a row are Critical.
    pub fn critical_after(mut self, failures: u32) -> Self {
        self.critical_failures = failures.max(1);
        self
    }
}

impl<F: Fn() -> SinkStats + Send + Sync> HealthCheck for SinkErrors<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, _now: SystemTime) -> Report {
        let s = (self.stats)();
        let status = if s.consecutive_failures >= self.critical_failures {
            Status::Critical
        } else if s.consecutive_failures > 0 || s.dropped_batches > 0 {
            Status::Warning
        } else {
            Status::Ok
        };
        let mut summary = format!(
            "{} points sent, {} dropped, {} queued batches",
            s.sent_points, s.dropped_points, s.queued_batches
        );
        if s.consecutive_failures > 0 {
            summary.push_str(&format!(
                ", {} failures in a row ({})",
                s.consecutive_failures,
                s.last_error.as_deref().unwrap_or("?")
            ));
        }
        let mut report = Report::new(status, summary);
        let label = |what: &str| format!("{}_{what}", self.name);
        report
            .perf
            .push(Perf::new(label("sent"), s.sent_points as f64, "c"));
        report
            .perf
            .push(Perf::new(label("dropped"), s.dropped_points as f64, "c"));
        report.perf.push(
            Perf::new(label("failures"), f64::from(s.consecutive_failures), "")
                .thresholds(1.0, f64::from(self.critical_failures)),
        );
        report
    }
}

impl<F> fmt::Debug for SinkErrors<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkErrors")
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn sink_errors_go_from_ok_to_warning_to_critical() {
        let stats = Arc::new(std::sync::Mutex::new(SinkStats::default()));
        let s2 = stats.clone();
        let check = SinkErrors::new("carbon", move || s2.lock().unwrap().clone()).critical_after(3);
        assert_eq!(check.check(UNIX_EPOCH).status, Status::Ok);
        stats.lock().unwrap().dropped_batches = 1;
        assert_eq!(check.check(UNIX_EPOCH).status, Status::Warning);
        stats.lock().unwrap().consecutive_failures = 3;
        stats.lock().unwrap().last_error = Some("refused".into());
        let report = check.check(UNIX_EPOCH);
        assert_eq!(report.status, Status::Critical);
        assert!(report.to_string().starts_with("CRITICAL - "), "{report}");
        assert!(
            report.to_string().contains("carbon_failures=3;1;3"),
            "{report}"
        );
    }

    #[test]
    fn registry_reports_the_worst_status_and_no_checks_is_unknown() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(Registry::new().check(t0).status, Status::Unknown);
        let mut reg = Registry::new();
        reg.register(FlushLag::new(Duration::from_secs(10), t0));
        reg.register(SinkErrors::new("a", || SinkStats {
            consecutive_failures: 1,
            ..SinkStats::default()
        }));
        let r = reg.check(t0 + Duration::from_secs(1));
        assert_eq!(r.status, Status::Warning);
        assert!(r.summary.starts_with("a: "), "worst first: {}", r.summary);
        assert_eq!(r.status.code(), 1);
    }

    #[test]
    fn summary_cannot_break_the_plugin_line() {
        let r = Report::new(Status::Ok, "a|b\nc");
        assert_eq!(r.to_string(), "OK - a b c");
        let p = Perf::new("my label", 1.5, "s");
        assert_eq!(p.to_string(), "'my label'=1.5s");
    }
}
