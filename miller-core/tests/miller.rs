//! miller-core's integration tests: one binary, one module per area.

mod miller {
    mod client;
    mod crash;
    mod differential;
    mod dispatch;
    mod durable;
    mod greenstalk;
    pub(crate) mod served;
}
