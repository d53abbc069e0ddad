//! miller-core's integration tests: one binary, one module per area.

mod miller {
    mod client;
    mod differential;
    mod dispatch;
}
