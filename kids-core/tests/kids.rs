//! Integration tests of kids-core: one binary, one module per concern.

mod kids {
    pub(crate) mod clients;
    pub(crate) mod codec;
    pub(crate) mod config;
    pub(crate) mod differential;
    pub(crate) mod explorer;
    pub(crate) mod filestore;
    pub(crate) mod forward;
    pub(crate) mod nlimit;
    pub(crate) mod router;
    pub(crate) mod seglog;
    pub(crate) mod stores;
    pub(crate) mod support;
    pub(crate) mod toolkit;
}
