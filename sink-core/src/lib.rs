//! sink: durable pub/sub with sessions, over the Redis protocol.
//!
//! (Crate documentation in progress.)

mod broker;
mod commands;
mod conn;
mod error;
pub mod record;
mod sessions;
mod stats;
pub mod stream;

#[cfg(feature = "tokio")]
pub mod net;

pub use broker::{
    Broker, BrokerConfig, Committed, FsyncPolicy, Recovered, Retention, Seek, WriteError,
};
pub use commands::{SINK_COMMANDS, SinkCommand};
pub use conn::{SinkConn, SinkServer, command_table};
pub use error::{Error, RecordError};
pub use sessions::{
    Deliver, Filter, Lease, Session, SessionError, Sessions, SessionsConfig, Takeover,
};
pub use stats::{Histogram, Info, SessionInfo, Stats};
