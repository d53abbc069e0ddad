//! The kids explorer page in a real headless Chromium (WebDriver), against
//! the kids program with `--http`, fed by redis-cli.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::webdriver::{Browser, wait_until};
use test_support::{Process, Stream, free_port, peer};

use super::{sigterm_and_wait, start_kids};

/// A bound on waits for what is under way, not a measure of speed.
const LIMIT: Duration = Duration::from_secs(20);

/// The explorer's address, from the line kids prints after its listening line.
fn explorer_addr(kids: &Process) -> String {
    let line = kids
        .wait_for_line(Stream::Stderr, |l| l.contains("kids explorer on "))
        .unwrap_or_else(|e| panic!("the explorer line: {e}"));
    line.trim()
        .strip_prefix("kids explorer on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .trim_end_matches('/')
        .to_string()
}

/// `redis-cli -p PORT args...` against `addr`.
fn cli(bin: &Path, addr: &str, args: &[&str]) {
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    test_support::redis_cli(bin, port, args);
}

/// Console messages at level SEVERE, across every read so far (each read empties the log).
fn severe(browser: &Browser, seen: &mut Vec<String>) -> Vec<String> {
    for entry in browser.console_logs().expect("console logs") {
        if entry.level == "SEVERE" {
            seen.push(entry.message);
        }
    }
    seen.clone()
}

/// The value of a script that returns one, as JSON.
fn eval(browser: &Browser, script: &str) -> Value {
    browser.execute(script, vec![]).expect("script")
}

/// The topic row's cell `class`, or None while the row is not there.
fn cell(browser: &Browser, topic: &str, class: &str) -> Option<String> {
    let v = browser
        .execute(
            "const r = [...document.querySelectorAll('#topics tr.topic')]\
               .find(r => r.getAttribute('data-topic') === arguments[0]);\
             return r ? r.querySelector('td.' + arguments[1]).textContent : null;",
            vec![json!(topic), json!(class)],
        )
        .expect("script");
    v.as_str().map(str::to_owned)
}

/// Topic names of the rows shown (not hidden by the filter).
fn shown_topics(browser: &Browser) -> Vec<String> {
    let v = eval(
        browser,
        "return [...document.querySelectorAll('#topics tr.topic')]\
           .filter(r => !r.hidden && r.offsetParent !== null)\
           .map(r => r.getAttribute('data-topic')).sort();",
    );
    serde_json::from_value(v).expect("names")
}

/// Payloads shown in the tail.
fn tail_payloads(browser: &Browser) -> Vec<String> {
    let v = eval(
        browser,
        "return [...document.querySelectorAll('#tail-log div.msg .payload')].map(p => p.textContent);",
    );
    serde_json::from_value(v).expect("payloads")
}

/// Publishes pipelined PUBLISH commands to `channel` as fast as kids takes
/// them, until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start(addr: &str, channel: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut conn = TcpStream::connect(addr).expect("connect the load");
        let cmd = format!(
            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n$16\r\nload load load !\r\n",
            channel.len()
        );
        let batch = cmd.repeat(64);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sink = conn.try_clone().expect("clone");
            // Replies are read and dropped on a thread of their own.
            let reader = std::thread::spawn(move || {
                let _ = std::io::copy(&mut sink, &mut std::io::sink());
            });
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if conn.write_all(batch.as_bytes()).is_err() {
                    break;
                }
                sent += 64;
            }
            let _ = conn.shutdown(std::net::Shutdown::Both);
            let _ = reader.join();
            sent
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("load thread"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn explorer_page_shows_live_topics_tails_filters_and_data_as_text() {
    let Some(redis_cli) = peer("redis-cli", "redis-tools") else {
        return;
    };
    let Some(browser) = Browser::start() else {
        return;
    };
    let token = "t0k&n";
    let (kids, addr) = start_kids(
        &[
            "--http".as_ref(),
            "0".as_ref(),
            "--http-token".as_ref(),
            token.as_ref(),
        ],
        0,
    );
    let http = explorer_addr(&kids);
    let mut errors = Vec::new();

    browser
        .goto(&format!("{http}/?token=t0k%26n"))
        .expect("open the page");
    wait_until("the page's stream to go live", LIMIT, || {
        Ok((browser.find("#status")?.text()? == "live").then_some(()))
    })
    .expect("live");
    assert_eq!(
        severe(&browser, &mut errors),
        Vec::<String>::new(),
        "console errors at load"
    );

    // A topic published with redis-cli appears in the table.
    let published = Instant::now();
    cli(&redis_cli, &addr, &["publish", "web.1", "hello"]);
    wait_until("web.1 in the table", LIMIT, || {
        Ok(cell(&browser, "web.1", "name"))
    })
    .expect("the row");
    eprintln!(
        "explorer: a new topic was in the table {:?} after its publish",
        published.elapsed()
    );

    // Its rate moves while it is published to.
    let before = cell(&browser, "web.1", "per_sec").expect("rate cell");
    let feeding = Command::new(&redis_cli)
        .args([
            "-p",
            addr.rsplit(':').next().unwrap(),
            "-r",
            "400",
            "-i",
            "0.01",
        ])
        .args(["publish", "web.1", "tick"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli -r");
    let moved = wait_until("web.1's rate to move", LIMIT, || {
        let now = cell(&browser, "web.1", "per_sec").expect("rate cell");
        Ok((now != before && now.chars().any(|c| c.is_ascii_digit() && c != '0')).then_some(now))
    })
    .expect("a moving rate");
    eprintln!("explorer: web.1's rate went from {before:?} to {moved:?}");

    // Clicking the name tails the topic; a message published after that shows.
    browser
        .find("#topics tr.topic[data-topic='web.1'] td.name")
        .and_then(|td| td.click())
        .expect("click the name");
    assert_eq!(
        browser
            .find("#tail-glob")
            .unwrap()
            .property("value")
            .unwrap(),
        "web.1"
    );
    // The tail opens on its own stream: publish until one arrives.
    let arrived = wait_until("a tailed message", LIMIT, || {
        cli(
            &redis_cli,
            &addr,
            &["publish", "web.1", "after the tail opened"],
        );
        Ok(tail_payloads(&browser)
            .iter()
            .any(|p| p == "after the tail opened")
            .then_some(()))
    });
    arrived.expect("the message in the tail");

    // Pause holds what arrives back; hex shows the bytes of what is shown.
    let pause = browser.find("#tail-pause").unwrap();
    pause.click().unwrap();
    assert_eq!(pause.text().unwrap(), "resume");
    // Messages received before the pause are drawn on the next animation
    // frame: count what is shown two frames later (the driver awaits the
    // promise), when nothing more can be drawn.
    let shown = eval(
        &browser,
        "return new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() =>           done(document.querySelectorAll('#tail-log div.msg').length))));",
    );
    let shown = shown.as_u64().unwrap_or_else(|| panic!("a count: {shown}"));
    let skipped = |b: &Browser| -> u64 {
        let text = b.find("#tail-skipped").and_then(|e| e.text()).unwrap();
        text.trim_start_matches("skipped ")
            .parse()
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
    };
    let before_pause = skipped(&browser);
    // Published until counted, so that the count cannot have taken it in
    // before `before_pause` was read.
    wait_until("the paused message to be counted", LIMIT, || {
        cli(&redis_cli, &addr, &["publish", "web.1", "while paused"]);
        Ok((skipped(&browser) > before_pause).then_some(()))
    })
    .expect("counted while paused");
    assert!(!tail_payloads(&browser).iter().any(|p| p == "while paused"));
    assert_eq!(
        tail_payloads(&browser).len() as u64,
        shown,
        "drawn while paused"
    );
    pause.click().unwrap();
    assert_eq!(pause.text().unwrap(), "pause");
    browser
        .find("#tail-hex")
        .and_then(|b| b.click())
        .expect("hex");
    // "after the tail opened" in hex, spaced in pairs or not.
    let hex: String = b"after the tail opened"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    wait_until("the tail shown as hex", LIMIT, || {
        Ok(tail_payloads(&browser)
            .iter()
            .any(|p| p.replace(' ', "") == hex)
            .then_some(()))
    })
    .expect("hex");
    browser
        .find("#tail-hex")
        .and_then(|b| b.click())
        .expect("text again");
    assert!(
        tail_payloads(&browser)
            .iter()
            .any(|p| p == "after the tail opened")
    );
    let mut feeding = feeding;
    let _ = feeding.kill();
    let _ = feeding.wait();

    // Names and payloads are data: shown as text, never run.
    let evil_topic = "<img src=x onerror=\"window.__pwned='topic'\">";
    let evil_payload =
        "<script>window.__pwned='script'</script><img src=x onerror=\"window.__pwned='img'\">";
    let glob = browser.find("#tail-glob").unwrap();
    glob.clear().unwrap();
    glob.send_keys("<img*").unwrap();
    browser
        .find("#tail-start")
        .and_then(|b| b.click())
        .expect("tail <img*");
    wait_until("the XSS payload in the tail", LIMIT, || {
        cli(&redis_cli, &addr, &["publish", evil_topic, evil_payload]);
        Ok(tail_payloads(&browser)
            .iter()
            .any(|p| p == evil_payload)
            .then_some(()))
    })
    .expect("the payload, as text");
    wait_until("the XSS topic in the table", LIMIT, || {
        Ok(cell(&browser, evil_topic, "name"))
    })
    .map(|name| assert_eq!(name, evil_topic))
    .expect("the topic, as text");
    let injected = eval(
        &browser,
        "return [window.__pwned === undefined, \
                 document.querySelectorAll('#topics img, #tail-log img, #tail-log script').length];",
    );
    assert_eq!(
        injected,
        json!([true, 0]),
        "markup from the data ran or was parsed"
    );

    // The glob filter.
    cli(&redis_cli, &addr, &["publish", "db.queries", "select 1"]);
    wait_until("db.queries in the table", LIMIT, || {
        Ok(cell(&browser, "db.queries", "name"))
    })
    .expect("the row");
    let filter = browser.find("#filter").unwrap();
    filter.send_keys("web*").unwrap();
    wait_until("the filter to leave web.1 alone", LIMIT, || {
        Ok((shown_topics(&browser) == ["web.1"]).then_some(()))
    })
    .expect("filtered");
    filter.clear().unwrap();
    filter.send_keys("[bd]?.*").unwrap();
    wait_until("the filter to leave db.queries alone", LIMIT, || {
        Ok((shown_topics(&browser) == ["db.queries"]).then_some(()))
    })
    .expect("filtered");
    filter.clear().unwrap();
    wait_until("every topic back", LIMIT, || {
        Ok((shown_topics(&browser).len() == 3).then_some(()))
    })
    .expect("unfiltered");

    // Under load: a tail of a topic at full speed is sampled, the page keeps up.
    let load = Load::start(&addr, "web.load");
    let glob = browser.find("#tail-glob").unwrap();
    glob.clear().unwrap();
    glob.send_keys("web.*").unwrap();
    browser
        .find("#tail-start")
        .and_then(|b| b.click())
        .expect("tail web.*");
    let skipped = wait_until("the server to skip messages of the tail", LIMIT, || {
        let text = browser.find("#tail-skipped")?.text()?;
        let n: u64 = text
            .trim_start_matches("skipped ")
            .parse()
            .map_err(|e| format!("{text:?}: {e}"))?;
        Ok((n > 10_000).then_some(n))
    })
    .expect("sampling");
    wait_until("web.load's rate in the table", LIMIT, || {
        Ok(cell(&browser, "web.load", "per_sec").filter(|r| r.contains('k') || r.contains('M')))
    })
    .expect("a high rate");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer-under-load.png");
    browser.screenshot_png(&shot).expect("screenshot");
    let shown = eval(
        &browser,
        "return document.querySelectorAll('#tail-log div.msg').length;",
    );
    let sent = load.stop();
    eprintln!(
        "explorer: under load ({sent} publishes sent), the tail had skipped {skipped} and shows {shown} \
         messages; screenshot {}",
        shot.display()
    );
    assert!(
        shown.as_u64().is_some_and(|n| n <= 500),
        "{shown} messages kept"
    );
    assert_eq!(
        severe(&browser, &mut errors),
        Vec::<String>::new(),
        "console errors"
    );
    drop(browser);
    assert_eq!(sigterm_and_wait(&kids).code(), Some(0));
}

#[test]
fn explorer_shows_a_stopped_primary_as_down_in_an_agent() {
    let Some(redis_cli) = peer("redis-cli", "redis-tools") else {
        return;
    };
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server_port = free_port();
    let (server, _) = start_kids(&[], server_port);
    let conf = dir.path().join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "store buffer {{\n  store network primary {{ topic app*; host 127.0.0.1; port {server_port}; }}\n  \
             store file secondary {{ path {}; }}\n}}\nhttp {{ port 0; }}\n",
            dir.path().join("spool").display()
        ),
    )
    .expect("agent.conf");
    let (agent, agent_addr) = start_kids(&["-c".as_ref(), conf.as_os_str()], 0);
    let http = explorer_addr(&agent);
    browser.goto(&format!("{http}/")).expect("open the page");
    let node_up = |want: &str| {
        wait_until(&format!("the primary to show {want}"), LIMIT, || {
            cli(&redis_cli, &agent_addr, &["publish", "app", "line"]);
            let v = browser.execute(
                "const n = document.querySelector('#stores div.store[data-kind=network]');\
                 return n ? [n.getAttribute('data-up'), n.querySelector('.state').textContent] : null;",
                vec![],
            )?;
            Ok((v[0] == want).then_some(v))
        })
    };
    let up = node_up("true").expect("an up primary");
    assert_eq!(up[1], "up");
    sigterm_and_wait(&server);
    let down = node_up("false").expect("a down primary");
    assert_eq!(down[1], "down");
    let buffer = eval(
        &browser,
        "const b = document.querySelector('#stores div.store[data-kind=buffer]');\
         return b ? [b.textContent, !!b.querySelector('progress.replay')] : null;",
    );
    assert_eq!(buffer[1], true, "a replay bar on the buffer: {buffer}");
    // The page may see the primary down before the first spooled message:
    // publishing goes on until the backlog shows beside the waiting line.
    let waiting = wait_until("the backlog while waiting", LIMIT, || {
        cli(&redis_cli, &agent_addr, &["publish", "app", "line"]);
        let line = eval(
            &browser,
            "return document.querySelector('#stores div.store[data-kind=buffer] .replay-line').textContent;",
        );
        let text = line.as_str().unwrap_or_default().to_string();
        if !text.starts_with("waiting for the primary") {
            return Err(format!("the primary is down, yet the page says {text:?}"));
        }
        Ok(text.contains(", backlog ").then_some(text))
    })
    .expect("a backlog while the primary is down");
    assert!(
        waiting.starts_with("waiting for the primary, backlog "),
        "{waiting}"
    );
    // Back up on the same port: the page says so, and the backlog drains.
    let (server, _) = start_kids(&[], server_port);
    node_up("true").expect("the primary up again");
    wait_until("the backlog replayed", LIMIT, || {
        let line = eval(
            &browser,
            "return document.querySelector('#stores div.store[data-kind=buffer] .replay-line').textContent;",
        );
        Ok((line == "not replaying").then_some(()))
    })
    .expect("replayed");
    let mut errors = Vec::new();
    let severe = severe(&browser, &mut errors);
    // The page's stream never broke, so nothing failed to load.
    assert_eq!(severe, Vec::<String>::new(), "console errors");
    drop(browser);
    assert_eq!(sigterm_and_wait(&agent).code(), Some(0));
    assert_eq!(sigterm_and_wait(&server).code(), Some(0));
}
