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
use std::time::{Duration, Instant};

use kids_core::net::{GroupCommit, Listener, ServerConfig, runtime_with_commit, serve_with};
use sink_core::FsyncPolicy;

use crate::server::BeanstalkServer;
use crate::store::Store;

/// How often the committer runs the engine's timers when nothing is staged.
const TICK: Duration = Duration::from_secs(1);

/// The committer of a [`Store`]: kids-core's group-commit thread, one
/// write and one fsync per round; it compacts the log and runs the
/// engine's timers.
pub type Committer = kids_core::net::Committer<Commits>;

/// A [`Store`] as its committer thread drives it ([`GroupCommit`]).
#[derive(Debug, Clone)]
pub struct Commits(Store);

impl Commits {
    /// The rounds of `store`; start them with `Committer::start("beanstalk-commit", …)`.
    pub fn new(store: Store) -> Self {
        Self(store)
    }
}

impl GroupCommit for Commits {
    fn wait(&self) -> Duration {
        match self.0.config().fsync {
            FsyncPolicy::Interval(d) => d.min(TICK),
            _ => TICK,
        }
    }

    fn wait_staged(&mut self, timeout: Duration) -> bool {
        self.0.wait_staged(timeout)
    }

    fn gather(&mut self) {
        // Writers released by the last commit write again soon (after a
        // round trip, and maybe a read in between): let them join this
        // one, for at most about an fsync's time. Else the serving thread
        // commits before it sleeps, unless it is busy.
        let fsync = self.0.fsync_time();
        let window = fsync.clamp(Duration::from_micros(200), Duration::from_millis(1));
        let grace = (fsync / 2).clamp(Duration::from_micros(50), Duration::from_micros(500));
        if !self.0.gather(window) && self.0.last_released() <= 1 {
            self.0.wait_served(grace);
        }
    }

    fn commit(&mut self, now: Instant) {
        if let Err(e) = self.0.commit(now) {
            tracing::error!(error = %e, "beanstalk commit failed");
        }
    }

    fn tick(&mut self, now: Instant) {
        // Delays that ended, reservations past their TTR: the engine's
        // state moves on even while no client waits.
        self.0.tick(now);
    }

    fn stop(&self) {
        self.0.stop();
    }

    fn finish(&mut self, now: Instant) {
        if self.0.config().fsync != FsyncPolicy::Never
            && let Err(e) = self.0.sync(now)
        {
            tracing::error!(error = %e, "final sync failed");
        }
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
    runtime_with_commit(move || {
        store.commit_before_park(Instant::now());
    })
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
    let committer = Committer::start("beanstalk-commit", Commits::new(store.clone()))?;
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
