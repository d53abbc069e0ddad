//! # kids-core: pub/sub and log aggregation over the Redis protocol
//!
//! What: the protocol and routing core of *kids*, a log aggregator that
//! speaks the Redis protocol. Applications `PUBLISH` (or `LOG`) lines to
//! topics; subscribers `SUBSCRIBE` / `PSUBSCRIBE` to live streams.
//!
//! Why: to embed a Redis-compatible pub/sub router in your own server, with
//! Redis's wire behaviour byte for byte, bounded buffers everywhere, and
//! slow subscribers handled by Redis's `nlimit` algorithm rather than
//! silently skipped.
//!
//! How: the protocol, routing and connection logic do no IO. Bytes go in,
//! bytes come out, and time is an argument:
//!
//! ```text
//!  socket bytes ─▶ RequestDecoder ─▶ Session::handle(req, now) ─┬─▶ Router::publish
//!                                                               │        │ fan-out: one encoded
//!                                                               ▼        ▼ Bytes per frame shape
//!  socket ◀── writer ◀── Outbox::poll_drain ◀── replies ───── Outbox ◀───┘ (per subscriber, nlimit)
//! ```
//! Sockets live only behind the optional `tokio` feature: module `net`
//! drives sessions over TCP and unix sockets and network stores'
//! connections, and runs the store worker on a thread of its own.
//!
//! Log aggregation: a [`StorePipeline`] tapped into the router queues every
//! published message (bounded, with an explicit policy when full) for a tree
//! of [`Store`]s: topic files ([`FileStore`]), forwarding to another kids
//! ([`NetworkStore`]), a write-ahead spool in front of either
//! ([`BufferStore`], on the [`SegmentLog`]), [`PriorityStore`],
//! [`MultipleStore`], [`NullStore`], each optionally [`Filtered`] by topic.
//! [`Config::parse`] reads the kids configuration language and
//! [`build_store`] turns its `store` block into such a tree. This store
//! engine does file IO, through `std::fs`: the file store writes topic
//! files, and the spools (a buffer's, the pipeline's overflow) are segment
//! logs whose file operations go through [`LogFs`] ([`StdFs`]). The store
//! tree runs where [`Worker::step`] is called (`net::spawn_pipeline` gives
//! it a thread); under the queue policy `spool`, a publish that finds the
//! queue full appends to the overflow spool itself, on the publisher's
//! thread.
//!
//! ```
//! use std::time::Instant;
//! use kids_core::{Router, RouterConfig, Session};
//!
//! let now = Instant::now();
//! let router = Router::new(RouterConfig::default(), now);
//! let (mut sub, mut publisher) = (Session::new(&router), Session::new(&router));
//! sub.handle(vec!["SUBSCRIBE".into(), "logs".into()], now);
//! publisher.handle(vec!["PUBLISH".into(), "logs".into(), "hello".into()], now);
//! publisher.flush(now);
//! assert_eq!(publisher.take_output(), b":1\r\n");
//! assert_eq!(
//!     sub.take_output(),
//!     b"*3\r\n$9\r\nsubscribe\r\n$4\r\nlogs\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$4\r\nlogs\r\n$5\r\nhello\r\n"
//! );
//! ```

mod config;
mod directives;
mod error;
mod pubsub;
pub mod resp;
mod seglog;
pub mod server;
mod store;

#[cfg(feature = "tokio")]
pub mod net;

#[cfg(feature = "explorer")]
pub mod explorer;

/// The README's embedding tour, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use config::{
    Config, ConfigError, HttpConfig, ListenConfig, LogConfig, LogLevel, NLimitLine, QueueConfig,
    QueueFull, StoreConfig, StoreKind, StoreProblem, StoreRole, Success, parse_duration, suggest,
};
pub use directives::{Directive, MAX_DEPTH as MAX_DIRECTIVE_DEPTH, Value, parse_directives};
pub use error::{Corruption, Error, ProtocolError};
pub use pubsub::commands::{KIDS_COMMANDS, KidsCommand};
pub use pubsub::glob::Glob;
pub use pubsub::nlimit::{ClientClass, NLimit, NLimits};
pub use pubsub::router::{
    Fanout, Published, Refused, Router, RouterConfig, Stats, Tap, TopicStats,
};
pub use pubsub::session::{REDIS_COMPAT_VERSION, Session};
pub use pubsub::tail::{Tail, TailBatch, TailConfig, TailMessage};
pub use resp::{
    ARG_COST, Frame, FrameCodec, Limits, Proto, ReplyWriter, Request, RequestDecoder, split_inline,
};
pub use seglog::{
    Batch, Fsync, LogFile, LogFs, LogReader, OpenMode, Position, Recovery, SegmentConfig,
    SegmentLog, StdFs,
};
pub use server::Flow;
pub use server::outbox::{CloseReason, Outbox};
pub use store::file::{FileStore, FileStoreConfig, FileStoreStats, sanitize_topic};
pub use store::forward::{ForwardAction, ForwardStats, Forwarder, ForwarderConfig, QueueFullError};
pub use store::pipeline::{PipelineConfig, PipelineStats, StorePipeline, Worker};
pub use store::view::{NLimitView, QueueView, StoreNode, StoresView, parse_stores};
pub use store::{
    Bell, BufferConfig, BufferStats, BufferStore, BuiltStore, Cause, Filtered, Link, MultipleStore,
    NetworkStore, Now, NullStore, PriorityStore, Store, StoreError, Target, build_store,
    decode_record, encode_record,
};

/// Locks `m`, going on past a poisoned lock: a panic on one connection or
/// in the store worker must not take every other user of the lock down too.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
