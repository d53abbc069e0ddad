//! The RESP connection layer every RESP server of the SDK shares: dispatch,
//! Redis's error texts, the subscribed-context gate and the connection commands.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::pubsub::nlimit::NLimits;
use crate::resp::command::{
    self, CONNECTION_COMMANDS, Command, ConnCommand, lookup, lookup_sub, write_docs, write_info,
};
use crate::resp::{Proto, ReplyWriter, Request, parse_i64};
use crate::server::Flow;
use crate::server::outbox::{Outbox, Pushed};

/// The version kids reports where clients expect a Redis version (`HELLO`,
/// `INFO`): the Redis release whose command semantics it follows.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

/// Commands a RESP2 client may run while subscribed (Redis 7.0's list).
const SUBSCRIBED_OK: &[&str] = &[
    "ping",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "quit",
    "reset",
];

/// The connection state every RESP server keeps: protocol version, client
/// name and library, the reply buffer and the outbox it is flushed into.
#[derive(Debug)]
pub struct RespState {
    outbox: Arc<Outbox>,
    limits: NLimits,
    proto: Proto,
    name: Option<Bytes>,
    lib: [Option<Bytes>; 2],
    out: BytesMut,
    closing: bool,
}

impl RespState {
    /// The state of a new connection writing into `outbox`, checked against `limits`.
    pub fn new(outbox: Arc<Outbox>, limits: NLimits) -> Self {
        Self {
            outbox,
            limits,
            proto: Proto::Resp2,
            name: None,
            lib: [None, None],
            out: BytesMut::new(),
            closing: false,
        }
    }

    /// The outbox replies are flushed into.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The output limits.
    pub fn limits(&self) -> &NLimits {
        &self.limits
    }

    /// The client id.
    pub fn id(&self) -> u64 {
        self.outbox.id()
    }

    /// The protocol version in use.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The client's name (`CLIENT SETNAME`, `HELLO SETNAME`).
    pub fn name(&self) -> Option<&Bytes> {
        self.name.as_ref()
    }

    /// True once the connection is to close (`QUIT`, a protocol error).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Marks the connection as closing.
    pub fn set_closing(&mut self) {
        self.closing = true;
    }

    /// A writer of replies into the buffer, in the connection's version.
    pub fn writer(&mut self) -> ReplyWriter<'_> {
        ReplyWriter::new(&mut self.out, self.proto)
    }

    /// Writes an error reply (`text` without the leading `-`).
    pub fn error(&mut self, text: &str) {
        self.writer().error(text.as_bytes());
    }

    /// An error made of text, a client-given argument (raw bytes, as Redis
    /// echoes them) and more text.
    pub fn error_with(&mut self, before: &str, arg: &[u8], after: &str) {
        let mut msg = Vec::with_capacity(before.len() + arg.len() + after.len());
        msg.extend_from_slice(before.as_bytes());
        msg.extend_from_slice(arg);
        msg.extend_from_slice(after.as_bytes());
        self.writer().error(&msg);
    }

    /// Drops the replies not yet flushed.
    pub fn discard(&mut self) {
        self.out.clear();
    }

    /// Moves the replies written so far into the outbox. Returns the
    /// messages dropped when this push took the client over its nlimit
    /// (the outbox is closed then).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.out.is_empty() {
            return None;
        }
        let chunk = self.out.split().freeze();
        closed(self.outbox.push(chunk, false, now, &self.limits))
    }

    /// Moves the replies written so far into the outbox and switches the
    /// protocol version with them, atomically with respect to pushes from
    /// other connections (HELLO, RESET).
    fn flush_switching(&mut self, proto: Proto, now: Instant) -> Option<u64> {
        let chunk = self.out.split().freeze();
        closed(self.outbox.push_switching(chunk, proto, now, &self.limits))
    }
}

fn closed(pushed: Pushed) -> Option<u64> {
    match pushed {
        Pushed::Closed { dropped } => Some(dropped),
        _ => None,
    }
}

/// A RESP server's per-connection state, as the shared layer dispatches to it.
///
/// [`dispatch`] answers `QUIT` first, looks the command up in
/// [`CONNECTION_COMMANDS`] and then in [`RespServer::commands`], answers
/// unknown commands and subcommands and wrong arities with Redis's exact
/// texts, refuses what a RESP2 subscriber may not run, runs the connection
/// commands itself and hands the server's own to [`RespServer::run`].
pub trait RespServer {
    /// The server's own commands, matched exhaustively in [`RespServer::run`].
    type Command: Copy + 'static;

    /// The server's own command table.
    fn commands(&self) -> &'static [Command<Self::Command>];

    /// The shared connection state.
    fn resp(&mut self) -> &mut RespState;

    /// The shared connection state, to read.
    fn resp_ref(&self) -> &RespState;

    /// Runs one of the server's own commands (arity already checked).
    fn run(&mut self, command: Self::Command, args: Request, now: Instant);

    /// Channel and pattern subscriptions: while above zero, a RESP2 client
    /// may run only what Redis allows in the subscribed context, and `PING`
    /// answers as a push.
    fn subscriptions(&self) -> usize {
        0
    }

    /// Ends every subscription without confirming it (`QUIT`, `RESET`, a
    /// protocol error: nothing may follow their reply).
    fn end_subscriptions(&mut self) {}

    /// Resets the server's own connection state (`RESET`), after
    /// [`RespServer::end_subscriptions`].
    fn reset(&mut self) {}

    /// The server name `HELLO` reports.
    fn server_name(&self) -> &'static str;

    /// A flush took the client over its nlimit and closed it, dropping
    /// `dropped` messages: count it.
    fn closed_by_nlimit(&self, dropped: u64) {
        let _ = dropped;
    }
}

/// Moves `server`'s buffered replies into its outbox, counting an nlimit close.
pub fn flush<S: RespServer + ?Sized>(server: &mut S, now: Instant) {
    if let Some(dropped) = server.resp().flush(now) {
        server.closed_by_nlimit(dropped);
    }
}

fn flush_switching<S: RespServer + ?Sized>(server: &mut S, proto: Proto, now: Instant) {
    if let Some(dropped) = server.resp().flush_switching(proto, now) {
        server.closed_by_nlimit(dropped);
    }
}

/// A command found in one of the two tables.
enum Found<X: 'static> {
    Conn(&'static Command<ConnCommand>),
    Own(&'static Command<X>),
}

/// Handles one request as a RESP server: see [`RespServer`]. Replies are
/// buffered until [`flush`].
pub fn dispatch<S: RespServer + ?Sized>(server: &mut S, args: Request, now: Instant) -> Flow {
    if server.resp_ref().is_closing() {
        return Flow::Close;
    }
    let Some(first) = args.first() else {
        return Flow::Continue;
    };
    // Redis 7.0 answers QUIT before any other check.
    if first.eq_ignore_ascii_case(b"quit") {
        return quit(server, now);
    }
    let found = match lookup(CONNECTION_COMMANDS, first) {
        Some(c) => Found::Conn(c),
        None => match lookup(server.commands(), first) {
            Some(c) => Found::Own(c),
            None => {
                unknown_command(server.resp(), &args);
                return Flow::Continue;
            }
        },
    };
    let found = match found {
        Found::Conn(c) => sub_of(server.resp(), c, &args).map(Found::Conn),
        Found::Own(c) => sub_of(server.resp(), c, &args).map(Found::Own),
    };
    let Some(found) = found else {
        return Flow::Continue;
    };
    let (name, arity_ok) = match &found {
        Found::Conn(c) => (c.name, c.arity_ok(args.len())),
        Found::Own(c) => (c.name, c.arity_ok(args.len())),
    };
    if !arity_ok {
        server.resp().error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return Flow::Continue;
    }
    if server.resp_ref().proto() == Proto::Resp2
        && server.subscriptions() > 0
        && !SUBSCRIBED_OK.contains(&name)
    {
        server.resp().error(&format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ));
        return Flow::Continue;
    }
    match found {
        Found::Conn(c) => match c.id {
            Some(id) => connection_command(server, id, c, &args, now),
            // A container without a runnable form always has an arity or subcommand error.
            None => unreachable_container(server.resp(), c.name),
        },
        Found::Own(c) => match c.id {
            Some(id) => server.run(id, args, now),
            None => unreachable_container(server.resp(), c.name),
        },
    }
    if server.resp_ref().is_closing() {
        Flow::Close
    } else {
        Flow::Continue
    }
}

/// A container reached without a subcommand: its arity (at least 2) makes
/// this impossible; answered as Redis would answer an unknown subcommand.
fn unreachable_container(resp: &mut RespState, name: &str) {
    tracing::error!(command = name, "container command without a subcommand");
    resp.error(&format!(
        "ERR unknown subcommand ''. Try {} HELP.",
        name.to_ascii_uppercase()
    ));
}

/// The subcommand `args[1]` of a container, or the command itself; `None`
/// (with Redis's error written) for an unknown subcommand.
fn sub_of<X>(
    resp: &mut RespState,
    cmd: &'static Command<X>,
    args: &Request,
) -> Option<&'static Command<X>> {
    if cmd.subcommands.is_empty() || args.len() < 2 {
        return Some(cmd);
    }
    match lookup_sub(cmd, &args[1]) {
        Some(sub) => Some(sub),
        None => {
            let after = format!("'. Try {} HELP.", cmd.name.to_ascii_uppercase());
            resp.error_with("ERR unknown subcommand '", prefix(&args[1], 128), &after);
            None
        }
    }
}

fn quit<S: RespServer + ?Sized>(server: &mut S, now: Instant) -> Flow {
    // Nothing may follow +OK: end the subscriptions first.
    server.end_subscriptions();
    server.resp().writer().simple(b"OK");
    server.resp().set_closing();
    flush(server, now);
    Flow::Close
}

/// Answers a decoding error as Redis does and asks for the connection to close.
pub fn protocol_error<S: RespServer + ?Sized>(
    server: &mut S,
    err: &crate::ProtocolError,
    now: Instant,
) -> Flow {
    // Nothing may follow the error line: end the subscriptions first.
    server.end_subscriptions();
    if let Some(line) = err.reply() {
        server.resp().writer().raw(&line);
    }
    tracing::debug!(client = server.resp_ref().id(), %err, "protocol error, closing client");
    server.resp().set_closing();
    flush(server, now);
    Flow::Close
}

fn unknown_command(resp: &mut RespState, args: &Request) {
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
    resp.writer().error(&msg);
}

fn connection_command<S: RespServer + ?Sized>(
    server: &mut S,
    id: ConnCommand,
    cmd: &'static Command<ConnCommand>,
    args: &Request,
    now: Instant,
) {
    match id {
        ConnCommand::Ping => ping(server, args),
        ConnCommand::Echo => server.resp().writer().bulk(&args[1]),
        ConnCommand::Quit => {
            quit(server, now);
        }
        ConnCommand::Reset => reset(server, now),
        ConnCommand::Select => select(server.resp(), &args[1]),
        ConnCommand::Hello => hello(server, args, now),
        ConnCommand::Auth => auth(server.resp(), args),
        ConnCommand::ClientId => {
            let id = server.resp_ref().id() as i64;
            server.resp().writer().integer(id);
        }
        ConnCommand::ClientGetname => {
            let resp = server.resp();
            match resp.name.clone() {
                Some(n) => resp.writer().bulk(&n),
                None => resp.writer().null(),
            }
        }
        ConnCommand::ClientSetname => {
            if set_name(server.resp(), &args[2]) {
                server.resp().writer().simple(b"OK");
            }
        }
        ConnCommand::ClientSetinfo => setinfo(server.resp(), args),
        ConnCommand::Command => command_info(server, &args[1..]),
        ConnCommand::CommandInfo => command_info(server, &args[2..]),
        ConnCommand::CommandCount => {
            let n = CONNECTION_COMMANDS.len() + server.commands().len();
            server.resp().writer().integer(n as i64);
        }
        ConnCommand::CommandDocs => command_docs(server, &args[2..]),
        ConnCommand::ClientHelp | ConnCommand::CommandHelp => {
            let mut w = server.resp().writer();
            let parent = cmd.name.split('|').next().unwrap_or_default();
            command::write_help(&mut w, CONNECTION_COMMANDS, parent);
        }
    }
}

fn ping<S: RespServer + ?Sized>(server: &mut S, args: &Request) {
    if args.len() > 2 {
        server
            .resp()
            .error("ERR wrong number of arguments for 'ping' command");
        return;
    }
    let subscribed = server.resp_ref().proto() == Proto::Resp2 && server.subscriptions() > 0;
    let mut w = server.resp().writer();
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

fn reset<S: RespServer + ?Sized>(server: &mut S, now: Instant) {
    server.end_subscriptions();
    flush(server, now);
    server.reset();
    let resp = server.resp();
    resp.proto = Proto::Resp2;
    resp.name = None;
    resp.lib = [None, None];
    resp.writer().simple(b"RESET");
    flush_switching(server, Proto::Resp2, now);
}

fn select(resp: &mut RespState, index: &[u8]) {
    match parse_i64(index) {
        None => resp.error("ERR value is not an integer or out of range"),
        Some(n) if i32::try_from(n).is_err() => {
            resp.error("ERR value is out of range, value must between -2147483648 and 2147483647")
        }
        Some(0..=15) => resp.writer().simple(b"OK"),
        Some(_) => resp.error("ERR DB index is out of range"),
    }
}

/// Validates a client name as Redis does; writes the error and returns false if bad.
fn valid_name(resp: &mut RespState, value: &[u8], what: &str) -> bool {
    if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        resp.error(&format!(
            "ERR {what} cannot contain spaces, newlines or special characters."
        ));
        return false;
    }
    true
}

fn set_name(resp: &mut RespState, name: &Bytes) -> bool {
    if !valid_name(resp, name, "Client names") {
        return false;
    }
    resp.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
    true
}

fn setinfo(resp: &mut RespState, args: &Request) {
    if args.len() != 4 {
        resp.error_with(
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
        resp.error_with("ERR Unrecognized option '", prefix(&args[2], 128), "'");
        return;
    };
    let what = if slot == 0 { "lib-name" } else { "lib-ver" };
    if !valid_name(resp, &args[3], what) {
        return;
    }
    resp.lib[slot] = (!args[3].is_empty()).then(|| Bytes::copy_from_slice(&args[3]));
    resp.writer().simple(b"OK");
}

/// `AUTH [username] password`, as Redis answers it with no password set:
/// only the `default` user exists, and it takes any password.
fn auth(resp: &mut RespState, args: &Request) {
    match args.len() {
        2 => resp.error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        3 if known_user(resp, &args[1]) => resp.writer().simple(b"OK"),
        3 => {}
        _ => resp.error("ERR syntax error"),
    }
}

/// Whether `user` may log in, as AUTH and HELLO's AUTH check it: no users
/// but Redis's passwordless `default` one, which takes any password;
/// anyone else gets Redis's WRONGPASS error.
fn known_user(resp: &mut RespState, user: &[u8]) -> bool {
    let known = user == b"default";
    if !known {
        resp.error("WRONGPASS invalid username-password pair or user is disabled.");
    }
    known
}

fn hello<S: RespServer + ?Sized>(server: &mut S, args: &Request, now: Instant) {
    let mut proto = None;
    let mut next = 1;
    if let Some(ver) = args.get(1) {
        next = 2;
        match parse_i64(ver) {
            None => {
                return server
                    .resp()
                    .error("ERR Protocol version is not an integer or out of range");
            }
            Some(2) => proto = Some(Proto::Resp2),
            Some(3) => proto = Some(Proto::Resp3),
            Some(_) => return server.resp().error("NOPROTO unsupported protocol version"),
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
            return server
                .resp()
                .error_with("ERR Syntax error in HELLO option '", &args[j], "'");
        }
        j += 1;
    }
    if let Some(user) = user
        && !known_user(server.resp(), &user)
    {
        return;
    }
    if let Some(name) = name
        && !set_name(server.resp(), &name)
    {
        return;
    }
    let switched = proto.filter(|p| *p != server.resp_ref().proto());
    if switched.is_some() {
        // Replies before HELLO go out in the old version.
        flush(server, now);
    }
    let server_name = server.server_name();
    let resp = server.resp();
    if let Some(p) = proto {
        resp.proto = p;
    }
    let (id, proto) = (resp.id() as i64, resp.proto.number());
    let mut w = resp.writer();
    w.map(7);
    w.bulk(b"server");
    w.bulk(server_name.as_bytes());
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
        flush_switching(server, p, now);
    }
}

/// A command or `parent|sub` name in either table, written by `f`.
fn with_named<S: RespServer + ?Sized>(
    server: &S,
    name: &[u8],
    w: &mut ReplyWriter<'_>,
    info: bool,
) -> bool {
    fn find<X>(table: &'static [Command<X>], name: &[u8]) -> Option<&'static Command<X>> {
        match name.iter().position(|&b| b == b'|') {
            None => lookup(table, name),
            Some(i) => lookup(table, &name[..i]).and_then(|p| lookup_sub(p, &name[i + 1..])),
        }
    }
    if let Some(c) = find(CONNECTION_COMMANDS, name) {
        write_one(w, c, info);
        true
    } else if let Some(c) = find(server.commands(), name) {
        write_one(w, c, info);
        true
    } else {
        false
    }
}

fn write_one<X>(w: &mut ReplyWriter<'_>, c: &Command<X>, info: bool) {
    if info {
        write_info(w, c);
    } else {
        w.bulk(c.name.as_bytes());
        write_docs(w, c);
    }
}

fn command_info<S: RespServer + ?Sized>(server: &mut S, names: &[Bytes]) {
    let own = server.commands();
    let mut out = std::mem::take(&mut server.resp().out);
    let proto = server.resp_ref().proto();
    {
        let mut w = ReplyWriter::new(&mut out, proto);
        if names.is_empty() {
            w.array(CONNECTION_COMMANDS.len() + own.len());
            own.iter().for_each(|c| write_info(&mut w, c));
            CONNECTION_COMMANDS
                .iter()
                .for_each(|c| write_info(&mut w, c));
        } else {
            w.array(names.len());
            for n in names {
                if !with_named(server, n, &mut w, true) {
                    w.null();
                }
            }
        }
    }
    server.resp().out = out;
}

fn command_docs<S: RespServer + ?Sized>(server: &mut S, names: &[Bytes]) {
    let own = server.commands();
    let mut out = std::mem::take(&mut server.resp().out);
    let proto = server.resp_ref().proto();
    {
        let mut w = ReplyWriter::new(&mut out, proto);
        if names.is_empty() {
            w.map(CONNECTION_COMMANDS.len() + own.len());
            own.iter().for_each(|c| write_one(&mut w, c, false));
            CONNECTION_COMMANDS
                .iter()
                .for_each(|c| write_one(&mut w, c, false));
        } else {
            // Unknown names are left out, as Redis does.
            let mut body = BytesMut::new();
            let mut found = 0;
            {
                let mut bw = ReplyWriter::new(&mut body, proto);
                for n in names {
                    found += usize::from(with_named(server, n, &mut bw, false));
                }
            }
            w.map(found);
            w.raw(&body);
        }
    }
    server.resp().out = out;
}

/// At most `max` bytes of `b` (Redis's `%.128s`).
pub(crate) fn prefix(b: &[u8], max: usize) -> &[u8] {
    &b[..b.len().min(max)]
}
