//! Durable stream operations: what `run` changed, encoded for the log and replayed at recovery.

use bytes::Bytes;

use super::id::StreamId;

/// One durable change to the streams. Applying every operation
/// [`Streams::run`](super::Streams::run) emitted, in order, on a fresh
/// [`Streams`](super::Streams) rebuilds the same state; the `*Meta`
/// operations are what [`Streams::checkpoint`](super::Streams::checkpoint)
/// writes, and overwrite what they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamOp {
    /// XADD: an entry appended (the stream is created if missing).
    Add {
        /// The log offset the entry took.
        offset: u64,
        /// The stream.
        key: Bytes,
        /// The entry's ID.
        id: StreamId,
        /// Field-value pairs.
        fields: Vec<(Bytes, Bytes)>,
        /// The radix-tree node it joins (created when missing), by its first ID.
        node: StreamId,
    },
    /// XTRIM, XADD's trimming: whole nodes before `keep_node` (all nodes
    /// when `None`) go, then live entries before `before` are marked deleted.
    Trim {
        /// The stream.
        key: Bytes,
        /// The first node kept.
        keep_node: Option<StreamId>,
        /// Live entries before this are trimmed.
        before: StreamId,
    },
    /// XDEL: the entries deleted.
    Delete {
        /// The stream.
        key: Bytes,
        /// The IDs deleted.
        ids: Vec<StreamId>,
        /// The nodes left without live entries, which go.
        emptied: Vec<StreamId>,
    },
    /// XGROUP CREATE (the stream is created if missing: MKSTREAM).
    GroupCreate {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// Its last delivered ID.
        last_id: StreamId,
        /// Its entries-read counter (-1: unknown).
        entries_read: i64,
    },
    /// XGROUP DESTROY.
    GroupDestroy {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
    },
    /// XGROUP SETID.
    GroupSetId {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The new last delivered ID.
        last_id: StreamId,
        /// The new entries-read counter (-1: unknown).
        entries_read: i64,
    },
    /// XGROUP CREATECONSUMER.
    ConsumerCreate {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The consumer.
        consumer: Bytes,
        /// When (its seen time).
        now_ms: u64,
    },
    /// XGROUP DELCONSUMER (its pending entries go too).
    ConsumerDelete {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The consumer.
        consumer: Bytes,
    },
    /// XREADGROUP on one stream: the consumer is created if missing and seen now.
    Read {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The consumer.
        consumer: Bytes,
        /// When.
        now_ms: u64,
        /// NOACK: nothing enters the PEL.
        noack: bool,
        /// The consumer's history was read again (`ids` had their delivery
        /// time set to now and their count incremented); else new entries
        /// were delivered (`ids` enter the PEL) and the group moved on.
        history: bool,
        /// The entries delivered.
        ids: Vec<StreamId>,
        /// The group's new last delivered ID (new entries only).
        last_id: StreamId,
        /// The group's new entries-read counter (new entries only).
        entries_read: i64,
    },
    /// XACK: the IDs acknowledged.
    Ack {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The IDs that were pending.
        ids: Vec<StreamId>,
    },
    /// XCLAIM and XAUTOCLAIM.
    Claim {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The new owner (created if missing, seen now, when anything was claimed).
        consumer: Bytes,
        /// When.
        now_ms: u64,
        /// Claimed entries: ID, delivery time, delivery count.
        claimed: Vec<(StreamId, u64, u64)>,
        /// Pending entries dropped because their entry is gone.
        dropped: Vec<StreamId>,
        /// LASTID: raises the group's last delivered ID.
        last_id: Option<StreamId>,
    },
    /// Checkpoint: a stream exists with this metadata.
    StreamMeta {
        /// The stream.
        key: Bytes,
        /// Its last generated ID.
        last_id: StreamId,
        /// Entries ever added.
        entries_added: u64,
        /// The largest ID XDEL removed.
        max_deleted: StreamId,
    },
    /// Checkpoint: a radix-tree node of a stream.
    NodeMeta {
        /// The stream.
        key: Bytes,
        /// The node's first ID.
        node: StreamId,
        /// Entries ever appended to it.
        appended: u64,
        /// The last ID appended to it.
        last: StreamId,
        /// The size of Redis's listpack for it.
        bytes: u64,
        /// The field names of its first entry.
        fields: Vec<Bytes>,
    },
    /// Checkpoint: a group exists with this metadata.
    GroupMeta {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// Its last delivered ID.
        last_id: StreamId,
        /// Its entries-read counter.
        entries_read: i64,
    },
    /// Checkpoint: a consumer exists, last seen at `seen_ms`.
    ConsumerMeta {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The consumer.
        consumer: Bytes,
        /// Its seen time.
        seen_ms: u64,
    },
    /// Checkpoint: entries pending for a consumer: ID, delivery time, delivery count.
    PendingMeta {
        /// The stream.
        key: Bytes,
        /// The group.
        group: Bytes,
        /// The owner.
        consumer: Bytes,
        /// The pending entries.
        entries: Vec<(StreamId, u64, u64)>,
    },
}

/// What was wrong with an encoded or replayed operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream op: {kind}")]
pub struct OpError {
    kind: OpErrorKind,
}

impl OpError {
    pub(crate) fn new(kind: OpErrorKind) -> Self {
        Self { kind }
    }

    /// What went wrong.
    pub fn kind(&self) -> &OpErrorKind {
        &self.kind
    }
}

/// The kinds of [`OpError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpErrorKind {
    /// The bytes end before the operation does.
    #[error("truncated")]
    Truncated,
    /// Bytes follow the operation.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// An unknown operation tag.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// A flag byte other than 0 or 1.
    #[error("bad flag byte {0}")]
    BadFlag(u8),
    /// A length or count larger than the bytes that remain.
    #[error("length {0} exceeds the input")]
    Length(u64),
    /// Replay: the stream does not exist.
    #[error("no such stream")]
    NoSuchStream,
    /// Replay: the group does not exist.
    #[error("no such group")]
    NoSuchGroup,
    /// Replay: the group already exists.
    #[error("group exists")]
    GroupExists,
    /// Replay: an added ID is not above the stream's last ID.
    #[error("entry ID not increasing")]
    IdNotIncreasing,
}

const ADD: u8 = 1;
const TRIM: u8 = 2;
const DELETE: u8 = 3;
const GROUP_CREATE: u8 = 4;
const GROUP_DESTROY: u8 = 5;
const GROUP_SETID: u8 = 6;
const CONSUMER_CREATE: u8 = 7;
const CONSUMER_DELETE: u8 = 8;
const READ: u8 = 9;
const ACK: u8 = 10;
const CLAIM: u8 = 11;
const STREAM_META: u8 = 12;
const GROUP_META: u8 = 13;
const CONSUMER_META: u8 = 14;
const PENDING_META: u8 = 15;
const NODE_META: u8 = 16;

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn flag(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn id(&mut self, id: StreamId) {
        self.u64(id.ms);
        self.u64(id.seq);
    }
    /// A flag, then the ID only when there is one: one encoding per value.
    fn opt_id(&mut self, id: Option<StreamId>) {
        self.flag(id.is_some());
        if let Some(id) = id {
            self.id(id);
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn ids(&mut self, ids: &[StreamId]) {
        self.u64(ids.len() as u64);
        ids.iter().for_each(|&i| self.id(i));
    }
    fn triples(&mut self, t: &[(StreamId, u64, u64)]) {
        self.u64(t.len() as u64);
        for &(id, a, b) in t {
            self.id(id);
            self.u64(a);
            self.u64(b);
        }
    }
}

struct R<'a>(&'a [u8]);

fn e(kind: OpErrorKind) -> OpError {
    OpError::new(kind)
}

impl R<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], OpError> {
        if self.0.len() < n {
            return Err(e(OpErrorKind::Truncated));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, OpError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, OpError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn i64(&mut self) -> Result<i64, OpError> {
        self.u64().map(|v| v as i64)
    }
    fn flag(&mut self) -> Result<bool, OpError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(e(OpErrorKind::BadFlag(b))),
        }
    }
    fn id(&mut self) -> Result<StreamId, OpError> {
        Ok(StreamId::new(self.u64()?, self.u64()?))
    }
    fn opt_id(&mut self) -> Result<Option<StreamId>, OpError> {
        if self.flag()? {
            self.id().map(Some)
        } else {
            Ok(None)
        }
    }
    /// A count of items at least `min_size` bytes each, bounded by the input left.
    fn count(&mut self, min_size: usize) -> Result<usize, OpError> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(c) if c.checked_mul(min_size).is_some_and(|b| b <= self.0.len()) => Ok(c),
            _ if n == 0 => Ok(0),
            _ => Err(e(OpErrorKind::Length(n))),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, OpError> {
        let n = self.count(1)?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn ids(&mut self) -> Result<Vec<StreamId>, OpError> {
        let n = self.count(16)?;
        (0..n).map(|_| self.id()).collect()
    }
    fn triples(&mut self) -> Result<Vec<(StreamId, u64, u64)>, OpError> {
        let n = self.count(32)?;
        (0..n)
            .map(|_| Ok((self.id()?, self.u64()?, self.u64()?)))
            .collect()
    }
}

impl StreamOp {
    /// Appends the operation's encoding: a tag byte, then its fields
    /// (integers little-endian, byte strings and lists prefixed by a u64 length).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        match self {
            StreamOp::Add {
                offset,
                key,
                id,
                fields,
                node,
            } => {
                w.u8(ADD);
                w.u64(*offset);
                w.bytes(key);
                w.id(*id);
                w.id(*node);
                w.u64(fields.len() as u64);
                for (f, v) in fields {
                    w.bytes(f);
                    w.bytes(v);
                }
            }
            StreamOp::Trim {
                key,
                keep_node,
                before,
            } => {
                w.u8(TRIM);
                w.bytes(key);
                w.opt_id(*keep_node);
                w.id(*before);
            }
            StreamOp::Delete { key, ids, emptied } => {
                w.u8(DELETE);
                w.bytes(key);
                w.ids(ids);
                w.ids(emptied);
            }
            StreamOp::NodeMeta {
                key,
                node,
                appended,
                last,
                bytes,
                fields,
            } => {
                w.u8(NODE_META);
                w.bytes(key);
                w.id(*node);
                w.u64(*appended);
                w.id(*last);
                w.u64(*bytes);
                w.u64(fields.len() as u64);
                fields.iter().for_each(|f| w.bytes(f));
            }
            StreamOp::GroupCreate {
                key,
                group,
                last_id,
                entries_read,
            } => {
                w.u8(GROUP_CREATE);
                w.bytes(key);
                w.bytes(group);
                w.id(*last_id);
                w.i64(*entries_read);
            }
            StreamOp::GroupDestroy { key, group } => {
                w.u8(GROUP_DESTROY);
                w.bytes(key);
                w.bytes(group);
            }
            StreamOp::GroupSetId {
                key,
                group,
                last_id,
                entries_read,
            } => {
                w.u8(GROUP_SETID);
                w.bytes(key);
                w.bytes(group);
                w.id(*last_id);
                w.i64(*entries_read);
            }
            StreamOp::ConsumerCreate {
                key,
                group,
                consumer,
                now_ms,
            } => {
                w.u8(CONSUMER_CREATE);
                w.bytes(key);
                w.bytes(group);
                w.bytes(consumer);
                w.u64(*now_ms);
            }
            StreamOp::ConsumerDelete {
                key,
                group,
                consumer,
            } => {
                w.u8(CONSUMER_DELETE);
                w.bytes(key);
                w.bytes(group);
                w.bytes(consumer);
            }
            StreamOp::Read {
                key,
                group,
                consumer,
                now_ms,
                noack,
                history,
                ids,
                last_id,
                entries_read,
            } => {
                w.u8(READ);
                w.bytes(key);
                w.bytes(group);
                w.bytes(consumer);
                w.u64(*now_ms);
                w.flag(*noack);
                w.flag(*history);
                w.ids(ids);
                w.id(*last_id);
                w.i64(*entries_read);
            }
            StreamOp::Ack { key, group, ids } => {
                w.u8(ACK);
                w.bytes(key);
                w.bytes(group);
                w.ids(ids);
            }
            StreamOp::Claim {
                key,
                group,
                consumer,
                now_ms,
                claimed,
                dropped,
                last_id,
            } => {
                w.u8(CLAIM);
                w.bytes(key);
                w.bytes(group);
                w.bytes(consumer);
                w.u64(*now_ms);
                w.triples(claimed);
                w.ids(dropped);
                w.opt_id(*last_id);
            }
            StreamOp::StreamMeta {
                key,
                last_id,
                entries_added,
                max_deleted,
            } => {
                w.u8(STREAM_META);
                w.bytes(key);
                w.id(*last_id);
                w.u64(*entries_added);
                w.id(*max_deleted);
            }
            StreamOp::GroupMeta {
                key,
                group,
                last_id,
                entries_read,
            } => {
                w.u8(GROUP_META);
                w.bytes(key);
                w.bytes(group);
                w.id(*last_id);
                w.i64(*entries_read);
            }
            StreamOp::ConsumerMeta {
                key,
                group,
                consumer,
                seen_ms,
            } => {
                w.u8(CONSUMER_META);
                w.bytes(key);
                w.bytes(group);
                w.bytes(consumer);
                w.u64(*seen_ms);
            }
            StreamOp::PendingMeta {
                key,
                group,
                consumer,
                entries,
            } => {
                w.u8(PENDING_META);
                w.bytes(key);
                w.bytes(group);
                w.bytes(consumer);
                w.triples(entries);
            }
        }
    }

    /// Decodes one operation that fills `bytes` exactly.
    ///
    /// # Errors
    ///
    /// An [`OpError`] when the bytes are truncated, carry trailing bytes, an
    /// unknown tag, a bad flag or a length the input cannot hold. It never
    /// panics and never allocates more than the input's size implies.
    pub fn decode(bytes: &[u8]) -> Result<StreamOp, OpError> {
        let mut r = R(bytes);
        let op = match r.u8()? {
            ADD => {
                let offset = r.u64()?;
                let key = r.bytes()?;
                let id = r.id()?;
                let node = r.id()?;
                let n = r.count(16)?;
                let mut fields = Vec::with_capacity(n);
                for _ in 0..n {
                    fields.push((r.bytes()?, r.bytes()?));
                }
                StreamOp::Add {
                    offset,
                    key,
                    id,
                    fields,
                    node,
                }
            }
            TRIM => StreamOp::Trim {
                key: r.bytes()?,
                keep_node: r.opt_id()?,
                before: r.id()?,
            },
            DELETE => StreamOp::Delete {
                key: r.bytes()?,
                ids: r.ids()?,
                emptied: r.ids()?,
            },
            NODE_META => StreamOp::NodeMeta {
                key: r.bytes()?,
                node: r.id()?,
                appended: r.u64()?,
                last: r.id()?,
                bytes: r.u64()?,
                fields: {
                    let n = r.count(8)?;
                    (0..n).map(|_| r.bytes()).collect::<Result<_, _>>()?
                },
            },
            GROUP_CREATE => StreamOp::GroupCreate {
                key: r.bytes()?,
                group: r.bytes()?,
                last_id: r.id()?,
                entries_read: r.i64()?,
            },
            GROUP_DESTROY => StreamOp::GroupDestroy {
                key: r.bytes()?,
                group: r.bytes()?,
            },
            GROUP_SETID => StreamOp::GroupSetId {
                key: r.bytes()?,
                group: r.bytes()?,
                last_id: r.id()?,
                entries_read: r.i64()?,
            },
            CONSUMER_CREATE => StreamOp::ConsumerCreate {
                key: r.bytes()?,
                group: r.bytes()?,
                consumer: r.bytes()?,
                now_ms: r.u64()?,
            },
            CONSUMER_DELETE => StreamOp::ConsumerDelete {
                key: r.bytes()?,
                group: r.bytes()?,
                consumer: r.bytes()?,
            },
            READ => StreamOp::Read {
                key: r.bytes()?,
                group: r.bytes()?,
                consumer: r.bytes()?,
                now_ms: r.u64()?,
                noack: r.flag()?,
                history: r.flag()?,
                ids: r.ids()?,
                last_id: r.id()?,
                entries_read: r.i64()?,
            },
            ACK => StreamOp::Ack {
                key: r.bytes()?,
                group: r.bytes()?,
                ids: r.ids()?,
            },
            CLAIM => {
                let key = r.bytes()?;
                let group = r.bytes()?;
                let consumer = r.bytes()?;
                let now_ms = r.u64()?;
                let claimed = r.triples()?;
                let dropped = r.ids()?;
                StreamOp::Claim {
                    key,
                    group,
                    consumer,
                    now_ms,
                    claimed,
                    dropped,
                    last_id: r.opt_id()?,
                }
            }
            STREAM_META => StreamOp::StreamMeta {
                key: r.bytes()?,
                last_id: r.id()?,
                entries_added: r.u64()?,
                max_deleted: r.id()?,
            },
            GROUP_META => StreamOp::GroupMeta {
                key: r.bytes()?,
                group: r.bytes()?,
                last_id: r.id()?,
                entries_read: r.i64()?,
            },
            CONSUMER_META => StreamOp::ConsumerMeta {
                key: r.bytes()?,
                group: r.bytes()?,
                consumer: r.bytes()?,
                seen_ms: r.u64()?,
            },
            PENDING_META => StreamOp::PendingMeta {
                key: r.bytes()?,
                group: r.bytes()?,
                consumer: r.bytes()?,
                entries: r.triples()?,
            },
            tag => return Err(e(OpErrorKind::UnknownTag(tag))),
        };
        if !r.0.is_empty() {
            return Err(e(OpErrorKind::Trailing(r.0.len())));
        }
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from)
    }

    fn id() -> impl Strategy<Value = StreamId> {
        (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| StreamId::new(ms, seq))
    }

    fn ids() -> impl Strategy<Value = Vec<StreamId>> {
        proptest::collection::vec(id(), 0..4)
    }

    fn triples() -> impl Strategy<Value = Vec<(StreamId, u64, u64)>> {
        proptest::collection::vec((id(), any::<u64>(), any::<u64>()), 0..4)
    }

    pub(crate) fn op() -> impl Strategy<Value = StreamOp> {
        prop_oneof![
            (
                any::<u64>(),
                bytes(),
                id(),
                proptest::collection::vec((bytes(), bytes()), 0..4),
                id()
            )
                .prop_map(|(offset, key, id, fields, node)| StreamOp::Add {
                    offset,
                    key,
                    id,
                    fields,
                    node
                }),
            (bytes(), proptest::option::of(id()), id()).prop_map(|(key, keep_node, before)| {
                StreamOp::Trim {
                    key,
                    keep_node,
                    before,
                }
            }),
            (bytes(), ids(), ids()).prop_map(|(key, ids, emptied)| StreamOp::Delete {
                key,
                ids,
                emptied
            }),
            (
                bytes(),
                id(),
                any::<u64>(),
                id(),
                any::<u64>(),
                proptest::collection::vec(bytes(), 0..3)
            )
                .prop_map(|(key, node, appended, last, bytes, fields)| {
                    StreamOp::NodeMeta {
                        key,
                        node,
                        appended,
                        last,
                        bytes,
                        fields,
                    }
                }),
            (bytes(), bytes(), id(), any::<i64>()).prop_map(
                |(key, group, last_id, entries_read)| StreamOp::GroupCreate {
                    key,
                    group,
                    last_id,
                    entries_read
                }
            ),
            (bytes(), bytes()).prop_map(|(key, group)| StreamOp::GroupDestroy { key, group }),
            (bytes(), bytes(), id(), any::<i64>()).prop_map(
                |(key, group, last_id, entries_read)| StreamOp::GroupSetId {
                    key,
                    group,
                    last_id,
                    entries_read
                }
            ),
            (bytes(), bytes(), bytes(), any::<u64>()).prop_map(|(key, group, consumer, now_ms)| {
                StreamOp::ConsumerCreate {
                    key,
                    group,
                    consumer,
                    now_ms,
                }
            }),
            (bytes(), bytes(), bytes()).prop_map(|(key, group, consumer)| {
                StreamOp::ConsumerDelete {
                    key,
                    group,
                    consumer,
                }
            }),
            (
                bytes(),
                bytes(),
                bytes(),
                any::<u64>(),
                any::<bool>(),
                any::<bool>(),
                ids(),
                id(),
                any::<i64>()
            )
                .prop_map(
                    |(key, group, consumer, now_ms, noack, history, ids, last_id, entries_read)| {
                        StreamOp::Read {
                            key,
                            group,
                            consumer,
                            now_ms,
                            noack,
                            history,
                            ids,
                            last_id,
                            entries_read,
                        }
                    }
                ),
            (bytes(), bytes(), ids()).prop_map(|(key, group, ids)| StreamOp::Ack {
                key,
                group,
                ids
            }),
            (
                bytes(),
                bytes(),
                bytes(),
                any::<u64>(),
                triples(),
                ids(),
                proptest::option::of(id())
            )
                .prop_map(
                    |(key, group, consumer, now_ms, claimed, dropped, last_id)| StreamOp::Claim {
                        key,
                        group,
                        consumer,
                        now_ms,
                        claimed,
                        dropped,
                        last_id
                    }
                ),
            (bytes(), id(), any::<u64>(), id()).prop_map(
                |(key, last_id, entries_added, max_deleted)| StreamOp::StreamMeta {
                    key,
                    last_id,
                    entries_added,
                    max_deleted
                }
            ),
            (bytes(), bytes(), id(), any::<i64>()).prop_map(
                |(key, group, last_id, entries_read)| StreamOp::GroupMeta {
                    key,
                    group,
                    last_id,
                    entries_read
                }
            ),
            (bytes(), bytes(), bytes(), any::<u64>()).prop_map(
                |(key, group, consumer, seen_ms)| StreamOp::ConsumerMeta {
                    key,
                    group,
                    consumer,
                    seen_ms
                }
            ),
            (bytes(), bytes(), bytes(), triples()).prop_map(|(key, group, consumer, entries)| {
                StreamOp::PendingMeta {
                    key,
                    group,
                    consumer,
                    entries,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(op in op()) {
            let mut buf = Vec::new();
            op.encode(&mut buf);
            prop_assert_eq!(StreamOp::decode(&buf), Ok(op.clone()));
            // Every strict prefix is an error, never a panic.
            for n in 0..buf.len() {
                prop_assert!(StreamOp::decode(&buf[..n]).is_err(), "prefix {}", n);
            }
            // A trailing byte is refused.
            buf.push(0);
            prop_assert!(StreamOp::decode(&buf).is_err());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StreamOp::decode(&data);
        }
    }

    #[test]
    fn one_encoding_per_op() {
        // Found by fuzz_targets/stream_op.rs: an absent LASTID followed by
        // non-zero ID bytes decoded, and re-encoded differently.
        let mut crash = vec![CLAIM];
        crash.extend_from_slice(&[0; 48]);
        crash.push(0);
        crash.push(126);
        crash.extend_from_slice(&[0; 15]);
        assert_eq!(
            StreamOp::decode(&crash),
            Err(OpError::new(OpErrorKind::Trailing(16)))
        );
    }

    #[test]
    fn lengths_are_bounded_by_the_input() {
        // A key length of u64::MAX, of 2^40 and one byte too many: errors, no allocation.
        for len in [u64::MAX, 1 << 40, 2] {
            let mut buf = vec![GROUP_DESTROY];
            buf.extend_from_slice(&len.to_le_bytes());
            buf.push(b'k');
            assert_eq!(
                StreamOp::decode(&buf),
                Err(OpError::new(OpErrorKind::Length(len)))
            );
        }
        // An ID list claiming more IDs than 16-byte slots left.
        let mut buf = vec![DELETE];
        buf.extend_from_slice(&0u64.to_le_bytes());
        buf.extend_from_slice(&2u64.to_le_bytes());
        buf.extend_from_slice(&[0; 31]);
        assert_eq!(
            StreamOp::decode(&buf),
            Err(OpError::new(OpErrorKind::Length(2)))
        );
        // A field count whose size overflows.
        let mut buf = vec![ADD];
        buf.extend_from_slice(&[0; 8 + 8 + 16 + 1]);
        buf.extend_from_slice(&(u64::MAX / 8).to_le_bytes());
        assert!(StreamOp::decode(&buf).is_err());
        assert_eq!(
            StreamOp::decode(&[]),
            Err(OpError::new(OpErrorKind::Truncated))
        );
        assert_eq!(
            StreamOp::decode(&[99]),
            Err(OpError::new(OpErrorKind::UnknownTag(99)))
        );
        let mut bad_flag = vec![TRIM];
        bad_flag.extend_from_slice(&0u64.to_le_bytes());
        bad_flag.push(7);
        assert_eq!(
            StreamOp::decode(&bad_flag),
            Err(OpError::new(OpErrorKind::BadFlag(7)))
        );
    }
}
