//! Fuzz the spool record decoder: no input panics, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use bytes::Bytes;
use kids_core::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rec = Bytes::copy_from_slice(data);
    if let Some((topic, message)) = decode_record(&rec) {
        assert_eq!(encode_record(&topic, &message), data);
    }
});
