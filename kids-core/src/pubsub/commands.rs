//! kids' own commands: the pub/sub and log verbs, `INFO` and `PUBSUB`.
//!
//! The connection commands (PING, HELLO, CLIENT, COMMAND, ...) come from
//! the shared RESP layer ([`crate::resp::CONNECTION_COMMANDS`]).

use crate::resp::{Command, PUBSUB, SUB, arg, cmd};

/// A kids command, as [`KIDS_COMMANDS`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KidsCommand {
    /// `PUBLISH channel message`
    Publish,
    /// `LOG topic message`: the agent's alias of PUBLISH.
    Log,
    /// `SUBSCRIBE channel ...`
    Subscribe,
    /// `PSUBSCRIBE pattern ...`
    Psubscribe,
    /// `UNSUBSCRIBE [channel ...]`
    Unsubscribe,
    /// `PUNSUBSCRIBE [pattern ...]`
    Punsubscribe,
    /// `INFO [section ...]`
    Info,
    /// `PUBSUB CHANNELS [pattern]`
    PubsubChannels,
    /// `PUBSUB NUMSUB [channel ...]`
    PubsubNumsub,
    /// `PUBSUB NUMPAT`
    PubsubNumpat,
    /// `PUBSUB HELP`
    PubsubHelp,
}

/// Every command kids serves besides the connection commands.
pub static KIDS_COMMANDS: &[Command<KidsCommand>] = &[
    cmd!(
        Some(KidsCommand::Publish),
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
        Some(KidsCommand::Log),
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
        Some(KidsCommand::Subscribe),
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
        Some(KidsCommand::Psubscribe),
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
        Some(KidsCommand::Unsubscribe),
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
        Some(KidsCommand::Punsubscribe),
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
        Some(KidsCommand::Info),
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
        None,
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

static PUBSUB_SUBS: &[Command<KidsCommand>] = &[
    cmd!(
        Some(KidsCommand::PubsubChannels),
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
        Some(KidsCommand::PubsubNumsub),
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
        Some(KidsCommand::PubsubNumpat),
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
        Some(KidsCommand::PubsubHelp),
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
