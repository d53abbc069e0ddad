//! miller-core's integration tests: one binary, one module per area.

mod miller {
    mod crash;
    mod durable;
    mod greenstalk;
    pub(crate) mod served;
}
