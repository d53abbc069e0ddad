//! miller: events turned into jobs on beanstalk tubes, run by workers; and
//! a beanstalk of its own, embedded or served.
//!
//! The seed's miller replaced celery and gearman. Code registers handlers
//! for an event of an application (`@on('activity.INVITE', 'zhihu')`); a
//! master turns the events that sink and kids carry into jobs on the
//! application's beanstalk tube, one per matching handler; workers reserve
//! the jobs and run the handlers, retrying with backoff and burying what
//! keeps failing. This crate is that, as a library, with every piece it
//! needs from the beanstalk protocol:
//!
//! ```text
//!  app ─PUBLISH─▶ sink (session) ─┐                      ┌─▶ beanstalkd
//!  app ─PUBLISH─▶ kids (PSUBSCRIBE)┤                      │     or
//!                                  ▼                      ├─▶ beanstalk (net::serve: Store ─ Engine, durable)
//!       EventSource ─▶ Master ─ Registry::matching ─ put ─┤     or
//!                      (ack after every put confirmed)    └─▶ LocalQueue (Engine in process)
//!                                                               │ reserve
//!                                         Worker (N slots) ◀────┘
//!                                           └ handler(event, data): delete │ release (backoff) │ bury (last_error)
//! ```
//!
//! | piece | what it is |
//! |---|---|
//! | [`proto`] | the beanstalk protocol as values and codecs, both directions, beanstalkd 1.12's parsing rules, every length bounded |
//! | [`Queue`] | beanstalk's semantics as a trait: put, use/watch/ignore, reserve (with timeout), delete, release, bury, kick, kick-job, touch, peek*, stats*, list-tubes*, pause-tube |
//! | `Client` (feature `tokio`) | a [`Queue`] over one connection to any beanstalk server; puts pipelined by [`Queue::put_batch`] |
//! | [`engine::Engine`] | the embedded engine: beanstalkd's semantics as a sans-IO state machine, `now` passed in, its `stats` byte for byte |
//! | [`engine::LocalQueue`] | a [`Queue`] over an engine in process, on a clock of the caller's (tests drive a simulated one) |
//! | [`store::Store`], [`journal`] | the engine made durable on kids-core's segment log: group-committed fsync, CRC-checked records, compaction, recovery |
//! | [`server`], `net` (feature `tokio`) | the store served over the beanstalk protocol on kids-core's server toolkit: existing beanstalk clients use it unmodified |
//! | [`dispatch`] | the registry, the job [envelope](dispatch::Envelope) (JSON, for workers in any language), the master, the worker, the sink and kids sources, the config file |
//!
//! # What a reply promises (the served engine)
//! - `INSERTED id`: the job is in the log and durable under the fsync
//!   policy (`always`: fsynced; concurrent and pipelined puts share one
//!   fsync). It survives a killed process (and with `always` a power loss).
//! - `DELETED`, `RELEASED`, `BURIED`, `KICKED`: the change is durable the
//!   same way; a deleted job never comes back.
//! - Reservations are not durable (as in beanstalkd): after a restart a
//!   reserved job is ready again, its worker's delete answered `NOT_FOUND`.
//! - At least once, end to end: the master acknowledges an event to its
//!   source only after every put it made was confirmed; a worker deletes a
//!   job only after its handler succeeded. Handlers should be idempotent,
//!   or use a dedupe key ([`dispatch::Registration::dedupe`]).
//!
//! # Example
//! An event becomes a job on an engine in process, and a worker runs it.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Instant;
//! use miller_core::dispatch::{Event, Master, MasterConfig, Registry, Worker, WorkerConfig};
//! use miller_core::engine::{EngineConfig, LocalEngine};
//!
//! # fn main() -> Result<(), miller_core::Error> {
//! let member = Arc::new(AtomicU64::new(0));
//! let mut registry = Registry::new();
//! let seen = member.clone();
//! registry.on_json("activity.INVITE", "zhihu", "send_invitation_mail", move |_event, data: serde_json::Value| {
//!     let seen = seen.clone();
//!     async move {
//!         seen.store(data["MemberId"].as_u64().unwrap_or(0), Ordering::SeqCst);
//!         Ok(())
//!     }
//! });
//! let registry = Arc::new(registry);
//! let engine = LocalEngine::new(EngineConfig::default());
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     // Timers (timeouts, delays, TTRs) of an engine on the real clock.
//!     tokio::spawn(engine.clone().run_timers());
//!     // The master: one job per matching handler, on the app's tube.
//!     let mut master = Master::new(registry.clone(), MasterConfig::default());
//!     let event = Event::new("activity.INVITE", "zhihu", r#"{"MemberId": 42}"#);
//!     let jobs = master.plan(&[event], Instant::now(), 0);
//!     let left = master.dispatch(&mut engine.queue(), jobs, Instant::now()).await.map_err(|(e, _)| e)?;
//!     assert!(left.is_empty(), "every put confirmed: the event may be acknowledged");
//!
//!     // The worker: reserves from the tube, runs the handler, deletes.
//!     let worker = Worker::new(registry, WorkerConfig { tubes: vec!["zhihu".into()], ..WorkerConfig::default() });
//!     let stats = worker.stats();
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let run = worker.run(move || { let q = engine.queue(); async move { Ok(q) } }, async { let _ = stopped.await; });
//!     let watch = async {
//!         while stats.succeeded.load(Ordering::SeqCst) == 0 {
//!             tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//!         }
//!         let _ = stop.send(());
//!     };
//!     tokio::join!(run, watch);
//!     Ok::<_, miller_core::Error>(())
//! })?;
//! assert_eq!(member.load(Ordering::SeqCst), 42);
//! # Ok(()) }
//! ```
//!
//! # Programs
//! The `examples` crate has them: `beanstalk` (the served engine:
//! `--host`, `--port` 11300, `--data-dir`, `--fsync`), `miller-master -c
//! FILE` and `miller-slave -c FILE --tubes zhihu` (the file's format is
//! [`dispatch::MillerConfig`]'s), and `examples/python/miller_worker.py`, a
//! worker in Python (greenstalk) that runs jobs from their envelope.
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
