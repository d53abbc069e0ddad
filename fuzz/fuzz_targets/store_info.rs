//! Fuzz the reader of the store tree's INFO lines (`parse_stores`, what the
//! explorer shows): a store of a user's own may write anything there. Any
//! text reads without a panic; every node's depth follows its name.
#![no_main]

use kids_core::parse_stores;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let view = parse_stores(Some(text));
    assert!(view.enabled);
    for n in &view.nodes {
        // A filter sits at the depth of the store it guards, one up.
        let parts = n.name.matches('_').count();
        assert!(n.depth == parts || n.depth + 1 == parts && n.kind == "filter", "{n:?}");
        assert!(n.replay_progress.is_none());
        assert_eq!(n.spool_bytes.is_some(), n.kind == "buffer");
    }
});
