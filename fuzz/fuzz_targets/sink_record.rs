//! Fuzz sink's record decoder: no input panics, and the offset the index
//! reads from a record's first bytes is the one the full decode finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sink_core::record::{Record, decode, offset_of};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Record::Message { offset, .. }) | Ok(Record::StreamEntry { offset, .. }) => {
            assert_eq!(offset_of(data), Some(offset));
        }
        Ok(_) => assert_eq!(offset_of(data), None),
        Err(_) => {}
    }
});
