//! The master's loop (tokio): read a batch, put its jobs until the queue confirmed them, acknowledge; and a channel source.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::master::Master;
use super::source::{Event, EventSource};
use crate::{Error, Queue};

/// The first pause before a put is tried again; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between tries of a put.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Unix milliseconds now (the envelopes' `first_seen`).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Master {
    /// Runs until `shutdown` completes or `source` ends: reads a batch,
    /// puts one job per matching handler (reconnecting with `connect` and
    /// trying again, pausing 0.1 s doubling to 5 s, until the queue
    /// confirmed every one), then acknowledges the batch's events in
    /// order. At shutdown a batch not yet confirmed is not acknowledged:
    /// a source that redelivers gives it again to the next master.
    ///
    /// Time comes from tokio's clock (a paused runtime simulates it).
    ///
    /// # Errors
    /// The source failed for good.
    pub async fn run<S, Q, C, Fut>(
        &mut self,
        source: &mut S,
        mut connect: C,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error>
    where
        S: EventSource,
        Q: Queue,
        C: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<Q, Error>> + Send,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut queue: Option<Q> = None;
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                batch = source.next_batch(self.config().batch) => batch?,
            };
            if batch.is_empty() {
                return Ok(());
            }
            let (events, tokens): (Vec<Event>, Vec<S::Token>) = batch.into_iter().unzip();
            let now = tokio::time::Instant::now().into_std();
            let mut jobs = self.plan(&events, now, unix_ms());
            let mut pause = FIRST_PAUSE;
            while !jobs.is_empty() {
                let q = match &mut queue {
                    Some(q) => q,
                    None => match connect().await {
                        Ok(q) => {
                            self.reconnected();
                            queue.insert(q)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "master: connecting to the queue");
                            tokio::select! {
                                biased;
                                () = &mut shutdown => return Ok(()),
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(MAX_PAUSE);
                            continue;
                        }
                    },
                };
                jobs = match self.dispatch(q, jobs, now).await {
                    Ok(left) => left,
                    Err((e, left)) => {
                        tracing::warn!(error = %e, "master: queue connection lost");
                        queue = None;
                        left
                    }
                };
                if !jobs.is_empty() {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
            for token in tokens {
                if let Err(e) = source.ack(token).await {
                    tracing::warn!(error = %e, "master: acknowledging the source");
                }
            }
        }
    }
}

/// An in-memory source fed through a channel: events sent with the
/// [`mpsc::Sender`] it was made with, ended when every sender is dropped.
/// Acknowledgements are counted ([`ChannelSource::acked`]); a bench runs
/// master and worker in one process with it.
#[derive(Debug)]
pub struct ChannelSource {
    rx: mpsc::Receiver<Event>,
    acked: Arc<AtomicU64>,
}

impl ChannelSource {
    /// A source and the sender that feeds it, holding at most `capacity`
    /// events not yet read.
    pub fn new(capacity: usize) -> (mpsc::Sender<Event>, ChannelSource) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            tx,
            ChannelSource {
                rx,
                acked: Arc::new(AtomicU64::new(0)),
            },
        )
    }

    /// The count of acknowledged events, shared (read it while the master runs).
    pub fn acked(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }
}

impl EventSource for ChannelSource {
    type Token = ();

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(Event, ())>, Error> {
        let mut out = Vec::new();
        let Some(first) = self.rx.recv().await else {
            return Ok(out);
        };
        out.push((first, ()));
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(e) => out.push((e, ())),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, (): ()) -> Result<(), Error> {
        self.acked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
