//! sink: durable pub/sub with sessions, and Redis Streams, over the Redis protocol.
//!
//! kids is fire-and-forget: a subscriber that is away misses what was
//! published meanwhile. sink keeps every message in a log on disk until the
//! subscribers that need it have acknowledged it: each subscriber holds a
//! named *session*, a server-side cursor that keeps its messages while it
//! is away. It speaks RESP, so any Redis client publishes to it, and it
//! serves a subset of Redis Streams on the same log, so every Redis client
//! library's streams API works unchanged.
//!
//! The crate is built on kids-core: its RESP codec and connection commands,
//! its server toolkit (accept loop, connection policy, limits), its glob
//! and its segment log. Like every core crate of the SDK it does no IO of
//! its own except the log's files: time is an argument, and the optional
//! `tokio` feature adds `net` (sockets and the committer thread).
//!
//! ```text
//!  PUBLISH / LOG / XADD / ACK ─▶ SinkConn ─▶ Broker (one lock): offset, record staged, reply held
//!                                                 │
//!  committer thread: Broker::commit ── one write + one fsync for everything staged (group commit)
//!                                                 │ durable: held replies released
//!                                                 ▼
//!  segment log  00000001.seg [records…]  00000002.seg [checkpoint][records…]  (CRC-framed, kids-core)
//!                                                 │ committed records
//!  SESSION LOAD ─▶ SinkConn::poll_produce ◀── LogReader: backlog after the cursor, then live,
//!                  pushes [session, name, offset, topic, payload], paused when the window is full
//! ```
//!
//! # Commands and what each reply promises
//!
//! | command | reply | promise |
//! |---|---|---|
//! | `PUBLISH topic payload`, `LOG topic payload` | `:offset` | the message is in the log and durable under the fsync policy (`always`: fsynced); offsets are global, dense, one per message in arrival order, from 1. A kids agent's network store forwards into sink unchanged (`LOG`, acknowledged by the integer). |
//! | `SESSION CREATE name filter [filter …]` | `+OK` | the session exists durably, its cursor at the last offset given out: messages published after the reply reach it. Filters are topics or globs (`*`, `?`, `[…]`), as kids' `PSUBSCRIBE`. Creating it again with the same filters is `+OK`, with others an error. |
//! | `SESSION LOAD name` | `+OK`, then pushes | every message matching a filter with an offset after the cursor is pushed in offset order as `[session, name, :offset, topic, payload]` (a RESP3 push, a RESP2 array), then live ones, with no gap and no duplicate between the two. At most the window's worth (default 1024) is unacknowledged at once: delivery pauses when it is full and resumes on `ACK`. A load of a session another client holds takes it over (that client gets `[session-end, name, reason]`) or, with takeover refused, fails with `-BUSY`. A cursor before the first retained offset fails with `-GAP … first retained offset N`: never a silent skip. |
//! | `SESSION ACK name offset` | `:cursor` | cumulative: every message up to `offset` is acknowledged, durably, once the reply comes. Offsets past those delivered skip ahead; a session nobody holds may be moved this way (after a `GAP`). |
//! | `SESSION UNLOAD name` / `DELETE name` / `LIST` / `INFO name` | `+OK` / `:1` or `:0` / names / a map | after a disconnect or unload, everything past the cursor is sent again at the next load: at least once, deduplicable by offset. |
//! | `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE` | as Redis | live, fire-and-forget listeners: messages committed after the subscription, none kept for them. |
//! | `XADD key [NOMKSTREAM] [MAXLEN\|MINID [=\|~] n [LIMIT c]] * field value …` | the ID | durable before the reply, as PUBLISH. IDs are server-chosen: an explicit ID is an error. |
//! | `XLEN`, `XRANGE`, `XREVRANGE`, `XREAD [COUNT] [BLOCK] STREAMS …`, `XGROUP CREATE\|DESTROY\|SETID\|CREATECONSUMER\|DELCONSUMER`, `XREADGROUP`, `XACK`, `XPENDING`, `XCLAIM`, `XAUTOCLAIM`, `XINFO STREAM\|GROUPS\|CONSUMERS`, `XDEL`, `XTRIM` | Redis 7.0's, byte for byte | every change (groups, pending entries, acks, claims, deletes, trims) is logged and durable before its reply: groups and their pending entries survive a restart. |
//! | `INFO [section]` | text | `log` (offsets, segments, which session pins the oldest segment), `persistence` (fsync policy, fsync latency percentiles, group-commit size), `sessions` (per session: cursor, lag in messages and bytes, window fill, holder), `streams`, `stats`. |
//!
//! The connection commands (`PING`, `ECHO`, `HELLO`, `CLIENT`, `COMMAND`,
//! `QUIT`, `RESET`, `SELECT`) are kids-core's; unknown commands and wrong
//! arities get Redis's error texts.
//!
//! # Durability and recovery
//! - [`FsyncPolicy::Always`]: a reply waits for the fsync that covers its
//!   record; concurrent and pipelined writers share one fsync.
//!   [`FsyncPolicy::Interval`]: written before the reply, fsynced every
//!   interval. [`FsyncPolicy::Never`]: written before the reply (survives a
//!   killed process, not a power loss).
//! - Sessions and stream groups are records in the same log, after the data
//!   they cover: a cursor is never on disk without the messages before it.
//! - On open, a torn tail is truncated, every whole record kept, the state
//!   replayed and cursors clamped to the log's end; a damaged record that is
//!   not a torn tail is an error ([`Error::Log`]), never skipped.
//! - Retention: the broker rolls segments itself and opens each with a
//!   checkpoint of every session and stream's state, so a segment goes as
//!   soon as every session is past it and no stream entry in it is live, or
//!   when it is older than [`Retention::max_age`] or the log is over
//!   [`Retention::max_bytes`] (then a session behind it gets a gap error).
//!   Idle sessions expire ([`SessionsConfig::idle_ttl`]) and stop pinning.
//!   A loaded session that has caught up with nothing unacknowledged moves
//!   its cursor past the offsets none of its filters matched, so a session
//!   on rare topics does not keep the whole log.
//! - Stream entries are also held in memory, as Redis holds them, with their
//!   keys, groups, consumers and pending entries, bounded by
//!   [`stream::StreamsConfig`]'s `max_bytes`: a command that would go over
//!   it gets Redis's `OOM` error (see there).
//!
//! # Example
//! A broker driven by hand: a message published, committed, then read by a
//! session loaded on an in-memory connection.
//!
//! ```
//! use std::task::{Context, Waker};
//! use std::time::Instant;
//! use kids_core::server::{ConnConfig, Connection, MemoryStream};
//! use kids_core::RequestDecoder;
//! use sink_core::{Broker, BrokerConfig, FsyncPolicy, SinkServer};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let now = Instant::now();
//! let config = BrokerConfig::default().fsync(FsyncPolicy::Always);
//! let (broker, _recovered) = Broker::open(dir.path(), config, now, 1_700_000_000_000).unwrap();
//! let server = SinkServer::new(broker.clone());
//! let mut conn = Connection::new(server.connect(now), RequestDecoder::default(), ConnConfig::default(), None, now);
//! let mut client = MemoryStream::default();
//! let mut cx = Context::from_waker(Waker::noop());
//!
//! client.send(b"SESSION CREATE mailer activity.*\r\nPUBLISH activity.INVITE member=7\r\n");
//! let _ = conn.poll(&mut cx, &mut client, now);
//! assert_eq!(client.take_output(), b"", "replies wait until durable");
//! broker.commit(now).unwrap(); // the committer's round (net::serve runs it on a thread)
//! let _ = conn.poll(&mut cx, &mut client, now);
//! assert_eq!(client.take_output(), b"+OK\r\n:1\r\n");
//!
//! client.send(b"SESSION LOAD mailer\r\n");
//! let _ = conn.poll(&mut cx, &mut client, now);
//! assert_eq!(
//!     client.take_output(),
//!     &b"+OK\r\n*5\r\n$7\r\nsession\r\n$6\r\nmailer\r\n:1\r\n$15\r\nactivity.INVITE\r\n$8\r\nmember=7\r\n"[..]
//! );
//! ```
//!
//! Serving it over TCP is `net::serve` (feature `tokio`), best on
//! `net::runtime`, whose thread also commits what its connections staged
//! just before it sleeps (as Redis fsyncs before its event loop sleeps), so
//! a lone request in flight needs no hand-off to the committer thread; the
//! `sink` example is that plus flags.

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
