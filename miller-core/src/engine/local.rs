//! [`LocalQueue`]: the [`Queue`] trait over an [`Engine`] shared in process,
//! on a clock of the caller's choosing (a [`ManualClock`] in tests).
//!
//! A [`LocalEngine`] is the shared handle: an engine behind a mutex, a
//! clock, and the wakers of the queues whose reserve is parked. Each
//! [`LocalEngine::queue`] is one beanstalk client. A reserve that finds no
//! job is a future woken when the engine hands its client a job (another
//! queue's put, release, kick…) or when a [`LocalEngine::tick`] times it out.
//!
//! Time moves only when someone ticks: with a [`ManualClock`], advance it
//! and call [`LocalEngine::tick`]; with the real clock, run
//! [`LocalEngine::run_timers`] (feature `tokio`) or tick yourself at
//! [`LocalEngine::next_deadline`]. Every request also does first whatever
//! was due by its `now`.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use miller_core::engine::{EngineConfig, LocalEngine, ManualClock};
//! use miller_core::{PutParams, Queue, QueueError, Error};
//!
//! let clock = ManualClock::new();
//! let engine = LocalEngine::with_clock(EngineConfig::default(), clock.clock());
//! let mut producer = engine.queue();
//! let mut worker = engine.queue();
//! let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! rt.block_on(async {
//!     let params = PutParams { ttr: Duration::from_secs(5), ..PutParams::default() };
//!     let id = producer.put(Bytes::from_static(b"hello"), params).await.unwrap();
//!     let job = worker.reserve(None).await.unwrap().unwrap();
//!     assert_eq!((job.id, &job.body[..]), (id, &b"hello"[..]));
//!     // Retry in 30 s: the job is delayed on the simulated clock.
//!     worker.release(id, 0, Duration::from_secs(30)).await.unwrap();
//!     assert_eq!(worker.reserve(Some(Duration::ZERO)).await.unwrap(), None);
//!     clock.advance(Duration::from_secs(30));
//!     engine.tick();
//!     let again = worker.reserve(Some(Duration::ZERO)).await.unwrap().unwrap();
//!     assert_eq!(again.id, id);
//!     assert_eq!(worker.stats_job(id).await.unwrap().number("releases"), Some(1));
//!     worker.bury(id, 0).await.unwrap();
//!     assert!(matches!(worker.touch(id).await, Err(Error::Queue(QueueError::NotFound))));
//! });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ClientId, Engine, EngineConfig, Handled};
use crate::proto::{Request, Response};
use crate::queue::whole_secs;
use crate::{Error, Job, PutParams, Queue, QueueError, Stats};

/// A clock as [`LocalEngine`] reads it.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A simulated clock for tests: it stands still until advanced. Clones
/// share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at the real time of its making.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock at `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the time on by `by`.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// This clock as a [`Clock`] for [`LocalEngine::with_clock`].
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Arc::new(move || me.now())
    }
}

struct State {
    engine: Engine,
    wakers: HashMap<ClientId, Waker>,
}

struct Shared {
    state: Mutex<State>,
    clock: Clock,
    #[cfg(feature = "tokio")]
    timers: tokio::sync::Notify,
}

/// An engine shared in process: make clients with [`LocalEngine::queue`].
/// Clones share the engine.
#[derive(Clone)]
pub struct LocalEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine").finish_non_exhaustive()
    }
}

impl LocalEngine {
    /// An engine on the real clock ([`Instant::now`]). Its
    /// [`EngineConfig::record_changes`] is turned off: nothing here is durable.
    ///
    /// Nothing runs its timers by itself: a reserve with a timeout, a
    /// delayed job, a time-to-run and a paused tube move only when
    /// something calls [`LocalEngine::tick`] or runs
    /// `LocalEngine::run_timers` (feature `tokio`) beside the queues, as
    /// the crate's example does. Without that a timed reserve on an empty
    /// tube waits until a job comes.
    pub fn new(config: EngineConfig) -> Self {
        Self::with_clock(config, Arc::new(Instant::now))
    }

    /// An engine on `clock` (a [`ManualClock::clock`] in tests).
    pub fn with_clock(config: EngineConfig, clock: Clock) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    engine: Engine::new(config.record_changes(false)),
                    wakers: HashMap::new(),
                }),
                clock,
                #[cfg(feature = "tokio")]
                timers: tokio::sync::Notify::new(),
            }),
        }
    }

    /// A new client: it uses and watches `default`. Dropping it disconnects
    /// it (its reserved jobs are ready again).
    pub fn queue(&self) -> LocalQueue {
        let client = self.call(|engine, now| engine.connect(now));
        LocalQueue {
            engine: self.clone(),
            client,
        }
    }

    /// Does what is due by the clock's now (delays, TTRs, pauses, reserve
    /// timeouts) and wakes the reserves that completed.
    pub fn tick(&self) {
        self.call(|engine, now| engine.tick(now));
    }

    /// The earliest time [`LocalEngine::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock().engine.next_deadline()
    }

    /// The clock's time now.
    pub fn now(&self) -> Instant {
        (self.shared.clock)()
    }

    /// Looks at the engine (counts, stats accessors).
    pub fn inspect<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.lock().engine)
    }

    /// Runs `f` on the engine at the clock's now, then wakes the reserves
    /// it completed.
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine, Instant) -> R) -> R {
        self.call(f)
    }

    /// Ticks at every deadline, for ever, on the real clock (tokio's
    /// timer); spawn it beside the queues of an engine made with
    /// [`LocalEngine::new`]. Pointless with a [`ManualClock`].
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn run_timers(self) {
        loop {
            let notified = self.shared.timers.notified();
            match self.next_deadline() {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
            self.tick();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn call<R>(&self, f: impl FnOnce(&mut Engine, Instant) -> R) -> R {
        let mut state = self.lock();
        let now = (self.shared.clock)();
        #[cfg(feature = "tokio")]
        let before = state.engine.next_deadline();
        let out = f(&mut state.engine, now);
        // The timer task sleeps until the next deadline: wake it only when
        // a call made that deadline earlier (waking it on every call, its
        // own tick included, made it spin without yielding).
        #[cfg(feature = "tokio")]
        let earlier = match (before, state.engine.next_deadline()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(a)) => a < b,
        };
        let State { engine, wakers } = &mut *state;
        let wake: Vec<Waker> = engine
            .take_woken()
            .filter_map(|c| wakers.remove(&c))
            .collect();
        drop(state);
        for waker in wake {
            waker.wake();
        }
        #[cfg(feature = "tokio")]
        if earlier {
            self.shared.timers.notify_one();
        }
        out
    }
}

/// One client of a [`LocalEngine`], as a [`Queue`]. Dropping it
/// disconnects the client: its reserved jobs are ready again.
///
/// Durations become whole seconds as on the wire, rounded up (a delay or
/// TTR of 1.5 s is 2 s; a reserve timeout of 0 answers at once). A reserve
/// future dropped before it completes cancels the wait; a job it was
/// handed meanwhile stays reserved by this client and is returned by its
/// next reserve. Timeouts, delays and time-to-run move only when the
/// engine's timers run (see [`LocalEngine::new`]).
#[derive(Debug)]
pub struct LocalQueue {
    engine: LocalEngine,
    client: ClientId,
}

fn refusal(reply: Response) -> Error {
    Error::Queue(match reply {
        Response::NotFound => QueueError::NotFound,
        Response::BuriedId(id) => QueueError::Buried(Some(id)),
        Response::Buried => QueueError::Buried(None),
        Response::DeadlineSoon => QueueError::DeadlineSoon,
        Response::Draining => QueueError::Draining,
        Response::NotIgnored => QueueError::NotIgnored,
        Response::OutOfMemory => QueueError::OutOfMemory,
        Response::BadFormat => QueueError::BadFormat,
        Response::UnknownCommand => QueueError::UnknownCommand,
        Response::ExpectedCrlf => QueueError::ExpectedCrlf,
        Response::JobTooBig => QueueError::JobTooBig,
        _ => QueueError::InternalError,
    })
}

impl LocalQueue {
    /// The engine's id of this client.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The engine this queue is a client of.
    pub fn engine(&self) -> &LocalEngine {
        &self.engine
    }

    /// Sends one request that never parks and returns the raw reply.
    fn request(&self, request: Request) -> Response {
        let client = self.client;
        match self
            .engine
            .call(|engine, now| engine.handle(client, request, now))
        {
            Handled::Reply(reply) => reply,
            Handled::Wait | Handled::Close => Response::InternalError,
        }
    }

    fn expect(&self, request: Request, ok: fn(&Response) -> bool) -> Result<Response, Error> {
        let reply = self.request(request);
        if ok(&reply) {
            Ok(reply)
        } else {
            Err(refusal(reply))
        }
    }

    fn found(&self, request: Request) -> Result<Option<Job>, Error> {
        match self.request(request) {
            Response::Found { id, body } => Ok(Some(Job { id, body })),
            Response::NotFound => Ok(None),
            other => Err(refusal(other)),
        }
    }

    fn stats_of(&self, request: Request) -> Result<Stats, Error> {
        match self.request(request) {
            Response::Ok(body) => crate::proto::parse_stats(&body).map_err(Error::Protocol),
            other => Err(refusal(other)),
        }
    }

    fn list_of(&self, request: Request) -> Result<Vec<String>, Error> {
        match self.request(request) {
            Response::Ok(body) => crate::proto::parse_list(&body).map_err(Error::Protocol),
            other => Err(refusal(other)),
        }
    }

    async fn reserve_reply(&self, timeout: Option<Duration>) -> Response {
        let client = self.client;
        let request = match timeout {
            None => Request::Reserve,
            Some(t) => {
                Request::ReserveWithTimeout(i32::try_from(whole_secs(t)).unwrap_or(i32::MAX))
            }
        };
        let first = self.engine.call(|engine, now| {
            // A job handed to a reserve that was cancelled is this client's.
            if let Some(reply @ Response::Reserved { .. }) = engine.poll_reply(client) {
                return Handled::Reply(reply);
            }
            engine.handle(client, request, now)
        });
        match first {
            Handled::Reply(reply) => reply,
            Handled::Close => Response::InternalError,
            Handled::Wait => {
                ParkedReserve {
                    engine: &self.engine,
                    client,
                    done: false,
                }
                .await
            }
        }
    }
}

impl Drop for LocalQueue {
    fn drop(&mut self) {
        let client = self.client;
        self.engine
            .call(|engine, now| engine.disconnect(client, now));
        self.engine.lock().wakers.remove(&client);
    }
}

/// A reserve parked in the engine: ready when the engine completed it.
struct ParkedReserve<'a> {
    engine: &'a LocalEngine,
    client: ClientId,
    done: bool,
}

impl Future for ParkedReserve<'_> {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let client = self.client;
        let mut state = self.engine.lock();
        if let Some(reply) = state.engine.poll_reply(client) {
            state.wakers.remove(&client);
            drop(state);
            self.done = true;
            return Poll::Ready(reply);
        }
        if !state.engine.is_waiting(client) {
            drop(state);
            self.done = true;
            return Poll::Ready(Response::InternalError);
        }
        state.wakers.insert(client, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ParkedReserve<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.engine.lock();
            state.engine.cancel_wait(self.client);
            state.wakers.remove(&self.client);
        }
    }
}

impl Queue for LocalQueue {
    async fn use_tube(&mut self, tube: &str) -> Result<(), Error> {
        self.expect(Request::Use(tube.to_owned()), |r| {
            matches!(r, Response::Using(_))
        })
        .map(drop)
    }

    async fn put(&mut self, body: Bytes, params: PutParams) -> Result<u64, Error> {
        let request = Request::Put {
            priority: params.priority,
            delay: whole_secs(params.delay),
            ttr: whole_secs(params.ttr),
            body,
        };
        match self.request(request) {
            Response::Inserted(id) => Ok(id),
            other => Err(refusal(other)),
        }
    }

    async fn watch(&mut self, tube: &str) -> Result<u64, Error> {
        match self.request(Request::Watch(tube.to_owned())) {
            Response::Watching(n) => Ok(n),
            other => Err(refusal(other)),
        }
    }

    async fn ignore(&mut self, tube: &str) -> Result<u64, Error> {
        match self.request(Request::Ignore(tube.to_owned())) {
            Response::Watching(n) => Ok(n),
            other => Err(refusal(other)),
        }
    }

    async fn reserve(&mut self, timeout: Option<Duration>) -> Result<Option<Job>, Error> {
        match self.reserve_reply(timeout).await {
            Response::Reserved { id, body } => Ok(Some(Job { id, body })),
            Response::TimedOut => Ok(None),
            other => Err(refusal(other)),
        }
    }

    async fn reserve_job(&mut self, id: u64) -> Result<Job, Error> {
        match self.request(Request::ReserveJob(id)) {
            Response::Reserved { id, body } => Ok(Job { id, body }),
            other => Err(refusal(other)),
        }
    }

    async fn delete(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Request::Delete(id), |r| *r == Response::Deleted)
            .map(drop)
    }

    async fn release(&mut self, id: u64, priority: u32, delay: Duration) -> Result<(), Error> {
        let request = Request::Release {
            id,
            priority,
            delay: whole_secs(delay),
        };
        self.expect(request, |r| *r == Response::Released).map(drop)
    }

    async fn bury(&mut self, id: u64, priority: u32) -> Result<(), Error> {
        self.expect(Request::Bury { id, priority }, |r| *r == Response::Buried)
            .map(drop)
    }

    async fn touch(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Request::Touch(id), |r| *r == Response::Touched)
            .map(drop)
    }

    async fn kick(&mut self, bound: u32) -> Result<u64, Error> {
        match self.request(Request::Kick(bound)) {
            Response::Kicked(n) => Ok(n),
            other => Err(refusal(other)),
        }
    }

    async fn kick_job(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Request::KickJob(id), |r| *r == Response::KickedJob)
            .map(drop)
    }

    async fn peek(&mut self, id: u64) -> Result<Option<Job>, Error> {
        self.found(Request::Peek(id))
    }

    async fn peek_ready(&mut self) -> Result<Option<Job>, Error> {
        self.found(Request::PeekReady)
    }

    async fn peek_delayed(&mut self) -> Result<Option<Job>, Error> {
        self.found(Request::PeekDelayed)
    }

    async fn peek_buried(&mut self) -> Result<Option<Job>, Error> {
        self.found(Request::PeekBuried)
    }

    async fn stats(&mut self) -> Result<Stats, Error> {
        self.stats_of(Request::Stats)
    }

    async fn stats_job(&mut self, id: u64) -> Result<Stats, Error> {
        self.stats_of(Request::StatsJob(id))
    }

    async fn stats_tube(&mut self, tube: &str) -> Result<Stats, Error> {
        self.stats_of(Request::StatsTube(tube.to_owned()))
    }

    async fn list_tubes(&mut self) -> Result<Vec<String>, Error> {
        self.list_of(Request::ListTubes)
    }

    async fn list_tube_used(&mut self) -> Result<String, Error> {
        match self.request(Request::ListTubeUsed) {
            Response::Using(tube) => Ok(tube),
            other => Err(refusal(other)),
        }
    }

    async fn list_tubes_watched(&mut self) -> Result<Vec<String>, Error> {
        self.list_of(Request::ListTubesWatched)
    }

    async fn pause_tube(&mut self, tube: &str, delay: Duration) -> Result<(), Error> {
        let request = Request::PauseTube {
            tube: tube.to_owned(),
            delay: whole_secs(delay),
        };
        self.expect(request, |r| *r == Response::Paused).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (ManualClock, LocalEngine) {
        let clock = ManualClock::new();
        let engine = LocalEngine::with_clock(EngineConfig::default(), clock.clock());
        (clock, engine)
    }

    #[tokio::test]
    async fn a_parked_reserve_is_woken_by_another_queues_put() {
        let (_clock, engine) = engine();
        let mut worker = engine.queue();
        let mut producer = engine.queue();
        let waiter = tokio::spawn(async move {
            let job = worker.reserve(None).await;
            (worker, job)
        });
        while engine.inspect(|e| e.waiting_count()) == 0 {
            tokio::task::yield_now().await;
        }
        let id = producer
            .put(Bytes::from_static(b"x"), PutParams::default())
            .await
            .unwrap();
        let (_worker, job) = waiter.await.unwrap();
        assert_eq!(job.unwrap().unwrap().id, id);
    }

    #[tokio::test]
    async fn a_reserve_timeout_completes_at_the_tick_past_it() {
        let (clock, engine) = engine();
        let mut worker = engine.queue();
        let ticker = engine.clone();
        let waiter = tokio::spawn(async move {
            worker
                .reserve(Some(Duration::from_secs(5)))
                .await
                .map(|j| j.is_none())
        });
        while engine.inspect(|e| e.waiting_count()) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            engine.next_deadline(),
            Some(clock.now() + Duration::from_secs(5))
        );
        clock.advance(Duration::from_secs(5));
        ticker.tick();
        assert!(waiter.await.unwrap().unwrap(), "TIMED_OUT is Ok(None)");
    }

    #[tokio::test]
    async fn deadline_soon_ttr_expiry_and_drop_disconnects() {
        let (clock, engine) = engine();
        let mut a = engine.queue();
        let params = PutParams {
            ttr: Duration::from_millis(1500),
            ..PutParams::default()
        };
        let id = a.put(Bytes::new(), params).await.unwrap();
        assert_eq!(
            a.stats_job(id).await.unwrap().number("ttr"),
            Some(2),
            "rounded up"
        );
        a.reserve(None).await.unwrap().unwrap();
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            a.reserve(None).await,
            Err(Error::Queue(QueueError::DeadlineSoon))
        ));
        clock.advance(Duration::from_secs(1));
        engine.tick();
        assert_eq!(a.stats().await.unwrap().number("job-timeouts"), Some(1));
        let mut b = engine.queue();
        b.reserve_job(id).await.unwrap();
        assert_eq!(engine.inspect(|e| e.reserved_count()), 1);
        drop(b);
        assert_eq!(
            engine.inspect(|e| (e.reserved_count(), e.ready_count(), e.client_count())),
            (0, 1, 1)
        );
    }

    #[tokio::test]
    async fn a_cancelled_reserve_leaves_no_waiter_and_keeps_a_job_it_was_handed() {
        let (_clock, engine) = engine();
        let mut worker = engine.queue();
        let mut producer = engine.queue();
        {
            let reserve = worker.reserve(None);
            let mut reserve = std::pin::pin!(reserve);
            let waker = Waker::noop();
            assert!(
                reserve
                    .as_mut()
                    .poll(&mut Context::from_waker(waker))
                    .is_pending()
            );
            assert_eq!(engine.inspect(|e| e.waiting_count()), 1);
        }
        assert_eq!(engine.inspect(|e| e.waiting_count()), 0);
        {
            let reserve = worker.reserve(None);
            let mut reserve = std::pin::pin!(reserve);
            assert!(
                reserve
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending()
            );
            // handed a job, then dropped unpolled
            producer
                .put(Bytes::from_static(b"j"), PutParams::default())
                .await
                .unwrap();
        }
        let job = worker.reserve(Some(Duration::ZERO)).await.unwrap().unwrap();
        assert_eq!(&job.body[..], b"j");
    }

    #[tokio::test]
    async fn every_queue_method_maps_its_replies() {
        let (_clock, engine) = engine();
        let mut q = engine.queue();
        q.use_tube("t").await.unwrap();
        assert_eq!(q.list_tube_used().await.unwrap(), "t");
        assert_eq!(q.watch("t").await.unwrap(), 2);
        assert_eq!(q.ignore("default").await.unwrap(), 1);
        assert!(matches!(
            q.ignore("t").await,
            Err(Error::Queue(QueueError::NotIgnored))
        ));
        assert_eq!(q.list_tubes().await.unwrap(), vec!["default", "t"]);
        assert_eq!(q.list_tubes_watched().await.unwrap(), vec!["t"]);
        let id = q
            .put(Bytes::from_static(b"b"), PutParams::default())
            .await
            .unwrap();
        assert_eq!(
            q.peek(id).await.unwrap().unwrap().body,
            Bytes::from_static(b"b")
        );
        assert_eq!(q.peek_ready().await.unwrap().unwrap().id, id);
        assert_eq!(q.peek_delayed().await.unwrap(), None);
        q.reserve(None).await.unwrap();
        q.touch(id).await.unwrap();
        q.bury(id, 1).await.unwrap();
        assert_eq!(q.peek_buried().await.unwrap().unwrap().id, id);
        assert_eq!(q.kick(10).await.unwrap(), 1);
        q.reserve(None).await.unwrap();
        q.release(id, 2, Duration::from_secs(9)).await.unwrap();
        q.kick_job(id).await.unwrap();
        assert!(matches!(
            q.kick_job(id).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        q.pause_tube("t", Duration::ZERO).await.unwrap();
        let tube = q.stats_tube("t").await.unwrap();
        assert_eq!(tube.get("name"), Some("t"));
        assert_eq!(tube.number("pause"), Some(0), "0 pauses for 1 ns");
        assert_eq!(q.stats().await.unwrap().get("version"), Some("1.12"));
        q.delete(id).await.unwrap();
        assert!(matches!(
            q.delete(id).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        assert!(matches!(
            q.stats_tube("nope").await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        assert!(matches!(
            q.use_tube("-bad").await,
            Err(Error::Queue(QueueError::BadFormat))
        ));
        let results = q
            .put_batch(vec![
                (Bytes::new(), PutParams::default()),
                (Bytes::new(), PutParams::default()),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 2);
    }
}
