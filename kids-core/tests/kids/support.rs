//! Shared fixtures: a real redis-server on a loopback port, an in-process kids server, a raw RESP client.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use kids_core::net::{Listener, ServerConfig, serve};
use kids_core::{Frame, FrameCodec, LogFile, LogFs, Now, OpenMode, Router, RouterConfig, StdFs};
use test_support::wait_for;
use tokio_util::codec::Decoder;

/// A simulated moment `secs` after the Unix epoch on the wall clock, and as
/// far after one fixed instant on the monotonic clock: tests step it with
/// [`Now::after`], or move the wall clock alone.
pub(crate) fn at_secs(secs: u64) -> Now {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Now::new(
        base + Duration::from_secs(secs),
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    )
}

pub(crate) use test_support::RedisServer;
use test_support::answers_ping;

/// kids served in-process on a free loopback port, stopped when dropped.
pub(crate) struct KidsServer {
    pub(crate) port: u16,
    pub(crate) router: Router,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KidsServer {
    pub(crate) fn start(config: RouterConfig) -> Self {
        let router = Router::new(config, Instant::now());
        let std_listener = TcpListener::bind("127.0.0.1:0").expect("bind kids");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let r = router.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                serve(
                    vec![Listener::Tcp(listener)],
                    r,
                    ServerConfig::default(),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("serve");
            });
        });
        wait_for(&format!("kids on port {port} to answer PING"), || {
            answers_ping(port)
        });
        Self {
            port,
            router,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for KidsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw client connection that reads whole frames and keeps their exact bytes.
pub(crate) struct Raw {
    pub(crate) stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Raw {
    pub(crate) fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::default(),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one frame; returns its exact bytes and its value.
    pub(crate) fn frame(&mut self) -> (Vec<u8>, Frame) {
        loop {
            let before = self.buf.clone();
            if let Some(f) = self.codec.decode(&mut self.buf).expect("well-formed reply") {
                let used = before.len() - self.buf.len();
                return (before[..used].to_vec(), f);
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("read a reply (10 s timeout)");
            assert!(
                n > 0,
                "connection closed while a frame was expected; have {:?}",
                self.buf
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads everything until the peer closes.
    pub(crate) fn until_eof(&mut self) -> Vec<u8> {
        let mut out = self.buf.split().to_vec();
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("waiting for the server to close: {e}; have {out:?}"),
            }
        }
    }
}

/// RESP encoding of a command.
pub(crate) fn cmd(args: &[&str]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Frame::command(args).encode(kids_core::Proto::Resp2, &mut buf);
    buf.to_vec()
}

/// Where an fsync says it started, and what it waits on to finish.
type SyncGate = (mpsc::Sender<()>, Arc<Mutex<mpsc::Receiver<()>>>);

/// What a [`FaultFs`] is set to do, and what it saw.
#[derive(Debug, Default)]
struct Faults {
    /// Bytes the disk has free (`None`: unbounded). Writes that grow a file
    /// use it up, removing or shrinking a file gives it back; a write
    /// with no room left fails with ENOSPC after what fit.
    free: Option<u64>,
    /// Most bytes one write call writes.
    short: Option<usize>,
    /// The next fsync of a file fails with EIO.
    fail_sync: bool,
    /// Truncating a file fails with EIO.
    fail_set_len: bool,
    /// Each fsync of a file reports here, then waits for a go.
    sync_gate: Option<SyncGate>,
    /// File operations, in order: `write NAME`, `sync NAME`, `rename A B`, `sync_dir`, `remove NAME`.
    journal: Vec<String>,
}

/// A [`LogFs`] over the real files whose faults a test sets: a disk that
/// fills, an fsync that fails, short writes, a truncation that fails.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultFs(Arc<Mutex<Faults>>);

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl FaultFs {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.0.lock().expect("faults lock")
    }
    /// The disk has `bytes` free from now on (`None`: no bound).
    pub(crate) fn set_free(&self, bytes: Option<u64>) {
        self.faults().free = bytes;
    }
    /// The next fsync of a file fails with EIO.
    pub(crate) fn fail_next_sync(&self) {
        self.faults().fail_sync = true;
    }
    /// Truncating files fails with EIO while set.
    pub(crate) fn fail_truncate(&self, fail: bool) {
        self.faults().fail_set_len = fail;
    }
    /// Each write call writes at most `bytes` (`None`: all it is given).
    pub(crate) fn short_writes(&self, bytes: Option<usize>) {
        self.faults().short = bytes;
    }
    /// From now on every fsync of a file sends on the first channel once it
    /// started, and finishes only when the test sends on the second.
    pub(crate) fn hold_syncs(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        self.faults().sync_gate = Some((entered_tx, Arc::new(Mutex::new(go_rx))));
        (entered_rx, go_tx)
    }
    /// The file operations so far (and forgets them).
    pub(crate) fn take_journal(&self) -> Vec<String> {
        std::mem::take(&mut self.faults().journal)
    }
}

impl LogFs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        StdFs.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>> {
        if mode == OpenMode::Truncate {
            let old = std::fs::metadata(path).map_or(0, |m| m.len());
            if let Some(free) = self.faults().free.as_mut() {
                *free += old;
            }
        }
        Ok(Arc::new(FaultFile {
            inner: StdFs.open(path, mode)?,
            name: file_name(path),
            faults: self.0.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let len = std::fs::metadata(path)?.len();
        StdFs.remove(path)?;
        let mut f = self.faults();
        if let Some(free) = f.free.as_mut() {
            *free += len;
        }
        f.journal.push(format!("remove {}", file_name(path)));
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)?;
        self.faults()
            .journal
            .push(format!("rename {} {}", file_name(from), file_name(to)));
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)?;
        self.faults().journal.push("sync_dir".into());
        Ok(())
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn LogFile>,
    name: String,
    faults: Arc<Mutex<Faults>>,
}

impl LogFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut f = self.faults.lock().expect("faults lock");
        let mut n = buf.len().min(f.short.unwrap_or(usize::MAX));
        let len = self.inner.size()?;
        if let Some(free) = f.free {
            let room = (len + free).saturating_sub(offset);
            n = n.min(usize::try_from(room).unwrap_or(usize::MAX));
            if n == 0 && !buf.is_empty() {
                return Err(enospc());
            }
        }
        let wrote = self.inner.write_at(&buf[..n], offset)?;
        let grew = (offset + wrote as u64).saturating_sub(len);
        if let Some(free) = f.free.as_mut() {
            *free -= grew;
        }
        f.journal.push(format!("write {}", self.name));
        Ok(wrote)
    }
    fn sync(&self) -> io::Result<()> {
        let gate = {
            let mut f = self.faults.lock().expect("faults lock");
            if std::mem::take(&mut f.fail_sync) {
                return Err(eio());
            }
            f.sync_gate.clone()
        };
        if let Some((entered, go)) = gate {
            let _ = entered.send(());
            let _ = go.lock().expect("gate lock").recv();
        }
        self.inner.sync()?;
        let mut f = self.faults.lock().expect("faults lock");
        f.journal.push(format!("sync {}", self.name));
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut f = self.faults.lock().expect("faults lock");
        if f.fail_set_len {
            return Err(eio());
        }
        let old = self.inner.size()?;
        if let Some(free) = f.free.as_mut() {
            if len > old {
                *free = free.checked_sub(len - old).ok_or_else(enospc)?;
            } else {
                *free += old - len;
            }
        }
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}
