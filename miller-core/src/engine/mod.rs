//! The embedded beanstalk engine: tubes, jobs and clients with beanstalkd
//! 1.12's semantics, as a state machine with `now` passed in.
//!
//! CONTRACT (fixed; the engine and the durable layer are written against it):
//! - `Engine::handle(client, Request, now) -> Handled` answers a request,
//!   or parks a blocking reserve ([`Handled::Wait`]) whose reply later comes
//!   out of `Engine::poll_reply(client)`;
//! - every change a restart must see is appended to an internal list as a
//!   [`Change`], drained by the durable layer with `Engine::take_changes`
//!   after each request or tick, before the reply is released;
//! - `Engine::restore(RestoredJob)` rebuilds a job at recovery.
//!
//! ```text
//!   requests ──► Engine::handle(client, Request, now) ──► Handled::Reply / Close
//!                        │                         └────► Handled::Wait (reserve parked)
//!   timers ───► Engine::tick(now)  (due at Engine::next_deadline())
//!                        │
//!                        ├──► Engine::take_woken() ──► Engine::poll_reply(client)
//!                        │      (RESERVED / TIMED_OUT / DEADLINE_SOON of parked reserves)
//!                        └──► Engine::take_changes() ──► durable layer (Put / State / Delete)
//! ```
//!
//! The engine answers exactly as beanstalkd 1.12 does, down to the order in
//! which waiting clients are served and the bytes of `stats`; the known
//! differences are listed on [`Engine`]. [`LocalQueue`] is the [`Queue`]
//! of an engine shared in process.
//!
//! [`Queue`]: crate::Queue

use std::time::Instant;

use bytes::Bytes;

mod config;
mod local;
mod machine;
mod yaml;

pub use config::{EngineConfig, HostInfo, JOB_OVERHEAD, ProcessStats};
pub use local::{Clock, LocalEngine, LocalQueue, ManualClock};
pub use machine::{Engine, PutRefused, SAFETY_MARGIN, URGENT_THRESHOLD};

/// A client of the engine (one connection, or one in-process queue handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// What the engine did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The reply, now.
    Reply(crate::proto::Response),
    /// A reserve waits for a job or its timeout: the reply comes out of
    /// `Engine::poll_reply` once the client is among `Engine::take_woken`.
    Wait,
    /// `quit`: close the connection, no reply.
    Close,
}

/// Where a durable job is, as a restart must see it. Reserved jobs are not
/// durable state: after a restart they are ready again, as in beanstalkd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableState {
    /// Ready (or reserved, which a restart makes ready).
    Ready,
    /// Delayed until this time.
    Delayed(Instant),
    /// Buried.
    Buried,
}

/// One change a restart must see, in the order the engine made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A job was put.
    Put {
        /// Its id.
        id: u64,
        /// Its tube.
        tube: String,
        /// Its priority.
        priority: u32,
        /// Its time-to-run, in seconds (at least 1).
        ttr: u32,
        /// Ready or delayed (a put is never buried, but for lack of memory).
        state: DurableState,
        /// Its body.
        body: Bytes,
    },
    /// A job changed state or priority (release, bury, kick, kick-job,
    /// a delayed job that became ready needs no change).
    State {
        /// The job.
        id: u64,
        /// Its priority now.
        priority: u32,
        /// Its state now.
        state: DurableState,
    },
    /// A job was deleted.
    Delete {
        /// The job.
        id: u64,
    },
}

/// A job rebuilt at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredJob {
    /// Its id (the engine's next id is past every restored one).
    pub id: u64,
    /// Its tube.
    pub tube: String,
    /// Its priority.
    pub priority: u32,
    /// Its time-to-run in seconds.
    pub ttr: u32,
    /// Ready, delayed or buried.
    pub state: DurableState,
    /// Its body.
    pub body: Bytes,
}
