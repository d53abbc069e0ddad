//! The stream commands: their ids and their Redis 7.0 table entries (arity, flags, docs).

use kids_core::resp::{Arg, Command};

/// One stream command or subcommand, as [`STREAM_COMMANDS`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamCommand {
    /// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] * field value ...`
    Xadd,
    /// `XLEN key`
    Xlen,
    /// `XRANGE key start end [COUNT n]`
    Xrange,
    /// `XREVRANGE key end start [COUNT n]`
    Xrevrange,
    /// `XREAD [COUNT n] [BLOCK ms] STREAMS key ... id ...`
    Xread,
    /// `XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS key ... id ...`
    Xreadgroup,
    /// `XACK key group id ...`
    Xack,
    /// `XPENDING key group [[IDLE min] start end count [consumer]]`
    Xpending,
    /// `XCLAIM key group consumer min-idle id ... [options]`
    Xclaim,
    /// `XAUTOCLAIM key group consumer min-idle start [COUNT n] [JUSTID]`
    Xautoclaim,
    /// `XDEL key id ...`
    Xdel,
    /// `XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count]`
    Xtrim,
    /// `XGROUP CREATE key group id|$ [MKSTREAM] [ENTRIESREAD n]`
    XgroupCreate,
    /// `XGROUP CREATECONSUMER key group consumer`
    XgroupCreateconsumer,
    /// `XGROUP DELCONSUMER key group consumer`
    XgroupDelconsumer,
    /// `XGROUP DESTROY key group`
    XgroupDestroy,
    /// `XGROUP SETID key group id|$ [ENTRIESREAD n]`
    XgroupSetid,
    /// `XGROUP HELP`
    XgroupHelp,
    /// `XINFO CONSUMERS key group`
    XinfoConsumers,
    /// `XINFO GROUPS key`
    XinfoGroups,
    /// `XINFO STREAM key [FULL [COUNT n]]`
    XinfoStream,
    /// `XINFO HELP`
    XinfoHelp,
}

#[allow(clippy::too_many_arguments)]
const fn cmd(
    id: Option<StreamCommand>,
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    acl: &'static [&'static str],
    summary: &'static str,
    since: &'static str,
    complexity: &'static str,
    args: &'static [Arg],
    subcommands: &'static [Command<StreamCommand>],
) -> Command<StreamCommand> {
    Command {
        id,
        name,
        arity,
        flags,
        acl,
        summary,
        since,
        group: "stream",
        complexity,
        args,
        subcommands,
    }
}

const fn a(name: &'static str, kind: &'static str, optional: bool, multiple: bool) -> Arg {
    Arg::new(name, kind, optional, multiple)
}

const fn t(name: &'static str, kind: &'static str, token: &'static str, optional: bool) -> Arg {
    Arg::token(name, kind, token, optional, &[])
}

const KEY: Arg = a("key", "key", false, false);
const GROUP: Arg = a("group", "string", false, false);
const CONSUMER: Arg = a("consumer", "string", false, false);
const ID: Arg = a("id", "string", false, true);
const W_FAST: &[&str] = &["@write", "@stream", "@fast"];
const W_SLOW: &[&str] = &["@write", "@stream", "@slow"];
const R_SLOW: &[&str] = &["@read", "@stream", "@slow"];
const HELP_FLAGS: &[&str] = &["loading", "stale"];
const HELP_ACL: &[&str] = &["@stream", "@slow"];

/// The stream commands, with Redis 7.0's names, arities, flags and docs.
/// `XGROUP` and `XINFO` are containers of subcommands.
pub static STREAM_COMMANDS: &[Command<StreamCommand>] = &[
    cmd(
        Some(StreamCommand::Xadd),
        "xadd",
        -5,
        &["write", "denyoom", "fast"],
        W_FAST,
        "Appends a new entry to a stream",
        "5.0.0",
        "O(1) when adding a new entry, O(N) when trimming where N being the number of entries evicted.",
        &[
            KEY,
            t("nomkstream", "pure-token", "NOMKSTREAM", true),
            a("threshold", "string", true, false),
            a("id", "string", false, false),
            a("data", "string", false, true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xlen),
        "xlen",
        2,
        &["readonly", "fast"],
        &["@read", "@stream", "@fast"],
        "Return the number of entries in a stream",
        "5.0.0",
        "O(1)",
        &[KEY],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xrange),
        "xrange",
        -4,
        &["readonly"],
        R_SLOW,
        "Return a range of elements in a stream, with IDs matching the specified IDs interval",
        "5.0.0",
        "O(N) with N being the number of elements being returned. If N is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1).",
        &[
            KEY,
            a("start", "string", false, false),
            a("end", "string", false, false),
            t("count", "integer", "COUNT", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xrevrange),
        "xrevrange",
        -4,
        &["readonly"],
        R_SLOW,
        "Return a range of elements in a stream, with IDs matching the specified IDs interval, in reverse order (from greater to smaller IDs) compared to XRANGE",
        "5.0.0",
        "O(N) with N being the number of elements returned. If N is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1).",
        &[
            KEY,
            a("end", "string", false, false),
            a("start", "string", false, false),
            t("count", "integer", "COUNT", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xread),
        "xread",
        -4,
        &["readonly", "blocking", "movablekeys"],
        &["@read", "@stream", "@slow", "@blocking"],
        "Return never seen elements in multiple streams, with IDs greater than the ones reported by the caller for each stream. Can block.",
        "5.0.0",
        "For each stream mentioned: O(N) with N being the number of elements being returned, it means that XREAD-ing with a fixed COUNT is O(1). Note that when the BLOCK option is used, XADD will pay O(M) time in order to serve the M clients blocked on the stream getting new data.",
        &[
            t("count", "integer", "COUNT", true),
            t("milliseconds", "integer", "BLOCK", true),
            a("key", "key", false, true),
            a("id", "string", false, true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xreadgroup),
        "xreadgroup",
        -7,
        &["write", "blocking", "movablekeys"],
        &["@write", "@stream", "@slow", "@blocking"],
        "Return new entries from a stream using a consumer group, or access the history of the pending entries for a given consumer. Can block.",
        "5.0.0",
        "For each stream mentioned: O(M) with M being the number of elements returned. If M is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1). On the other side when XREADGROUP blocks, XADD will pay the O(N) time in order to serve the N clients blocked on the stream getting new data.",
        &[
            t("group", "string", "GROUP", false),
            t("count", "integer", "COUNT", true),
            t("milliseconds", "integer", "BLOCK", true),
            t("noack", "pure-token", "NOACK", true),
            a("key", "key", false, true),
            a("id", "string", false, true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xack),
        "xack",
        -4,
        &["write", "fast"],
        W_FAST,
        "Marks a pending message as correctly processed, effectively removing it from the pending entries list of the consumer group. Return value of the command is the number of messages successfully acknowledged, that is, the IDs we were actually able to resolve in the PEL.",
        "5.0.0",
        "O(1) for each message ID processed.",
        &[KEY, GROUP, ID],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xpending),
        "xpending",
        -3,
        &["readonly"],
        R_SLOW,
        "Return information and entries from a stream consumer group pending entries list, that are messages fetched but never acknowledged.",
        "5.0.0",
        "O(N) with N being the number of elements returned, so asking for a small fixed number of entries per call is O(1). O(M), where M is the total number of entries scanned when used with the IDLE filter. When the command returns just the summary and the list of consumers is small, it runs in O(1) time; otherwise, an additional O(N) time for iterating every consumer.",
        &[KEY, GROUP, a("filters", "string", true, true)],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xclaim),
        "xclaim",
        -6,
        &["write", "fast"],
        W_FAST,
        "Changes (or acquires) ownership of a message in a consumer group, as if the message was delivered to the specified consumer.",
        "5.0.0",
        "O(log N) with N being the number of messages in the PEL of the consumer group.",
        &[
            KEY,
            GROUP,
            CONSUMER,
            a("min-idle-time", "string", false, false),
            ID,
            t("ms", "integer", "IDLE", true),
            t("unix-time-milliseconds", "integer", "TIME", true),
            t("count", "integer", "RETRYCOUNT", true),
            t("force", "pure-token", "FORCE", true),
            t("justid", "pure-token", "JUSTID", true),
            t("lastid", "string", "LASTID", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xautoclaim),
        "xautoclaim",
        -6,
        &["write", "fast"],
        W_FAST,
        "Changes (or acquires) ownership of messages in a consumer group, as if the messages were delivered to the specified consumer.",
        "6.2.0",
        "O(1) if COUNT is small.",
        &[
            KEY,
            GROUP,
            CONSUMER,
            a("min-idle-time", "string", false, false),
            a("start", "string", false, false),
            t("count", "integer", "COUNT", true),
            t("justid", "pure-token", "JUSTID", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xdel),
        "xdel",
        -3,
        &["write", "fast"],
        W_FAST,
        "Removes the specified entries from the stream. Returns the number of items actually deleted, that may be different from the number of IDs passed in case certain IDs do not exist.",
        "5.0.0",
        "O(1) for each single item to delete in the stream, regardless of the stream size.",
        &[KEY, ID],
        &[],
    ),
    cmd(
        Some(StreamCommand::Xtrim),
        "xtrim",
        -4,
        &["write"],
        W_SLOW,
        "Trims the stream to (approximately if '~' is passed) a certain size",
        "5.0.0",
        "O(N), with N being the number of evicted entries. Constant times are very small however, since entries are organized in macro nodes containing multiple entries that can be released with a single deallocation.",
        &[KEY, a("threshold", "string", false, false)],
        &[],
    ),
    cmd(
        None,
        "xgroup",
        -2,
        &[],
        &["@slow"],
        "A container for consumer groups commands",
        "5.0.0",
        "Depends on subcommand.",
        &[],
        XGROUP_SUBS,
    ),
    cmd(
        None,
        "xinfo",
        -2,
        &[],
        &["@slow"],
        "A container for stream introspection commands",
        "5.0.0",
        "Depends on subcommand.",
        &[],
        XINFO_SUBS,
    ),
];

static XGROUP_SUBS: &[Command<StreamCommand>] = &[
    cmd(
        Some(StreamCommand::XgroupCreate),
        "xgroup|create",
        -5,
        &["write", "denyoom"],
        W_SLOW,
        "Create a consumer group.",
        "5.0.0",
        "O(1)",
        &[
            KEY,
            a("groupname", "string", false, false),
            a("id", "string", false, false),
            t("mkstream", "pure-token", "MKSTREAM", true),
            t("entries_read", "integer", "ENTRIESREAD", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::XgroupCreateconsumer),
        "xgroup|createconsumer",
        5,
        &["write", "denyoom"],
        W_SLOW,
        "Create a consumer in a consumer group.",
        "6.2.0",
        "O(1)",
        &[
            KEY,
            a("groupname", "string", false, false),
            a("consumername", "string", false, false),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::XgroupDelconsumer),
        "xgroup|delconsumer",
        5,
        &["write"],
        W_SLOW,
        "Delete a consumer from a consumer group.",
        "5.0.0",
        "O(1)",
        &[
            KEY,
            a("groupname", "string", false, false),
            a("consumername", "string", false, false),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::XgroupDestroy),
        "xgroup|destroy",
        4,
        &["write"],
        W_SLOW,
        "Destroy a consumer group.",
        "5.0.0",
        "O(N) where N is the number of entries in the group's pending entries list (PEL).",
        &[KEY, a("groupname", "string", false, false)],
        &[],
    ),
    cmd(
        Some(StreamCommand::XgroupSetid),
        "xgroup|setid",
        -5,
        &["write"],
        W_SLOW,
        "Set a consumer group to an arbitrary last delivered ID value.",
        "5.0.0",
        "O(1)",
        &[
            KEY,
            a("groupname", "string", false, false),
            a("id", "string", false, false),
            t("entries_read", "integer", "ENTRIESREAD", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::XgroupHelp),
        "xgroup|help",
        2,
        HELP_FLAGS,
        HELP_ACL,
        "Show helpful text about the different subcommands",
        "5.0.0",
        "O(1)",
        &[],
        &[],
    ),
];

static XINFO_SUBS: &[Command<StreamCommand>] = &[
    cmd(
        Some(StreamCommand::XinfoConsumers),
        "xinfo|consumers",
        4,
        &["readonly"],
        R_SLOW,
        "List the consumers in a consumer group",
        "5.0.0",
        "O(1)",
        &[KEY, a("groupname", "string", false, false)],
        &[],
    ),
    cmd(
        Some(StreamCommand::XinfoGroups),
        "xinfo|groups",
        3,
        &["readonly"],
        R_SLOW,
        "List the consumer groups of a stream",
        "5.0.0",
        "O(1)",
        &[KEY],
        &[],
    ),
    cmd(
        Some(StreamCommand::XinfoStream),
        "xinfo|stream",
        -3,
        &["readonly"],
        R_SLOW,
        "Get information about a stream",
        "5.0.0",
        "O(1)",
        &[
            KEY,
            t("full", "pure-token", "FULL", true),
            t("count", "integer", "COUNT", true),
        ],
        &[],
    ),
    cmd(
        Some(StreamCommand::XinfoHelp),
        "xinfo|help",
        2,
        HELP_FLAGS,
        HELP_ACL,
        "Show helpful text about the different subcommands",
        "5.0.0",
        "O(1)",
        &[],
        &[],
    ),
];

/// The table entry of `cmd`.
pub(crate) fn entry(cmd: StreamCommand) -> Option<&'static Command<StreamCommand>> {
    STREAM_COMMANDS
        .iter()
        .chain(STREAM_COMMANDS.iter().flat_map(|c| c.subcommands))
        .find(|c| c.id == Some(cmd))
}

/// Redis 7.0's `XGROUP HELP` lines.
pub(crate) const XGROUP_HELP: &[&str] = &[
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
];

/// Redis 7.0's `XINFO HELP` lines.
pub(crate) const XINFO_HELP: &[&str] = &[
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_names_its_own_variant() {
        use StreamCommand as S;
        let all = STREAM_COMMANDS
            .iter()
            .chain(STREAM_COMMANDS.iter().flat_map(|c| c.subcommands));
        let mut seen = 0;
        for c in all {
            let Some(id) = c.id else {
                assert!(!c.subcommands.is_empty(), "{}", c.name);
                continue;
            };
            let name = match id {
                S::Xadd => "xadd",
                S::Xlen => "xlen",
                S::Xrange => "xrange",
                S::Xrevrange => "xrevrange",
                S::Xread => "xread",
                S::Xreadgroup => "xreadgroup",
                S::Xack => "xack",
                S::Xpending => "xpending",
                S::Xclaim => "xclaim",
                S::Xautoclaim => "xautoclaim",
                S::Xdel => "xdel",
                S::Xtrim => "xtrim",
                S::XgroupCreate => "xgroup|create",
                S::XgroupCreateconsumer => "xgroup|createconsumer",
                S::XgroupDelconsumer => "xgroup|delconsumer",
                S::XgroupDestroy => "xgroup|destroy",
                S::XgroupSetid => "xgroup|setid",
                S::XgroupHelp => "xgroup|help",
                S::XinfoConsumers => "xinfo|consumers",
                S::XinfoGroups => "xinfo|groups",
                S::XinfoStream => "xinfo|stream",
                S::XinfoHelp => "xinfo|help",
            };
            assert_eq!(c.name, name);
            seen += 1;
        }
        assert_eq!(seen, 22);
    }
}
