//! Runs each example program as a user would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts the kids example with `args` on `port` (0: a free one); returns
/// it and the address it listens on.
fn start_kids(args: &[&std::ffi::OsStr], port: u16) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kids"))
        .args(args)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kids");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the listening line");
    let addr = line
        .trim()
        .strip_prefix("kids listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    // Keep draining, so a late write to stderr never blocks or fails.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, addr)
}

#[test]
fn kids_serves_and_exits_0_on_sigterm() {
    let (mut child, addr) = start_kids(&[], 0);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n")
        .expect("send");
    let mut reply = [0u8; 15];
    conn.read_exact(&mut reply).expect("replies");
    assert_eq!(&reply, b"+PONG\r\n$2\r\nhi\r\n");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
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
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    const TOPICS: [&str; 3] = ["web", "db", "mail"];
    /// Spool bytes of the smallest `message`: 8 framing + 4 topic length +
    /// topic (2) + message (topic, space, 8 digits, space, 60 bytes).
    const MIN_RECORD: u64 = 8 + 4 + 2 + (2 + 1 + 8 + 1 + 60);

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    /// A kids process started from a config file.
    struct Kids {
        child: Child,
    }

    impl Kids {
        fn start(conf: &Path, port: u16) -> Kids {
            let (child, _) = super::start_kids(&["-c".as_ref(), conf.as_os_str()], port);
            Kids { child }
        }

        fn kill9(mut self) {
            self.child.kill().expect("SIGKILL");
            self.child.wait().expect("reap");
        }

        fn term(mut self) {
            let ok = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("kill -TERM");
            assert!(ok.success());
            let status = self.child.wait().expect("wait");
            assert_eq!(status.code(), Some(0), "kids exits 0 on SIGTERM");
        }
    }

    impl Drop for Kids {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
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

    /// Publishes messages `from..to` in pipelined batches; returns the
    /// index of the first one not acknowledged (an integer reply is the
    /// acknowledgement), which is `to` unless the connection failed.
    fn publish(port: u16, from: usize, to: usize, mut each_batch: impl FnMut(usize)) -> usize {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return from;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut acked = from;
        while acked < to {
            let end = (acked + 100).min(to);
            let mut out = Vec::new();
            for i in acked..end {
                let (topic, msg) = message(i);
                out.extend_from_slice(
                    format!(
                        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{topic}\r\n${}\r\n{msg}\r\n",
                        topic.len(),
                        msg.len()
                    )
                    .as_bytes(),
                );
            }
            if writer.write_all(&out).is_err() {
                return acked;
            }
            while acked < end {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 && line.starts_with(':') => acked += 1,
                    // An error reply, a closed or failed connection: not acknowledged.
                    _ => return acked,
                }
            }
            each_batch(acked);
        }
        acked
    }

    /// Publishes `from..to`, reconnecting (and re-sending from the first
    /// unacknowledged message) until all are acknowledged.
    fn publish_all(port: u16, from: usize, to: usize) {
        let mut at = from;
        let deadline = Instant::now() + Duration::from_secs(120);
        while at < to {
            assert!(Instant::now() < deadline, "publishing stalled at {at}");
            at = publish(port, at, to, |_| {});
            if at < to {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
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
            if complete {
                return duplicates;
            }
            assert!(
                Instant::now() < deadline,
                "the server's files are missing messages"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's `INFO stores` text.
    fn agent_info(port: u16) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
        stream.write_all(b"INFO stores\r\n").expect("send INFO");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        reader.read_line(&mut head).expect("bulk header");
        let len: usize = head
            .trim_start_matches('$')
            .trim()
            .parse()
            .expect("bulk length");
        let mut body = vec![0u8; len + 2];
        std::io::Read::read_exact(&mut reader, &mut body).expect("INFO body");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Waits (INFO's store lines are refreshed every 250 ms) until the sum
    /// of `field=value` over the agent's store lines satisfies `ok`.
    fn wait_counter(port: u16, field: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = agent_counter(port, field);
            if ok(v) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `field=value` of the agent's `INFO stores` store lines, summed.
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

    #[test]
    fn server_killed_and_restarted_mid_stream_loses_nothing() {
        let s = setup();
        let server = Kids::start(&s.server_conf, s.server_port);
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        let n = 30_000;
        let mut server = Some(server);
        let mut killed_at = None;
        let acked = publish(s.agent_port, 0, n, |acked| {
            if killed_at.is_none() && acked >= n / 3 {
                // Mid-stream: the server dies with messages in flight.
                server.take().expect("running").kill9();
                killed_at = Some(acked);
            }
            if killed_at.is_some_and(|k| acked >= k + n / 3) && server.is_none() {
                server = Some(Kids::start(&s.server_conf, s.server_port));
            }
        });
        assert_eq!(acked, n, "the agent acknowledges every publish, up or down");
        assert!(killed_at.is_some() && server.is_some());
        let duplicates = check_server_files(&s.logs, n);
        let resent = wait_counter(s.agent_port, "resent", |v| v >= duplicates as u64);
        assert!(
            duplicates as u64 <= resent,
            "{duplicates} duplicates but only {resent} re-sends counted"
        );
        assert!(
            wait_counter(s.agent_port, "failures", |v| v >= 1) >= 1,
            "the agent saw the server go away"
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
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        let mut agent = Some(agent);
        let acked = publish(s.agent_port, 0, n, |acked| {
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
        // Re-send from the first unacknowledged message, as a publisher would.
        publish_all(s.agent_port, acked, n);
        let server = Kids::start(&s.server_conf, s.server_port);
        let duplicates = check_server_files(&s.logs, n);
        eprintln!("agent kill: {n} messages, {duplicates} duplicates");
        agent.term();
        server.term();
    }

    #[test]
    fn sighup_reloads_the_store_tree_without_losing_queued_messages() {
        let s = setup();
        let server = Kids::start(&s.server_conf, s.server_port);
        let agent = Kids::start(&s.agent_conf, s.agent_port);
        let n = 9_000;
        let mut hups = 0;
        let acked = publish(s.agent_port, 0, n, |acked| {
            if hups < 2 && acked >= (hups + 1) * n / 3 {
                let ok = Command::new("kill")
                    .args(["-HUP", &agent.child.id().to_string()])
                    .status()
                    .expect("kill -HUP");
                assert!(ok.success());
                hups += 1;
            }
        });
        assert_eq!(acked, n);
        assert_eq!(
            check_server_files(&s.logs, n),
            0,
            "a reload re-sends nothing here"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent_info(s.agent_port).contains("store_reloads:2\r\n") {
            assert!(Instant::now() < deadline, "two reloads counted");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent.term();
        server.term();
    }
}

#[test]
fn kids_applies_max_clients_from_its_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("kids.conf");
    std::fs::write(&conf, "worker_threads 1;\nmax_clients 1;\n").expect("write conf");
    let (mut child, addr) = start_kids(&["-c".as_ref(), conf.as_os_str()], 0);
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
    let _ = child.kill();
    let _ = child.wait();
}
