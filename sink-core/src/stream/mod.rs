//! The Redis Streams subset sink serves on its log.
