//! A Redis Streams engine: commands in, RESP replies and durable operations out, no IO.
//!
//! [`Streams`] holds every stream in memory and executes the Redis 7.0
//! stream commands of [`STREAM_COMMANDS`] with Redis's replies, byte for
//! byte, in RESP2 and RESP3. It never reads a clock or touches a file: the
//! caller passes the time and the next log offset in a [`Ctx`], and collects
//! the [`StreamOp`]s each command produced, to log them and hold the reply
//! until they are durable.
//!
//! ```text
//!  Request --dispatch--> Streams::run(cmd, args, Ctx{now_ms, next_offset, ops})
//!                           |            |--> reply bytes (ReplyWriter)
//!                           |            '--> Ctx.ops: StreamOp --encode--> log
//!                           '--> Outcome::Block{keys, timeout_ms, retry}: park the client
//!  recovery: log --decode--> StreamOp --> Streams::apply    (checkpoint ops, then the rest)
//!  retention: log drops old segments --> Streams::forget_before(offset)
//! ```
//!
//! Entry IDs are always chosen by the engine (`XADD key * ...`), from
//! `now_ms` and the stream's last ID, as Redis does.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use kids_core::{Proto, ReplyWriter};
//! use sink_core::stream::{Ctx, Outcome, STREAM_COMMANDS, StreamCommand, Streams, StreamsConfig};
//!
//! let mut streams = Streams::new(StreamsConfig::default());
//! let mut ops = Vec::new();
//! let mut cx = Ctx { now_ms: 1000, next_offset: 7, ops: &mut ops };
//! let mut out = BytesMut::new();
//! let args: Vec<Bytes> = ["XADD", "s", "*", "f", "v"].map(Bytes::from).to_vec();
//! let outcome = streams.run(StreamCommand::Xadd, &args, &mut cx, &mut ReplyWriter::new(&mut out, Proto::Resp2));
//! assert!(matches!(outcome, Outcome::Done));
//! assert_eq!(&out[..], b"$6\r\n1000-0\r\n");
//! assert_eq!((cx.next_offset, ops.len()), (8, 1));
//! ```

mod exec;
mod group;
mod id;
mod op;
mod state;
mod table;

use bytes::{Bytes, BytesMut};
use kids_core::{ReplyWriter, Request};

pub use id::{ParseIdError, StreamId};
pub use op::{OpError, OpErrorKind, StreamOp};
pub use table::{STREAM_COMMANDS, StreamCommand};

use state::State;

/// Bounds of a [`Streams`].
///
/// ```
/// use sink_core::stream::StreamsConfig;
/// let config = StreamsConfig::default().max_bytes(1 << 20);
/// assert_eq!(config.max_bytes_value(), 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsConfig {
    max_bytes: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl StreamsConfig {
    /// Approximate bytes held in memory (default 256 MiB), as
    /// [`Streams::memory_bytes`] counts them. A command that would go over
    /// it is refused with Redis's OOM error and changes nothing:
    /// - `XADD`, `XGROUP CREATE` and `XGROUP CREATECONSUMER`, as in Redis;
    /// - `XREADGROUP`, `XCLAIM` and `XAUTOCLAIM` when they would create a
    ///   consumer or pending entries. Redis lets these through; here the
    ///   pending entries of a group that never acknowledges would otherwise
    ///   grow without bound on a trimmed stream, since a trimmed entry's
    ///   pending entry stays until it is acknowledged or claimed away.
    ///
    /// `XREADGROUP ... >` delivers only as many new entries as their
    /// pending entries fit (as a smaller `COUNT` would), and is refused
    /// only when none fits. An `XADD` is checked before its own `MAXLEN` or
    /// `MINID` trim runs, so a capped stream at the bound gets OOM too (as
    /// Redis's `denyoom` does over `maxmemory`). Commands that only free
    /// memory are never refused: `XACK`, `XDEL`, `XTRIM`, `XGROUP DESTROY`
    /// and `DELCONSUMER`; an `XCLAIM` or `XAUTOCLAIM` only when what it adds
    /// (a consumer, `FORCE`d pending entries) outweighs the pending entries
    /// of deleted entries it drops.
    ///
    /// A stream's key stays, and counts, after its last entry and group
    /// are gone (sink has no `DEL`), so streams named afresh without end
    /// (a name per day, say) fill the bound for good.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The memory bound.
    pub fn max_bytes_value(&self) -> u64 {
        self.max_bytes
    }
}

/// What a command runs with: the time, the next log offset, and where its
/// durable operations go.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Wall clock in milliseconds (IDs, idle times, delivery times).
    pub now_ms: u64,
    /// The global log offset the next XADD entry takes; `run` increments it per entry added.
    pub next_offset: u64,
    /// Durable operations the command produced, in order: the broker logs
    /// them and holds the reply until they are durable.
    pub ops: &'a mut Vec<StreamOp>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply is written.
    Done,
    /// XREAD/XREADGROUP with BLOCK found nothing and no reply is written:
    /// the caller parks the client and runs `retry` (the same command, `$`
    /// resolved to concrete IDs, BLOCK kept: it may block again) when one of
    /// `keys` gets an entry or a group change, or answers
    /// [`Streams::timeout_reply`] after `timeout_ms` (0: never).
    Block {
        /// The streams waited on.
        keys: Vec<Bytes>,
        /// Milliseconds to wait, 0 for ever.
        timeout_ms: u64,
        /// The command to run again.
        retry: Request,
    },
}

/// Every stream, in memory: see the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Streams {
    config: StreamsConfig,
    state: State,
}

impl Streams {
    /// No streams yet.
    pub fn new(config: StreamsConfig) -> Self {
        Self {
            config,
            state: State::default(),
        }
    }

    /// Runs one command (as kids-core's `dispatch` hands it over, after its
    /// name and arity checks; a wrong arity still gets Redis's error here):
    /// writes exactly one reply, unless it returns [`Outcome::Block`], and
    /// appends the operations it produced to `cx.ops`.
    pub fn run(
        &mut self,
        cmd: StreamCommand,
        args: &Request,
        cx: &mut Ctx<'_>,
        w: &mut ReplyWriter<'_>,
    ) -> Outcome {
        use StreamCommand as C;
        // Dispatch checks arities; a caller that did not gets Redis's error, not a panic.
        if let Some(entry) = table::entry(cmd)
            && !entry.arity_ok(args.len())
        {
            w.error(
                format!("ERR wrong number of arguments for '{}' command", entry.name).as_bytes(),
            );
            return Outcome::Done;
        }
        let mut x = exec::Exec {
            state: &mut self.state,
            config: &self.config,
            cx,
            w,
            args,
        };
        match cmd {
            C::Xadd => x.xadd(),
            C::Xlen => x.xlen(),
            C::Xrange => x.xrange(false),
            C::Xrevrange => x.xrange(true),
            C::Xread => return x.xread(false),
            C::Xreadgroup => return x.xread(true),
            C::Xdel => x.xdel(),
            C::Xtrim => x.xtrim(),
            C::Xack => x.xack(),
            C::Xpending => x.xpending(),
            C::Xclaim => x.xclaim(),
            C::Xautoclaim => x.xautoclaim(),
            C::XgroupCreate
            | C::XgroupCreateconsumer
            | C::XgroupDelconsumer
            | C::XgroupDestroy
            | C::XgroupSetid => x.xgroup(cmd),
            C::XgroupHelp => help(x.w, table::XGROUP_HELP),
            C::XinfoHelp => help(x.w, table::XINFO_HELP),
            C::XinfoConsumers | C::XinfoGroups | C::XinfoStream => x.xinfo(cmd),
        }
        Outcome::Done
    }

    /// What Redis answers when a BLOCK times out: the null array (RESP2), null (RESP3).
    pub fn timeout_reply(w: &mut ReplyWriter<'_>) {
        w.null_array();
    }

    /// Replays one operation, at recovery.
    ///
    /// # Errors
    ///
    /// An [`OpError`] when the operation does not fit the state (a group
    /// that does not exist, an ID that does not increase, ...); the state is
    /// then unchanged by it.
    pub fn apply(&mut self, op: &StreamOp) -> Result<(), OpError> {
        self.state.apply(op)
    }

    /// The operations that recreate every stream, radix-tree node, group,
    /// consumer and pending entry, but no entry: those are replayed from
    /// their own Add records. Applying them to a state that already has it
    /// changes nothing.
    ///
    /// Recovery: on a fresh [`Streams`], apply the checkpoint at the head of
    /// the oldest retained segment, then every later operation, then call
    /// [`Streams::forget_before`] with the first retained offset (it drops
    /// what the checkpoint says of nodes whose entries are gone with the
    /// dropped segments).
    pub fn checkpoint(&self, out: &mut Vec<StreamOp>) {
        for (key, s) in &self.state.keys {
            out.push(StreamOp::StreamMeta {
                key: key.clone(),
                last_id: s.last_id,
                entries_added: s.entries_added,
                max_deleted: s.max_deleted,
            });
            for (node, n) in &s.nodes {
                out.push(StreamOp::NodeMeta {
                    key: key.clone(),
                    node: *node,
                    appended: n.appended,
                    last: n.last,
                    bytes: n.bytes,
                    fields: n.fields.clone(),
                });
            }
            for (name, g) in &s.groups {
                out.push(StreamOp::GroupMeta {
                    key: key.clone(),
                    group: name.clone(),
                    last_id: g.last_id,
                    entries_read: g.entries_read,
                });
                for (cname, c) in &g.consumers {
                    out.push(StreamOp::ConsumerMeta {
                        key: key.clone(),
                        group: name.clone(),
                        consumer: cname.clone(),
                        seen_ms: c.seen_ms,
                    });
                    if !c.pel.is_empty() {
                        out.push(StreamOp::PendingMeta {
                            key: key.clone(),
                            group: name.clone(),
                            consumer: cname.clone(),
                            entries: c
                                .pel
                                .iter()
                                .filter_map(|id| {
                                    g.pel.get(id).map(|p| (*id, p.delivery_ms, p.count))
                                })
                                .collect(),
                        });
                    }
                }
            }
        }
    }

    /// The smallest log offset of any live entry: the log must keep it.
    pub fn oldest_offset(&self) -> Option<u64> {
        self.state.oldest_offset()
    }

    /// The log dropped every record before `offset`: entries added there
    /// leave memory as a MINID trim would take them (whole nodes whose last
    /// ID is older, then the older entries of the next node; the first entry
    /// moves, `max-deleted-entry-id` stays). Returns how many entries went.
    pub fn forget_before(&mut self, offset: u64) -> u64 {
        self.state.forget_before(offset)
    }

    /// How many streams (keys) exist.
    pub fn len(&self) -> usize {
        self.state.keys.len()
    }

    /// True when no stream exists.
    pub fn is_empty(&self) -> bool {
        self.state.keys.is_empty()
    }

    /// Approximate bytes held: entries, and the keys, groups, consumers and
    /// pending entries (a pending entry stays counted after its entry is
    /// trimmed or deleted, until it is acknowledged, claimed away, or its
    /// consumer or group deleted).
    /// Stored names and fields are copies, so they do not keep a client's
    /// read buffer alive.
    pub fn memory_bytes(&self) -> u64 {
        self.state.used()
    }
}

fn help(w: &mut ReplyWriter<'_>, lines: &[&str]) {
    w.array(lines.len());
    lines.iter().for_each(|l| w.simple(l.as_bytes()));
}

/// A writer into a scratch buffer in `w`'s protocol, for replies whose length is known late.
pub(crate) fn scratch<'b>(w: &ReplyWriter<'_>, buf: &'b mut BytesMut) -> ReplyWriter<'b> {
    ReplyWriter::new(buf, w.proto())
}

#[cfg(test)]
mod tests;
