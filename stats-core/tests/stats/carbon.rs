//! A real carbon-cache (Debian `graphite-carbon`) on loopback ports, and reading back what it stored.
//!
//! [`Carbon::start`] writes `carbon.conf`, `storage-schemas.conf` and
//! `storage-aggregation.conf` into a fresh temporary directory and runs
//! `carbon-cache --config=DIR/carbon.conf --nodaemon start` with everything
//! (whisper files, pid file, logs) inside that directory: the plaintext and
//! pickle receivers on free 127.0.0.1 ports, the cache query port on an
//! ephemeral one, no rate limits on creates or updates, no tags (they would
//! call graphite-web over HTTP), no self-reporting `carbon.*` metrics, and
//! one archive for every metric: `1s:1d`, one point per second for a day,
//! so a point sent with timestamp `ts` is read back at exactly `ts`. There
//! is no rollup; a second point for the same metric and second replaces
//! the first (last write wins).
//!
//! carbon-cache writes asynchronously: its writer thread sleeps up to a
//! second when its cache is empty, so a whisper file appears about 0.3 to
//! 1 s after the line arrives. [`Carbon::value_at`] polls the file with
//! `whisper-fetch --json` (Debian `python3-whisper`) until the point is
//! there; never sleep a fixed time instead.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use test_support::{Poll, Process, free_ports, peer};

/// How long carbon-cache may take to listen on its ports.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long [`Carbon::value_at`] waits for a point to be written.
const VALUE_LIMIT: Duration = Duration::from_secs(60);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(50);
/// Attempts at starting carbon-cache when it exits early (a port taken
/// between choosing it and carbon binding it).
const START_ATTEMPTS: usize = 3;

/// A carbon-cache process serving a temporary directory; killed (SIGKILL:
/// nothing carbon still holds in its cache matters then) and its directory
/// removed when dropped.
pub(crate) struct Carbon {
    process: Process,
    dir: tempfile::TempDir,
    line: SocketAddr,
    pickle: SocketAddr,
    whisper_fetch: PathBuf,
}

impl Carbon {
    /// Starts carbon-cache on free loopback ports; `None` (after printing
    /// one "SKIPPED: ..." line to stderr) when carbon-cache or whisper-fetch
    /// is not installed. Panics when `REQUIRE_PEERS=1` and one is missing,
    /// and when carbon-cache does not come up.
    pub(crate) fn start() -> Option<Carbon> {
        let carbon_cache = peer("carbon-cache", "graphite-carbon")?;
        let whisper_fetch = peer("whisper-fetch", "python3-whisper")?;
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&carbon_cache, &whisper_fetch) {
                Ok(carbon) => return Some(carbon),
                Err(log) => last_log = log,
            }
        }
        panic!(
            "carbon-cache exited before listening, {START_ATTEMPTS} times; the last time: {last_log}"
        );
    }

    /// One attempt: `Err` says how carbon exited early, with its output.
    fn try_start(carbon_cache: &Path, whisper_fetch: &Path) -> Result<Carbon, String> {
        let dir = tempfile::Builder::new()
            .prefix("carbon-")
            .tempdir()
            .expect("create a temporary directory for carbon-cache");
        let root = dir.path();
        let [line_port, pickle_port] = free_ports();
        let storage = root.join("storage");
        let conf = format!(
            "[cache]\n\
             STORAGE_DIR = {storage}\n\
             LOCAL_DATA_DIR = {storage}/whisper\n\
             WHITELISTS_DIR = {storage}/lists\n\
             LOG_DIR = {storage}/log\n\
             PID_DIR = {storage}\n\
             DATABASE = whisper\n\
             ENABLE_LOGROTATION = False\n\
             MAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = 1000000\n\
             MAX_CREATES_PER_MINUTE = 1000000\n\
             MIN_TIMESTAMP_RESOLUTION = 1\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\n\
             LINE_RECEIVER_PORT = {line_port}\n\
             ENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
             PICKLE_RECEIVER_PORT = {pickle_port}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\n\
             CACHE_QUERY_PORT = 0\n\
             USE_FLOW_CONTROL = True\n\
             LOG_UPDATES = False\n\
             LOG_CREATES = True\n\
             CACHE_WRITE_STRATEGY = sorted\n\
             WHISPER_AUTOFLUSH = False\n\
             WHISPER_SPARSE_CREATE = True\n\
             WHISPER_FALLOCATE_CREATE = False\n\
             ENABLE_TAGS = False\n\
             CARBON_METRIC_INTERVAL = 0\n",
            storage = storage.display()
        );
        let schemas = "[all]\npattern = .*\nretentions = 1s:1d\n";
        // One archive, so nothing is ever aggregated; written to say so
        // (and to keep carbon from logging its absence every minute).
        let aggregation = "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = last\n";
        for (name, text) in [
            ("carbon.conf", conf.as_str()),
            ("storage-schemas.conf", schemas),
            ("storage-aggregation.conf", aggregation),
        ] {
            std::fs::write(root.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
        let mut cmd = Command::new(carbon_cache);
        cmd.arg(format!("--config={}", root.join("carbon.conf").display()))
            .args(["--nodaemon", "start"])
            .env("PYTHONWARNINGS", "ignore");
        let carbon = Carbon {
            process: Process::start("carbon-cache", cmd).expect("spawn carbon-cache"),
            dir,
            line: SocketAddr::from(([127, 0, 0, 1], line_port)),
            pickle: SocketAddr::from(([127, 0, 0, 1], pickle_port)),
            whisper_fetch: whisper_fetch.to_owned(),
        };
        let up = |addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
        let started = Poll::limit(START_LIMIT).pause(POLL).until(|| {
            if let Err(exited) = carbon.process.check_running() {
                return Some(Err(exited));
            }
            (up(carbon.line) && up(carbon.pickle)).then_some(Ok(()))
        });
        match started {
            Some(Ok(())) => Ok(carbon),
            Some(Err(exited)) => Err(exited),
            None => panic!(
                "carbon-cache did not listen on {} and {} within {START_LIMIT:?}; its output:\n{}",
                carbon.line,
                carbon.pickle,
                carbon.log_tail()
            ),
        }
    }

    /// Where carbon-cache reads plaintext `path value timestamp\n` lines.
    pub(crate) fn line_addr(&self) -> SocketAddr {
        self.line
    }

    /// Where carbon-cache reads pickle messages: a 4-byte big-endian length,
    /// then a pickled list of `(path, (timestamp, value))`.
    pub(crate) fn pickle_addr(&self) -> SocketAddr {
        self.pickle
    }

    /// Polls, for at most 60 s, until whisper-fetch reports a value for the
    /// dotted metric `path` at the unix time `ts`, and returns it. Panics
    /// with what it saw when none comes. `ts` must lie within the last day
    /// (older points are dropped by whisper; future ones are only read back
    /// once their time has come); tagged paths (`a;k=v`) are not supported.
    pub(crate) fn value_at(&self, path: &str, ts: u64) -> f64 {
        let file = self.whisper_file(path);
        let mut seen = String::from("(the file never appeared)");
        // Some(None): carbon exited.
        let value = Poll::limit(VALUE_LIMIT).pause(POLL).until(|| {
            if file.is_file() {
                match self.fetch(&file, ts) {
                    Ok(Some(v)) => return Some(Some(v)),
                    Ok(None) => seen = format!("whisper-fetch: no value at {ts}"),
                    Err(e) => seen = e,
                }
            }
            self.exited().then_some(None)
        });
        value.flatten().unwrap_or_else(|| {
            panic!(
                "carbon-cache stored no value for {path} at {ts} within {VALUE_LIMIT:?} \
                 (carbon {}; {}: {seen}); carbon's output:\n{}",
                if self.exited() { "exited" } else { "running" },
                file.display(),
                self.log_tail()
            )
        })
    }

    /// The whisper file of a dotted metric path.
    fn whisper_file(&self, path: &str) -> PathBuf {
        let mut file = self.dir.path().join("storage/whisper");
        file.extend(path.split('.'));
        file.set_extension("wsp");
        file
    }

    /// The value stored at `ts` in `file`, as `whisper-fetch --json` prints
    /// it (Python's round-trip repr of the float, so exact).
    fn fetch(&self, file: &Path, ts: u64) -> Result<Option<f64>, String> {
        let out = Command::new(&self.whisper_fetch)
            .arg("--json")
            .arg(format!("--from={}", ts.saturating_sub(1)))
            .arg(format!("--until={ts}"))
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running whisper-fetch: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "whisper-fetch {}: {}{text}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let field = |name: &str| {
            let rest = &text[text.find(&format!("\"{name}\""))?..];
            let rest = rest[rest.find(':')? + 1..].trim_start();
            Some(rest)
        };
        let bad = || format!("unexpected whisper-fetch output: {text}");
        let start: u64 = field("start")
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let values = field("values")
            .and_then(|s| s.strip_prefix('['))
            .and_then(|s| s.split(']').next())
            .ok_or_else(bad)?;
        let Some(index) = ts.checked_sub(start) else {
            return Ok(None);
        };
        match values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .nth(index as usize)
        {
            None | Some("null") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| bad()),
        }
    }

    /// Whether the carbon-cache process has exited.
    fn exited(&self) -> bool {
        !matches!(self.process.try_wait(), Ok(None))
    }

    /// The last lines carbon-cache printed.
    fn log_tail(&self) -> String {
        self.process.tail(30)
    }
}

/// One pickle-protocol message as carbon's pickle receiver reads it: a
/// 4-byte big-endian length, then `[(path, (ts, value)), ...]` pickled with
/// protocol 2, opcode by opcode.
fn pickle_message(points: &[(&str, u64, f64)]) -> Vec<u8> {
    let mut body = vec![0x80, 2]; // PROTO 2
    body.push(b']'); // EMPTY_LIST
    for &(path, ts, value) in points {
        body.push(b'X'); // BINUNICODE: u32 little-endian length, UTF-8
        let len = u32::try_from(path.len()).expect("path length fits u32");
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(path.as_bytes());
        body.push(b'J'); // BININT: i32 little-endian
        let ts = i32::try_from(ts).expect("timestamp fits BININT");
        body.extend_from_slice(&ts.to_le_bytes());
        body.push(b'G'); // BINFLOAT: f64 big-endian
        body.extend_from_slice(&value.to_be_bytes());
        body.push(0x86); // TUPLE2: (ts, value)
        body.push(0x86); // TUPLE2: (path, (ts, value))
        body.push(b'a'); // APPEND
    }
    body.push(b'.'); // STOP
    let len = u32::try_from(body.len()).expect("message length fits u32");
    let mut message = len.to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

#[test]
fn carbon_stores_plaintext_and_pickle_points() {
    let Some(carbon) = Carbon::start() else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let ts = now - now % 60;

    let mut line = TcpStream::connect(carbon.line_addr()).expect("connect to the line receiver");
    line.write_all(format!("test.carbon.value 42 {ts}\n").as_bytes())
        .expect("write a plaintext line");
    let mut pickle =
        TcpStream::connect(carbon.pickle_addr()).expect("connect to the pickle receiver");
    pickle
        .write_all(&pickle_message(&[
            ("test.carbon.pickled", ts, 7.5),
            ("test.carbon.pickled", ts - 1, 0.1),
        ]))
        .expect("write a pickle message");

    assert_eq!(carbon.value_at("test.carbon.value", ts), 42.0);
    assert_eq!(carbon.value_at("test.carbon.pickled", ts), 7.5);
    assert_eq!(carbon.value_at("test.carbon.pickled", ts - 1), 0.1);
}
