//! The explorer's JSON, event streams and Prometheus metrics (feature
//! `explorer`), in process and over a socket; the page itself is tested in
//! a real browser by the examples' tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use kids_core::explorer::{Explorer, ExplorerConfig};
use kids_core::net::Stores;
use kids_core::{Config, Router, RouterConfig, Session, TailConfig};
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn get(explorer: &Explorer, uri: &str) -> http::Response<kids_core::explorer::ExplorerBody> {
    let req = http::Request::get(uri).body(()).expect("request");
    explorer.handle(&req)
}

/// The whole body of a document response.
async fn body(response: http::Response<kids_core::explorer::ExplorerBody>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes()
}

async fn json(explorer: &Explorer, uri: &str) -> Value {
    let r = get(explorer, uri);
    assert_eq!(r.status(), 200, "{uri}");
    assert_eq!(r.headers()["content-type"], "application/json");
    serde_json::from_slice(&body(r).await).expect("json")
}

/// The next event of a stream, as (name, data).
async fn next_event(body: &mut kids_core::explorer::ExplorerBody) -> (String, Value) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("infallible");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let text = std::str::from_utf8(&data).expect("utf-8");
        if text.starts_with(':') {
            continue; // a keepalive comment
        }
        let mut lines = text.lines().filter(|l| !l.is_empty());
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("event: "))
            .expect("event line");
        let data = lines
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .expect("data line");
        assert_eq!(lines.next(), None, "one data line: {text:?}");
        assert!(text.ends_with("\n\n"));
        return (
            name.to_owned(),
            serde_json::from_str(data).expect("json data"),
        );
    }
}

fn publish(router: &Router, channel: &str, message: &[u8]) -> usize {
    router
        .publish(
            Bytes::copy_from_slice(channel.as_bytes()),
            Bytes::copy_from_slice(message),
            Instant::now(),
        )
        .expect("published")
}

#[test]
fn topics_report_rates_bytes_subscribers_patterns_and_age() {
    runtime().block_on(async {
        let start = Instant::now();
        let router = Router::new(RouterConfig::default(), start);
        let explorer = Explorer::new(router.clone(), ExplorerConfig::default());
        let mut sub = Session::new(&router);
        sub.handle(vec!["SUBSCRIBE".into(), "web".into()], start);
        sub.handle(
            vec!["PSUBSCRIBE".into(), "w*".into(), "*b".into(), "x*".into()],
            start,
        );
        router.tick(start);
        explorer.tick(start);
        for _ in 0..10 {
            publish(&router, "web", b"0123456789");
        }
        publish(&router, "db", b"abc");
        router.tick(start + Duration::from_secs(2));
        explorer.tick(start + Duration::from_secs(2));

        let all = json(&explorer, "/api/topics").await;
        let topics = all["topics"].as_array().expect("topics");
        let names: Vec<&str> = topics.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = &topics[1];
        assert_eq!(web["messages"], 10);
        assert_eq!(web["bytes"], 100);
        assert_eq!(web["per_sec"], 5.0); // 10 messages over the 2 s between ticks
        assert_eq!(web["bytes_per_sec"], 50.0);
        assert_eq!(web["subscribers"], 1);
        assert_eq!(web["patterns"], 2); // w* and *b, not x*
        assert!(web["last_message_age_secs"].as_f64().expect("an age") >= 0.0);
        assert_eq!(web["history"], serde_json::json!([5.0]));
        assert_eq!(topics[0]["patterns"], 1); // *b

        let filtered = json(&explorer, "/api/topics?glob=w%2A").await;
        assert_eq!(filtered["topics"].as_array().unwrap().len(), 1);
        assert_eq!(filtered["topics"][0]["name"], "web");

        let overview = json(&explorer, "/api/overview").await;
        assert_eq!(overview["messages_in"], 11);
        assert_eq!(overview["patterns"], 3);
        assert_eq!(overview["connected_clients"], 1);
        assert_eq!(overview["tracked_topics"], 2);

        // A topic only subscribed to has no age yet.
        sub.handle(vec!["SUBSCRIBE".into(), "quiet".into()], start);
        let all = json(&explorer, "/api/topics?glob=quiet").await;
        assert_eq!(all["topics"][0]["last_message_age_secs"], Value::Null);
    });
}

#[test]
fn the_pattern_count_stops_at_its_budget() {
    runtime().block_on(async {
        let now = Instant::now();
        let router = Router::new(RouterConfig::default(), now);
        let mut config = ExplorerConfig::default();
        config.pattern_budget = 5;
        let explorer = Explorer::new(router.clone(), config);
        let mut sub = Session::new(&router);
        let mut patterns = vec![Bytes::from("PSUBSCRIBE")];
        // No literal prefix or suffix: every one is a candidate for every channel.
        patterns.extend((1..=10).map(|i| Bytes::from(format!("{}*", "?".repeat(i)))));
        sub.handle(patterns, now);
        publish(&router, "t", b"m");
        let topics = json(&explorer, "/api/topics").await;
        assert_eq!(topics["topics"][0]["patterns"], Value::Null);
    });
}

#[test]
fn a_tail_samples_past_its_rate_and_shows_payloads_as_data() {
    runtime().block_on(async {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let explorer = Explorer::new(
            router.clone(),
            ExplorerConfig::default().tail(TailConfig::default().max_per_sec(100).preview(8)),
        );
        let r = get(&explorer, "/api/tail?glob=web%2A");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut stream = r.into_body();
        assert_eq!(router.tails(), 1);
        // The tail is not a receiver.
        assert_eq!(publish(&router, "web.1", b"<script>alert(1)</script>"), 0);
        publish(&router, "web.2", b"\xff\x00ok");
        publish(&router, "db", b"not this one");
        let (name, batch) = next_event(&mut stream).await;
        assert_eq!(name, "batch");
        let m = &batch["messages"];
        assert_eq!(m.as_array().unwrap().len(), 2);
        assert_eq!(m[0]["channel"], "web.1");
        assert_eq!(m[0]["text"], "<script>");
        assert_eq!(m[0]["size"], 25);
        assert_eq!(m[0]["truncated"], true);
        assert_eq!(m[1]["text"], "\u{fffd}\u{0}ok");
        assert_eq!(m[1]["hex"], "ff006f6b");
        assert_eq!(m[1]["truncated"], false);
        assert!(m[1]["at_ms"].as_u64().unwrap() > 1_600_000_000_000);

        // A burst: a tenth of the rate reaches the page, the rest are counted.
        for i in 0..1000 {
            publish(&router, "web.3", format!("{i}").as_bytes());
        }
        let mut seen = 0;
        let mut skipped = 0;
        while seen + skipped < 1000 {
            let (_, batch) = next_event(&mut stream).await;
            seen += batch["messages"].as_array().unwrap().len() as u64;
            skipped += batch["skipped"].as_u64().unwrap();
            assert_eq!(batch["skipped_total"].as_u64().unwrap(), skipped);
        }
        // At most the bucket's 10, plus what refilled while publishing.
        assert!(seen < 100, "{seen} shown");
        assert_eq!(seen + skipped, 1000);
        drop(stream);
        assert_eq!(router.tails(), 0, "closing the stream closes the tail");
    });
}

#[test]
fn tails_and_streams_are_bounded() {
    runtime().block_on(async {
        let router = Router::new(RouterConfig::default().max_tails(1), Instant::now());
        let explorer = Explorer::new(router.clone(), ExplorerConfig::default().max_streams(2));
        let first = get(&explorer, "/api/tail?glob=a");
        assert_eq!(first.status(), 200);
        let second = get(&explorer, "/api/tail?glob=b");
        assert_eq!(second.status(), 503, "over max_tails");
        let long = "x".repeat(300);
        let third = get(&explorer, &format!("/api/tail?glob={long}"));
        assert_eq!(third.status(), 503);
        let err: Value = serde_json::from_slice(&body(third).await).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains("over the bound"),
            "{err}"
        );
        assert_eq!(get(&explorer, "/api/tail").status(), 400);
        let stream = get(&explorer, "/api/stream");
        assert_eq!(stream.status(), 200);
        assert_eq!(
            get(&explorer, "/api/stream").status(),
            503,
            "over max_streams"
        );
        drop(stream);
        assert_eq!(get(&explorer, "/api/stream").status(), 200);
    });
}

#[test]
fn the_snapshot_stream_starts_at_once_and_follows_the_ticks() {
    runtime().block_on(async {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let explorer = Explorer::new(router.clone(), ExplorerConfig::default());
        publish(&router, "a", b"1");
        let mut stream = get(&explorer, "/api/stream").into_body();
        let (name, first) = next_event(&mut stream).await;
        assert_eq!(name, "snapshot");
        assert_eq!(first["overview"]["messages_in"], 1);
        assert_eq!(first["topics"][0]["name"], "a");
        assert_eq!(first["stores"]["enabled"], false);
        publish(&router, "b", b"2");
        explorer.tick(Instant::now());
        let (_, second) = next_event(&mut stream).await;
        assert_eq!(second["overview"]["messages_in"], 2);
    });
}

#[test]
fn a_token_guards_every_path() {
    runtime().block_on(async {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let explorer = Explorer::new(router, ExplorerConfig::default().token("s3cret"));
        for path in ["/", "/api/overview", "/api/stream", "/metrics", "/nowhere"] {
            assert_eq!(get(&explorer, path).status(), 401, "{path}");
            assert_eq!(
                get(&explorer, &format!("{path}?token=wrong")).status(),
                401,
                "{path}"
            );
        }
        assert_eq!(get(&explorer, "/api/overview?token=s3cret").status(), 200);
        let req = http::Request::get("/metrics")
            .header("authorization", "Bearer s3cret")
            .body(())
            .unwrap();
        assert_eq!(explorer.handle(&req).status(), 200);
        assert_eq!(get(&explorer, "/nowhere?token=s3cret").status(), 404);
        let post = http::Request::post("/api/overview?token=s3cret")
            .body(())
            .unwrap();
        assert_eq!(explorer.handle(&post).status(), 405);
    });
}

#[test]
fn the_page_is_self_contained_and_locked_down() {
    runtime().block_on(async {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let explorer = Explorer::new(router, ExplorerConfig::default());
        let r = get(&explorer, "/");
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let page = String::from_utf8(body(r).await.to_vec()).unwrap();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .expect("a script nonce");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"/",
            "url(",
            "@import",
            "//cdn",
        ] {
            assert!(!page.contains(external), "the page loads {external}");
        }
        let again = get(&explorer, "/");
        let other = again.headers()["content-security-policy"].to_str().unwrap();
        assert!(!other.contains(nonce), "a nonce per response");
    });
}

#[test]
fn stores_show_the_tree_a_down_primary_and_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let dead = test_support::free_port();
    let config = Config::parse(
        "kids.conf",
        &format!(
            "store buffer {{ store network primary {{ topic t*; host 127.0.0.1; port {dead}; }} \
             store file secondary {{ path {}; }} }}",
            dir.path().display()
        ),
    )
    .expect("config");
    runtime().block_on(async {
        let router = Router::new(config.router_config(), Instant::now());
        let stores = Stores::start(&config, &router).expect("stores");
        let explorer = Explorer::new(router.clone(), ExplorerConfig::default());
        let mut publisher = Session::new(&router);
        publisher.handle(
            vec!["PUBLISH".into(), "t".into(), "kept".into()],
            Instant::now(),
        );
        let found = test_support::Poll::limit(Duration::from_secs(30)).until(|| {
            let v = explorer.stores();
            // Spooled, waiting for the primary: a backlog, not a replay.
            let spooled = v.nodes.iter().any(|n| {
                n.kind == "buffer"
                    && n.backlog_bytes > Some(0)
                    && n.primary_up == Some(false)
                    && !n.replaying
                    && n.replay_progress.is_none()
            });
            let down = v
                .nodes
                .iter()
                .any(|n| n.kind == "network" && n.up == Some(false));
            (spooled && down).then_some(v)
        });
        let v = found.expect("a spooling buffer in front of a down primary");
        assert!(v.enabled);
        let q = v.queue.as_ref().expect("the queue");
        assert_eq!(q.policy, "block");
        let doc = json(&explorer, "/api/stores").await;
        let nodes = doc["nodes"].as_array().unwrap();
        assert_eq!(nodes[0]["name"], "root");
        assert_eq!(nodes[0]["kind"], "buffer");
        assert_eq!(nodes[0]["depth"], 0);
        // The primary's topic filter is a node of its own, before it.
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["root", "root_primary_filter", "root_primary"]);
        assert_eq!(nodes[1]["kind"], "filter");
        let primary = nodes
            .iter()
            .find(|n| n["kind"] == "network")
            .expect("network node");
        assert_eq!(primary["up"], false);
        assert_eq!(primary["depth"], 1);
        assert_eq!(primary["fields"]["target"], format!("127.0.0.1:{dead}"));
        assert!(doc["nlimit"]["clients_closed"].is_u64());
        let metrics = explorer.metrics();
        assert!(
            metrics.contains("kids_store_up{store=\"root_primary\",kind=\"network\"} 0\n"),
            "{metrics}"
        );
        assert!(metrics.contains("kids_store_queue_capacity "), "{metrics}");
        stores.shutdown().await;
    });
}

#[test]
fn hostile_globs_and_names_cost_a_bounded_number_of_steps() {
    runtime().block_on(async {
        let now = Instant::now();
        let router = Router::new(RouterConfig::default(), now);
        let mut config = ExplorerConfig::default();
        config.filter_budget = 100_000;
        let explorer = Explorer::new(router.clone(), config);
        // Patterns a plain RESP client may subscribe: stars before long literals.
        let mut sub = Session::new(&router);
        let mut patterns = vec![Bytes::from("PSUBSCRIBE")];
        patterns.extend((0..5).map(|i| Bytes::from(format!("*{}[b{i}]", "a".repeat(250)))));
        sub.handle(patterns, now);
        for i in 0..20 {
            publish(&router, &format!("{}{i}", "a".repeat(4000)), b"m");
        }
        let topics = json(&explorer, "/api/topics").await;
        let counts: Vec<&Value> = topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["patterns"])
            .collect();
        assert_eq!(counts.len(), 20);
        assert!(
            counts.contains(&&Value::Null),
            "the step budget ran out: {counts:?}"
        );
        // A filter past the pattern bound is refused; a costly one stops at its budget.
        let long = format!("/api/topics?glob={}", "x".repeat(300));
        assert_eq!(get(&explorer, &long).status(), 400);
        let costly = format!("/api/topics?glob=*{}b", "a".repeat(200));
        let v = json(&explorer, &costly).await;
        assert_eq!(v["incomplete"], true);
        let cheap = json(&explorer, "/api/topics?glob=a*1").await;
        assert_eq!(cheap["incomplete"], false);
        assert_eq!(cheap["topics"].as_array().unwrap().len(), 2); // ...1 and ...11
    });
}

#[test]
fn requests_a_site_elsewhere_could_make_are_refused() {
    runtime().block_on(async {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let open = Explorer::new(router.clone(), ExplorerConfig::default());
        let with = |host: &str, site: Option<&str>| {
            let mut req = http::Request::get("/api/overview").header("host", host);
            if let Some(site) = site {
                req = req.header("sec-fetch-site", site);
            }
            open.handle(&req.body(()).unwrap()).status()
        };
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert_eq!(with(host, None), 200, "{host}");
            assert_eq!(with(host, Some("same-origin")), 200, "{host}");
        }
        // DNS rebinding: another site's name pointed at this address.
        assert_eq!(with("attacker.example:8080", None), 403);
        // A page elsewhere loading our URLs.
        assert_eq!(with("127.0.0.1:8080", Some("cross-site")), 403);
        // With a token, a name is fine (a proxy's), a cross-site request is not.
        let guarded = Explorer::new(router, ExplorerConfig::default().token("t"));
        let req = |site: &str| {
            http::Request::get("/api/overview?token=t")
                .header("host", "kids.internal")
                .header("sec-fetch-site", site)
                .body(())
                .unwrap()
        };
        assert_eq!(guarded.handle(&req("same-origin")).status(), 200);
        assert_eq!(guarded.handle(&req("cross-site")).status(), 403);
    });
}

/// Parses `/metrics` with Prometheus's own Python client's parser and
/// prints `name{labels} value` per sample.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {float(s.value)}")
"#;

#[test]
fn metrics_parse_with_the_prometheus_parser() {
    let Some(python) = test_support::python_with("prometheus_client.parser", "prometheus_client")
    else {
        return;
    };
    let text = runtime().block_on(async {
        let router = Router::new(RouterConfig::default(), Instant::now());
        let explorer = Explorer::new(router.clone(), ExplorerConfig::default());
        let mut sub = Session::new(&router);
        sub.handle(
            vec!["SUBSCRIBE".into(), "we\"ird\\\nname".into()],
            Instant::now(),
        );
        publish(&router, "we\"ird\\\nname", b"12345");
        publish(&router, "plain", b"1");
        publish(&router, "plain", b"2");
        let r = get(&explorer, "/metrics");
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        String::from_utf8(body(r).await.to_vec()).unwrap()
    });
    let mut child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = String::from_utf8(out.stdout).unwrap();
    for line in [
        "counter kids_messages_in_total{} 3.0",
        "counter kids_topic_messages_total{topic=plain} 2.0",
        "counter kids_topic_messages_total{topic=we\"ird\\\nname} 1.0",
        "counter kids_topic_bytes_total{topic=we\"ird\\\nname} 5.0",
        "gauge kids_topic_subscribers{topic=we\"ird\\\nname} 1.0",
        "gauge kids_connected_clients{} 1.0",
    ] {
        assert!(samples.contains(line), "{line:?} not in:\n{samples}");
    }
}

/// One HTTP/1.1 GET over a socket: (status line, headers and body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let (head, rest) = out.split_once("\r\n").unwrap_or((&out, ""));
    (head.to_owned(), rest.to_owned())
}

#[test]
fn served_over_http_it_answers_and_stops() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let router = Router::new(RouterConfig::default(), Instant::now());
    let explorer = Explorer::new(router.clone(), ExplorerConfig::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            explorer
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        })
    });
    publish(&router, "over.http", b"x");
    let (status, rest) = http_get(port, "/api/topics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(rest.contains("\"name\":\"over.http\""), "{rest}");
    assert_eq!(http_get(port, "/nowhere").0, "HTTP/1.1 404 Not Found");
    let (status, rest) = http_get(port, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(rest.contains("<title>kids explorer</title>"));
    // A client that goes away closes its tail.
    let mut tail = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        tail,
        "GET /api/tail?glob=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    test_support::wait_for("the tail to open", || router.tails() == 1);
    drop(tail);
    test_support::wait_for("the tail to close", || router.tails() == 0);
    // A stream open at shutdown does not hold the server up.
    let mut streaming = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        streaming,
        "GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    streaming
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    streaming.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    stop.send(()).unwrap();
    server.join().unwrap().expect("served");
}
