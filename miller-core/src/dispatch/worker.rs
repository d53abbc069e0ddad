//! The worker (tokio): N slots, each with its own queue connection, reserving jobs and running their handlers.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::WorkerConfig;
use super::envelope::Envelope;
use super::master::ttr_secs;
use super::registry::Registry;
use super::retry::{Retry, Rng};
use crate::{Error, Job, PutParams, Queue, QueueError};

/// What a worker counted, shared while it runs.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs reserved.
    pub reserved: AtomicU64,
    /// Jobs whose handler succeeded (deleted).
    pub succeeded: AtomicU64,
    /// Tries that failed and were released for a later try.
    pub retried: AtomicU64,
    /// Jobs buried (no tries left, unknown handler, bad body).
    pub buried: AtomicU64,
    /// Tries that failed by a panic (also counted as retried or buried).
    pub panicked: AtomicU64,
    /// Jobs released at shutdown, still running when the grace ended.
    pub released_at_stop: AtomicU64,
    /// Touches sent for long jobs.
    pub touched: AtomicU64,
    /// Stray bury copies (an envelope with `last_error`, reserved without
    /// having been kicked) buried again without running.
    pub reburied: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    Draining,
    Abort,
}

/// A worker: watches tubes, reserves jobs and runs the handler each names.
///
/// - success: `delete`;
/// - failure (an `Err`, a panic, over the run limit): the try number is
///   the envelope's `attempt` plus `stats-job`'s `reserves`; the
///   [`RetryPolicy`](super::RetryPolicy) releases it with a delay, or, at the last try, buries
///   it with the error recorded. Beanstalk cannot change a body, so the
///   worker puts a copy of the envelope with `attempt` (tries made) and
///   `last_error` into the job's tube, delayed far, reserves that copy with
///   `reserve-job`, buries it, and deletes the original. A worker killed
///   between those steps leaves the original to come back after its TTR
///   (and perhaps a far-delayed copy): nothing is lost;
/// - an envelope with `last_error` is such a copy: reserved with
///   `stats-job` `kicks` > 0 (an operator kicked it) it runs, one more try;
///   with `kicks` = 0 it was never buried (its worker stopped mid-bury, the
///   far delay has passed) and is buried again, not run;
/// - try counts restart: the server's `reserves` and `kicks` counters start
///   at zero again when a server restores its jobs after a restart
///   (miller's served engine does; its documented difference from
///   beanstalkd's binlog): a job may then get more tries than
///   [`RetryPolicy::max_attempts`](super::RetryPolicy::max_attempts), and a
///   kicked copy not yet reserved is buried again (kick it again);
/// - unknown application or handler: buried the same way, with the reason;
///   a body that is not an envelope: buried as it is (the reason logged);
/// - long jobs: touched before their time-to-run ends;
/// - shutdown: no more reserves (a waiting reserve or connection attempt
///   is abandoned at once); jobs in flight run until the grace ends,
///   then are released (ready at once, for another worker).
#[derive(Debug, Clone)]
pub struct Worker {
    registry: Arc<Registry>,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// A worker running the handlers of `registry`.
    pub fn new(registry: Arc<Registry>, config: WorkerConfig) -> Self {
        Self {
            registry,
            config,
            stats: Arc::default(),
        }
    }

    /// Its counters, shared.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs its slots (tokio tasks, each with a queue from `connect`, made
    /// again when the connection breaks) until `shutdown` completes, then
    /// stops as described on [`Worker`] and returns once every slot has.
    ///
    /// # Errors
    /// None today (a slot whose queue fails reconnects); the `Result`
    /// leaves room for a fatal error.
    pub async fn run<Q, C, Fut>(
        &self,
        connect: C,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error>
    where
        Q: Queue + 'static,
        C: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Q, Error>> + Send + 'static,
    {
        let connect = Arc::new(connect);
        let (stop_tx, stop_rx) = watch::channel(Stop::Running);
        let mut slots = JoinSet::new();
        for i in 0..self.config.concurrency.max(1) {
            let slot = Slot {
                registry: self.registry.clone(),
                config: self.config.clone(),
                stats: self.stats.clone(),
                rng: Rng::new(self.config.seed.wrapping_add(i as u64)),
                stop: stop_rx.clone(),
            };
            let connect = connect.clone();
            slots.spawn(async move { slot.run(move || connect()).await });
        }
        let mut shutdown = std::pin::pin!(shutdown);
        let grace = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(grace);
        let (mut draining, mut aborted) = (false, false);
        loop {
            tokio::select! {
                done = slots.join_next() => match done {
                    None => return Ok(()),
                    Some(Err(e)) => tracing::error!(error = %e, "worker slot ended abnormally"),
                    Some(Ok(())) => {}
                },
                () = &mut shutdown, if !draining => {
                    draining = true;
                    let _ = stop_tx.send(Stop::Draining);
                    // A grace too long to represent is for ever (no panic).
                    let now = tokio::time::Instant::now();
                    if let Some(end) = now.checked_add(self.config.grace) {
                        grace.as_mut().reset(end);
                    }
                }
                () = &mut grace, if draining && !aborted => {
                    aborted = true;
                    let _ = stop_tx.send(Stop::Abort);
                }
            }
        }
    }
}

/// How a try ended.
enum Outcome {
    Done,
    Failed(String, bool),
    Stopped,
    Lost,
}

struct Slot {
    registry: Arc<Registry>,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    rng: Rng,
    stop: watch::Receiver<Stop>,
}

impl Slot {
    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    async fn run<Q, C, Fut>(mut self, connect: C)
    where
        Q: Queue,
        C: Fn() -> Fut,
        Fut: Future<Output = Result<Q, Error>>,
    {
        let mut pause = Duration::from_millis(100);
        while !self.stopping() {
            let mut stop = self.stop.clone();
            let connected = tokio::select! {
                biased;
                () = wait_for(&mut stop, Stop::Draining) => return,
                r = self.connect(&connect) => r,
            };
            let mut q = match connected {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "worker: connecting to the queue");
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        () = wait_for(&mut stop, Stop::Draining) => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            while !self.stopping() {
                // A reserve may never end by itself (a timed reserve on an
                // engine whose timers nobody runs): the stop ends it. The
                // dropped call is safe on a `LocalQueue`; it closes a
                // `Client` (a job it had reserved goes back with the
                // connection): the slot is leaving anyway.
                let mut stop = self.stop.clone();
                let reserved = tokio::select! {
                    biased;
                    () = wait_for(&mut stop, Stop::Draining) => return,
                    r = q.reserve(Some(self.config.reserve_timeout)) => r,
                };
                match reserved {
                    Ok(None) | Err(Error::Queue(QueueError::DeadlineSoon)) => {}
                    Ok(Some(job)) => {
                        self.stats.reserved.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = self.job(&mut q, job).await {
                            tracing::warn!(error = %e, "worker: queue failed during a job");
                            if is_connection(&e) {
                                break;
                            }
                        }
                    }
                    Err(e) if is_connection(&e) => {
                        tracing::warn!(error = %e, "worker: queue connection lost");
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "worker: reserve refused"),
                }
            }
        }
    }

    async fn connect<Q, C, Fut>(&self, connect: &C) -> Result<Q, Error>
    where
        Q: Queue,
        C: Fn() -> Fut,
        Fut: Future<Output = Result<Q, Error>>,
    {
        let mut q = connect().await?;
        for tube in &self.config.tubes {
            q.watch(tube).await?;
        }
        if !self.config.tubes.iter().any(|t| t == "default") && !self.config.tubes.is_empty() {
            q.ignore("default").await?;
        }
        Ok(q)
    }

    /// One reserved job, to its end (deleted, released or buried).
    async fn job<Q: Queue>(&mut self, q: &mut Q, job: Job) -> Result<(), Error> {
        let envelope = match Envelope::decode(&job.body, self.config.max_envelope) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(id = job.id, error = %e, "worker: not a job envelope: buried as it is");
                let pri = q.stats_job(job.id).await?.number("pri").unwrap_or(1024);
                q.bury(job.id, u32::try_from(pri).unwrap_or(u32::MAX))
                    .await?;
                self.stats.buried.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        if envelope.last_error.is_some() {
            let stats = q.stats_job(job.id).await?;
            if stats.number("kicks").unwrap_or(0) == 0 {
                tracing::warn!(
                    id = job.id,
                    "worker: a bury copy reserved without a kick (its worker stopped while burying): buried again, not run"
                );
                q.bury(job.id, clamp_u32(stats.number("pri").unwrap_or(1024)))
                    .await?;
                self.stats.reburied.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let Some(reg) = self.registry.handler(&envelope.app, &envelope.handler) else {
            let why = if self.registry.has_app(&envelope.app) {
                format!(
                    "unknown handler {:?} of app {:?}",
                    envelope.handler, envelope.app
                )
            } else {
                format!("unknown app {:?}", envelope.app)
            };
            tracing::error!(id = job.id, reason = %why, "worker: burying");
            return self.bury_with_error(q, &job, envelope, why).await;
        };
        let ttr = envelope.ttr.map_or(self.config.default_ttr, |s| {
            Duration::from_secs(u64::from(s.max(1)))
        });
        let limit = self.config.run_limit.unwrap_or(ttr);
        let touch_every = ttr.saturating_sub(Duration::from_secs(2)).max(ttr / 2);
        let handler = reg.handler.clone();
        let (event, data) = (envelope.event.clone(), envelope.data.clone());
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(move || handler(event, data)))
        {
            Err(panic) => Outcome::Failed(
                format!("handler panicked: {}", panic_message(&*panic)),
                true,
            ),
            Ok(fut) => {
                let mut fut = AssertUnwindSafe(fut).catch_unwind();
                let deadline = tokio::time::sleep(limit);
                tokio::pin!(deadline);
                let mut stop = self.stop.clone();
                loop {
                    tokio::select! {
                        biased;
                        r = &mut fut => break match r {
                            Ok(Ok(())) => Outcome::Done,
                            Ok(Err(e)) => Outcome::Failed(e.message().to_string(), false),
                            Err(panic) => Outcome::Failed(format!("handler panicked: {}", panic_message(&*panic)), true),
                        },
                        () = &mut deadline => break Outcome::Failed(format!("handler ran over its limit of {limit:?}"), false),
                        () = wait_for(&mut stop, Stop::Abort) => break Outcome::Stopped,
                        () = tokio::time::sleep(touch_every) => match q.touch(job.id).await {
                            Ok(()) => { self.stats.touched.fetch_add(1, Ordering::Relaxed); }
                            Err(Error::Queue(QueueError::NotFound)) => break Outcome::Lost,
                            Err(e) => return Err(e),
                        },
                    }
                }
            }
        };
        match outcome {
            Outcome::Done => {
                q.delete(job.id).await?;
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Outcome::Lost => {
                tracing::warn!(
                    id = job.id,
                    "worker: job no longer reserved by this worker (TTR passed)"
                );
                Ok(())
            }
            Outcome::Stopped => {
                let pri = q.stats_job(job.id).await?.number("pri").unwrap_or(1024);
                q.release(job.id, clamp_u32(pri), Duration::ZERO).await?;
                self.stats.released_at_stop.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Outcome::Failed(why, panicked) => {
                if panicked {
                    self.stats.panicked.fetch_add(1, Ordering::Relaxed);
                }
                let stats = q.stats_job(job.id).await?;
                let reserves = stats.number("reserves").unwrap_or(1);
                let pri = clamp_u32(stats.number("pri").unwrap_or(1024));
                let attempt = envelope.attempt.saturating_add(clamp_u32(reserves));
                match self.config.retry.after_failure(attempt, &mut self.rng) {
                    Retry::Release(delay) => {
                        tracing::info!(id = job.id, attempt, ?delay, error = %why, "worker: try failed, released");
                        q.release(job.id, pri, delay).await?;
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Retry::Bury => {
                        tracing::warn!(id = job.id, attempt, error = %why, "worker: last try failed, burying");
                        let mut envelope = envelope;
                        envelope.attempt = attempt;
                        self.bury_with_error(q, &job, envelope, why).await
                    }
                }
            }
        }
    }

    /// Buries `job` with `why` recorded: a copy of `envelope` with
    /// `last_error` is put far-delayed into the job's tube, reserved,
    /// buried; the original is deleted. When the copy cannot be made (too
    /// big), the original is buried as it is.
    async fn bury_with_error<Q: Queue>(
        &mut self,
        q: &mut Q,
        job: &Job,
        mut envelope: Envelope,
        mut why: String,
    ) -> Result<(), Error> {
        let stats = q.stats_job(job.id).await?;
        let pri = clamp_u32(stats.number("pri").unwrap_or(1024));
        let ttr = stats
            .number("ttr")
            .map_or(self.config.default_ttr, Duration::from_secs);
        if why.len() > self.config.max_error {
            let mut end = self.config.max_error;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
        }
        if envelope.attempt == 0 {
            envelope.attempt = clamp_u32(stats.number("reserves").unwrap_or(1));
        }
        envelope.last_error = Some(why);
        let body = match (envelope.encode(self.config.max_envelope), stats.get("tube")) {
            (Ok(body), Some(tube)) => Some((body, tube.to_string())),
            _ => None,
        };
        if let Some((body, tube)) = body {
            q.use_tube(&tube).await?;
            let params = PutParams {
                priority: pri,
                delay: self.config.bury_copy_delay,
                ttr: Duration::from_secs(u64::from(ttr_secs(ttr))),
            };
            let copy = q.put(body, params).await?;
            q.reserve_job(copy).await?;
            q.bury(copy, pri).await?;
            q.delete(job.id).await?;
        } else {
            q.bury(job.id, pri).await?;
        }
        self.stats.buried.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Completes once the stop state is `at` or later (or the worker is gone).
async fn wait_for(stop: &mut watch::Receiver<Stop>, at: Stop) {
    let _ = stop.wait_for(|s| *s as u8 >= at as u8).await;
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn is_connection(e: &Error) -> bool {
    matches!(e, Error::Io(_) | Error::Closed | Error::Protocol(_))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(not a string)".to_string()
    }
}
