//! A child process that is killed when dropped and keeps its last output lines.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::wait::{Poll, WAIT_LIMIT};

/// How many output lines a [`Process`] keeps (its stdout and stderr together).
const KEPT_LINES: usize = 200;

/// How long, once a process has exited, it may take to close its output
/// (a child of its own may hold it open).
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Which output of a process a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// A child process, killed (SIGKILL) and reaped when dropped, so that a
/// failing test never leaves one behind. It keeps the last 200 lines its
/// output pipes carried, for failure messages ([`Process::tail`]) and to
/// wait for a line it prints ([`Process::wait_for_line`]).
///
/// Every method takes `&self`: a process can be signalled and checked from
/// wherever it is shared.
#[derive(Debug)]
pub struct Process {
    name: String,
    id: u32,
    child: Mutex<Child>,
    output: Arc<Output>,
}

impl Process {
    /// Starts `cmd` with stdin closed and its stdout and stderr kept;
    /// `name` names it in messages.
    ///
    /// # Errors
    /// The process does not start (the error names it).
    pub fn start(name: impl Into<String>, cmd: Command) -> io::Result<Process> {
        let (process, stdout) = Self::spawn(name.into(), cmd)?;
        process.output.collect(stdout, Stream::Stdout);
        Ok(process)
    }

    /// Starts `cmd` as [`Process::start`] does, but hands its stdout to the
    /// caller, to read all of it; only its stderr is kept.
    ///
    /// # Errors
    /// The process does not start (the error names it).
    pub fn start_with_stdout(
        name: impl Into<String>,
        cmd: Command,
    ) -> io::Result<(Process, ChildStdout)> {
        Self::spawn(name.into(), cmd)
    }

    fn spawn(name: String, mut cmd: Command) -> io::Result<(Process, ChildStdout)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {name}: {e}")))?;
        let output = Arc::new(Output::default());
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("both pipes were asked for");
        };
        output.collect(stderr, Stream::Stderr);
        let process = Process {
            name,
            id: child.id(),
            child: Mutex::new(child),
            output,
        };
        Ok((process, stdout))
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its resident set size now, in bytes (`VmRSS` of `/proc/PID/status`);
    /// `None` once it has exited or where there is no `/proc`.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.id)
    }

    /// The last `n` lines it printed (of those kept), one per line.
    pub fn tail(&self, n: usize) -> String {
        let state = self.output.lock();
        let skip = state.kept.len().saturating_sub(n);
        let lines: Vec<&str> = state.kept.iter().skip(skip).map(|l| l.2.as_str()).collect();
        lines.join("\n")
    }

    /// Its exit status, once it has exited.
    ///
    /// # Errors
    /// Its status cannot be read.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.lock_child().try_wait()
    }

    /// Checks it is still running.
    ///
    /// # Errors
    /// It has exited: the message gives its status and ends with its last
    /// 20 lines of output. Or its status cannot be read.
    pub fn check_running(&self) -> Result<(), String> {
        match self.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.output.wait_closed(CLOSE_LIMIT);
                Err(format!(
                    "{} exited ({status}); its last output:\n{}",
                    self.name,
                    self.tail(20)
                ))
            }
            Err(e) => Err(format!("checking whether {} runs: {e}", self.name)),
        }
    }

    /// Waits, at most [`WAIT_LIMIT`], for the first line on `stream` that
    /// `matches` accepts (of the lines it printed since it started, as long
    /// as they are kept), and returns it. `|_| true` is the first line.
    ///
    /// # Errors
    /// The stream closed, or the limit passed, without such a line: the
    /// message ends with its last 20 lines of output.
    pub fn wait_for_line(
        &self,
        stream: Stream,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut next = 0u64;
        let mut state = self.output.lock();
        loop {
            let first = state.dropped;
            let from = next.max(first);
            for (index, from_stream, line) in state.kept.iter().skip((from - first) as usize) {
                if *from_stream == stream && matches(line) {
                    return Ok(line.clone());
                }
                next = index + 1;
            }
            let closed = state.open[stream as usize] == 0;
            let now = Instant::now();
            if closed || now >= deadline {
                drop(state);
                return Err(format!(
                    "{} printed no such line on its {stream:?} ({}); its last output:\n{}",
                    self.name,
                    if closed {
                        "it closed the stream".to_owned()
                    } else {
                        format!("waited {WAIT_LIMIT:?}")
                    },
                    self.tail(20)
                ));
            }
            state = self
                .output
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends it the signal `signal` (`TERM`, `HUP`, `STOP`, `CONT`, `KILL`)
    /// with `kill -s`.
    ///
    /// # Errors
    /// kill(1) does not run or fails (the process is gone, say).
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let out = Command::new("kill")
            .args(["-s", signal, &self.id.to_string()])
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -s {signal} {} ({}): {}: {}",
                self.id,
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Waits, at most [`WAIT_LIMIT`], for it to exit, then (at most a
    /// second) for its output to close, so that [`Process::tail`] holds its
    /// last words.
    ///
    /// # Errors
    /// Its status cannot be read, or it still runs after the limit
    /// ([`io::ErrorKind::TimedOut`]; it is killed when dropped).
    pub fn wait(&self) -> io::Result<ExitStatus> {
        let status = Poll::default()
            .until(|| self.try_wait().transpose())
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} still runs after {WAIT_LIMIT:?}", self.name),
                ))
            })?;
        self.output.wait_closed(CLOSE_LIMIT);
        Ok(status)
    }

    /// Sends it SIGTERM and [waits](Process::wait) for it to exit.
    ///
    /// # Errors
    /// As [`Process::signal`] and [`Process::wait`].
    pub fn terminate(&self) -> io::Result<ExitStatus> {
        self.signal("TERM")?;
        self.wait()
    }

    /// Kills it (SIGKILL) and reaps it.
    ///
    /// # Errors
    /// It cannot be killed or reaped.
    pub fn kill(&self) -> io::Result<ExitStatus> {
        let mut child = self.lock_child();
        child.kill()?;
        child.wait()
    }

    fn lock_child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The lines a process printed, shared with the threads that read its pipes.
#[derive(Debug, Default)]
struct Output {
    state: Mutex<Lines>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Lines {
    /// (index since start, stream, line); the last [`KEPT_LINES`].
    kept: VecDeque<(u64, Stream, String)>,
    /// How many lines were dropped from the front: the index of the first kept.
    dropped: u64,
    /// Pipes still open, by stream.
    open: [usize; 2],
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads `pipe` line by line on a thread of its own, until it closes.
    fn collect(self: &Arc<Self>, pipe: impl Read + Send + 'static, stream: Stream) {
        self.lock().open[stream as usize] += 1;
        let output = Arc::clone(self);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => output.push(stream, &buf),
                }
            }
            output.lock().open[stream as usize] -= 1;
            output.changed.notify_all();
        });
    }

    fn push(&self, stream: Stream, raw: &[u8]) {
        let line = String::from_utf8_lossy(raw);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line).to_owned();
        let mut state = self.lock();
        if state.kept.len() == KEPT_LINES {
            state.kept.pop_front();
            state.dropped += 1;
        }
        let index = state.dropped + state.kept.len() as u64;
        state.kept.push_back((index, stream, line));
        drop(state);
        self.changed.notify_all();
    }

    /// Waits, at most `limit`, until every pipe has closed.
    fn wait_closed(&self, limit: Duration) {
        let state = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(state, limit, |s| s.open != [0, 0])
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// The resident set size of process `pid` now, in bytes (`VmRSS` of
/// `/proc/PID/status`); `None` when it is gone or there is no `/proc`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit on open files of this process (its children inherit
/// it), from `/proc/self/limits`; `None` when unlimited or there is no `/proc`.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_of_this_process_is_read_and_a_missing_one_is_none() {
        let rss = super::rss_bytes(std::process::id()).expect("linux /proc");
        assert!(rss > 100 * 1024, "{rss}");
        assert_eq!(super::rss_bytes(u32::MAX), None);
    }

    #[test]
    fn the_open_files_limit_is_read() {
        let limit = super::open_files_limit().expect("linux /proc, a finite limit");
        assert!(limit >= 64, "{limit}");
    }

    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn keeps_the_last_lines() {
        let p = Process::start(
            "counter",
            sh("i=0; while [ $i -lt 250 ]; do echo out $i; i=$((i+1)); done; echo last"),
        )
        .expect("start");
        assert!(p.wait().expect("wait").success());
        assert!(
            p.check_running()
                .is_err_and(|e| e.contains("counter exited"))
        );
        let tail = p.tail(3);
        assert_eq!(tail, "out 248\nout 249\nlast");
        assert_eq!(p.tail(1000).lines().count(), KEPT_LINES);
    }

    #[test]
    fn finds_a_line_on_one_stream_and_fails_when_it_closes() {
        let p = Process::start(
            "talker",
            sh("echo 'talker listening on here' ; echo warming >&2; echo 'talker listening on there' >&2; exec sleep 60"),
        )
        .expect("start");
        let line = p
            .wait_for_line(Stream::Stderr, |l| l.contains("listening"))
            .expect("a listening line on stderr");
        assert_eq!(line, "talker listening on there");
        assert_eq!(
            p.wait_for_line(Stream::Stderr, |_| true).as_deref(),
            Ok("warming")
        );
        assert!(p.check_running().is_ok());
        p.kill().expect("kill");
        let e = p
            .wait_for_line(Stream::Stdout, |l| l == "never")
            .unwrap_err();
        assert!(e.contains("closed the stream"), "{e}");
    }

    #[test]
    fn signals_and_hands_out_stdout() {
        let (p, mut stdout) =
            Process::start_with_stdout("echo", sh("echo hello; echo note >&2; exec sleep 60"))
                .expect("start");
        let mut first = String::new();
        BufReader::new(&mut stdout)
            .read_line(&mut first)
            .expect("read");
        assert_eq!(first, "hello\n");
        assert_eq!(
            p.wait_for_line(Stream::Stderr, |_| true).as_deref(),
            Ok("note")
        );
        let status = p.terminate().expect("terminate");
        assert!(!status.success());
        assert!(p.signal("TERM").is_err(), "reaped: no such process");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let e = Process::start("ghost", Command::new("no-such-program-anywhere")).unwrap_err();
        assert!(e.to_string().starts_with("starting ghost: "), "{e}");
    }
}
