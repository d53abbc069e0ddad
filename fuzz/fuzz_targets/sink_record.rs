//! Fuzz sink's record decoder: no input panics, and a message decodes to
//! fields that lie within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sink_core::record::{Record, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(Record::Message { topic, payload, .. }) = decode(data) {
        assert!(topic.len() + payload.len() + 21 == data.len());
    }
});
