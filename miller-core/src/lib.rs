//! miller: events turned into jobs on beanstalk tubes, run by workers.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
pub mod proto;
mod queue;

pub use error::{Error, ProtocolError, QueueError};
pub use queue::{Job, PutParams, Queue, Stats};
