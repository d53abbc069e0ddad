//! The tokio adapter (feature `tokio`): sockets, timers and tasks for the
//! server toolkit, kids served on them, and the store tree's threads and links.
//!
//! [`serve_with`] is the one accept loop (TCP and unix, `max_clients`,
//! accept-error backoff, drain then abort) for any [`Protocol`](crate::server::Protocol);
//! [`run_connection`] drives one [`Connection`]
//! on a socket. [`serve`] is kids on them: a [`Session`] and a
//! [`RequestDecoder`] per client. The connection policy (read batching,
//! output pause, held replies, timeouts, the server-wide buffer bound) is
//! the toolkit's, in [`crate::server`].
//!
//! ```no_run
//! use std::time::Instant;
//! use kids_core::net::{Listener, ServerConfig, serve};
//! use kids_core::{Router, RouterConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let router = Router::new(RouterConfig::default(), Instant::now());
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:3388").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // Keep `stop`; sending on it (or dropping it) shuts the server down gracefully.
//! # drop(stop);
//! serve(vec![Listener::Tcp(tcp)], router, ServerConfig::default(), async {
//!     let _ = stopped.await;
//! })
//! .await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::server::Connection;
use crate::{RequestDecoder, Router, Session};

mod commit;
mod driver;
mod stores;

pub use commit::{Committer, GroupCommit, runtime_with_commit};
pub use driver::{Listener, ServerConfig, Stop, run_connection, serve_with};
pub use stores::{Stores, drive_link, run_pipeline, spawn_pipeline};

/// Serves kids on every listener until `shutdown` completes: one
/// [`Session`] per client on the toolkit's accept loop ([`serve_with`]),
/// the router ticked every [`ServerConfig::tick_interval`]. Then it stops
/// accepting, lets every connection write out what it already holds (up to
/// [`ServerConfig::drain_timeout`]) and returns.
///
/// # Errors
/// Only when there is no listener; failed accepts of single clients are
/// logged and retried.
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let ticker = {
        let (router, every) = (router.clone(), config.tick_interval);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                router.tick(Instant::now());
            }
        })
    };
    let limits = config.limits;
    let served = serve_with(
        listeners,
        config,
        move || (Session::new(&router), RequestDecoder::new(limits)),
        shutdown,
    )
    .await;
    ticker.abort();
    served
}

/// The runtime kids serves on: one thread (tokio's current-thread
/// scheduler) unless `worker_threads` asks for more.
///
/// One thread is the default for the reason Redis has one: pub/sub fan-out
/// crosses connections, and on a multi-threaded runtime every delivery to
/// a subscriber served by another worker is a cross-thread wake-up (a
/// futex call, a cache line moved), which costs more than the delivery.
/// On one thread a publisher's push only queues the subscriber's task, and
/// the subscriber, yielding once ([`ConnConfig::coalesce`](crate::server::ConnConfig::coalesce)),
/// writes what every publisher of that pass pushed at once.
/// The store worker and blocking file IO have threads of their own either way.
///
/// # Errors
/// The runtime cannot be built (no thread or no IO driver could be started).
pub fn runtime(worker_threads: Option<usize>) -> io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        Some(n) if n > 1 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

/// Serves one kids client on any byte stream until it disconnects, `QUIT`s,
/// breaks the protocol, goes over an `nlimit`, or `stop` says so: at
/// [`Stop::Drain`] it stops reading and writes out what it holds first, at
/// [`Stop::Abort`] it closes at once. The connection policy is
/// [`ServerConfig::default`]'s.
///
/// # Errors
/// The IO error that ended the connection, if one did.
pub async fn serve_connection<S>(
    stream: S,
    router: Router,
    limits: crate::Limits,
    stop: watch::Receiver<Stop>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let session = Session::new(&router);
    let conn = Connection::new(
        session,
        RequestDecoder::new(limits),
        ServerConfig::default().conn,
        None,
        Instant::now(),
    );
    run_connection(stream, conn, stop).await
}
