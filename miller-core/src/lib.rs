//! miller: events turned into jobs on beanstalk tubes, run by workers.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
mod client;
pub mod dispatch;
pub mod engine;
mod error;
pub mod journal;
pub mod proto;
mod queue;
pub mod server;
pub mod store;

#[cfg(feature = "tokio")]
pub mod net;

#[cfg(feature = "tokio")]
pub use client::Client;
pub use error::{Error, ProtocolError, QueueError};
pub use queue::{Job, PutParams, Queue, Stats};
