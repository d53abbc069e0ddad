//! The statsd abuse suite (issue 14).
