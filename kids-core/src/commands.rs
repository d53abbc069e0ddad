//! The command table: arity, flags and docs, for dispatch and for `COMMAND`.

use crate::resp::ReplyWriter;

/// One argument in `COMMAND DOCS`. Arguments of type `block` and `oneof`
/// must carry their `sub` arguments: redis-cli dereferences them.
#[derive(Debug)]
pub(crate) struct Arg {
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) token: Option<&'static str>,
    pub(crate) optional: bool,
    pub(crate) multiple: bool,
    pub(crate) sub: &'static [Arg],
}

const fn arg(name: &'static str, kind: &'static str, optional: bool, multiple: bool) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        optional,
        multiple,
        sub: &[],
    }
}

const fn token(
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

/// One command or subcommand.
#[derive(Debug)]
pub(crate) struct Command {
    /// Lower-case full name (`client|setname` for subcommands).
    pub(crate) name: &'static str,
    /// Redis arity: exact argc when positive, minimum argc when negative.
    pub(crate) arity: i64,
    pub(crate) flags: &'static [&'static str],
    pub(crate) acl: &'static [&'static str],
    pub(crate) summary: &'static str,
    pub(crate) since: &'static str,
    pub(crate) group: &'static str,
    pub(crate) complexity: &'static str,
    pub(crate) args: &'static [Arg],
    pub(crate) subcommands: &'static [Command],
}

impl Command {
    /// Whether `argc` fits the arity.
    pub(crate) fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }
}

const PUBSUB: &[&str] = &["pubsub", "loading", "stale", "fast", "may_replicate"];
const SUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const CONN: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];

macro_rules! cmd {
    ($name:expr, $arity:expr, $flags:expr, $acl:expr, $summary:expr, $since:expr, $group:expr, $cx:expr, $args:expr) => {
        cmd!(
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
    ($name:expr, $arity:expr, $flags:expr, $acl:expr, $summary:expr, $since:expr, $group:expr, $cx:expr, $args:expr, $subs:expr) => {
        Command {
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

/// Every command kids serves.
pub(crate) static COMMANDS: &[Command] = &[
    cmd!(
        "publish",
        3,
        PUBSUB,
        &["@pubsub", "@fast"],
        "Posts a message to a channel.",
        "2.0.0",
        "pubsub",
        "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).",
        &[
            arg("channel", "string", false, false),
            arg("message", "string", false, false)
        ]
    ),
    cmd!(
        "log",
        3,
        PUBSUB,
        &["@pubsub", "@fast"],
        "Appends a log line to a topic: kids' agent-to-server alias of PUBLISH.",
        "2.0.0",
        "pubsub",
        "O(N+M), as PUBLISH.",
        &[
            arg("topic", "string", false, false),
            arg("message", "string", false, false)
        ]
    ),
    cmd!(
        "subscribe",
        -2,
        SUB,
        &["@pubsub", "@slow"],
        "Listens for messages published to channels.",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of channels to subscribe to.",
        &[arg("channel", "string", false, true)]
    ),
    cmd!(
        "psubscribe",
        -2,
        SUB,
        &["@pubsub", "@slow"],
        "Listens for messages published to channels that match one or more patterns.",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of patterns to subscribe to.",
        &[arg("pattern", "pattern", false, true)]
    ),
    cmd!(
        "unsubscribe",
        -1,
        SUB,
        &["@pubsub", "@slow"],
        "Stops listening to messages posted to channels.",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of channels to unsubscribe.",
        &[arg("channel", "string", true, true)]
    ),
    cmd!(
        "punsubscribe",
        -1,
        SUB,
        &["@pubsub", "@slow"],
        "Stops listening to messages published to channels that match one or more patterns.",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of patterns to unsubscribe.",
        &[arg("pattern", "pattern", true, true)]
    ),
    cmd!(
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
        "info",
        -1,
        &["loading", "stale", "sentinel"],
        &["@slow", "@dangerous"],
        "Returns information and statistics about the server.",
        "1.0.0",
        "server",
        "O(1)",
        &[arg("section", "string", true, true)]
    ),
    cmd!(
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
    cmd!(
        "pubsub",
        -2,
        &[],
        &["@slow"],
        "A container for Pub/Sub commands.",
        "2.8.0",
        "pubsub",
        "Depends on subcommand.",
        &[],
        PUBSUB_SUBS
    ),
];

static CLIENT_SUBS: &[Command] = &[
    cmd!(
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

static COMMAND_SUBS: &[Command] = &[
    cmd!(
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

static PUBSUB_SUBS: &[Command] = &[
    cmd!(
        "pubsub|channels",
        -2,
        PUBSUB,
        &["@pubsub", "@slow"],
        "Returns the active channels.",
        "2.8.0",
        "pubsub",
        "O(N) where N is the number of active channels, and assuming constant time pattern matching",
        &[arg("pattern", "pattern", true, false)]
    ),
    cmd!(
        "pubsub|numsub",
        -2,
        PUBSUB,
        &["@pubsub", "@slow"],
        "Returns a count of subscribers to channels.",
        "2.8.0",
        "pubsub",
        "O(N) for the NUMSUB subcommand, where N is the number of requested channels",
        &[arg("channel", "string", true, true)]
    ),
    cmd!(
        "pubsub|numpat",
        2,
        PUBSUB,
        &["@pubsub", "@slow"],
        "Returns a count of unique pattern subscriptions.",
        "2.8.0",
        "pubsub",
        "O(1)",
        &[]
    ),
    cmd!(
        "pubsub|help",
        2,
        &["loading", "stale"],
        &["@slow"],
        "Returns helpful text about the different subcommands.",
        "6.2.0",
        "pubsub",
        "O(1)",
        &[]
    ),
];

/// Looks a top-level command up, ignoring case.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Looks a subcommand of `parent` up, ignoring case.
pub(crate) fn lookup_sub(parent: &'static Command, name: &[u8]) -> Option<&'static Command> {
    parent.subcommands.iter().find(|c| {
        let short = &c.name[c.name.find('|').map_or(0, |i| i + 1)..];
        short.as_bytes().eq_ignore_ascii_case(name)
    })
}

/// Writes the `COMMAND INFO` entry of `c`.
pub(crate) fn write_info(w: &mut ReplyWriter<'_>, c: &Command) {
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
pub(crate) fn write_docs(w: &mut ReplyWriter<'_>, c: &Command) {
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

/// Total number of top-level commands (`COMMAND COUNT`).
pub(crate) fn count() -> usize {
    COMMANDS.len()
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
        for c in COMMANDS
            .iter()
            .chain(COMMANDS.iter().flat_map(|c| c.subcommands))
        {
            all_args(c.args, &mut check);
        }
    }
}
