//! The in-memory model of streams, groups, consumers and pending entries, and
//! the one place it changes: applying a [`StreamOp`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

use super::id::StreamId;
use super::op::{OpError, OpErrorKind, StreamOp};

/// Entries per radix-tree node, Redis's `stream-node-max-entries` default.
pub(crate) const NODE_MAX_ENTRIES: u64 = 100;

/// Bytes per radix-tree node, Redis's `stream-node-max-bytes` default.
pub(crate) const NODE_MAX_BYTES: u64 = 4096;

/// Redis's "entries read is unknown" value.
pub(crate) const INVALID_ENTRIES_READ: i64 = -1;

/// Approximate bytes a stream key holds besides its entries (the stream, its
/// map slot, its place among the first offsets), plus its name.
pub(crate) const KEY_COST: u64 = 256;

/// Approximate bytes a consumer group holds, plus its name.
pub(crate) const GROUP_COST: u64 = 192;

/// Approximate bytes a consumer holds, plus its name.
pub(crate) const CONSUMER_COST: u64 = 128;

/// Approximate bytes a pending entry holds: its slot in the group's PEL and
/// in its consumer's.
pub(crate) const PENDING_COST: u64 = 128;

/// A copy of a name to keep: a request's argument is a slice of the
/// connection's read buffer, and keeping the slice would pin the whole buffer.
pub(crate) fn own(name: &Bytes) -> Bytes {
    Bytes::copy_from_slice(name)
}

/// A copy of an entry's fields to keep, in one allocation (see [`own`]).
fn own_fields(fields: &[(Bytes, Bytes)]) -> Vec<(Bytes, Bytes)> {
    let mut buf = BytesMut::with_capacity(fields.iter().map(|(f, v)| f.len() + v.len()).sum());
    for (f, v) in fields {
        buf.extend_from_slice(f);
        buf.extend_from_slice(v);
    }
    let buf = buf.freeze();
    let mut at = 0;
    let mut next = |n: usize| {
        at += n;
        buf.slice(at - n..at)
    };
    fields
        .iter()
        .map(|(f, v)| (next(f.len()), next(v.len())))
        .collect()
}

/// One entry: its fields and the log offset of its Add record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) fields: Vec<(Bytes, Bytes)>,
    pub(crate) offset: u64,
}

/// A radix-tree node of Redis's stream (a listpack of up to 100 entries),
/// keyed by its first ID: kept to reproduce `~` trimming and `radix-tree-*`
/// exactly. Its live entries are those of the stream between its key and the
/// next node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Entries ever appended to it, live or deleted.
    pub(crate) appended: u64,
    /// The last ID appended to it, deleted or not.
    pub(crate) last: StreamId,
    /// The size of Redis's listpack for it (deleting only flags entries).
    pub(crate) bytes: u64,
    /// The field names of its first entry (Redis's master entry).
    pub(crate) fields: Vec<Bytes>,
}

impl Node {
    /// A node whose first entry has these fields: the listpack header and
    /// end byte, then the master entry (count, deleted, field count, field
    /// names, terminator).
    fn new(fields: &[(Bytes, Bytes)]) -> Self {
        // Copies: the entry's fields share one allocation, values too, and
        // the node may outlive the entry.
        let names: Vec<Bytes> = fields.iter().map(|(f, _)| own(f)).collect();
        let master = lp_int(1)
            + lp_int(0)
            + lp_int(names.len() as i64)
            + names.iter().map(|f| lp_str(f)).sum::<u64>()
            + lp_int(0);
        Self {
            appended: 0,
            last: StreamId::MIN,
            bytes: 7 + master,
            fields: names,
        }
    }

    /// The listpack bytes of entry `id` in node `key` (Redis's
    /// `streamAppendItem`: flags, ID deltas, fields unless the master's, values, lp-count).
    fn entry_size(&self, key: StreamId, id: StreamId, fields: &[(Bytes, Bytes)]) -> u64 {
        let same = fields.len() == self.fields.len()
            && fields.iter().zip(&self.fields).all(|((f, _), m)| f == m);
        let n = fields.len() as i64;
        let mut size = lp_int(if same { 2 } else { 0 })
            + lp_int(id.ms.wrapping_sub(key.ms) as i64)
            + lp_int(id.seq.wrapping_sub(key.seq) as i64)
            + fields.iter().map(|(_, v)| lp_str(v)).sum::<u64>();
        if !same {
            size += lp_int(n) + fields.iter().map(|(f, _)| lp_str(f)).sum::<u64>();
        }
        size + lp_int(if same { n + 3 } else { 2 * n + 4 })
    }
}

/// Bytes a listpack entry takes: its encoding, then its back-length.
fn lp_entry(encoded: u64) -> u64 {
    let backlen = match encoded {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    };
    encoded + backlen
}

/// A listpack integer entry.
fn lp_int(v: i64) -> u64 {
    lp_entry(match v {
        0..=127 => 1,
        -4096..=4095 => 2,
        -32768..=32767 => 3,
        -8_388_608..=8_388_607 => 4,
        -2_147_483_648..=2_147_483_647 => 5,
        _ => 9,
    })
}

/// A listpack string entry (stored as an integer when it reads as one).
fn lp_str(s: &[u8]) -> u64 {
    if s.len() < 21
        && let Some(v) = kids_core::resp::parse_i64(s)
    {
        return lp_int(v);
    }
    let len = s.len() as u64;
    lp_entry(match len {
        0..=63 => 1 + len,
        64..=4095 => 2 + len,
        _ => 5 + len,
    })
}

/// A pending entry (NACK) of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) consumer: Bytes,
    pub(crate) delivery_ms: u64,
    pub(crate) count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Consumer {
    pub(crate) seen_ms: u64,
    pub(crate) pel: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) last_id: StreamId,
    pub(crate) entries_read: i64,
    pub(crate) pel: BTreeMap<StreamId, Pending>,
    pub(crate) consumers: BTreeMap<Bytes, Consumer>,
    /// Bytes of the consumers' names, for [`Group::held`].
    names: u64,
}

impl Group {
    fn new(last_id: StreamId, entries_read: i64) -> Self {
        Self {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
            names: 0,
        }
    }

    /// Approximate bytes the group named `name` holds: itself, its
    /// consumers and its pending entries.
    fn held(&self, name: &[u8]) -> u64 {
        GROUP_COST
            + name.len() as u64
            + self.names
            + self.consumers.len() as u64 * CONSUMER_COST
            + self.pel.len() as u64 * PENDING_COST
    }

    /// What consumer `name` costs if it has to be created.
    fn consumer_cost(&self, name: &[u8]) -> u64 {
        if self.consumers.contains_key(name) {
            0
        } else {
            CONSUMER_COST + name.len() as u64
        }
    }

    /// The consumer `name`, created (seen now) when missing.
    fn consumer(&mut self, name: &Bytes, now_ms: u64) -> &mut Consumer {
        if !self.consumers.contains_key(name) {
            self.names += name.len() as u64;
            let c = Consumer {
                seen_ms: now_ms,
                pel: BTreeSet::new(),
            };
            self.consumers.insert(own(name), c);
        }
        // Present now: `entry` finds the kept name and drops this clone.
        self.consumers.entry(name.clone()).or_default()
    }

    /// Drops consumer `name` and its pending entries.
    fn remove_consumer(&mut self, name: &Bytes) {
        if let Some(c) = self.consumers.remove(name) {
            self.names = self.names.saturating_sub(name.len() as u64);
            for id in c.pel {
                self.pel.remove(&id);
            }
        }
    }

    /// Gives pending entry `id` to `consumer` (taking it from its owner).
    fn assign(&mut self, id: StreamId, consumer: &Bytes, delivery_ms: u64, count: u64) {
        if let Some(old) = self.pel.get(&id)
            && old.consumer != consumer
            && let Some(c) = self.consumers.get_mut(&old.consumer)
        {
            c.pel.remove(&id);
        }
        self.consumer(consumer, delivery_ms).pel.insert(id);
        // The consumer's kept name, shared, rather than the request's.
        let consumer = match self.consumers.get_key_value(consumer) {
            Some((kept, _)) => kept.clone(),
            None => own(consumer),
        };
        self.pel.insert(
            id,
            Pending {
                consumer,
                delivery_ms,
                count,
            },
        );
    }

    /// Drops pending entry `id`; true if it was pending.
    pub(crate) fn unpend(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(p) => {
                if let Some(c) = self.consumers.get_mut(&p.consumer) {
                    c.pel.remove(&id);
                }
                true
            }
            None => false,
        }
    }
}

/// One stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Stream {
    pub(crate) entries: BTreeMap<StreamId, Entry>,
    pub(crate) nodes: BTreeMap<StreamId, Node>,
    pub(crate) last_id: StreamId,
    pub(crate) entries_added: u64,
    pub(crate) max_deleted: StreamId,
    pub(crate) groups: BTreeMap<Bytes, Group>,
    pub(crate) bytes: u64,
}

/// Approximate bytes one entry holds.
pub(crate) fn entry_bytes(fields: &[(Bytes, Bytes)]) -> u64 {
    64 + fields
        .iter()
        .map(|(f, v)| (f.len() + v.len() + 32) as u64)
        .sum::<u64>()
}

impl Stream {
    /// The first live entry's ID, `0-0` when empty (Redis's `first_id`).
    pub(crate) fn first_id(&self) -> StreamId {
        self.entries.keys().next().copied().unwrap_or_default()
    }

    /// The log offset of the first live entry's Add record.
    pub(crate) fn first_offset(&self) -> Option<u64> {
        self.entries.values().next().map(|e| e.offset)
    }

    /// The last live entry's ID, `0-0` when empty.
    pub(crate) fn last_live_id(&self) -> StreamId {
        self.entries.keys().next_back().copied().unwrap_or_default()
    }

    /// The node the next entry goes into: the last one, or a new one keyed
    /// by `id` when there is none or the last is full.
    pub(crate) fn node_for(&self, id: StreamId, fields: &[(Bytes, Bytes)]) -> StreamId {
        let raw: u64 = fields.iter().map(|(f, v)| (f.len() + v.len()) as u64).sum();
        match self.nodes.iter().next_back() {
            Some((k, n)) if n.bytes + raw < NODE_MAX_BYTES && n.appended < NODE_MAX_ENTRIES => *k,
            _ => id,
        }
    }

    /// The node holding `id`.
    pub(crate) fn node_of(&self, id: StreamId) -> Option<StreamId> {
        self.nodes.range(..=id).next_back().map(|(k, _)| *k)
    }

    /// The live entries of node `key`.
    pub(crate) fn node_entries(&self, key: StreamId) -> impl Iterator<Item = StreamId> + '_ {
        let end = self
            .nodes
            .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
            .next()
            .map(|(k, _)| *k);
        self.entries
            .range(key..)
            .map(|(k, _)| *k)
            .take_while(move |k| end.is_none_or(|e| *k < e))
    }

    /// Removes live entry `id` (XDEL, trimming inside a node: the node stays).
    fn remove(&mut self, id: StreamId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(entry_bytes(&e.fields));
        Some(e)
    }

    /// Trims as a [`StreamOp::Trim`] says: whole nodes before `keep_node`
    /// (all nodes when `None`), then live entries before `before`. Returns
    /// the entries removed and their bytes.
    pub(crate) fn trim(&mut self, keep_node: Option<StreamId>, before: StreamId) -> (u64, u64) {
        let bytes0 = self.bytes;
        let mut removed = 0;
        let gone: Vec<StreamId> = match keep_node {
            Some(k) => self.nodes.range(..k).map(|(k, _)| *k).collect(),
            None => self.nodes.keys().copied().collect(),
        };
        for k in gone {
            self.nodes.remove(&k);
        }
        let doomed: Vec<StreamId> = match keep_node {
            Some(k) => self.entries.range(..k).map(|(k, _)| *k).collect(),
            None => self.entries.keys().copied().collect(),
        };
        for id in doomed {
            if let Some(e) = self.entries.remove(&id) {
                self.bytes = self.bytes.saturating_sub(entry_bytes(&e.fields));
                removed += 1;
            }
        }
        let marked: Vec<StreamId> = self.entries.range(..before).map(|(k, _)| *k).collect();
        for id in marked {
            if self.remove(id).is_some() {
                removed += 1;
            }
        }
        (removed, bytes0 - self.bytes)
    }

    /// The Trim that removes every live entry before `before`, by whole
    /// nodes where a node's last ID is before it (Redis's exact MINID trim).
    pub(crate) fn prefix_trim(&self, before: StreamId) -> (Option<StreamId>, StreamId) {
        let keep = self
            .nodes
            .iter()
            .find(|(_, n)| n.last >= before)
            .map(|(k, _)| *k);
        (keep, before)
    }

    /// Redis's `streamRangeHasTombstones(s, start, NULL-or-end)`.
    pub(crate) fn has_tombstones(&self, start: StreamId, end: StreamId) -> bool {
        if self.entries.is_empty() || self.max_deleted.is_zero() {
            return false;
        }
        if self.first_id() > self.max_deleted {
            return false;
        }
        start <= self.max_deleted && self.max_deleted <= end
    }

    /// Redis's `streamEstimateDistanceFromFirstEverEntry`.
    pub(crate) fn estimate_distance(&self, id: StreamId) -> i64 {
        let added = self.entries_added as i64;
        if self.entries_added == 0 {
            return 0;
        }
        if self.entries.is_empty() && id <= self.last_id {
            return added;
        }
        match id.cmp(&self.last_id) {
            std::cmp::Ordering::Equal => return added,
            std::cmp::Ordering::Greater => return INVALID_ENTRIES_READ,
            std::cmp::Ordering::Less => {}
        }
        let first = self.first_id();
        if self.max_deleted.is_zero() || self.max_deleted < first {
            let len = self.entries.len() as i64;
            if id < first {
                return added - len;
            } else if id == first {
                return added - len + 1;
            }
        }
        INVALID_ENTRIES_READ
    }

    /// The group's lag, `None` when Redis cannot tell (`streamReplyWithCGLag`).
    pub(crate) fn lag(&self, g: &Group) -> Option<i64> {
        let added = self.entries_added as i64;
        if self.entries_added == 0 {
            return Some(0);
        }
        if g.entries_read != INVALID_ENTRIES_READ && !self.has_tombstones(g.last_id, StreamId::MAX)
        {
            return Some(added - g.entries_read);
        }
        let read = self.estimate_distance(g.last_id);
        (read != INVALID_ENTRIES_READ).then_some(added - read)
    }

    /// Redis's count of radix-tree nodes for this stream's node keys.
    pub(crate) fn rax_nodes(&self) -> u64 {
        let keys: Vec<[u8; 16]> = self.nodes.keys().map(|k| k.to_be_bytes()).collect();
        if keys.is_empty() {
            return 1;
        }
        rax_count(&keys, 0)
    }
}

/// Nodes of a compressed radix tree holding `keys` (sorted, distinct, all 16
/// bytes long) below depth `depth`, as Redis's rax lays them out.
fn rax_count(keys: &[[u8; 16]], depth: usize) -> u64 {
    if depth == 16 {
        return 1;
    }
    let (first, last) = (keys[0], keys[keys.len() - 1]);
    if first[depth] == last[depth] {
        // One way on: a compressed node up to where the keys part.
        let mut end = depth;
        while end < 16 && first[end] == last[end] {
            end += 1;
        }
        return 1 + rax_count(keys, end);
    }
    let mut n = 1;
    let mut i = 0;
    while i < keys.len() {
        let b = keys[i][depth];
        let j = i + keys[i..].iter().take_while(|k| k[depth] == b).count();
        n += rax_count(&keys[i..j], depth + 1);
        i = j;
    }
    n
}

/// All streams by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct State {
    pub(crate) keys: BTreeMap<Bytes, Stream>,
    pub(crate) bytes: u64,
    /// Each non-empty stream's first entry's log offset, with its key, so
    /// that the oldest offset any stream holds is the first element rather
    /// than a walk over every stream on each commit. Kept by [`State::apply`]
    /// and [`State::forget_before`] (through `move_first`), the only places
    /// entries come and go.
    firsts: BTreeSet<(u64, Bytes)>,
    /// Approximate bytes of everything but entries: keys, groups, consumers
    /// and pending entries. Kept by [`State::apply`].
    meta: u64,
}

/// Moves stream `key` in `firsts` from its old first offset to its new one.
fn move_first(
    firsts: &mut BTreeSet<(u64, Bytes)>,
    key: &Bytes,
    before: Option<u64>,
    after: Option<u64>,
) {
    if before == after {
        return;
    }
    if let Some(o) = before {
        firsts.remove(&(o, key.clone()));
    }
    if let Some(o) = after {
        firsts.insert((o, key.clone()));
    }
}

/// The stream an op changes, and the group when it changes one: all it
/// changes besides entries.
fn scope(op: &StreamOp) -> (&Bytes, Option<&Bytes>) {
    match op {
        StreamOp::Add { key, .. }
        | StreamOp::Trim { key, .. }
        | StreamOp::Delete { key, .. }
        | StreamOp::StreamMeta { key, .. }
        | StreamOp::NodeMeta { key, .. } => (key, None),
        StreamOp::GroupCreate { key, group, .. }
        | StreamOp::GroupDestroy { key, group }
        | StreamOp::GroupSetId { key, group, .. }
        | StreamOp::ConsumerCreate { key, group, .. }
        | StreamOp::ConsumerDelete { key, group, .. }
        | StreamOp::Read { key, group, .. }
        | StreamOp::Ack { key, group, .. }
        | StreamOp::Claim { key, group, .. }
        | StreamOp::GroupMeta { key, group, .. }
        | StreamOp::ConsumerMeta { key, group, .. }
        | StreamOp::PendingMeta { key, group, .. } => (key, Some(group)),
    }
}

fn err(kind: OpErrorKind) -> OpError {
    OpError::new(kind)
}

impl State {
    fn stream(&mut self, key: &Bytes) -> Result<&mut Stream, OpError> {
        self.keys
            .get_mut(key)
            .ok_or_else(|| err(OpErrorKind::NoSuchStream))
    }

    fn group(&mut self, key: &Bytes, group: &Bytes) -> Result<&mut Group, OpError> {
        self.stream(key)?
            .groups
            .get_mut(group)
            .ok_or_else(|| err(OpErrorKind::NoSuchGroup))
    }

    /// Approximate bytes held: entries, keys, groups, consumers and pending
    /// entries (the pending entries of trimmed entries too, until acked or
    /// claimed away).
    pub(crate) fn used(&self) -> u64 {
        self.bytes + self.meta
    }

    /// [`State::used`] counted from scratch, to check the running count.
    #[cfg(test)]
    pub(crate) fn recount(&self) -> u64 {
        let group = |(name, g): (&Bytes, &Group)| {
            let consumers: u64 = g
                .consumers
                .keys()
                .map(|c| CONSUMER_COST + c.len() as u64)
                .sum();
            GROUP_COST + name.len() as u64 + consumers + g.pel.len() as u64 * PENDING_COST
        };
        let stream = |(key, s): (&Bytes, &Stream)| {
            let entries: u64 = s.entries.values().map(|e| entry_bytes(&e.fields)).sum();
            KEY_COST + key.len() as u64 + entries + s.groups.iter().map(group).sum::<u64>()
        };
        self.keys.iter().map(stream).sum()
    }

    /// What `key` holds besides entries, with `group`'s share when named.
    fn held(&self, key: &Bytes, group: Option<&Bytes>) -> u64 {
        let Some(s) = self.keys.get(key) else {
            return 0;
        };
        let g = group.and_then(|g| Some(s.groups.get(g)?.held(g)));
        KEY_COST + key.len() as u64 + g.unwrap_or(0)
    }

    /// At most how many bytes [`State::used`] grows by when `op` applies
    /// (negative: it shrinks by at least that much), for the memory bound a
    /// command checks before it emits `op`. Checkpoint records restore what
    /// was and are not bounded: 0.
    pub(crate) fn growth(&self, op: &StreamOp) -> i64 {
        let new_key = |key: &Bytes| match self.keys.contains_key(key) {
            true => 0,
            false => KEY_COST + key.len() as u64,
        };
        let group = |key: &Bytes, g: &Bytes| self.keys.get(key).and_then(|s| s.groups.get(g));
        let new_consumer = |g: Option<&Group>, c: &Bytes| g.map_or(0, |g| g.consumer_cost(c));
        // Distinct IDs of `ids` that are (or are not) pending in `g`.
        let pending = |g: Option<&Group>, ids: &mut dyn Iterator<Item = StreamId>, is: bool| {
            let ids: BTreeSet<StreamId> = ids.collect();
            let n = ids
                .iter()
                .filter(|id| g.is_some_and(|g| g.pel.contains_key(id)) == is)
                .count();
            n as u64 * PENDING_COST
        };
        let grows = match op {
            StreamOp::Add { key, fields, .. } => new_key(key) + entry_bytes(fields),
            StreamOp::GroupCreate { key, group: g, .. } => {
                let exists = group(key, g).is_some();
                new_key(key)
                    + if exists {
                        0
                    } else {
                        GROUP_COST + g.len() as u64
                    }
            }
            StreamOp::ConsumerCreate {
                key,
                group: g,
                consumer,
                ..
            } => new_consumer(group(key, g), consumer),
            StreamOp::Read {
                key,
                group: g,
                consumer,
                noack,
                history,
                ids,
                ..
            } => {
                let g = group(key, g);
                let fresh = if *history || *noack {
                    0
                } else {
                    pending(g, &mut ids.iter().copied(), false)
                };
                new_consumer(g, consumer) + fresh
            }
            StreamOp::Claim {
                key,
                group: g,
                consumer,
                claimed,
                dropped,
                ..
            } => {
                let g = group(key, g);
                let c = if claimed.is_empty() {
                    0
                } else {
                    new_consumer(g, consumer)
                };
                let fresh = pending(g, &mut claimed.iter().map(|(id, _, _)| *id), false);
                let freed = pending(g, &mut dropped.iter().copied(), true);
                return (c + fresh) as i64 - freed as i64;
            }
            _ => 0,
        };
        grows as i64
    }

    /// What consumer `consumer` of `group` on `key` costs if it has to be
    /// created (0 when it exists, or the group does not).
    pub(crate) fn consumer_cost(&self, key: &Bytes, group: &Bytes, consumer: &Bytes) -> u64 {
        self.keys
            .get(key)
            .and_then(|s| s.groups.get(group))
            .map_or(0, |g| g.consumer_cost(consumer))
    }

    /// The stream `key`, created empty (its name copied) when missing.
    fn stream_or_new(&mut self, key: &Bytes) -> &mut Stream {
        if !self.keys.contains_key(key) {
            self.keys.insert(own(key), Stream::default());
        }
        // Present now: `entry` finds the kept name and drops this clone.
        self.keys.entry(key.clone()).or_default()
    }

    /// The smallest log offset of any live entry.
    pub(crate) fn oldest_offset(&self) -> Option<u64> {
        self.firsts.first().map(|(offset, _)| *offset)
    }

    /// Drops every entry added before log offset `offset`, as a MINID trim
    /// would (whole nodes whose last ID is older, then the older entries of
    /// the next node). Every stream is trimmed so, which also drops leading
    /// nodes with no live entry left; this runs when the log drops segments,
    /// not per command. Returns how many entries went.
    pub(crate) fn forget_before(&mut self, offset: u64) -> u64 {
        let mut total = 0;
        for (key, s) in &mut self.keys {
            let first = s.first_offset();
            let before = match s.entries.iter().find(|(_, e)| e.offset >= offset) {
                Some((id, _)) => *id,
                None => s.last_id.next().unwrap_or(StreamId::MAX),
            };
            let (keep, before) = s.prefix_trim(before);
            let (n, b) = s.trim(keep, before);
            total += n;
            self.bytes = self.bytes.saturating_sub(b);
            move_first(&mut self.firsts, key, first, s.first_offset());
        }
        total
    }

    /// Applies one operation: the only way the state changes.
    pub(crate) fn apply(&mut self, op: &StreamOp) -> Result<(), OpError> {
        let first = |st: &Self, key| st.keys.get(key).and_then(Stream::first_offset);
        let touched = match op {
            StreamOp::Add { key, .. }
            | StreamOp::Trim { key, .. }
            | StreamOp::Delete { key, .. } => Some((key, first(self, key))),
            _ => None,
        };
        let (key, group) = scope(op);
        let held = self.held(key, group);
        let result = self.apply_op(op);
        self.meta = (self.meta + self.held(key, group)).saturating_sub(held);
        if let Some((key, before)) = touched {
            let after = first(self, key);
            // The kept name, not the request's (see `own`).
            let kept = self.keys.get_key_value(key).map(|(k, _)| k.clone());
            move_first(
                &mut self.firsts,
                kept.as_ref().unwrap_or(key),
                before,
                after,
            );
        }
        result
    }

    fn apply_op(&mut self, op: &StreamOp) -> Result<(), OpError> {
        match op {
            StreamOp::Add {
                offset,
                key,
                id,
                fields,
                node,
            } => {
                let s = self.stream_or_new(key);
                if *id <= s.last_id && s.entries_added > 0 {
                    return Err(err(OpErrorKind::IdNotIncreasing));
                }
                let fields = own_fields(fields);
                let n = s.nodes.entry(*node).or_insert_with(|| Node::new(&fields));
                n.bytes += n.entry_size(*node, *id, &fields);
                n.appended += 1;
                n.last = *id;
                let b = entry_bytes(&fields);
                s.entries.insert(
                    *id,
                    Entry {
                        fields,
                        offset: *offset,
                    },
                );
                s.bytes += b;
                s.last_id = *id;
                s.entries_added += 1;
                self.bytes += b;
            }
            StreamOp::Trim {
                key,
                keep_node,
                before,
            } => {
                let s = self.stream(key)?;
                let (_, b) = s.trim(*keep_node, *before);
                self.bytes = self.bytes.saturating_sub(b);
            }
            StreamOp::Delete { key, ids, emptied } => {
                let s = self.stream(key)?;
                let b0 = s.bytes;
                for id in ids {
                    s.remove(*id);
                    if *id > s.max_deleted {
                        s.max_deleted = *id;
                    }
                }
                for k in emptied {
                    s.nodes.remove(k);
                }
                let b = b0 - s.bytes;
                self.bytes = self.bytes.saturating_sub(b);
            }
            StreamOp::GroupCreate {
                key,
                group,
                last_id,
                entries_read,
            } => {
                let s = self.stream_or_new(key);
                if s.groups.contains_key(group) {
                    return Err(err(OpErrorKind::GroupExists));
                }
                s.groups
                    .insert(own(group), Group::new(*last_id, *entries_read));
            }
            StreamOp::GroupDestroy { key, group } => {
                if self.stream(key)?.groups.remove(group).is_none() {
                    return Err(err(OpErrorKind::NoSuchGroup));
                }
            }
            StreamOp::GroupSetId {
                key,
                group,
                last_id,
                entries_read,
            } => {
                let g = self.group(key, group)?;
                g.last_id = *last_id;
                g.entries_read = *entries_read;
            }
            StreamOp::ConsumerCreate {
                key,
                group,
                consumer,
                now_ms,
            } => {
                self.group(key, group)?.consumer(consumer, *now_ms);
            }
            StreamOp::ConsumerDelete {
                key,
                group,
                consumer,
            } => {
                self.group(key, group)?.remove_consumer(consumer);
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
                let g = self.group(key, group)?;
                g.consumer(consumer, *now_ms).seen_ms = *now_ms;
                if *history {
                    for id in ids {
                        if let Some(p) = g.pel.get_mut(id) {
                            p.delivery_ms = *now_ms;
                            p.count += 1;
                        }
                    }
                } else {
                    if !*noack {
                        for id in ids {
                            g.assign(*id, consumer, *now_ms, 1);
                        }
                    }
                    g.last_id = *last_id;
                    g.entries_read = *entries_read;
                }
            }
            StreamOp::Ack { key, group, ids } => {
                let g = self.group(key, group)?;
                for id in ids {
                    g.unpend(*id);
                }
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
                let g = self.group(key, group)?;
                if let Some(l) = last_id
                    && *l > g.last_id
                {
                    g.last_id = *l;
                }
                for id in dropped {
                    g.unpend(*id);
                }
                if !claimed.is_empty() {
                    g.consumer(consumer, *now_ms).seen_ms = *now_ms;
                    for (id, delivery_ms, count) in claimed {
                        g.assign(*id, consumer, *delivery_ms, *count);
                    }
                }
            }
            StreamOp::StreamMeta {
                key,
                last_id,
                entries_added,
                max_deleted,
            } => {
                let s = self.stream_or_new(key);
                s.last_id = *last_id;
                s.entries_added = *entries_added;
                s.max_deleted = *max_deleted;
            }
            StreamOp::NodeMeta {
                key,
                node,
                appended,
                last,
                bytes,
                fields,
            } => {
                self.stream(key)?.nodes.insert(
                    *node,
                    Node {
                        appended: *appended,
                        last: *last,
                        bytes: *bytes,
                        fields: fields.iter().map(own).collect(),
                    },
                );
            }
            StreamOp::GroupMeta {
                key,
                group,
                last_id,
                entries_read,
            } => {
                let s = self.stream(key)?;
                match s.groups.get_mut(group) {
                    Some(g) => {
                        g.last_id = *last_id;
                        g.entries_read = *entries_read;
                    }
                    None => {
                        let g = Group::new(*last_id, *entries_read);
                        s.groups.insert(own(group), g);
                    }
                }
            }
            StreamOp::ConsumerMeta {
                key,
                group,
                consumer,
                seen_ms,
            } => {
                self.group(key, group)?.consumer(consumer, *seen_ms).seen_ms = *seen_ms;
            }
            StreamOp::PendingMeta {
                key,
                group,
                consumer,
                entries,
            } => {
                let g = self.group(key, group)?;
                for (id, delivery_ms, count) in entries {
                    g.assign(*id, consumer, *delivery_ms, *count);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId::new(ms, 0)
    }

    fn add(st: &mut State, ms: u64) {
        let node = st
            .keys
            .get(&Bytes::from_static(b"k"))
            .map_or(id(ms), |s| s.node_for(id(ms), &[]));
        st.apply(&StreamOp::Add {
            offset: ms,
            key: Bytes::from_static(b"k"),
            id: id(ms),
            fields: vec![(Bytes::from_static(b"f"), Bytes::from_static(b"v"))],
            node,
        })
        .unwrap();
    }

    #[test]
    fn nodes_fill_to_a_hundred_and_xdel_drops_empty_ones() {
        let mut st = State::default();
        for ms in 1..=250 {
            add(&mut st, ms);
        }
        let s = &st.keys[&Bytes::from_static(b"k")];
        assert_eq!(
            s.nodes.keys().copied().collect::<Vec<_>>(),
            vec![id(1), id(101), id(201)]
        );
        let k = Bytes::from_static(b"k");
        let ids: Vec<StreamId> = (201..=250).map(id).collect();
        st.apply(&StreamOp::Delete {
            key: k.clone(),
            ids,
            emptied: vec![id(201)],
        })
        .unwrap();
        let s = &st.keys[&k];
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.max_deleted, id(250));
        assert_eq!(s.entries.len(), 200);
        // The next entry opens a new node: the last one left is full.
        assert_eq!(s.node_for(id(251), &[]), id(251));
    }

    #[test]
    fn trim_removes_whole_nodes_then_marks() {
        let mut st = State::default();
        for ms in 1..=250 {
            add(&mut st, ms);
        }
        let k = Bytes::from_static(b"k");
        st.apply(&StreamOp::Trim {
            key: k.clone(),
            keep_node: Some(id(101)),
            before: id(150),
        })
        .unwrap();
        let s = &st.keys[&k];
        assert_eq!(s.entries.len(), 101);
        assert_eq!(s.first_id(), id(150));
        assert_eq!(s.nodes[&id(101)].appended, 100);
        assert_eq!(s.node_entries(id(101)).count(), 51);
        assert_eq!(s.prefix_trim(id(201)), (Some(id(201)), id(201)));
        assert!(
            s.max_deleted.is_zero(),
            "trimming leaves max-deleted-entry-id"
        );
    }

    #[test]
    fn listpack_sizes_follow_redis() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(
            (lp_int(0), lp_int(127), lp_int(128), lp_int(-1)),
            (2, 2, 3, 3)
        );
        assert_eq!((lp_int(40_000), lp_int(1 << 40)), (5, 10));
        assert_eq!((lp_str(b"12"), lp_str(b"012"), lp_str(b"")), (2, 5, 2));
        assert_eq!(
            (
                lp_str(&[b'x'; 63]),
                lp_str(&[b'x'; 64]),
                lp_str(&[b'x'; 130])
            ),
            (65, 67, 134)
        );
        // 100 entries of a 60-byte value 1 ms apart: 24 bytes of header and
        // master entry, 70 per entry; the 59th would take the node to 4096.
        let mut s = Stream::default();
        let fields = vec![(b("payload"), Bytes::from(vec![b'x'; 60]))];
        let mut opened = Vec::new();
        for ms in 1..=100u64 {
            let node = s.node_for(id(ms), &fields);
            if node == id(ms) {
                opened.push(ms);
            }
            let n = s.nodes.entry(node).or_insert_with(|| Node::new(&fields));
            n.bytes += n.entry_size(node, id(ms), &fields);
            n.appended += 1;
        }
        assert_eq!(opened, vec![1, 59]);
    }

    #[test]
    fn rax_node_counts() {
        let mut s = Stream::default();
        assert_eq!(s.rax_nodes(), 1);
        let node = Node::new(&[]);
        s.nodes.insert(StreamId::new(0x1234, 0), node.clone());
        assert_eq!(s.rax_nodes(), 2);
        s.nodes.insert(StreamId::new(0x1235, 0), node);
        // compressed prefix, a branching node, two leaves
        assert_eq!(s.rax_nodes(), 6);
    }

    #[test]
    fn pel_follows_its_owner() {
        let mut g = Group::new(StreamId::MIN, 0);
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        g.assign(id(1), &a, 10, 1);
        g.assign(id(2), &a, 10, 1);
        g.assign(id(1), &b, 20, 2);
        assert_eq!(g.consumers[&a].pel.len(), 1);
        assert_eq!(g.consumers[&b].pel.len(), 1);
        assert_eq!(g.pel[&id(1)].consumer, b);
        assert!(g.unpend(id(1)));
        assert!(!g.unpend(id(1)));
        assert!(g.consumers[&b].pel.is_empty());
    }
}
