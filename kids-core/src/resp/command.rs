//! Command tables: arity, flags and docs, for dispatch and for `COMMAND`.
//!
//! A RESP server's table is a `&'static [Command<X>]` of its own commands,
//! each naming a variant of its command enum `X`, so dispatch is an
//! exhaustive `match`. The connection commands every server shares (PING,
//! ECHO, QUIT, RESET, SELECT, HELLO, AUTH, CLIENT, COMMAND) are
//! [`CONNECTION_COMMANDS`], dispatched by the RESP layer
//! ([`RespServer`](crate::resp::RespServer)).

use crate::resp::ReplyWriter;

/// One argument in `COMMAND DOCS`. Arguments of type `block` and `oneof`
/// must carry their `sub` arguments: redis-cli dereferences them.
#[derive(Debug)]
pub struct Arg {
    /// The argument's name.
    pub name: &'static str,
    /// Its type: `string`, `integer`, `pattern`, `key`, `double`, `block`, `oneof`, ...
    pub kind: &'static str,
    /// The literal token that introduces it, if any.
    pub token: Option<&'static str>,
    /// It may be left out.
    pub optional: bool,
    /// It may be repeated.
    pub multiple: bool,
    /// The arguments of a `block` or `oneof`.
    pub sub: &'static [Arg],
}

impl Arg {
    /// A plain argument.
    pub const fn new(
        name: &'static str,
        kind: &'static str,
        optional: bool,
        multiple: bool,
    ) -> Arg {
        Arg {
            name,
            kind,
            token: None,
            optional,
            multiple,
            sub: &[],
        }
    }

    /// An argument introduced by a token (`SETNAME name`), with sub-arguments for a block.
    pub const fn token(
        name: &'static str,
        kind: &'static str,
        token: &'static str,
        optional: bool,
        sub: &'static [Arg],
    ) -> Arg {
        Arg {
            name,
            kind,
            token: Some(token),
            optional,
            multiple: false,
            sub,
        }
    }
}

pub(crate) const fn arg(
    name: &'static str,
    kind: &'static str,
    optional: bool,
    multiple: bool,
) -> Arg {
    Arg::new(name, kind, optional, multiple)
}

pub(crate) const fn token(
    name: &'static str,
    kind: &'static str,
    tok: &'static str,
    optional: bool,
    sub: &'static [Arg],
) -> Arg {
    Arg::token(name, kind, tok, optional, sub)
}

/// One command or subcommand of a server whose commands are the enum `X`.
#[derive(Debug)]
pub struct Command<X: 'static> {
    /// What dispatch runs: `None` for a container that only has subcommands
    /// (`CLIENT`, `PUBSUB`), reached with its arity error or its
    /// unknown-subcommand error.
    pub id: Option<X>,
    /// Lower-case full name (`client|setname` for subcommands).
    pub name: &'static str,
    /// Redis arity: exact argc when positive, minimum argc when negative.
    pub arity: i64,
    /// `COMMAND INFO` flags.
    pub flags: &'static [&'static str],
    /// ACL categories.
    pub acl: &'static [&'static str],
    /// `COMMAND DOCS` summary.
    pub summary: &'static str,
    /// The version it appeared in.
    pub since: &'static str,
    /// Its group.
    pub group: &'static str,
    /// Its time complexity.
    pub complexity: &'static str,
    /// Its arguments, for `COMMAND DOCS`.
    pub args: &'static [Arg],
    /// Its subcommands (`client|id`, ...).
    pub subcommands: &'static [Command<X>],
}

impl<X> Command<X> {
    /// Whether `argc` fits the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// The name after the container's, for a subcommand (`setname`).
    pub fn short_name(&self) -> &'static str {
        &self.name[self.name.find('|').map_or(0, |i| i + 1)..]
    }
}

/// The connection commands every RESP server of the SDK shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnCommand {
    /// `PING [message]`
    Ping,
    /// `ECHO message`
    Echo,
    /// `QUIT`
    Quit,
    /// `RESET`
    Reset,
    /// `SELECT index` (accepted for 0..=15, no effect)
    Select,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello,
    /// `AUTH [username] password`: Redis's passwordless `default` user is
    /// the only one, so `AUTH default <any>` succeeds.
    Auth,
    /// `CLIENT ID`
    ClientId,
    /// `CLIENT GETNAME`
    ClientGetname,
    /// `CLIENT SETNAME name`
    ClientSetname,
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`
    ClientSetinfo,
    /// `CLIENT HELP`
    ClientHelp,
    /// `COMMAND` (every command's info)
    Command,
    /// `COMMAND COUNT`
    CommandCount,
    /// `COMMAND DOCS [name ...]`
    CommandDocs,
    /// `COMMAND INFO [name ...]`
    CommandInfo,
    /// `COMMAND HELP`
    CommandHelp,
}

pub(crate) const PUBSUB: &[&str] = &["pubsub", "loading", "stale", "fast", "may_replicate"];
pub(crate) const SUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const CONN: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];

macro_rules! cmd {
    ($id:expr, $name:expr, $arity:expr, $flags:expr, $acl:expr, $summary:expr, $since:expr, $group:expr, $cx:expr, $args:expr) => {
        cmd!(
            $id,
            $name,
            $arity,
            $flags,
            $acl,
            $summary,
            $since,
            $group,
            $cx,
            $args,
            &[]
        )
    };
    ($id:expr, $name:expr, $arity:expr, $flags:expr, $acl:expr, $summary:expr, $since:expr, $group:expr, $cx:expr, $args:expr, $subs:expr) => {
        $crate::resp::Command {
            id: $id,
            name: $name,
            arity: $arity,
            flags: $flags,
            acl: $acl,
            summary: $summary,
            since: $since,
            group: $group,
            complexity: $cx,
            args: $args,
            subcommands: $subs,
        }
    };
}
pub(crate) use cmd;

/// The connection commands, as every RESP server of the SDK serves them.
pub static CONNECTION_COMMANDS: &[Command<ConnCommand>] = &[
    cmd!(
        Some(ConnCommand::Ping),
        "ping",
        -1,
        &["fast", "sentinel"],
        &["@fast", "@connection"],
        "Returns the server's liveliness response.",
        "1.0.0",
        "connection",
        "O(1)",
        &[arg("message", "string", true, false)]
    ),
    cmd!(
        Some(ConnCommand::Echo),
        "echo",
        2,
        &["fast"],
        &["@fast", "@connection"],
        "Returns the given string.",
        "1.0.0",
        "connection",
        "O(1)",
        &[arg("message", "string", false, false)]
    ),
    cmd!(
        Some(ConnCommand::Quit),
        "quit",
        -1,
        CONN,
        &["@fast", "@connection"],
        "Closes the connection.",
        "1.0.0",
        "connection",
        "O(1)",
        &[]
    ),
    cmd!(
        Some(ConnCommand::Reset),
        "reset",
        1,
        CONN,
        &["@fast", "@connection"],
        "Resets the connection.",
        "6.2.0",
        "connection",
        "O(1)",
        &[]
    ),
    cmd!(
        Some(ConnCommand::Select),
        "select",
        2,
        &["loading", "stale", "fast"],
        &["@keyspace", "@fast"],
        "Changes the selected database (accepted, no effect in kids).",
        "1.0.0",
        "connection",
        "O(1)",
        &[arg("index", "integer", false, false)]
    ),
    cmd!(
        Some(ConnCommand::Hello),
        "hello",
        -1,
        CONN,
        &["@fast", "@connection"],
        "Handshakes with the server.",
        "6.0.0",
        "connection",
        "O(1)",
        &[
            arg("protover", "integer", true, false),
            token(
                "auth",
                "block",
                "AUTH",
                true,
                &[
                    arg("username", "string", false, false),
                    arg("password", "string", false, false)
                ]
            ),
            token("clientname", "string", "SETNAME", true, &[])
        ]
    ),
    cmd!(
        Some(ConnCommand::Auth),
        "auth",
        -2,
        CONN,
        &["@fast", "@connection"],
        "Authenticates the connection.",
        "1.0.0",
        "connection",
        "O(N) where N is the number of passwords defined for the user",
        &[
            arg("username", "string", true, false),
            arg("password", "string", false, false)
        ]
    ),
    cmd!(
        None,
        "client",
        -2,
        &[],
        &["@slow"],
        "A container for client connection commands.",
        "2.4.0",
        "connection",
        "Depends on subcommand.",
        &[],
        CLIENT_SUBS
    ),
    cmd!(
        Some(ConnCommand::Command),
        "command",
        -1,
        &["loading", "stale", "sentinel"],
        &["@slow", "@connection"],
        "Returns detailed information about all commands.",
        "2.8.13",
        "server",
        "O(N) where N is the total number of commands",
        &[],
        COMMAND_SUBS
    ),
];

static CLIENT_SUBS: &[Command<ConnCommand>] = &[
    cmd!(
        Some(ConnCommand::ClientId),
        "client|id",
        2,
        CONN,
        &["@slow", "@connection"],
        "Returns the unique client ID of the connection.",
        "5.0.0",
        "connection",
        "O(1)",
        &[]
    ),
    cmd!(
        Some(ConnCommand::ClientGetname),
        "client|getname",
        2,
        CONN,
        &["@slow", "@connection"],
        "Returns the name of the connection.",
        "2.6.9",
        "connection",
        "O(1)",
        &[]
    ),
    cmd!(
        Some(ConnCommand::ClientSetname),
        "client|setname",
        3,
        CONN,
        &["@slow", "@connection"],
        "Sets the connection name.",
        "2.6.9",
        "connection",
        "O(1)",
        &[arg("connection-name", "string", false, false)]
    ),
    cmd!(
        Some(ConnCommand::ClientSetinfo),
        "client|setinfo",
        -4,
        CONN,
        &["@slow", "@connection"],
        "Sets information specific to the client or connection.",
        "7.2.0",
        "connection",
        "O(1)",
        &[Arg {
            name: "attr",
            kind: "oneof",
            token: None,
            optional: false,
            multiple: false,
            sub: &[
                token("libname", "string", "LIB-NAME", false, &[]),
                token("libver", "string", "LIB-VER", false, &[]),
            ],
        }]
    ),
    cmd!(
        Some(ConnCommand::ClientHelp),
        "client|help",
        2,
        &["loading", "stale"],
        &["@slow", "@connection"],
        "Returns helpful text about the different subcommands.",
        "5.0.0",
        "connection",
        "O(1)",
        &[]
    ),
];

static COMMAND_SUBS: &[Command<ConnCommand>] = &[
    cmd!(
        Some(ConnCommand::CommandCount),
        "command|count",
        2,
        &["loading", "stale"],
        &["@slow", "@connection"],
        "Returns a count of commands.",
        "2.8.13",
        "server",
        "O(1)",
        &[]
    ),
    cmd!(
        Some(ConnCommand::CommandDocs),
        "command|docs",
        -2,
        &["loading", "stale"],
        &["@slow", "@connection"],
        "Returns documentary information about one, multiple or all commands.",
        "7.0.0",
        "server",
        "O(N) where N is the number of commands to look up",
        &[arg("command-name", "string", true, true)]
    ),
    cmd!(
        Some(ConnCommand::CommandInfo),
        "command|info",
        -2,
        &["loading", "stale"],
        &["@slow", "@connection"],
        "Returns information about one, multiple or all commands.",
        "2.8.13",
        "server",
        "O(N) where N is the number of commands to look up",
        &[arg("command-name", "string", true, true)]
    ),
    cmd!(
        Some(ConnCommand::CommandHelp),
        "command|help",
        2,
        &["loading", "stale"],
        &["@slow", "@connection"],
        "Returns helpful text about the different subcommands.",
        "5.0.0",
        "server",
        "O(1)",
        &[]
    ),
];

/// Looks a top-level command of `table` up, ignoring case.
pub fn lookup<X>(table: &'static [Command<X>], name: &[u8]) -> Option<&'static Command<X>> {
    table
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Looks a subcommand of `parent` up, ignoring case.
pub fn lookup_sub<X>(parent: &'static Command<X>, name: &[u8]) -> Option<&'static Command<X>> {
    parent
        .subcommands
        .iter()
        .find(|c| c.short_name().as_bytes().eq_ignore_ascii_case(name))
}

/// Writes the `COMMAND INFO` entry of `c`.
pub(crate) fn write_info<X>(w: &mut ReplyWriter<'_>, c: &Command<X>) {
    w.array(10);
    w.bulk(c.name.as_bytes());
    w.integer(c.arity);
    w.set(c.flags.len());
    c.flags.iter().for_each(|f| w.simple(f.as_bytes()));
    w.integer(0);
    w.integer(0);
    w.integer(0);
    w.set(c.acl.len());
    c.acl.iter().for_each(|a| w.simple(a.as_bytes()));
    w.set(0);
    w.array(0);
    w.array(c.subcommands.len());
    c.subcommands.iter().for_each(|s| write_info(w, s));
}

/// Writes the `COMMAND DOCS` value (the map after the name) of `c`.
pub(crate) fn write_docs<X>(w: &mut ReplyWriter<'_>, c: &Command<X>) {
    let fields = 4 + usize::from(!c.args.is_empty()) + usize::from(!c.subcommands.is_empty());
    w.map(fields);
    for (k, v) in [
        ("summary", c.summary),
        ("since", c.since),
        ("group", c.group),
        ("complexity", c.complexity),
    ] {
        w.bulk(k.as_bytes());
        w.bulk(v.as_bytes());
    }
    if !c.args.is_empty() {
        w.bulk(b"arguments");
        write_args(w, c.args);
    }
    if !c.subcommands.is_empty() {
        w.bulk(b"subcommands");
        w.map(c.subcommands.len());
        for s in c.subcommands {
            w.bulk(s.name.as_bytes());
            write_docs(w, s);
        }
    }
}

fn write_args(w: &mut ReplyWriter<'_>, args: &[Arg]) {
    w.array(args.len());
    for a in args {
        let flags = usize::from(a.optional) + usize::from(a.multiple);
        let plain = matches!(a.kind, "string" | "integer" | "pattern" | "key" | "double");
        let fields = 2
            + usize::from(plain)
            + usize::from(a.token.is_some())
            + usize::from(flags > 0)
            + usize::from(!a.sub.is_empty());
        w.map(fields);
        w.bulk(b"name");
        w.bulk(a.name.as_bytes());
        w.bulk(b"type");
        w.bulk(a.kind.as_bytes());
        if plain {
            w.bulk(b"display_text");
            w.bulk(a.name.as_bytes());
        }
        if let Some(t) = a.token {
            w.bulk(b"token");
            w.bulk(t.as_bytes());
        }
        if flags > 0 {
            w.bulk(b"flags");
            w.array(flags);
            if a.optional {
                w.simple(b"optional");
            }
            if a.multiple {
                w.simple(b"multiple");
            }
        }
        if !a.sub.is_empty() {
            w.bulk(b"arguments");
            write_args(w, a.sub);
        }
    }
}

/// Writes the `HELP` reply of the container `parent_name` of `table` (`CLIENT HELP`).
pub fn write_help<X>(w: &mut ReplyWriter<'_>, table: &'static [Command<X>], parent_name: &str) {
    let parent = lookup(table, parent_name.as_bytes());
    let mut lines = vec![format!(
        "{} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        parent_name.to_ascii_uppercase()
    )];
    for sub in parent.map_or(&[][..], |p| p.subcommands) {
        lines.push(sub.short_name().to_ascii_uppercase());
        lines.push(format!("    {}", sub.summary));
    }
    w.array(lines.len());
    lines.iter().for_each(|l| w.simple(l.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_args(args: &[Arg], f: &mut impl FnMut(&Arg)) {
        for a in args {
            f(a);
            all_args(a.sub, f);
        }
    }

    #[test]
    fn aggregate_arguments_have_sub_arguments() {
        // redis-cli dereferences the `arguments` of every block/oneof argument.
        let mut check = |a: &Arg| {
            if matches!(a.kind, "block" | "oneof") {
                assert!(!a.sub.is_empty(), "{} has no sub-arguments", a.name);
            }
        };
        for c in CONNECTION_COMMANDS
            .iter()
            .chain(CONNECTION_COMMANDS.iter().flat_map(|c| c.subcommands))
        {
            all_args(c.args, &mut check);
        }
    }
}
