//! The statsd abuse suite (issue 14): a burst of new names over the key cap, thousands of idle TCP connections, and values that overflow, each against the real `statsd` program on loopback.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use test_support::{Process, open_files_limit, wait_for};

use super::{
    Carbon, sigterm_and_wait, start_program, statsd_addresses, statsd_command, statsd_stat,
};

/// The statsd program, flushing every second to `carbon` in Etsy mode,
/// with `args` added; returns it, its statsd address and its admin address.
fn statsd(carbon: &Carbon, args: &[&str]) -> (Process, String, String) {
    let mut all = vec![
        "--host",
        "127.0.0.1",
        "--flush-interval",
        "1s",
        "--mode",
        "etsy",
    ];
    all.extend(["--graphite", &carbon.addr]);
    all.extend(args);
    let (process, rest) = start_program(statsd_command(&all), "statsd");
    let (addr, admin) = statsd_addresses(&rest);
    (process, addr, admin)
}

/// Row 1: a million distinct counter names over UDP fill the key cap; once
/// the burst has been idle for `--forget-after` flushes it is forgotten and
/// a new name is taken and flushed. The drops are counted in the flushed
/// `statsd.dropped_keys` counter and the admin stats, and memory stays bounded.
#[test]
fn statsd_a_burst_of_names_over_the_cap_locks_nothing_out_for_good() {
    const NAMES: usize = 1_000_000;
    const MAX_KEYS: usize = 20_000;
    let carbon = Carbon::start();
    let (child, addr, admin) = statsd(
        &carbon,
        &["--max-keys", &MAX_KEYS.to_string(), "--forget-after", "2"],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let started = Instant::now();
    let mut packet = String::new();
    for i in 0..NAMES {
        packet.push_str(&format!("burst.n{i}:1|c\n"));
        if packet.len() > 1300 {
            udp.send_to(packet.as_bytes(), &addr).expect("send");
            packet.clear();
            // A breath now and then, so the kernel's queue keeps most of it.
            if i % 4_000 < 80 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    udp.send_to(packet.as_bytes(), &addr).expect("send");
    eprintln!("sent {NAMES} names in {:?}", started.elapsed());

    wait_for("dropped keys in the admin stats", || {
        statsd_stat(&admin, "dropped_keys") > 0
    });
    // Most names were over the cap, and flushed as dropped; the burst may
    // span several flushes, so the count adds up over them.
    wait_for("most names flushed as statsd.dropped_keys", || {
        let flushed: f64 = carbon
            .values("stats.counters.statsd.dropped_keys.count")
            .iter()
            .sum();
        flushed >= (NAMES / 2) as f64
    });
    let rss = child.rss_bytes().expect("rss");
    eprintln!("statsd rss after the burst: {} MiB", rss >> 20);
    assert!(rss < 512 << 20, "rss {} MiB", rss >> 20);

    // Wait for the burst to be forgotten, then send a new name until it is
    // taken (a datagram may be lost): it reaches carbon.
    wait_for("the burst forgotten", || {
        statsd_stat(&admin, "keys") < MAX_KEYS as u64 / 2
    });
    let before = statsd_stat(&admin, "dropped_keys");
    udp.send_to(b"fresh.name:7|c", &addr).expect("send");
    wait_for("the new name at carbon", || {
        carbon
            .batch_with("stats.counters.fresh.name.count")
            .is_some()
    });
    assert_eq!(carbon.values("stats.counters.fresh.name.count")[0], 7.0);
    assert_eq!(statsd_stat(&admin, "dropped_keys"), before, "not dropped");
    let batch = carbon
        .batch_with("stats.counters.fresh.name.count")
        .expect("batch");
    assert!(
        !batch.contains("stats.counters.burst."),
        "the burst's names are no longer written"
    );
    assert!(
        batch.lines().count() < 100,
        "a short flush: {} lines",
        batch.lines().count()
    );
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "{status}");
}

/// Row 2: 2,000 idle TCP connections (fewer if the open-files limit is
/// low), over the 1,024 served at once: the ones idle longest make room,
/// so a new client's metric reaches the next flush.
#[test]
fn statsd_idle_tcp_connections_never_lock_a_new_client_out() {
    let limit = open_files_limit().unwrap_or(1024);
    // Each connection costs a descriptor here and one in statsd.
    let idle_count = 2_000.min(limit.saturating_sub(200));
    eprintln!("open files limit {limit}: {idle_count} idle connections");
    let carbon = Carbon::start();
    let (child, addr, admin) = statsd(&carbon, &["--tcp-idle-timeout", "1h"]);
    let idle: Vec<TcpStream> = (0..idle_count)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 1_024, "only {} connected", idle.len());
    let mut fresh = TcpStream::connect(&addr).expect("a new client connects");
    fresh.write_all(b"tcp.fresh:1|c\n").expect("send");
    wait_for("the new client's line counted", || {
        statsd_stat(&admin, "lines") >= 1
    });
    wait_for("the new client's metric at carbon", || {
        carbon.values("stats.counters.tcp.fresh.count").first() == Some(&1.0)
    });
    // Every client over the cap (1,024) made room or was refused, in the
    // order they came: all before the new one were taken when it was.
    let over = (idle.len() + 1).saturating_sub(1_024) as u64;
    let (evicted, refused) = (
        statsd_stat(&admin, "tcp_evicted"),
        statsd_stat(&admin, "tcp_refused"),
    );
    eprintln!("{evicted} evicted, {refused} refused");
    assert!(evicted >= 1, "the new client made room");
    assert_eq!(evicted + refused, over);
    // The oldest idle ones were closed to make room; the newest still open.
    let mut first = idle.first().expect("one").try_clone().expect("clone");
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    // The end of the stream or a reset; a read timeout is not a close.
    let read = first.read(&mut byte);
    assert!(
        matches!(read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the oldest idle connection was not closed: {read:?}"
    );
    let rss = child.rss_bytes().expect("rss");
    eprintln!(
        "statsd rss with {idle_count} connections: {} MiB",
        rss >> 20
    );
    assert!(rss < 256 << 20, "rss {} MiB", rss >> 20);
    drop(idle);
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "{status}");
}

/// Row 3: values that overflow are counted (flushed as
/// `statsd.overflowed_values`, and in the admin stats), and nothing
/// infinite or NaN is ever flushed.
#[test]
fn statsd_overflowing_values_are_counted_and_never_flushed_as_inf() {
    let carbon = Carbon::start();
    let (child, addr, admin) = statsd(&carbon, &[]);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    // One datagram, taken in at once: a flush cannot fall between the two
    // halves of an overflowing sum.
    let lines = [
        "c:1e308|c",
        "c:1e308|c",
        "t:1e308|ms",
        "t:1e308|ms",
        "x:1e300|c|@1e-10",
    ];
    udp.send_to(lines.join("\n").as_bytes(), &addr)
        .expect("send");
    wait_for("the five lines counted", || {
        statsd_stat(&admin, "lines") == 5
    });
    assert_eq!(statsd_stat(&admin, "overflowed_values"), 4);
    assert_eq!(
        statsd_stat(&admin, "bad_lines"),
        0,
        "not bad lines: overflows"
    );
    wait_for("statsd.overflowed_values at carbon", || {
        !carbon
            .values("stats.counters.statsd.overflowed_values.count")
            .is_empty()
    });
    assert_eq!(
        carbon.values("stats.counters.statsd.overflowed_values.count")[0],
        4.0
    );
    assert_eq!(carbon.values("stats.counters.c.count")[0], 1e308);
    // Another client is still served.
    let other = UdpSocket::bind("127.0.0.1:0").expect("udp");
    other.send_to(b"other:1|c", &addr).expect("send");
    wait_for("the other client's metric at carbon", || {
        carbon.values("stats.counters.other.count").first() == Some(&1.0)
    });
    let status = sigterm_and_wait(&child);
    assert!(status.success(), "{status}");
    let all = carbon.everything();
    for bad in ["NaN", "Infinity", "inf"] {
        assert!(!all.contains(bad), "{bad} flushed:\n{all}");
    }
}
