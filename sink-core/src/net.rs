//! The tokio adapter: serves a [`Broker`] on kids-core's accept loop and
//! runs its committer on a thread of its own.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kids_core::RequestDecoder;
use kids_core::net::{Listener, ServerConfig, serve_with};

use crate::{Broker, SinkServer};

/// How often the committer runs housekeeping (session expiry, retention).
const TICK: Duration = Duration::from_secs(1);

/// The committer: a thread that writes staged records, one write and one
/// fsync per round (group commit), and runs housekeeping.
#[derive(Debug)]
pub struct Committer {
    broker: Broker,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer of `broker`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(broker: Broker) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (broker, stop) = (broker.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("sink-commit".into())
                .spawn(move || run(&broker, &stop))?
        };
        Ok(Self {
            broker,
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
        self.broker.stop();
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

fn run(broker: &Broker, stop: &AtomicBool) {
    let wait = match broker.config().fsync {
        crate::FsyncPolicy::Interval(d) => d.min(TICK),
        _ => TICK,
    };
    let mut last_tick = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping && broker.wait_staged(wait) {
            // Writers released by the last commit write again soon: let
            // them join this one (at most half an fsync's time).
            let half = Duration::from_micros(broker.fsync_p50_us() / 2);
            broker.gather(half.clamp(Duration::from_micros(50), Duration::from_micros(500)));
        }
        let now = Instant::now();
        if let Err(e) = broker.commit(now) {
            tracing::error!(error = %e, "sink commit failed");
        }
        if stopping {
            if let Err(e) = broker.sync(now) {
                tracing::error!(error = %e, "final sync failed");
            }
            return;
        }
        if now.duration_since(last_tick) >= TICK {
            last_tick = now;
            if let Err(e) = broker.tick(now) {
                tracing::error!(error = %e, "sink housekeeping failed");
            }
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
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(move || {
            broker.commit_before_park(Instant::now());
        })
        .build()
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
    let committer = Committer::start(broker.clone())?;
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
