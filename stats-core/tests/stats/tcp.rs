//! The TCP input and admin port on kids-core's server toolkit: idle timeout, the client idle longest making room at the cap, the last line without its newline, overlong lines, the admin `stats` of every drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use stats_core::net::TcpConfig;
use stats_core::{Config, LineError};
use test_support::wait_for;

use super::net::{Server, server_with};

/// A statsd server on loopback with `tcp` as its TCP input's settings.
fn tcp(config: Config, tcp: TcpConfig) -> Server {
    server_with(config, Vec::new(), tcp)
}

impl Server {
    /// Connects to the TCP input.
    fn connect(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }
}

/// Whether the server closed `conn` (a read sees the end of the stream).
fn closed(conn: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.read(&mut byte), Ok(0))
        || matches!(conn.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let srv = tcp(
        Config::etsy(),
        TcpConfig {
            idle_timeout: Some(Duration::from_millis(200)),
            ..TcpConfig::default()
        },
    );
    let mut conn = srv.connect();
    conn.write_all(b"a:1|c\n").unwrap();
    wait_for("lines == 1", || srv.lines() == 1);
    // Closed by the server well within the read timeout.
    assert!(closed(&mut conn));
}

#[test]
fn at_the_cap_the_connection_idle_longest_makes_room_for_a_new_one() {
    let srv = tcp(
        Config::etsy(),
        TcpConfig {
            max_connections: 3,
            idle_timeout: None,
            evict_idle: true,
        },
    );
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = srv.connect();
            c.write_all(format!("idle{i}:1|c\n").as_bytes()).unwrap();
            wait_for("lines == i + 1", || srv.lines() == i + 1);
            std::thread::sleep(Duration::from_millis(10));
            c
        })
        .collect();
    let mut new = srv.connect();
    new.write_all(b"new:1|c\n").unwrap();
    wait_for("the new client's line is taken", || srv.lines() == 4);
    assert!(closed(&mut idle[0]), "the oldest idle one made room");
    // The others are still served.
    idle[2].write_all(b"still:1|c\n").unwrap();
    wait_for("lines == 5", || srv.lines() == 5);
    let stats = srv.statsd.stats();
    assert!(stats.contains("\ntcp_evicted: 1\n"), "{stats}");
    assert!(stats.contains("\ntcp_refused: 0\n"), "{stats}");
}

#[test]
fn without_eviction_a_client_over_the_cap_is_closed_unanswered() {
    let srv = tcp(
        Config::etsy(),
        TcpConfig {
            max_connections: 1,
            idle_timeout: None,
            evict_idle: false,
        },
    );
    let mut first = srv.connect();
    first.write_all(b"first:1|c\n").unwrap();
    wait_for("lines == 1", || srv.lines() == 1);
    let mut second = srv.connect();
    assert!(closed(&mut second));
    first.write_all(b"again:1|c\n").unwrap();
    wait_for("lines == 2", || srv.lines() == 2);
    let stats = srv.statsd.stats();
    assert!(stats.contains("\ntcp_refused: 1\n"), "{stats}");
    assert!(stats.contains("\ntcp_evicted: 0\n"), "{stats}");
}

#[test]
fn the_last_line_without_its_newline_counts_and_an_overlong_one_is_refused() {
    let mut config = Config::etsy();
    config.limits.max_line = 32;
    let srv = tcp(config, TcpConfig::default());
    let mut conn = srv.connect();
    let long = format!("{}:1|c\n", "x".repeat(100));
    conn.write_all(format!("a:1|c\n{long}b:2|c\nlast:3|c").as_bytes())
        .unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    wait_for("lines == 3", || srv.lines() == 3);
    let f = srv.statsd.flush(std::time::SystemTime::now());
    assert_eq!(f.get("stats.counters.last.count"), Some(3.0));
    assert_eq!(
        srv.statsd
            .with_aggregator(|a| a.totals().bad(LineError::TooLong)),
        1
    );
}

#[test]
fn admin_stats_shows_every_drop() {
    let srv = tcp(
        Config {
            max_keys: 1,
            ..Config::statsite()
        },
        TcpConfig::default(),
    );
    srv.statsd.ingest(b"c:1e308|c\nc:1e308|c\nother:1|c\nbad");
    let mut admin = TcpStream::connect(srv.admin).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    admin.write_all(b"stats\nquit\n").unwrap();
    let mut answer = String::new();
    admin.read_to_string(&mut answer).unwrap();
    for want in [
        "\noverflowed_values: 1\n",
        "\ndropped_keys: 1\n",
        "\ndropped_kv: 0\n",
        "\nkeys: 1\n",
        "\nbad_lines: 1\n",
    ] {
        assert!(answer.contains(want), "{want:?} in {answer}");
    }
}

#[test]
fn the_tcp_servers_stop_after_the_final_flush() {
    let srv = tcp(Config::etsy(), TcpConfig::default());
    let mut conn = srv.connect();
    conn.write_all(b"a:1|c\n").unwrap();
    wait_for("lines == 1", || srv.lines() == 1);
    let statsd = srv.statsd.clone();
    srv.rt.block_on(statsd.run(async {}));
    assert!(closed(&mut conn), "drained and closed");
    wait_for("no longer accepting", || {
        TcpStream::connect(srv.addr).is_err()
    });
}
