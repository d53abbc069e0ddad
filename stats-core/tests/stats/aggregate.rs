//! Aggregation: golden outputs of both modes from one input, each type's semantics, idle keys, bounds, renderers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stats_core::{Aggregator, Config, Error, Flush, HistogramConfig, Idle, LineError, Mode};

const T: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The golden input, one datagram per line (as the worked example in
/// COMPAT.md assumes), flushed once at T.
fn golden_flush(config: Config) -> Flush {
    let mut agg = Aggregator::new(config).unwrap();
    for line in golden("input.txt").lines() {
        agg.ingest(line.as_bytes());
    }
    agg.flush(at(T))
}

fn text(bytes: bytes::Bytes) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn golden_etsy() {
    // Etsy statsd's graphite backend, legacyNamespace false, derived from
    // its source (COMPAT.md, part W.1), without its wall-clock timing lines.
    assert_eq!(
        text(golden_flush(Config::etsy()).plaintext()),
        golden("etsy.txt")
    );
}

#[test]
fn golden_etsy_legacy_namespace() {
    // Etsy's default, legacyNamespace true: counters as stats.<k> and
    // stats_counts.<k>, statsd.numStats unprefixed; the prefix is not used.
    // The same flush as real Etsy statsd 0.9.0 writes (COMPAT.md, W.1).
    let legacy = Config {
        legacy_namespace: true,
        prefix: "ignored".into(),
        ..Config::etsy()
    };
    assert_eq!(
        text(golden_flush(legacy).plaintext()),
        golden("etsy-legacy.txt")
    );
    let statsite = Config {
        legacy_namespace: true,
        ..Config::statsite()
    };
    assert!(matches!(Aggregator::new(statsite), Err(Error::Config(_))));
}

/// Timer figures to the last digit as Etsy statsd 0.9.0 computes them (sums
/// over the sorted values, a top group as the whole sum less the rest, a
/// two-pass deviation), not in arrival order. `etsy-timers.txt` is what its
/// `lib/process_metrics.js` gave, run in node on these values with
/// `pctThreshold: [90, -10]` and a 10 s interval.
#[test]
fn etsy_timer_figures_match_etsy_to_the_last_digit() {
    let values: [(&str, &[f64]); 4] = [
        ("a", &[0.3, 0.2, 0.1]),
        ("b", &[1.1, 2.2, 3.3]),
        (
            "c",
            &[17., 3., 250., 41., 8., 99., 1., 33., 12., 7., 64., 5.],
        ),
        (
            "d",
            &[
                0.7, 12.35, 3.25, 0.001, 42.42, 7.7, 19.99, 0.333, 5.5, 101.1, 2.75, 66.6, 0.05,
                9.81,
            ],
        ),
    ];
    let mut agg = Aggregator::new(Config {
        percentiles: vec![90.0, -10.0],
        ..Config::etsy()
    })
    .unwrap();
    for (key, values) in values {
        for v in values {
            agg.ingest(format!("{key}:{v}|ms").as_bytes());
        }
    }
    let ours: String = text(agg.flush(at(T)).plaintext())
        .lines()
        .filter(|l| l.starts_with("stats.timers."))
        .map(|l| format!("{}\n", l.rsplit_once(' ').unwrap().0))
        .collect();
    assert_eq!(ours, golden("etsy-timers.txt"));
}

#[test]
fn golden_statsite() {
    // statsite's stream output, and what its graphite sink sends with its
    // default prefix `statsite.` (COMPAT.md, part W.2).
    assert_eq!(
        text(golden_flush(Config::statsite()).stream()),
        golden("statsite-stream.txt")
    );
    let prefixed = Config {
        prefix: "statsite".into(),
        ..Config::statsite()
    };
    assert_eq!(
        text(golden_flush(prefixed).plaintext()),
        golden("statsite-graphite.txt")
    );
}

#[test]
fn counters_sum_with_sample_rate_and_rate_per_second() {
    let mut agg = Aggregator::new(Config {
        flush_interval: Duration::from_secs(2),
        ..Config::etsy()
    })
    .unwrap();
    agg.ingest(b"c:1|c\nc:1|c|@0.1\nc:-2|c\nc:1:2:3|c");
    let f = agg.flush(at(T));
    assert_eq!(f.get("stats.counters.c.count"), Some(15.0));
    assert_eq!(f.get("stats.counters.c.rate"), Some(7.5));
    assert_eq!(
        f.get("stats.counters.statsd.metrics_received.count"),
        Some(4.0)
    );
}

#[test]
fn gauges_carry_over_in_etsy_mode_only() {
    let mut etsy = Aggregator::new(Config::etsy()).unwrap();
    let mut statsite = Aggregator::new(Config::statsite()).unwrap();
    for agg in [&mut etsy, &mut statsite] {
        agg.ingest(b"g:10|g\ng:+5|g\ng:-3|g");
    }
    assert_eq!(etsy.flush(at(T)).get("stats.gauges.g"), Some(12.0));
    assert_eq!(statsite.flush(at(T)).get("gauges.g"), Some(12.0));
    // Next interval: a delta builds on the kept value in Etsy mode, on 0 in statsite mode.
    etsy.ingest(b"g:+1|g");
    statsite.ingest(b"g:+1|g");
    assert_eq!(etsy.flush(at(T + 10)).get("stats.gauges.g"), Some(13.0));
    assert_eq!(statsite.flush(at(T + 10)).get("gauges.g"), Some(1.0));
    // Idle: Etsy resends, statsite sends nothing.
    assert_eq!(etsy.flush(at(T + 20)).get("stats.gauges.g"), Some(13.0));
    assert_eq!(statsite.flush(at(T + 20)).get("gauges.g"), None);
}

#[test]
fn idle_keys_send_zero_or_nothing() {
    let mut etsy = Aggregator::new(Config::etsy()).unwrap();
    etsy.ingest(b"c:3|c\nt:5|ms\ns:a|s");
    etsy.flush(at(T));
    let f = etsy.flush(at(T + 10));
    assert_eq!(f.get("stats.counters.c.count"), Some(0.0));
    assert_eq!(f.get("stats.counters.c.rate"), Some(0.0));
    assert_eq!(f.get("stats.timers.t.count"), Some(0.0));
    assert_eq!(f.get("stats.timers.t.count_ps"), Some(0.0));
    assert_eq!(
        f.get("stats.timers.t.mean"),
        None,
        "an idle timer sends only its count"
    );
    assert_eq!(f.get("stats.sets.s.count"), Some(0.0));

    let mut dropping = Aggregator::new(Config {
        idle: Idle::Drop,
        ..Config::etsy()
    })
    .unwrap();
    dropping.ingest(b"c:3|c\nt:5|ms\ns:a|s");
    dropping.flush(at(T));
    let f = dropping.flush(at(T + 10));
    assert_eq!(f.get("stats.counters.c.count"), None);
    assert_eq!(f.get("stats.timers.t.count"), None);
    assert_eq!(f.get("stats.sets.s.count"), None);
    assert_eq!(dropping.keys(), 0, "everything idle is forgotten");
}

#[test]
fn timers_percentiles_in_both_modes() {
    let values: String = (1..=100).map(|v| format!("t:{v}|ms\n")).collect();
    let mut etsy = Aggregator::new(Config {
        percentiles: vec![90.0, 99.9, -10.0],
        ..Config::etsy()
    })
    .unwrap();
    etsy.ingest(values.as_bytes());
    let f = etsy.flush(at(T));
    assert_eq!(f.get("stats.timers.t.count_90"), Some(90.0));
    assert_eq!(f.get("stats.timers.t.upper_90"), Some(90.0));
    assert_eq!(f.get("stats.timers.t.mean_90"), Some(45.5));
    assert_eq!(f.get("stats.timers.t.sum_90"), Some(4095.0));
    assert_eq!(f.get("stats.timers.t.upper_99_9"), Some(100.0));
    assert_eq!(f.get("stats.timers.t.count_top10"), Some(10.0));
    assert_eq!(f.get("stats.timers.t.lower_top10"), Some(91.0));
    assert_eq!(f.get("stats.timers.t.mean_top10"), Some(95.5));
    assert_eq!(
        f.get("stats.timers.t.median"),
        Some(50.5),
        "Etsy's median of an even count"
    );

    let mut statsite = Aggregator::new(Config {
        percentiles: vec![50.0, 90.0, 99.9],
        ..Config::statsite()
    })
    .unwrap();
    statsite.ingest(values.as_bytes());
    let f = statsite.flush(at(T));
    assert_eq!(f.get("timers.t.median"), Some(50.0));
    assert_eq!(f.get("timers.t.p50"), Some(50.0));
    assert_eq!(f.get("timers.t.p90"), Some(90.0));
    assert_eq!(f.get("timers.t.p99_9"), Some(100.0));
    assert_eq!(f.get("timers.t.count"), Some(100.0));
    assert_eq!(f.get("timers.t.rate"), Some(505.0));
    let stdev = f.get("timers.t.stdev").unwrap();
    assert!(
        (stdev - 29.011_491_975_882_016).abs() < 1e-9,
        "sample stdev, got {stdev}"
    );
}

#[test]
fn timers_past_the_exact_cap_keep_exact_bounds_and_close_quantiles() {
    let mut agg = Aggregator::new(Config {
        exact_samples: 100,
        ..Config::statsite()
    })
    .unwrap();
    let values: String = (1..=10_000).map(|v| format!("t:{v}|ms\n")).collect();
    agg.ingest(values.as_bytes());
    let f = agg.flush(at(T));
    assert_eq!(f.get("timers.t.lower"), Some(1.0));
    assert_eq!(f.get("timers.t.upper"), Some(10_000.0));
    assert_eq!(f.get("timers.t.count"), Some(10_000.0));
    assert_eq!(f.get("timers.t.sum"), Some(50_005_000.0));
    let p99 = f.get("timers.t.p99").unwrap();
    assert!((p99 - 9900.0).abs() / 9900.0 <= 0.01, "p99 {p99}");
}

#[test]
fn histogram_bins_in_both_modes() {
    let histograms = vec![HistogramConfig {
        metric: "lat".into(),
        bins: vec![10.0, 20.0, 30.0, f64::INFINITY],
    }];
    let input = b"lat:5:10:15:25:35:99|ms\nother:1|ms";
    let mut etsy = Aggregator::new(Config {
        histograms: histograms.clone(),
        ..Config::etsy()
    })
    .unwrap();
    etsy.ingest(input);
    let f = etsy.flush(at(T));
    let bins: Vec<_> = ["bin_10", "bin_20", "bin_30", "bin_inf"]
        .iter()
        .map(|b| f.get(&format!("stats.timers.lat.histogram.{b}")))
        .collect();
    assert_eq!(bins, [Some(1.0), Some(2.0), Some(1.0), Some(2.0)]);
    assert!(
        f.points()
            .iter()
            .all(|p| !p.path.starts_with("stats.timers.other.histogram"))
    );

    let mut statsite = Aggregator::new(Config {
        histograms,
        ..Config::statsite()
    })
    .unwrap();
    statsite.ingest(input);
    let out = text(statsite.flush(at(T)).stream());
    for line in [
        "timers.lat.histogram.bin_<10.00|1|",
        "timers.lat.histogram.bin_10.00|2|",
        "timers.lat.histogram.bin_20.00|1|",
        "timers.lat.histogram.bin_>30.00|2|",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }
}

#[test]
fn sets_count_unique_members_exactly_then_estimate() {
    let mut agg = Aggregator::new(Config {
        exact_members: 16,
        ..Config::statsite()
    })
    .unwrap();
    agg.ingest(b"u:a|s\nu:b|s\nu:a|s\nu:a:b:c|s");
    assert_eq!(agg.flush(at(T)).get("sets.u"), Some(3.0));
    let members: String = (0..5000).map(|i| format!("u:member{i}|s\n")).collect();
    agg.ingest(members.as_bytes());
    let n = agg.flush(at(T + 10)).get("sets.u").unwrap();
    assert!((n - 5000.0).abs() / 5000.0 < 0.05, "estimate {n}");
}

#[test]
fn kv_values_pass_through_bounded() {
    let mut agg = Aggregator::new(Config {
        max_kv: 2,
        ..Config::statsite()
    })
    .unwrap();
    agg.ingest(b"load:1.5|kv\nload:2|kv\nload:3|kv");
    let out = text(agg.flush(at(T)).stream());
    // The drop is flushed too, as statsite counts a counter: this interval only.
    assert_eq!(
        out,
        "counts.statsd.dropped_kv|1.000000|1700000000\n\
         kv.load|1.500000|1700000000\nkv.load|2.000000|1700000000\n"
    );
    assert_eq!(agg.totals().dropped_kv, 1);
}

#[test]
fn tags_become_graphite_tags_after_the_whole_path() {
    let mut agg = Aggregator::new(Config::etsy()).unwrap();
    agg.ingest(b"req:1|c|#env:prod,canary\nreq;host=a:2|c\nreq:4|c");
    let f = agg.flush(at(T));
    assert_eq!(
        f.get("stats.counters.req.count;env=prod;canary=true"),
        Some(1.0)
    );
    assert_eq!(f.get("stats.counters.req.count;host=a"), Some(2.0));
    assert_eq!(f.get("stats.counters.req.count"), Some(4.0));
}

#[test]
fn bad_lines_are_counted_per_reason_and_the_rest_counts() {
    let mut agg = Aggregator::new(Config::etsy()).unwrap();
    agg.ingest(b"ok:1|c\nnope\nx:abc|c\ny:1|q\nok:1|c");
    let t = agg.totals().clone();
    assert_eq!(t.bad(LineError::NoValue), 1);
    assert_eq!(t.bad(LineError::BadValue), 1);
    assert_eq!(t.bad(LineError::UnknownType), 1);
    assert_eq!(t.bad_total(), 3);
    assert_eq!(t.lines, 2);
    let f = agg.flush(at(T));
    assert_eq!(f.get("stats.counters.ok.count"), Some(2.0));
    assert_eq!(
        f.get("stats.counters.statsd.bad_lines_seen.count"),
        Some(3.0)
    );
    // The internal counters count per interval.
    assert_eq!(
        agg.flush(at(T + 10))
            .get("stats.counters.statsd.bad_lines_seen.count"),
        Some(0.0)
    );
}

#[test]
fn new_keys_beyond_the_bound_are_dropped_and_counted() {
    let mut agg = Aggregator::new(Config {
        max_keys: 2,
        ..Config::statsite()
    })
    .unwrap();
    agg.ingest(b"a:1|c\nb:1|ms\nc:1|g\nd:1:2|s\na:5|c");
    assert_eq!(agg.keys(), 2);
    assert_eq!(agg.totals().dropped_keys, 3);
    let f = agg.flush(at(T));
    assert_eq!(f.get("counts.a"), Some(6.0));
    assert_eq!(f.get("gauges.c"), None);
}

#[test]
fn bad_configs_are_refused() {
    for config in [
        Config {
            flush_interval: Duration::ZERO,
            ..Config::etsy()
        },
        Config {
            percentiles: vec![0.0],
            ..Config::etsy()
        },
        Config {
            percentiles: vec![101.0],
            ..Config::etsy()
        },
        Config {
            histograms: vec![HistogramConfig {
                metric: String::new(),
                bins: vec![2.0, 1.0],
            }],
            ..Config::etsy()
        },
        Config {
            max_keys: 0,
            ..Config::etsy()
        },
    ] {
        assert!(matches!(Aggregator::new(config), Err(Error::Config(_))));
    }
}

#[test]
fn numbers_print_as_each_original_prints_them() {
    let mut etsy = Aggregator::new(Config::etsy()).unwrap();
    etsy.ingest(b"big:1e21|g\nsmall:0.0000001|g\nthird:0.3|g\nint:3|g");
    let out = text(etsy.flush(at(T)).plaintext());
    for line in [
        "stats.gauges.big 1e+21 ",
        "stats.gauges.small 1e-7 ",
        "stats.gauges.third 0.3 ",
        "stats.gauges.int 3 ",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }
}

#[test]
fn pickle_frames_each_batch_with_its_length() {
    let points: Vec<stats_core::Point> = (0..(Flush::PICKLE_BATCH + 1))
        .map(|i| stats_core::Point {
            path: format!("p{i}"),
            value: i as f64,
            count: false,
        })
        .collect();
    let bytes = Flush::new(Mode::Etsy, T, points).pickle();
    let mut rest = &bytes[..];
    let mut messages = 0;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let message = &rest[4..4 + len];
        assert!(message.starts_with(b"\x80\x02]("), "protocol 2, a list");
        assert!(message.ends_with(b"e."), "appends, stop");
        rest = &rest[4 + len..];
        messages += 1;
    }
    assert_eq!(messages, 2);
}

proptest::proptest! {
    /// `ingest` takes a shortcut for `name:N|c` lines; it must agree with the
    /// general path (`Parser::lines` and `add`) on any packet.
    #[test]
    fn the_counter_shortcut_agrees_with_the_general_parser(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                "[a-z.]{1,12}:[0-9]{1,17}\\|c",
                "[a-zA-Z0-9 ;=/_.-]{0,10}:[0-9]{1,3}\\|c(\\|@0\\.5)?",
                "[a-z]{1,3}:-?[0-9]{1,3}(\\.5)?\\|(c|g|ms)",
                "[a-z:|@#. ]{0,12}",
            ],
            0..20,
        ),
        crlf in proptest::bool::ANY,
    ) {
        let packet = lines.join(if crlf { "\r\n" } else { "\n" });
        let mut fast = Aggregator::new(Config::statsite()).unwrap();
        fast.ingest(packet.as_bytes());
        let mut general = Aggregator::new(Config::statsite()).unwrap();
        for line in stats_core::Parser::default().lines(packet.as_bytes()) {
            match line {
                Ok(line) => general.add(&line),
                Err(e) => general.count_bad(e),
            }
        }
        let (f, g) = (fast.totals().clone(), general.totals().clone());
        proptest::prop_assert_eq!((f.lines, f.values, f.bad_lines), (g.lines, g.values, g.bad_lines));
        proptest::prop_assert_eq!(fast.flush(at(T)), general.flush(at(T)));
    }
}

#[test]
fn sums_that_would_not_be_finite_are_refused_and_counted() {
    let mut agg = Aggregator::new(Config::etsy()).unwrap();
    agg.ingest(b"c:1e308|c\nc:1e308|c\ng:1e308|g\ng:+1e308|g\nt:1e200|ms\nt:5|ms\nr:0|c|@1e-320");
    let t = agg.totals().clone();
    assert_eq!(
        t.overflows, 3,
        "the second counter value, the gauge change, the huge sample"
    );
    assert_eq!(t.bad(LineError::BadSampleRate), 1);
    let f = agg.flush(at(T));
    assert!(
        f.points().iter().all(|p| p.value.is_finite()),
        "{:?}",
        f.points()
    );
    assert_eq!(f.get("stats.counters.c.count"), Some(1e308));
    assert_eq!(f.get("stats.gauges.g"), Some(1e308));
    assert_eq!(f.get("stats.timers.t.count"), Some(1.0));
    let out = text(f.plaintext());
    assert!(!out.contains("NaN") && !out.contains("Infinity"), "{out}");
}

#[test]
fn flushes_in_one_second_get_distinct_timestamps() {
    let mut agg = Aggregator::new(Config::statsite()).unwrap();
    agg.ingest(b"c:1|c");
    assert_eq!(agg.flush(at(T)).timestamp(), T);
    agg.ingest(b"c:2|c");
    // A final flush in the same second as the last: carbon would keep only one.
    assert_eq!(agg.flush(at(T)).timestamp(), T + 1);
    assert_eq!(agg.flush(at(T + 10)).timestamp(), T + 10);
}

proptest::proptest! {
    #[test]
    fn arbitrary_packets_never_panic_the_aggregator(
        packet in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        digits in "[0-9]{10,40}",
    ) {
        for mode in [Config::etsy(), Config::statsite()] {
            let mut agg = Aggregator::new(Config { exact_samples: 4, exact_members: 4, ..mode }).unwrap();
            agg.ingest(&packet);
            agg.ingest(format!("n:{digits}|c\nn:{digits}|ms\nn:{digits}|g\nn:+{digits}|g").as_bytes());
            let f = agg.flush(at(T));
            proptest::prop_assert!(f.points().iter().all(|p| p.value.is_finite()));
            let _ = (f.plaintext(), f.pickle(), f.stream());
        }
    }
}

#[test]
fn histograms_distributions_kv_negative_samples_and_tags_in_both_modes() {
    let input = b"h:10|h\nh:20|h\nd:-5:5|d\nload:0.5|kv\nq:1|c|#env:prod\nrated:2|ms|@0.3";
    let mut etsy = Aggregator::new(Config::etsy()).unwrap();
    etsy.ingest(input);
    let f = etsy.flush(at(T));
    assert_eq!(f.get("stats.timers.h.mean"), Some(15.0), "h is a timer");
    assert_eq!(
        f.get("stats.timers.d.lower"),
        Some(-5.0),
        "d is a timer; negatives count"
    );
    assert_eq!(f.get("stats.timers.d.mean"), Some(0.0));
    assert_eq!(f.get("stats.kv.load"), Some(0.5));
    assert_eq!(f.get("stats.counters.q.count;env=prod"), Some(1.0));

    let mut statsite = Aggregator::new(Config::statsite()).unwrap();
    statsite.ingest(input);
    // Ten samples at rate 0.3 count 10/0.3 = 33.3, written 33.
    statsite.ingest("rated:2|ms|@0.3\n".repeat(9).as_bytes());
    let out = text(statsite.flush(at(T)).stream());
    for line in [
        "timers.h.mean|15.000000|1700000000\n",
        "timers.d.lower|-5.000000|1700000000\n",
        "kv.load|0.500000|1700000000\n",
        "counts.q;env=prod|1.000000|1700000000\n",
        "timers.rated.count|33|1700000000\n",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }
}

#[test]
fn a_timer_count_that_would_not_be_finite_refuses_the_sample() {
    let mut agg = Aggregator::new(Config::etsy()).unwrap();
    // Each sample at rate 1e-308 counts 1e308 times: the second would overflow.
    agg.ingest(b"t:1|ms|@1e-308\nt:1|ms|@1e-308");
    assert_eq!(agg.totals().overflows, 1);
    let f = agg.flush(at(T));
    assert_eq!(f.get("stats.timers.t.count"), Some(1e308));
    assert_eq!(
        agg.totals().overflows,
        1,
        "no point had to be dropped at the flush"
    );
}
