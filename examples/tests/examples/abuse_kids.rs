//! The kids abuse suite (issue 14).
