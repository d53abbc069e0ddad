//! Fuzz the stream op decoder: no input panics, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sink_core::stream::StreamOp;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = StreamOp::decode(data) {
        let mut out = Vec::new();
        op.encode(&mut out);
        assert_eq!(out, data);
    }
});
