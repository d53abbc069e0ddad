//! The store tree's threads and links: the worker thread of a pipeline,
//! and one task per network store's connection.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::driver::Stream;
use crate::{Error, ForwardAction, Link, Router, Target};

/// Bytes a network store's connection reads per call.
const READ_CHUNK: usize = 16 * 1024;

/// Drives the connection of a network store's [`Link`] until the store is
/// dropped: connects (eagerly, so a buffer sees its primary up), writes
/// pipelined `LOG`s while the window allows, reads acknowledgements, gives
/// the connection up on an error reply, a bad reply or a reply timeout, and
/// reconnects after the forwarder's backoff. Unacknowledged messages are
/// re-sent, in order, on the next connection.
pub async fn drive_link(link: Arc<Link>) {
    loop {
        // Back off until the next attempt; the link's closing wakes this too.
        loop {
            if link.is_closed() {
                return;
            }
            let Some(at) = link.forwarder().retry_at() else {
                break;
            };
            if Instant::now() >= at {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = poll_fn(|cx| link.poll_work(cx)) => {}
            }
        }
        let reason = match connect(link.target()).await {
            Ok(Stream::Tcp(s)) => {
                let _ = s.set_nodelay(true);
                tracing::info!(target = %link.target(), "forwarding: connected");
                pump_link(&link, s).await
            }
            Ok(Stream::Unix(s)) => {
                tracing::info!(target = %link.target(), "forwarding: connected");
                pump_link(&link, s).await
            }
            Err(e) => format!("connect failed: {e}"),
        };
        if link.is_closed() {
            return;
        }
        tracing::warn!(target = %link.target(), %reason, "forwarding: connection lost; will retry");
        link.forwarder().on_disconnect(Instant::now());
        link.notify_progress();
    }
}

async fn connect(target: &Target) -> io::Result<Stream> {
    let limit = Duration::from_secs(10);
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    match target {
        Target::Tcp { host, port } => tokio::time::timeout(
            limit,
            tokio::net::TcpStream::connect((host.as_str(), *port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map(Stream::Tcp),
        Target::Unix(path) => tokio::time::timeout(limit, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| timed_out())?
            .map(Stream::Unix),
    }
}

/// Runs one connection; returns why it ended.
async fn pump_link<S: AsyncRead + AsyncWrite + Unpin>(link: &Link, stream: S) -> String {
    use tokio::io::AsyncReadExt;
    link.forwarder().on_connected();
    link.notify_progress();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::new();
    loop {
        if link.is_closed() {
            return "store closed".into();
        }
        wbuf.clear();
        link.forwarder().poll_transmit(&mut wbuf, Instant::now());
        if !wbuf.is_empty() {
            if let Err(e) = writer.write_all(&wbuf).await {
                return format!("write failed: {e}");
            }
            continue;
        }
        let deadline = link.forwarder().poll_timeout();
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut rbuf) => match read {
                Ok(0) => return "peer closed the connection".into(),
                Err(e) => return format!("read failed: {e}"),
                Ok(_) => {
                    let action = link.forwarder().handle_input(&mut rbuf, Instant::now());
                    link.notify_progress();
                    if let ForwardAction::Disconnect(why) = action {
                        return why;
                    }
                }
            },
            () = poll_fn(|cx| link.poll_work(cx)) => {}
            () = timer => {
                if let ForwardAction::Disconnect(why) = link.forwarder().handle_timeout(Instant::now()) {
                    return why;
                }
            }
        }
    }
}

/// How long an idle store worker sleeps between polls of its stores.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Drives a [`Worker`](crate::Worker) of `pipeline` for `root` on the
/// calling thread until [`StorePipeline::shutdown`](crate::StorePipeline::shutdown);
/// then stores what is queued (giving up after `drain` on a root that keeps
/// refusing) and waits up to `drain` for the tree to have everything
/// acknowledged downstream. The thread sleeps on the pipeline's bell.
pub fn run_pipeline(pipeline: &crate::StorePipeline, root: Box<dyn crate::Store>, drain: Duration) {
    /// However the worker ends, a panic included, publishers are not left
    /// waiting: new messages are refused, held tickets resolve as unstored.
    struct Finish<'a>(&'a crate::StorePipeline);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            self.0.shutdown();
            self.0.finish();
        }
    }
    let _finish = Finish(pipeline);
    let mut worker = pipeline.worker(root);
    let mut give_up: Option<Instant> = None;
    loop {
        let busy = worker.step(now());
        if pipeline.is_stopping() {
            // What a refusing root never took was never acknowledged either.
            let deadline = *give_up.get_or_insert_with(|| Instant::now() + drain);
            if worker.is_idle() || Instant::now() >= deadline {
                break;
            }
        }
        if !busy {
            pipeline.bell().wait(IDLE_POLL);
        }
    }
    let deadline = Instant::now() + drain;
    while !worker.is_drained() && Instant::now() < deadline {
        worker.step(now());
        pipeline.bell().wait(IDLE_POLL);
    }
    if !worker.is_drained() {
        tracing::warn!(
            unacknowledged = worker.unacked(),
            "store drain timeout: messages not yet acknowledged downstream"
        );
    }
}

/// Both clocks, read once: the worker's `now`.
fn now() -> crate::Now {
    crate::Now::new(Instant::now(), std::time::SystemTime::now())
}

/// Runs [`run_pipeline`] on a new thread named `kids-store` (file IO blocks,
/// so the worker does not run on the async runtime).
///
/// # Errors
/// [`Error::Io`] when the thread cannot be started.
pub fn spawn_pipeline(
    pipeline: &crate::StorePipeline,
    root: Box<dyn crate::Store>,
    drain: Duration,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let pipeline = pipeline.clone();
    Ok(std::thread::Builder::new()
        .name("kids-store".into())
        .spawn(move || run_pipeline(&pipeline, root, drain))?)
}

/// A running store tree: the [`StorePipeline`](crate::StorePipeline) tapped
/// into a router, its worker thread, and a driver task per network link.
///
/// ```no_run
/// use std::time::Instant;
/// use kids_core::{Config, Router};
/// use kids_core::net::Stores;
///
/// # async fn run() -> Result<(), kids_core::Error> {
/// let config = Config::parse("agent.conf", &std::fs::read_to_string("agent.conf")?)?;
/// let router = Router::new(config.router_config(), Instant::now());
/// let stores = Stores::start(&config, &router)?;
/// // ... serve(listeners, router, ...) ...
/// stores.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Stores {
    pipeline: crate::StorePipeline,
    worker: Option<std::thread::JoinHandle<()>>,
    ignore_case: bool,
    /// True once a `store` block's tree runs (not the null store of a
    /// config without one): a reload may then not fall back to discarding.
    has_tree: AtomicBool,
}

/// How long a stopping store tree may wait for downstream acknowledgements.
const STORE_DRAIN: Duration = Duration::from_secs(10);

impl Stores {
    /// Builds the config's store tree (a null store when it has none), taps
    /// it into `router`, starts its worker thread and its link drivers (on
    /// the current tokio runtime).
    ///
    /// # Errors
    /// [`Error::StoreConfig`] for a tree that cannot work,
    /// [`Error::SpoolDirMissing`] / [`Error::SpoolDirUnused`] for queue
    /// settings that cannot, [`Error::Io`] / [`Error::Corrupt`] when the
    /// overflow spool cannot be opened, [`Error::Io`] when the worker
    /// thread cannot be started.
    pub fn start(config: &crate::Config, router: &Router) -> Result<Self, Error> {
        let pipeline = crate::StorePipeline::new(config.pipeline_config())?;
        let root = Self::build(config.store.as_ref(), config.ignore_case, &pipeline)?;
        let worker = spawn_pipeline(&pipeline, root, STORE_DRAIN)?;
        router.set_tap(Arc::new(pipeline.clone()));
        Ok(Self {
            pipeline,
            worker: Some(worker),
            ignore_case: config.ignore_case,
            has_tree: AtomicBool::new(config.store.is_some()),
        })
    }

    fn build(
        store: Option<&crate::StoreConfig>,
        ignore_case: bool,
        pipeline: &crate::StorePipeline,
    ) -> Result<Box<dyn crate::Store>, Error> {
        let Some(store) = store else {
            return Ok(Box::new(crate::NullStore::default()));
        };
        let built = crate::build_store(store, ignore_case, pipeline.bell())?;
        for link in built.links {
            tokio::spawn(drive_link(link));
        }
        Ok(built.store)
    }

    /// Replaces the store tree with the one `config` describes (SIGHUP).
    /// Queued messages stay queued and go to the new tree; the old tree is
    /// committed and kept until everything it took is acknowledged. The
    /// queue settings are those of [`Stores::start`].
    ///
    /// # Errors
    /// [`Error::StoreConfig`] when the new tree cannot work,
    /// [`Error::StoreTreeRemoved`] when `config` has no `store` block while
    /// a store tree runs (the null store in its place would discard every
    /// message, and publishers would be told it was stored); the old tree
    /// stays.
    pub fn reload(&self, config: &crate::Config) -> Result<(), Error> {
        if config.store.is_none() && self.has_tree.load(Ordering::Relaxed) {
            return Err(Error::StoreTreeRemoved);
        }
        if config.ignore_case != self.ignore_case {
            tracing::warn!(
                "reload: ignore_case changes need a restart; topic filters use the new value"
            );
        }
        let root = Self::build(config.store.as_ref(), config.ignore_case, &self.pipeline)?;
        self.pipeline.replace_root(root);
        if config.store.is_some() {
            self.has_tree.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stores everything queued, waits (up to 10 s) for downstream
    /// acknowledgements, and stops the worker. Serve's drain should have
    /// finished first, so that no publisher is still being answered.
    pub async fn shutdown(mut self) {
        self.pipeline.shutdown();
        if let Some(worker) = self.worker.take() {
            let joined = tokio::task::spawn_blocking(move || worker.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("store worker ended abnormally");
            }
        }
    }
}
