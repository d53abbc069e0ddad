//! The group-commit thread of a durable server on the toolkit (sink's
//! broker, miller's beanstalk store): the loop that waits for staged
//! records, lets writers gather, commits, keeps house, and syncs at the
//! end; and a runtime whose serving thread commits before it sleeps.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A store that stages records under its lock and commits them in rounds
/// (one write, one fsync for everything staged): what the committer thread
/// drives. Each method logs its own errors; a failed commit is the store's
/// to report to the connections waiting on it.
pub trait GroupCommit: Clone + Send + 'static {
    /// The longest one wait for staged records lasts: housekeeping runs at
    /// least this often.
    fn wait(&self) -> Duration;

    /// Blocks until records are staged, `timeout` passes or the store
    /// stops; true when records wait.
    fn wait_staged(&mut self, timeout: Duration) -> bool;

    /// Records wait: lets the writers the last commit released join this
    /// round (for a bounded time, the store's policy).
    fn gather(&mut self);

    /// Writes (and, under the store's policy, syncs) what is staged.
    fn commit(&mut self, now: Instant);

    /// Housekeeping after a round (timers, expiry, retention).
    fn tick(&mut self, now: Instant);

    /// Stop: wakes whatever waits on the store; called from the thread
    /// that stops the committer.
    fn stop(&self);

    /// The last round, after the last commit: syncs what was written.
    fn finish(&mut self, now: Instant);
}

/// The committer: a thread running [`GroupCommit`]'s rounds until stopped
/// (or dropped), then a last commit and [`GroupCommit::finish`].
#[derive(Debug)]
pub struct Committer<T: GroupCommit> {
    target: T,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<T: GroupCommit> Committer<T> {
    /// Starts a thread called `name` committing for `target`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(name: &str, target: T) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (mut target, stop) = (target.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&mut target, &stop))?
        };
        Ok(Self {
            target,
            stop,
            thread: Some(thread),
        })
    }

    /// Commits what is staged, syncs, and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.target.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T: GroupCommit> Drop for Committer<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<T: GroupCommit>(target: &mut T, stop: &AtomicBool) {
    let wait = target.wait();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping && target.wait_staged(wait) {
            target.gather();
        }
        let now = Instant::now();
        target.commit(now);
        if stopping {
            target.finish(now);
            return;
        }
        target.tick(now);
    }
}

/// A current-thread tokio runtime whose thread runs `before_park` just
/// before it sleeps: a durable server commits there what the connections it
/// just ran have staged, so a lone request in flight is answered without a
/// hand-off to the committer thread (as Redis writes and fsyncs in
/// `beforeSleep`).
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime_with_commit(
    before_park: impl Fn() + Send + Sync + 'static,
) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(before_park)
        .build()
}
