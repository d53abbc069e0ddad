//! The `Queue` trait: beanstalk's semantics, whoever serves them (a
//! beanstalkd over the network, the embedded engine in process).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::Error;

/// Whole seconds for the wire, rounded up (beanstalk counts in seconds: a
/// delay, time-to-run or timeout of 0.5 s is 1 s, never 0), at most `u32::MAX`.
pub(crate) fn whole_secs(d: Duration) -> u32 {
    let up = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    u32::try_from(up).unwrap_or(u32::MAX)
}

/// How a job is put: beanstalk's priority (0 is most urgent), the delay
/// before it is ready, and its time-to-run once reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutParams {
    /// 0 is the most urgent; jobs under 1024 count as urgent in stats.
    pub priority: u32,
    /// How long the job stays delayed before it is ready (whole seconds on
    /// the wire, rounded up).
    pub delay: Duration,
    /// How long a worker may hold the job reserved before the server
    /// releases it again (whole seconds on the wire, rounded up; at least
    /// one second).
    pub ttr: Duration,
}

impl Default for PutParams {
    /// Priority 1024, no delay, a 60 s time-to-run.
    fn default() -> Self {
        Self {
            priority: 1024,
            delay: Duration::ZERO,
            ttr: Duration::from_secs(60),
        }
    }
}

/// A job as a reserve or a peek returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The server's id of the job.
    pub id: u64,
    /// The job's body, as it was put.
    pub body: Bytes,
}

/// A `stats`, `stats-job` or `stats-tube` answer: beanstalk's YAML
/// mapping, as ordered key/value pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats(pub Vec<(String, String)>);

impl Stats {
    /// The value of `key`, if the answer has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a number, if the answer has it and it is one.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

/// A beanstalk queue, as miller's master and worker use it. One value is
/// one client: it has a tube it uses (for `put`) and tubes it watches (for
/// `reserve`), and the jobs it reserved are its own until it deletes,
/// releases, buries them or they time out.
///
/// Beanstalk's error replies come back as [`Error::Queue`]; peeks and
/// reserves that find nothing are `Ok(None)`.
pub trait Queue: Send {
    /// `use tube`: later puts go to `tube`.
    fn use_tube(&mut self, tube: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// `put`: the new job's id.
    ///
    /// # Errors
    /// [`crate::QueueError::Buried`] when the server buried it for lack of
    /// memory, `JOB_TOO_BIG`, `DRAINING`, IO.
    fn put(
        &mut self,
        body: Bytes,
        params: PutParams,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Several puts in order, pipelined where the queue can (one round
    /// trip for all of them over the network): each put's own result.
    ///
    /// # Errors
    /// The outer error is a broken connection (no result is known for the
    /// puts not answered); the inner ones are each put's refusal.
    fn put_batch(
        &mut self,
        jobs: Vec<(Bytes, PutParams)>,
    ) -> impl Future<Output = Result<Vec<Result<u64, Error>>, Error>> + Send {
        async move {
            let mut out = Vec::with_capacity(jobs.len());
            for (body, params) in jobs {
                match self.put(body, params).await {
                    Err(e @ (Error::Io(_) | Error::Closed | Error::Protocol(_))) => return Err(e),
                    r => out.push(r),
                }
            }
            Ok(out)
        }
    }

    /// `watch tube`: the number of tubes now watched.
    fn watch(&mut self, tube: &str) -> impl Future<Output = Result<u64, Error>> + Send;

    /// `ignore tube`: the number of tubes now watched.
    ///
    /// # Errors
    /// [`crate::QueueError::NotIgnored`] for the last watched tube.
    fn ignore(&mut self, tube: &str) -> impl Future<Output = Result<u64, Error>> + Send;

    /// `reserve` (no timeout) or `reserve-with-timeout`: a job, or `None`
    /// when the timeout passed first.
    ///
    /// # Errors
    /// [`crate::QueueError::DeadlineSoon`] when a job this client holds is
    /// within a second of its time-to-run.
    fn reserve(
        &mut self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Job>, Error>> + Send;

    /// `reserve-job id`: reserves that job whatever its state (not reserved).
    fn reserve_job(&mut self, id: u64) -> impl Future<Output = Result<Job, Error>> + Send;

    /// `delete id`
    fn delete(&mut self, id: u64) -> impl Future<Output = Result<(), Error>> + Send;

    /// `release id priority delay`
    fn release(
        &mut self,
        id: u64,
        priority: u32,
        delay: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// `bury id priority`
    fn bury(&mut self, id: u64, priority: u32) -> impl Future<Output = Result<(), Error>> + Send;

    /// `touch id`: the job's time-to-run starts again.
    fn touch(&mut self, id: u64) -> impl Future<Output = Result<(), Error>> + Send;

    /// `kick bound`: the number of jobs kicked (buried ones first, else delayed).
    fn kick(&mut self, bound: u32) -> impl Future<Output = Result<u64, Error>> + Send;

    /// `kick-job id`
    fn kick_job(&mut self, id: u64) -> impl Future<Output = Result<(), Error>> + Send;

    /// `peek id`
    fn peek(&mut self, id: u64) -> impl Future<Output = Result<Option<Job>, Error>> + Send;

    /// `peek-ready` in the used tube.
    fn peek_ready(&mut self) -> impl Future<Output = Result<Option<Job>, Error>> + Send;

    /// `peek-delayed` in the used tube.
    fn peek_delayed(&mut self) -> impl Future<Output = Result<Option<Job>, Error>> + Send;

    /// `peek-buried` in the used tube.
    fn peek_buried(&mut self) -> impl Future<Output = Result<Option<Job>, Error>> + Send;

    /// `stats`
    fn stats(&mut self) -> impl Future<Output = Result<Stats, Error>> + Send;

    /// `stats-job id`
    fn stats_job(&mut self, id: u64) -> impl Future<Output = Result<Stats, Error>> + Send;

    /// `stats-tube tube`
    fn stats_tube(&mut self, tube: &str) -> impl Future<Output = Result<Stats, Error>> + Send;

    /// `list-tubes`
    fn list_tubes(&mut self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// `list-tube-used`
    fn list_tube_used(&mut self) -> impl Future<Output = Result<String, Error>> + Send;

    /// `list-tubes-watched`
    fn list_tubes_watched(&mut self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// `pause-tube tube delay`: no job is reserved from `tube` for `delay`.
    fn pause_tube(
        &mut self,
        tube: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}
