//! wish-core's integration tests, one binary: codec, options from .proto, cache semantics, TCP.

mod wish {
    mod cache;
    mod codec;
    mod net;
    mod options;
    mod support;
}
