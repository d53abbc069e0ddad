//! Runs each example program as a user would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_support::{Process, Stream, free_port, wait_for};

// The abuse suites: each repeats, against the real program, what a hostile
// or careless client did to it, and checks that another client is still
// served, the memory stays bounded and the drop is counted.
#[path = "examples/abuse_kids.rs"]
mod abuse_kids;
#[path = "examples/abuse_statsd.rs"]
mod abuse_statsd;
#[path = "examples/abuse_wish.rs"]
mod abuse_wish;
#[path = "examples/beanstalk.rs"]
mod beanstalk;
#[path = "examples/explorer.rs"]
mod explorer;
#[path = "examples/sink.rs"]
mod sink;
#[path = "examples/wish_py.rs"]
mod wish_py;

#[path = "examples/miller.rs"]
mod miller;

/// Starts an example program from `cmd` (its arguments already set), with
/// its output kept; returns it and the rest of the line where it says it
/// listens (see [`listening_on`]).
fn start_program(cmd: Command, name: &str) -> (Process, String) {
    let process = Process::start(name, cmd).unwrap_or_else(|e| panic!("{e}"));
    let rest = listening_on(&process, name);
    (process, rest)
}

/// The rest of the line where `process` says it listens: its first line on
/// stderr must be `<name> listening on <rest>`.
fn listening_on(process: &Process, name: &str) -> String {
    let line = process
        .wait_for_line(Stream::Stderr, |_| true)
        .unwrap_or_else(|e| panic!("the listening line: {e}"));
    line.trim()
        .strip_prefix(&format!("{name} listening on "))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string()
}

/// Starts the kids example with `args` on `port` (0: a free one); returns
/// it and the address it listens on.
fn start_kids(args: &[&std::ffi::OsStr], port: u16) -> (Process, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kids"));
    cmd.args(args)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    start_program(cmd, "kids")
}

/// Sends SIGTERM to `process` and waits for it to exit.
fn sigterm_and_wait(process: &Process) -> ExitStatus {
    process.terminate().expect("SIGTERM and wait")
}

#[test]
fn kids_serves_and_exits_0_on_sigterm() {
    let (child, addr) = start_kids(&[], 0);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n")
        .expect("send");
    let mut reply = [0u8; 15];
    conn.read_exact(&mut reply).expect("replies");
    assert_eq!(&reply, b"+PONG\r\n$2\r\nhi\r\n");
    let status = sigterm_and_wait(&child);
    assert_eq!(status.code(), Some(0), "kids exits 0 on SIGTERM");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after shutdown: {rest:?}");
}

#[test]
fn kids_rejects_unknown_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_kids"))
        .arg("--bogus")
        .output()
        .expect("run kids");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}

/// End to end, real processes on loopback: an agent forwarding to a
/// server, with either of them killed mid-stream.
mod e2e {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use bytes::BytesMut;
    use kids_core::{Frame, FrameCodec, Proto};
    use test_support::{Poll, Process, free_port, wait_for};
    use tokio_util::codec::Decoder;

    use super::sigterm_and_wait;

    const TOPICS: [&str; 3] = ["web", "db", "mail"];
    /// Spool bytes of the smallest `message`: 8 framing + 4 topic length +
    /// topic (2) + message (topic, space, 8 digits, space, 60 bytes).
    const MIN_RECORD: u64 = 8 + 4 + 2 + (2 + 1 + 8 + 1 + 60);

    /// A kids process started from a config file; killed when dropped.
    struct Kids {
        process: Process,
    }

    impl Kids {
        fn start(conf: &Path, port: u16) -> Kids {
            let (process, _) = super::start_kids(&["-c".as_ref(), conf.as_os_str()], port);
            Kids { process }
        }

        fn kill9(self) {
            self.process.kill().expect("SIGKILL and reap");
        }

        fn term(self) {
            let status = sigterm_and_wait(&self.process);
            assert_eq!(status.code(), Some(0), "kids exits 0 on SIGTERM");
        }
    }

    /// The `i`th message: topic by round robin, a per-topic sequence number.
    fn message(i: usize) -> (&'static str, String) {
        let topic = TOPICS[i % TOPICS.len()];
        (
            topic,
            format!("{topic} {:08} {}", i / TOPICS.len(), "x".repeat(60)),
        )
    }

    /// A connection that reads replies with kids-core's client codec.
    struct Client {
        stream: TcpStream,
        codec: FrameCodec,
        buf: BytesMut,
    }

    impl Client {
        fn connect(port: u16) -> Option<Client> {
            let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            Some(Client {
                stream,
                codec: FrameCodec::default(),
                buf: BytesMut::new(),
            })
        }

        fn send(&mut self, commands: &[Frame]) -> bool {
            let mut out = BytesMut::new();
            for c in commands {
                c.encode(Proto::Resp2, &mut out);
            }
            self.stream.write_all(&out).is_ok()
        }

        /// The next reply; `None` when the connection failed or closed.
        fn reply(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.codec.decode(&mut self.buf).expect("a valid reply") {
                    return Some(f);
                }
                let mut chunk = [0u8; 64 * 1024];
                match self.stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }

    /// Publishes messages `from..to` in pipelined batches of 100; returns the
    /// index of the first one not acknowledged (an integer reply is the
    /// acknowledgement), which is `to` unless the connection failed.
    /// `between` runs after a batch is written and before its replies are
    /// read, with the number acknowledged so far.
    fn publish(port: u16, from: usize, to: usize, mut between: impl FnMut(usize)) -> usize {
        let Some(mut client) = Client::connect(port) else {
            return from;
        };
        let mut acked = from;
        while acked < to {
            let end = (acked + 100).min(to);
            let batch: Vec<Frame> = (acked..end)
                .map(|i| {
                    let (topic, msg) = message(i);
                    Frame::command([&b"PUBLISH"[..], topic.as_bytes(), msg.as_bytes()])
                })
                .collect();
            if !client.send(&batch) {
                return acked;
            }
            between(acked);
            while acked < end {
                match client.reply() {
                    Some(Frame::Integer(_)) => acked += 1,
                    // An error reply, a closed or failed connection: not acknowledged.
                    _ => return acked,
                }
            }
        }
        acked
    }

    /// Publishes `from..to`, reconnecting (and re-sending from the first
    /// unacknowledged message) until all are acknowledged.
    fn publish_all(port: u16, from: usize, to: usize) {
        let mut at = from;
        Poll::limit(Duration::from_secs(120))
            .pause(Duration::from_millis(50))
            .until(|| {
                at = publish(port, at, to, |_| {});
                (at >= to).then_some(())
            })
            .unwrap_or_else(|| panic!("publishing stalled at {at}"));
    }

    /// Lines per topic in the server's files.
    fn server_lines(dir: &Path) -> HashMap<String, Vec<String>> {
        let mut out = HashMap::new();
        for topic in TOPICS {
            let path = dir.join(topic).join("all.log");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.insert(
                topic.to_string(),
                text.lines().map(str::to_string).collect(),
            );
        }
        out
    }

    /// Waits until the server's files hold every message up to `n`; then
    /// checks each topic's first occurrences are exactly its messages in
    /// order, and returns the number of duplicate lines.
    fn check_server_files(dir: &Path, n: usize) -> usize {
        let all_there = || {
            let lines = server_lines(dir);
            let mut complete = true;
            let mut duplicates = 0;
            for (t, topic) in TOPICS.iter().enumerate() {
                let expected: Vec<String> = (0..n)
                    .filter(|i| i % TOPICS.len() == t)
                    .map(|i| message(i).1)
                    .collect();
                let got = &lines[*topic];
                let mut seen = std::collections::HashSet::new();
                let firsts: Vec<&String> = got.iter().filter(|l| seen.insert(*l)).collect();
                duplicates += got.len() - firsts.len();
                if firsts.len() < expected.len() {
                    complete = false;
                    continue;
                }
                for (i, (a, b)) in firsts.iter().zip(&expected).enumerate() {
                    assert_eq!(*a, b, "{topic}: line {i} out of order or wrong");
                }
                assert_eq!(
                    firsts.len(),
                    expected.len(),
                    "{topic}: unexpected extra lines"
                );
            }
            complete.then_some(duplicates)
        };
        Poll::limit(Duration::from_secs(120))
            .pause(Duration::from_millis(100))
            .until(all_there)
            .expect("the server's files hold every message")
    }

    /// The agent's `INFO stores` text.
    fn agent_info(port: u16) -> String {
        let mut client = Client::connect(port).expect("connect to the agent");
        assert!(client.send(&[Frame::command([&b"INFO"[..], b"stores"])]));
        match client.reply() {
            Some(Frame::Bulk(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO replied {other:?}"),
        }
    }

    /// The store lines of the agent's `INFO stores`: a snapshot the agent
    /// refreshes every 250 ms (the queue lines are live).
    fn store_lines(port: u16) -> String {
        agent_info(port)
            .lines()
            .filter(|l| l.contains(":kind="))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (INFO's store lines are refreshed every 250 ms) until the sum
    /// of `field=value` over the agent's store lines satisfies `ok`.
    fn wait_counter(port: u16, field: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let mut v = 0;
        Poll::default().pause(Duration::from_millis(50)).until(|| {
            v = agent_counter(port, field);
            ok(v).then_some(())
        });
        v
    }

    /// `field=value` of the agent's `INFO stores` store lines, summed (use
    /// fields only one kind of store has).
    fn agent_counter(port: u16, field: &str) -> u64 {
        agent_info(port)
            .lines()
            .filter(|l| l.starts_with("store_"))
            .flat_map(|l| l.split([':', ',']))
            .filter_map(|kv| kv.strip_prefix(&format!("{field}=")))
            .map(|v| v.trim().parse::<u64>().expect("a number"))
            .sum()
    }

    struct Setup {
        _dir: tempfile::TempDir,
        logs: PathBuf,
        server_conf: PathBuf,
        agent_conf: PathBuf,
        server_port: u16,
        agent_port: u16,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let logs = root.join("logs");
        let server_port = free_port();
        let agent_port = free_port();
        let server_conf = root.join("server.conf");
        std::fs::write(
            &server_conf,
            format!(
                "log {{ level info; file {}/server.log; }}\n\
                 store file {{ path {}/[topic]; name all.log; rotate 1day; }}\n",
                root.display(),
                logs.display()
            ),
        )
        .expect("write server.conf");
        let agent_conf = root.join("agent.conf");
        std::fs::write(
            &agent_conf,
            format!(
                "log {{ level info; file {}/agent.log; }}\n\
                 store buffer {{\n\
                   store network primary {{ host 127.0.0.1; port {server_port}; window 256; timeout 5s; }}\n\
                   store file secondary {{ path {}/spool; rotate 5min; }}\n\
                 }}\n",
                root.display(),
                root.join("spool").display()
            ),
        )
        .expect("write agent.conf");
        Setup {
            _dir: dir,
            logs,
            server_conf,
            agent_conf,
            server_port,
            agent_port,
        }
    }

    /// The agent's network store has messages sent and not acknowledged.
    fn in_flight(port: u16) -> bool {
        let info = agent_info(port);
        let Some(line) = info.lines().find(|l| l.contains("kind=network")) else {
            return false;
        };
        let field = |name: &str| {
            line.split([':', ','])
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        field("sent=") > field("acked=")
    }

    #[test]
    fn server_killed_and_restarted_mid_stream_loses_nothing() {
        let s = setup();
        let mut server = Some(Kids::start(&s.server_conf, s.server_port));
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        let n = 30_000;
        // The agent's store lines as they were just after the server stopped.
        let mut at_stop: Option<String> = None;
        let mut killed_at = None;
        let acked = publish(s.agent_port, 0, n, |acked| {
            if at_stop.is_none() && acked >= n / 3 {
                // Freeze the server: the next batch stays in flight to it.
                let stopped = &server.as_ref().expect("running").process;
                stopped.signal("STOP").expect("SIGSTOP the server");
                at_stop = Some(store_lines(s.agent_port));
            } else if let Some(before) = &at_stop
                && killed_at.is_none()
            {
                // INFO's store lines are a snapshot refreshed every 250 ms:
                // wait for one taken after the STOP (this batch reaching the
                // stores changes it), then kill the server with messages
                // unacknowledged: that is the retry window.
                wait_for("a snapshot of the store lines after the STOP", || {
                    store_lines(s.agent_port) != *before
                });
                wait_for("messages in flight to the stopped server", || {
                    in_flight(s.agent_port)
                });
                server.take().expect("running").kill9();
                killed_at = Some(acked);
            }
            if killed_at.is_some_and(|k| acked >= k + n / 3) && server.is_none() {
                server = Some(Kids::start(&s.server_conf, s.server_port));
            }
        });
        assert_eq!(acked, n, "the agent acknowledges every publish, up or down");
        assert!(server.is_some(), "restarted");
        let duplicates = check_server_files(&s.logs, n);
        let resent = wait_counter(s.agent_port, "resent", |v| v >= 1);
        assert!(resent >= 1, "the kill hit messages in flight");
        assert!(
            duplicates as u64 <= resent,
            "{duplicates} duplicates but only {resent} re-sends counted"
        );
        // INFO's store lines are a snapshot refreshed every 250 ms: polled.
        assert!(
            wait_counter(s.agent_port, "replayed", |v| v >= 1) >= 1,
            "the backlog spooled while the server was down was replayed"
        );
        eprintln!("server kill: {n} messages, {duplicates} duplicates, {resent} re-sent");
        agent.term();
        server.expect("restarted").term();
    }

    #[test]
    fn agent_killed_while_spooling_and_restarted_loses_nothing_acknowledged() {
        let s = setup();
        let n = 20_000;
        // The server is down: the agent spools everything.
        let mut agent = Some(Kids::start(&s.agent_conf, s.agent_port));
        let acked = publish(s.agent_port, 0, n, |acked| {
            // A batch was just written: kill the agent while it spools it.
            if acked >= n / 2
                && let Some(a) = agent.take()
            {
                a.kill9();
            }
        });
        assert!(acked >= n / 2 && acked < n, "killed mid-stream at {acked}");
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        assert!(
            wait_counter(s.agent_port, "recovered_bytes", |v| v
                >= acked as u64 * MIN_RECORD)
                >= acked as u64 * MIN_RECORD,
            "the restarted agent found every acknowledged message in its spool"
        );
        // Re-send from the first unacknowledged message, as a publisher would:
        // of the batch the kill hit (100), some may have been spooled.
        publish_all(s.agent_port, acked, n);
        let server = Kids::start(&s.server_conf, s.server_port);
        let duplicates = check_server_files(&s.logs, n);
        assert!(
            duplicates <= 100,
            "{duplicates} duplicates: more than the publisher re-sent"
        );
        eprintln!("agent kill: {n} messages, {duplicates} duplicates");
        agent.term();
        server.term();
    }

    #[test]
    fn sigterm_with_the_server_down_keeps_every_acknowledged_message_spooled() {
        let s = setup();
        let n = 5_000;
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        assert_eq!(publish(s.agent_port, 0, n, |_| {}), n);
        agent.term(); // drains and exits 0 while the server is unreachable
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        let server = Kids::start(&s.server_conf, s.server_port);
        assert_eq!(check_server_files(&s.logs, n), 0);
        agent.term();
        server.term();
    }

    #[test]
    fn sighup_reloads_the_store_tree_mid_stream_without_losing_queued_messages() {
        let s = setup();
        let server = Kids::start(&s.server_conf, s.server_port);
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        let n = 9_000;
        let mut reloads = 0;
        let acked = publish(s.agent_port, 0, n, |acked| {
            // A batch is queued and unanswered: reload under it, and wait for
            // the reload to take effect before the next batch.
            if reloads < 2 && acked >= (reloads + 1) * n / 3 {
                agent.process.signal("HUP").expect("SIGHUP the agent");
                reloads += 1;
                let want = format!("store_reloads:{reloads}\r\n");
                wait_for("the reload", || agent_info(s.agent_port).contains(&want));
            }
        });
        assert_eq!((acked, reloads), (n, 2));
        let duplicates = check_server_files(&s.logs, n);
        eprintln!("sighup: {n} messages, {duplicates} duplicates");
        agent.term();
        server.term();
    }
}

#[test]
fn kids_applies_max_clients_from_its_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("kids.conf");
    std::fs::write(&conf, "worker_threads 1;\nmax_clients 1;\n").expect("write conf");
    let (_kids, addr) = start_kids(&["-c".as_ref(), conf.as_os_str()], 0);
    let mut first = TcpStream::connect(&addr).expect("connect");
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    first.write_all(b"PING\r\n").expect("send");
    let mut pong = [0u8; 7];
    first.read_exact(&mut pong).expect("PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    let mut second = TcpStream::connect(&addr).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut refused = Vec::new();
    let _ = second.read_to_end(&mut refused);
    assert_eq!(refused, b"-ERR max number of clients reached\r\n");
}

#[test]
fn kids_applies_its_idle_and_request_timeouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("kids.conf");
    std::fs::write(
        &conf,
        "timeout 1s;
request_timeout 1s;
",
    )
    .expect("write conf");
    let (_kids, addr) = start_kids(&["-c".as_ref(), conf.as_os_str()], 0);
    let connect = || {
        let s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s
    };
    // An idle client and one that left a request half-sent are closed by
    // the server (read_to_end returns at its close, not at our limit);
    // a subscriber may idle.
    let mut idle = connect();
    idle.write_all(b"PING\r\n").expect("send");
    let mut half = connect();
    half.write_all(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel")
        .expect("send");
    let mut sub = connect();
    sub.write_all(b"SUBSCRIBE news\r\n").expect("send");
    let mut got = Vec::new();
    idle.read_to_end(&mut got)
        .expect("closed by the server, not timed out");
    assert_eq!(got, b"+PONG\r\n");
    got.clear();
    half.read_to_end(&mut got)
        .expect("closed by the server, not timed out");
    assert!(got.is_empty(), "{got:?}");
    let mut publisher = connect();
    publisher
        .write_all(b"PUBLISH news still-here\r\n")
        .expect("send");
    let mut reply = [0u8; 4];
    publisher.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply, b":1\r\n");
    let confirmation = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n";
    let message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$10\r\nstill-here\r\n";
    let mut both = vec![0u8; confirmation.len() + message.len()];
    sub.read_exact(&mut both)
        .expect("the subscriber is still served");
    assert_eq!(&both[confirmation.len()..], message);
}

/// calc-server and calc-client talk over 127.0.0.2: not the defaults, so
/// that both programs' `--host` is exercised.
const CALC_HOST: &str = "127.0.0.2";

/// Starts calc-server on a free port; returns it and its port.
fn start_calc_server(extra: &[&str]) -> (Process, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calc-server"));
    cmd.args(["--host", CALC_HOST, "--port", "0"]).args(extra);
    let (child, addr) = start_program(cmd, "calc-server");
    let port = addr
        .strip_prefix(&format!("{CALC_HOST}:"))
        .unwrap_or_else(|| panic!("not on {CALC_HOST}: {addr}"))
        .to_string();
    (child, port)
}

/// Runs calc-client; its exit code, stdout and stderr.
fn calc_client(port: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_calc-client"))
        .args(["--host", CALC_HOST, "--port", port])
        .args(args)
        .output()
        .expect("run calc-client");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn calc_client_and_server_answer_and_say_where_from() {
    let (server, port) = start_calc_server(&[]);
    let first = calc_client(&port, &["multiply", "3", "4"]);
    assert_eq!(first.0, Some(0), "{first:?}");
    assert_eq!(first.1, "12\n");
    assert!(first.2.contains("computed by the server"), "{first:?}");
    let second = calc_client(&port, &["multiply", "3", "4"]);
    assert_eq!(second.1, "12\n");
    assert!(
        second.2.contains("from the server's cache"),
        "Multiply has (cache): {second:?}"
    );
    let bypass = calc_client(&port, &["--no-cache", "multiply", "3", "4"]);
    assert!(bypass.2.contains("computed by the server"), "{bypass:?}");
    for (op, want) in [("plus", "7\n"), ("minus", "-1\n"), ("divide", "0\n")] {
        let (code, out, err) = calc_client(&port, &[op, "3", "4"]);
        assert_eq!((code, out.as_str()), (Some(0), want), "{op}: {err}");
    }
    for _ in 0..2 {
        let plus = calc_client(&port, &["plus", "3", "4"]);
        assert!(
            plus.2.contains("computed by the server"),
            "Plus has (cache) = false: {plus:?}"
        );
    }
    let (code, _, err) = calc_client(&port, &["divide", "1", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("division by zero"), "{err}");
    let (code, _, err) = calc_client(&port, &["power", "1", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("usage"), "{err}");
    assert_eq!(
        sigterm_and_wait(&server).code(),
        Some(0),
        "exits 0 on SIGTERM"
    );
    let (code, _, err) = calc_client(&port, &["plus", "1", "2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unavailable"), "{err}");
}

#[test]
fn calc_server_switches_the_cache_off() {
    let (_server, port) = start_calc_server(&["--no-cache"]);
    for _ in 0..2 {
        let (code, out, err) = calc_client(&port, &["multiply", "6", "7"]);
        assert_eq!((code, out.as_str()), (Some(0), "42\n"));
        assert!(err.contains("computed by the server"), "{err}");
    }
}

#[test]
fn calc_over_a_unix_socket_without_compression() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("calc.sock");
    let socket = socket.to_str().expect("utf-8 path");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calc-server"));
    cmd.args(["--socket", socket, "--no-compress"]);
    let (_server, addr) = start_program(cmd, "calc-server");
    assert_eq!(addr, socket);
    let out = Command::new(env!("CARGO_BIN_EXE_calc-client"))
        .args([
            "--socket",
            socket,
            "--deadline",
            "10000",
            "multiply",
            "-6",
            "7",
        ])
        .output()
        .expect("run calc-client");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-42\n");
}

#[test]
fn the_generated_table_carries_the_seed_options() {
    use examples::calc::{ADVANCED_SERVICE, SIMPLE_SERVICE};
    use wish_core::{EntityField, FieldKind, MethodOptions, method_id};

    let names: Vec<&str> = ADVANCED_SERVICE.methods.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["Multiply", "Divide"]);
    let multiply = &ADVANCED_SERVICE.methods[0];
    assert_eq!(multiply.id, method_id("calc.Advanced.Multiply"));
    // The seed's options, spelled out here, not taken from the generated table.
    const fn int32(name: &'static str, number: u32) -> EntityField {
        EntityField {
            name,
            number,
            kind: FieldKind::Int32,
            default: "0",
        }
    }
    const AB: &[EntityField] = &[int32("a", 1), int32("b", 2)];
    assert_eq!(
        multiply.options,
        MethodOptions::new().cache(3600).compress().timestamped(AB)
    );
    for m in SIMPLE_SERVICE
        .methods
        .iter()
        .chain(&ADVANCED_SERVICE.methods[1..])
    {
        assert_eq!(m.options, MethodOptions::new(), "{}", m.full_name);
    }
}

/// Starts the statsd example with `args` on free ports; returns it, its
/// stdout, its statsd address and its admin address.
fn start_statsd(args: &[&str]) -> (Process, ChildStdout, String, String) {
    let (process, stdout) = Process::start_with_stdout("statsd", statsd_command(args))
        .unwrap_or_else(|e| panic!("{e}"));
    let (addr, admin) = statsd_addresses(&listening_on(&process, "statsd"));
    (process, stdout, addr, admin)
}

/// The statsd example with `args`, on free ports.
fn statsd_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_statsd"));
    cmd.args(args).args(["--port", "0", "--mgmt-port", "0"]);
    cmd
}

/// The statsd and admin addresses in the rest of statsd's listening line,
/// `<addr> (udp, tcp); admin on <addr>`.
fn statsd_addresses(rest: &str) -> (String, String) {
    let addr = rest.split_whitespace().next().expect("address").to_owned();
    let admin = rest.rsplit(' ').next().expect("admin address").to_owned();
    (addr, admin)
}

/// The statsd admin port's `stats` answer, as `name: value` pairs.
fn statsd_stats(admin: &str) -> Vec<(String, u64)> {
    let mut conn = TcpStream::connect(admin).expect("admin port");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    conn.write_all(b"stats\nquit\n").expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("stats");
    answer
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// One value of [`statsd_stats`].
fn statsd_stat(admin: &str, name: &str) -> u64 {
    statsd_stats(admin)
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or_else(|| panic!("no {name} in admin stats"), |(_, v)| v)
}

/// Asks the statsd admin port for its `stats` until `lines: n` shows.
fn wait_for_statsd_lines(admin: &str, n: u64) {
    wait_for(&format!("statsd to count {n} lines"), || {
        statsd_stat(admin, "lines") == n
    });
}

/// A stand-in carbon: keeps each batch statsd sends (one per connection).
struct Carbon {
    addr: String,
    batches: Arc<Mutex<Vec<String>>>,
}

impl Carbon {
    fn start() -> Carbon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind carbon");
        let addr = listener.local_addr().expect("addr").to_string();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&batches);
        std::thread::spawn(move || {
            // statsd connects once to see carbon is up, then once per flush.
            for conn in listener.incoming() {
                let mut batch = String::new();
                if conn.and_then(|mut c| c.read_to_string(&mut batch)).is_ok() && !batch.is_empty()
                {
                    sink.lock().expect("lock").push(batch);
                }
            }
        });
        Carbon { addr, batches }
    }

    /// The first batch that has a line starting with `path `.
    fn batch_with(&self, path: &str) -> Option<String> {
        let want = format!("{path} ");
        let batches = self.batches.lock().expect("lock");
        batches
            .iter()
            .find(|b| b.lines().any(|l| l.starts_with(&want)))
            .cloned()
    }

    /// The values sent for `path`, in order.
    fn values(&self, path: &str) -> Vec<f64> {
        let batches = self.batches.lock().expect("lock");
        batches
            .iter()
            .flat_map(|b| b.lines())
            .filter_map(|l| {
                let mut parts = l.split(' ');
                (parts.next() == Some(path)).then(|| parts.next()?.parse().ok())?
            })
            .collect()
    }

    /// Every batch, in the order they came.
    fn everything(&self) -> String {
        self.batches.lock().expect("lock").concat()
    }
}

#[test]
fn statsd_flushes_to_carbon_and_exits_0_on_sigterm() {
    let carbon = Carbon::start();
    // An hour-long flush interval: only the final flush at SIGTERM sends.
    let (child, _stdout, addr, admin) = start_statsd(&[
        "--graphite",
        &carbon.addr,
        "--mode",
        "statsite",
        "--flush-interval",
        "1h",
    ]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.send_to(b"hits:1|c\nhits:2|c\nlat:10:30|ms", &addr)
        .expect("send");
    let mut tcp = TcpStream::connect(&addr).expect("tcp");
    tcp.write_all(b"temp:21.5|g\n").expect("send");
    wait_for_statsd_lines(&admin, 4);
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "{status}");
    // statsd exits once carbon took the final flush; the reader may lag a little.
    wait_for("the final flush at carbon", || {
        carbon.everything().contains("gauges.temp")
    });
    let lines = carbon.everything();
    for want in [
        "counts.hits 3.000000 ",
        "timers.lat.mean 20.000000 ",
        "gauges.temp 21.500000 ",
    ] {
        assert!(lines.contains(want), "{want} in {lines}");
    }
}

#[test]
fn statsd_writes_etsy_legacy_names_on_request() {
    let carbon = Carbon::start();
    let (child, _stdout, addr, admin) = start_statsd(&[
        "--graphite",
        &carbon.addr,
        "--legacy-namespace",
        "--flush-interval",
        "1h",
    ]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.send_to(b"hits:1|c\nhits:2|c\nlat:10|ms", &addr)
        .expect("send");
    wait_for_statsd_lines(&admin, 3);
    assert!(sigterm_and_wait(&child).success());
    wait_for("the final flush at carbon", || {
        carbon.everything().contains("statsd.numStats ")
    });
    let lines = carbon.everything();
    for want in [
        "\nstats.hits 0.0008333333333333334 ",
        "\nstats_counts.hits 3 ",
        "\nstats.timers.lat.mean 10 ",
        "\nstatsd.numStats 5 ",
    ] {
        assert!(lines.contains(want), "{want:?} in {lines}");
    }
    assert!(!lines.contains("stats.counters."), "{lines}");
    // Statsite has no such names: refused before anything starts.
    let out = statsd_command(&["--mode", "statsite", "--legacy-namespace"])
        .output()
        .expect("run statsd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("legacy namespace"), "{err}");
}

#[test]
fn statsd_prints_what_it_would_send_when_no_carbon_answers() {
    let dead_addr = format!("127.0.0.1:{}", free_port());
    let (child, mut stdout, addr, admin) = start_statsd(&[
        "--graphite",
        &dead_addr,
        "--mode",
        "etsy",
        "--flush-interval",
        "1h",
    ]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.send_to(b"orders:7|c", &addr).expect("send");
    wait_for_statsd_lines(&admin, 1);
    // The admin port reports the sink as failing, once it has tried.
    let mut health = String::new();
    wait_for("the sink reported failing", || {
        let mut conn = TcpStream::connect(&admin).expect("admin");
        conn.write_all(b"health\nquit\n").expect("send");
        health.clear();
        conn.read_to_string(&mut health).expect("health");
        !health.starts_with("OK - ")
    });
    assert!(
        health.starts_with("WARNING - ") || health.starts_with("CRITICAL - "),
        "{health}"
    );
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "{status}");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).expect("stdout");
    assert!(
        printed.contains("stats.counters.orders.count 7 "),
        "{printed}"
    );
}
