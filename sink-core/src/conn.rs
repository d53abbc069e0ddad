//! One client connection of sink: the RESP commands, replies held until
//! durable, and the pump that pushes sessions' and subscribers' messages.
//!
//! ```text
//!  request ─▶ resp::dispatch ─▶ SinkConn::run ─▶ Broker (stage, lsn) ─▶ reply held until durable
//!                                                                        (Protocol::poll_release)
//!  LogReader (committed records) ─▶ poll_produce: session (window-bounded) and
//!                                   subscriber pushes ─▶ Outbox ─▶ socket
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kids_core::resp::{self, Command, RespServer, RespState};
use kids_core::server::{Flow, Protocol};
use kids_core::{
    Error as KidsError, Glob, LogReader, NLimits, Outbox, Position, ProtocolError, Request,
};

use crate::broker::{Broker, WriteError};
use crate::commands::{SINK_COMMANDS, SinkCommand};
use crate::record::{self, MAX_FILTER, MAX_FILTERS, MAX_NAME, Record};
use crate::sessions::{Deliver, SessionError};
use crate::stream::{Outcome, STREAM_COMMANDS, StreamCommand, Streams};

/// Records read from the log per pump step.
const READ_BATCH: usize = 512;
/// Messages pushed per pump step, at most.
const PUSH_BATCH: usize = 256;
/// Offsets a caught-up session passes over without a match before its
/// cursor moves past them by itself (one logged record per this many).
const SKIP_AHEAD: u64 = 1024;

/// What every connection of one sink server shares.
#[derive(Debug)]
pub struct SinkServer {
    broker: Broker,
    next_id: AtomicU64,
    clients: AtomicUsize,
    limits: NLimits,
}

impl SinkServer {
    /// A server of `broker`.
    pub fn new(broker: Broker) -> Arc<Self> {
        Arc::new(Self {
            broker,
            next_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            limits: NLimits::default(),
        })
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// A new connection's protocol state.
    pub fn connect(self: &Arc<Self>, now: Instant) -> SinkConn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.clients.fetch_add(1, Ordering::Relaxed);
        SinkConn {
            resp: RespState::new(Arc::new(Outbox::new(id)), self.limits),
            reader: self.broker.reader(),
            server: Arc::clone(self),
            hold: None,
            channels: BTreeSet::new(),
            patterns: Vec::new(),
            tail: None,
            loaded: None,
            blocked: None,
            deferred: None,
            deferred_error: None,
            now,
        }
    }
}

/// A loaded session: where its reader is.
#[derive(Debug)]
struct Loaded {
    name: Bytes,
    lease: u64,
    pos: Position,
    /// The first offset not yet passed by the reader.
    next: u64,
}

/// A stream read waiting for entries.
#[derive(Debug)]
struct Blocked {
    cmd: StreamCommand,
    retry: Request,
    deadline: Option<Instant>,
    version: u64,
}

/// One client's protocol state: a [`RespServer`] and a toolkit [`Protocol`].
#[derive(Debug)]
pub struct SinkConn {
    resp: RespState,
    server: Arc<SinkServer>,
    reader: LogReader,
    /// Replies wait for this lsn to be durable.
    hold: Option<u64>,
    channels: BTreeSet<Bytes>,
    patterns: Vec<Glob>,
    /// The live subscriber's read position.
    tail: Option<Position>,
    loaded: Option<Loaded>,
    blocked: Option<Blocked>,
    /// A request that would flush held replies (QUIT, RESET, HELLO), run
    /// once they are durable.
    deferred: Option<Request>,
    /// A protocol error met while replies were held, answered after them.
    deferred_error: Option<ProtocolError>,
    /// The last time the connection was driven.
    now: Instant,
}

/// sink's whole command table: its own commands, then the stream commands.
pub fn command_table() -> &'static [Command<SinkCommand>] {
    static TABLE: OnceLock<Vec<Command<SinkCommand>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<Command<SinkCommand>> = SINK_COMMANDS.iter().map(copy_own).collect();
        t.extend(STREAM_COMMANDS.iter().map(wrap_stream));
        t
    })
}

fn copy_own(c: &'static Command<SinkCommand>) -> Command<SinkCommand> {
    Command {
        id: c.id,
        name: c.name,
        arity: c.arity,
        flags: c.flags,
        acl: c.acl,
        summary: c.summary,
        since: c.since,
        group: c.group,
        complexity: c.complexity,
        args: c.args,
        subcommands: c.subcommands,
    }
}

fn wrap_stream(c: &'static Command<StreamCommand>) -> Command<SinkCommand> {
    // Built once per process: the table is 'static from then on.
    let subs: &'static [Command<SinkCommand>] = if c.subcommands.is_empty() {
        &[]
    } else {
        Box::leak(
            c.subcommands
                .iter()
                .map(wrap_stream)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    };
    Command {
        id: c.id.map(SinkCommand::Stream),
        name: c.name,
        arity: c.arity,
        flags: c.flags,
        acl: c.acl,
        summary: c.summary,
        since: c.since,
        group: c.group,
        complexity: c.complexity,
        args: c.args,
        subcommands: subs,
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl SinkConn {
    /// The client id.
    pub fn id(&self) -> u64 {
        self.resp.id()
    }

    fn hold_for(&mut self, lsn: u64) {
        self.hold = Some(self.hold.map_or(lsn, |h| h.max(lsn)));
    }

    fn write_error(&mut self, e: &WriteError) {
        self.resp.error(&e.to_string());
    }

    fn session_error(&mut self, e: &SessionError) {
        self.resp.error(&e.to_string());
    }

    fn publish(&mut self, args: &Request, now: Instant) {
        match self.server.broker.publish(&args[1], &args[2], now) {
            Ok((offset, lsn)) => {
                self.resp.writer().integer(offset as i64);
                self.hold_for(lsn);
            }
            Err(e) => self.write_error(&e),
        }
    }

    fn subscribe(&mut self, args: &Request, pattern: bool) {
        if self.tail.is_none() {
            // Live from here on: what is committed now is not sent.
            self.tail = Some(self.reader.end());
        }
        for a in &args[1..] {
            if pattern {
                if !self.patterns.iter().any(|g| g.source() == a) {
                    self.patterns.push(Glob::new(a, false));
                }
            } else {
                self.channels.insert(a.clone());
            }
            let n = self.subscriptions();
            let mut w = self.resp.writer();
            w.push(3);
            w.bulk(if pattern { b"psubscribe" } else { b"subscribe" });
            w.bulk(a);
            w.integer(n as i64);
        }
    }

    fn unsubscribe(&mut self, args: &Request, pattern: bool) {
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let names: Vec<Bytes> = if args.len() > 1 {
            args[1..].to_vec()
        } else if pattern {
            self.patterns.iter().map(|g| g.source().clone()).collect()
        } else {
            self.channels.iter().cloned().collect()
        };
        if names.is_empty() {
            let n = self.subscriptions();
            let mut w = self.resp.writer();
            w.push(3);
            w.bulk(kind);
            w.null();
            w.integer(n as i64);
        }
        for name in names {
            if pattern {
                self.patterns.retain(|g| g.source() != &name);
            } else {
                self.channels.remove(&name);
            }
            let n = self.subscriptions();
            let mut w = self.resp.writer();
            w.push(3);
            w.bulk(kind);
            w.bulk(&name);
            w.integer(n as i64);
        }
        if self.subscriptions() == 0 {
            self.tail = None;
        }
    }

    fn session(&mut self, cmd: SinkCommand, args: &Request, now: Instant) {
        let broker = self.server.broker.clone();
        let name = &args[2];
        if name.is_empty() || name.len() > MAX_NAME {
            self.resp.error(&format!(
                "ERR invalid session name length {} (1 to {MAX_NAME} bytes)",
                name.len()
            ));
            return;
        }
        match cmd {
            SinkCommand::SessionCreate => {
                let filters: Vec<&[u8]> = args[3..].iter().map(|f| &f[..]).collect();
                if filters.len() > MAX_FILTERS
                    || filters.iter().any(|f| f.is_empty() || f.len() > MAX_FILTER)
                {
                    self.resp.error(&format!(
                        "ERR at most {MAX_FILTERS} filters of 1 to {MAX_FILTER} bytes each"
                    ));
                    return;
                }
                match broker.create_session(name, &filters, now) {
                    Ok(lsn) => {
                        self.resp.writer().simple(b"OK");
                        if let Some(lsn) = lsn {
                            self.hold_for(lsn);
                        }
                    }
                    Err(e) => self.session_error(&e),
                }
            }
            SinkCommand::SessionLoad => {
                if let Some(l) = &self.loaded
                    && l.name != *name
                {
                    self.resp.error(
                        "ERR another session is loaded on this connection: SESSION UNLOAD it first",
                    );
                    return;
                }
                if let Some(l) = self.loaded.take() {
                    broker.unload(&l.name, l.lease, now);
                }
                match broker.load_session(name, self.id(), now) {
                    Ok((lease, pos)) => {
                        if let Some(old) = lease.took_from {
                            tracing::info!(session = %String::from_utf8_lossy(name), from = old, to = self.id(), "session taken over");
                        }
                        self.loaded = Some(Loaded {
                            name: name.clone(),
                            lease: lease.lease,
                            pos,
                            next: lease.cursor + 1,
                        });
                        self.resp.writer().simple(b"OK");
                    }
                    Err(e) => self.session_error(&e),
                }
            }
            SinkCommand::SessionAck => {
                let Some(offset) = parse_u64(&args[3]) else {
                    self.resp
                        .error("ERR value is not an integer or out of range");
                    return;
                };
                match broker.ack(name, self.id(), offset, now) {
                    Ok((cursor, lsn)) => {
                        self.resp.writer().integer(cursor as i64);
                        if let Some(lsn) = lsn {
                            self.hold_for(lsn);
                        }
                    }
                    Err(e) => self.session_error(&e),
                }
            }
            SinkCommand::SessionUnload => match self.loaded.take() {
                Some(l) if l.name == *name => {
                    broker.unload(&l.name, l.lease, now);
                    self.resp.writer().simple(b"OK");
                }
                other => {
                    self.loaded = other;
                    self.session_error(&SessionError::NotLoaded);
                }
            },
            SinkCommand::SessionDelete => match broker.delete_session(name) {
                Some(lsn) => {
                    self.resp.writer().integer(1);
                    self.hold_for(lsn);
                }
                None => self.resp.writer().integer(0),
            },
            SinkCommand::SessionInfo => {
                let info = broker.info();
                let Some(s) = info.sessions.iter().find(|s| s.name == *name) else {
                    self.session_error(&SessionError::Unknown);
                    return;
                };
                let filters: Vec<Bytes> = broker.with_sessions(|all| {
                    all.get(name)
                        .map(|x| {
                            x.filters()
                                .iter()
                                .map(|f| Bytes::copy_from_slice(f.source()))
                                .collect()
                        })
                        .unwrap_or_default()
                });
                let mut w = self.resp.writer();
                w.map(7);
                w.bulk(b"name");
                w.bulk(&s.name);
                w.bulk(b"filters");
                w.array(filters.len());
                for f in &filters {
                    w.bulk(f);
                }
                w.bulk(b"cursor");
                w.integer(s.cursor as i64);
                w.bulk(b"lag-messages");
                w.integer(s.lag_messages as i64);
                w.bulk(b"lag-bytes");
                w.integer(s.lag_bytes as i64);
                w.bulk(b"window-fill");
                w.integer(s.window_fill as i64);
                w.bulk(b"loaded-by");
                match s.owner {
                    Some(o) => w.integer(o as i64),
                    None => w.null(),
                }
            }
            _ => {}
        }
    }

    fn stream(&mut self, cmd: StreamCommand, args: &Request, now: Instant) {
        let broker = self.server.broker.clone();
        let version = broker.stream_version();
        let mut w = self.resp.writer();
        match broker.stream(cmd, args, now, &mut w) {
            Ok((outcome, lsn)) => {
                if let Some(lsn) = lsn {
                    self.hold_for(lsn);
                }
                if let Outcome::Block {
                    timeout_ms, retry, ..
                } = outcome
                {
                    self.blocked = Some(Blocked {
                        cmd,
                        retry,
                        deadline: (timeout_ms > 0).then(|| now + Duration::from_millis(timeout_ms)),
                        version,
                    });
                }
            }
            Err(e) => self.write_error(&e),
        }
    }

    /// A blocked stream read: answered when streams changed or at its deadline.
    fn poll_blocked(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        let Some(b) = &mut self.blocked else {
            return Poll::Ready(());
        };
        if b.deadline.is_some_and(|d| now >= d) {
            self.blocked = None;
            Streams::timeout_reply(&mut self.resp.writer());
            return Poll::Ready(());
        }
        let broker = self.server.broker.clone();
        loop {
            let Some(b) = &mut self.blocked else {
                return Poll::Ready(());
            };
            match broker.poll_stream_change(b.version, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(v) => {
                    b.version = v;
                    let (cmd, retry) = (b.cmd, b.retry.clone());
                    let mut w = self.resp.writer();
                    match broker.stream(cmd, &retry, now, &mut w) {
                        Ok((Outcome::Done, lsn)) => {
                            if let Some(lsn) = lsn {
                                self.hold_for(lsn);
                            }
                            self.blocked = None;
                        }
                        Ok((Outcome::Block { retry, .. }, lsn)) => {
                            if let Some(lsn) = lsn {
                                self.hold_for(lsn);
                            }
                            if let Some(b) = &mut self.blocked {
                                b.retry = retry;
                            }
                        }
                        Err(e) => {
                            self.blocked = None;
                            self.write_error(&e);
                        }
                    }
                }
            }
        }
    }

    fn info(&mut self, args: &Request) {
        let sections: Vec<String> = args[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let refs: Vec<&str> = sections.iter().map(String::as_str).collect();
        let text = self.server.broker.info().render(
            &refs,
            resp::REDIS_COMPAT_VERSION,
            self.server.clients.load(Ordering::Relaxed),
        );
        let mut w = self.resp.writer();
        w.verbatim(b"txt", text.as_bytes());
    }

    /// Pushes a notice that the loaded session ended, and forgets it.
    fn end_session(&mut self, why: &str, now: Instant) {
        if let Some(l) = self.loaded.take() {
            self.server.broker.unload(&l.name, l.lease, now);
            let mut w = self.resp.writer();
            w.push(3);
            w.bulk(b"session-end");
            w.bulk(&l.name);
            w.bulk(why.as_bytes());
        }
    }

    /// One step of the loaded session's delivery; true when it pushed or
    /// ended something, false when it waits (registered with `cx`).
    fn pump_session(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let broker = self.server.broker.clone();
        let Some(l) = &self.loaded else {
            return false;
        };
        let (d, room, cursor) = broker.may_deliver(&l.name, l.lease, cx.waker());
        match d {
            Deliver::Lost => {
                self.end_session("session taken over, deleted or expired", now);
                return true;
            }
            Deliver::WindowFull => return false,
            Deliver::Yes => {}
        }
        let max = room.clamp(1, PUSH_BATCH);
        let Some(l) = &mut self.loaded else {
            return false;
        };
        // Acknowledged ahead of delivery: skipped.
        l.next = l.next.max(cursor + 1);
        let mut pos = l.pos;
        let entries = match self.reader.read_entries(&mut pos, READ_BATCH) {
            Ok(e) => e,
            Err(KidsError::Released { .. }) if broker.first_offset() <= l.next => {
                // Released behind an ack that skipped ahead: nothing the
                // session needs went; read on from where it is due.
                if let crate::broker::Seek::At(p) = broker.seek(l.next) {
                    l.pos = p;
                    return true;
                }
                let gone = KidsError::Released {
                    at: l.pos,
                    start: self.reader.start(),
                };
                let why = session_read_error(&gone, broker.first_offset());
                self.end_session(&why, now);
                return true;
            }
            Err(e) => {
                let why = session_read_error(&e, broker.first_offset());
                self.end_session(&why, now);
                return true;
            }
        };
        if entries.is_empty() {
            // Caught up with nothing unacknowledged: the messages passed
            // over matched no filter, so the cursor moves past them, or a
            // session with rare topics would keep the whole log.
            if l.next > cursor + SKIP_AHEAD && room == broker.config().sessions.window as usize {
                broker.skip_to(&l.name, l.lease, l.next - 1, now);
            }
            return match self.reader.poll_advance(l.pos, cx) {
                Poll::Pending => false,
                Poll::Ready(Ok(_)) => true,
                Poll::Ready(Err(e)) => {
                    let why = session_read_error(&e, broker.first_offset());
                    self.end_session(&why, now);
                    true
                }
            };
        }
        let filters = broker.with_sessions(|s| {
            s.get(&l.name)
                .map(|x| x.filters().to_vec())
                .unwrap_or_default()
        });
        let mut offsets = Vec::new();
        let mut stopped_at = None;
        let (name, lease) = (l.name.clone(), l.lease);
        // Pushes are written straight from the log's read buffer.
        let mut w = self.resp.writer();
        for (at, payload) in &entries {
            let Ok(rec) = record::decode(payload) else {
                stopped_at = Some(*at);
                tracing::error!(position = %at, "undecodable record in the log");
                break;
            };
            let (offset, topic, body) = match rec {
                Record::Message {
                    offset,
                    topic,
                    payload,
                    ..
                } => (offset, topic, payload),
                Record::StreamEntry { offset, .. } => {
                    if offset >= l.next {
                        l.next = offset + 1;
                    }
                    continue;
                }
                _ => continue,
            };
            if offset < l.next {
                continue;
            }
            if !filters.iter().any(|f| f.matches(topic)) {
                l.next = offset + 1;
                continue;
            }
            if offsets.len() == max {
                stopped_at = Some(*at);
                break;
            }
            offsets.push(offset);
            w.push(5);
            w.bulk(b"session");
            w.bulk(&name);
            w.integer(offset as i64);
            w.bulk(topic);
            w.bulk(body);
            l.next = offset + 1;
        }
        l.pos = stopped_at.unwrap_or(pos);
        if !offsets.is_empty() {
            broker.delivered(&name, lease, &offsets);
        }
        true
    }

    /// One step of the live subscriber's delivery.
    fn pump_tail(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(mut pos) = self.tail else {
            return false;
        };
        let start = pos;
        let entries = match self.reader.read_entries(&mut pos, READ_BATCH) {
            Ok(e) => e,
            Err(KidsError::Released { start, .. }) => {
                // Fire-and-forget: a listener that fell behind retention skips ahead.
                tracing::warn!(
                    client = self.id(),
                    "subscriber fell behind retention; skipping ahead"
                );
                self.tail = Some(start);
                return true;
            }
            Err(e) => {
                tracing::error!(client = self.id(), error = %e, "subscriber cannot read the log");
                self.tail = None;
                return false;
            }
        };
        if entries.is_empty() {
            return self.reader.poll_advance(start, cx).is_ready();
        }
        self.tail = Some(pos);
        let mut w = self.resp.writer();
        for (_, payload) in &entries {
            if let Ok(Record::Message { topic, payload, .. }) = record::decode(payload) {
                if self.channels.contains(topic) {
                    w.push(3);
                    w.bulk(b"message");
                    w.bulk(topic);
                    w.bulk(payload);
                }
                for g in &self.patterns {
                    if g.matches(topic) {
                        w.push(4);
                        w.bulk(b"pmessage");
                        w.bulk(g.source());
                        w.bulk(topic);
                        w.bulk(payload);
                    }
                }
            }
        }
        true
    }
}

fn session_read_error(e: &KidsError, first: u64) -> String {
    match e {
        KidsError::Released { .. } => format!(
            "GAP messages were removed by retention while loaded; the first retained offset is {first}"
        ),
        other => format!("ERR log read failed: {other}"),
    }
}

impl RespServer for SinkConn {
    type Command = SinkCommand;

    fn commands(&self) -> &'static [Command<SinkCommand>] {
        command_table()
    }

    fn resp(&mut self) -> &mut RespState {
        &mut self.resp
    }

    fn resp_ref(&self) -> &RespState {
        &self.resp
    }

    fn run(&mut self, command: SinkCommand, args: Request, now: Instant) {
        match command {
            SinkCommand::Publish | SinkCommand::Log => self.publish(&args, now),
            SinkCommand::Subscribe => self.subscribe(&args, false),
            SinkCommand::Psubscribe => self.subscribe(&args, true),
            SinkCommand::Unsubscribe => self.unsubscribe(&args, false),
            SinkCommand::Punsubscribe => self.unsubscribe(&args, true),
            SinkCommand::SessionList => {
                let names: Vec<Bytes> = self
                    .server
                    .broker
                    .with_sessions(|s| s.iter().map(|x| x.name().clone()).collect());
                let mut w = self.resp.writer();
                w.array(names.len());
                for n in &names {
                    w.bulk(n);
                }
            }
            SinkCommand::SessionHelp => {
                let mut w = self.resp.writer();
                resp::write_help(&mut w, command_table(), "session");
            }
            SinkCommand::Info => self.info(&args),
            SinkCommand::Stream(cmd) => self.stream(cmd, &args, now),
            other => self.session(other, &args, now),
        }
    }

    fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    fn end_subscriptions(&mut self) {
        self.channels.clear();
        self.patterns.clear();
        self.tail = None;
    }

    fn reset(&mut self) {
        if let Some(l) = self.loaded.take() {
            self.server.broker.unload(&l.name, l.lease, self.now);
        }
        self.blocked = None;
    }

    fn server_name(&self) -> &'static str {
        "sink"
    }
}

impl Protocol for SinkConn {
    type Request = Request;
    type Error = KidsError;

    fn handle(&mut self, request: Request, now: Instant) -> Flow {
        self.now = now;
        // These flush what is buffered: not before held replies are durable.
        if self.hold.is_some()
            && request.first().is_some_and(|c| {
                c.eq_ignore_ascii_case(b"quit")
                    || c.eq_ignore_ascii_case(b"reset")
                    || c.eq_ignore_ascii_case(b"hello")
            })
        {
            self.deferred = Some(request);
            return Flow::Wait;
        }
        let flow = resp::dispatch(self, request, now);
        if flow == Flow::Continue && self.blocked.is_some() {
            Flow::Wait
        } else {
            flow
        }
    }

    fn decode_error(&mut self, error: KidsError, now: Instant) -> Flow {
        match error {
            KidsError::Protocol(e) => {
                if e == ProtocolError::QueryBufferLimit {
                    tracing::warn!(
                        client = self.id(),
                        "closing client that reached the query buffer limit"
                    );
                }
                if self.hold.is_some() {
                    // The error line follows the held replies, once durable.
                    self.deferred_error = Some(e);
                    return Flow::Wait;
                }
                resp::protocol_error(self, &e, now)
            }
            _ => Flow::Close,
        }
    }

    fn flush(&mut self, now: Instant) {
        if self.hold.is_none() {
            resp::flush(self, now);
        }
    }

    fn outbox(&self) -> &Outbox {
        self.resp.outbox()
    }

    fn nlimits(&self) -> &NLimits {
        self.resp.limits()
    }

    fn is_holding(&self) -> bool {
        self.hold.is_some()
    }

    fn poll_release(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Flow> {
        self.now = now;
        if self.blocked.is_some() && self.poll_blocked(cx, now).is_pending() {
            // Earlier replies go out while the read waits, once durable.
            if let Some(lsn) = self.hold {
                match self.server.broker.poll_durable(lsn, cx) {
                    Poll::Ready(true) => self.hold = None,
                    Poll::Ready(false) => return Poll::Ready(self.never_durable()),
                    Poll::Pending => {}
                }
            }
            if self.hold.is_none() {
                resp::flush(self, now);
            }
            return Poll::Pending;
        }
        if let Some(lsn) = self.hold {
            match self.server.broker.poll_durable(lsn, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(true) => self.hold = None,
                Poll::Ready(false) => return Poll::Ready(self.never_durable()),
            }
        }
        resp::flush(self, now);
        if let Some(e) = self.deferred_error.take() {
            return Poll::Ready(resp::protocol_error(self, &e, now));
        }
        if let Some(request) = self.deferred.take() {
            let flow = Protocol::handle(self, request, now);
            if self.hold.is_none() {
                resp::flush(self, now);
            }
            return Poll::Ready(flow);
        }
        Poll::Ready(if self.resp.is_closing() {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.subscriptions() > 0 || self.loaded.is_some() {
            Poll::Ready(())
        } else {
            self.server.broker.poll_room(cx)
        }
    }

    fn bounds_output(&self) -> bool {
        self.subscriptions() > 0 || self.loaded.is_some()
    }

    fn may_idle(&self) -> bool {
        self.subscriptions() > 0 || self.loaded.is_some() || self.blocked.is_some()
    }

    fn poll_produce(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        self.now = now;
        if self.hold.is_some() || self.blocked.is_some() {
            return Poll::Pending;
        }
        let mut progress = self.pump_session(cx, now);
        progress |= self.pump_tail(cx);
        if progress {
            resp::flush(self, now);
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.blocked.as_ref().and_then(|b| b.deadline)
    }
}

impl SinkConn {
    /// Held replies will never be durable (the log failed or stopped):
    /// close unanswered; the client sends again after reconnecting.
    fn never_durable(&mut self) -> Flow {
        tracing::warn!(
            client = self.id(),
            "log failed or stopped before these writes were durable; closing unanswered"
        );
        self.resp.discard();
        self.hold = None;
        self.deferred = None;
        self.deferred_error = None;
        self.resp.set_closing();
        Flow::Close
    }
}

impl Drop for SinkConn {
    fn drop(&mut self) {
        if let Some(l) = self.loaded.take() {
            let now = self.now;
            self.server.broker.unload(&l.name, l.lease, now);
        }
        self.server.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
