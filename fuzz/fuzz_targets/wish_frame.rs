//! Fuzz the wish frame codec (wish-core/PROTOCOL.md): arbitrary bytes never
//! panic it; every frame that decodes re-encodes to bytes that decode to the
//! same frame, and encoding is a fixed point from there; and a stream cut in
//! two decodes to the same frames and the same error as the whole stream.
#![no_main]


use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use wish_core::{Body, Error, Frame, FrameCodec, FrameError};

/// A small bound, so that length and decompression-bomb checks are reached.
const MAX_FRAME_LEN: usize = 64 * 1024;

fn new_codec() -> FrameCodec {
    // A low threshold, so that re-encoding tries compression on small inputs too.
    FrameCodec::new()
        .max_frame_len(MAX_FRAME_LEN)
        .compress_threshold(32)
}

fuzz_target!(|data: &[u8]| {
    let mut codec = new_codec();
    let (frames, end) = decode_all(&mut codec, BytesMut::from(data));

    // The same bytes in two pieces, cut where the first byte says.
    if let Some(&first) = data.first() {
        let cut = usize::from(first) * data.len() / 256;
        let mut split = new_codec();
        let mut buf = BytesMut::from(&data[..cut]);
        let mut got = Vec::new();
        let mut split_end = None;
        loop {
            match split.decode(&mut buf) {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => {
                    split_end = Some(frame_error(e));
                    break;
                }
            }
        }
        if split_end.is_none() {
            buf.extend_from_slice(&data[cut..]);
            let (rest, rest_end) = decode_all(&mut split, buf);
            got.extend(rest);
            split_end = rest_end;
        }
        assert_eq!(got, frames, "a cut stream decodes to other frames");
        assert_eq!(split_end, end, "a cut stream ends differently");
    }

    for frame in frames {
        let mut wire = BytesMut::new();
        if let Err(e) = codec.encode(frame.clone(), &mut wire) {
            // The only frame that decodes but may not re-encode within the bound
            // is one whose payload came compressed: the bound applies to the
            // decompressed size, and our compressor need not do as well.
            assert!(
                came_compressed(&frame),
                "{frame:?} decoded but does not encode: {e}"
            );
            assert!(matches!(e, Error::Frame(FrameError::TooLong { .. })), "{e}");
            assert!(wire.is_empty(), "a failed encode leaves bytes behind");
            continue;
        }
        let again = codec
            .decode(&mut wire.clone())
            .expect("a re-encoded frame decodes")
            .expect("a re-encoded frame is whole");
        assert_eq!(normal(again.clone()), normal(frame));

        // Encoding what the re-encoded bytes decode to gives the same bytes.
        let mut wire2 = BytesMut::new();
        codec.encode(again, &mut wire2).expect("encodes again");
        assert_eq!(wire2, wire, "encoding is not a fixed point");
    }
});

fn decode_all(codec: &mut FrameCodec, mut buf: BytesMut) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(frame_error(e))),
        }
    }
}

fn frame_error(e: Error) -> FrameError {
    match e {
        Error::Frame(f) => f,
        other => panic!("decoding failed with a non-frame error: {other}"),
    }
}

fn came_compressed(f: &Frame) -> bool {
    match &f.body {
        Body::Request(r) => r.compress,
        Body::Response(r) => r.compress,
        Body::Error(_) | Body::Cancel => false,
    }
}

/// The field that may legitimately differ after a re-encode: `compress`. On
/// decode it says the payload came compressed; the encoder compresses only
/// when it pays, so the wire form may change (the payload may not).
fn normal(mut f: Frame) -> Frame {
    match &mut f.body {
        Body::Request(r) => r.compress = false,
        Body::Response(r) => r.compress = false,
        Body::Error(_) | Body::Cancel => {}
    }
    f
}
