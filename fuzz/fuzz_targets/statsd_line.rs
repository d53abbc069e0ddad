//! Fuzz the statsd line protocol (stats-core): arbitrary bytes never panic
//! the parser, the TCP line decoder or the aggregator; every line that parses
//! re-encodes to a line that parses back to the same name, kind and values;
//! and the decoder yields the same lines whether the stream comes whole or cut in two.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stats_core::{Aggregator, Config, Limits, LineDecoder, Metric, Parser, Value};
use std::time::{Duration, UNIX_EPOCH};
use tokio_util::codec::Decoder;

/// Small bounds, so that every limit is reached.
const LIMITS: Limits = Limits {
    max_line: 256,
    max_name: 32,
    max_values: 8,
    max_tags: 4,
};

fn decode_all(stream: &[u8], cut: usize) -> Vec<Vec<u8>> {
    let mut dec = LineDecoder::new(LIMITS.max_line);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in [&stream[..cut], &stream[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(chunk)) => out.push(chunk.to_vec()),
                Ok(None) => break,
                Err(_) => out.push(b"<too long>".to_vec()),
            }
        }
    }
    while let Ok(Some(chunk)) = dec.decode_eof(&mut buf) {
        out.push(chunk.to_vec());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let parser = Parser::new(LIMITS);
    for line in parser.lines(data).flatten() {
        let values: Vec<Value<'_>> = line.values().collect();
        let mut out = BytesMut::new();
        if Metric::new(line.name(), line.kind(), &values)
            .rate(line.rate())
            .encode(&mut out)
            .is_ok()
        {
            let back = Parser::default()
                .parse_line(&out[..out.len() - 1])
                .expect("an encoded line parses");
            assert_eq!(back.name(), line.name());
            assert_eq!(back.kind(), line.kind());
            assert_eq!(back.values().collect::<Vec<_>>(), values);
        }
    }

    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    let whole: Vec<u8> = decode_all(data, data.len()).concat();
    let split: Vec<u8> = decode_all(data, cut).concat();
    // Cutting never changes the bytes of the whole lines handed on.
    if !whole.windows(10).any(|w| w == b"<too long>")
        && !split.windows(10).any(|w| w == b"<too long>")
    {
        assert_eq!(whole, split);
    }

    let mut agg = Aggregator::new(Config {
        limits: LIMITS,
        exact_samples: 4,
        exact_members: 4,
        ..Config::etsy()
    })
    .expect("config");
    agg.ingest(data);
    let flush = agg.flush(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let _ = (flush.plaintext(), flush.pickle(), flush.stream());
});
