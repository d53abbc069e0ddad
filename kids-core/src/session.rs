//! One client connection's state machine: requests in, replies out through its outbox.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::commands::{self, Command};
use crate::nlimit::ClientClass;
use crate::nlimit::NLimits;
use crate::outbox::{CloseReason, Outbox, Pushed};
use crate::resp::{Proto, ReplyWriter, Request, RequestDecoder, parse_i64};
use crate::router::Router;
use crate::server::{Flow, Protocol, RequestCodec};
use crate::{Error, ProtocolError};

/// Commands a RESP2 client may run while subscribed.
const SUBSCRIBED_OK: &[&str] = &[
    "ping",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "quit",
    "reset",
];

/// The version kids reports where clients expect a Redis version (`HELLO`,
/// `INFO`): the Redis release whose command semantics it follows.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

/// The state of one client connection, with no IO.
///
/// Feed it requests with [`Session::handle`]; its replies, and the messages
/// the [`Router`] routes to it, come out of its [`Outbox`] in order. Replies
/// are batched: call [`Session::flush`] after each batch of requests read
/// together (the tokio adapter does). Dropping the session unsubscribes it
/// everywhere.
///
/// ```
/// use std::time::Instant;
/// use kids_core::{Router, RouterConfig, Session};
///
/// let now = Instant::now();
/// let router = Router::new(RouterConfig::default(), now);
/// let mut session = Session::new(&router);
/// session.handle(vec!["PING".into()], now);
/// session.flush(now);
/// assert_eq!(session.take_output(), b"+PONG\r\n");
/// ```
#[derive(Debug)]
pub struct Session {
    router: Router,
    outbox: Arc<Outbox>,
    proto: Proto,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    name: Option<Bytes>,
    lib: [Option<Bytes>; 2],
    out: BytesMut,
    closing: bool,
    /// A LOG was refused: every later LOG on this connection is refused too,
    /// so a pipelining agent's re-sends cannot land out of order.
    log_refused: bool,
    /// The tap's ticket of the last message published whose replies are held.
    ticket: Option<u64>,
    /// A request that would have released held replies: handled at `stored`.
    deferred: Option<Request>,
    /// A decoding error that came while replies were held: answered at `stored`.
    deferred_error: Option<ProtocolError>,
}

impl Session {
    /// A new session on `router`.
    pub fn new(router: &Router) -> Self {
        Self {
            router: router.clone(),
            outbox: router.new_outbox(),
            proto: Proto::Resp2,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            name: None,
            lib: [None, None],
            out: BytesMut::new(),
            closing: false,
            log_refused: false,
            ticket: None,
            deferred: None,
            deferred_error: None,
        }
    }

    /// The outbox the connection's writer drains.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The client id.
    pub fn id(&self) -> u64 {
        self.outbox.id()
    }

    /// The protocol version in use.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Channel plus pattern subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// True once the session asked for the connection to close.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    fn writer(&mut self) -> ReplyWriter<'_> {
        ReplyWriter::new(&mut self.out, self.proto)
    }

    fn error(&mut self, text: &str) {
        self.writer().error(text.as_bytes());
    }

    /// The ticket the replies written since the last flush wait for: the
    /// tap's ticket of the last message published, until [`Session::stored`].
    /// While it is set the transport must not [`Session::flush`]: it waits
    /// for [`Router::poll_stored`], so a publisher is answered only for
    /// messages that were stored. Meanwhile the session takes more
    /// `PUBLISH`/`LOG` requests, and answers any other with [`Flow::Wait`].
    pub fn ticket(&self) -> Option<u64> {
        self.ticket
    }

    /// The tap stored [`Session::ticket`]: flushes the held replies and
    /// handles the request that waited, if one did.
    pub fn stored(&mut self, now: Instant) -> Flow {
        self.ticket = None;
        self.flush(now);
        if let Some(err) = self.deferred_error.take() {
            return self.protocol_error(&err, now);
        }
        match self.deferred.take() {
            Some(req) => self.handle(req, now),
            None if self.closing => Flow::Close,
            None => Flow::Continue,
        }
    }

    /// The tap will never store [`Session::ticket`] (it stopped): the held
    /// replies and the waiting request are dropped unanswered, and the
    /// session closes, so the publisher re-sends elsewhere or later.
    pub fn unstored(&mut self) -> Flow {
        self.out.clear();
        self.ticket = None;
        self.deferred = None;
        self.deferred_error = None;
        self.closing = true;
        Flow::Close
    }

    /// Moves the replies written so far into the outbox.
    pub fn flush(&mut self, now: Instant) {
        if !self.out.is_empty() {
            let chunk = self.out.split().freeze();
            let pushed = self
                .outbox
                .push(chunk, false, now, self.router.config().limits());
            self.count_close(pushed);
        }
    }

    /// Moves the replies written so far into the outbox and switches the
    /// protocol version with them, atomically with respect to publishers.
    fn flush_switching(&mut self, proto: Proto, now: Instant) {
        let chunk = self.out.split().freeze();
        let pushed = self
            .outbox
            .push_switching(chunk, proto, now, self.router.config().limits());
        self.count_close(pushed);
    }

    /// A reply that took the client over its nlimit closes it: counted like any other.
    fn count_close(&self, pushed: Pushed) {
        if let Pushed::Closed { dropped } = pushed {
            self.router.note_nlimit_close(&self.outbox, dropped);
        }
    }

    /// An error made of text, a client-given argument (raw bytes, as Redis
    /// echoes them) and more text.
    fn error_with(&mut self, before: &str, arg: &[u8], after: &str) {
        let mut msg = Vec::with_capacity(before.len() + arg.len() + after.len());
        msg.extend_from_slice(before.as_bytes());
        msg.extend_from_slice(arg);
        msg.extend_from_slice(after.as_bytes());
        self.writer().error(&msg);
    }

    /// Drains everything queued in the outbox into one buffer, without a
    /// socket: for tests, and for embedding the session in a custom transport.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let waker = futures_noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        while let std::task::Poll::Ready(Ok(n)) =
            self.outbox.poll_drain(&mut cx, &mut buf, usize::MAX)
        {
            self.outbox.consumed(n, self.router.config().limits());
        }
        buf.to_vec()
    }

    /// Answers a decoding error as Redis does and asks for the connection to close.
    pub fn protocol_error(&mut self, err: &ProtocolError, now: Instant) -> Flow {
        if self.ticket.is_some() {
            // The replies before it wait for their ticket; the error follows them.
            self.deferred_error = Some(err.clone());
            return Flow::Wait;
        }
        // Nothing may follow the error line: end the subscriptions first.
        self.unsubscribe_all_silently();
        if let Some(line) = err.reply() {
            self.writer().raw(&line);
        }
        tracing::debug!(client = self.id(), %err, "protocol error, closing client");
        self.closing = true;
        self.flush(now);
        Flow::Close
    }

    /// Handles one request. Replies are buffered until [`Session::flush`].
    pub fn handle(&mut self, args: Request, now: Instant) -> Flow {
        if self.closing {
            return Flow::Close;
        }
        let Some(first) = args.first() else {
            return Flow::Continue;
        };
        // While replies wait for a ticket, only what cannot flush them goes on.
        if self.ticket.is_some()
            && !(self.subscriptions() == 0
                && (first.eq_ignore_ascii_case(b"publish") || first.eq_ignore_ascii_case(b"log")))
        {
            self.deferred = Some(args);
            return Flow::Wait;
        }
        // Redis 7.0 answers QUIT before any other check.
        if first.eq_ignore_ascii_case(b"quit") {
            // Nothing may follow +OK: end the subscriptions first.
            self.unsubscribe_all_silently();
            self.writer().simple(b"OK");
            self.closing = true;
            self.flush(now);
            return Flow::Close;
        }
        let Some(mut cmd) = commands::lookup(first) else {
            self.unknown_command(&args);
            return Flow::Continue;
        };
        if !cmd.subcommands.is_empty() && args.len() >= 2 {
            match commands::lookup_sub(cmd, &args[1]) {
                Some(sub) => cmd = sub,
                None => {
                    let after = format!("'. Try {} HELP.", cmd.name.to_ascii_uppercase());
                    self.error_with("ERR unknown subcommand '", prefix(&args[1], 128), &after);
                    return Flow::Continue;
                }
            }
        }
        if !cmd.arity_ok(args.len()) {
            self.error(&format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.name
            ));
            return Flow::Continue;
        }
        if self.proto == Proto::Resp2
            && self.subscriptions() > 0
            && !SUBSCRIBED_OK.contains(&cmd.name)
        {
            self.error(&format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                cmd.name
            ));
            return Flow::Continue;
        }
        self.dispatch(cmd, args, now);
        Flow::Continue
    }

    fn unknown_command(&mut self, args: &Request) {
        // Byte-exact with Redis: name and args are cut at 128 bytes, \r\n become spaces.
        let mut msg = b"ERR unknown command '".to_vec();
        msg.extend_from_slice(&args[0][..args[0].len().min(128)]);
        msg.extend_from_slice(b"', with args beginning with: ");
        let mut listed = 0usize;
        for arg in &args[1..] {
            if listed >= 128 {
                break;
            }
            let take = arg.len().min(128 - listed);
            let before = msg.len();
            msg.push(b'\'');
            msg.extend_from_slice(&arg[..take]);
            msg.extend_from_slice(b"' ");
            listed += msg.len() - before;
        }
        self.writer().error(&msg);
    }

    fn dispatch(&mut self, cmd: &'static Command, args: Request, now: Instant) {
        match cmd.name {
            "publish" => self.publish(args, false, now),
            "log" => self.publish(args, true, now),
            "subscribe" => self.subscribe(&args[1..], false, now),
            "psubscribe" => self.subscribe(&args[1..], true, now),
            "unsubscribe" => self.unsubscribe(&args[1..], false),
            "punsubscribe" => self.unsubscribe(&args[1..], true),
            "ping" => self.ping(&args),
            "echo" => self.writer().bulk(&args[1]),
            "reset" => self.reset(now),
            "select" => self.select(&args[1]),
            "hello" => self.hello(&args, now),
            "info" => self.info(&args[1..], now),
            "client|id" => {
                let id = self.id() as i64;
                self.writer().integer(id);
            }
            "client|getname" => match self.name.clone() {
                Some(n) => self.writer().bulk(&n),
                None => self.writer().null(),
            },
            "client|setname" => {
                if self.set_name(&args[2]) {
                    self.writer().simple(b"OK");
                }
            }
            "client|setinfo" => self.setinfo(&args),
            "command" | "command|info" => {
                self.command_info(&args[if cmd.name == "command" { 1 } else { 2 }..])
            }
            "command|count" => self.writer().integer(commands::count() as i64),
            "command|docs" => self.command_docs(&args[2..]),
            "pubsub|channels" => self.pubsub_channels(&args),
            "pubsub|numsub" => {
                let counts: Vec<(Bytes, usize)> = args[2..]
                    .iter()
                    .map(|c| (c.clone(), self.router.numsub(c)))
                    .collect();
                let mut w = self.writer();
                w.array(counts.len() * 2);
                for (c, n) in counts {
                    w.bulk(&c);
                    w.integer(n as i64);
                }
            }
            "pubsub|numpat" => {
                let n = self.router.numpat() as i64;
                self.writer().integer(n);
            }
            "client|help" | "command|help" | "pubsub|help" => self.help(cmd),
            other => {
                // Every table entry has an arm above; reaching here is a table bug.
                tracing::error!(command = other, "command without a handler");
                self.error(&format!("ERR command '{other}' is not available"));
            }
        }
    }

    fn publish(&mut self, mut args: Request, log: bool, now: Instant) {
        if log && self.log_refused {
            self.error("TRYLATER an earlier LOG on this connection was refused; reconnect and resend from it");
            return;
        }
        // A subscribed client may receive its own message: replies before it go first.
        if self.subscriptions() > 0 {
            self.flush(now);
        }
        let message = args.pop().unwrap_or_default();
        let channel = args.pop().unwrap_or_default();
        match self.router.publish_ticketed(channel, message, now) {
            Ok((n, ticket)) => {
                if ticket.is_some() {
                    self.ticket = ticket;
                }
                self.writer().integer(n as i64);
            }
            Err(refused) => {
                self.log_refused |= log;
                self.error(&format!("TRYLATER {}", refused.reason));
            }
        }
    }

    fn set_class(&self) {
        let class = if self.subscriptions() > 0 {
            ClientClass::Pubsub
        } else {
            ClientClass::Normal
        };
        self.outbox.set_class(class);
    }

    fn subscribe(&mut self, names: &[Bytes], pattern: bool, now: Instant) {
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        let mut added = Vec::new();
        let max_pattern = self.router.config().pattern_len();
        for name in names {
            if pattern && name.len() > max_pattern {
                self.error(&format!("ERR pattern longer than {max_pattern} bytes"));
                continue;
            }
            // A copy: the request's slice would pin the connection's read buffer.
            let name = Bytes::copy_from_slice(name);
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if set.insert(name.clone()) {
                added.push(name.clone());
            }
            self.confirm(kind, Some(&name));
        }
        self.set_class();
        // Confirmations go out before the subscriptions take effect, so every
        // message routed to us afterwards follows them.
        self.flush(now);
        for name in &added {
            if pattern {
                self.router.psubscribe(name, &self.outbox);
            } else {
                self.router.subscribe(name, &self.outbox);
            }
        }
    }

    fn unsubscribe(&mut self, names: &[Bytes], pattern: bool) {
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let targets: Vec<Bytes> = if names.is_empty() {
            let set = if pattern {
                &self.patterns
            } else {
                &self.channels
            };
            set.iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if targets.is_empty() {
            self.confirm(kind, None);
            return;
        }
        // Subscriptions end before their confirmations are written, so messages
        // routed before the end precede the confirmation.
        for name in &targets {
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if set.remove(name) {
                if pattern {
                    self.router.punsubscribe(name, &self.outbox);
                } else {
                    self.router.unsubscribe(name, &self.outbox);
                }
            }
            self.confirm(kind, Some(name));
        }
        self.set_class();
    }

    /// Writes a (un)subscription confirmation: kind, name (null for none), count.
    fn confirm(&mut self, kind: &[u8], name: Option<&Bytes>) {
        let count = self.subscriptions() as i64;
        let mut w = self.writer();
        w.push(3);
        w.bulk(kind);
        match name {
            Some(n) => w.bulk(n),
            None => w.null(),
        }
        w.integer(count);
    }

    fn unsubscribe_all_silently(&mut self) {
        for c in std::mem::take(&mut self.channels) {
            self.router.unsubscribe(&c, &self.outbox);
        }
        for p in std::mem::take(&mut self.patterns) {
            self.router.punsubscribe(&p, &self.outbox);
        }
        self.set_class();
    }

    fn ping(&mut self, args: &Request) {
        if args.len() > 2 {
            self.error("ERR wrong number of arguments for 'ping' command");
            return;
        }
        let subscribed = self.proto == Proto::Resp2 && self.subscriptions() > 0;
        let mut w = self.writer();
        match (subscribed, args.get(1)) {
            (true, arg) => {
                w.array(2);
                w.bulk(b"pong");
                w.bulk(arg.map_or(&b""[..], |a| a));
            }
            (false, Some(arg)) => w.bulk(arg),
            (false, None) => w.simple(b"PONG"),
        }
    }

    fn reset(&mut self, now: Instant) {
        self.unsubscribe_all_silently();
        self.flush(now);
        self.proto = Proto::Resp2;
        self.name = None;
        self.lib = [None, None];
        self.log_refused = false;
        self.writer().simple(b"RESET");
        self.flush_switching(Proto::Resp2, now);
    }

    fn select(&mut self, index: &[u8]) {
        match parse_i64(index) {
            None => self.error("ERR value is not an integer or out of range"),
            Some(n) if i32::try_from(n).is_err() => self
                .error("ERR value is out of range, value must between -2147483648 and 2147483647"),
            Some(0..=15) => self.writer().simple(b"OK"),
            Some(_) => self.error("ERR DB index is out of range"),
        }
    }

    /// Validates a client name as Redis does; writes the error and returns false if bad.
    fn valid_name(&mut self, value: &[u8], what: &str) -> bool {
        if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            self.error(&format!(
                "ERR {what} cannot contain spaces, newlines or special characters."
            ));
            return false;
        }
        true
    }

    fn set_name(&mut self, name: &Bytes) -> bool {
        if !self.valid_name(name, "Client names") {
            return false;
        }
        self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
        true
    }

    fn setinfo(&mut self, args: &Request) {
        if args.len() != 4 {
            self.error_with(
                "ERR unknown subcommand or wrong number of arguments for '",
                prefix(&args[1], 128),
                "'. Try CLIENT HELP.",
            );
            return;
        }
        let slot = if args[2].eq_ignore_ascii_case(b"lib-name") {
            0
        } else if args[2].eq_ignore_ascii_case(b"lib-ver") {
            1
        } else {
            self.error_with("ERR Unrecognized option '", prefix(&args[2], 128), "'");
            return;
        };
        let what = if slot == 0 { "lib-name" } else { "lib-ver" };
        if !self.valid_name(&args[3], what) {
            return;
        }
        self.lib[slot] = (!args[3].is_empty()).then(|| Bytes::copy_from_slice(&args[3]));
        self.writer().simple(b"OK");
    }

    fn hello(&mut self, args: &Request, now: Instant) {
        let mut proto = None;
        let mut next = 1;
        if let Some(ver) = args.get(1) {
            next = 2;
            match parse_i64(ver) {
                None => {
                    return self.error("ERR Protocol version is not an integer or out of range");
                }
                Some(2) => proto = Some(Proto::Resp2),
                Some(3) => proto = Some(Proto::Resp3),
                Some(_) => return self.error("NOPROTO unsupported protocol version"),
            }
        }
        let mut name = None;
        let mut user = None;
        let mut j = next;
        while j < args.len() {
            let more = args.len() - 1 - j;
            if args[j].eq_ignore_ascii_case(b"auth") && more >= 2 {
                user = Some(args[j + 1].clone());
                j += 2;
            } else if args[j].eq_ignore_ascii_case(b"setname") && more >= 1 {
                name = Some(args[j + 1].clone());
                j += 1;
            } else {
                return self.error_with("ERR Syntax error in HELLO option '", &args[j], "'");
            }
            j += 1;
        }
        // kids has no users but Redis's passwordless `default` one.
        if user.is_some_and(|u| &u[..] != b"default") {
            return self.error("WRONGPASS invalid username-password pair or user is disabled.");
        }
        if let Some(name) = name
            && !self.set_name(&name)
        {
            return;
        }
        let switched = proto.filter(|p| *p != self.proto);
        if switched.is_some() {
            // Replies before HELLO go out in the old version.
            self.flush(now);
        }
        if let Some(p) = proto {
            self.proto = p;
        }
        let (id, proto) = (self.id() as i64, self.proto.number());
        let mut w = self.writer();
        w.map(7);
        w.bulk(b"server");
        w.bulk(b"kids");
        w.bulk(b"version");
        w.bulk(REDIS_COMPAT_VERSION.as_bytes());
        w.bulk(b"proto");
        w.integer(proto);
        w.bulk(b"id");
        w.integer(id);
        w.bulk(b"mode");
        w.bulk(b"standalone");
        w.bulk(b"role");
        w.bulk(b"master");
        w.bulk(b"modules");
        w.array(0);
        if let Some(p) = switched {
            // The reply and the switch reach the outbox together: messages routed
            // before are in the old version and precede it, later ones follow.
            self.flush_switching(p, now);
        }
    }

    fn command_info(&mut self, names: &[Bytes]) {
        let mut w = ReplyWriter::new(&mut self.out, self.proto);
        if names.is_empty() {
            w.array(commands::COMMANDS.len());
            commands::COMMANDS
                .iter()
                .for_each(|c| commands::write_info(&mut w, c));
            return;
        }
        w.array(names.len());
        for n in names {
            match find_any(n) {
                Some(c) => commands::write_info(&mut w, c),
                None => w.null(),
            }
        }
    }

    fn command_docs(&mut self, names: &[Bytes]) {
        let found: Vec<&'static Command> = if names.is_empty() {
            commands::COMMANDS.iter().collect()
        } else {
            names.iter().filter_map(|n| find_any(n)).collect()
        };
        let mut w = ReplyWriter::new(&mut self.out, self.proto);
        w.map(found.len());
        for c in found {
            w.bulk(c.name.as_bytes());
            commands::write_docs(&mut w, c);
        }
    }

    fn pubsub_channels(&mut self, args: &Request) {
        if args.len() > 3 {
            return self.error_with(
                "ERR unknown subcommand or wrong number of arguments for '",
                prefix(&args[1], 128),
                "'. Try PUBSUB HELP.",
            );
        }
        let max_pattern = self.router.config().pattern_len();
        if args.get(2).is_some_and(|p| p.len() > max_pattern) {
            return self.error(&format!("ERR pattern longer than {max_pattern} bytes"));
        }
        let channels = self.router.channels(args.get(2).map(|p| &p[..]));
        let mut w = self.writer();
        w.array(channels.len());
        channels.iter().for_each(|c| w.bulk(c));
    }

    fn help(&mut self, cmd: &Command) {
        let parent = commands::lookup(cmd.name.split('|').next().unwrap_or_default().as_bytes());
        let parent_name = cmd
            .name
            .split('|')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let mut lines = vec![format!(
            "{parent_name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
        )];
        for sub in parent.map_or(&[][..], |p| p.subcommands) {
            let short = sub
                .name
                .split('|')
                .nth(1)
                .unwrap_or_default()
                .to_ascii_uppercase();
            lines.push(short);
            lines.push(format!("    {}", sub.summary));
        }
        let mut w = self.writer();
        w.array(lines.len());
        lines.iter().for_each(|l| w.simple(l.as_bytes()));
    }

    fn info(&mut self, sections: &[Bytes], now: Instant) {
        let wanted = |name: &str| {
            sections.is_empty()
                || sections.iter().any(|s| {
                    s.eq_ignore_ascii_case(name.as_bytes())
                        || s.eq_ignore_ascii_case(b"all")
                        || s.eq_ignore_ascii_case(b"everything")
                        || s.eq_ignore_ascii_case(b"default")
                })
        };
        let stats = self.router.stats(now);
        let mut text = String::new();
        if wanted("server") {
            let _ = write!(
                text,
                "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nkids_version:{}\r\nredis_mode:standalone\r\narch_bits:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                usize::BITS,
                stats.uptime_secs,
                stats.uptime_secs / 86_400
            );
        }
        if wanted("clients") {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nblocked_clients:0\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\n",
                stats.connected_clients,
                stats.topics.iter().filter(|t| t.subscribers > 0).count(),
                self.router.numpat()
            );
        }
        if wanted("kids") {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = write!(
                text,
                "# Kids\r\nmessages_in:{}\r\nmessages_out:{}\r\nmessages_in_per_sec:{:.2}\r\nmessages_out_per_sec:{:.2}\r\nmessages_dropped:{}\r\nmessages_refused:{}\r\nclients_closed_nlimit:{}\r\ntopics_tracked:{}\r\nmessages_untracked_topics:{}\r\n",
                stats.messages_in,
                stats.messages_out,
                stats.messages_in_per_sec,
                stats.messages_out_per_sec,
                stats.messages_dropped,
                stats.messages_refused,
                stats.clients_closed_nlimit,
                stats.topics.len(),
                stats.untracked_messages
            );
            for t in &stats.topics {
                let _ = write!(
                    text,
                    "topic_{}:messages={},per_sec={:.2},subscribers={}\r\n",
                    escape_name(&t.name),
                    t.messages,
                    t.per_sec,
                    t.subscribers
                );
            }
        }
        if wanted("stores")
            && let Some(lines) = self.router.tap_info()
        {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str("# Stores\r\n");
            text.push_str(&lines);
        }
        self.writer().verbatim(b"txt", text.as_bytes());
    }
}

/// A kids connection on the server toolkit: RESP requests in, replies and
/// pub/sub messages out, publishers' replies held until their messages are
/// stored, subscribers bounded by their `nlimit` instead of by the read pause.
impl Protocol for Session {
    type Request = Request;
    type Error = Error;

    fn handle(&mut self, request: Request, now: Instant) -> Flow {
        Session::handle(self, request, now)
    }

    fn decode_error(&mut self, error: Error, now: Instant) -> Flow {
        match error {
            Error::Protocol(e) => {
                if e == ProtocolError::QueryBufferLimit {
                    tracing::warn!(
                        client = self.id(),
                        "closing client that reached the query buffer limit"
                    );
                }
                self.protocol_error(&e, now)
            }
            _ => Flow::Close,
        }
    }

    fn flush(&mut self, now: Instant) {
        Session::flush(self, now);
    }

    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn nlimits(&self) -> &NLimits {
        self.router.config().limits()
    }

    fn is_holding(&self) -> bool {
        self.ticket.is_some() || self.deferred.is_some() || self.deferred_error.is_some()
    }

    fn poll_release(&mut self, cx: &mut std::task::Context<'_>, now: Instant) -> Poll<Flow> {
        let Some(ticket) = self.ticket else {
            return Poll::Ready(self.stored(now));
        };
        match self.router.poll_stored(ticket, cx) {
            Poll::Ready(true) => Poll::Ready(self.stored(now)),
            Poll::Ready(false) => {
                // Never to be stored: drop the held replies and close once
                // what was answered before is written; the publisher
                // re-sends after reconnecting.
                tracing::warn!(
                    client = self.id(),
                    "stores stopped before storing this client's messages; closing unanswered"
                );
                Poll::Ready(self.unstored())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_room(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        // A full store queue holds publishers back; subscribers stay able
        // to UNSUBSCRIBE (they are bounded by their nlimit).
        if self.subscriptions() > 0 {
            Poll::Ready(())
        } else {
            self.router.poll_room(cx)
        }
    }

    fn bounds_output(&self) -> bool {
        self.subscriptions() > 0
    }

    fn may_idle(&self) -> bool {
        self.subscriptions() > 0
    }
}

impl RequestCodec for RequestDecoder {
    fn is_mid_request(&self) -> bool {
        RequestDecoder::is_mid_request(self)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.unsubscribe_all_silently();
        self.outbox.close(CloseReason::Gone);
        self.router.drop_outbox();
    }
}

/// A command or `parent|sub` name, for `COMMAND INFO` / `DOCS`.
fn find_any(name: &[u8]) -> Option<&'static Command> {
    match name.iter().position(|&b| b == b'|') {
        None => commands::lookup(name),
        Some(i) => {
            commands::lookup(&name[..i]).and_then(|p| commands::lookup_sub(p, &name[i + 1..]))
        }
    }
}

/// At most `max` bytes of `b` (Redis's `%.128s`).
fn prefix(b: &[u8], max: usize) -> &[u8] {
    &b[..b.len().min(max)]
}

/// A topic name made safe for an INFO line: bytes outside `!`..`~` but `:`
/// and `,` (INFO's separators) are written as `\xHH`.
fn escape_name(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for &b in name {
        if (b'!'..=b'~').contains(&b) && b != b':' && b != b',' && b != b'\\' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

fn futures_noop_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}
