//! Helpers shared by the peer comparisons in `src/bin/` (`vs-redis`, `vs-redis-streams`, `vs-tonic`, `vs-etsy-statsd`): errors with context, knobs from the environment, medians and ratios, a process's CPU time. Free ports, peer processes and polling come from `test-support`.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A comparison's result: its errors are messages for the person running it.
pub type Res<T> = Result<T, String>;

/// Adds a description of what was being done to an error.
pub trait Context<T> {
    /// The error, prefixed with `what`.
    ///
    /// # Errors
    /// The original error, described.
    fn ctx(self, what: impl FnOnce() -> String) -> Res<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Res<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

/// The environment variable `name` parsed, or `default` when it is not set.
///
/// # Errors
/// The variable is set but does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Res<T>
where
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ctx(|| format!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

/// The median, NaN for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `a / b`, NaN when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`).
///
/// # Errors
/// `getconf` does not run or prints no number.
pub fn clock_ticks() -> Res<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ctx(|| "running getconf CLK_TCK".into())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<f64>()
        .ctx(|| format!("getconf CLK_TCK printed {text:?}"))
}

/// utime + stime of process `pid` (all its threads), in clock ticks.
///
/// # Errors
/// `/proc/<pid>/stat` cannot be read or parsed (the process is gone, say).
pub fn cpu_ticks(pid: u32) -> Res<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let field = |i: usize| -> Res<u64> {
        fields
            .get(i - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{path}: field {i} missing"))
    };
    Ok(field(14)? + field(15)?)
}

/// `min-max` of rates.
pub fn range(rates: &[f64]) -> String {
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}-{max:.0}")
}

/// Appends timed by [`fsync_latency`].
pub const FSYNC_SAMPLES: usize = 50;

/// The median time, in microseconds, of appending 4 KiB to a file in `dir`
/// and `fdatasync`ing it: the disk's price of one durable write, which
/// bounds both servers (it varies with what else writes to the disk).
pub fn fsync_latency(dir: &Path) -> Res<f64> {
    let path = dir.join("fsync-probe");
    let _cleanup = RemoveOnDrop(path.clone());
    let mut f = std::fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
    let block = [b'x'; 4096];
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    for _ in 0..FSYNC_SAMPLES {
        let t = Instant::now();
        f.write_all(&block)
            .and_then(|()| f.sync_data())
            .ctx(|| format!("writing and syncing {}", path.display()))?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(samples))
}

/// A directory (or file) removed when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median([]).is_nan());
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(1.0, 0.0).is_nan());
    }

    #[test]
    fn our_own_cpu_time_reads() {
        assert!(clock_ticks().expect("CLK_TCK") > 0.0);
        cpu_ticks(std::process::id()).expect("our own /proc stat");
    }
}
