//! wish-core's integration tests, one binary: codec, options from .proto, cache semantics, TCP, read limits, required fields.

mod wish {
    mod cache;
    mod codec;
    mod limits;
    mod net;
    mod options;
    mod required;
    mod support;
}
