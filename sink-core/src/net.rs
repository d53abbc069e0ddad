//! The tokio adapter: serves a [`Broker`] on kids-core's accept loop and
//! runs its committer on a thread of its own.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use kids_core::RequestDecoder;
use kids_core::net::{GroupCommit, Listener, ServerConfig, runtime_with_commit, serve_with};

use crate::{Broker, SinkServer};

/// How often the committer runs housekeeping (session expiry, retention).
const TICK: Duration = Duration::from_secs(1);

/// The committer of a [`Broker`]: kids-core's group-commit thread, one
/// write and one fsync per round, housekeeping every second.
pub type Committer = kids_core::net::Committer<Commits>;

/// A [`Broker`] as its committer thread drives it ([`GroupCommit`]).
#[derive(Debug, Clone)]
pub struct Commits {
    broker: Broker,
    last_tick: Instant,
}

impl Commits {
    /// The rounds of `broker`; start them with `Committer::start("sink-commit", …)`.
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            last_tick: Instant::now(),
        }
    }
}

impl GroupCommit for Commits {
    fn wait(&self) -> Duration {
        match self.broker.config().fsync {
            crate::FsyncPolicy::Interval(d) => d.min(TICK),
            _ => TICK,
        }
    }

    fn wait_staged(&mut self, timeout: Duration) -> bool {
        self.broker.wait_staged(timeout)
    }

    fn gather(&mut self) {
        // Writers released by the last commit write again soon: let them
        // join this one (at most half an fsync's time).
        let half = Duration::from_micros(self.broker.fsync_p50_us() / 2);
        self.broker
            .gather(half.clamp(Duration::from_micros(50), Duration::from_micros(500)));
    }

    fn commit(&mut self, now: Instant) {
        if let Err(e) = self.broker.commit(now) {
            tracing::error!(error = %e, "sink commit failed");
        }
    }

    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.last_tick) >= TICK {
            self.last_tick = now;
            if let Err(e) = self.broker.tick(now) {
                tracing::error!(error = %e, "sink housekeeping failed");
            }
        }
    }

    fn stop(&self) {
        self.broker.stop();
    }

    fn finish(&mut self, now: Instant) {
        if let Err(e) = self.broker.sync(now) {
            tracing::error!(error = %e, "final sync failed");
        }
    }
}

/// A current-thread tokio runtime for serving `broker`: before its thread
/// sleeps it commits what the connections it just ran have staged
/// ([`Broker::commit_before_park`]), so a lone request in flight is answered
/// without a hand-off to the committer thread; the committer thread still
/// runs (it commits while this thread serves, and keeps house).
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime(broker: &Broker) -> io::Result<tokio::runtime::Runtime> {
    let broker = broker.clone();
    runtime_with_commit(move || {
        broker.commit_before_park(Instant::now());
    })
}

/// Serves `broker` on every listener until `shutdown` completes: kids-core's
/// accept loop and connection policy, sink's commands, a committer thread.
/// On shutdown connections drain (held replies are released as their
/// records become durable), then the committer writes and syncs what is
/// left and stops.
///
/// # Errors
/// As [`serve_with`]; also when the committer thread cannot start.
pub async fn serve(
    listeners: Vec<Listener>,
    broker: Broker,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let committer = Committer::start("sink-commit", Commits::new(broker.clone()))?;
    let server = SinkServer::new(broker);
    let limits = config.limits;
    let served = serve_with(
        listeners,
        config,
        move || (server.connect(Instant::now()), RequestDecoder::new(limits)),
        shutdown,
    )
    .await;
    committer.stop();
    served
}
