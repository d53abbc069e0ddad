//! sink: durable pub/sub with sessions, over the Redis protocol.
//!
//! (Crate documentation in progress.)

pub mod stream;
