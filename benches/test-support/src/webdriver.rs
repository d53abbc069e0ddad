//! A real headless Chromium for tests of web pages, driven over WebDriver by a tiny blocking client.
//!
//! ```text
//!  Browser::start()
//!    ├─ peer("chromedriver", "chromium-driver"), peer("chromium", "chromium")
//!    ├─ Process: chromedriver --port=<free_port()>   (killed when dropped)
//!    ├─ GET /status until "ready"
//!    └─ POST /session: headless Chromium, a fresh --user-data-dir
//!
//!  test ── goto / find / click / execute ... ──▶ one HTTP/1.1 request per call,
//!          (blocking, Result<_, String>)          on its own TcpStream
//!                                                 (Connection: close)
//!
//!  drop ── DELETE /session (Chromium quits) ─▶ kill what is left of
//!          chromedriver's children ─▶ kill chromedriver ─▶ remove the profile
//! ```
//!
//! What chromedriver 156 (Debian bookworm's `chromium-driver`) does, as
//! checked against it:
//!
//! - It frames every response with `Content-Length` (written without a space
//!   after the colon). Chunked bodies, and bodies that end with the
//!   connection, are read too.
//! - Console messages: `POST /session/{id}/se/log` with `{"type":"browser"}`
//!   returns them when the session asked for `goog:loggingPrefs`
//!   `{"browser":"ALL"}`; the legacy `/session/{id}/log` answers the same.
//!   Each call drains what it returns. `console.error` comes back with level
//!   `SEVERE`, `console.warn` `WARNING`, `console.log` `INFO`, and the message
//!   reads `console-api LINE:COLUMN "text"` (the URL first for a page served
//!   over HTTP).
//! - Errors come as a 4xx or 5xx status with
//!   `{"value":{"error":..,"message":..,"stacktrace":..}}`; the stack trace is
//!   addresses only and is left out of our messages.
//! - Chromium run as root needs `--no-sandbox`; every browser here gets it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{Poll, Process, WAIT_LIMIT, free_port, peer};

/// The key under which WebDriver names an element in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver request may take at most (navigation included:
/// the session's page load timeout is [`WAIT_LIMIT`], so chromedriver
/// answers with a `timeout` error before this passes).
const REQUEST_LIMIT: Duration = Duration::from_secs(90);

/// How long deleting the session may take when a [`Browser`] is dropped.
const QUIT_LIMIT: Duration = Duration::from_secs(20);

/// The largest response head (status line and headers) read.
const HEAD_LIMIT: usize = 64 * 1024;

/// The largest response body read: a full-page screenshot in base64 fits.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How many chromedriver ports are tried when one is taken between
/// [`free_port`] and chromedriver binding it.
const START_ATTEMPTS: usize = 3;

/// The arguments Chromium gets, besides `--user-data-dir`: headless, no
/// sandbox (required as root), and nothing that talks to the network on
/// its own.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// A headless Chromium in a WebDriver session of its own `chromedriver`, on
/// a free loopback port, with a fresh profile. Dropping it deletes the
/// session (Chromium quits), kills chromedriver and whatever it left
/// running, and removes the profile.
///
/// Every call is one blocking request. Errors are strings that name the
/// request and carry chromedriver's error JSON.
#[derive(Debug)]
pub struct Browser {
    driver: Driver,
    session: String,
    profile: PathBuf,
    process: Process,
}

impl Browser {
    /// Starts chromedriver and opens a session with a new headless
    /// Chromium; `None` when chromedriver (Debian package `chromium-driver`)
    /// or chromium (package `chromium`) is not installed: skipped with a
    /// line, as [`peer`] says, or a failure under `REQUIRE_PEERS=1`.
    ///
    /// # Panics
    /// When both are installed but the session cannot be opened; the
    /// message ends with chromedriver's last output.
    pub fn start() -> Option<Browser> {
        let driver_bin = peer("chromedriver", "chromium-driver")?;
        let chromium_bin = peer("chromium", "chromium")?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Browser::launch(&driver_bin, &chromium_bin) {
                Ok(browser) => return Some(browser),
                Err(Launch::Retry(e)) => last = e,
                Err(Launch::Fail(e)) => panic!("starting a headless Chromium: {e}"),
            }
        }
        panic!("starting a headless Chromium, {START_ATTEMPTS} attempts: {last}")
    }

    fn launch(driver_bin: &Path, chromium_bin: &Path) -> Result<Browser, Launch> {
        let port = free_port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"));
        let process =
            Process::start("chromedriver", cmd).map_err(|e| Launch::Fail(e.to_string()))?;
        let driver = Driver { port };
        let ready = Poll::default().pause(Duration::from_millis(20)).until(|| {
            if let Err(e) = process.check_running() {
                return Some(Err(Launch::Retry(e)));
            }
            let status = driver.request("GET", "/status", None, Duration::from_secs(5));
            status
                .ok()
                .filter(|s| s["ready"] == Value::Bool(true))
                .map(|_| Ok(()))
        });
        match ready {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Launch::Fail(format!(
                    "chromedriver on port {port} not ready after {WAIT_LIMIT:?}; its last output:\n{}",
                    process.tail(20)
                )));
            }
        }
        let profile = fresh_dir("test-support-chromium").map_err(Launch::Fail)?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let limit_ms = WAIT_LIMIT.as_millis() as u64;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": limit_ms, "script": limit_ms, "implicit": 0},
            "goog:chromeOptions": {
                "binary": chromium_bin.to_string_lossy(),
                "args": args,
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let opened = driver.request("POST", "/session", Some(&capabilities), REQUEST_LIMIT);
        let session = opened.and_then(|v| match v["sessionId"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(format!("POST /session: no sessionId in {v}")),
        });
        match session {
            Ok(session) => Ok(Browser {
                driver,
                session,
                profile,
                process,
            }),
            Err(e) => {
                let tail = process.tail(20);
                drop(process);
                let _ = std::fs::remove_dir_all(&profile);
                Err(Launch::Fail(format!(
                    "{e}; chromedriver's last output:\n{tail}"
                )))
            }
        }
    }

    /// Opens `url` and waits until the page has loaded.
    ///
    /// # Errors
    /// chromedriver refuses it or the page does not load in time.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).map(drop)
    }

    /// The title of the current page.
    ///
    /// # Errors
    /// The request fails.
    pub fn title(&self) -> Result<String, String> {
        string(self.get("/title")?, "the title")
    }

    /// The first element that the CSS selector `css` matches.
    ///
    /// # Errors
    /// No element matches (`no such element`), or the request fails.
    pub fn find(&self, css: &str) -> Result<Element<'_>, String> {
        let found = self.post("/element", json!({"using": "css selector", "value": css}))?;
        self.element(&found)
    }

    /// Every element that the CSS selector `css` matches, in document
    /// order; none is no error.
    ///
    /// # Errors
    /// The request fails.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, String> {
        let found = self.post("/elements", json!({"using": "css selector", "value": css}))?;
        let Value::Array(all) = found else {
            return Err(format!("finding {css:?}: not an array: {found}"));
        };
        all.iter().map(|e| self.element(e)).collect()
    }

    /// Runs `script` as the body of a function in the page, synchronously,
    /// with `args` as `arguments` ([`Element::reference`] passes an
    /// element), and returns what it returns.
    ///
    /// # Errors
    /// The script throws (`javascript error`), or the request fails.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.post("/execute/sync", json!({"script": script, "args": args}))
    }

    /// The console messages of the page since the last call (each call
    /// drains them; they survive navigation), from chromedriver's
    /// `/se/log` with type `browser`.
    ///
    /// # Errors
    /// The request fails, or an entry lacks its level or message.
    pub fn console_logs(&self) -> Result<Vec<LogEntry>, String> {
        let logs = self.post("/se/log", json!({"type": "browser"}))?;
        let Value::Array(entries) = logs else {
            return Err(format!("reading the console logs: not an array: {logs}"));
        };
        entries
            .iter()
            .map(|e| match (e["level"].as_str(), e["message"].as_str()) {
                (Some(level), Some(message)) => Ok(LogEntry {
                    level: level.to_owned(),
                    message: message.to_owned(),
                }),
                _ => Err(format!("a console log entry without level or message: {e}")),
            })
            .collect()
    }

    /// Writes a screenshot of the viewport to `path`, as PNG.
    ///
    /// # Errors
    /// The request fails, the answer is not base64 for a PNG, or the file
    /// cannot be written.
    pub fn screenshot_png(&self, path: &Path) -> Result<(), String> {
        let encoded = string(self.get("/screenshot")?, "the screenshot")?;
        let png = base64_decode(&encoded).map_err(|e| format!("the screenshot: {e}"))?;
        if !png.starts_with(PNG_SIGNATURE) {
            return Err("the screenshot is not a PNG".to_owned());
        }
        std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn element(&self, found: &Value) -> Result<Element<'_>, String> {
        match found[ELEMENT_KEY].as_str() {
            Some(id) => Ok(Element {
                browser: self,
                id: id.to_owned(),
            }),
            None => Err(format!("not an element reference: {found}")),
        }
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        self.driver.request("GET", &path, None, REQUEST_LIMIT)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        self.driver
            .request("POST", &path, Some(&body), REQUEST_LIMIT)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Every process under chromedriver, listed before Chromium quits:
        // its children that lose their parent are no longer descendants.
        let family = descendants(self.process.id());
        let path = format!("/session/{}", self.session);
        let _ = self.driver.request("DELETE", &path, None, QUIT_LIMIT);
        // Whatever Chromium left behind (it hung, or the session could not
        // be deleted): killed before chromedriver, while they are still
        // known as its descendants.
        let left = descendants(self.process.id());
        if !left.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(left.iter().map(u32::to_string))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.process.kill();
        // A kill is only sent: the profile is removed once nothing that
        // could still write into it runs.
        let _ = Poll::limit(QUIT_LIMIT)
            .pause(Duration::from_millis(20))
            .until(|| family.iter().all(|&p| !running(p)).then_some(()));
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Why one attempt at starting a browser failed.
enum Launch {
    /// chromedriver exited before it was ready (its port was taken, say).
    Retry(String),
    /// Anything else.
    Fail(String),
}

/// An element of the page a [`Browser`] shows, found by
/// [`Browser::find`] or [`Browser::find_all`]. It goes stale when the page
/// changes it away (`stale element reference`).
#[derive(Clone, Debug)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Element<'_> {
    /// Its rendered text, as a user sees it (`innerText`).
    ///
    /// # Errors
    /// It is stale, or the request fails.
    pub fn text(&self) -> Result<String, String> {
        string(self.get("/text")?, "the text")
    }

    /// Its attribute `name`, as the markup (or `setAttribute`) left it:
    /// for an input, `value` stays the initial value as the user types
    /// (see [`Element::property`]); `None` when it has no such attribute.
    ///
    /// # Errors
    /// It is stale, or the request fails.
    pub fn attr(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(&format!("/attribute/{}", path_segment(name)))? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(format!("attribute {name:?}: not a string: {other}")),
        }
    }

    /// Its DOM property `name` now (`value` of an input is what it holds,
    /// `checked` of a checkbox whether it is ticked), as JSON; `Null` when
    /// it has none.
    ///
    /// # Errors
    /// It is stale, or the request fails.
    pub fn property(&self, name: &str) -> Result<Value, String> {
        self.get(&format!("/property/{}", path_segment(name)))
    }

    /// Clicks it in the middle, scrolling it into view first.
    ///
    /// # Errors
    /// It is hidden or covered (`element not interactable`, `element click
    /// intercepted`), stale, or the request fails.
    pub fn click(&self) -> Result<(), String> {
        self.post("/click", json!({})).map(drop)
    }

    /// Empties it: a text field, or a content-editable element.
    ///
    /// # Errors
    /// It cannot be edited, is stale, or the request fails.
    pub fn clear(&self) -> Result<(), String> {
        self.post("/clear", json!({})).map(drop)
    }

    /// Types `text` into it, as keystrokes, after what it holds.
    ///
    /// # Errors
    /// It cannot take keys, is stale, or the request fails.
    pub fn send_keys(&self, text: &str) -> Result<(), String> {
        self.post("/value", json!({ "text": text })).map(drop)
    }

    /// The JSON that stands for it in [`Browser::execute`]'s `args`, where
    /// the script receives the DOM element.
    pub fn reference(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        self.browser.get(&format!("/element/{}{path}", self.id))
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.browser
            .post(&format!("/element/{}{path}", self.id), body)
    }
}

/// A console message of the page, as [`Browser::console_logs`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE` (`console.error`, uncaught exceptions, failed loads),
    /// `WARNING`, `INFO` (`console.log`, `console.info`) or `DEBUG`.
    pub level: String,
    /// Where it came from and the text: `console.error("boom")` on line 3
    /// of `http://127.0.0.1:PORT/` reads
    /// `http://127.0.0.1:PORT/ 3:16 "boom"`.
    pub message: String,
}

/// Polls `f` (every 20 ms) until it returns a value, and returns that
/// value: a bound on a wait for what is under way (a click's effect, a
/// console message), not a measure of how fast it happens; pass
/// [`WAIT_LIMIT`] unless a test needs less.
///
/// # Errors
/// The first error `f` returns, at once; or `timeout` passed and `f` has
/// still no value: the message names `what` was awaited.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    Poll::limit(timeout)
        .pause(Duration::from_millis(20))
        .until(|| f().transpose())
        .unwrap_or_else(|| Err(format!("timed out after {timeout:?} waiting for {what}")))
}

/// The first 8 bytes of every PNG file.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The client side of chromedriver's HTTP: one request per connection.
#[derive(Debug)]
struct Driver {
    port: u16,
}

impl Driver {
    /// Sends `method path` with `body` as JSON and returns the `value` of
    /// the JSON answer; an answer whose `value` holds an `error` is an
    /// error, as is any status but 200. `limit` bounds each read and write.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Value, String> {
        let what = format!("{method} {path}");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("{what}: connecting to chromedriver on {addr}: {e}"))?;
        let io = |e: io::Error| format!("{what}: {e}");
        stream.set_read_timeout(Some(limit)).map_err(io)?;
        stream.set_write_timeout(Some(limit)).map_err(io)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.port
        );
        if method != "GET" {
            request.push_str(&format!(
                "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).map_err(io)?;
        let (status, answer) = read_response(&mut stream).map_err(|e| format!("{what}: {e}"))?;
        let _ = stream.shutdown(Shutdown::Both);
        answer_value(status, &answer).map_err(|e| format!("{what}: {e}"))
    }
}

/// The `value` of a WebDriver answer with HTTP `status` and body `answer`.
fn answer_value(status: u16, answer: &[u8]) -> Result<Value, String> {
    let parsed: Result<Value, _> = serde_json::from_slice(answer);
    let Ok(mut json) = parsed else {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(500)]);
        return Err(format!("HTTP {status}, not JSON: {text:?}"));
    };
    let mut value = json["value"].take();
    if value.get("error").is_some() {
        if let Some(v) = value.as_object_mut() {
            v.remove("stacktrace");
        }
        return Err(format!("WebDriver error (HTTP {status}): {value}"));
    }
    if status != 200 {
        return Err(format!("HTTP {status}: {json}"));
    }
    Ok(value)
}

/// How a response body ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// Reads one HTTP/1.1 response from `stream`: its status and its body
/// (chunks joined), within [`HEAD_LIMIT`] and [`BODY_LIMIT`].
fn read_response(stream: &mut impl Read) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_LIMIT {
            return Err(format!("a response head over {HEAD_LIMIT} bytes"));
        }
        if fill(stream, &mut buf)? == 0 {
            return Err(format!(
                "closed within the response head ({} bytes)",
                buf.len()
            ));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "a response head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("not an HTTP/1 status line: {status_line:?}"))?;
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| format!("a bad Content-Length: {value:?}"))?;
            framing = Framing::Length(n);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().ends_with("chunked")
        {
            framing = Framing::Chunked;
            break;
        }
    }
    let mut body = buf.split_off(head_end);
    match framing {
        Framing::Length(n) => {
            if n > BODY_LIMIT {
                return Err(format!("a body of {n} bytes, over {BODY_LIMIT}"));
            }
            while body.len() < n {
                if fill(stream, &mut body)? == 0 {
                    return Err(format!("closed after {} of {n} body bytes", body.len()));
                }
            }
            body.truncate(n);
            Ok((status, body))
        }
        Framing::Chunked => Ok((status, read_chunked(stream, body)?)),
        Framing::Close => {
            while fill(stream, &mut body)? != 0 {
                if body.len() > BODY_LIMIT {
                    return Err(format!("a body over {BODY_LIMIT} bytes"));
                }
            }
            Ok((status, body))
        }
    }
}

/// Decodes a chunked body, of which `pending` has been read already.
fn read_chunked(stream: &mut impl Read, mut pending: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&pending, b"\r\n") {
                break i;
            }
            if pending.len() > HEAD_LIMIT {
                return Err("a chunk size line too long".to_owned());
            }
            if fill(stream, &mut pending)? == 0 {
                return Err("closed within a chunk size line".to_owned());
            }
        };
        let line = String::from_utf8_lossy(&pending[..line_end]);
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| format!("a bad chunk size line: {line:?}"))?;
        if size == 0 {
            // Trailers, if any, are not read: the connection closes.
            return Ok(body);
        }
        if size > BODY_LIMIT - body.len() {
            return Err(format!("a chunked body over {BODY_LIMIT} bytes"));
        }
        let chunk_end = line_end + 2 + size;
        while pending.len() < chunk_end + 2 {
            if fill(stream, &mut pending)? == 0 {
                return Err("closed within a chunk".to_owned());
            }
        }
        if &pending[chunk_end..chunk_end + 2] != b"\r\n" {
            return Err("a chunk not followed by CRLF".to_owned());
        }
        body.extend_from_slice(&pending[line_end + 2..chunk_end]);
        pending.drain(..chunk_end + 2);
    }
}

/// Reads what `stream` has into the end of `buf`; 0 at its end.
fn fill(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `value` as a string, or an error naming `what` it should have been.
fn string(value: Value, what: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("{what}: not a string: {other}")),
    }
}

/// `s` percent-encoded for one segment of a URL path.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes standard base64 (RFC 4648, `+/`, padded).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return Err(format!(
            "base64 of {} characters, not a multiple of 4",
            text.len()
        ));
    }
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (i, quad) in text.chunks_exact(4).enumerate() {
        let pad = match quad {
            [.., b'=', b'='] => 2,
            [.., b'='] => 1,
            _ => 0,
        };
        if pad > 0 && i + 1 != quads {
            return Err(format!("base64 padding before the end, at {}", i * 4));
        }
        let mut n = 0u32;
        for (j, &c) in quad.iter().enumerate() {
            let v = if j >= 4 - pad {
                0
            } else {
                sextet(c)
                    .ok_or_else(|| format!("not base64: {:?} at {}", char::from(c), i * 4 + j))?
            };
            n = n << 6 | u32::from(v);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

/// A new empty directory under the system's temporary directory, named
/// after `prefix`, this process and a counter.
fn fresh_dir(prefix: &str) -> Result<PathBuf, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for _ in 0..10 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    Err(format!("no fresh directory for {prefix}: {last:?}"))
}

/// The processes descended from `pid` now, parents before their
/// children, from `/proc/*/stat`; none where there is no `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // "PID (COMM) STATE PPID ...", where COMM may hold anything.
            let after = &stat[stat.rfind(')')? + 1..];
            let parent = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == p && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Whether `pid` is a process that still runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Hands out `data` split at the given offsets, one piece per read.
    struct Pieces {
        pieces: Vec<Vec<u8>>,
    }

    impl Pieces {
        fn split(data: &[u8], at: &[usize]) -> Pieces {
            let mut pieces = Vec::new();
            let mut from = 0;
            for &i in at.iter().chain(std::iter::once(&data.len())) {
                pieces.push(data[from..i].to_vec());
                from = i;
            }
            pieces.retain(|p| !p.is_empty());
            pieces.reverse();
            Pieces { pieces }
        }
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut piece) = self.pieces.pop() else {
                return Ok(0);
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            if n < piece.len() {
                self.pieces.push(piece.split_off(n));
            }
            Ok(n)
        }
    }

    /// Reads `wire` whole, then split at every byte boundary, and then one
    /// byte per read; every reading must agree.
    fn read_every_way(wire: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let whole = read_response(&mut Pieces::split(wire, &[]));
        for i in 1..wire.len() {
            let split = read_response(&mut Pieces::split(wire, &[i]));
            assert_eq!(split, whole, "split at {i}");
        }
        let every: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(read_response(&mut Pieces::split(wire, &every)), whole);
        whole
    }

    #[test]
    fn reads_chromedriver_content_length_answers() {
        // As chromedriver 156 writes them: no space after the colon.
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length:12\r\nContent-Type:application/json; charset=utf-8\r\ncache-control:no-cache\r\n\r\n{\"value\":[]}";
        assert_eq!(read_every_way(wire), Ok((200, b"{\"value\":[]}".to_vec())));
        let extra = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(read_every_way(extra), Ok((404, b"{}".to_vec())));
    }

    #[test]
    fn reads_chunked_and_close_delimited_answers() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"val\r\n9;ext=1\r\nue\":true}\r\n0\r\n\r\n";
        assert_eq!(
            read_every_way(chunked),
            Ok((200, b"{\"value\":true}".to_vec()))
        );
        let close = b"HTTP/1.0 200 OK\r\n\r\n{\"value\":1}";
        assert_eq!(read_every_way(close), Ok((200, b"{\"value\":1}".to_vec())));
    }

    #[test]
    fn truncated_or_oversized_answers_are_errors() {
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}";
        assert!(read_every_way(short).is_err_and(|e| e.contains("closed after 2 of 10")));
        let cut = b"HTTP/1.1 200 OK\r\nContent-Le";
        assert!(read_every_way(cut).is_err_and(|e| e.contains("within the response head")));
        let chunk_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc";
        assert!(read_every_way(chunk_cut).is_err_and(|e| e.contains("within a chunk")));
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 1
        );
        assert!(read_every_way(huge.as_bytes()).is_err_and(|e| e.contains("over")));
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(read_every_way(bad_size).is_err_and(|e| e.contains("bad chunk size")));
        assert!(read_every_way(b"SSH-2.0-x\r\n\r\n").is_err_and(|e| e.contains("status line")));
        let endless = vec![b'x'; HEAD_LIMIT + 2];
        assert!(read_response(&mut &endless[..]).is_err_and(|e| e.contains("head over")));
    }

    #[test]
    fn error_answers_carry_the_error_json_without_the_stack() {
        let answer = br##"{"value":{"error":"no such element","message":"no such element: Unable to locate element","stacktrace":"#0 0x1 <unknown>"}}"##;
        let e = answer_value(404, answer).unwrap_err();
        assert!(e.contains("HTTP 404"), "{e}");
        assert!(e.contains(r#""error":"no such element""#), "{e}");
        assert!(!e.contains("stacktrace"), "{e}");
        assert_eq!(
            answer_value(200, br#"{"value":{"a":1}}"#),
            Ok(json!({"a": 1}))
        );
        assert_eq!(answer_value(200, br#"{"value":null}"#), Ok(Value::Null));
        assert!(answer_value(500, b"oops").is_err_and(|e| e.contains("not JSON")));
        assert!(answer_value(500, br#"{"value":1}"#).is_err_and(|e| e.contains("HTTP 500")));
    }

    #[test]
    fn base64_decodes_and_rejects_garbage() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYmFy", b"foobar"),
            ("iVBORw0KGgo=", PNG_SIGNATURE),
            ("+/8=", b"\xfb\xff"),
        ] {
            assert_eq!(base64_decode(text).as_deref(), Ok(bytes), "{text}");
        }
        assert!(base64_decode("Zm9").is_err());
        assert!(base64_decode("Zm-v").is_err());
        assert!(base64_decode("Zg==Zm9v").is_err());
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("data-x_1.~"), "data-x_1.~");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn wait_until_returns_the_value_the_first_error_or_times_out() {
        let mut calls = 0;
        let v = wait_until("the third call", WAIT_LIMIT, || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        });
        assert_eq!(v, Ok(3));
        let e = wait_until::<()>("nothing", WAIT_LIMIT, || Err("gone".to_owned()));
        assert_eq!(e, Err("gone".to_owned()));
        let e = wait_until::<()>("the impossible", Duration::from_millis(30), || Ok(None));
        assert!(e.is_err_and(|e| e.contains("waiting for the impossible")));
    }

    const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>webdriver test page</title></head>
<body>
<input id="name" value="old">
<button id="add" data-role="adder">add</button>
<ul id="out"></ul>
<div id="payload"></div>
<script>
console.error("boom at load");
document.getElementById("add").addEventListener("click", () => {
  const li = document.createElement("li");
  li.textContent = "hello " + document.getElementById("name").value;
  document.getElementById("out").appendChild(li);
});
document.getElementById("payload").textContent = "<script>window.pwned = 1</" + "script>";
</script>
</body></html>
"#;

    /// Serves `PAGE` at `/` (and 404 elsewhere) on a free loopback port
    /// until dropped.
    struct Site {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Site {
        fn start() -> Site {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            let port = listener.local_addr().expect("its address").port();
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = Site::answer(conn);
                    }
                }
            });
            Site {
                port,
                stop,
                thread: Some(thread),
            }
        }

        fn answer(conn: TcpStream) -> io::Result<()> {
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut reader = io::BufReader::new(&conn);
            let mut request_line = String::new();
            reader.read_line(&mut request_line)?;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                    break;
                }
            }
            let (status, body) = if request_line.starts_with("GET / ") {
                ("200 OK", PAGE)
            } else {
                ("404 Not Found", "")
            };
            let mut conn = &conn;
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }

        fn url(&self) -> String {
            format!("http://127.0.0.1:{}/", self.port)
        }
    }

    impl Drop for Site {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn drives_a_real_headless_chromium() {
        let Some(browser) = Browser::start() else {
            return;
        };
        let site = Site::start();
        browser.goto(&site.url()).expect("goto");
        assert_eq!(browser.title().as_deref(), Ok("webdriver test page"));

        let name = browser.find("#name").expect("the input");
        assert_eq!(name.attr("value"), Ok(Some("old".to_owned())));
        name.clear().expect("clear");
        name.send_keys("Ada").expect("send_keys");
        assert_eq!(name.property("value"), Ok(json!("Ada")));
        assert_eq!(
            name.attr("value"),
            Ok(Some("old".to_owned())),
            "the markup's"
        );
        assert_eq!(name.property("no_such_property"), Ok(Value::Null));

        let add = browser.find("#add").expect("the button");
        assert_eq!(add.attr("data-role"), Ok(Some("adder".to_owned())));
        assert_eq!(add.attr("data-missing"), Ok(None));
        add.click().expect("click");
        add.click().expect("click");
        let items = wait_until("two list items", WAIT_LIMIT, || {
            let items = browser.find_all("#out li")?;
            Ok((items.len() == 2).then_some(items))
        })
        .expect("the clicks' effect");
        assert_eq!(items[1].text().as_deref(), Ok("hello Ada"));

        // Inserted as text, the markup stays text: no script element, not run.
        let payload = browser.find("#payload").expect("the payload");
        assert_eq!(
            payload.text().as_deref(),
            Ok("<script>window.pwned = 1</script>")
        );
        assert_eq!(browser.find_all("#payload script").map(|v| v.len()), Ok(0));
        assert_eq!(
            browser.execute("return window.pwned === undefined", vec![]),
            Ok(json!(true))
        );

        assert_eq!(
            browser.execute(
                "return arguments[0] + arguments[1]",
                vec![json!(2), json!(3)]
            ),
            Ok(json!(5))
        );
        assert_eq!(
            browser.execute("return arguments[0].textContent", vec![add.reference()]),
            Ok(json!("add"))
        );
        let e = browser
            .execute("throw new Error('thrown on purpose')", vec![])
            .unwrap_err();
        assert!(
            e.contains("javascript error") && e.contains("thrown on purpose"),
            "{e}"
        );
        let e = browser.find("#nowhere").expect_err("no such element");
        assert!(
            e.contains("no such element") && e.contains("#nowhere"),
            "{e}"
        );

        let mut seen = Vec::new();
        let boom = wait_until("console.error's message", WAIT_LIMIT, || {
            seen.extend(browser.console_logs()?);
            Ok(seen
                .iter()
                .find(|l| l.message.contains("boom at load"))
                .cloned())
        })
        .expect("the console error");
        assert_eq!(boom.level, "SEVERE", "{boom:?}");
        assert!(boom.message.starts_with(&site.url()), "{boom:?}");
        browser
            .execute("console.warn('careful')", vec![])
            .expect("warn");
        let warning = wait_until("console.warn's message", WAIT_LIMIT, || {
            Ok(browser
                .console_logs()?
                .into_iter()
                .find(|l| l.message.contains("careful")))
        })
        .expect("the console warning");
        assert_eq!(warning.level, "WARNING");

        let shot = fresh_dir("test-support-screenshot").expect("a directory");
        let png = shot.join("page.png");
        browser.screenshot_png(&png).expect("screenshot");
        let bytes = std::fs::read(&png).expect("the screenshot file");
        assert!(
            bytes.len() > 1000 && bytes.starts_with(PNG_SIGNATURE),
            "{}",
            bytes.len()
        );
        std::fs::remove_dir_all(&shot).expect("remove the screenshot");

        let driver = browser.process.id();
        let profile = browser.profile.clone();
        let family = descendants(driver);
        assert!(!family.is_empty(), "chromium runs under chromedriver");
        drop(browser);
        assert!(!running(driver), "chromedriver still runs");
        for pid in family {
            assert!(!running(pid), "chromium process {pid} still runs");
        }
        assert!(!profile.exists(), "{} left behind", profile.display());
    }
}
