//! The engine's state machine: jobs, tubes and clients, and every request
//! answered as beanstalkd 1.12's `prot.c` answers it.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::{EngineConfig, JOB_OVERHEAD, ProcessStats};
use super::{Change, ClientId, DurableState, Handled, RestoredJob, yaml};
use crate::proto::{Request, Response, TUBE_NAME_MAX};

/// beanstalkd's `SAFETY_MARGIN`: a client holding a job this close to its
/// deadline is told `DEADLINE_SOON` rather than left waiting.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(1);
/// Jobs with a priority under this count as urgent in stats.
pub const URGENT_THRESHOLD: u32 = 1024;

/// A hasher for sequential integer keys (job and client ids): one multiply.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Where a job is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobState {
    Ready,
    Delayed,
    Reserved(ClientId),
    Buried,
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) tube: usize,
    pub(super) pri: u32,
    /// The delay of the last put or release, in seconds.
    pub(super) delay: u32,
    pub(super) ttr: u32,
    pub(super) body: Bytes,
    pub(super) state: JobState,
    /// Delayed: when it becomes ready; reserved: when its TTR runs out.
    pub(super) deadline: Instant,
    pub(super) created: Instant,
    /// Order among the buried of its tube, or among its reserver's jobs.
    seq: u64,
    pub(super) reserves: u32,
    pub(super) timeouts: u32,
    pub(super) releases: u32,
    pub(super) buries: u32,
    pub(super) kicks: u32,
}

#[derive(Debug)]
pub(super) struct Tube {
    pub(super) name: String,
    /// (priority, id)
    ready: BTreeSet<(u32, u64)>,
    /// (deadline, id)
    delayed: BTreeSet<(Instant, u64)>,
    /// (bury order, id)
    buried: BTreeSet<(u64, u64)>,
    /// beanstalkd's `waiting_conns`: an `Ms` (swap-remove set taken in
    /// rotation by `ms_take`), mirrored so that waiting clients are served
    /// in exactly beanstalkd's order.
    waiting: Vec<ClientId>,
    waiting_last: usize,
    jobs: u64,
    pub(super) using: u64,
    pub(super) watching: u64,
    pinned: bool,
    pub(super) urgent: u64,
    pub(super) reserved: u64,
    pub(super) total_jobs: u64,
    pub(super) deletes: u64,
    pub(super) pauses: u64,
    /// The pause-tube delay; zero when not paused.
    pub(super) pause: Duration,
    /// When the pause ends; `Some` exactly while paused.
    pub(super) unpause_at: Option<Instant>,
}

impl Tube {
    pub(super) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(super) fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    pub(super) fn buried_len(&self) -> usize {
        self.buried.len()
    }

    pub(super) fn waiting_len(&self) -> usize {
        self.waiting.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wait {
    /// None: wait for ever.
    until: Option<Instant>,
}

#[derive(Debug)]
struct Client {
    use_tube: usize,
    /// beanstalkd's `watch` `Ms`: appended, swap-removed.
    watch: Vec<usize>,
    /// (deadline, id) of the jobs it reserved.
    reserved: BTreeSet<(Instant, u64)>,
    waiting: Option<Wait>,
    reply: Option<Response>,
    /// Its key in `Engine::conn_heap`.
    tickat: Option<Instant>,
    producer: bool,
    worker: bool,
}

/// Indexes into the `cmd-*` counters, in the order `stats` prints them.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Put,
    Peek,
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Reserve,
    ReserveWithTimeout,
    Delete,
    Release,
    Use,
    Watch,
    Ignore,
    Bury,
    Kick,
    Touch,
    Stats,
    StatsJob,
    StatsTube,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube,
    ReserveJob,
    KickJob,
}

pub(super) const OPS: usize = 24;

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) ready: u64,
    pub(super) urgent: u64,
    pub(super) reserved: u64,
    pub(super) buried: u64,
    pub(super) waiting: u64,
    pub(super) total_jobs: u64,
    pub(super) timeouts: u64,
    pub(super) ops: [u64; OPS],
    pub(super) connections: u64,
    pub(super) total_connections: u64,
    pub(super) producers: u64,
    pub(super) workers: u64,
}

/// Why the codec refused a put before the engine saw it; see
/// [`Engine::put_refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutRefused {
    /// The announced body is over `max-job-size`: `JOB_TOO_BIG`.
    TooBig,
    /// The body was not followed by `\r\n`: `EXPECTED_CRLF`.
    ExpectedCrlf,
}

/// The embedded beanstalk engine: beanstalkd 1.12's tubes, jobs and
/// clients as a state machine. It never reads the clock: every call that
/// can expire something takes `now`. See the [module doc](super) for the
/// data flow.
///
/// Known differences from beanstalkd 1.12, all deliberate:
/// - Timers are exact. beanstalkd's epoll wakes up to a millisecond early
///   for a connection's timer and then drops the connection from its timer
///   heap, so the TTR of a job held by an idle connection runs out only
///   once that connection sends something, and a parked `reserve` of a
///   client holding a job may miss its `DEADLINE_SOON`. Here a TTR runs
///   out at its deadline and `DEADLINE_SOON` comes a second before it.
/// - A job's TTR runs out at its deadline (beanstalkd: strictly after it;
///   the same to a nanosecond).
/// - `stats` figures of the process (`pid`, `version`, `rusage-*`,
///   `hostname`, `os`, `platform`, `id`, `binlog-*`) are what
///   [`HostInfo`](super::HostInfo) and [`ProcessStats`](super::ProcessStats)
///   say; `version` is `"1.12"` by default.
/// - Puts beyond [`EngineConfig::max_jobs`] or [`EngineConfig::max_memory`]
///   are answered `OUT_OF_MEMORY` (beanstalkd grows until malloc fails);
///   nothing is ever buried for lack of memory, so `BURIED <id>` never comes.
/// - A restored job's counters (`reserves`, `buries`, …) start at zero and
///   its `age` at the restore (beanstalkd's binlog keeps them).
/// - `stats-job`'s `file` is always 0.
/// - Served ([`server`](crate::server)), the requests read together in one
///   batch are handled at one `now` (beanstalkd reads its clock for each
///   command): a `stats-tube` pipelined right after `pause-tube t 1` says
///   `pause-time-left: 1` where beanstalkd, a few microseconds later, says 0.
#[derive(Debug)]
pub struct Engine {
    pub(super) config: EngineConfig,
    pub(super) jobs: IdMap<u64, Job>,
    pub(super) tubes: Vec<Option<Tube>>,
    free_tubes: Vec<usize>,
    tube_index: HashMap<String, usize>,
    /// beanstalkd's global `tubes` `Ms`: creation order, swap-removed.
    pub(super) tube_list: Vec<usize>,
    clients: IdMap<ClientId, Client>,
    next_client: u64,
    next_id: u64,
    next_seq: u64,
    /// Every delayed job, (deadline, id).
    delayed: BTreeSet<(Instant, u64)>,
    /// Every paused tube, (unpause at, tube).
    paused: BTreeSet<(Instant, usize)>,
    /// beanstalkd's `srv->conns` heap: (tick at, client).
    conn_heap: BTreeSet<(Instant, ClientId)>,
    /// Tubes with at least one waiting client.
    waiting_tubes: BTreeSet<usize>,
    woken: Vec<ClientId>,
    changes: Vec<Change>,
    /// The client whose request is being handled: its reply is returned,
    /// not parked.
    handling: Option<ClientId>,
    pub(super) counters: Counters,
    pub(super) started: Option<Instant>,
    pub(super) draining: bool,
    memory: u64,
    pub(super) process: ProcessStats,
}

const DEFAULT_TUBE: &str = "default";

fn valid_tube(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TUBE_NAME_MAX
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b))
}

fn ms_take(items: &mut Vec<ClientId>, last: &mut usize) -> Option<ClientId> {
    if items.is_empty() {
        return None;
    }
    *last %= items.len();
    let item = items.swap_remove(*last);
    *last += 1;
    Some(item)
}

fn ms_remove<T: PartialEq>(items: &mut Vec<T>, item: &T) -> bool {
    match items.iter().position(|x| x == item) {
        Some(i) => {
            items.swap_remove(i);
            true
        }
        None => false,
    }
}

fn secs(d: u32) -> Duration {
    Duration::from_secs(u64::from(d))
}

impl Engine {
    /// An engine with no jobs, no clients, and the tube `default`.
    pub fn new(config: EngineConfig) -> Self {
        let mut engine = Self {
            config,
            jobs: IdMap::default(),
            tubes: Vec::new(),
            free_tubes: Vec::new(),
            tube_index: HashMap::new(),
            tube_list: Vec::new(),
            clients: IdMap::default(),
            next_client: 1,
            next_id: 1,
            next_seq: 0,
            delayed: BTreeSet::new(),
            paused: BTreeSet::new(),
            conn_heap: BTreeSet::new(),
            waiting_tubes: BTreeSet::new(),
            woken: Vec::new(),
            changes: Vec::new(),
            handling: None,
            counters: Counters::default(),
            started: None,
            draining: false,
            memory: 0,
            process: ProcessStats::default(),
        };
        let default = engine.tube_find_or_make(DEFAULT_TUBE);
        engine.tube_mut(default).pinned = true;
        engine
    }

    /// The configuration the engine was made with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A new client, using and watching `default`.
    pub fn connect(&mut self, now: Instant) -> ClientId {
        self.start(now);
        let id = ClientId(self.next_client);
        self.next_client += 1;
        let default = self.tube_index[DEFAULT_TUBE];
        let tube = self.tube_mut(default);
        tube.using += 1;
        tube.watching += 1;
        self.clients.insert(
            id,
            Client {
                use_tube: default,
                watch: vec![default],
                reserved: BTreeSet::new(),
                waiting: None,
                reply: None,
                tickat: None,
                producer: false,
                worker: false,
            },
        );
        self.counters.connections += 1;
        self.counters.total_connections += 1;
        id
    }

    /// The client is gone: its waiting reserve is dropped, the jobs it
    /// reserved are ready again (in the order it reserved them, each handed
    /// to a waiting client if one wants it), its tubes lose a user and a
    /// watcher (and vanish if nothing else holds them). An unknown client
    /// is ignored.
    pub fn disconnect(&mut self, client: ClientId, now: Instant) {
        let Some(c) = self.clients.get(&client) else {
            return;
        };
        if c.producer {
            self.counters.producers -= 1;
        }
        if c.worker {
            self.counters.workers -= 1;
        }
        self.counters.connections -= 1;
        self.remove_waiting(client);
        let mut held: Vec<(u64, u64)> = self
            .client(client)
            .reserved
            .iter()
            .map(|&(_, id)| (self.jobs[&id].seq, id))
            .collect();
        held.sort_unstable();
        for (_, id) in held {
            self.unreserve(id);
            self.enqueue(id, 0, now);
        }
        // beanstalkd's ms_clear: delete index 0 until empty (swap-remove).
        let mut watch = std::mem::take(&mut self.client_mut(client).watch);
        while !watch.is_empty() {
            let t = watch.swap_remove(0);
            self.tube_mut(t).watching -= 1;
            self.tube_release(t);
        }
        let use_tube = self.client(client).use_tube;
        self.tube_mut(use_tube).using -= 1;
        self.tube_release(use_tube);
        if let Some(at) = self.client(client).tickat {
            self.conn_heap.remove(&(at, client));
        }
        self.clients.remove(&client);
        self.woken.retain(|&c| c != client);
    }

    /// Answers one request of `client` at `now`. Whatever [`Engine::tick`]
    /// had due by `now` is done first, as beanstalkd ticks before it reads.
    ///
    /// A reserve that finds no job parks ([`Handled::Wait`]): its reply
    /// later comes out of [`Engine::poll_reply`] once the client is among
    /// [`Engine::take_woken`]. The driver sends a parked client no further
    /// request until then (as beanstalkd reads none); if it does, the wait
    /// is dropped first. [`Handled::Close`] (to `quit`) asks the driver to
    /// close the connection and call [`Engine::disconnect`].
    ///
    /// Any unread reply of an earlier reserve is dropped. An unknown client
    /// is answered `INTERNAL_ERROR`.
    pub fn handle(&mut self, client: ClientId, request: Request, now: Instant) -> Handled {
        self.start(now);
        if self.next_deadline().is_some_and(|d| d <= now) {
            self.tick(now);
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return Handled::Reply(Response::InternalError);
        };
        c.reply = None;
        if c.waiting.is_some() {
            self.cancel_wait(client);
        }
        self.handling = Some(client);
        let handled = self.dispatch(client, request, now);
        self.handling = None;
        handled
    }

    /// Counts a put the codec refused before the engine saw it (beanstalkd
    /// counts it in `cmd-put`, and a put whose body lacks its `\r\n` uses
    /// up a job id), and gives the reply to send.
    pub fn put_refused(&mut self, client: ClientId, why: PutRefused) -> Response {
        self.count(Op::Put);
        match why {
            PutRefused::TooBig => Response::JobTooBig,
            PutRefused::ExpectedCrlf => {
                self.set_producer(client);
                self.next_id += 1;
                Response::ExpectedCrlf
            }
        }
    }

    /// The reply of a parked reserve, once it completed: `RESERVED`,
    /// `TIMED_OUT` or `DEADLINE_SOON`. `None` while it waits.
    pub fn poll_reply(&mut self, client: ClientId) -> Option<Response> {
        self.clients.get_mut(&client)?.reply.take()
    }

    /// Whether `client` has a parked reserve.
    pub fn is_waiting(&self, client: ClientId) -> bool {
        self.clients
            .get(&client)
            .is_some_and(|c| c.waiting.is_some())
    }

    /// Drops the parked reserve of `client` without a reply (a driver whose
    /// reserve was cancelled). A reply already made stays for
    /// [`Engine::poll_reply`].
    pub fn cancel_wait(&mut self, client: ClientId) {
        if self.is_waiting(client) {
            self.remove_waiting(client);
            self.connsched(client);
        }
    }

    /// `client` hung up (closed its side of the stream) while its reserve
    /// waits: as beanstalkd, the reserve is answered `TIMED_OUT` at once,
    /// its jobs stay reserved until it disconnects (a half-closed client
    /// still reads its replies). Nothing when it does not wait.
    pub fn hang_up(&mut self, client: ClientId) {
        if self.is_waiting(client) {
            self.remove_waiting(client);
            self.set_reply(client, Response::TimedOut);
            self.connsched(client);
        }
    }

    /// The clients whose parked reserve completed since the last call, each
    /// once, in the order they completed.
    pub fn take_woken(&mut self) -> std::vec::Drain<'_, ClientId> {
        self.woken.drain(..)
    }

    /// Everything due by `now`, in beanstalkd's `prottick` order: delayed
    /// jobs whose delay ran out become ready, paused tubes whose pause ran
    /// out resume, then each client due (in due order) has its expired
    /// reservations put back to ready (`job-timeouts`) and its parked
    /// reserve answered `DEADLINE_SOON` or `TIMED_OUT`. Jobs that become
    /// ready go to waiting clients at once.
    pub fn tick(&mut self, now: Instant) {
        self.start(now);
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.remove_from_state(id);
            self.enqueue(id, 0, now);
        }
        while let Some(&(at, t)) = self.paused.first() {
            if at > now {
                break;
            }
            self.paused.remove(&(at, t));
            let tube = self.tube_mut(t);
            tube.pause = Duration::ZERO;
            tube.unpause_at = None;
            self.process_queue(now);
        }
        while let Some(&(at, client)) = self.conn_heap.first() {
            if at > now {
                break;
            }
            self.conn_heap.remove(&(at, client));
            self.client_mut(client).tickat = None;
            self.conn_timeout(client, now);
        }
    }

    /// The earliest time [`Engine::tick`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.delayed.first().map(|e| e.0),
            self.paused.first().map(|e| e.0),
            self.conn_heap.first().map(|e| e.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The durable changes made since the last call, in order (empty when
    /// [`EngineConfig::record_changes`] is off).
    pub fn take_changes(&mut self) -> std::vec::Drain<'_, Change> {
        self.changes.drain(..)
    }

    /// Gives no id below `next_id` from now on: at recovery, ids of jobs
    /// deleted before the restart are never handed out again.
    pub fn reserve_ids_below(&mut self, next_id: u64) {
        self.next_id = self.next_id.max(next_id);
    }

    /// Rebuilds a job at recovery: ready, delayed until its time (ready if
    /// that passed) or buried, in its tube (made if need be). Later ids
    /// continue past the largest restored. A job with an id already present
    /// replaces it. Restoring never refuses for lack of memory: the job is
    /// already stored. Its counters (`reserves`, …) start at zero and its
    /// age at `now`.
    pub fn restore(&mut self, job: RestoredJob, now: Instant) {
        self.start(now);
        if self.jobs.contains_key(&job.id) {
            self.remove_from_state(job.id);
            self.free_job(job.id);
        }
        let tube = self.tube_find_or_make(&job.tube);
        let delay = match job.state {
            DurableState::Delayed(at) if at > now => {
                let left = at - now;
                u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                    .unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        self.insert_job(
            job.id,
            tube,
            job.priority,
            delay,
            job.ttr.max(1),
            job.body,
            now,
        );
        self.next_id = self.next_id.max(job.id.saturating_add(1));
        match job.state {
            DurableState::Buried => self.bury(job.id),
            DurableState::Delayed(at) if at > now => self.enqueue_at(job.id, Some(at), now),
            _ => self.enqueue(job.id, 0, now),
        }
    }

    /// Whether puts are refused with `DRAINING` (beanstalkd's SIGUSR1).
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    /// Whether puts are refused with `DRAINING`.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Updates the process and log figures `stats` reports.
    pub fn set_process_stats(&mut self, stats: ProcessStats) {
        self.process = stats;
    }

    /// Jobs in memory, in any state.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Bytes of jobs in memory as [`EngineConfig::max_memory`] counts them.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// Ready jobs, in all tubes.
    pub fn ready_count(&self) -> u64 {
        self.counters.ready
    }

    /// Reserved jobs, in all tubes.
    pub fn reserved_count(&self) -> u64 {
        self.counters.reserved
    }

    /// Delayed jobs, in all tubes.
    pub fn delayed_count(&self) -> usize {
        self.delayed.len()
    }

    /// Buried jobs, in all tubes.
    pub fn buried_count(&self) -> u64 {
        self.counters.buried
    }

    /// Clients with a parked reserve.
    pub fn waiting_count(&self) -> u64 {
        self.counters.waiting
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Tubes, as `list-tubes` names them.
    pub fn tube_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tube_list.iter().map(|&t| self.tube(t).name.as_str())
    }

    /// One job as a restart must see it (a reserved job is ready), if it exists.
    pub fn durable_job(&self, id: u64) -> Option<RestoredJob> {
        self.jobs.get(&id).map(|j| self.durable_view(j))
    }

    /// Every job as a restart must see it, in no particular order: what a
    /// compaction writes forward.
    pub fn durable_jobs(&self) -> impl Iterator<Item = RestoredJob> + '_ {
        self.jobs.values().map(|j| self.durable_view(j))
    }

    fn durable_view(&self, j: &Job) -> RestoredJob {
        RestoredJob {
            id: j.id,
            tube: self.tube(j.tube).name.clone(),
            priority: j.pri,
            ttr: j.ttr,
            state: self.durable_state(j),
            body: j.body.clone(),
        }
    }

    fn durable_state(&self, j: &Job) -> DurableState {
        match j.state {
            JobState::Ready | JobState::Reserved(_) => DurableState::Ready,
            JobState::Delayed => DurableState::Delayed(j.deadline),
            JobState::Buried => DurableState::Buried,
        }
    }

    // ---- requests ----

    fn dispatch(&mut self, client: ClientId, request: Request, now: Instant) -> Handled {
        let reply = match request {
            Request::Put {
                priority,
                delay,
                ttr,
                body,
            } => self.put(client, priority, delay, ttr, body, now),
            Request::Use(name) => {
                if !valid_tube(&name) {
                    return Handled::Reply(Response::BadFormat);
                }
                self.count(Op::Use);
                let t = self.tube_find_or_make(&name);
                let old = self.client(client).use_tube;
                self.tube_mut(t).using += 1;
                self.client_mut(client).use_tube = t;
                self.tube_mut(old).using -= 1;
                self.tube_release(old);
                Response::Using(name)
            }
            Request::Reserve => return self.reserve(client, Op::Reserve, None, now),
            Request::ReserveWithTimeout(secs) => {
                // Negative: for ever (beanstalkd's pending_timeout -1).
                let until = u64::try_from(secs)
                    .ok()
                    .and_then(|s| now.checked_add(Duration::from_secs(s)));
                return self.reserve(client, Op::ReserveWithTimeout, until, now);
            }
            Request::ReserveJob(id) => {
                self.count(Op::ReserveJob);
                match self.jobs.get(&id).map(|j| j.state) {
                    None | Some(JobState::Reserved(_)) => Response::NotFound,
                    Some(_) => {
                        self.remove_from_state(id);
                        self.set_worker(client);
                        self.reserve_job(client, id, now);
                        self.connsched(client);
                        self.reserved_reply(id)
                    }
                }
            }
            Request::Delete(id) => {
                self.count(Op::Delete);
                match self.jobs.get(&id).map(|j| j.state) {
                    None => Response::NotFound,
                    Some(JobState::Reserved(holder)) if holder != client => Response::NotFound,
                    Some(_) => {
                        self.remove_from_state(id);
                        let t = self.jobs[&id].tube;
                        self.tube_mut(t).deletes += 1;
                        self.record(Change::Delete { id });
                        self.free_job(id);
                        Response::Deleted
                    }
                }
            }
            Request::Release {
                id,
                priority,
                delay,
            } => {
                self.count(Op::Release);
                if !self.reserved_by(client, id) {
                    return Handled::Reply(Response::NotFound);
                }
                self.remove_from_state(id);
                let job = self.job_mut(id);
                job.pri = priority;
                job.delay = delay;
                job.releases += 1;
                self.enqueue(id, delay, now);
                self.record_state(id);
                Response::Released
            }
            Request::Bury { id, priority } => {
                self.count(Op::Bury);
                if !self.reserved_by(client, id) {
                    return Handled::Reply(Response::NotFound);
                }
                self.remove_from_state(id);
                self.job_mut(id).pri = priority;
                self.bury(id);
                self.record_state(id);
                Response::Buried
            }
            Request::Touch(id) => {
                self.count(Op::Touch);
                if !self.reserved_by(client, id) {
                    return Handled::Reply(Response::NotFound);
                }
                let job = &self.jobs[&id];
                let old = job.deadline;
                let deadline = now + secs(job.ttr);
                self.job_mut(id).deadline = deadline;
                let c = self.client_mut(client);
                c.reserved.remove(&(old, id));
                c.reserved.insert((deadline, id));
                self.connsched(client);
                Response::Touched
            }
            Request::Watch(name) => {
                if !valid_tube(&name) {
                    return Handled::Reply(Response::BadFormat);
                }
                self.count(Op::Watch);
                let t = self.tube_find_or_make(&name);
                if !self.client(client).watch.contains(&t) {
                    self.client_mut(client).watch.push(t);
                    self.tube_mut(t).watching += 1;
                }
                Response::Watching(self.client(client).watch.len() as u64)
            }
            Request::Ignore(name) => {
                if !valid_tube(&name) {
                    return Handled::Reply(Response::BadFormat);
                }
                self.count(Op::Ignore);
                let found = self
                    .tube_index
                    .get(&name)
                    .copied()
                    .filter(|t| self.client(client).watch.contains(t));
                if let Some(t) = found {
                    if self.client(client).watch.len() < 2 {
                        return Handled::Reply(Response::NotIgnored);
                    }
                    ms_remove(&mut self.client_mut(client).watch, &t);
                    self.tube_mut(t).watching -= 1;
                    self.tube_release(t);
                }
                Response::Watching(self.client(client).watch.len() as u64)
            }
            Request::Peek(id) => {
                self.count(Op::Peek);
                self.found(Some(id))
            }
            Request::PeekReady => {
                self.count(Op::PeekReady);
                let t = self.client(client).use_tube;
                let id = self.tube(t).ready.first().map(|e| e.1);
                self.found(id)
            }
            Request::PeekDelayed => {
                self.count(Op::PeekDelayed);
                let t = self.client(client).use_tube;
                let id = self.tube(t).delayed.first().map(|e| e.1);
                self.found(id)
            }
            Request::PeekBuried => {
                self.count(Op::PeekBuried);
                let t = self.client(client).use_tube;
                let id = self.tube(t).buried.first().map(|e| e.1);
                self.found(id)
            }
            Request::Kick(bound) => {
                self.count(Op::Kick);
                let t = self.client(client).use_tube;
                let buried = !self.tube(t).buried.is_empty();
                let mut kicked = 0u64;
                while kicked < u64::from(bound) {
                    let tube = self.tube(t);
                    let next = if buried {
                        tube.buried.first().map(|e| e.1)
                    } else {
                        tube.delayed.first().map(|e| e.1)
                    };
                    let Some(id) = next else { break };
                    self.kick(id, now);
                    kicked += 1;
                }
                Response::Kicked(kicked)
            }
            Request::KickJob(id) => {
                self.count(Op::KickJob);
                match self.jobs.get(&id).map(|j| j.state) {
                    Some(JobState::Buried | JobState::Delayed) => {
                        self.kick(id, now);
                        Response::KickedJob
                    }
                    _ => Response::NotFound,
                }
            }
            Request::StatsJob(id) => {
                self.count(Op::StatsJob);
                match self.jobs.get(&id) {
                    None => Response::NotFound,
                    Some(job) => Response::Ok(yaml::job_stats(self, job, now)),
                }
            }
            Request::StatsTube(name) => {
                if !valid_tube(&name) {
                    return Handled::Reply(Response::BadFormat);
                }
                self.count(Op::StatsTube);
                match self.tube_index.get(&name) {
                    None => Response::NotFound,
                    Some(&t) => Response::Ok(yaml::tube_stats(self.tube(t), now)),
                }
            }
            Request::Stats => {
                self.count(Op::Stats);
                Response::Ok(yaml::stats(self, now))
            }
            Request::ListTubes => {
                self.count(Op::ListTubes);
                Response::Ok(yaml::list(
                    self.tube_list.iter().map(|&t| self.tube(t).name.as_str()),
                ))
            }
            Request::ListTubeUsed => {
                self.count(Op::ListTubeUsed);
                Response::Using(self.tube(self.client(client).use_tube).name.clone())
            }
            Request::ListTubesWatched => {
                self.count(Op::ListTubesWatched);
                Response::Ok(yaml::list(
                    self.client(client)
                        .watch
                        .iter()
                        .map(|&t| self.tube(t).name.as_str()),
                ))
            }
            Request::PauseTube { tube, delay } => {
                self.count(Op::PauseTube);
                if !valid_tube(&tube) {
                    return Handled::Reply(Response::BadFormat);
                }
                let Some(&t) = self.tube_index.get(&tube) else {
                    return Handled::Reply(Response::NotFound);
                };
                // beanstalkd pauses for 1 ns when asked for 0 (so waiting
                // clients wake at once): `pause-tube t 0` resumes a tube.
                let pause = if delay == 0 {
                    Duration::from_nanos(1)
                } else {
                    secs(delay)
                };
                if let Some(old) = self.tube(t).unpause_at {
                    self.paused.remove(&(old, t));
                }
                let unpause_at = now + pause;
                let tube = self.tube_mut(t);
                tube.pause = pause;
                tube.unpause_at = Some(unpause_at);
                tube.pauses += 1;
                self.paused.insert((unpause_at, t));
                Response::Paused
            }
            Request::Quit => return Handled::Close,
        };
        Handled::Reply(reply)
    }

    fn put(
        &mut self,
        client: ClientId,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
        now: Instant,
    ) -> Response {
        self.count(Op::Put);
        if body.len() > self.config.max_job_size as usize {
            return Response::JobTooBig;
        }
        self.set_producer(client);
        let cost = body.len() as u64 + JOB_OVERHEAD;
        if self.jobs.len() as u64 >= self.config.max_jobs
            || self.memory.saturating_add(cost) > self.config.max_memory
        {
            return Response::OutOfMemory;
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.draining {
            return Response::Draining;
        }
        let t = self.client(client).use_tube;
        self.insert_job(id, t, pri, delay, ttr.max(1), body, now);
        self.counters.total_jobs += 1;
        self.tube_mut(t).total_jobs += 1;
        if self.config.record_changes {
            let job = &self.jobs[&id];
            let state = if delay > 0 {
                DurableState::Delayed(now + secs(delay))
            } else {
                DurableState::Ready
            };
            self.changes.push(Change::Put {
                id,
                tube: self.tube(t).name.clone(),
                priority: pri,
                ttr: job.ttr,
                state,
                body: job.body.clone(),
            });
        }
        self.enqueue(id, delay, now);
        Response::Inserted(id)
    }

    fn reserve(
        &mut self,
        client: ClientId,
        op: Op,
        until: Option<Instant>,
        now: Instant,
    ) -> Handled {
        self.count(op);
        self.set_worker(client);
        if self.deadline_soon(client, now) && !self.conn_ready(client) {
            return Handled::Reply(Response::DeadlineSoon);
        }
        // wait_for_job
        self.client_mut(client).waiting = Some(Wait { until });
        self.counters.waiting += 1;
        for i in 0..self.client(client).watch.len() {
            let t = self.client(client).watch[i];
            self.tube_mut(t).waiting.push(client);
            self.waiting_tubes.insert(t);
        }
        self.connsched(client);
        self.process_queue(now);
        if self.is_waiting(client) && self.client(client).tickat.is_some_and(|at| at <= now) {
            // beanstalkd answers at its next tick, which is due at once.
            if let Some(at) = self.client_mut(client).tickat.take() {
                self.conn_heap.remove(&(at, client));
            }
            self.conn_timeout(client, now);
        }
        match self.client_mut(client).reply.take() {
            Some(reply) => Handled::Reply(reply),
            None => Handled::Wait,
        }
    }

    fn found(&self, id: Option<u64>) -> Response {
        match id.and_then(|id| self.jobs.get(&id)) {
            Some(job) => Response::Found {
                id: job.id,
                body: job.body.clone(),
            },
            None => Response::NotFound,
        }
    }

    fn reserved_reply(&self, id: u64) -> Response {
        Response::Reserved {
            id,
            body: self.jobs[&id].body.clone(),
        }
    }

    fn kick(&mut self, id: u64, now: Instant) {
        self.remove_from_state(id);
        self.job_mut(id).kicks += 1;
        self.enqueue(id, 0, now);
        self.record_state(id);
    }

    // ---- beanstalkd's internals ----

    fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    fn count(&mut self, op: Op) {
        self.counters.ops[op as usize] += 1;
    }

    fn record(&mut self, change: Change) {
        if self.config.record_changes {
            self.changes.push(change);
        }
    }

    fn record_state(&mut self, id: u64) {
        if self.config.record_changes {
            let job = &self.jobs[&id];
            let change = Change::State {
                id,
                priority: job.pri,
                state: self.durable_state(job),
            };
            self.changes.push(change);
        }
    }

    fn set_producer(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get_mut(&client)
            && !c.producer
        {
            c.producer = true;
            self.counters.producers += 1;
        }
    }

    fn set_worker(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get_mut(&client)
            && !c.worker
        {
            c.worker = true;
            self.counters.workers += 1;
        }
    }

    fn client(&self, client: ClientId) -> &Client {
        &self.clients[&client]
    }

    fn client_mut(&mut self, client: ClientId) -> &mut Client {
        self.clients.get_mut(&client).expect("a connected client")
    }

    pub(super) fn tube(&self, t: usize) -> &Tube {
        self.tubes[t].as_ref().expect("a live tube")
    }

    fn tube_mut(&mut self, t: usize) -> &mut Tube {
        self.tubes[t].as_mut().expect("a live tube")
    }

    fn job_mut(&mut self, id: u64) -> &mut Job {
        self.jobs.get_mut(&id).expect("a live job")
    }

    fn tube_find_or_make(&mut self, name: &str) -> usize {
        if let Some(&t) = self.tube_index.get(name) {
            return t;
        }
        let tube = Tube {
            name: name.to_owned(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            buried: BTreeSet::new(),
            waiting: Vec::new(),
            waiting_last: 0,
            jobs: 0,
            using: 0,
            watching: 0,
            pinned: false,
            urgent: 0,
            reserved: 0,
            total_jobs: 0,
            deletes: 0,
            pauses: 0,
            pause: Duration::ZERO,
            unpause_at: None,
        };
        let t = match self.free_tubes.pop() {
            Some(t) => {
                self.tubes[t] = Some(tube);
                t
            }
            None => {
                self.tubes.push(Some(tube));
                self.tubes.len() - 1
            }
        };
        self.tube_index.insert(name.to_owned(), t);
        self.tube_list.push(t);
        t
    }

    /// beanstalkd's `tube_dref` reaching zero: a tube nothing holds (no
    /// job, user, watcher) is freed.
    fn tube_release(&mut self, t: usize) {
        let tube = self.tube(t);
        if tube.pinned || tube.jobs > 0 || tube.using > 0 || tube.watching > 0 {
            return;
        }
        let Some(tube) = self.tubes[t].take() else {
            return;
        };
        if let Some(at) = tube.unpause_at {
            self.paused.remove(&(at, t));
        }
        self.waiting_tubes.remove(&t);
        self.tube_index.remove(&tube.name);
        ms_remove(&mut self.tube_list, &t);
        self.free_tubes.push(t);
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_job(
        &mut self,
        id: u64,
        tube: usize,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
        now: Instant,
    ) {
        self.memory += body.len() as u64 + JOB_OVERHEAD;
        self.tube_mut(tube).jobs += 1;
        self.jobs.insert(
            id,
            Job {
                id,
                tube,
                pri,
                delay,
                ttr,
                body,
                // A state the job leaves at once: enqueue or bury places it.
                state: JobState::Buried,
                deadline: now,
                created: now,
                seq: 0,
                reserves: 0,
                timeouts: 0,
                releases: 0,
                buries: 0,
                kicks: 0,
            },
        );
    }

    fn free_job(&mut self, id: u64) {
        if let Some(job) = self.jobs.remove(&id) {
            self.memory -= job.body.len() as u64 + JOB_OVERHEAD;
            self.tube_mut(job.tube).jobs -= 1;
            self.tube_release(job.tube);
        }
    }

    /// Takes a job out of the structures of its state (the job itself stays).
    fn remove_from_state(&mut self, id: u64) {
        let job = &self.jobs[&id];
        let (t, pri, deadline, seq, state) = (job.tube, job.pri, job.deadline, job.seq, job.state);
        match state {
            JobState::Ready => {
                let tube = self.tube_mut(t);
                tube.ready.remove(&(pri, id));
                if pri < URGENT_THRESHOLD {
                    tube.urgent -= 1;
                    self.counters.urgent -= 1;
                }
                self.counters.ready -= 1;
            }
            JobState::Delayed => {
                self.tube_mut(t).delayed.remove(&(deadline, id));
                self.delayed.remove(&(deadline, id));
            }
            JobState::Buried => {
                if self.tube_mut(t).buried.remove(&(seq, id)) {
                    self.counters.buried -= 1;
                }
            }
            JobState::Reserved(_) => self.unreserve(id),
        }
    }

    /// Takes a reserved job from its reserver (counters included).
    fn unreserve(&mut self, id: u64) {
        let job = &self.jobs[&id];
        let JobState::Reserved(client) = job.state else {
            return;
        };
        let (t, deadline) = (job.tube, job.deadline);
        self.client_mut(client).reserved.remove(&(deadline, id));
        self.tube_mut(t).reserved -= 1;
        self.counters.reserved -= 1;
        self.job_mut(id).state = JobState::Buried;
        self.connsched(client);
    }

    /// beanstalkd's `enqueue_job`: ready (then handed to a waiting client
    /// if one wants it) or delayed for `delay` seconds.
    fn enqueue(&mut self, id: u64, delay: u32, now: Instant) {
        let at = (delay > 0).then(|| now + secs(delay));
        self.enqueue_at(id, at, now);
    }

    fn enqueue_at(&mut self, id: u64, delayed_until: Option<Instant>, now: Instant) {
        let job = self.job_mut(id);
        let (t, pri) = (job.tube, job.pri);
        match delayed_until {
            Some(at) => {
                job.state = JobState::Delayed;
                job.deadline = at;
                self.tube_mut(t).delayed.insert((at, id));
                self.delayed.insert((at, id));
            }
            None => {
                job.state = JobState::Ready;
                let tube = self.tube_mut(t);
                tube.ready.insert((pri, id));
                if pri < URGENT_THRESHOLD {
                    tube.urgent += 1;
                    self.counters.urgent += 1;
                }
                self.counters.ready += 1;
                self.process_queue(now);
            }
        }
    }

    fn bury(&mut self, id: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = self.job_mut(id);
        job.state = JobState::Buried;
        job.seq = seq;
        job.buries += 1;
        let t = job.tube;
        self.tube_mut(t).buried.insert((seq, id));
        self.counters.buried += 1;
    }

    fn reserved_by(&self, client: ClientId, id: u64) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|j| j.state == JobState::Reserved(client))
    }

    /// beanstalkd's `conn_reserve_job` (the job is out of its old state).
    fn reserve_job(&mut self, client: ClientId, id: u64, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = self.job_mut(id);
        let deadline = now + secs(job.ttr);
        job.state = JobState::Reserved(client);
        job.deadline = deadline;
        job.seq = seq;
        job.reserves += 1;
        let t = job.tube;
        self.tube_mut(t).reserved += 1;
        self.counters.reserved += 1;
        self.client_mut(client).reserved.insert((deadline, id));
    }

    fn deadline_soon(&self, client: ClientId, now: Instant) -> bool {
        self.client(client)
            .reserved
            .first()
            .is_some_and(|&(deadline, _)| {
                now.checked_add(SAFETY_MARGIN).is_none_or(|n| n >= deadline)
            })
    }

    /// beanstalkd's `conn_ready`: a watched tube has a ready job (paused or not).
    fn conn_ready(&self, client: ClientId) -> bool {
        self.client(client)
            .watch
            .iter()
            .any(|&t| !self.tube(t).ready.is_empty())
    }

    fn remove_waiting(&mut self, client: ClientId) {
        if self.client_mut(client).waiting.take().is_none() {
            return;
        }
        self.counters.waiting -= 1;
        for i in 0..self.client(client).watch.len() {
            let t = self.client(client).watch[i];
            let tube = self.tube_mut(t);
            ms_remove(&mut tube.waiting, &client);
            if tube.waiting.is_empty() {
                self.waiting_tubes.remove(&t);
            }
        }
    }

    /// beanstalkd's `connsched`: the client's place in the timer heap.
    fn connsched(&mut self, client: ClientId) {
        let c = self.client(client);
        let margin = if c.waiting.is_some() {
            SAFETY_MARGIN
        } else {
            Duration::ZERO
        };
        let mut at = c
            .reserved
            .first()
            .map(|&(d, _)| d.checked_sub(margin).unwrap_or(d));
        if let Some(Wait { until: Some(until) }) = c.waiting {
            at = Some(at.map_or(until, |a| a.min(until)));
        }
        if at == c.tickat {
            return;
        }
        if let Some(old) = c.tickat {
            self.conn_heap.remove(&(old, client));
        }
        if let Some(new) = at {
            self.conn_heap.insert((new, client));
        }
        self.client_mut(client).tickat = at;
    }

    /// beanstalkd's `conn_timeout`.
    fn conn_timeout(&mut self, client: ClientId, now: Instant) {
        let waiting = self.is_waiting(client);
        let should_timeout = waiting && self.deadline_soon(client, now);
        while let Some(&(deadline, id)) = self.client(client).reserved.first() {
            if deadline > now {
                break;
            }
            self.counters.timeouts += 1;
            self.job_mut(id).timeouts += 1;
            self.unreserve(id);
            self.enqueue(id, 0, now);
        }
        if should_timeout {
            if self.is_waiting(client) {
                self.remove_waiting(client);
                self.set_reply(client, Response::DeadlineSoon);
            }
        } else if self
            .client(client)
            .waiting
            .is_some_and(|w| w.until.is_some())
        {
            self.remove_waiting(client);
            self.set_reply(client, Response::TimedOut);
        }
        self.connsched(client);
    }

    fn set_reply(&mut self, client: ClientId, reply: Response) {
        self.client_mut(client).reply = Some(reply);
        if self.handling != Some(client) {
            self.woken.push(client);
        }
    }

    /// beanstalkd's `process_queue`: while a tube with waiting clients has
    /// a ready job (and is not paused), the most urgent such job (lowest
    /// priority, then lowest id) goes to the next waiting client of its tube.
    fn process_queue(&mut self, now: Instant) {
        loop {
            let mut best: Option<(u32, u64, usize)> = None;
            for &t in &self.waiting_tubes {
                let Some(tube) = self.tubes[t].as_mut() else {
                    continue;
                };
                if let Some(at) = tube.unpause_at {
                    if at > now {
                        continue;
                    }
                    tube.pause = Duration::ZERO;
                    tube.unpause_at = None;
                    self.paused.remove(&(at, t));
                }
                if let Some(&(pri, id)) = tube.ready.first()
                    && best.is_none_or(|(bp, bid, _)| (pri, id) < (bp, bid))
                {
                    best = Some((pri, id, t));
                }
            }
            let Some((_, id, t)) = best else { return };
            self.remove_from_state(id);
            let tube = self.tube_mut(t);
            let Some(client) = ms_take(&mut tube.waiting, &mut tube.waiting_last) else {
                return;
            };
            self.remove_waiting(client);
            self.reserve_job(client, id, now);
            let reply = self.reserved_reply(id);
            self.set_reply(client, reply);
            self.connsched(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::HostInfo;

    struct World {
        e: Engine,
        now: Instant,
    }

    fn world() -> World {
        World {
            e: Engine::new(EngineConfig::default()),
            now: Instant::now(),
        }
    }

    impl World {
        fn conn(&mut self) -> ClientId {
            self.e.connect(self.now)
        }

        fn req(&mut self, c: ClientId, r: Request) -> Response {
            match self.e.handle(c, r, self.now) {
                Handled::Reply(r) => r,
                other => panic!("expected a reply, got {other:?}"),
            }
        }

        fn put(&mut self, c: ClientId, pri: u32, delay: u32, ttr: u32, body: &'static str) -> u64 {
            match self.req(
                c,
                Request::Put {
                    priority: pri,
                    delay,
                    ttr,
                    body: Bytes::from_static(body.as_bytes()),
                },
            ) {
                Response::Inserted(id) => id,
                other => panic!("put: {other:?}"),
            }
        }

        fn reserved(&mut self, c: ClientId, r: Request) -> u64 {
            match self.req(c, r) {
                Response::Reserved { id, .. } => id,
                other => panic!("expected RESERVED, got {other:?}"),
            }
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.e.tick(self.now);
        }

        fn woken(&mut self) -> Vec<ClientId> {
            self.e.take_woken().collect()
        }

        fn stat(&mut self, c: ClientId, r: Request, key: &str) -> String {
            let Response::Ok(body) = self.req(c, r) else {
                panic!("no OK")
            };
            let text = String::from_utf8(body.to_vec()).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {key} in {text}"))
        }

        fn job_stat(&mut self, c: ClientId, id: u64, key: &str) -> String {
            self.stat(c, Request::StatsJob(id), key)
        }
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn put_reserve_delete_ids_count_up() {
        let mut w = world();
        let c = w.conn();
        assert_eq!(w.put(c, 1, 0, 10, "a"), 1);
        assert_eq!(w.put(c, 1, 0, 10, "b"), 2);
        assert_eq!(
            w.req(c, Request::Reserve),
            Response::Reserved {
                id: 1,
                body: Bytes::from_static(b"a")
            }
        );
        assert_eq!(w.req(c, Request::Delete(1)), Response::Deleted);
        assert_eq!(w.req(c, Request::Delete(1)), Response::NotFound);
        assert_eq!(w.e.job_count(), 1);
    }

    #[test]
    fn ready_jobs_go_by_priority_then_id_across_watched_tubes() {
        let mut w = world();
        let c = w.conn();
        w.req(c, Request::Use(s("a")));
        let a5 = w.put(c, 5, 0, 10, "a5");
        let a1 = w.put(c, 1, 0, 10, "a1");
        w.req(c, Request::Use(s("b")));
        let b1 = w.put(c, 1, 0, 10, "b1");
        let b0 = w.put(c, 0, 0, 10, "b0");
        let worker = w.conn();
        assert_eq!(w.req(worker, Request::Watch(s("a"))), Response::Watching(2));
        assert_eq!(w.req(worker, Request::Watch(s("b"))), Response::Watching(3));
        let order: Vec<u64> = (0..4)
            .map(|_| w.reserved(worker, Request::ReserveWithTimeout(0)))
            .collect();
        assert_eq!(order, vec![b0, a1, b1, a5]);
        assert_eq!(
            w.req(worker, Request::ReserveWithTimeout(0)),
            Response::TimedOut
        );
    }

    #[test]
    fn delayed_jobs_become_ready_in_deadline_order() {
        let mut w = world();
        let c = w.conn();
        let late = w.put(c, 0, 3, 10, "late");
        let early = w.put(c, 9, 1, 10, "early");
        assert_eq!(w.e.next_deadline(), Some(w.now + Duration::from_secs(1)));
        assert_eq!(
            w.req(c, Request::PeekDelayed),
            Response::Found {
                id: early,
                body: Bytes::from_static(b"early")
            }
        );
        assert_eq!(w.req(c, Request::PeekReady), Response::NotFound);
        assert_eq!(w.job_stat(c, late, "state"), "delayed");
        assert_eq!(w.job_stat(c, late, "time-left"), "3");
        w.advance(Duration::from_millis(1500));
        assert_eq!(w.job_stat(c, late, "time-left"), "1");
        assert_eq!(w.reserved(c, Request::ReserveWithTimeout(0)), early);
        assert_eq!(w.req(c, Request::ReserveWithTimeout(0)), Response::TimedOut);
        w.advance(Duration::from_secs(2));
        assert_eq!(w.reserved(c, Request::ReserveWithTimeout(0)), late);
    }

    #[test]
    fn a_parked_reserve_gets_the_next_put_and_waiters_are_served_in_arrival_order() {
        let mut w = world();
        let p = w.conn();
        let w1 = w.conn();
        let w2 = w.conn();
        assert_eq!(w.e.handle(w1, Request::Reserve, w.now), Handled::Wait);
        assert_eq!(w.e.handle(w2, Request::Reserve, w.now), Handled::Wait);
        assert_eq!(w.stat(p, Request::Stats, "current-waiting"), "2");
        assert_eq!(
            w.stat(p, Request::StatsTube(s("default")), "current-waiting"),
            "2"
        );
        let j1 = w.put(p, 0, 0, 10, "x");
        assert_eq!(w.woken(), vec![w1]);
        assert_eq!(
            w.e.poll_reply(w1),
            Some(Response::Reserved {
                id: j1,
                body: Bytes::from_static(b"x")
            })
        );
        assert_eq!(w.e.poll_reply(w1), None);
        let j2 = w.put(p, 0, 0, 10, "y");
        assert_eq!(w.woken(), vec![w2]);
        assert!(matches!(w.e.poll_reply(w2), Some(Response::Reserved { id, .. }) if id == j2));
        assert_eq!(w.stat(p, Request::Stats, "current-waiting"), "0");
    }

    #[test]
    fn a_client_hanging_up_while_it_waits_is_timed_out_and_no_job_goes_to_it() {
        let mut w = world();
        let c = w.conn();
        let p = w.conn();
        assert_eq!(w.e.handle(c, Request::Reserve, w.now), Handled::Wait);
        w.e.hang_up(p); // not waiting: nothing
        assert!(w.woken().is_empty());
        w.e.hang_up(c);
        assert_eq!(w.woken(), vec![c]);
        assert_eq!(w.e.poll_reply(c), Some(Response::TimedOut));
        assert_eq!(w.stat(p, Request::Stats, "current-waiting"), "0");
        let id = w.put(p, 0, 0, 10, "x");
        assert!(w.woken().is_empty());
        assert!(
            matches!(w.req(p, Request::PeekReady), Response::Found { id: got, .. } if got == id)
        );
    }

    #[test]
    fn reserve_with_timeout_times_out_and_negative_waits_for_ever() {
        let mut w = world();
        let c = w.conn();
        let d = w.conn();
        assert_eq!(w.req(c, Request::ReserveWithTimeout(0)), Response::TimedOut);
        assert_eq!(
            w.e.handle(c, Request::ReserveWithTimeout(2), w.now),
            Handled::Wait
        );
        assert_eq!(
            w.e.handle(d, Request::ReserveWithTimeout(-1), w.now),
            Handled::Wait
        );
        assert_eq!(w.e.next_deadline(), Some(w.now + Duration::from_secs(2)));
        w.advance(Duration::from_millis(1999));
        assert!(w.woken().is_empty());
        w.advance(Duration::from_millis(1));
        assert_eq!(w.woken(), vec![c]);
        assert_eq!(w.e.poll_reply(c), Some(Response::TimedOut));
        assert_eq!(w.e.next_deadline(), None);
        w.advance(Duration::from_secs(3600));
        assert!(w.e.is_waiting(d));
        let id = w.put(c, 0, 0, 1, "late");
        assert_eq!(w.woken(), vec![d]);
        assert!(matches!(w.e.poll_reply(d), Some(Response::Reserved { id: got, .. }) if got == id));
    }

    #[test]
    fn ttr_expiry_puts_the_job_back_and_counts_a_timeout() {
        let mut w = world();
        let c = w.conn();
        let id = w.put(c, 0, 0, 0, "x");
        assert_eq!(w.job_stat(c, id, "ttr"), "1", "ttr 0 is raised to 1");
        w.reserved(c, Request::Reserve);
        assert_eq!(w.job_stat(c, id, "time-left"), "1");
        w.advance(Duration::from_millis(999));
        assert_eq!(w.job_stat(c, id, "state"), "reserved");
        w.advance(Duration::from_millis(1));
        assert_eq!(w.job_stat(c, id, "state"), "ready");
        assert_eq!(w.job_stat(c, id, "timeouts"), "1");
        assert_eq!(w.stat(c, Request::Stats, "job-timeouts"), "1");
        assert_eq!(w.req(c, Request::Delete(id)), Response::Deleted);
    }

    #[test]
    fn deadline_soon_at_reserve_and_while_waiting() {
        let mut w = world();
        let c = w.conn();
        let id = w.put(c, 0, 0, 3, "x");
        w.reserved(c, Request::Reserve);
        // Waiting: DEADLINE_SOON when the held job enters its last second.
        assert_eq!(w.e.handle(c, Request::Reserve, w.now), Handled::Wait);
        assert_eq!(w.e.next_deadline(), Some(w.now + Duration::from_secs(2)));
        w.advance(Duration::from_secs(2));
        assert_eq!(w.woken(), vec![c]);
        assert_eq!(w.e.poll_reply(c), Some(Response::DeadlineSoon));
        // Within the margin: answered at once.
        assert_eq!(w.req(c, Request::Reserve), Response::DeadlineSoon);
        assert_eq!(
            w.req(c, Request::ReserveWithTimeout(5)),
            Response::DeadlineSoon
        );
        // Touch starts the TTR again.
        assert_eq!(w.req(c, Request::Touch(id)), Response::Touched);
        assert_eq!(w.req(c, Request::ReserveWithTimeout(0)), Response::TimedOut);
        // A ready job in a watched tube: reserved despite the deadline.
        w.advance(Duration::from_millis(2500));
        let other = w.put(c, 0, 0, 3, "y");
        assert_eq!(w.reserved(c, Request::Reserve), other);
    }

    #[test]
    fn release_bury_touch_only_by_the_reserver() {
        let mut w = world();
        let a = w.conn();
        let b = w.conn();
        let id = w.put(a, 5, 0, 10, "x");
        assert_eq!(
            w.req(
                a,
                Request::Release {
                    id,
                    priority: 1,
                    delay: 0
                }
            ),
            Response::NotFound
        );
        assert_eq!(
            w.req(a, Request::Bury { id, priority: 1 }),
            Response::NotFound
        );
        assert_eq!(w.req(a, Request::Touch(id)), Response::NotFound);
        w.reserved(a, Request::Reserve);
        for r in [
            Request::Release {
                id,
                priority: 1,
                delay: 0,
            },
            Request::Bury { id, priority: 1 },
            Request::Touch(id),
            Request::Delete(id),
        ] {
            assert_eq!(w.req(b, r), Response::NotFound);
        }
        assert_eq!(
            w.req(
                a,
                Request::Release {
                    id,
                    priority: 7,
                    delay: 2
                }
            ),
            Response::Released
        );
        assert_eq!(w.job_stat(a, id, "state"), "delayed");
        assert_eq!(w.job_stat(a, id, "pri"), "7");
        assert_eq!(w.job_stat(a, id, "delay"), "2");
        assert_eq!(w.job_stat(a, id, "releases"), "1");
        w.advance(Duration::from_secs(2));
        w.reserved(b, Request::Reserve);
        assert_eq!(
            w.req(b, Request::Bury { id, priority: 3 }),
            Response::Buried
        );
        assert_eq!(w.job_stat(a, id, "state"), "buried");
        assert_eq!(w.job_stat(a, id, "buries"), "1");
        assert_eq!(
            w.req(b, Request::Bury { id, priority: 3 }),
            Response::NotFound
        );
        // delete works on a buried job of anyone
        assert_eq!(w.req(a, Request::Delete(id)), Response::Deleted);
    }

    #[test]
    fn delete_works_on_ready_delayed_and_buried_jobs_of_anyone() {
        let mut w = world();
        let a = w.conn();
        let b = w.conn();
        let ready = w.put(a, 0, 0, 10, "r");
        let delayed = w.put(a, 0, 5, 10, "d");
        assert_eq!(w.req(b, Request::Delete(ready)), Response::Deleted);
        assert_eq!(w.req(b, Request::Delete(delayed)), Response::Deleted);
        assert_eq!(
            w.stat(a, Request::StatsTube(s("default")), "cmd-delete"),
            "2"
        );
        assert_eq!(w.e.delayed_count(), 0);
        assert_eq!(w.e.next_deadline(), None);
    }

    #[test]
    fn kick_takes_buried_first_then_delayed_in_the_used_tube() {
        let mut w = world();
        let c = w.conn();
        let d1 = w.put(c, 0, 10, 10, "d1");
        let d2 = w.put(c, 0, 5, 10, "d2");
        let b1 = w.put(c, 0, 0, 10, "b1");
        let b2 = w.put(c, 0, 0, 10, "b2");
        for id in [b1, b2] {
            assert_eq!(w.reserved(c, Request::ReserveJob(id)), id);
            assert_eq!(
                w.req(c, Request::Bury { id, priority: 0 }),
                Response::Buried
            );
        }
        assert_eq!(
            w.req(c, Request::PeekBuried),
            Response::Found {
                id: b1,
                body: Bytes::from_static(b"b1")
            }
        );
        assert_eq!(w.req(c, Request::Kick(1)), Response::Kicked(1));
        assert_eq!(w.job_stat(c, b1, "state"), "ready");
        assert_eq!(w.job_stat(c, b1, "kicks"), "1");
        assert_eq!(w.req(c, Request::Kick(10)), Response::Kicked(1));
        assert_eq!(w.req(c, Request::Kick(1)), Response::Kicked(1));
        assert_eq!(w.job_stat(c, d2, "state"), "ready", "soonest delayed first");
        assert_eq!(w.job_stat(c, d1, "state"), "delayed");
        assert_eq!(w.req(c, Request::Kick(5)), Response::Kicked(1));
        assert_eq!(w.req(c, Request::Kick(5)), Response::Kicked(0));
        // another tube's jobs are not kicked
        w.req(c, Request::Use(s("other")));
        assert_eq!(w.req(c, Request::Kick(5)), Response::Kicked(0));
    }

    #[test]
    fn kick_job_on_buried_or_delayed_only() {
        let mut w = world();
        let c = w.conn();
        let ready = w.put(c, 0, 0, 10, "r");
        let delayed = w.put(c, 0, 10, 10, "d");
        assert_eq!(w.req(c, Request::KickJob(ready)), Response::NotFound);
        assert_eq!(w.req(c, Request::KickJob(99)), Response::NotFound);
        assert_eq!(w.req(c, Request::KickJob(delayed)), Response::KickedJob);
        assert_eq!(w.job_stat(c, delayed, "state"), "ready");
        w.reserved(c, Request::ReserveJob(ready));
        assert_eq!(w.req(c, Request::KickJob(ready)), Response::NotFound);
        w.req(
            c,
            Request::Bury {
                id: ready,
                priority: 0,
            },
        );
        // kick-job works from any used tube
        w.req(c, Request::Use(s("elsewhere")));
        assert_eq!(w.req(c, Request::KickJob(ready)), Response::KickedJob);
    }

    #[test]
    fn reserve_job_takes_any_unreserved_job() {
        let mut w = world();
        let a = w.conn();
        let b = w.conn();
        let id = w.put(a, 0, 30, 10, "d");
        assert_eq!(w.reserved(a, Request::ReserveJob(id)), id);
        assert_eq!(w.req(b, Request::ReserveJob(id)), Response::NotFound);
        assert_eq!(w.req(b, Request::ReserveJob(77)), Response::NotFound);
        assert_eq!(w.e.delayed_count(), 0);
        assert_eq!(w.e.reserved_count(), 1);
        assert_eq!(w.stat(a, Request::Stats, "current-workers"), "1");
    }

    #[test]
    fn peeks_look_in_the_used_tube_and_peek_finds_any_job() {
        let mut w = world();
        let c = w.conn();
        let id = w.put(c, 0, 0, 10, "x");
        w.req(c, Request::Use(s("t")));
        assert_eq!(w.req(c, Request::PeekReady), Response::NotFound);
        assert_eq!(w.req(c, Request::PeekDelayed), Response::NotFound);
        assert_eq!(w.req(c, Request::PeekBuried), Response::NotFound);
        assert!(matches!(
            w.req(c, Request::Peek(id)),
            Response::Found { .. }
        ));
        w.reserved(c, Request::Reserve);
        assert!(matches!(
            w.req(c, Request::Peek(id)),
            Response::Found { .. }
        ));
        assert_eq!(w.req(c, Request::Peek(id + 1)), Response::NotFound);
    }

    #[test]
    fn use_watch_ignore_and_tubes_vanish_when_unused() {
        let mut w = world();
        let c = w.conn();
        assert_eq!(w.req(c, Request::Use(s("u"))), Response::Using(s("u")));
        assert_eq!(w.req(c, Request::ListTubeUsed), Response::Using(s("u")));
        assert_eq!(w.req(c, Request::Watch(s("w"))), Response::Watching(2));
        assert_eq!(w.req(c, Request::Watch(s("w"))), Response::Watching(2));
        assert_eq!(w.req(c, Request::Watch(s("x"))), Response::Watching(3));
        assert_eq!(
            w.req(c, Request::ListTubes),
            Response::Ok(Bytes::from_static(b"---\n- default\n- u\n- w\n- x\n"))
        );
        // ignore swap-removes, as beanstalkd's Ms does
        assert_eq!(
            w.req(c, Request::Ignore(s("default"))),
            Response::Watching(2)
        );
        assert_eq!(
            w.req(c, Request::ListTubesWatched),
            Response::Ok(Bytes::from_static(b"---\n- x\n- w\n"))
        );
        assert_eq!(w.req(c, Request::Ignore(s("nope"))), Response::Watching(2));
        assert_eq!(w.req(c, Request::Ignore(s("x"))), Response::Watching(1));
        assert_eq!(w.req(c, Request::Ignore(s("w"))), Response::NotIgnored);
        // x vanished (swap-remove in the global list); default stays for ever
        assert_eq!(
            w.req(c, Request::ListTubes),
            Response::Ok(Bytes::from_static(b"---\n- default\n- u\n- w\n"))
        );
        w.put(c, 0, 0, 10, "keeps u");
        assert_eq!(w.req(c, Request::Use(s("v"))), Response::Using(s("v")));
        assert_ne!(w.req(c, Request::StatsTube(s("u"))), Response::NotFound);
        assert_eq!(
            w.req(c, Request::Use(s("default"))),
            Response::Using(s("default"))
        );
        assert_eq!(w.req(c, Request::StatsTube(s("v"))), Response::NotFound);
        assert_eq!(w.req(c, Request::Delete(1)), Response::Deleted);
        assert_eq!(w.req(c, Request::StatsTube(s("u"))), Response::NotFound);
        assert_eq!(
            w.req(c, Request::ListTubes),
            Response::Ok(Bytes::from_static(b"---\n- default\n- w\n"))
        );
    }

    #[test]
    fn bad_tube_names_are_bad_format_not_a_panic() {
        let mut w = world();
        let c = w.conn();
        for name in ["", "-x", "a b", "é", &"n".repeat(201)] {
            assert_eq!(w.req(c, Request::Use(s(name))), Response::BadFormat);
            assert_eq!(w.req(c, Request::Watch(s(name))), Response::BadFormat);
            assert_eq!(w.req(c, Request::Ignore(s(name))), Response::BadFormat);
            assert_eq!(w.req(c, Request::StatsTube(s(name))), Response::BadFormat);
            assert_eq!(
                w.req(
                    c,
                    Request::PauseTube {
                        tube: s(name),
                        delay: 1
                    }
                ),
                Response::BadFormat
            );
        }
        // as beanstalkd: a pause-tube is counted before its name is
        // checked, the other commands only after
        assert_eq!(w.stat(c, Request::Stats, "cmd-pause-tube"), "5");
        for op in ["cmd-use", "cmd-watch", "cmd-ignore", "cmd-stats-tube"] {
            assert_eq!(w.stat(c, Request::Stats, op), "0", "{op}");
        }
        assert_eq!(
            w.req(c, Request::Use("n".repeat(200))),
            Response::Using("n".repeat(200))
        );
    }

    #[test]
    fn pause_tube_holds_reserves_until_it_ends() {
        let mut w = world();
        let c = w.conn();
        assert_eq!(
            w.req(
                c,
                Request::PauseTube {
                    tube: s("nope"),
                    delay: 1
                }
            ),
            Response::NotFound
        );
        let id = w.put(c, 0, 0, 10, "x");
        assert_eq!(
            w.req(
                c,
                Request::PauseTube {
                    tube: s("default"),
                    delay: 0
                }
            ),
            Response::Paused
        );
        assert_eq!(
            w.stat(c, Request::StatsTube(s("default")), "pause"),
            "0",
            "0 becomes 1 ns, as beanstalkd"
        );
        assert_eq!(
            w.stat(c, Request::StatsTube(s("default")), "pause-time-left"),
            "0"
        );
        assert_eq!(
            w.req(
                c,
                Request::PauseTube {
                    tube: s("default"),
                    delay: 3
                }
            ),
            Response::Paused
        );
        assert_eq!(
            w.stat(c, Request::StatsTube(s("default")), "cmd-pause-tube"),
            "2"
        );
        assert_eq!(
            w.stat(c, Request::StatsTube(s("default")), "pause-time-left"),
            "3"
        );
        assert_eq!(w.e.handle(c, Request::Reserve, w.now), Handled::Wait);
        w.advance(Duration::from_millis(2999));
        assert!(w.woken().is_empty());
        w.advance(Duration::from_millis(1));
        assert_eq!(w.woken(), vec![c]);
        assert!(matches!(w.e.poll_reply(c), Some(Response::Reserved { id: got, .. }) if got == id));
        assert_eq!(w.stat(c, Request::StatsTube(s("default")), "pause"), "0");
    }

    #[test]
    fn disconnect_returns_reserved_jobs_to_waiting_clients() {
        let mut w = world();
        let a = w.conn();
        let b = w.conn();
        let j1 = w.put(a, 9, 0, 100, "1");
        let j2 = w.put(a, 0, 0, 100, "2");
        w.reserved(a, Request::Reserve);
        w.reserved(a, Request::Reserve);
        assert_eq!(w.e.handle(b, Request::Reserve, w.now), Handled::Wait);
        w.req(a, Request::Use(s("gone")));
        w.e.disconnect(a, w.now);
        // the first reserved (j2, reserved first as the more urgent) goes to b
        assert_eq!(w.woken(), vec![b]);
        assert!(matches!(w.e.poll_reply(b), Some(Response::Reserved { id, .. }) if id == j2));
        assert_eq!(w.job_stat(b, j1, "state"), "ready");
        assert_eq!(w.job_stat(b, j1, "releases"), "0");
        assert_eq!(w.stat(b, Request::Stats, "current-connections"), "1");
        assert_eq!(w.stat(b, Request::Stats, "total-connections"), "2");
        assert_eq!(w.stat(b, Request::Stats, "current-producers"), "0");
        assert_eq!(w.req(b, Request::StatsTube(s("gone"))), Response::NotFound);
        let c = w.conn();
        assert!(
            matches!(w.e.handle(c, Request::Reserve, w.now), Handled::Reply(Response::Reserved { id, .. }) if id == j1)
        );
        // a disconnected waiter is simply dropped
        let d = w.conn();
        assert_eq!(w.e.handle(d, Request::Reserve, w.now), Handled::Wait);
        w.e.disconnect(d, w.now);
        w.put(c, 0, 0, 1, "x");
        assert!(w.woken().is_empty());
        assert_eq!(w.stat(c, Request::Stats, "current-waiting"), "0");
    }

    #[test]
    fn draining_refuses_puts_and_uses_up_an_id() {
        let mut w = world();
        let c = w.conn();
        w.e.set_draining(true);
        assert_eq!(
            w.req(
                c,
                Request::Put {
                    priority: 0,
                    delay: 0,
                    ttr: 1,
                    body: Bytes::new()
                }
            ),
            Response::Draining
        );
        assert_eq!(w.stat(c, Request::Stats, "draining"), "true");
        w.e.set_draining(false);
        assert_eq!(w.put(c, 0, 0, 1, ""), 2);
    }

    #[test]
    fn memory_bounds_answer_out_of_memory_and_job_size_job_too_big() {
        let mut w = world();
        w.e = Engine::new(EngineConfig::default().max_jobs(2).max_job_size(4));
        let c = w.conn();
        assert_eq!(
            w.req(
                c,
                Request::Put {
                    priority: 0,
                    delay: 0,
                    ttr: 1,
                    body: Bytes::from_static(b"12345")
                }
            ),
            Response::JobTooBig
        );
        w.put(c, 0, 0, 1, "1234");
        w.put(c, 0, 0, 1, "");
        assert_eq!(
            w.req(
                c,
                Request::Put {
                    priority: 0,
                    delay: 0,
                    ttr: 1,
                    body: Bytes::new()
                }
            ),
            Response::OutOfMemory
        );
        assert_eq!(w.stat(c, Request::Stats, "cmd-put"), "4");
        let mut w2 = world();
        w2.e = Engine::new(EngineConfig::default().max_memory(JOB_OVERHEAD + 3));
        let c = w2.conn();
        w2.put(c, 0, 0, 1, "abc");
        assert_eq!(
            w2.req(
                c,
                Request::Put {
                    priority: 0,
                    delay: 0,
                    ttr: 1,
                    body: Bytes::new()
                }
            ),
            Response::OutOfMemory
        );
        w2.req(c, Request::Delete(1));
        assert_eq!(w2.e.memory(), 0);
        assert_eq!(w2.put(c, 0, 0, 1, "xyz"), 2);
    }

    #[test]
    fn refused_puts_count_as_beanstalkd_counts_them() {
        let mut w = world();
        let c = w.conn();
        assert_eq!(w.e.put_refused(c, PutRefused::TooBig), Response::JobTooBig);
        assert_eq!(w.stat(c, Request::Stats, "current-producers"), "0");
        assert_eq!(
            w.e.put_refused(c, PutRefused::ExpectedCrlf),
            Response::ExpectedCrlf
        );
        assert_eq!(w.stat(c, Request::Stats, "cmd-put"), "2");
        assert_eq!(w.stat(c, Request::Stats, "current-producers"), "1");
        assert_eq!(w.put(c, 0, 0, 1, ""), 2, "EXPECTED_CRLF used up id 1");
    }

    #[test]
    fn quit_closes() {
        let mut w = world();
        let c = w.conn();
        assert_eq!(w.e.handle(c, Request::Quit, w.now), Handled::Close);
        assert_eq!(
            w.e.handle(ClientId(999), Request::Stats, w.now),
            Handled::Reply(Response::InternalError)
        );
    }

    #[test]
    fn changes_are_emitted_for_durable_state_only() {
        let mut w = world();
        let c = w.conn();
        let a = w.put(c, 3, 0, 5, "a");
        let b = w.put(c, 4, 2, 5, "b");
        let at = w.now + Duration::from_secs(2);
        w.reserved(c, Request::Reserve);
        w.req(c, Request::Touch(a));
        w.req(
            c,
            Request::Release {
                id: a,
                priority: 8,
                delay: 0,
            },
        );
        w.reserved(c, Request::Reserve);
        w.req(c, Request::Bury { id: a, priority: 9 });
        w.req(c, Request::Kick(1));
        w.req(c, Request::KickJob(b));
        w.req(c, Request::Delete(a));
        w.req(
            c,
            Request::PauseTube {
                tube: s("default"),
                delay: 1,
            },
        );
        let changes: Vec<Change> = w.e.take_changes().collect();
        let ready = DurableState::Ready;
        assert_eq!(
            changes,
            vec![
                Change::Put {
                    id: a,
                    tube: s("default"),
                    priority: 3,
                    ttr: 5,
                    state: ready,
                    body: Bytes::from_static(b"a")
                },
                Change::Put {
                    id: b,
                    tube: s("default"),
                    priority: 4,
                    ttr: 5,
                    state: DurableState::Delayed(at),
                    body: Bytes::from_static(b"b")
                },
                Change::State {
                    id: a,
                    priority: 8,
                    state: ready
                },
                Change::State {
                    id: a,
                    priority: 9,
                    state: DurableState::Buried
                },
                Change::State {
                    id: a,
                    priority: 9,
                    state: ready
                },
                Change::State {
                    id: b,
                    priority: 4,
                    state: ready
                },
                Change::Delete { id: a },
            ]
        );
        assert_eq!(w.e.take_changes().count(), 0);
        let mut quiet = Engine::new(EngineConfig::default().record_changes(false));
        let q = quiet.connect(w.now);
        quiet.handle(
            q,
            Request::Put {
                priority: 0,
                delay: 0,
                ttr: 1,
                body: Bytes::new(),
            },
            w.now,
        );
        assert_eq!(quiet.take_changes().count(), 0);
    }

    #[test]
    fn restore_rebuilds_jobs_and_ids_continue() {
        let mut w = world();
        let job = |id, state| RestoredJob {
            id,
            tube: s("r"),
            priority: 2,
            ttr: 0,
            state,
            body: Bytes::from_static(b"x"),
        };
        w.e.restore(job(7, DurableState::Ready), w.now);
        w.e.restore(job(3, DurableState::Buried), w.now);
        w.e.restore(
            job(5, DurableState::Delayed(w.now + Duration::from_secs(4))),
            w.now,
        );
        w.e.restore(job(6, DurableState::Delayed(w.now)), w.now);
        let c = w.conn();
        assert_eq!(w.job_stat(c, 7, "state"), "ready");
        assert_eq!(w.job_stat(c, 7, "ttr"), "1");
        assert_eq!(w.job_stat(c, 3, "state"), "buried");
        assert_eq!(w.job_stat(c, 5, "state"), "delayed");
        assert_eq!(w.job_stat(c, 5, "time-left"), "4");
        assert_eq!(w.job_stat(c, 6, "state"), "ready");
        assert_eq!(w.put(c, 0, 0, 1, "new"), 8);
        assert_eq!(
            w.stat(c, Request::StatsTube(s("r")), "current-jobs-buried"),
            "1"
        );
        let mut durable: Vec<(u64, DurableState)> =
            w.e.durable_jobs().map(|j| (j.id, j.state)).collect();
        durable.sort_by_key(|e| e.0);
        assert_eq!(durable[0], (3, DurableState::Buried));
        assert_eq!(
            durable[1],
            (5, DurableState::Delayed(w.now + Duration::from_secs(4)))
        );
    }

    #[test]
    fn stats_job_yaml_is_beanstalkds() {
        let mut w = world();
        let c = w.conn();
        w.put(c, 5, 3, 10, "abc");
        w.now += Duration::from_millis(1200);
        assert_eq!(
            w.req(c, Request::StatsJob(1)),
            Response::Ok(Bytes::from_static(
                b"---\nid: 1\ntube: default\nstate: delayed\npri: 5\nage: 1\ndelay: 3\nttr: 10\ntime-left: 1\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n"
            ))
        );
        assert_eq!(w.req(c, Request::StatsJob(2)), Response::NotFound);
    }

    #[test]
    fn stats_tube_yaml_is_beanstalkds() {
        let mut w = world();
        let c = w.conn();
        w.put(c, 5, 0, 0, "abc");
        w.put(c, 5000, 3, 10, "abc");
        w.req(
            c,
            Request::PauseTube {
                tube: s("default"),
                delay: 5,
            },
        );
        w.now += Duration::from_millis(300);
        assert_eq!(
            w.req(c, Request::StatsTube(s("default"))),
            Response::Ok(Bytes::from_static(
                b"---\nname: default\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 1\ncurrent-jobs-reserved: 0\ncurrent-jobs-delayed: 1\ncurrent-jobs-buried: 0\ntotal-jobs: 2\ncurrent-using: 1\ncurrent-watching: 1\ncurrent-waiting: 0\ncmd-delete: 0\ncmd-pause-tube: 1\npause: 5\npause-time-left: 4\n"
            ))
        );
    }

    #[test]
    fn stats_yaml_has_beanstalkds_keys_in_order() {
        let mut w = world();
        w.e = Engine::new(
            EngineConfig::default().host(
                HostInfo::default()
                    .pid(42)
                    .id("d7d479ea0a81f914")
                    .hostname("vm")
                    .os("#1 SMP")
                    .platform("x86_64"),
            ),
        );
        let c = w.conn();
        w.put(c, 5, 0, 0, "abc");
        w.put(c, 5, 3, 10, "abc");
        w.e.set_process_stats(
            ProcessStats::default().rusage(Duration::ZERO, Duration::from_micros(2044)),
        );
        w.now += Duration::from_millis(1100);
        let Response::Ok(body) = w.req(c, Request::Stats) else {
            panic!()
        };
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "---\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 1\ncurrent-jobs-reserved: 0\ncurrent-jobs-delayed: 1\ncurrent-jobs-buried: 0\ncmd-put: 2\ncmd-peek: 0\ncmd-peek-ready: 0\ncmd-peek-delayed: 0\ncmd-peek-buried: 0\ncmd-reserve: 0\ncmd-reserve-with-timeout: 0\ncmd-delete: 0\ncmd-release: 0\ncmd-use: 0\ncmd-watch: 0\ncmd-ignore: 0\ncmd-bury: 0\ncmd-kick: 0\ncmd-touch: 0\ncmd-stats: 1\ncmd-stats-job: 0\ncmd-stats-tube: 0\ncmd-list-tubes: 0\ncmd-list-tube-used: 0\ncmd-list-tubes-watched: 0\ncmd-pause-tube: 0\njob-timeouts: 0\ntotal-jobs: 2\nmax-job-size: 65535\ncurrent-tubes: 1\ncurrent-connections: 1\ncurrent-producers: 1\ncurrent-workers: 0\ncurrent-waiting: 0\ntotal-connections: 1\npid: 42\nversion: \"1.12\"\nrusage-utime: 0.000000\nrusage-stime: 0.002044\nuptime: 1\nbinlog-oldest-index: 0\nbinlog-current-index: 0\nbinlog-records-migrated: 0\nbinlog-records-written: 0\nbinlog-max-size: 10485760\ndraining: false\nid: d7d479ea0a81f914\nhostname: vm\nos: #1 SMP\nplatform: x86_64\n"
        );
    }

    #[test]
    fn waiting_clients_are_taken_in_beanstalkds_ms_take_rotation() {
        // beanstalkd's ms_take swap-removes at a rotating index: with three
        // waiters [a, b, c] it serves a, then (index 1 of [c, b]) b, then c.
        let mut w = world();
        let p = w.conn();
        let ws: Vec<ClientId> = (0..3).map(|_| w.conn()).collect();
        for &c in &ws {
            assert_eq!(w.e.handle(c, Request::Reserve, w.now), Handled::Wait);
        }
        let mut served = Vec::new();
        for _ in 0..3 {
            w.put(p, 0, 0, 10, "x");
            served.extend(w.woken());
        }
        assert_eq!(served, vec![ws[0], ws[1], ws[2]]);
    }

    /// Every structure agrees: each job is in exactly the one place its
    /// state says, every counter matches what it counts.
    fn check_invariants(e: &Engine, now: Instant) {
        let mut ready = 0;
        let mut urgent = 0;
        let mut buried = 0;
        let mut memory = 0;
        for (&id, job) in &e.jobs {
            let tube = e.tube(job.tube);
            let places = [
                tube.ready.contains(&(job.pri, id)),
                tube.delayed.contains(&(job.deadline, id)),
                tube.buried.contains(&(job.seq, id)),
                e.clients
                    .values()
                    .any(|c| c.reserved.contains(&(job.deadline, id))),
            ];
            assert_eq!(
                places.iter().filter(|&&p| p).count(),
                1,
                "job {id} in {places:?}"
            );
            match job.state {
                JobState::Ready => {
                    assert!(places[0]);
                    ready += 1;
                    urgent += u64::from(job.pri < URGENT_THRESHOLD);
                }
                JobState::Delayed => assert!(places[1] && e.delayed.contains(&(job.deadline, id))),
                JobState::Buried => {
                    assert!(places[2]);
                    buried += 1;
                }
                JobState::Reserved(c) => {
                    assert!(e.clients[&c].reserved.contains(&(job.deadline, id)))
                }
            }
            memory += job.body.len() as u64 + JOB_OVERHEAD;
        }
        assert_eq!(
            (e.counters.ready, e.counters.urgent, e.counters.buried),
            (ready, urgent, buried)
        );
        assert_eq!(e.memory, memory);
        let reserved: usize = e.clients.values().map(|c| c.reserved.len()).sum();
        assert_eq!(e.counters.reserved as usize, reserved);
        let tube_sums = e
            .tube_list
            .iter()
            .map(|&t| e.tube(t))
            .fold((0, 0, 0, 0), |acc, t| {
                (
                    acc.0 + t.ready.len(),
                    acc.1 + t.delayed.len(),
                    acc.2 + t.reserved,
                    acc.3 + t.jobs,
                )
            });
        assert_eq!(
            tube_sums,
            (
                ready as usize,
                e.delayed.len(),
                reserved as u64,
                e.jobs.len() as u64
            )
        );
        assert_eq!(e.tube_list.len(), e.tube_index.len());
        for &t in &e.tube_list {
            let tube = e.tube(t);
            assert!(
                tube.pinned || tube.jobs + tube.using + tube.watching > 0,
                "a tube nothing holds"
            );
            let watchers = e.clients.values().filter(|c| c.watch.contains(&t)).count() as u64;
            let users = e.clients.values().filter(|c| c.use_tube == t).count() as u64;
            assert_eq!((tube.watching, tube.using), (watchers, users));
            let mut waiting: Vec<ClientId> = tube.waiting.clone();
            waiting.sort();
            let mut expect: Vec<ClientId> = e
                .clients
                .iter()
                .filter(|(_, c)| c.waiting.is_some() && c.watch.contains(&t))
                .map(|(&id, _)| id)
                .collect();
            expect.sort();
            assert_eq!(waiting, expect);
            assert_eq!(e.waiting_tubes.contains(&t), !tube.waiting.is_empty());
            assert_eq!(tube.unpause_at.is_some(), !tube.pause.is_zero());
        }
        let waiting = e.clients.values().filter(|c| c.waiting.is_some()).count() as u64;
        assert_eq!(e.counters.waiting, waiting);
        for (&id, c) in &e.clients {
            match c.tickat {
                Some(at) => assert!(e.conn_heap.contains(&(at, id))),
                None => assert!(!e.conn_heap.iter().any(|&(_, x)| x == id)),
            }
        }
        assert_eq!(
            e.conn_heap.len(),
            e.clients.values().filter(|c| c.tickat.is_some()).count()
        );
        assert!(
            e.next_deadline().is_none_or(|d| d > now),
            "tick left work due"
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Req(usize, Request),
        Advance(u64),
        Disconnect(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let tube = prop_oneof![
            Just("default".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned())
        ];
        let id = 0u64..12;
        let request = prop_oneof![
            4 => (0u32..2000, prop_oneof![Just(0u32), 0u32..3], 0u32..4, 0usize..4).prop_map(|(priority, delay, ttr, n)| {
                Request::Put { priority, delay, ttr, body: Bytes::from(vec![b'x'; n]) }
            }),
            1 => tube.clone().prop_map(Request::Use),
            1 => tube.clone().prop_map(Request::Watch),
            1 => tube.clone().prop_map(Request::Ignore),
            2 => Just(Request::Reserve),
            3 => (-1i32..3).prop_map(Request::ReserveWithTimeout),
            1 => id.clone().prop_map(Request::ReserveJob),
            2 => id.clone().prop_map(Request::Delete),
            2 => (id.clone(), 0u32..2000, 0u32..3).prop_map(|(id, priority, delay)| Request::Release { id, priority, delay }),
            1 => (id.clone(), 0u32..2000).prop_map(|(id, priority)| Request::Bury { id, priority }),
            1 => id.clone().prop_map(Request::Touch),
            1 => (0u32..4).prop_map(Request::Kick),
            1 => id.clone().prop_map(Request::KickJob),
            1 => id.clone().prop_map(Request::Peek),
            1 => Just(Request::PeekReady),
            1 => Just(Request::PeekBuried),
            1 => (tube.clone(), 0u32..3).prop_map(|(tube, delay)| Request::PauseTube { tube, delay }),
            1 => Just(Request::Stats),
            1 => tube.prop_map(Request::StatsTube),
        ];
        prop_oneof![
            10 => (0usize..3, request).prop_map(|(c, r)| Step::Req(c, r)),
            3 => (0u64..2500).prop_map(Step::Advance),
            1 => (0usize..3).prop_map(Step::Disconnect),
        ]
    }

    /// A model of what the durable layer keeps: the changes replayed.
    fn replay(
        model: &mut HashMap<u64, (u32, DurableState)>,
        changes: impl Iterator<Item = Change>,
    ) {
        for change in changes {
            match change {
                Change::Put {
                    id,
                    priority,
                    state,
                    ..
                } => {
                    assert!(model.insert(id, (priority, state)).is_none());
                }
                Change::State {
                    id,
                    priority,
                    state,
                } => {
                    assert!(model.insert(id, (priority, state)).is_some());
                }
                Change::Delete { id } => {
                    assert!(model.remove(&id).is_some());
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_sessions_keep_every_invariant(steps in proptest::collection::vec(step(), 1..120)) {
            let mut now = Instant::now();
            let mut e = Engine::new(EngineConfig::default().max_jobs(10));
            let mut clients: Vec<ClientId> = (0..3).map(|_| e.connect(now)).collect();
            let mut model = HashMap::new();
            // Jobs reserve-job took out of delayed or buried: as in
            // beanstalkd, that is no durable change, so a timeout or a
            // disconnect makes them ready where the log still says
            // delayed or buried.
            let mut taken = std::collections::HashSet::new();
            for step in steps {
                match step {
                    Step::Req(i, request) => {
                        let c = clients[i];
                        if e.is_waiting(c) {
                            continue; // a driver sends a parked client nothing
                        }
                        if let Request::ReserveJob(id) = request {
                            taken.insert(id);
                        }
                        match e.handle(c, request, now) {
                            Handled::Wait => assert!(e.is_waiting(c)),
                            Handled::Reply(_) | Handled::Close => assert!(!e.is_waiting(c)),
                        }
                    }
                    Step::Advance(ms) => {
                        now += Duration::from_millis(ms);
                        e.tick(now);
                    }
                    Step::Disconnect(i) => {
                        e.disconnect(clients[i], now);
                        clients[i] = e.connect(now);
                    }
                }
                let woken: Vec<ClientId> = e.take_woken().collect();
                for c in woken {
                    assert!(e.poll_reply(c).is_some(), "woken without a reply");
                    assert!(!e.is_waiting(c));
                }
                check_invariants(&e, now);
                replay(&mut model, e.take_changes());
                let mut durable: HashMap<u64, (u32, DurableState)> = HashMap::new();
                for job in e.durable_jobs() {
                    durable.insert(job.id, (job.priority, job.state));
                }
                // Reserved jobs are ready to a restart; a delayed job that
                // became ready, or was reserved by reserve-job, needs no change.
                for (id, (pri, state)) in &durable {
                    let (mpri, mstate) = model[id];
                    let reserved = matches!(e.jobs[id].state, JobState::Reserved(_));
                    let agrees = (*pri, *state) == (mpri, mstate)
                        || (*state == DurableState::Ready && matches!(mstate, DurableState::Delayed(at) if at <= now))
                        || reserved
                        || taken.contains(id);
                    proptest::prop_assert!(agrees, "job {id}: engine {:?} log {:?}", (pri, state), (mpri, mstate));
                }
                proptest::prop_assert_eq!(durable.len(), model.len());
                let Handled::Reply(Response::Ok(stats)) = e.handle(clients[0], Request::Stats, now) else { panic!() };
                let text = String::from_utf8(stats.to_vec()).unwrap();
                let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}: "))).unwrap().parse::<u64>().unwrap();
                proptest::prop_assert_eq!(get("current-jobs-ready"), e.counters.ready);
                proptest::prop_assert_eq!(
                    get("current-jobs-ready") + get("current-jobs-reserved") + get("current-jobs-delayed") + get("current-jobs-buried"),
                    e.jobs.len() as u64
                );
                proptest::prop_assert_eq!(get("current-tubes"), e.tube_list.len() as u64);
            }
        }
    }
}
