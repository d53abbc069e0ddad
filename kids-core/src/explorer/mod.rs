//! The kids explorer (feature `explorer`): a read-only web page of the live
//! topics, their tails and the store tree, with the same data as JSON and as
//! Prometheus text, served on hyper by anyone who holds a [`Router`].
//!
//! ```text
//!  Router ──stats, tap INFO──▶ Explorer::tick (1/s) ──▶ snapshot ──▶ /api/stream (SSE) ──▶ page
//!     │                              └──▶ history (sparklines)       /api/overview, /topics, /stores (JSON)
//!     └──sampled Tail (rate, preview)────────────────────────────▶ /api/tail (SSE)        /metrics (Prometheus)
//! ```
//!
//! The page is one file served at `/`: no CDN, nothing fetched from
//! elsewhere. Everything from the data (topic names, payloads) is inserted
//! as text, and a per-response `Content-Security-Policy` nonce stops any
//! script but the page's own. Without a token only requests to an address
//! or `localhost` are answered (no DNS rebinding), and a request the
//! browser marks cross-site never is. A tail costs a publish a bounded
//! glob match; it keeps at most [`TailConfig::max_per_sec`] messages a
//! second and counts the rest (see [`Tail`]). Every matching the explorer
//! does for a page (pattern counts, the topic filter) has a step budget,
//! and a response the client does not read is given up after
//! [`ExplorerConfig::write_timeout`]. The endpoints are listed in [`Explorer`].
//!
//! ```no_run
//! use std::time::Instant;
//! use kids_core::explorer::{Explorer, ExplorerConfig};
//! use kids_core::{Router, RouterConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let router = Router::new(RouterConfig::default(), Instant::now());
//! let explorer = Explorer::new(router, ExplorerConfig::default().token("s3cret"));
//! let http = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! explorer.serve(http, std::future::pending()).await
//! # }
//! ```

use std::collections::HashMap;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use serde::Serialize;

use crate::{Router, Stats, Tail, TailConfig};

pub use crate::store::view::{NLimitView, QueueView, StoreNode, StoresView, parse_stores};

/// The page, served at `/`.
const PAGE: &str = include_str!("page.html");

/// The body of every explorer response: a whole document, or an event stream.
pub type ExplorerBody = UnsyncBoxBody<Bytes, Infallible>;

/// Settings of an [`Explorer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExplorerConfig {
    /// When set, every request must carry it (`?token=` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// Bounds of each tail a page opens.
    pub tail: TailConfig,
    /// Points of history per topic, one a second. Default 120.
    pub history: usize,
    /// Matching steps (a pattern looked at, a byte compared) spent per
    /// snapshot or request counting the patterns that match each topic;
    /// topics past it show no count. Default 1,000,000.
    pub pattern_budget: usize,
    /// Matching steps spent per `/api/topics?glob=` request on the filter;
    /// the topics it could not check are left out and the answer says it
    /// is `incomplete`. Default 1,000,000.
    pub filter_budget: usize,
    /// Event streams (`/api/stream`, `/api/tail`) open at once. Default 32.
    pub max_streams: usize,
    /// HTTP connections open at once. Default 64.
    pub max_connections: usize,
    /// A response the client does not read for this long is given up and
    /// its connection closed. Default 10 s.
    pub write_timeout: Duration,
}

impl Default for ExplorerConfig {
    fn default() -> Self {
        Self {
            token: None,
            tail: TailConfig::default(),
            history: 120,
            pattern_budget: 1_000_000,
            filter_budget: 1_000_000,
            max_streams: 32,
            max_connections: 64,
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl ExplorerConfig {
    /// Sets [`ExplorerConfig::token`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets [`ExplorerConfig::tail`].
    pub fn tail(mut self, tail: TailConfig) -> Self {
        self.tail = tail;
        self
    }

    /// Sets [`ExplorerConfig::max_streams`].
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }
}

/// The explorer of one [`Router`]: its page, JSON, event streams and
/// Prometheus metrics. Cheap to clone.
///
/// | Path | What |
/// |---|---|
/// | `/` | the page |
/// | `/api/overview` | router counters (JSON) |
/// | `/api/topics?glob=G` | tracked topics: rates, bytes, subscribers, matching patterns, last message age, history (JSON) |
/// | `/api/stores` | the store queue and tree, nlimit closures (JSON) |
/// | `/api/stream` | all three, once a second (server-sent events, `event: snapshot`) |
/// | `/api/tail?glob=G` | a sampled tail of the channels matching `G` (server-sent events, `event: batch`) |
/// | `/metrics` | Prometheus text format 0.0.4 |
///
/// The JSON documents are [`Overview`], [`TopicsView`], [`StoresView`],
/// [`Snapshot`] and [`TailEvent`], serialized with serde.
///
/// Rates come from [`Router::tick`], which the kids server calls every
/// second; an embedder that serves the router otherwise calls it too.
#[derive(Clone)]
pub struct Explorer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Explorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explorer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    router: Router,
    config: ExplorerConfig,
    state: Mutex<State>,
    streams: AtomicUsize,
}

#[derive(Default)]
struct State {
    history: HashMap<Bytes, History, foldhash::fast::RandomState>,
    /// The largest backlog seen since each replaying buffer began its replay.
    replay_peaks: HashMap<String, u64>,
    snapshot: Bytes,
    /// When `snapshot` was taken.
    snapshot_at: Option<Instant>,
    seq: u64,
}

/// A topic's rate, one point a tick, from its message count.
#[derive(Default)]
struct History {
    points: VecDeque<f64>,
    last: Option<(u64, Instant)>,
}

/// `/api/overview`: the router's counters.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Overview {
    /// This crate's version.
    pub version: &'static str,
    /// Seconds since the router started.
    pub uptime_secs: u64,
    /// Sessions open.
    pub connected_clients: usize,
    /// Distinct patterns subscribed to.
    pub patterns: usize,
    /// Messages published.
    pub messages_in: u64,
    /// Messages queued for receivers.
    pub messages_out: u64,
    /// Publish rate.
    pub messages_in_per_sec: f64,
    /// Delivery rate.
    pub messages_out_per_sec: f64,
    /// Messages lost with clients closed by an nlimit.
    pub messages_dropped: u64,
    /// Messages refused by the stores (publishers told to retry).
    pub messages_refused: u64,
    /// Clients closed for going over an nlimit.
    pub clients_closed_nlimit: u64,
    /// Messages to topics past the tracked bound.
    pub untracked_messages: u64,
    /// Topics with counters of their own.
    pub tracked_topics: usize,
    /// The bound on them.
    pub max_tracked_topics: usize,
}

/// One topic in `/api/topics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct TopicView {
    /// The name, invalid UTF-8 replaced by U+FFFD.
    pub name: String,
    /// Messages published to it.
    pub messages: u64,
    /// Payload bytes published to it.
    pub bytes: u64,
    /// Messages per second.
    pub per_sec: f64,
    /// Payload bytes per second.
    pub bytes_per_sec: f64,
    /// Channel subscribers.
    pub subscribers: usize,
    /// Patterns matching it; `None` when the snapshot's budget ran out.
    pub patterns: Option<usize>,
    /// Seconds since its last message; `None` before the first.
    pub last_message_age_secs: Option<f64>,
    /// Messages per second, one point a second, oldest first.
    pub history: Vec<f64>,
}

/// `/api/topics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct TopicsView {
    /// The tracked topics, by name.
    pub topics: Vec<TopicView>,
    /// Messages to topics past the tracked bound.
    pub untracked_messages: u64,
    /// True when the glob filter ran out of [`ExplorerConfig::filter_budget`]
    /// and some topics were not checked (and are not listed).
    pub incomplete: bool,
}

/// One `event: snapshot` of `/api/stream`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// As `/api/overview`.
    pub overview: Overview,
    /// As `/api/topics`, unfiltered.
    pub topics: Vec<TopicView>,
    /// Messages to topics past the tracked bound.
    pub untracked_messages: u64,
    /// As `/api/stores`.
    pub stores: StoresView,
}

/// One message of a [`TailEvent`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailItem {
    /// The channel, invalid UTF-8 replaced by U+FFFD.
    pub channel: String,
    /// The whole message's size in bytes.
    pub size: usize,
    /// The preview as text (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
    /// The preview as lowercase hex.
    pub hex: String,
    /// Whether the preview is shorter than the message.
    pub truncated: bool,
    /// When it was published, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One `event: batch` of `/api/tail`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailEvent {
    /// Messages kept since the last batch.
    pub messages: Vec<TailItem>,
    /// Messages skipped since the last batch (over the rate, or the reader behind).
    pub skipped: u64,
    /// Messages skipped since the tail opened.
    pub skipped_total: u64,
}

impl Explorer {
    /// The explorer of `router`.
    pub fn new(router: Router, config: ExplorerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                router,
                config,
                state: Mutex::new(State::default()),
                streams: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes one point of history for every topic (its messages per second
    /// since the last tick), and a fresh snapshot when an event stream is
    /// open; call it once a second ([`Explorer::serve`] and
    /// [`Explorer::ticker`] do).
    pub fn tick(&self, now: Instant) {
        let stats = self.inner.router.stats(now);
        let mut st = crate::lock(&self.inner.state);
        let keep = self.inner.config.history.max(1);
        st.history
            .retain(|name, _| stats.topics.binary_search_by(|t| t.name.cmp(name)).is_ok());
        for t in &stats.topics {
            let h = st.history.entry(t.name.clone()).or_default();
            if let Some((count, at)) = h.last {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    if h.points.len() >= keep {
                        h.points.pop_front();
                    }
                    h.points
                        .push_back(t.messages.saturating_sub(count) as f64 / secs);
                }
            }
            h.last = Some((t.messages, now));
        }
        drop(st);
        if self.inner.streams.load(Ordering::Acquire) > 0 {
            self.refresh_snapshot(&stats, now);
        }
    }

    /// Takes the snapshot the event streams send.
    fn refresh_snapshot(&self, stats: &Stats, now: Instant) {
        let snapshot = Snapshot {
            overview: self.overview_of(stats),
            untracked_messages: stats.untracked_messages,
            topics: self.topics_of(stats, None).0,
            stores: self.stores_view(),
        };
        let json = serde_json::to_vec(&snapshot).unwrap_or_default();
        let mut st = crate::lock(&self.inner.state);
        st.snapshot = Bytes::from(json);
        st.snapshot_at = Some(now);
        st.seq += 1;
    }

    /// Calls [`Explorer::tick`] every second, forever: spawn it when you
    /// serve [`Explorer::handle`] from your own HTTP server.
    pub async fn ticker(self) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.tick(Instant::now());
        }
    }

    /// `/api/overview` now.
    pub fn overview(&self) -> Overview {
        self.overview_of(&self.inner.router.stats(Instant::now()))
    }

    /// `/api/topics` now, only the topics matching `glob` when given.
    ///
    /// # Errors
    /// A message saying why, when `glob` is longer than the router's
    /// pattern bound ([`RouterConfig::max_pattern_len`](crate::RouterConfig::max_pattern_len)).
    pub fn topics(&self, glob: Option<&[u8]>) -> Result<TopicsView, String> {
        let bound = self.inner.router.config().pattern_len();
        if glob.is_some_and(|g| g.len() > bound) {
            return Err(format!("the glob is over the bound of {bound} bytes"));
        }
        let stats = self.inner.router.stats(Instant::now());
        let (topics, incomplete) = self.topics_of(&stats, glob);
        Ok(TopicsView {
            topics,
            untracked_messages: stats.untracked_messages,
            incomplete,
        })
    }

    /// `/api/stores` now: the store tree's INFO, read into nodes.
    pub fn stores(&self) -> StoresView {
        self.stores_view()
    }

    /// `/metrics` now, in the Prometheus text format 0.0.4.
    pub fn metrics(&self) -> String {
        let stats = self.inner.router.stats(Instant::now());
        let stores = self.stores_view();
        render_metrics(&stats, self.inner.router.numpat(), &stores)
    }

    fn overview_of(&self, s: &Stats) -> Overview {
        Overview {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: s.uptime_secs,
            connected_clients: s.connected_clients,
            patterns: self.inner.router.numpat(),
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            messages_in_per_sec: s.messages_in_per_sec,
            messages_out_per_sec: s.messages_out_per_sec,
            messages_dropped: s.messages_dropped,
            messages_refused: s.messages_refused,
            clients_closed_nlimit: s.clients_closed_nlimit,
            untracked_messages: s.untracked_messages,
            tracked_topics: s.topics.len(),
            max_tracked_topics: self.inner.router.config().tracked_topics_bound(),
        }
    }

    /// The topics (those `glob` matches within the filter budget), and
    /// whether the budget ran out. Matching runs without the state's lock.
    fn topics_of(&self, s: &Stats, glob: Option<&[u8]>) -> (Vec<TopicView>, bool) {
        let router = &self.inner.router;
        let glob = glob.map(|g| crate::Glob::new(g, router.config().is_ignore_case()));
        let (mut budget, mut filter_steps) = (self.inner.config.pattern_budget, 0usize);
        let limit = self.inner.config.filter_budget;
        let mut incomplete = false;
        let mut views: Vec<TopicView> = Vec::with_capacity(s.topics.len());
        let mut names = Vec::with_capacity(s.topics.len());
        for t in &s.topics {
            if let Some(g) = &glob {
                match g.matches_within(&t.name, &mut filter_steps, limit) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        incomplete = true;
                        break;
                    }
                }
            }
            views.push(TopicView {
                name: String::from_utf8_lossy(&t.name).into_owned(),
                messages: t.messages,
                bytes: t.bytes,
                per_sec: t.per_sec,
                bytes_per_sec: t.bytes_per_sec,
                subscribers: t.subscribers,
                patterns: router.matching_patterns(&t.name, &mut budget),
                last_message_age_secs: t.last_message_age.map(|d| d.as_secs_f64()),
                history: Vec::new(),
            });
            names.push(t.name.clone());
        }
        let st = crate::lock(&self.inner.state);
        for (v, name) in views.iter_mut().zip(&names) {
            if let Some(h) = st.history.get(name) {
                v.history = h.points.iter().copied().collect();
            }
        }
        drop(st);
        (views, incomplete)
    }

    fn stores_view(&self) -> StoresView {
        let info = self.inner.router.tap_info();
        let mut view = parse_stores(info.as_deref());
        let mut st = crate::lock(&self.inner.state);
        let peaks = &mut st.replay_peaks;
        peaks.retain(|name, _| view.nodes.iter().any(|n| n.replaying && &n.name == name));
        for node in view.nodes.iter_mut().filter(|n| n.replaying) {
            let backlog = node.backlog_bytes.unwrap_or(0);
            let peak = peaks.entry(node.name.clone()).or_insert(backlog);
            *peak = (*peak).max(backlog);
            node.replay_progress = Some(if *peak == 0 {
                1.0
            } else {
                1.0 - backlog as f64 / *peak as f64
            });
        }
        drop(st);
        let stats = self.inner.router.stats(Instant::now());
        view.nlimit.clients_closed = stats.clients_closed_nlimit;
        view.nlimit.messages_dropped = stats.messages_dropped;
        view
    }

    /// Answers one request (GET or HEAD; the body is not read). Must be
    /// called inside a tokio runtime: an event stream's body runs on its timer.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<ExplorerBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        }
        let query = req.uri().query().unwrap_or("");
        let param = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if let Err(why) = same_site(req, self.inner.config.token.is_some()) {
            return error(StatusCode::FORBIDDEN, why);
        }
        if let Some(token) = &self.inner.config.token {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let given = bearer.or_else(|| param("token"));
            if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                return error(StatusCode::UNAUTHORIZED, "a token is needed");
            }
        }
        match req.uri().path() {
            "/" | "/index.html" => page(),
            "/api/overview" => json(&self.overview()),
            "/api/topics" => {
                let glob = param("glob").filter(|g| !g.is_empty());
                match self.topics(glob.as_deref().map(str::as_bytes)) {
                    Ok(topics) => json(&topics),
                    Err(e) => error(StatusCode::BAD_REQUEST, &e),
                }
            }
            "/api/stores" => json(&self.stores()),
            "/api/stream" => self.stream(None),
            "/api/tail" => match param("glob").filter(|g| !g.is_empty()) {
                None => error(StatusCode::BAD_REQUEST, "glob= is needed"),
                Some(glob) => match self.inner.router.tail(
                    glob.as_bytes(),
                    self.inner.config.tail,
                    Instant::now(),
                ) {
                    Ok(tail) => self.stream(Some(tail)),
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                },
            },
            "/metrics" => {
                let mut r = Response::new(full(Bytes::from(self.metrics())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => error(StatusCode::NOT_FOUND, "no such page"),
        }
    }

    fn stream(&self, tail: Option<Tail>) -> Response<ExplorerBody> {
        let open = self.inner.streams.fetch_add(1, Ordering::AcqRel);
        let guard = StreamGuard(self.inner.clone());
        if open >= self.inner.config.max_streams {
            drop(guard);
            return error(StatusCode::SERVICE_UNAVAILABLE, "too many event streams");
        }
        let every = if tail.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(250)
        };
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let body = Sse {
            explorer: self.clone(),
            tail,
            interval,
            sent_seq: 0,
            quiet: Duration::ZERO,
            every,
            _guard: guard,
        };
        let mut r = Response::new(UnsyncBoxBody::new(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// Serves the explorer on `listener` until `shutdown` completes, with
    /// [`Explorer::ticker`] running; then closes every connection (event
    /// streams never end on their own).
    ///
    /// # Errors
    /// None so far: failed accepts are logged and retried.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let ticker = tokio::spawn(self.clone().ticker());
        let mut conns = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) if conns.len() >= self.inner.config.max_connections => {
                        tracing::warn!("explorer: connection refused, at max_connections");
                        drop(stream);
                    }
                    Ok((stream, _)) => {
                        let this = self.clone();
                        let write_timeout = self.inner.config.write_timeout;
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let response = this.handle(&req);
                                async move { Ok::<_, Infallible>(response) }
                            });
                            let served = hyper::server::conn::http1::Builder::new()
                                .timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(Duration::from_secs(10))
                                .serve_connection(
                                    hyper_util::rt::TokioIo::new(Stalls::new(stream, write_timeout)),
                                    service,
                                )
                                .await;
                            if let Err(e) = served {
                                tracing::debug!(error = %e, "explorer connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "explorer: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        ticker.abort();
        conns.abort_all();
        Ok(())
    }
}

/// A socket whose writes fail with `TimedOut` once one has waited longer
/// than the timeout: a client that stops reading cannot keep a response
/// (or an event stream) buffered for long.
struct Stalls<S> {
    io: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Stalls<S> {
    fn new(io: S, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }

    /// Passes a write's result on, timing how long it has been pending.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stalls<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stalls<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.timed(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.timed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts an open event stream; the count goes down when the body is dropped.
struct StreamGuard(Arc<Inner>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The body of an event stream: a snapshot whenever the explorer took a
/// new one, or a tail's batch when it has one; a comment after 15 quiet
/// seconds, so that a client gone away is noticed.
struct Sse {
    explorer: Explorer,
    tail: Option<Tail>,
    interval: tokio::time::Interval,
    sent_seq: u64,
    quiet: Duration,
    every: Duration,
    _guard: StreamGuard,
}

const KEEPALIVE: Duration = Duration::from_secs(15);

impl Sse {
    fn next_event(&mut self) -> Option<Bytes> {
        let event = match &self.tail {
            Some(tail) => {
                let batch = tail.take();
                if batch.messages.is_empty() && batch.skipped == 0 {
                    None
                } else {
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    let event = TailEvent {
                        messages: batch
                            .messages
                            .iter()
                            .map(|m| TailItem {
                                channel: String::from_utf8_lossy(&m.channel).into_owned(),
                                size: m.size,
                                text: String::from_utf8_lossy(&m.preview).into_owned(),
                                hex: hex(&m.preview),
                                truncated: m.truncated(),
                                at_ms: wall
                                    .checked_sub(now.saturating_duration_since(m.at))
                                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
                            })
                            .collect(),
                        skipped: batch.skipped,
                        skipped_total: batch.skipped_total,
                    };
                    Some(sse_event("batch", &serde_json::to_vec(&event).ok()?))
                }
            }
            None => {
                let (seq, snapshot) = {
                    let st = crate::lock(&self.explorer.inner.state);
                    (st.seq, st.snapshot.clone())
                };
                if self.sent_seq == 0 {
                    // A new stream: a fresh snapshot at once, so the page fills.
                    let now = Instant::now();
                    let stale = {
                        let st = crate::lock(&self.explorer.inner.state);
                        st.snapshot_at.is_none_or(|t| {
                            now.saturating_duration_since(t) >= Duration::from_secs(1)
                        })
                    };
                    if stale {
                        let stats = self.explorer.inner.router.stats(now);
                        self.explorer.refresh_snapshot(&stats, now);
                    }
                    let st = crate::lock(&self.explorer.inner.state);
                    self.sent_seq = st.seq;
                    return Some(sse_event("snapshot", &st.snapshot));
                }
                let _ = seq;
                (seq > self.sent_seq).then(|| {
                    self.sent_seq = seq;
                    sse_event("snapshot", &snapshot)
                })
            }
        };
        match event {
            Some(e) => {
                self.quiet = Duration::ZERO;
                Some(e)
            }
            None => {
                self.quiet += self.every;
                (self.quiet >= KEEPALIVE).then(|| {
                    self.quiet = Duration::ZERO;
                    Bytes::from_static(b": keepalive\n\n")
                })
            }
        }
    }
}

impl Body for Sse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if self.interval.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(event) = self.next_event() {
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
        }
    }
}

fn sse_event(name: &str, data: &[u8]) -> Bytes {
    // serde_json never writes a raw newline, so the data is one line.
    let mut out = Vec::with_capacity(data.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses what a web page elsewhere could make a browser send: a request
/// marked cross-site by the browser (`Sec-Fetch-Site`), and, without a
/// token, one whose `Host` is a name rather than an address or
/// `localhost` (a name of another site rebound to this address).
fn same_site<B>(req: &Request<B>, has_token: bool) -> Result<(), &'static str> {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err("cross-site requests are refused");
    }
    if has_token {
        return Ok(());
    }
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Ok(()); // HTTP/1.0 or a client of its own: no browser
    };
    // `[v6]:port`, `v4:port`, `name:port` or without the port.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err("without a token, the explorer answers only requests to an address or localhost")
    }
}

fn full(bytes: Bytes) -> ExplorerBody {
    UnsyncBoxBody::new(Full::new(bytes))
}

fn json<T: Serialize>(value: &T) -> Response<ExplorerBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(full(Bytes::from(body)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response<ExplorerBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The page, its inline script allowed by a nonce of this
/// response only: nothing else may run, load or connect elsewhere.
fn page() -> Response<ExplorerBody> {
    let nonce = nonce();
    let html = PAGE.replace("<script>", &format!("<script nonce=\"{nonce}\">"));
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut r = Response::new(full(Bytes::from(html)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 128 bits from std's per-process random hash keys and the clock.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let _ = write!(out, "{:016x}", h.finish());
    }
    out
}

/// Longest label value written, in bytes (longer names are cut, with `…`).
const MAX_LABEL: usize = 256;

/// Escapes a Prometheus label value, cut to [`MAX_LABEL`] bytes.
fn label(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let text = match text.char_indices().map(|(i, _)| i).find(|&i| i > MAX_LABEL) {
        Some(_) => {
            let mut end = MAX_LABEL;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            std::borrow::Cow::Owned(format!("{}…", &text[..end]))
        }
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes the Prometheus text format: a family's `# HELP` and `# TYPE`,
/// then its samples.
struct Prom(String);

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &[u8])], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(self.0, "{sep}{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn render_metrics(s: &Stats, patterns: usize, stores: &StoresView) -> String {
    let mut p = Prom(String::with_capacity(4096 + s.topics.len() * 256));
    let usize = |n: usize| n as u64;
    p.one(
        "kids_uptime_seconds",
        "gauge",
        "Seconds since the router started.",
        s.uptime_secs,
    );
    p.one(
        "kids_connected_clients",
        "gauge",
        "Client sessions open.",
        usize(s.connected_clients),
    );
    p.one(
        "kids_patterns",
        "gauge",
        "Distinct patterns subscribed to.",
        usize(patterns),
    );
    p.one(
        "kids_messages_in_total",
        "counter",
        "Messages published.",
        s.messages_in,
    );
    p.one(
        "kids_messages_out_total",
        "counter",
        "Messages queued for receivers, one per receiver.",
        s.messages_out,
    );
    p.one(
        "kids_messages_dropped_total",
        "counter",
        "Messages lost with clients closed by an nlimit.",
        s.messages_dropped,
    );
    p.one(
        "kids_messages_refused_total",
        "counter",
        "Messages the stores refused; their publishers were told to retry.",
        s.messages_refused,
    );
    p.one(
        "kids_clients_closed_nlimit_total",
        "counter",
        "Clients closed for going over an nlimit.",
        s.clients_closed_nlimit,
    );
    p.one(
        "kids_untracked_messages_total",
        "counter",
        "Messages to topics past the tracked bound.",
        s.untracked_messages,
    );
    if let Some(q) = &stores.queue {
        let queue = [
            (
                "kids_store_queue_length",
                "gauge",
                "Messages waiting for the store tree.",
                q.length,
            ),
            (
                "kids_store_queue_capacity",
                "gauge",
                "The store queue's size.",
                q.capacity,
            ),
            (
                "kids_store_accepted_total",
                "counter",
                "Messages accepted into the store queue.",
                q.accepted,
            ),
            (
                "kids_store_refused_total",
                "counter",
                "Messages the store queue refused.",
                q.refused,
            ),
            (
                "kids_store_spooled_total",
                "counter",
                "Messages sent to the overflow spool.",
                q.spooled,
            ),
            (
                "kids_store_stored_total",
                "counter",
                "Messages committed by the store tree.",
                q.stored,
            ),
            (
                "kids_store_errors_total",
                "counter",
                "Store or commit failures.",
                q.store_errors,
            ),
            (
                "kids_store_unstored_total",
                "counter",
                "Messages given up by a failed commit.",
                q.unstored,
            ),
            (
                "kids_store_overflow_spool_bytes",
                "gauge",
                "Bytes in the overflow spool.",
                q.spool_bytes,
            ),
        ];
        for (name, kind, help, value) in queue {
            p.one(name, kind, help, value);
        }
    }
    // Two names that differ only in invalid UTF-8 read the same: the first is kept.
    let mut seen = std::collections::HashSet::new();
    let topics: Vec<_> = s
        .topics
        .iter()
        .filter(|t| seen.insert(label(&t.name)))
        .collect();
    let per_topic =
        |p: &mut Prom, name, kind, help, value: &dyn Fn(&crate::TopicStats) -> Option<String>| {
            p.family(name, kind, help);
            for t in &topics {
                if let Some(v) = value(t) {
                    p.sample(name, &[("topic", &t.name)], v);
                }
            }
        };
    per_topic(
        &mut p,
        "kids_topic_messages_total",
        "counter",
        "Messages published to a topic.",
        &|t| Some(t.messages.to_string()),
    );
    per_topic(
        &mut p,
        "kids_topic_bytes_total",
        "counter",
        "Payload bytes published to a topic.",
        &|t| Some(t.bytes.to_string()),
    );
    per_topic(
        &mut p,
        "kids_topic_subscribers",
        "gauge",
        "Channel subscribers of a topic.",
        &|t| Some(t.subscribers.to_string()),
    );
    per_topic(
        &mut p,
        "kids_topic_last_message_age_seconds",
        "gauge",
        "Seconds since a topic's last message (no sample before the first).",
        &|t| t.last_message_age.map(|d| d.as_secs_f64().to_string()),
    );
    let nodes: Vec<_> = stores.nodes.iter().filter(|n| n.kind != "filter").collect();
    p.family(
        "kids_store_up",
        "gauge",
        "Whether a network store is connected (1) or not (0).",
    );
    for n in &nodes {
        if let Some(up) = n.up {
            let labels: [(&str, &[u8]); 2] =
                [("store", n.name.as_bytes()), ("kind", n.kind.as_bytes())];
            p.sample("kids_store_up", &labels, u8::from(up));
        }
    }
    p.family(
        "kids_store_spool_bytes",
        "gauge",
        "Bytes in a buffer store's spool.",
    );
    for n in &nodes {
        if let Some(bytes) = n.spool_bytes {
            p.sample(
                "kids_store_spool_bytes",
                &[("store", n.name.as_bytes())],
                bytes,
            );
        }
    }
    p.family(
        "kids_store_replaying",
        "gauge",
        "Whether a buffer store is replaying its spool.",
    );
    for n in nodes.iter().filter(|n| n.kind == "buffer") {
        p.sample(
            "kids_store_replaying",
            &[("store", n.name.as_bytes())],
            u8::from(n.replaying),
        );
    }
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_the_client_does_not_take_times_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let (near, _far) = tokio::io::duplex(64);
            let mut s = Stalls::new(near, Duration::from_millis(50));
            let err = s
                .write_all(&[0u8; 1024])
                .await
                .expect_err("a stalled write");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn long_labels_are_cut_on_a_char_boundary() {
        let name = format!("{}é{}", "a".repeat(255), "b".repeat(100));
        let l = label(name.as_bytes());
        assert_eq!(l, format!("{}…", "a".repeat(255)));
        assert_eq!(label(b"short"), "short");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn labels_escape_what_prometheus_escapes() {
        assert_eq!(label(b"a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label(b"\xff"), "\u{fffd}");
    }

    #[test]
    fn an_event_is_one_data_line() {
        assert_eq!(
            &sse_event("batch", br#"{"a":"x\ny"}"#)[..],
            b"event: batch\ndata: {\"a\":\"x\\ny\"}\n\n"
        );
    }
}
