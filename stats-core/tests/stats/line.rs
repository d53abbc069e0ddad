//! The line protocol: golden vectors, every bad-line reason, the TCP decoder split at every byte, and a proptest round trip.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use stats_core::{Kind, Limits, LineDecoder, LineError, Metric, Parser, Value, sanitize};
use tokio_util::codec::Decoder;

fn parse(line: &str) -> Result<(String, Kind, Vec<Value<'_>>, f64), LineError> {
    Parser::default().parse_line(line.as_bytes()).map(|l| {
        (
            l.name().to_owned(),
            l.kind(),
            l.values().collect(),
            l.rate(),
        )
    })
}

#[test]
fn golden_lines() {
    use Value::*;
    assert_eq!(
        parse("api.hits:1|c"),
        Ok(("api.hits".into(), Kind::Counter, vec![Number(1.0)], 1.0))
    );
    assert_eq!(
        parse("api.hits:2|c|@0.5"),
        Ok(("api.hits".into(), Kind::Counter, vec![Number(2.0)], 0.5))
    );
    assert_eq!(
        parse("neg:-3.5|c"),
        Ok(("neg".into(), Kind::Counter, vec![Number(-3.5)], 1.0))
    );
    assert_eq!(
        parse("temp:50|g"),
        Ok(("temp".into(), Kind::Gauge, vec![Number(50.0)], 1.0))
    );
    assert_eq!(
        parse("temp:+5|g"),
        Ok(("temp".into(), Kind::Gauge, vec![Delta(5.0)], 1.0))
    );
    assert_eq!(
        parse("temp:-5|g"),
        Ok(("temp".into(), Kind::Gauge, vec![Delta(-5.0)], 1.0))
    );
    assert_eq!(
        parse("lat:1:2.5:3e2|ms"),
        Ok((
            "lat".into(),
            Kind::Timer,
            vec![Number(1.0), Number(2.5), Number(300.0)],
            1.0
        ))
    );
    assert_eq!(
        parse("sz:10|h"),
        Ok(("sz".into(), Kind::Histogram, vec![Number(10.0)], 1.0))
    );
    assert_eq!(
        parse("dist:.5|d"),
        Ok(("dist".into(), Kind::Distribution, vec![Number(0.5)], 1.0))
    );
    assert_eq!(
        parse("users:alice|s"),
        Ok(("users".into(), Kind::Set, vec![Member(b"alice")], 1.0))
    );
    assert_eq!(
        parse("load:0.75|kv"),
        Ok(("load".into(), Kind::KeyValue, vec![Number(0.75)], 1.0))
    );
    assert_eq!(parse("my key/x:1|c").unwrap().0, "my_key-x");

    let line = Parser::default()
        .parse_line(b"req:1|c|#env:prod,canary|c:abc123|T1700000000|@0.25")
        .unwrap();
    assert_eq!(line.tags(), Some(&b"env:prod,canary"[..]));
    let tags: Vec<_> = line.tag_pairs().collect();
    assert_eq!(
        tags,
        [(&b"env"[..], Some(&b"prod"[..])), (&b"canary"[..], None)]
    );
    assert_eq!(line.container(), Some(&b"abc123"[..]));
    assert_eq!(line.timestamp(), Some(1_700_000_000));
    assert_eq!(line.rate(), 0.25);
}

#[test]
fn every_bad_line_reason() {
    let small = Parser::new(Limits {
        max_line: 40,
        max_name: 8,
        max_values: 3,
        max_tags: 2,
    });
    let cases: &[(&str, LineError)] = &[
        (
            "a:1|c|#aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            LineError::TooLong,
        ),
        ("abcdefghi:1|c", LineError::NameTooLong),
        ("***:1|c", LineError::EmptyName),
        (":1|c", LineError::EmptyName),
        ("name", LineError::NoValue),
        ("name|c", LineError::NoValue),
        ("name:1", LineError::NoType),
        ("name:1|x", LineError::UnknownType),
        ("name:1|", LineError::UnknownType),
        ("name:abc|c", LineError::BadValue),
        ("name:|c", LineError::BadValue),
        ("name:inf|ms", LineError::BadValue),
        ("name:NaN|g", LineError::BadValue),
        ("name:1e999|c", LineError::BadValue),
        ("name:0x10|c", LineError::BadValue),
        ("name:1::2|ms", LineError::BadValue),
        ("name:|s", LineError::BadValue),
        ("name:1:2:3:4|ms", LineError::TooManyValues),
        ("name:1|c|@0", LineError::BadSampleRate),
        ("name:1|c|@1.5", LineError::BadSampleRate),
        ("name:1|c|@x", LineError::BadSampleRate),
        ("name:1|c|#a,b,c", LineError::TooManyTags),
        ("name:1|c|Tsoon", LineError::BadTimestamp),
        ("name:1|c|T-1", LineError::BadTimestamp),
        ("name:1|c|x", LineError::BadField),
        ("name:1|c|@0.5|@0.5", LineError::BadField),
    ];
    for (line, reason) in cases {
        assert_eq!(
            small.parse_line(line.as_bytes()).err(),
            Some(*reason),
            "{line}"
        );
    }
    let reasons: std::collections::HashSet<_> = cases.iter().map(|c| c.1).collect();
    assert_eq!(
        reasons.len(),
        LineError::ALL.len(),
        "every reason has a case"
    );
}

#[test]
fn a_bad_line_does_not_spoil_its_packet() {
    let packet = b"a:1|c\nbad\r\n\n\nb:2|c\r\nc:x|c\nd:3|ms";
    let results: Vec<_> = Parser::default()
        .lines(packet)
        .map(|r| r.map(|l| l.name().to_owned()))
        .collect();
    assert_eq!(
        results,
        [
            Ok("a".to_owned()),
            Err(LineError::NoValue),
            Ok("b".to_owned()),
            Err(LineError::BadValue),
            Ok("d".to_owned())
        ]
    );
}

#[test]
fn sanitising_follows_etsy() {
    assert_eq!(sanitize(b"a  \t b"), "a_b");
    assert_eq!(sanitize(b"path/to/key"), "path-to-key");
    assert_eq!(sanitize(b"k\xff\xfe#@!:|ey"), "key");
    assert_eq!(sanitize(b"name;env=prod"), "name;env=prod");
    assert_eq!(sanitize(b"ok-_.09AZaz"), "ok-_.09AZaz");
    assert!(matches!(
        sanitize(b"clean.name"),
        std::borrow::Cow::Borrowed(_)
    ));
}

/// What a TCP connection makes of a stream: the decoder's chunks, parsed
/// with the same bound.
#[derive(Debug, PartialEq)]
struct Decoded {
    /// The name of each line parsed, or `ERR <why>` (too long aside).
    names: Vec<String>,
    /// Lines refused as too long, by the decoder or by the parser.
    refused: usize,
    /// The most the decoder held after `Ok(None)`.
    held: usize,
}

/// Feeds `input` to a fresh decoder bounded at `max_line` in two pieces
/// split at `at`, with the end of the stream after them.
fn decode_split(input: &[u8], at: usize, max_line: usize) -> Decoded {
    let mut decoder = LineDecoder::new(max_line);
    let mut buf = BytesMut::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    let (mut refused, mut held) = (0, 0);
    for piece in [&input[..at], &input[at..]] {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(c)) => chunks.push(c),
                Ok(None) => break,
                Err(_) => refused += 1,
            }
        }
        held = held.max(buf.len());
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(c)) => chunks.push(c),
            Ok(None) => break,
            Err(_) => refused += 1,
        }
    }
    let parser = Parser::new(Limits {
        max_line,
        ..Limits::default()
    });
    let mut names = Vec::new();
    for line in chunks.iter().flat_map(|c| parser.lines(c)) {
        match line {
            Ok(l) => names.push(l.name().to_owned()),
            Err(LineError::TooLong) => refused += 1,
            Err(e) => names.push(format!("ERR {e}")),
        }
    }
    Decoded {
        names,
        refused,
        held,
    }
}

#[test]
fn tcp_decoder_split_at_every_byte() {
    let input = b"a:1|c\nbb:2|g\r\nccc:1:2|ms\n\nd:x|s\ne:1|c";
    for at in 0..=input.len() {
        let got = decode_split(input, at, 100);
        assert_eq!(got.names, ["a", "bb", "ccc", "d", "e"], "split at {at}");
        assert_eq!(got.refused, 0, "split at {at}");
    }
}

#[test]
fn tcp_decoder_skips_an_overlong_line_and_carries_on() {
    let long = format!("a:1|c\n{}:1|c\nb:2|c\n", "x".repeat(50));
    for at in 0..=long.len() {
        let got = decode_split(long.as_bytes(), at, 20);
        // Refused once however it was cut: by the decoder while it waits
        // for its newline, else by the parser.
        assert_eq!(got.names, ["a", "b"], "split at {at}");
        assert_eq!(got.refused, 1, "split at {at}");
    }
}

#[test]
fn tcp_decoder_refuses_each_line_over_the_bound_once_and_holds_no_more() {
    // Overlong lines first, between, last, with and without `\r`, and a
    // line exactly at the bound.
    let input = format!(
        "{long}\na:1|c\n{long}\r\n{exact}\n{long}\nb:2|c\r\n{long}",
        long = "y".repeat(11),
        exact = "e:1234|c\r",
    );
    for at in 0..=input.len() {
        let got = decode_split(input.as_bytes(), at, 10);
        assert_eq!(got.names, ["a", "e", "b"], "split at {at}");
        assert_eq!(got.refused, 4, "split at {at}");
        assert!(got.held <= 11, "split at {at}: held {}", got.held);
    }
}

#[test]
fn encoder_refuses_what_would_not_parse_back() {
    let mut out = BytesMut::new();
    let neg = [Value::Number(-1.0)];
    assert_eq!(
        Metric::new("g", Kind::Gauge, &neg).encode(&mut out),
        Err(LineError::BadValue)
    );
    let member = [Value::Member(b"a:b")];
    assert_eq!(
        Metric::new("s", Kind::Set, &member).encode(&mut out),
        Err(LineError::BadValue)
    );
    let one = [Value::Number(1.0)];
    assert_eq!(
        Metric::new("c", Kind::Counter, &one)
            .rate(0.0)
            .encode(&mut out),
        Err(LineError::BadSampleRate)
    );
    assert_eq!(
        Metric::new("c", Kind::Counter, &one)
            .tags(&[("a|b", None)])
            .encode(&mut out),
        Err(LineError::BadField)
    );
    assert_eq!(
        Metric::new("???", Kind::Counter, &one).encode(&mut out),
        Err(LineError::EmptyName)
    );
    assert_eq!(
        Metric::new("c", Kind::Counter, &[]).encode(&mut out),
        Err(LineError::NoValue)
    );
    assert!(out.is_empty(), "nothing written on error");
    let delta = [Value::Delta(-2.5), Value::Delta(3.0)];
    Metric::new("g", Kind::Gauge, &delta)
        .timestamp(7)
        .container("x")
        .encode(&mut out)
        .unwrap();
    assert_eq!(&out[..], b"g:-2.5:+3|g|c:x|T7\n");
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Counter),
        Just(Kind::Gauge),
        Just(Kind::Timer),
        Just(Kind::Histogram),
        Just(Kind::Distribution),
        Just(Kind::Set),
        Just(Kind::KeyValue),
    ]
}

proptest! {
    #[test]
    fn round_trip(
        name in "[a-zA-Z0-9_.-]{1,40}",
        kind in kind(),
        numbers in prop::collection::vec(-1e12f64..1e12, 1..6),
        members in prop::collection::vec("[a-z0-9@.]{1,12}", 1..6),
        rate in prop::option::of(0.001f64..=1.0),
        tags in prop::collection::vec(("[a-z]{1,8}", prop::option::of("[a-z0-9.]{1,8}")), 0..4),
        container in prop::option::of("[a-z0-9]{1,12}"),
        ts in prop::option::of(0u64..4_000_000_000),
    ) {
        let values: Vec<Value<'_>> = match kind {
            Kind::Set => members.iter().map(|m| Value::Member(m.as_bytes())).collect(),
            Kind::Gauge => numbers.iter().map(|n| if *n < 0.0 { Value::Delta(*n) } else { Value::Number(*n) }).collect(),
            _ => numbers.iter().map(|n| Value::Number(*n)).collect(),
        };
        let tag_refs: Vec<(&str, Option<&str>)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let mut metric = Metric::new(&name, kind, &values).tags(&tag_refs);
        if let Some(r) = rate { metric = metric.rate(r); }
        if let Some(c) = &container { metric = metric.container(c); }
        if let Some(t) = ts { metric = metric.timestamp(t); }
        let mut out = BytesMut::new();
        metric.encode(&mut out).unwrap();
        prop_assert_eq!(out.last(), Some(&b'\n'));
        let line = Parser::default().parse_line(&out[..out.len() - 1]).unwrap();
        prop_assert_eq!(line.name(), name.as_str());
        prop_assert_eq!(line.kind(), kind);
        prop_assert_eq!(line.values().collect::<Vec<_>>(), values);
        prop_assert_eq!(line.rate(), rate.unwrap_or(1.0));
        let parsed_tags: Vec<(Vec<u8>, Option<Vec<u8>>)> = line.tag_pairs().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
        let sent_tags: Vec<(Vec<u8>, Option<Vec<u8>>)> = tags.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.as_bytes().to_vec()))).collect();
        prop_assert_eq!(parsed_tags, sent_tags);
        prop_assert_eq!(line.container(), container.as_deref().map(str::as_bytes));
        prop_assert_eq!(line.timestamp(), ts);
    }

    #[test]
    fn arbitrary_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..300)) {
        let parser = Parser::new(Limits { max_line: 64, max_name: 16, max_values: 4, max_tags: 2 });
        for line in parser.lines(&packet).flatten() {
            prop_assert!(line.values().count() >= 1);
            prop_assert!(!line.name().is_empty());
        }
    }
}

#[test]
fn tcp_decoder_keeps_a_line_at_the_bound_cut_between_its_cr_and_newline() {
    // Found by the statsd_tcp fuzz target: `/\r` then `\n`, bound 1. The
    // `\r` is not part of the line, so its line is at the bound, not over.
    for (input, names) in [(&b"/\r\nx\n"[..], 2), (b"ab:1|c\r\n", 1)] {
        let max_line = input.iter().position(|b| *b == b'\r').unwrap();
        for at in 0..=input.len() {
            let got = decode_split(input, at, max_line);
            assert_eq!(got.refused, 0, "split at {at}");
            assert_eq!(got.names.len(), names, "split at {at}: {:?}", got.names);
        }
    }
}
