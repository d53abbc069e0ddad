//! Fuzz kids' configuration language: `Config::parse` (the kids server's
//! config) and `parse_directives` (the tree other programs read) take any
//! text and either succeed or fail with an error that names a line and
//! column inside the text, never a panic; a config that parses renders its
//! settings without panicking either.
#![no_main]

use kids_core::{Config, parse_directives};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    match Config::parse("fuzz.conf", text) {
        Ok(config) => {
            let _ = config.router_config();
            let _ = config.conn_config();
            let _ = config.limits();
            let _ = config.pipeline_config();
        }
        Err(e) => located(&e, lines),
    }
    if let Err(e) = parse_directives("fuzz.conf", text) {
        located(&e, lines);
    }
});

/// The error names the file and a position inside the text (a line past
/// the last one only for an unexpected end).
fn located(e: &kids_core::ConfigError, lines: usize) {
    assert_eq!(e.file, "fuzz.conf");
    assert!(e.line >= 1 && e.line <= lines + 1, "line {} of {lines}", e.line);
    assert!(e.col >= 1, "column {}", e.col);
}
