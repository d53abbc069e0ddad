//! Event sources over the network (tokio): a sink session (at least once) and a kids subscription (at most once).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kids_core::{Frame, FrameCodec, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::source::{Event, EventSource};
use crate::Error;

/// The first pause before reconnecting; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between reconnections.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// A RESP2 connection: commands out, frames in (kids-core's codec, bounded).
struct RespConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl RespConn {
    async fn connect(addr: &str) -> Result<RespConn, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::default(),
        })
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<(), Error> {
        let mut out = BytesMut::new();
        Frame::command(args).encode(Proto::Resp2, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// A frame already received, if a whole one is buffered.
    fn buffered(&mut self) -> Result<Option<Frame>, Error> {
        self.codec
            .decode(&mut self.buf)
            .map_err(|e| Error::Source(format!("bad RESP from the source: {e}")))
    }

    /// The next frame, waiting for it (cancel-safe: what was read stays buffered).
    async fn frame(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(f);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }
}

/// The parts of a push (RESP2 array or RESP3 push).
fn parts(frame: Frame) -> Option<Vec<Frame>> {
    match frame {
        Frame::Array(v) | Frame::Push(v) => Some(v),
        _ => None,
    }
}

fn bulk(frame: &Frame) -> Option<&Bytes> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        _ => None,
    }
}

/// Whether a source should reconnect after `e`: a socket error or a
/// closed connection may heal; a refusal (`-ERR` to `SESSION CREATE` with
/// other filters, `-BUSY` or `-GAP` to `SESSION LOAD`, a refused
/// subscription), a `session-end` push (another client took the session
/// over) or bytes that are not RESP would be the same on every try: those
/// fail the source for good.
fn reconnects(e: &Error) -> bool {
    matches!(e, Error::Io(_) | Error::Closed)
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A sink session as a source: `SESSION CREATE name filter…` (the same
/// filters again are `+OK`), `SESSION LOAD name`, then every pushed
/// `[session, name, offset, topic, payload]` is an event named `topic` of
/// the configured app, acknowledged with `SESSION ACK name offset`
/// (cumulative) once the master confirmed its jobs. After a lost connection
/// (a socket error, the sink closing it) it reconnects (pausing 0.1 s
/// doubling to 5 s) and loads the session again: what was not acknowledged
/// comes again. At least once.
///
/// A refusal no retry can cure fails [`EventSource::next_batch`] for good,
/// with [`Error::Source`]: `SESSION CREATE` refused (the session exists
/// with other filters), `SESSION LOAD` refused (`-BUSY`: another client
/// holds it; `-GAP`: what it had not acknowledged is gone from the log), a
/// `session-end` push (another client took the session over), bytes that
/// are not RESP.
pub struct SinkSource {
    addr: String,
    session: String,
    filters: Vec<String>,
    app: String,
    conn: Option<RespConn>,
    pause: Duration,
}

impl std::fmt::Debug for SinkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSource")
            .field("addr", &self.addr)
            .field("session", &self.session)
            .field("filters", &self.filters)
            .field("app", &self.app)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl SinkSource {
    /// A source reading session `session` (created with `filters` if it
    /// does not exist) on the sink at `addr` (`host:port`); its events
    /// belong to `app`. It connects at the first [`EventSource::next_batch`].
    pub fn new(
        addr: impl Into<String>,
        session: impl Into<String>,
        filters: Vec<String>,
        app: impl Into<String>,
    ) -> Self {
        Self {
            addr: addr.into(),
            session: session.into(),
            filters,
            app: app.into(),
            conn: None,
            pause: FIRST_PAUSE,
        }
    }

    async fn open(&self) -> Result<RespConn, Error> {
        let mut c = RespConn::connect(&self.addr).await?;
        let mut create: Vec<&[u8]> = vec![b"SESSION", b"CREATE", self.session.as_bytes()];
        create.extend(self.filters.iter().map(|f| f.as_bytes()));
        c.send(&create).await?;
        c.send(&[b"SESSION", b"LOAD", self.session.as_bytes()])
            .await?;
        for what in ["SESSION CREATE", "SESSION LOAD"] {
            match c.frame().await? {
                Frame::Simple(_) => {}
                Frame::Error(e) => {
                    return Err(Error::Source(format!("sink refused {what}: {}", text(&e))));
                }
                other => {
                    return Err(Error::Source(format!(
                        "sink answered {what} with {other:?}"
                    )));
                }
            }
        }
        tracing::info!(addr = %self.addr, session = %self.session, "sink session loaded");
        Ok(c)
    }

    /// The event of a frame, when it is a push of our session.
    fn event(&self, frame: Frame) -> Result<Option<(Event, u64)>, Error> {
        let p = match frame {
            Frame::Array(p) | Frame::Push(p) => p,
            // Replies to our ACKs.
            Frame::Integer(_) => return Ok(None),
            Frame::Error(e) => {
                tracing::warn!(error = %text(&e), "sink: error reply");
                return Ok(None);
            }
            other => {
                return Err(Error::Source(format!(
                    "unexpected frame from sink: {other:?}"
                )));
            }
        };
        match p.as_slice() {
            [kind, _name, Frame::Integer(offset), topic, payload]
                if bulk(kind).is_some_and(|k| &k[..] == b"session") =>
            {
                let (Some(topic), Some(payload), Ok(offset)) =
                    (bulk(topic), bulk(payload), u64::try_from(*offset))
                else {
                    return Err(Error::Source("malformed session push".into()));
                };
                Ok(Some((
                    Event::new(text(topic), self.app.clone(), payload.clone()),
                    offset,
                )))
            }
            [kind, rest @ ..] if bulk(kind).is_some_and(|k| &k[..] == b"session-end") => {
                let why = rest.get(1).and_then(bulk).map_or_else(String::new, text);
                Err(Error::Source(format!("sink ended the session: {why}")))
            }
            _ => Err(Error::Source(format!("unexpected push from sink: {p:?}"))),
        }
    }

    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Event, u64)>, Error> {
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
        }
        let mut out = Vec::new();
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(Error::Closed);
            };
            let frame = if out.is_empty() {
                conn.frame().await?
            } else {
                match conn.buffered()? {
                    Some(f) => f,
                    None => return Ok(out),
                }
            };
            if let Some(ev) = self.event(frame)? {
                out.push(ev);
                if out.len() >= max {
                    return Ok(out);
                }
            }
        }
    }
}

impl EventSource for SinkSource {
    type Token = u64;

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(Event, u64)>, Error> {
        loop {
            match self.try_batch(max.max(1)).await {
                Ok(batch) => {
                    self.pause = FIRST_PAUSE;
                    return Ok(batch);
                }
                Err(e) if !reconnects(&e) => {
                    self.conn = None;
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "sink source: reconnecting");
                    self.conn = None;
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    async fn ack(&mut self, offset: u64) -> Result<(), Error> {
        let Some(conn) = self.conn.as_mut() else {
            // Not connected: the next load sends it again.
            return Ok(());
        };
        let offset = offset.to_string();
        if let Err(e) = conn
            .send(&[
                b"SESSION",
                b"ACK",
                self.session.as_bytes(),
                offset.as_bytes(),
            ])
            .await
        {
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }
}

/// A kids subscription as a source: `SUBSCRIBE` channels and `PSUBSCRIBE`
/// patterns; every message is an event named by its channel, of the
/// configured app. Acknowledging does nothing: kids keeps nothing for a
/// subscriber, so what is published while the master is down or
/// reconnecting is missed (at most once). Use a sink session where
/// that matters. It reconnects after a socket error or a closed
/// connection; a refused subscription or bytes that are not RESP fail
/// [`EventSource::next_batch`] for good ([`Error::Source`]).
pub struct KidsSource {
    addr: String,
    channels: Vec<String>,
    patterns: Vec<String>,
    app: String,
    conn: Option<RespConn>,
    pause: Duration,
}

impl std::fmt::Debug for KidsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KidsSource")
            .field("addr", &self.addr)
            .field("channels", &self.channels)
            .field("patterns", &self.patterns)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl KidsSource {
    /// A source subscribed on the kids server at `addr` to `channels` and
    /// `patterns`; its events belong to `app`. It connects at the first
    /// [`EventSource::next_batch`].
    pub fn new(
        addr: impl Into<String>,
        channels: Vec<String>,
        patterns: Vec<String>,
        app: impl Into<String>,
    ) -> Self {
        Self {
            addr: addr.into(),
            channels,
            patterns,
            app: app.into(),
            conn: None,
            pause: FIRST_PAUSE,
        }
    }

    async fn open(&self) -> Result<RespConn, Error> {
        let mut c = RespConn::connect(&self.addr).await?;
        let mut n = 0;
        for (cmd, list) in [
            (&b"SUBSCRIBE"[..], &self.channels),
            (b"PSUBSCRIBE", &self.patterns),
        ] {
            if list.is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![cmd];
            args.extend(list.iter().map(|s| s.as_bytes()));
            c.send(&args).await?;
            n += list.len();
        }
        // One confirmation per channel and pattern.
        for _ in 0..n {
            match c.frame().await? {
                Frame::Error(e) => {
                    return Err(Error::Source(format!(
                        "kids refused the subscription: {}",
                        text(&e)
                    )));
                }
                f => match parts(f) {
                    Some(p)
                        if p.first()
                            .and_then(bulk)
                            .is_some_and(|k| k.ends_with(b"subscribe")) => {}
                    other => {
                        return Err(Error::Source(format!(
                            "unexpected reply from kids: {other:?}"
                        )));
                    }
                },
            }
        }
        tracing::info!(addr = %self.addr, "kids subscription ready");
        Ok(c)
    }

    fn event(&self, frame: Frame) -> Option<Event> {
        let p = parts(frame)?;
        match p.as_slice() {
            [kind, channel, payload] if bulk(kind)?[..] == *b"message" => Some(Event::new(
                text(bulk(channel)?),
                self.app.clone(),
                bulk(payload)?.clone(),
            )),
            [kind, _pattern, channel, payload] if bulk(kind)?[..] == *b"pmessage" => {
                Some(Event::new(
                    text(bulk(channel)?),
                    self.app.clone(),
                    bulk(payload)?.clone(),
                ))
            }
            _ => None,
        }
    }

    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Event, ())>, Error> {
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
        }
        let mut out = Vec::new();
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(Error::Closed);
            };
            let frame = if out.is_empty() {
                conn.frame().await?
            } else {
                match conn.buffered()? {
                    Some(f) => f,
                    None => return Ok(out),
                }
            };
            if let Some(ev) = self.event(frame) {
                out.push((ev, ()));
                if out.len() >= max {
                    return Ok(out);
                }
            }
        }
    }
}

impl EventSource for KidsSource {
    type Token = ();

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(Event, ())>, Error> {
        loop {
            match self.try_batch(max.max(1)).await {
                Ok(batch) => {
                    self.pause = FIRST_PAUSE;
                    return Ok(batch);
                }
                Err(e) if !reconnects(&e) => {
                    self.conn = None;
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "kids source: reconnecting");
                    self.conn = None;
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Nothing to do: kids keeps nothing for a subscriber.
    async fn ack(&mut self, (): ()) -> Result<(), Error> {
        Ok(())
    }
}
