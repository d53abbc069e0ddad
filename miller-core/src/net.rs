//! The tokio adapter (feature `tokio`): serves a [`Store`] over the
//! beanstalk protocol on kids-core's accept loop, and runs its committer
//! on a thread of its own.
//!
//! ```no_run
//! use std::time::{Instant, SystemTime};
//! use kids_core::net::{Listener, ServerConfig};
//! use miller_core::engine::{Engine, EngineConfig};
//! use miller_core::store::{Store, StoreConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(EngineConfig::default());
//! let (store, _) = Store::open("beanstalk-data", StoreConfig::default(), engine, Instant::now(), SystemTime::now())?;
//! let runtime = miller_core::net::runtime(&store)?;
//! runtime.block_on(async {
//!     let tcp = tokio::net::TcpListener::bind("127.0.0.1:11300").await?;
//!     // Serves until the shutdown future completes (a signal, in a program).
//!     let shutdown = std::future::pending::<()>();
//!     miller_core::net::serve(vec![Listener::Tcp(tcp)], store, ServerConfig::default(), 65_535, shutdown)
//!         .await
//! })?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kids_core::net::{Listener, ServerConfig, serve_with};
use sink_core::FsyncPolicy;

use crate::server::BeanstalkServer;
use crate::store::Store;

/// How often the committer runs the engine's timers when nothing is staged.
const TICK: Duration = Duration::from_secs(1);

/// The committer: a thread that writes staged records, one write and one
/// fsync per round (group commit), and compacts the log.
#[derive(Debug)]
pub struct Committer {
    store: Store,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer of `store`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(store: Store) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("beanstalk-commit".into())
                .spawn(move || run(&store, &stop))?
        };
        Ok(Self {
            store,
            stop,
            thread: Some(thread),
        })
    }

    /// Writes what is staged, syncs, and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.store.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(store: &Store, stop: &AtomicBool) {
    let wait = match store.config().fsync {
        FsyncPolicy::Interval(d) => d.min(TICK),
        _ => TICK,
    };
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping && store.wait_staged(wait) {
            // Writers released by the last commit write again soon (after
            // a round trip, and maybe a read in between): let them join
            // this one, for at most about an fsync's time. Else the serving
            // thread commits before it sleeps, unless it is busy.
            let fsync = store.fsync_time();
            let window = fsync.clamp(Duration::from_micros(200), Duration::from_millis(1));
            let grace = (fsync / 2).clamp(Duration::from_micros(50), Duration::from_micros(500));
            if !store.gather(window) && store.last_released() <= 1 {
                store.wait_served(grace);
            }
        }
        let now = Instant::now();
        if let Err(e) = store.commit(now) {
            tracing::error!(error = %e, "beanstalk commit failed");
        }
        if stopping {
            if store.config().fsync != FsyncPolicy::Never
                && let Err(e) = store.sync(now)
            {
                tracing::error!(error = %e, "final sync failed");
            }
            return;
        }
        // Delays that ended, reservations past their TTR: the engine's
        // state moves on even while no client waits.
        store.tick(now);
    }
}

/// A current-thread tokio runtime for serving `store`: before its thread
/// sleeps it commits what the connections it just ran have staged
/// ([`Store::commit_before_park`]), so a lone request in flight is
/// answered without a hand-off to the committer thread; the committer
/// thread still runs (it commits while this thread serves, and compacts).
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime(store: &Store) -> io::Result<tokio::runtime::Runtime> {
    let store = store.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(move || {
            store.commit_before_park(Instant::now());
        })
        .build()
}

/// Serves `store` over the beanstalk protocol on every listener until
/// `shutdown` completes, taking bodies of at most `max_job_size` bytes:
/// kids-core's accept loop and connection policy, a committer thread. On
/// shutdown puts are refused (`DRAINING`), waiting reserves give up,
/// connections drain (held replies go out as their records become
/// durable), then the committer writes and syncs what is left and stops.
///
/// # Errors
/// As [`serve_with`]; also when the committer thread cannot start.
pub async fn serve(
    listeners: Vec<Listener>,
    store: Store,
    config: ServerConfig,
    max_job_size: u32,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let committer = Committer::start(store.clone())?;
    let server = BeanstalkServer::new(store.clone(), max_job_size);
    let closing = store.clone();
    let served = serve_with(
        listeners,
        config,
        move || server.connect(Instant::now()),
        async move {
            shutdown.await;
            closing.close();
        },
    )
    .await;
    committer.stop();
    served
}
