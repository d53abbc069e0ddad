//! Dispatch: events become jobs on the application's tube; workers run the handler each job names.
//!
//! ```text
//!  EventSource (sink session, kids subscription, VecSource…)
//!     │ next_batch: [(Event{name, app, data}, token)…]
//!     ▼
//!  Master::plan ── Registry::matching(event, app) ── dedupe window per handler (now passed in)
//!     │ one Envelope (JSON) per matching handler
//!     ▼
//!  Master::dispatch ── use <tube = app> + put_batch (pipelined) ──▶ Queue (beanstalkd, embedded engine)
//!     │ every put of an event confirmed
//!     ▼
//!  EventSource::ack(token)                              at least once
//!
//!  Worker: N slots, one Queue connection each
//!     watch tubes ─ reserve ─ Envelope::decode ─ Registry::handler(app, name)
//!        ├ last_error set, stats-job kicks = 0 ─▶ bury again, not run (a stray bury copy)
//!        ├ Ok          ─▶ delete
//!        ├ Err / panic ─▶ stats-job: try = attempt + reserves ─ RetryPolicy
//!        │                  ├ release(delay: backoff with jitter)
//!        │                  └ bury: new envelope with last_error, put far-delayed,
//!        │                          reserve-job + bury it, delete the original
//!        └ unknown app/handler ─▶ bury with the reason
//! ```
//!
//! The job body is the [`Envelope`], whose JSON schema is documented in
//! [`Envelope`] for workers in other languages.
//!
//! Burying with the error recorded takes several steps (beanstalk cannot
//! change a body): put a copy with `last_error` delayed far
//! ([`WorkerConfig::bury_copy_delay`]), `reserve-job` it, bury it, delete the
//! original. A worker stopped between the put and the bury leaves the copy
//! delayed; when it comes due, a worker reserves an envelope with
//! `last_error` whose `stats-job` `kicks` is 0, and buries it again instead
//! of running its handler a second time (the original came back after its
//! TTR and was handled). A buried copy an operator kicks has `kicks` > 0
//! and runs. Try counts come from the server's `stats-job` counters, which
//! a server restarting from its log (miller's served engine) starts again
//! at zero: after a restart a job may get more tries than the policy's
//! `max_attempts`, and a kicked copy made ready before the restart is
//! buried again (kick it again). The
//! sans-IO parts ([`Registry`], [`Envelope`], [`RetryPolicy`],
//! [`DedupeWindow`], [`Master::plan`]) take time as an argument; the loops
//! (`Master::run`, `Worker`, the network sources) need the `tokio` feature.

mod config;
mod envelope;
mod master;
mod registry;
mod retry;
mod source;

#[cfg(feature = "tokio")]
mod run;
#[cfg(feature = "tokio")]
mod sources;
#[cfg(feature = "tokio")]
mod worker;

pub use config::{KidsSourceConfig, MillerConfig, SinkSourceConfig, SourceConfig, WorkerConfig};
pub use envelope::{DEFAULT_MAX_ENVELOPE, ENVELOPE_VERSION, Envelope, EnvelopeError};
pub use master::{Master, MasterConfig, MasterStats, PlannedJob};
pub use registry::{
    Dedupe, DedupeKey, Handler, HandlerError, HandlerFuture, KeyFn, Registration, Registry,
};
pub use retry::{DEFAULT_DEDUPE_KEYS, DedupeWindow, Retry, RetryPolicy, Rng};
pub use source::{Event, EventSource, VecSource};

#[cfg(feature = "tokio")]
pub use run::ChannelSource;
#[cfg(feature = "tokio")]
pub use sources::{KidsSource, SinkSource};
#[cfg(feature = "tokio")]
pub use worker::{Worker, WorkerStats};
