//! sink's own commands: the durable pub/sub verbs, sessions and `INFO`;
//! the stream commands come from [`crate::stream`].

use kids_core::resp::{Arg, Command};

use crate::stream::StreamCommand;

/// A sink command, as [`SINK_COMMANDS`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SinkCommand {
    /// `PUBLISH topic message`: replies with the message's offset once durable.
    Publish,
    /// `LOG topic message`: kids' agent-to-server alias of PUBLISH.
    Log,
    /// `SUBSCRIBE channel ...`: live, fire-and-forget.
    Subscribe,
    /// `PSUBSCRIBE pattern ...`: live, fire-and-forget.
    Psubscribe,
    /// `UNSUBSCRIBE [channel ...]`
    Unsubscribe,
    /// `PUNSUBSCRIBE [pattern ...]`
    Punsubscribe,
    /// `SESSION CREATE name filter [filter ...]`
    SessionCreate,
    /// `SESSION LOAD name`
    SessionLoad,
    /// `SESSION ACK name offset`
    SessionAck,
    /// `SESSION UNLOAD name`
    SessionUnload,
    /// `SESSION DELETE name`
    SessionDelete,
    /// `SESSION LIST`
    SessionList,
    /// `SESSION INFO name`
    SessionInfo,
    /// `SESSION HELP`
    SessionHelp,
    /// `INFO [section ...]`
    Info,
    /// A stream command.
    Stream(StreamCommand),
}

const fn arg(name: &'static str, kind: &'static str, optional: bool, multiple: bool) -> Arg {
    Arg::new(name, kind, optional, multiple)
}

#[allow(clippy::too_many_arguments)]
const fn cmd(
    id: Option<SinkCommand>,
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    summary: &'static str,
    complexity: &'static str,
    args: &'static [Arg],
    subcommands: &'static [Command<SinkCommand>],
) -> Command<SinkCommand> {
    Command {
        id,
        name,
        arity,
        flags,
        acl: &["@pubsub"],
        summary,
        since: "1.0.0",
        group: "pubsub",
        complexity,
        args,
        subcommands,
    }
}

const WRITE: &[&str] = &["write", "pubsub", "fast"];
const SUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];

const SESSION: &[Command<SinkCommand>] = &[
    cmd(
        Some(SinkCommand::SessionCreate),
        "session|create",
        -4,
        WRITE,
        "Creates a durable session: a named cursor over the log with topic filters (exact or glob). Replies +OK once durable; only messages published after it reach it.",
        "O(N) where N is the number of filters.",
        &[
            arg("name", "string", false, false),
            arg("filter", "pattern", false, true),
        ],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionLoad),
        "session|load",
        3,
        SUB,
        "Loads a session on this connection: every matching message after its cursor is pushed in order, then live ones, each as [session, name, offset, topic, payload].",
        "O(1)",
        &[arg("name", "string", false, false)],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionAck),
        "session|ack",
        4,
        WRITE,
        "Acknowledges every message of the session up to an offset (cumulative); replies with the cursor once durable.",
        "O(1)",
        &[
            arg("name", "string", false, false),
            arg("offset", "integer", false, false),
        ],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionUnload),
        "session|unload",
        3,
        SUB,
        "Stops delivery of a session loaded on this connection; unacknowledged messages are sent again at the next load.",
        "O(1)",
        &[arg("name", "string", false, false)],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionDelete),
        "session|delete",
        3,
        WRITE,
        "Deletes a session; replies 1 once durable, 0 if there was none.",
        "O(1)",
        &[arg("name", "string", false, false)],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionList),
        "session|list",
        2,
        &["loading", "stale"],
        "Lists the sessions' names.",
        "O(N) where N is the number of sessions.",
        &[],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionInfo),
        "session|info",
        3,
        &["loading", "stale"],
        "Describes a session: filters, cursor, lag, window fill, holder.",
        "O(1)",
        &[arg("name", "string", false, false)],
        &[],
    ),
    cmd(
        Some(SinkCommand::SessionHelp),
        "session|help",
        2,
        &["loading", "stale"],
        "Shows helpful text about the different subcommands.",
        "O(1)",
        &[],
        &[],
    ),
];

/// sink's own commands (the stream commands are served besides them).
pub static SINK_COMMANDS: &[Command<SinkCommand>] = &[
    cmd(
        Some(SinkCommand::Publish),
        "publish",
        3,
        WRITE,
        "Appends a message to the durable log; replies with its offset once it is durable under the fsync policy.",
        "O(1)",
        &[
            arg("channel", "string", false, false),
            arg("message", "string", false, false),
        ],
        &[],
    ),
    cmd(
        Some(SinkCommand::Log),
        "log",
        3,
        WRITE,
        "kids' agent-to-server alias of PUBLISH.",
        "O(1)",
        &[
            arg("topic", "string", false, false),
            arg("message", "string", false, false),
        ],
        &[],
    ),
    cmd(
        Some(SinkCommand::Subscribe),
        "subscribe",
        -2,
        SUB,
        "Listens for messages published to channels from now on (live, fire-and-forget).",
        "O(N) where N is the number of channels to subscribe to.",
        &[arg("channel", "string", false, true)],
        &[],
    ),
    cmd(
        Some(SinkCommand::Psubscribe),
        "psubscribe",
        -2,
        SUB,
        "Listens for messages published to channels matching patterns from now on.",
        "O(N) where N is the number of patterns to subscribe to.",
        &[arg("pattern", "pattern", false, true)],
        &[],
    ),
    cmd(
        Some(SinkCommand::Unsubscribe),
        "unsubscribe",
        -1,
        SUB,
        "Stops listening to messages posted to channels.",
        "O(N) where N is the number of channels to unsubscribe.",
        &[arg("channel", "string", true, true)],
        &[],
    ),
    cmd(
        Some(SinkCommand::Punsubscribe),
        "punsubscribe",
        -1,
        SUB,
        "Stops listening to messages published to channels that match patterns.",
        "O(N) where N is the number of patterns to unsubscribe.",
        &[arg("pattern", "pattern", true, true)],
        &[],
    ),
    cmd(
        None,
        "session",
        -2,
        &[],
        "A container for durable session commands.",
        "Depends on subcommand.",
        &[],
        SESSION,
    ),
    Command {
        id: Some(SinkCommand::Info),
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        acl: &["@slow", "@dangerous"],
        summary: "Returns information and statistics about the server: log, persistence (fsync latency, group commit), sessions (lag, window fill), streams.",
        since: "1.0.0",
        group: "server",
        complexity: "O(N) where N is the number of sessions.",
        args: &[arg("section", "string", true, true)],
        subcommands: &[],
    },
];
