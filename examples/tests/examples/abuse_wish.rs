//! The wish abuse suite (issue 14).
