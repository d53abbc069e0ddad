//! Idle keys forgotten after `forget_after` flushes in both modes, and every drop (keys over the cap, overflows, bad lines) flushed as `statsd.*` counters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stats_core::{Aggregator, Config, Error, Flush, Idle};

const T: u64 = 1_700_000_000;

fn at(flush: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T + 10 * flush)
}

fn etsy(forget_after: u32) -> Aggregator {
    Aggregator::new(Config {
        forget_after,
        ..Config::etsy()
    })
    .unwrap()
}

fn finite(f: &Flush) {
    assert!(
        f.points().iter().all(|p| p.value.is_finite()),
        "{:?}",
        f.points()
    );
    let out = String::from_utf8(f.plaintext().to_vec()).unwrap();
    for bad in ["NaN", "Infinity", "inf"] {
        assert!(!out.contains(bad), "{bad} in {out}");
    }
}

#[test]
fn etsy_idle_keys_send_zero_then_are_forgotten_after_forget_after_flushes() {
    let mut agg = etsy(3);
    agg.ingest(b"c:3|c\nt:5|ms\ns:a|s\ng:7|g");
    let f = agg.flush(at(0));
    assert_eq!(f.get("stats.counters.c.count"), Some(3.0));
    // Idle for 1, then 2 flushes: zeros (the gauge resent).
    for n in 1..=2 {
        let f = agg.flush(at(n));
        assert_eq!(f.get("stats.counters.c.count"), Some(0.0), "flush {n}");
        assert_eq!(f.get("stats.timers.t.count"), Some(0.0), "flush {n}");
        assert_eq!(f.get("stats.sets.s.count"), Some(0.0), "flush {n}");
        assert_eq!(f.get("stats.gauges.g"), Some(7.0), "flush {n}");
    }
    // Idle for the 3rd flush: forgotten, nothing sent.
    let f = agg.flush(at(3));
    for path in [
        "stats.counters.c.count",
        "stats.timers.t.count",
        "stats.sets.s.count",
        "stats.gauges.g",
    ] {
        assert_eq!(f.get(path), None, "{path}");
    }
    // Only Etsy's own three counters are left.
    assert_eq!(agg.keys(), 3);
}

#[test]
fn a_key_that_gets_a_value_again_starts_its_idle_count_again() {
    let mut agg = etsy(2);
    agg.ingest(b"c:1|c");
    agg.flush(at(0));
    agg.flush(at(1)); // idle 1: zero
    agg.ingest(b"c:2|c");
    assert_eq!(agg.flush(at(2)).get("stats.counters.c.count"), Some(2.0));
    assert_eq!(agg.flush(at(3)).get("stats.counters.c.count"), Some(0.0));
    assert_eq!(agg.flush(at(4)).get("stats.counters.c.count"), None);
}

#[test]
fn forget_after_1_is_etsys_delete_idle_stats() {
    let mut agg = etsy(1);
    agg.ingest(b"c:3|c\ng:1|g");
    assert_eq!(agg.flush(at(0)).get("stats.gauges.g"), Some(1.0));
    let f = agg.flush(at(1));
    assert_eq!(f.get("stats.counters.c.count"), None);
    assert_eq!(f.get("stats.gauges.g"), None);
}

#[test]
fn the_default_forgets_after_60_flushes_in_both_modes() {
    assert_eq!(Config::etsy().forget_after, 60);
    assert_eq!(Config::statsite().forget_after, 60);
    let mut agg = Aggregator::new(Config::etsy()).unwrap();
    agg.ingest(b"c:1|c");
    for n in 0..60 {
        assert!(
            agg.flush(at(n)).get("stats.counters.c.count").is_some(),
            "flush {n}"
        );
    }
    assert_eq!(agg.flush(at(60)).get("stats.counters.c.count"), None);
}

#[test]
fn statsite_keeps_nothing_across_an_idle_flush_and_kept_gauges_are_forgotten_too() {
    let mut agg = Aggregator::new(Config {
        keep_gauges: true,
        forget_after: 2,
        ..Config::statsite()
    })
    .unwrap();
    agg.ingest(b"c:1|c\ng:4|g");
    agg.flush(at(0));
    let f = agg.flush(at(1));
    assert_eq!(f.get("counts.c"), None);
    assert_eq!(f.get("gauges.g"), Some(4.0));
    assert_eq!(agg.flush(at(2)).get("gauges.g"), None);
    assert_eq!(agg.keys(), 0);
}

#[test]
fn a_full_key_table_takes_new_names_again_once_the_burst_is_forgotten() {
    let mut agg = Aggregator::new(Config {
        max_keys: 100,
        forget_after: 2,
        ..Config::etsy()
    })
    .unwrap();
    let burst: String = (0..1000).map(|i| format!("burst{i}:1|c\n")).collect();
    agg.ingest(burst.as_bytes());
    // 100 keys, Etsy's own three among them, once flushed.
    let dropped = agg.totals().dropped_keys;
    assert_eq!(dropped, 900);
    let f = agg.flush(at(0));
    assert_eq!(
        f.get("stats.counters.statsd.dropped_keys.count"),
        Some(900.0)
    );
    agg.ingest(b"late:1|c");
    assert_eq!(agg.totals().dropped_keys, 901, "still full");
    agg.flush(at(1)); // idle 1: zeros
    agg.flush(at(2)); // idle 2: forgotten
    agg.ingest(b"fresh:5|c");
    let f = agg.flush(at(3));
    assert_eq!(f.get("stats.counters.fresh.count"), Some(5.0));
    assert_eq!(f.get("stats.counters.burst1.count"), None);
    assert_eq!(agg.totals().dropped_keys, 901);
}

#[test]
fn forget_after_0_is_refused() {
    let bad = Aggregator::new(Config {
        forget_after: 0,
        ..Config::etsy()
    });
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
}

#[test]
fn the_issues_overflowing_lines_are_counted_and_flushed_never_inf() {
    for config in [Config::etsy(), Config::statsite()] {
        let mode = config.mode;
        let mut agg = Aggregator::new(config).unwrap();
        agg.ingest(b"c:1e308|c");
        agg.ingest(b"c:1e308|c");
        agg.ingest(b"t:1e308|ms");
        agg.ingest(b"t:1e308|ms");
        agg.ingest(b"x:1e300|c|@1e-10");
        let t = agg.totals().clone();
        // The second counter value; both samples (the square of 1e308 is
        // not finite); the scaled counter value.
        assert_eq!(t.overflows, 4, "{mode:?}");
        assert_eq!(t.bad_total(), 0, "{mode:?}");
        let f = agg.flush(at(0));
        finite(&f);
        let (overflowed, c, x) = match mode {
            stats_core::Mode::Etsy => (
                "stats.counters.statsd.overflowed_values.count",
                "stats.counters.c.count",
                "stats.counters.x.count",
            ),
            stats_core::Mode::Statsite => {
                ("counts.statsd.overflowed_values", "counts.c", "counts.x")
            }
        };
        assert_eq!(f.get(overflowed), Some(4.0), "{mode:?}");
        assert_eq!(f.get(c), Some(1e308), "{mode:?}: the first value stays");
        if mode == stats_core::Mode::Statsite {
            assert_eq!(f.get(x), None, "a key with no value taken sends nothing");
            assert_eq!(f.get("timers.t.count"), None);
        } else {
            assert_eq!(f.get(x), Some(0.0));
            assert_eq!(f.get("stats.timers.t.count"), Some(0.0));
        }
    }
}

#[test]
fn etsy_flushes_its_own_counters_and_the_drops_as_counters() {
    let mut agg = Aggregator::new(Config {
        max_keys: 5,
        max_kv: 1,
        ..Config::etsy()
    })
    .unwrap();
    // Etsy's own three counters exist from the first flush on.
    agg.flush(at(0));
    agg.ingest(b"a:1|c\nb:1|c\nc:1|c\nbad\nk:1|kv\nk:2|kv\ng:1e308|g\ng:+1e308|g");
    let f = agg.flush(at(1));
    let count = |name: &str| f.get(&format!("stats.counters.statsd.{name}.count"));
    assert_eq!(count("bad_lines_seen"), Some(1.0));
    assert_eq!(count("packets_received"), Some(1.0));
    assert_eq!(count("metrics_received"), Some(7.0));
    assert_eq!(
        count("dropped_keys"),
        Some(3.0),
        "c, g twice: the table held 3 + a, b"
    );
    assert_eq!(count("dropped_kv"), Some(1.0));
    assert_eq!(
        count("overflowed_values"),
        None,
        "g was dropped whole, over the cap"
    );
    assert_eq!(
        f.get("stats.counters.statsd.dropped_keys.rate"),
        Some(0.3),
        "a rate per second, as any Etsy counter"
    );
    // The next interval: the drop counters send zero, as Etsy counters do.
    let f = agg.flush(at(2));
    assert_eq!(f.get("stats.counters.statsd.dropped_keys.count"), Some(0.0));
    assert_eq!(
        f.get("stats.counters.statsd.packets_received.count"),
        Some(0.0)
    );
}

#[test]
fn statsite_flushes_only_the_drops_and_only_in_an_interval_that_had_some() {
    let mut agg = Aggregator::new(Config {
        max_keys: 1,
        ..Config::statsite()
    })
    .unwrap();
    agg.ingest(b"a:1|c\nb:1|c\nnot a line");
    let f = agg.flush(at(0));
    assert_eq!(f.get("counts.statsd.dropped_keys"), Some(1.0));
    assert_eq!(f.get("counts.statsd.bad_lines_seen"), Some(1.0));
    assert_eq!(
        f.get("counts.statsd.packets_received"),
        None,
        "statsite has none"
    );
    agg.ingest(b"a:1|c");
    let f = agg.flush(at(1));
    assert!(
        f.points().iter().all(|p| !p.path.contains("statsd.")),
        "{:?}",
        f.points()
    );
}

#[test]
fn idle_drop_with_forget_after_still_forgets_at_once() {
    let mut agg = Aggregator::new(Config {
        idle: Idle::Drop,
        forget_after: 10,
        ..Config::etsy()
    })
    .unwrap();
    agg.ingest(b"c:1|c");
    agg.flush(at(0));
    assert_eq!(agg.flush(at(1)).get("stats.counters.c.count"), None);
}
