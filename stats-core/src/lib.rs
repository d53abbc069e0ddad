//! # stats-core: a statsd aggregator that writes to graphite
//!
//! (Crate docs are written as the crate is built.)

mod aggregate;
mod error;
mod health;
mod hll;
mod line;
#[cfg(feature = "tokio")]
pub mod net;
mod output;
mod sink;
mod sketch;

pub use aggregate::{Aggregator, Config, HistogramConfig, Idle, Totals};
pub use error::{Error, LineError};
pub use health::{FlushLag, HealthCheck, Perf, Registry, Report, SinkErrors, Status};
pub use hll::{HyperLogLog, Uniques, hash64};
pub use line::{Kind, Limits, Line, LineDecoder, Lines, Metric, Parser, Value, Values, sanitize};
pub use output::{Flush, Mode, Point};
pub use sink::{Outbox, OutboxConfig, SinkStats};
pub use sketch::{Below, DdSketch, Samples};
