//! sink-core's integration tests: one binary, one module per area.

mod sink {
    pub(crate) mod broker;
    mod crash;
    pub(crate) mod server;
    mod streams;
    pub(crate) mod support;
}
