//! stats-core integration tests: one binary, one module per area.

mod stats {
    pub(crate) mod accuracy;
    pub(crate) mod aggregate;
    pub(crate) mod carbon;
    pub(crate) mod drops;
    pub(crate) mod line;
    pub(crate) mod net;
    pub(crate) mod tcp;
}
