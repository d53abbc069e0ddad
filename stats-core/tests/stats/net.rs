//! The tokio adapter: UDP and TCP ingestion (from a real statsd client library), sinks that are down, health, the admin port, and a real carbon-cache.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket as StdUdp};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cadence::{Counted, Gauged, Setted, StatsdClient, Timed, UdpMetricSink};
use stats_core::net::{Format, SinkTarget, Statsd, TcpConfig, bind_udp};
use stats_core::{Config, LineError, OutboxConfig, Status};
use test_support::{free_port, wait_for};
use tokio::net::TcpListener;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A statsd server on free loopback ports (UDP and TCP on the same port),
/// and its admin port.
pub(crate) struct Server {
    pub(crate) statsd: Arc<Statsd>,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) rt: tokio::runtime::Runtime,
}

fn server(config: Config, sinks: Vec<SinkTarget>) -> Server {
    server_with(config, sinks, TcpConfig::default())
}

/// [`server`] with `tcp` as its TCP input's settings.
pub(crate) fn server_with(config: Config, sinks: Vec<SinkTarget>, tcp: TcpConfig) -> Server {
    let rt = runtime();
    // A generous drain, so a slow machine never cuts the final flush short.
    let statsd = Arc::new(
        Statsd::new(config, sinks)
            .unwrap()
            .drain_timeout(Duration::from_secs(60))
            .tcp_config(tcp),
    );
    let (addr, admin) = rt.block_on(async {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (tcp.local_addr().unwrap(), admin.local_addr().unwrap());
        let udp = bind_udp(addrs.0, 1 << 20).unwrap();
        let s = statsd.clone();
        tokio::spawn(async move { s.serve_udp(udp).await });
        let s = statsd.clone();
        tokio::spawn(async move { s.serve_tcp(tcp).await });
        let s = statsd.clone();
        tokio::spawn(async move { s.serve_admin(admin).await });
        addrs
    });
    Server {
        statsd,
        addr,
        admin,
        rt,
    }
}

impl Server {
    pub(crate) fn lines(&self) -> u64 {
        self.statsd.with_aggregator(|a| a.totals().lines)
    }

    fn bad(&self) -> u64 {
        self.statsd.with_aggregator(|a| a.totals().bad_total())
    }
}

/// A fake carbon: accepts connections and collects every line received.
struct FakeCarbon {
    addr: SocketAddr,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

fn fake_carbon() -> FakeCarbon {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
    });
    FakeCarbon { addr, lines }
}

impl FakeCarbon {
    fn value(&self, path: &str) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().find_map(|l| {
            let mut parts = l.split(' ');
            (parts.next() == Some(path)).then(|| parts.next().unwrap_or("").to_owned())
        })
    }
}

#[test]
fn a_real_client_library_over_udp_and_lines_over_tcp_reach_carbon() {
    let carbon = fake_carbon();
    // An hour-long interval: only the flush made below sends.
    let config = Config {
        flush_interval: Duration::from_secs(3600),
        ..Config::etsy()
    };
    let srv = server(config, vec![SinkTarget::plaintext(carbon.addr.to_string())]);

    // cadence, a statsd client library, over UDP.
    let socket = StdUdp::bind("127.0.0.1:0").unwrap();
    let sink = UdpMetricSink::from(srv.addr, socket).unwrap();
    let client = StatsdClient::from_sink("app", sink);
    client.count("hits", 3).unwrap();
    client.count("hits", 4).unwrap();
    client.time("db", 12).unwrap();
    client.gauge("queue", 9).unwrap();
    client.set("users", 42).unwrap();
    // Raw lines over TCP, one split across writes, one bad.
    let mut tcp = std::net::TcpStream::connect(srv.addr).unwrap();
    tcp.write_all(b"app.hits:10|c\napp.db:").unwrap();
    tcp.flush().unwrap();
    tcp.write_all(b"30|ms\nnot a line\n").unwrap();
    drop(tcp);

    wait_for("7 lines and 1 bad line ingested", || {
        srv.lines() == 7 && srv.bad() == 1
    });
    // The sink writers run inside `run`.
    srv.rt.spawn({
        let s = srv.statsd.clone();
        async move { s.run(std::future::pending()).await }
    });
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    srv.statsd.flush(now);
    wait_for("the flush reached carbon", || {
        carbon.value("stats.statsd.numStats").is_some()
    });
    assert_eq!(
        carbon.value("stats.counters.app.hits.count").as_deref(),
        Some("17")
    );
    assert_eq!(
        carbon.value("stats.timers.app.db.mean").as_deref(),
        Some("21")
    );
    assert_eq!(carbon.value("stats.gauges.app.queue").as_deref(), Some("9"));
    assert_eq!(
        carbon.value("stats.sets.app.users.count").as_deref(),
        Some("1")
    );
    assert_eq!(
        carbon
            .value("stats.counters.statsd.bad_lines_seen.count")
            .as_deref(),
        Some("1")
    );
    let lines = carbon.lines.lock().unwrap();
    assert!(
        lines.iter().all(|l| l.ends_with(" 1700000000")),
        "{lines:?}"
    );
    drop(lines);
    drop(srv.rt);
}

#[test]
fn a_sink_that_is_down_never_blocks_ingestion_and_counts_what_it_drops() {
    // A port nobody listens on.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let target = SinkTarget {
        addr: dead.to_string(),
        format: Format::Plaintext,
        outbox: OutboxConfig {
            max_batches: 2,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..OutboxConfig::default()
        },
    };
    let srv = server(Config::statsite(), vec![target]);
    let writer = srv.rt.spawn({
        let s = srv.statsd.clone();
        async move { s.run(std::future::pending()).await }
    });
    let udp = StdUdp::bind("127.0.0.1:0").unwrap();
    for round in 1..=5u64 {
        udp.send_to(format!("c:{round}|c").as_bytes(), srv.addr)
            .unwrap();
        wait_for("the line was ingested", || srv.lines() == round);
        srv.statsd.flush(SystemTime::now());
    }
    wait_for("the sink failed", || {
        srv.statsd.sink_stats()[0].consecutive_failures >= 5
    });
    let stats = srv.statsd.sink_stats()[0].clone();
    // Room for 2, and one more while an attempt holds the oldest.
    assert_eq!(
        stats.dropped_batches + stats.queued_batches as u64,
        5,
        "{stats:?}"
    );
    assert!((2..=3).contains(&stats.dropped_batches), "{stats:?}");
    assert_eq!(stats.dropped_points, stats.dropped_batches);
    assert_eq!(stats.sent_points, 0);
    assert!(srv.statsd.sinks_down());
    let health = srv.statsd.health(SystemTime::now());
    assert_eq!(health.status, Status::Critical, "{health}");
    assert!(health.to_string().contains("dropped"), "{health}");
    writer.abort();
}

#[test]
fn the_admin_port_answers_health_and_stats() {
    let carbon = fake_carbon();
    let srv = server(
        Config::etsy(),
        vec![SinkTarget::plaintext(carbon.addr.to_string())],
    );
    let admin_addr = srv.rt.block_on(async {
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = admin.local_addr().unwrap();
        let s = srv.statsd.clone();
        tokio::spawn(async move { s.serve_admin(admin).await });
        addr
    });
    srv.statsd.ingest(b"bad\nok:1|c");
    let mut conn = std::net::TcpStream::connect(admin_addr).unwrap();
    conn.write_all(b"health\nstats\nbogus\nquit\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("OK - "), "{answer}");
    assert!(answer.contains("flush_age="), "{answer}");
    assert!(answer.contains("\nlines: 1\n"), "{answer}");
    assert!(
        answer.contains(&format!("bad_lines.{}: 1\n", LineError::NoValue.as_str())),
        "{answer}"
    );
    assert!(answer.contains("END\n"), "{answer}");
    assert!(answer.contains("ERROR unknown command"), "{answer}");
}

#[test]
fn shutdown_flushes_once_more_and_drains_the_sinks() {
    let carbon = fake_carbon();
    let srv = server(
        Config::etsy(),
        vec![SinkTarget::plaintext(carbon.addr.to_string())],
    );
    srv.statsd.ingest(b"last:5|c");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = srv.rt.spawn({
        let s = srv.statsd.clone();
        async move {
            s.run(async {
                let _ = stopped.await;
            })
            .await
        }
    });
    stop.send(()).unwrap();
    srv.rt.block_on(run).unwrap();
    // run returned only after the sink took the final flush.
    assert_eq!(srv.statsd.sink_stats()[0].queued_batches, 0);
    wait_for("carbon read the final flush", || {
        carbon.value("stats.counters.last.count").is_some()
    });
    assert_eq!(
        carbon.value("stats.counters.last.count").as_deref(),
        Some("5")
    );
}

#[test]
fn a_real_carbon_cache_stores_our_flushes_over_plaintext_and_pickle() {
    let Some(carbon) = super::carbon::Carbon::start() else {
        return;
    };
    // Two servers, one per protocol, each with its own prefix.
    let plain = Config {
        prefix: "plain".into(),
        percentiles: vec![95.0],
        ..Config::statsite()
    };
    let pickled = Config {
        prefix: "pickled".into(),
        ..Config::etsy()
    };
    let a = server(
        plain,
        vec![SinkTarget::plaintext(carbon.line_addr().to_string())],
    );
    let b = server(
        pickled,
        vec![SinkTarget::pickle(carbon.pickle_addr().to_string())],
    );
    let udp = StdUdp::bind("127.0.0.1:0").unwrap();
    let lines = b"req:1|c\nreq:2|c|@0.5\nlat:10:20:30:40|ms\ntemp:21.5|g";
    udp.send_to(lines, a.addr).unwrap();
    udp.send_to(lines, b.addr).unwrap();
    wait_for("both servers ingested the packet", || {
        a.lines() == 4 && b.lines() == 4
    });
    for srv in [&a, &b] {
        srv.rt.spawn({
            let s = srv.statsd.clone();
            async move { s.run(std::future::pending()).await }
        });
    }
    // Whisper keeps a day: stamp the flush with the current time.
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    a.statsd.flush(UNIX_EPOCH + Duration::from_secs(ts));
    b.statsd.flush(UNIX_EPOCH + Duration::from_secs(ts));

    assert_eq!(carbon.value_at("plain.counts.req", ts), 5.0);
    assert_eq!(carbon.value_at("plain.timers.lat.p95", ts), 40.0);
    assert_eq!(carbon.value_at("plain.timers.lat.mean", ts), 25.0);
    assert_eq!(carbon.value_at("plain.gauges.temp", ts), 21.5);
    assert_eq!(carbon.value_at("pickled.counters.req.count", ts), 5.0);
    assert_eq!(carbon.value_at("pickled.counters.req.rate", ts), 0.5);
    assert_eq!(carbon.value_at("pickled.timers.lat.upper_90", ts), 40.0);
    assert_eq!(carbon.value_at("pickled.gauges.temp", ts), 21.5);
    assert_eq!(carbon.value_at("pickled.statsd.numStats", ts), 6.0);
}

#[test]
fn several_sinks_at_once_each_with_its_own_queue() {
    let carbon = fake_carbon();
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().unwrap();
    let stream_file = dir.path().join("stream.txt");
    let srv = server(
        Config::statsite(),
        vec![
            SinkTarget::plaintext(carbon.addr.to_string()),
            SinkTarget {
                addr: dead.to_string(),
                format: Format::Plaintext,
                outbox: OutboxConfig {
                    max_batches: 1,
                    ..OutboxConfig::default()
                },
            },
            // statsite's default stream_cmd is `cat`: here it appends to a file.
            SinkTarget::stream(format!("cat >> '{}'", stream_file.display())),
        ],
    );
    srv.rt.spawn({
        let s = srv.statsd.clone();
        async move { s.run(std::future::pending()).await }
    });
    for (i, ts) in [1_700_000_000u64, 1_700_000_010].into_iter().enumerate() {
        srv.statsd.ingest(format!("jobs:{}|c", i + 1).as_bytes());
        srv.statsd.flush(UNIX_EPOCH + Duration::from_secs(ts));
    }
    wait_for("carbon got both flushes", || {
        carbon.lines.lock().unwrap().len() == 2
    });
    // One connection per flush: the fake carbon reads each on its own thread.
    let mut lines = carbon.lines.lock().unwrap().clone();
    lines.sort();
    assert_eq!(
        lines,
        [
            "counts.jobs 1.000000 1700000000",
            "counts.jobs 2.000000 1700000010"
        ]
    );
    wait_for("the stream command got both flushes", || {
        std::fs::read_to_string(&stream_file).is_ok_and(|s| s.lines().count() == 2)
    });
    assert_eq!(
        std::fs::read_to_string(&stream_file).unwrap(),
        "counts.jobs|1.000000|1700000000\ncounts.jobs|2.000000|1700000010\n"
    );
    // A batch counts as sent once written (or once the command exited).
    wait_for("both working sinks recorded two sends", || {
        let s = srv.statsd.sink_stats();
        s[0].sent_batches == 2 && s[2].sent_batches == 2
    });
    let stats = srv.statsd.sink_stats();
    assert_eq!(stats[0].dropped_batches, 0);
    assert_eq!(stats[1].sent_batches, 0);
    assert_eq!(
        stats[1].dropped_batches, 1,
        "room for one: the older flush went"
    );
    assert_eq!((stats[2].sent_batches, stats[2].failures), (2, 0));
    assert!(!srv.statsd.sinks_down(), "two of three sinks work");
}

#[test]
fn a_failing_stream_command_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    // Fails the first time (leaving a marker), succeeds the second.
    let cmd = format!(
        "if [ -e '{m}' ]; then cat > '{m}.out'; else touch '{m}'; exit 3; fi",
        m = marker.display()
    );
    let srv = server(
        Config::statsite(),
        vec![SinkTarget {
            addr: cmd,
            format: Format::Stream,
            outbox: OutboxConfig {
                backoff_min: Duration::from_millis(1),
                ..OutboxConfig::default()
            },
        }],
    );
    srv.rt.spawn({
        let s = srv.statsd.clone();
        async move { s.run(std::future::pending()).await }
    });
    srv.statsd.ingest(b"x:1|g");
    srv.statsd
        .flush(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let out = dir.path().join("tried.out");
    wait_for("the second attempt wrote the flush", || {
        std::fs::read_to_string(&out).is_ok_and(|s| !s.is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "gauges.x|1.000000|1700000000\n"
    );
    wait_for("the send was recorded", || {
        srv.statsd.sink_stats()[0].sent_batches == 1
    });
    let stats = srv.statsd.sink_stats()[0].clone();
    assert_eq!((stats.failures, stats.sent_batches), (1, 1), "{stats:?}");
    assert!(stats.last_error.unwrap().contains("exit status: 3"));
}

#[test]
fn nothing_is_ingested_after_the_final_flush() {
    let carbon = fake_carbon();
    let srv = server(
        Config::statsite(),
        vec![SinkTarget::plaintext(carbon.addr.to_string())],
    );
    assert!(srv.statsd.ingest(b"before:1|c"));
    let run = srv.rt.spawn({
        let s = srv.statsd.clone();
        async move { s.run(async {}).await }
    });
    srv.rt.block_on(run).unwrap();
    assert!(srv.statsd.is_closed());
    assert!(
        !srv.statsd.ingest(b"after:1|c"),
        "refused, so never counted as received"
    );
    assert_eq!(srv.lines(), 1);
    wait_for("carbon read the final flush", || {
        carbon.value("counts.before").is_some()
    });
    assert_eq!(carbon.value("counts.after"), None);
}
