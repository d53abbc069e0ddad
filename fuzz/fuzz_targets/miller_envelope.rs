//! Fuzz the job envelope decoder: any body decodes or fails, never a
//! panic, and what decodes re-encodes to a body that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miller_core::dispatch::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data, 1 << 16) {
        let body = e.encode(1 << 20).expect("a decoded envelope encodes");
        assert_eq!(Envelope::decode(&body, 1 << 20).expect("re-decodes"), e);
    }
});
