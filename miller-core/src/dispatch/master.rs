//! The master: events in, one job per matching handler out, the source acknowledged once every put is confirmed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::envelope::{DEFAULT_MAX_ENVELOPE, Envelope};
use super::registry::Registry;
use super::retry::{DEFAULT_DEDUPE_KEYS, DedupeWindow};
use super::source::Event;
use crate::{Error, PutParams, Queue, QueueError};

/// How the master puts jobs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The tube of an application, when it is not the application's name.
    pub tubes: HashMap<String, String>,
    /// Priority, delay and time-to-run of every job.
    pub put: PutParams,
    /// Events read from the source at once (at least 1).
    pub batch: usize,
    /// The bound of a job body (an event whose envelope is over it is
    /// dropped with an error event: beanstalk would refuse it for ever).
    pub max_envelope: usize,
    /// Keys held per dedupe window.
    pub dedupe_max_keys: usize,
}

impl Default for MasterConfig {
    /// Tube = app, [`PutParams::default`], batches of 256, beanstalkd's
    /// default job size bound, 100,000 dedupe keys per handler.
    fn default() -> Self {
        Self {
            tubes: HashMap::new(),
            put: PutParams::default(),
            batch: 256,
            max_envelope: DEFAULT_MAX_ENVELOPE,
            dedupe_max_keys: DEFAULT_DEDUPE_KEYS,
        }
    }
}

impl MasterConfig {
    /// The tube jobs of `app` go to.
    pub fn tube<'a>(&'a self, app: &'a str) -> &'a str {
        self.tubes.get(app).map_or(app, String::as_str)
    }
}

/// One job the master means to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    /// Its tube.
    pub tube: String,
    /// Its body (an [`Envelope`]).
    pub body: Bytes,
    /// How it is put.
    pub params: PutParams,
    /// The index of its event in the batch.
    pub event: usize,
    /// Its dedupe window (index of the registration) and key, if any.
    dedupe: Option<(usize, Vec<u8>)>,
}

/// What the master counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterStats {
    /// Events read.
    pub events: u64,
    /// Jobs confirmed by the queue.
    pub jobs: u64,
    /// Jobs not put: a duplicate within its handler's window.
    pub deduped: u64,
    /// Events no handler wanted.
    pub unmatched: u64,
    /// Jobs dropped for good: over the size bound or refused as too big.
    pub dropped: u64,
    /// Puts tried again (a refusal, a broken connection).
    pub retried: u64,
    /// Jobs the queue stored but buried at once (`BURIED <id>` on a put:
    /// the server is out of memory); counted in `jobs` too. They run only
    /// once kicked.
    pub buried_on_put: u64,
}

/// The master's state: the registry, the dedupe windows and counters.
/// [`Master::plan`] and [`Master::confirm`] are the sans-IO core;
/// [`Master::dispatch`] puts a batch through any [`Queue`]; `Master::run`
/// (feature `tokio`) is the whole loop.
#[derive(Debug)]
pub struct Master {
    registry: Arc<Registry>,
    config: MasterConfig,
    windows: HashMap<usize, DedupeWindow>,
    stats: MasterStats,
    used: Option<String>,
}

impl Master {
    /// A master for the handlers of `registry`.
    pub fn new(registry: Arc<Registry>, config: MasterConfig) -> Self {
        Self {
            registry,
            config,
            windows: HashMap::new(),
            stats: MasterStats::default(),
            used: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// What it counted so far.
    pub fn stats(&self) -> MasterStats {
        self.stats
    }

    /// The jobs for `events` at `now` (`unix_ms` is the envelopes'
    /// `first_seen`): one per matching handler, less duplicates within a
    /// dedupe window (seen before, or earlier in this batch).
    pub fn plan(&mut self, events: &[Event], now: Instant, unix_ms: u64) -> Vec<PlannedJob> {
        let mut jobs = Vec::new();
        let mut in_batch: Vec<(usize, Vec<u8>)> = Vec::new();
        self.stats.events += events.len() as u64;
        for (i, ev) in events.iter().enumerate() {
            let mut matched = false;
            for (ri, reg) in self.registry.registrations().iter().enumerate() {
                if reg.event != ev.name || reg.app != ev.app {
                    continue;
                }
                matched = true;
                let mut dedupe = None;
                if let Some(rule) = &reg.dedupe
                    && let Some(key) = rule.key.of(&ev.name, &ev.data)
                {
                    let window = self.windows.entry(ri).or_insert_with(|| {
                        DedupeWindow::new(rule.window, self.config.dedupe_max_keys)
                    });
                    let dup_batch = in_batch.iter().any(|(r, k)| *r == ri && *k == key);
                    if dup_batch || window.is_duplicate(&key, now) {
                        self.stats.deduped += 1;
                        continue;
                    }
                    in_batch.push((ri, key.clone()));
                    dedupe = Some((ri, key));
                }
                let envelope = Envelope {
                    event: ev.name.clone(),
                    app: ev.app.clone(),
                    handler: reg.name.clone(),
                    data: ev.data.clone(),
                    attempt: 0,
                    first_seen: unix_ms,
                    ttr: Some(ttr_secs(self.config.put.ttr)),
                    last_error: None,
                };
                match envelope.encode(self.config.max_envelope) {
                    Ok(body) => jobs.push(PlannedJob {
                        tube: self.config.tube(&ev.app).to_string(),
                        body,
                        params: self.config.put,
                        event: i,
                        dedupe,
                    }),
                    Err(e) => {
                        self.stats.dropped += 1;
                        tracing::error!(event = %ev.name, app = %ev.app, handler = %reg.name, error = %e, "job dropped");
                    }
                }
            }
            if !matched {
                self.stats.unmatched += 1;
            }
        }
        jobs
    }

    /// Records that `job` was confirmed by the queue at `now` (its dedupe
    /// key starts its window).
    pub fn confirm(&mut self, job: &PlannedJob, now: Instant) {
        self.stats.jobs += 1;
        if let Some((ri, key)) = &job.dedupe
            && let Some(w) = self.windows.get_mut(ri)
        {
            w.record(key.clone(), now);
        }
    }

    /// Puts `jobs` through `queue`, pipelined (one `use` per change of
    /// tube, one [`Queue::put_batch`] per run of the same tube), and
    /// confirms each one the queue accepted. Returns the jobs still to
    /// put: refused for now (`DRAINING`, `OUT_OF_MEMORY`, …), or all those
    /// not confirmed when the connection broke.
    ///
    /// A job refused as too big is dropped (counted, logged): no retry
    /// could put it. A job the queue buried at once (`BURIED <id>`: out of
    /// memory) is stored, so it is confirmed like a put one (its event is
    /// acknowledged), but counted in [`MasterStats::buried_on_put`] and
    /// logged as a warning: it runs only once someone kicks it.
    ///
    /// # Errors
    /// The connection broke (IO, closed, protocol): the returned error
    /// carries nothing; the jobs not confirmed are in the `Err`'s second part.
    pub async fn dispatch<Q: Queue>(
        &mut self,
        queue: &mut Q,
        jobs: Vec<PlannedJob>,
        now: Instant,
    ) -> Result<Vec<PlannedJob>, (Error, Vec<PlannedJob>)> {
        let mut left = Vec::new();
        let mut rest = jobs.into_iter().peekable();
        while let Some(first) = rest.next() {
            let mut run = vec![first];
            while let Some(j) = rest.next_if(|j| j.tube == run[0].tube) {
                run.push(j);
            }
            if self.used.as_deref() != Some(run[0].tube.as_str()) {
                if let Err(e) = queue.use_tube(&run[0].tube).await {
                    self.used = None;
                    left.extend(run);
                    left.extend(rest);
                    return Err((e, left));
                }
                self.used = Some(run[0].tube.clone());
            }
            let puts = run.iter().map(|j| (j.body.clone(), j.params)).collect();
            match queue.put_batch(puts).await {
                Ok(results) => {
                    let mut results = results.into_iter();
                    for job in run {
                        match results.next() {
                            Some(Ok(_)) => self.confirm(&job, now),
                            Some(Err(Error::Queue(QueueError::Buried(id)))) => {
                                self.stats.buried_on_put += 1;
                                tracing::warn!(tube = %job.tube, id, "job buried by the queue as it was put (out of memory): it runs once kicked");
                                self.confirm(&job, now);
                            }
                            Some(Err(Error::Queue(QueueError::JobTooBig))) => {
                                self.stats.dropped += 1;
                                tracing::error!(tube = %job.tube, len = job.body.len(), "job refused as too big: dropped");
                            }
                            Some(Err(e)) => {
                                tracing::warn!(tube = %job.tube, error = %e, "put refused: will retry");
                                self.stats.retried += 1;
                                left.push(job);
                            }
                            None => left.push(job),
                        }
                    }
                }
                Err(e) => {
                    self.used = None;
                    self.stats.retried += run.len() as u64;
                    left.extend(run);
                    left.extend(rest);
                    return Err((e, left));
                }
            }
        }
        Ok(left)
    }

    /// Forgets the tube the connection uses (call after reconnecting).
    pub fn reconnected(&mut self) {
        self.used = None;
    }
}

/// Whole seconds, rounded up, at least 1 (beanstalk's TTR on the wire).
pub(crate) fn ttr_secs(d: std::time::Duration) -> u32 {
    crate::queue::whole_secs(d).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dispatch::registry::DedupeKey;

    fn registry() -> Arc<Registry> {
        let mut r = Registry::new();
        r.on("a.X", "app", "one", |_, _| async { Ok(()) });
        r.on("a.X", "app", "two", |_, _| async { Ok(()) })
            .dedupe(DedupeKey::Field("id".into()), Duration::from_secs(60));
        r.on("a.Y", "other", "three", |_, _| async { Ok(()) });
        Arc::new(r)
    }

    #[test]
    fn one_job_per_matching_handler_into_the_apps_tube() {
        let mut config = MasterConfig::default();
        config.tubes.insert("other".into(), "elsewhere".into());
        let mut m = Master::new(registry(), config);
        let now = Instant::now();
        let events = [
            Event::new("a.X", "app", &b"{\"id\":1}"[..]),
            Event::new("a.Y", "other", &b"\xff"[..]),
            Event::new("a.Z", "app", &b""[..]),
        ];
        let jobs = m.plan(&events, now, 5);
        let got: Vec<_> = jobs.iter().map(|j| (j.tube.as_str(), j.event)).collect();
        assert_eq!(got, [("app", 0), ("app", 0), ("elsewhere", 1)]);
        let e = Envelope::decode(&jobs[2].body, 1000).unwrap();
        assert_eq!(
            (e.handler.as_str(), &e.data[..], e.first_seen, e.ttr),
            ("three", &b"\xff"[..], 5, Some(60))
        );
        assert_eq!(m.stats().unmatched, 1);
    }

    #[test]
    fn dedupe_counts_confirmed_jobs_only_and_within_a_batch() {
        let mut m = Master::new(registry(), MasterConfig::default());
        let t0 = Instant::now();
        let ev = |id: u32| Event::new("a.X", "app", format!("{{\"id\":{id}}}").into_bytes());
        let jobs = m.plan(&[ev(1), ev(1), ev(2)], t0, 0);
        assert_eq!(
            jobs.len(),
            5,
            "two for each, less the duplicate in the batch"
        );
        assert_eq!(m.stats().deduped, 1);
        // Not confirmed: the key does not count yet.
        assert_eq!(m.plan(&[ev(1)], t0, 0).len(), 2);
        for j in &jobs {
            m.confirm(j, t0);
        }
        assert_eq!(m.plan(&[ev(1)], t0 + Duration::from_secs(59), 0).len(), 1);
        assert_eq!(m.plan(&[ev(1)], t0 + Duration::from_secs(60), 0).len(), 2);
    }

    #[test]
    fn too_big_is_dropped_at_plan() {
        let config = MasterConfig {
            max_envelope: 100,
            ..MasterConfig::default()
        };
        let mut m = Master::new(registry(), config);
        let jobs = m.plan(
            &[Event::new("a.Y", "other", vec![b'a'; 100])],
            Instant::now(),
            0,
        );
        assert!(jobs.is_empty());
        assert_eq!(m.stats().dropped, 1);
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(ttr_secs(Duration::ZERO), 1);
        assert_eq!(ttr_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttr_secs(Duration::from_secs(60)), 60);
    }
}
