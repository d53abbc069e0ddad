//! Fuzz miller's config parser (kids' configuration language): any text
//! parses or fails with a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miller_core::dispatch::MillerConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MillerConfig::parse("fuzz.conf", text);
    }
});
