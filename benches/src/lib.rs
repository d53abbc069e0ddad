//! Helpers shared by the peer comparisons in `src/bin/` (`vs-redis`, `vs-tonic`, `vs-etsy-statsd`): errors with context, knobs from the environment, medians and ratios, a free loopback port, peer processes with their output kept.

use std::fmt::Display;

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

/// Starts `cmd` with its stdout and stderr kept (the last 200 lines, for
/// error messages); stdin is closed.
///
/// # Errors
/// The process does not start.
pub fn spawn_logged(mut cmd: std::process::Command, what: &str) -> Res<(std::process::Child, Log)> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("starting {what}"))?;
    let log = Log::default();
    if let Some(out) = child.stdout.take() {
        collect(out, Log::clone(&log));
    }
    if let Some(err) = child.stderr.take() {
        collect(err, Log::clone(&log));
    }
    Ok((child, log))
}

/// A loopback port free on both UDP and TCP: bound, read, released.
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> Res<u16> {
    use std::net::{TcpListener, UdpSocket};
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").ctx(|| "binding 127.0.0.1:0".into())?;
        let port = udp
            .local_addr()
            .ctx(|| "reading a bound address".into())?
            .port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no loopback port free on both UDP and TCP".into())
}

/// A peer process started with [`spawn_logged`]; killed and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    id: u32,
    child: std::sync::Mutex<std::process::Child>,
    log: Log,
}

impl Process {
    /// Starts `cmd` as [`spawn_logged`] does; `name` names it in messages.
    ///
    /// # Errors
    /// The process does not start.
    pub fn start(name: &'static str, cmd: std::process::Command) -> Res<Process> {
        let (child, log) = spawn_logged(cmd, name)?;
        Ok(Process {
            name,
            id: child.id(),
            child: std::sync::Mutex::new(child),
            log,
        })
    }

    /// The name it was started with.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The last 20 lines it printed.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let start = log.len().saturating_sub(20);
        log[start..].join("\n")
    }

    /// Checks the process is still running.
    ///
    /// # Errors
    /// It has exited (the message ends with its last output), or its
    /// status cannot be read.
    pub fn check_alive(&self) -> Res<()> {
        let status = self
            .child
            .lock()
            .map_err(|_| format!("{} mutex poisoned", self.name))?
            .try_wait()
            .ctx(|| format!("checking {}", self.name))?;
        match status {
            None => Ok(()),
            Some(st) => {
                // Let the log threads read what it printed last.
                std::thread::sleep(std::time::Duration::from_millis(200));
                Err(format!(
                    "{} exited ({st}); its last output:\n{}",
                    self.name,
                    self.log_tail()
                ))
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines a process printed, from [`spawn_logged`].
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn collect(pipe: impl std::io::Read + Send + 'static, log: Log) {
    use std::io::BufRead;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log.lock() {
                if l.len() >= 200 {
                    l.remove(0);
                }
                l.push(line);
            }
        }
    });
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
}
