//! Pub/sub: the router, a kids connection's session, kids' own commands,
//! Redis's glob, the `nlimit` output limits and sampled tails for people watching.
//!
//! ```text
//!  Session::handle ─▶ resp::dispatch ─▶ KidsCommand ─▶ Router::publish ─▶ Tap (stores)
//!                                                          │ one encoded frame per shape
//!                                                          ▼
//!                                    subscribers' Outboxes (nlimit: hard / soft + seconds)
//! ```

pub(crate) mod commands;
pub(crate) mod glob;
pub(crate) mod nlimit;
pub(crate) mod patterns;
pub(crate) mod router;
pub(crate) mod session;
pub(crate) mod tail;
