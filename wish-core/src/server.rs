//! The server side: services, the router of their methods, and the options applied around each call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::cache::{CacheLayer, Probe, TimestampStore};
use crate::error::{Code, Error, RequiredError, Status};
use crate::frame::{Body, Frame, RequestFrame, ResponseFrame};
use crate::options::{MethodDesc, ServiceDesc};

/// A service at the byte level: what a generated `<Service>Server` implements,
/// and what a hand-written service implements to be served the same way.
pub trait Service: Send + Sync + 'static {
    /// The service's method table.
    fn descriptor(&self) -> &'static ServiceDesc;

    /// Calls method number `method` (an index in the table) with an encoded
    /// request; answers with an encoded response.
    fn call(
        &self,
        method: usize,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>>;
}

/// What a handler knows about its call.
#[derive(Clone)]
pub struct CallContext {
    method: &'static MethodDesc,
    started: SystemTime,
    deadline: Option<Duration>,
    timestamps: Arc<dyn TimestampStore>,
}

impl CallContext {
    /// A context, for calling a [`Service`] directly (tests, other transports).
    pub fn new(
        method: &'static MethodDesc,
        started: SystemTime,
        deadline: Option<Duration>,
        timestamps: Arc<dyn TimestampStore>,
    ) -> CallContext {
        CallContext {
            method,
            started,
            deadline,
            timestamps,
        }
    }

    /// The method called.
    pub fn method(&self) -> &'static MethodDesc {
        self.method
    }

    /// When the server started the call.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// How long the client gives the call, from `started`.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Records that `entity` (`"a=1"`) changed at `now`: cached answers of
    /// `timestamped` methods that name it, computed before, stop being served.
    pub async fn touch(&self, entity: &str, now: SystemTime) {
        self.timestamps.touch(entity, now).await;
    }
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("method", &self.method.full_name)
            .field("started", &self.started)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Server-wide switches.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Apply `(cache)`: answer from the cache and fill it. Default on.
    pub cache: bool,
    /// Apply `(compress)` to responses. Default on.
    pub compress: bool,
    /// Calls one connection may have in flight before the server stops
    /// reading from it. Default 1024.
    pub max_in_flight: usize,
    /// How long `net::serve` lets connections answer the calls they have
    /// read once it is shut down. Default 5 s.
    pub drain_timeout: Duration,
    /// A frame must be whole this long after its first byte was read, or
    /// its connection is closed; `None`: no bound. Default 30 s.
    pub read_timeout: Option<Duration>,
    /// A connection with no partial frame and no call in flight is closed
    /// after this long without a byte read or an answer written; `None`
    /// (the default): never.
    pub idle_timeout: Option<Duration>,
    /// Bytes the server's connections may hold in partial frames, all
    /// together. A read that takes them over closes its connection, unless
    /// that connection's partial frame is within `partial_allowance` (see
    /// [`ReadLimits`](crate::ReadLimits)). One connection holds at most one
    /// partial frame, so the codec's frame bound is its own limit. Default
    /// 64 MiB: sixteen frames of the default 4 MiB bound at once.
    pub max_partial_bytes: usize,
    /// A partial frame this small is never refused for the budget, so that
    /// small requests are served however full it is. Default 64 KiB.
    pub partial_allowance: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cache: true,
            compress: true,
            max_in_flight: 1024,
            drain_timeout: Duration::from_secs(5),
            read_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            max_partial_bytes: 64 * 1024 * 1024,
            partial_allowance: 64 * 1024,
        }
    }
}

/// Counters of a server, shared by its connections.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Calls that reached a handler.
    pub handled: AtomicU64,
    /// Calls answered from the cache.
    pub cache_hits: AtomicU64,
    /// Cacheable calls that missed.
    pub cache_misses: AtomicU64,
    /// Calls that ended with an error status.
    pub errors: AtomicU64,
    /// Calls stopped by a cancel frame or by their deadline. (Calls dropped
    /// because their connection failed, or a drain timed out, are not counted.)
    pub cancelled: AtomicU64,
    /// Calls started and not yet answered.
    pub in_flight: AtomicU64,
    /// Requests refused because they lack a proto2 `required` field (also
    /// counted in `errors`). Requests the check refuses as not a message,
    /// or nested too deep, are counted in `errors` only, as are requests
    /// that fail to decode in a handler.
    pub missing_required: AtomicU64,
    /// Connections closed because a frame was not whole within the read timeout.
    pub closed_read_timeout: AtomicU64,
    /// Connections closed by the idle timeout.
    pub closed_idle: AtomicU64,
    /// Connections closed because their partial frame took the server over its budget.
    pub closed_over_budget: AtomicU64,
    /// Bytes held in partial frames by all connections now: the budget, so
    /// only [`ReadLimits`](crate::ReadLimits) changes it.
    partial_bytes: AtomicU64,
}

impl ServerStats {
    /// Bytes held in partial frames by all connections now (see [`ReadLimits`](crate::ReadLimits)).
    pub fn partial_bytes(&self) -> u64 {
        self.partial_bytes.load(Ordering::Relaxed)
    }

    /// A connection that held `old` bytes in a partial frame now holds
    /// `new`; the bytes all connections hold now.
    pub(crate) fn charge_partial(&self, old: usize, new: usize) -> u64 {
        if new >= old {
            let more = (new - old) as u64;
            self.partial_bytes.fetch_add(more, Ordering::Relaxed) + more
        } else {
            let less = (old - new) as u64;
            self.partial_bytes.fetch_sub(less, Ordering::Relaxed) - less
        }
    }
}

/// A router of services and the options applied around their calls.
///
/// Cheap to clone; every clone serves the same services, cache and counters.
/// It does no IO: [`Server::handle`] turns a request into the frame that
/// answers it, and the caller decides how frames travel (the `tokio`
/// feature's `net` module, or [`LocalChannel`](crate::LocalChannel)).
///
/// The crate docs show one serving a hand-written service in memory.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    /// By method id: the id of every request is looked up here.
    routes: HashMap<u32, Route, foldhash::fast::RandomState>,
    layer: CacheLayer,
    config: ServerConfig,
    stats: ServerStats,
}

struct Route {
    service: Arc<dyn Service>,
    index: usize,
    method: &'static MethodDesc,
    /// First polls of this method's handler took long, again and again: a
    /// transport starts its calls on tasks of their own (see
    /// [`Server::runs_inline`]).
    in_tasks: AtomicBool,
    /// Long first polls count up, quick ones down (see [`Server::first_poll_took`]).
    long_polls: AtomicU32,
}

impl Server {
    /// A server with no services, an in-memory cache and timestamp store.
    pub fn new(config: ServerConfig) -> Server {
        Server::with_cache(config, CacheLayer::default())
    }

    /// A server whose `(cache)` methods use these stores.
    pub fn with_cache(config: ServerConfig, layer: CacheLayer) -> Server {
        Server {
            inner: Arc::new(Inner {
                routes: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                layer,
                config,
                stats: ServerStats::default(),
            }),
        }
    }

    /// Adds a service. Call before the server is cloned or served.
    ///
    /// # Errors
    /// [`Error::Options`] if the service's options contradict each other;
    /// [`Error::Table`] if a method id is already taken (the same service
    /// twice, or two full names whose ids collide), or the server was
    /// already cloned.
    pub fn with_service(mut self, service: impl Service) -> Result<Server, Error> {
        let service: Arc<dyn Service> = Arc::new(service);
        let desc = service.descriptor();
        desc.check()?;
        let inner = Arc::get_mut(&mut self.inner)
            .ok_or_else(|| Error::Table("services are added before the server is cloned".into()))?;
        for (index, method) in desc.methods.iter().enumerate() {
            if let Some(other) = inner.routes.get(&method.id) {
                return Err(Error::Table(format!(
                    "{} and {} have the same method id {:#010x}",
                    other.method.full_name, method.full_name, method.id
                )));
            }
            inner.routes.insert(
                method.id,
                Route {
                    service: service.clone(),
                    index,
                    method,
                    in_tasks: AtomicBool::new(false),
                    long_polls: AtomicU32::new(0),
                },
            );
        }
        Ok(self)
    }

    /// The method with this id.
    pub fn method(&self, id: u32) -> Option<&'static MethodDesc> {
        self.inner.routes.get(&id).map(|r| r.method)
    }

    /// Whether a transport may poll a call of method `id` once on the
    /// connection's own task before it gives the call a task of its own:
    /// true until [`first_poll_took`](Server::first_poll_took) decides
    /// otherwise (and for an unknown id, whose answer is an error at once).
    pub fn runs_inline(&self, id: u32) -> bool {
        self.inner
            .routes
            .get(&id)
            .is_none_or(|r| !r.in_tasks.load(Ordering::Relaxed))
    }

    /// A transport timed the first poll of a call of method `id`, and it
    /// took `long`er than its budget (or not).
    ///
    /// Each long first poll counts [`LONG_POLL_WEIGHT`] up, each quick one 1
    /// down (to 0, and at most `2 * LONG_POLLS * LONG_POLL_WEIGHT` up). At
    /// `LONG_POLLS * LONG_POLL_WEIGHT` (as after [`LONG_POLLS`] long first
    /// polls in a row, or when more than one in five is long), the method's
    /// handler is taken to compute for long before it first awaits: its calls
    /// are started on tasks of their own, so that they run side by side on a
    /// multi-threaded runtime. Back at 0 (its first polls, timed on their
    /// tasks, were quick again), they are polled on the connection again.
    /// A long poll now and then (the thread preempted) moves nothing.
    pub fn first_poll_took(&self, id: u32, long: bool) {
        let Some(route) = self.inner.routes.get(&id) else {
            return;
        };
        let count = &route.long_polls;
        if !long && count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let max = 2 * LONG_POLLS * LONG_POLL_WEIGHT;
        let step = |n: u32| {
            Some(if long {
                (n + LONG_POLL_WEIGHT).min(max)
            } else {
                n.saturating_sub(1)
            })
        };
        let before = count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
            .unwrap_or_default();
        let after = step(before).unwrap_or_default();
        if after >= LONG_POLLS * LONG_POLL_WEIGHT {
            route.in_tasks.store(true, Ordering::Relaxed);
        } else if after == 0 {
            route.in_tasks.store(false, Ordering::Relaxed);
        }
    }

    /// The server's switches.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.inner.stats
    }

    /// The timestamp store handlers touch.
    pub fn timestamps(&self) -> &Arc<dyn TimestampStore> {
        self.inner.layer.timestamps()
    }

    /// Answers request `id` started at `now`: from the cache, or by calling
    /// the handler (and caching its answer). The future owns what it needs,
    /// so it can be spawned; dropping it drops the handler's future.
    pub fn handle(
        &self,
        id: u64,
        request: RequestFrame,
        now: SystemTime,
    ) -> impl Future<Output = Frame> + Send + 'static {
        let guard = InFlight(self.inner.clone());
        guard.0.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        async move {
            let inner = &guard.0;
            let Some(route) = inner.routes.get(&request.method) else {
                inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Frame::error(
                    id,
                    Status::new(
                        Code::NOT_FOUND,
                        format!("no method with id {:#010x}", request.method),
                    ),
                );
            };
            let method = route.method;
            // Before the cache: a request without a required field is
            // answered the same whether or not an answer is cached.
            if let Err(e) = method.request.check(&request.payload) {
                inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, RequiredError::Missing { .. }) {
                    inner.stats.missing_required.fetch_add(1, Ordering::Relaxed);
                }
                return Frame::error(id, e.request_status());
            }
            let cacheable = inner.config.cache && !request.no_cache;
            let compress =
                inner.config.compress && method.options.compress && !request.plain_response;
            let probe = if cacheable {
                inner.layer.probe(method, request.payload, now).await
            } else {
                Probe::Call(None, request.payload)
            };
            let (pending, payload) = match probe {
                Probe::Hit(hit) => {
                    inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    // The cached `Bytes` goes into the frame as it is: no copy.
                    return response(id, hit.payload, Some(hit.computed_at), true, compress);
                }
                Probe::Call(pending, payload) => {
                    if pending.is_some() {
                        inner.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
                    }
                    (pending, payload)
                }
            };
            let ctx = CallContext::new(
                method,
                now,
                request.deadline,
                inner.layer.timestamps().clone(),
            );
            inner.stats.handled.fetch_add(1, Ordering::Relaxed);
            let result = route.service.call(route.index, ctx, payload).await;
            match result {
                Ok(payload) => {
                    let computed_at = method.options.cache.then_some(now);
                    if let Some(pending) = pending {
                        inner.layer.store(pending, payload.clone(), None).await;
                    }
                    response(id, payload, computed_at, false, compress)
                }
                Err(status) => {
                    inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                    Frame::error(id, status)
                }
            }
        }
    }
}

/// Long first polls in a row that move a method's calls to tasks of their
/// own (see [`Server::first_poll_took`]).
pub const LONG_POLLS: u32 = 8;

/// What a long first poll counts against the quick ones (see
/// [`Server::first_poll_took`]).
pub const LONG_POLL_WEIGHT: u32 = 4;

/// Counts a call in flight until its future is done or dropped.
struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn response(
    id: u64,
    payload: Bytes,
    computed_at: Option<SystemTime>,
    from_cache: bool,
    compress: bool,
) -> Frame {
    Frame {
        id,
        body: Body::Response(ResponseFrame {
            computed_at: computed_at.map(crate::frame::to_millis),
            from_cache,
            compress,
            payload,
        }),
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("methods", &self.inner.routes.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
