//! Fuzz the client-side frame codec; whatever decodes re-encodes and decodes the same.
#![no_main]

use bytes::BytesMut;
use kids_core::{Frame, FrameCodec, Limits, Proto};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default().max_bulk(1024).max_multibulk(64).max_depth(16);
    let mut codec = FrameCodec::new(limits, Proto::Resp3);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if contains_nan(&frame) {
            continue;
        }
        let mut wire = BytesMut::new();
        frame.encode(Proto::Resp3, &mut wire);
        let again = codec.decode(&mut wire).expect("re-encoded frame decodes").expect("whole frame");
        assert_eq!(normal(again), normal(frame));
    }
});

fn contains_nan(f: &Frame) -> bool {
    match f {
        Frame::Double(v) => v.is_nan(),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => v.iter().any(contains_nan),
        Frame::Map(p) | Frame::Attribute(p) => p.iter().any(|(k, v)| contains_nan(k) || contains_nan(v)),
        _ => false,
    }
}

/// RESP3 has one null: `*-1` re-encodes as `_`.
fn normal(f: Frame) -> Frame {
    match f {
        Frame::NullArray => Frame::Null,
        Frame::Array(v) => Frame::Array(v.into_iter().map(normal).collect()),
        Frame::Set(v) => Frame::Set(v.into_iter().map(normal).collect()),
        Frame::Push(v) => Frame::Push(v.into_iter().map(normal).collect()),
        Frame::Map(p) => Frame::Map(p.into_iter().map(|(k, v)| (normal(k), normal(v))).collect()),
        Frame::Attribute(p) => Frame::Attribute(p.into_iter().map(|(k, v)| (normal(k), normal(v))).collect()),
        other => other,
    }
}
