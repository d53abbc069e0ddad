//! One client connection's state machine: requests in, replies out through its outbox.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::pubsub::commands::{KIDS_COMMANDS, KidsCommand};
use crate::pubsub::nlimit::ClientClass;
use crate::pubsub::nlimit::NLimits;
use crate::pubsub::router::{Fanout, Published, Router};
use crate::resp::{
    self, Command, Proto, ReplyWriter, Request, RequestDecoder, RespServer, RespState, prefix,
    write_help,
};
use crate::server::outbox::{CloseReason, Outbox};
use crate::server::{Flow, Protocol, RequestCodec};
use crate::{Error, ProtocolError};

pub use crate::resp::REDIS_COMPAT_VERSION;

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
    resp: RespState,
    channels: OrderedSet,
    patterns: OrderedSet,
    /// A LOG was refused: every later LOG on this connection is refused too,
    /// so a pipelining agent's re-sends cannot land out of order.
    log_refused: bool,
    /// The tap's ticket of the last message published whose replies are held.
    ticket: Option<u64>,
    /// A request that would have released held replies: handled at `stored`.
    deferred: Option<Request>,
    /// A decoding error that came while replies were held: answered at `stored`.
    deferred_error: Option<ProtocolError>,
    /// A publish whose pattern matching was cut short, to carry on in
    /// [`Protocol::poll_release`] after the other connections ran; its
    /// reply and every later request wait for it.
    fanout: Option<Fanout>,
}

/// Names in the order they were added (Redis 7.0 confirms `PUNSUBSCRIBE`
/// without arguments in subscription order), with constant-time membership.
#[derive(Debug, Default)]
struct OrderedSet {
    order: Vec<Bytes>,
    index: HashSet<Bytes>,
}

impl OrderedSet {
    fn len(&self) -> usize {
        self.order.len()
    }
    fn insert(&mut self, name: Bytes) -> bool {
        if !self.index.insert(name.clone()) {
            return false;
        }
        self.order.push(name);
        true
    }
    fn remove(&mut self, name: &[u8]) -> bool {
        if !self.index.remove(name) {
            return false;
        }
        if let Some(i) = self.order.iter().position(|n| &n[..] == name) {
            self.order.remove(i);
        }
        true
    }
    fn take(&mut self) -> Vec<Bytes> {
        self.index.clear();
        std::mem::take(&mut self.order)
    }
    fn names(&self) -> &[Bytes] {
        &self.order
    }
}

impl Session {
    /// A new session on `router`.
    pub fn new(router: &Router) -> Self {
        Self {
            resp: RespState::new(router.new_outbox(), *router.config().limits()),
            router: router.clone(),
            channels: OrderedSet::default(),
            patterns: OrderedSet::default(),
            log_refused: false,
            ticket: None,
            fanout: None,
            deferred: None,
            deferred_error: None,
        }
    }

    /// The outbox the connection's writer drains.
    pub fn outbox(&self) -> &Arc<Outbox> {
        self.resp.outbox()
    }

    /// The client id.
    pub fn id(&self) -> u64 {
        self.resp.id()
    }

    /// The protocol version in use.
    pub fn proto(&self) -> Proto {
        self.resp.proto()
    }

    /// Channel plus pattern subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// True once the session asked for the connection to close.
    pub fn is_closing(&self) -> bool {
        self.resp.is_closing()
    }

    fn writer(&mut self) -> ReplyWriter<'_> {
        self.resp.writer()
    }

    fn error(&mut self, text: &str) {
        self.resp.error(text);
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
            None if self.resp.is_closing() => Flow::Close,
            None => Flow::Continue,
        }
    }

    /// The tap will never store [`Session::ticket`] (it stopped): the held
    /// replies and the waiting request are dropped unanswered, and the
    /// session closes, so the publisher re-sends elsewhere or later.
    pub fn unstored(&mut self) -> Flow {
        self.resp.discard();
        self.ticket = None;
        self.deferred = None;
        self.deferred_error = None;
        self.resp.set_closing();
        Flow::Close
    }

    /// Moves the replies written so far into the outbox.
    pub fn flush(&mut self, now: Instant) {
        resp::flush(self, now);
    }

    /// Drains everything queued in the outbox into one buffer, without a
    /// socket: for tests, and for embedding the session in a custom transport.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let waker = futures_noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let limits = *self.resp.limits();
        while let std::task::Poll::Ready(Ok(n)) =
            self.resp.outbox().poll_drain(&mut cx, &mut buf, usize::MAX)
        {
            self.resp.outbox().consumed(n, &limits);
        }
        buf.to_vec()
    }

    /// Answers a decoding error as Redis does and asks for the connection to close.
    pub fn protocol_error(&mut self, err: &ProtocolError, now: Instant) -> Flow {
        if self.ticket.is_some() || self.fanout.is_some() {
            // The replies before it wait for their ticket or their publish;
            // the error follows them.
            self.deferred_error = Some(err.clone());
            return Flow::Wait;
        }
        resp::protocol_error(self, err, now)
    }

    /// Handles one request. Replies are buffered until [`Session::flush`].
    pub fn handle(&mut self, args: Request, now: Instant) -> Flow {
        if self.resp.is_closing() {
            return Flow::Close;
        }
        let Some(first) = args.first() else {
            return Flow::Continue;
        };
        // A publish still routing: everything after it waits.
        if self.fanout.is_some() {
            self.deferred = Some(args);
            return Flow::Wait;
        }
        // While replies wait for a ticket, only what cannot flush them goes on.
        if self.ticket.is_some()
            && !(self.subscriptions() == 0
                && (first.eq_ignore_ascii_case(b"publish") || first.eq_ignore_ascii_case(b"log")))
        {
            self.deferred = Some(args);
            return Flow::Wait;
        }
        resp::dispatch(self, args, now)
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
        let max = self.router.config().channel_len();
        if channel.len() > max {
            self.error(&format!("ERR channel name longer than {max} bytes"));
            return;
        }
        match self.router.publish_sliced(channel, message, now) {
            Ok(Published::Done { receivers, ticket }) => {
                if ticket.is_some() {
                    self.ticket = ticket;
                }
                self.writer().integer(receivers as i64);
            }
            Ok(Published::Sliced(rest)) => {
                if rest.ticket().is_some() {
                    self.ticket = rest.ticket();
                }
                self.fanout = Some(rest);
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
        self.resp.outbox().set_class(class);
    }

    fn subscribe(&mut self, names: &[Bytes], pattern: bool, now: Instant) {
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        let mut added = Vec::new();
        let config = self.router.config();
        let (max_pattern, max_channel) = (config.pattern_len(), config.channel_len());
        let max_patterns = config.patterns_per_client();
        // Every name is checked before any is taken: a refusal is the one
        // reply to the whole command, as Redis refuses a command, never an
        // error among confirmations (which clients such as node-redis
        // cannot match to a request).
        let (max_len, what) = if pattern {
            (max_pattern, "pattern")
        } else {
            (max_channel, "channel name")
        };
        if names.iter().any(|name| name.len() > max_len) {
            return self.error(&format!("ERR {what} longer than {max_len} bytes"));
        }
        if pattern && self.patterns.len() + names.len() > max_patterns {
            let mut new: Vec<&[u8]> = names
                .iter()
                .map(|name| &name[..])
                .filter(|name| !self.patterns.index.contains(*name))
                .collect();
            new.sort_unstable();
            new.dedup();
            if self.patterns.len() + new.len() > max_patterns {
                return self.error(&format!(
                    "ERR max number of patterns per client reached ({max_patterns})"
                ));
            }
        }
        for name in names {
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
                self.router.psubscribe(name, self.resp.outbox());
            } else {
                self.router.subscribe(name, self.resp.outbox());
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
            set.names().to_vec()
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
                    self.router.punsubscribe(name, self.resp.outbox());
                } else {
                    self.router.unsubscribe(name, self.resp.outbox());
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
        for c in self.channels.take() {
            self.router.unsubscribe(&c, self.resp.outbox());
        }
        for p in self.patterns.take() {
            self.router.punsubscribe(&p, self.resp.outbox());
        }
        self.set_class();
    }

    fn pubsub_channels(&mut self, args: &Request) {
        if args.len() > 3 {
            return self.resp.error_with(
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

impl RespServer for Session {
    type Command = KidsCommand;

    fn commands(&self) -> &'static [Command<KidsCommand>] {
        KIDS_COMMANDS
    }

    fn resp(&mut self) -> &mut RespState {
        &mut self.resp
    }

    fn resp_ref(&self) -> &RespState {
        &self.resp
    }

    fn run(&mut self, command: KidsCommand, args: Request, now: Instant) {
        match command {
            KidsCommand::Publish => self.publish(args, false, now),
            KidsCommand::Log => self.publish(args, true, now),
            KidsCommand::Subscribe => self.subscribe(&args[1..], false, now),
            KidsCommand::Psubscribe => self.subscribe(&args[1..], true, now),
            KidsCommand::Unsubscribe => self.unsubscribe(&args[1..], false),
            KidsCommand::Punsubscribe => self.unsubscribe(&args[1..], true),
            KidsCommand::Info => self.info(&args[1..], now),
            KidsCommand::PubsubChannels => self.pubsub_channels(&args),
            KidsCommand::PubsubNumsub => {
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
            KidsCommand::PubsubNumpat => {
                let n = self.router.numpat() as i64;
                self.writer().integer(n);
            }
            KidsCommand::PubsubHelp => {
                let mut w = self.resp.writer();
                write_help(&mut w, KIDS_COMMANDS, "pubsub");
            }
        }
    }

    fn subscriptions(&self) -> usize {
        Session::subscriptions(self)
    }

    fn end_subscriptions(&mut self) {
        self.unsubscribe_all_silently();
    }

    fn reset(&mut self) {
        self.log_refused = false;
    }

    fn server_name(&self) -> &'static str {
        "kids"
    }

    fn closed_by_nlimit(&self, dropped: u64) {
        self.router.note_nlimit_close(self.resp.outbox(), dropped);
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
        self.resp.outbox()
    }

    fn nlimits(&self) -> &NLimits {
        self.resp.limits()
    }

    fn is_holding(&self) -> bool {
        self.ticket.is_some()
            || self.deferred.is_some()
            || self.deferred_error.is_some()
            || self.fanout.is_some()
    }

    fn must_yield(&self) -> bool {
        self.fanout.is_some()
    }

    fn poll_release(&mut self, cx: &mut std::task::Context<'_>, now: Instant) -> Poll<Flow> {
        if let Some(rest) = &mut self.fanout {
            // One more slice; the connection yields to the others between
            // slices ([`Protocol::must_yield`]).
            let Some(receivers) = self.router.resume(rest) else {
                return Poll::Pending;
            };
            self.fanout = None;
            self.writer().integer(receivers as i64);
        }
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

    fn held_bytes(&self) -> usize {
        RequestDecoder::held_bytes(self)
    }
}

/// Slices a dropped session still spends on a publish it left unfinished.
const DROP_SLICES: usize = 16;

impl Drop for Session {
    fn drop(&mut self) {
        // A publish still routing is carried on a little further, but not
        // without bound: its publisher left unanswered, and finishing here
        // would hold every other connection of the thread.
        if let Some(mut rest) = self.fanout.take() {
            let finished = (0..DROP_SLICES).any(|_| self.router.resume(&mut rest).is_some());
            if !finished {
                tracing::warn!(
                    client = self.id(),
                    patterns_left = rest.remaining(),
                    "publisher gone mid-publish: the patterns left are not matched"
                );
            }
        }
        self.unsubscribe_all_silently();
        self.resp.outbox().close(CloseReason::Gone);
        self.router.drop_outbox();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RouterConfig;
    use crate::resp::{CONNECTION_COMMANDS, ConnCommand};

    /// Every variant, written as an exhaustive match so a new one must be added here.
    fn conn_variants() -> Vec<ConnCommand> {
        use ConnCommand::*;
        let all = [
            Ping,
            Echo,
            Quit,
            Reset,
            Select,
            Hello,
            Auth,
            ClientId,
            ClientGetname,
            ClientSetname,
            ClientSetinfo,
            ClientHelp,
            Command,
            CommandCount,
            CommandDocs,
            CommandInfo,
            CommandHelp,
        ];
        all.to_vec()
    }

    /// The table name of each variant: an exhaustive match, so a new
    /// variant must be named here (and listed above) before this compiles.
    fn conn_name(c: ConnCommand) -> &'static str {
        use ConnCommand::*;
        match c {
            Ping => "ping",
            Echo => "echo",
            Quit => "quit",
            Reset => "reset",
            Select => "select",
            Hello => "hello",
            Auth => "auth",
            ClientId => "client|id",
            ClientGetname => "client|getname",
            ClientSetname => "client|setname",
            ClientSetinfo => "client|setinfo",
            ClientHelp => "client|help",
            Command => "command",
            CommandCount => "command|count",
            CommandDocs => "command|docs",
            CommandInfo => "command|info",
            CommandHelp => "command|help",
        }
    }

    fn kids_variants() -> Vec<KidsCommand> {
        use KidsCommand::*;
        let all = [
            Publish,
            Log,
            Subscribe,
            Psubscribe,
            Unsubscribe,
            Punsubscribe,
            Info,
            PubsubChannels,
            PubsubNumsub,
            PubsubNumpat,
            PubsubHelp,
        ];
        all.to_vec()
    }

    /// As [`conn_name`], for kids' own commands.
    fn kids_name(c: KidsCommand) -> &'static str {
        use KidsCommand::*;
        match c {
            Publish => "publish",
            Log => "log",
            Subscribe => "subscribe",
            Psubscribe => "psubscribe",
            Unsubscribe => "unsubscribe",
            Punsubscribe => "punsubscribe",
            Info => "info",
            PubsubChannels => "pubsub|channels",
            PubsubNumsub => "pubsub|numsub",
            PubsubNumpat => "pubsub|numpat",
            PubsubHelp => "pubsub|help",
        }
    }

    fn entries<X: Copy>(table: &'static [Command<X>]) -> Vec<&'static Command<X>> {
        table
            .iter()
            .chain(table.iter().flat_map(|c| c.subcommands))
            .collect()
    }

    /// The smallest request that fits `c`'s arity, by its full name.
    fn request<X>(c: &Command<X>) -> Request {
        let mut args: Request = c
            .name
            .split('|')
            .map(|p| Bytes::from(p.to_owned()))
            .collect();
        let want = c.arity.unsigned_abs() as usize;
        while args.len() < want {
            args.push(Bytes::from_static(b"x"));
        }
        if c.name == "client|setinfo" {
            args[2] = Bytes::from_static(b"lib-name");
        }
        args
    }

    #[test]
    fn every_table_entry_dispatches_to_its_own_variant() {
        // Each entry runs the variant of its own name (a swapped id fails here).
        for c in entries(CONNECTION_COMMANDS) {
            if let Some(id) = c.id {
                assert_eq!(c.name, conn_name(id), "{id:?}");
            }
        }
        for c in entries(KIDS_COMMANDS) {
            if let Some(id) = c.id {
                assert_eq!(c.name, kids_name(id), "{id:?}");
            }
        }
        // Each variant is named by exactly one entry, each entry by at most one variant.
        let conn: Vec<ConnCommand> = entries(CONNECTION_COMMANDS)
            .iter()
            .filter_map(|c| c.id)
            .collect();
        for v in conn_variants() {
            assert_eq!(conn.iter().filter(|c| **c == v).count(), 1, "{v:?}");
        }
        assert_eq!(conn.len(), conn_variants().len());
        let own: Vec<KidsCommand> = entries(KIDS_COMMANDS).iter().filter_map(|c| c.id).collect();
        for v in kids_variants() {
            assert_eq!(own.iter().filter(|c| **c == v).count(), 1, "{v:?}");
        }
        assert_eq!(own.len(), kids_variants().len());
        // Containers without an id have subcommands to dispatch to.
        for c in entries(CONNECTION_COMMANDS)
            .iter()
            .filter(|c| c.id.is_none())
        {
            assert!(!c.subcommands.is_empty(), "{}", c.name);
        }
        for c in entries(KIDS_COMMANDS).iter().filter(|c| c.id.is_none()) {
            assert!(!c.subcommands.is_empty(), "{}", c.name);
        }
        // And every entry, run by its name, reaches a handler.
        let now = Instant::now();
        let router = Router::new(RouterConfig::default(), now);
        let names: Vec<(String, Request)> = entries(CONNECTION_COMMANDS)
            .iter()
            .filter(|c| c.id.is_some())
            .map(|c| (c.name.to_owned(), request(c)))
            .chain(
                entries(KIDS_COMMANDS)
                    .iter()
                    .filter(|c| c.id.is_some())
                    .map(|c| (c.name.to_owned(), request(c))),
            )
            .collect();
        for (name, args) in names {
            let mut s = Session::new(&router);
            s.handle(args, now);
            s.flush(now);
            let out = String::from_utf8_lossy(&s.take_output()).into_owned();
            assert!(!out.is_empty(), "{name}: no reply");
            for bad in ["unknown command", "unknown subcommand", "wrong number"] {
                assert!(!out.contains(bad), "{name}: {out}");
            }
        }
    }
}
