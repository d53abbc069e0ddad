//! Helpers shared by the tests and benches of every crate in the workspace.
//!
//! Tests that talk to a real program start it themselves on a free loopback
//! port and stop it at the end; these are the pieces they share, so that each
//! thing is done one way:
//!
//! ```text
//!  free_port() ─▶ port ─┐
//!  peer("redis-server", "redis-server") ─▶ path │ (RedisServer starts its peer
//!                                               │  this way) (None: skipped, one line;
//!                                               │  REQUIRE_PEERS=1: a failure)
//!                                               │  a port may be taken before redis binds it: it
//!                                               │  checks INFO's process_id is its own (Beanstalkd
//!                                               │  binds port 0 and reads the port it prints)
//!                                               ▼
//!  Process::start(name, Command) ── kills and reaps it when dropped
//!     ├─ keeps its last output lines (stdout and stderr), for failure messages
//!     ├─ wait_for_line: "<name> listening on <addr>"
//!     ├─ rss_bytes: its resident memory now (rss_bytes(pid) for any process)
//!     └─ signal / terminate / kill / wait (bounded by WAIT_LIMIT)
//!  wait_for(what, condition) ── polls until it holds, panics after WAIT_LIMIT
//!  Poll { limit, pause }.until(..) ── the same with a value and a chosen limit
//!  webdriver::Browser::start() ── chromedriver (a Process) and a headless
//!     Chromium session: goto, find, click, send_keys, execute, console_logs,
//!     screenshot_png; webdriver::wait_until polls the page
//! ```
//!
//! Everything here is std only, but for serde_json in the WebDriver client:
//! the tests of every crate link it. Helpers
//! meant for tests panic with a message instead of returning errors where a
//! test could do nothing else; the process helpers return errors, so that
//! benches can report them.
//!
//! ```
//! use std::net::{TcpListener, TcpStream};
//! use std::process::Command;
//!
//! use test_support::{Process, Stream, free_port, wait_for};
//!
//! // A port nobody listens on now.
//! let port = free_port();
//! let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
//! wait_for("a connection to our listener", || {
//!     TcpStream::connect(("127.0.0.1", port)).is_ok()
//! });
//! drop(listener);
//!
//! // A child process, killed if the test ends before it does.
//! let mut cmd = Command::new("sh");
//! cmd.args(["-c", "echo 'demo listening on 127.0.0.1:7' >&2; exec sleep 60"]);
//! let demo = Process::start("demo", cmd).unwrap();
//! let line = demo.wait_for_line(Stream::Stderr, |_| true).unwrap();
//! assert_eq!(line, "demo listening on 127.0.0.1:7");
//! let status = demo.terminate().unwrap();
//! assert!(!status.success());
//! ```

mod beanstalkd;
mod peer;
mod port;
mod process;
mod redis;
mod wait;
pub mod webdriver;

pub use beanstalkd::Beanstalkd;
pub use peer::{REQUIRE_PEERS, on_path, peer, python_with};
pub use port::{free_port, free_ports};
pub use process::{Process, Stream, open_files_limit, rss_bytes};
pub use redis::{RedisServer, answers_ping, redis_cli};
pub use wait::{Poll, WAIT_LIMIT, wait_for};
