//! Fuzz the statsd TCP line decoder (stats-core `LineDecoder`): arbitrary
//! bytes, cut into arbitrary pieces, never panic it; it never holds more
//! than its bound after `Ok(None)`; and with the parser (which refuses a
//! line over the bound in a chunk) it yields exactly the lines a plain split
//! keeps, refusing each longer one once, however the stream was cut.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stats_core::{LineDecoder, LineError, Limits, Parser};
use tokio_util::codec::Decoder;

/// The length of a line as the bound counts it: without a final `\r`.
fn len(line: &[u8]) -> usize {
    line.len() - usize::from(line.last() == Some(&b'\r'))
}

fuzz_target!(|data: &[u8]| {
    let [bound, cuts @ ..] = data else { return };
    let max_line = usize::from(*bound % 64) + 1;
    let (cuts, stream) = cuts.split_at(cuts.len().min(8));
    let mut decoder = LineDecoder::new(max_line);
    let parser = Parser::new(Limits {
        max_line,
        ..Limits::default()
    });
    let mut buf = BytesMut::new();
    let (mut lines, mut errors) = (Vec::new(), 0usize);
    // Decoder errors and the parser's refusals count together.
    let mut take = |chunk: &[u8], errors: &mut usize| {
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if len(line) > max_line {
                assert_eq!(parser.parse_line(line).err(), Some(LineError::TooLong));
                *errors += 1;
            } else {
                lines.push(line.to_vec());
            }
        }
    };
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| usize::from(*c) * stream.len() / 256).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    for end in ends {
        buf.extend_from_slice(&stream[at..end.max(at)]);
        at = end.max(at);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(chunk)) => {
                    assert!(chunk.ends_with(b"\n"), "a chunk of whole lines");
                    take(&chunk, &mut errors);
                }
                Ok(None) => break,
                Err(_) => errors += 1,
            }
        }
        assert!(buf.len() <= max_line + 1, "holds {} over {max_line} and a CR", buf.len());
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(chunk)) => take(&chunk, &mut errors),
            Ok(None) => break,
            Err(_) => errors += 1,
        }
    }
    assert!(buf.is_empty());

    // The model: split on newlines, keep what fits, refuse the rest once.
    let mut want = Vec::new();
    let mut refused = 0;
    for line in stream.split(|b| *b == b'\n') {
        if len(line) > max_line {
            refused += 1;
        } else if !line.is_empty() {
            want.push(line.to_vec());
        }
    }
    assert_eq!(lines, want);
    assert_eq!(errors, refused);
});
