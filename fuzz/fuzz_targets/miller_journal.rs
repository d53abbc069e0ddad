//! Fuzz miller's journal record decoder: any payload decodes to a record
//! within its bounds or to an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miller_core::journal::{Record, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(Record::Put { body, tube, .. }) = decode(data, 4096) {
        assert!(body.len() <= 4096);
        assert!(!tube.is_empty() && tube.len() <= miller_core::proto::TUBE_NAME_MAX);
    }
});
