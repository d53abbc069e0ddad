//! Command execution: argument parsing with Redis's errors, the entry
//! commands (XADD, XLEN, XRANGE, XREAD, XREADGROUP, XDEL, XTRIM) and reply helpers.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kids_core::resp::parse_i64;
use kids_core::{ReplyWriter, Request};

use super::id::{INVALID_ID, StreamId, parse_interval};
use super::op::StreamOp;
use super::state::{Entry, INVALID_ENTRIES_READ, PENDING_COST, State, Stream, own};
use super::{Ctx, Outcome, StreamsConfig, scratch};

pub(crate) const SYNTAX: &str = "ERR syntax error";
pub(crate) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const EXPLICIT_ID: &str = "ERR sink assigns stream IDs: use * as the ID";
pub(crate) const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// One command being run.
pub(crate) struct Exec<'s, 'c, 'o, 'w, 'b> {
    pub(crate) state: &'s mut State,
    pub(crate) config: &'s StreamsConfig,
    pub(crate) cx: &'c mut Ctx<'o>,
    pub(crate) w: &'w mut ReplyWriter<'b>,
    pub(crate) args: &'s Request,
}

/// A trimming request (XADD's options, XTRIM's arguments).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Strategy {
    None,
    MaxLen(u64),
    MinId(StreamId),
}

#[derive(Debug, Clone, Copy)]
struct AddTrim {
    strategy: Strategy,
    approx: bool,
    limit: u64,
    nomkstream: bool,
    /// Index of the ID argument (XADD).
    id_index: usize,
}

pub(crate) fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// An error made of text, a client's argument and more text.
pub(crate) fn error3(w: &mut ReplyWriter<'_>, before: &str, arg: &[u8], after: &str) {
    let mut msg = Vec::with_capacity(before.len() + arg.len() + after.len());
    msg.extend_from_slice(before.as_bytes());
    msg.extend_from_slice(arg);
    msg.extend_from_slice(after.as_bytes());
    w.error(&msg);
}

/// `[id, [field, value, ...]]`.
pub(crate) fn write_entry(w: &mut ReplyWriter<'_>, id: StreamId, e: &Entry) {
    w.array(2);
    write_id(w, id);
    w.array(e.fields.len() * 2);
    for (f, v) in &e.fields {
        w.bulk(f);
        w.bulk(v);
    }
}

pub(crate) fn write_id(w: &mut ReplyWriter<'_>, id: StreamId) {
    w.bulk(id.to_string().as_bytes());
}

/// Milliseconds from `then` to `now`, never negative.
pub(crate) fn elapsed(now: u64, then: u64) -> i64 {
    (i128::from(now) - i128::from(then)).clamp(0, i128::from(i64::MAX)) as i64
}

impl Exec<'_, '_, '_, '_, '_> {
    /// Records `op` and applies it: the one way `run` changes state, so replay matches.
    pub(crate) fn emit(&mut self, op: StreamOp) {
        if let Err(e) = self.state.apply(&op) {
            tracing::error!(error = %e, ?op, "stream op did not apply");
        }
        self.cx.ops.push(op);
    }

    /// Whether `op` keeps the streams within their memory bound; if not,
    /// replies Redis's OOM error (and the command emits nothing). An op that
    /// does not grow them always fits, even over the bound.
    pub(crate) fn fits(&mut self, op: &StreamOp) -> bool {
        let fits = self.fits_quietly(op);
        if !fits {
            self.err(OOM);
        }
        fits
    }

    /// [`Exec::fits`] without the reply.
    pub(crate) fn fits_quietly(&self, op: &StreamOp) -> bool {
        let growth = self.state.growth(op);
        growth <= 0 || self.within_bound(growth.unsigned_abs())
    }

    /// Whether `more` bytes fit under the memory bound.
    fn within_bound(&self, more: u64) -> bool {
        self.state.used().saturating_add(more) <= self.config.max_bytes_value()
    }

    pub(crate) fn err(&mut self, text: &str) {
        self.w.error(text.as_bytes());
    }

    pub(crate) fn ll(&mut self, i: usize) -> Option<i64> {
        let v = parse_i64(&self.args[i]);
        if v.is_none() {
            self.err(NOT_INTEGER);
        }
        v
    }

    pub(crate) fn strict_id(&mut self, i: usize) -> Option<StreamId> {
        let v = StreamId::parse_arg(&self.args[i], 0, true);
        if v.is_none() {
            self.err(INVALID_ID);
        }
        v
    }

    pub(crate) fn stream(&self, i: usize) -> Option<&Stream> {
        self.state.keys.get(&self.args[i])
    }

    /// An interval start (`(` exclusive) or `None` with the error written.
    pub(crate) fn start_bound(&mut self, i: usize) -> Option<StreamId> {
        let Some((id, ex)) = parse_interval(&self.args[i], 0) else {
            self.err(INVALID_ID);
            return None;
        };
        if !ex {
            return Some(id);
        }
        let next = id.next();
        if next.is_none() {
            self.err("ERR invalid start ID for the interval");
        }
        next
    }

    /// An interval end (`(` exclusive) or `None` with the error written.
    pub(crate) fn end_bound(&mut self, i: usize) -> Option<StreamId> {
        let Some((id, ex)) = parse_interval(&self.args[i], u64::MAX) else {
            self.err(INVALID_ID);
            return None;
        };
        if !ex {
            return Some(id);
        }
        let prev = id.prev();
        if prev.is_none() {
            self.err("ERR invalid end ID for the interval");
        }
        prev
    }

    /// Redis's `streamParseAddOrTrimArgsOrReply`.
    fn parse_add_trim(&mut self, xadd: bool) -> Option<AddTrim> {
        let args = self.args;
        let argc = args.len();
        let mut p = AddTrim {
            strategy: Strategy::None,
            approx: false,
            limit: 0,
            nomkstream: false,
            id_index: argc,
        };
        let mut limit_given = false;
        let mut i = 2;
        while i < argc {
            let more = argc - 1 - i;
            let opt = &args[i][..];
            if xadd && opt == b"*" {
                break;
            } else if (eq(opt, "maxlen") || eq(opt, "minid")) && more > 0 {
                let maxlen = eq(opt, "maxlen");
                if !matches!(p.strategy, Strategy::None) {
                    self.err("ERR syntax error, MAXLEN and MINID options at the same time are not compatible");
                    return None;
                }
                p.approx = false;
                let next = &args[i + 1][..];
                if more >= 2 && next == b"~" {
                    p.approx = true;
                    i += 1;
                } else if more >= 2 && next == b"=" {
                    i += 1;
                }
                if maxlen {
                    let n = self.ll(i + 1)?;
                    if n < 0 {
                        self.err("ERR The MAXLEN argument must be >= 0.");
                        return None;
                    }
                    p.strategy = Strategy::MaxLen(n as u64);
                } else {
                    p.strategy = Strategy::MinId(self.strict_id(i + 1)?);
                }
                i += 1;
            } else if eq(opt, "limit") && more > 0 {
                let n = self.ll(i + 1)?;
                if n < 0 {
                    self.err("ERR The LIMIT argument must be >= 0.");
                    return None;
                }
                p.limit = n as u64;
                limit_given = true;
                i += 1;
            } else if xadd && eq(opt, "nomkstream") {
                p.nomkstream = true;
            } else if xadd {
                // The ID: only `*` is ours to take.
                let parsed = StreamId::parse_arg(opt, 0, true).is_some()
                    || opt
                        .strip_suffix(b"-*")
                        .is_some_and(|ms| StreamId::parse_arg(ms, 0, true).is_some());
                self.err(if parsed { EXPLICIT_ID } else { INVALID_ID });
                return None;
            } else {
                self.err(SYNTAX);
                return None;
            }
            i += 1;
        }
        p.id_index = i;
        if p.limit > 0 && matches!(p.strategy, Strategy::None) {
            self.err(
                "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
            );
            return None;
        }
        if !xadd && matches!(p.strategy, Strategy::None) {
            self.err("ERR syntax error, XTRIM must be called with a trimming strategy");
            return None;
        }
        if limit_given {
            if !p.approx {
                self.err("ERR syntax error, LIMIT cannot be used without the special ~ option");
                return None;
            }
        } else if p.approx {
            p.limit = 100 * super::state::NODE_MAX_ENTRIES;
        } else {
            p.limit = 0;
        }
        Some(p)
    }

    /// Trims `key` as asked; returns the entries removed.
    fn trim(&mut self, key: &Bytes, p: &AddTrim) -> u64 {
        let Some(s) = self.state.keys.get(key) else {
            return 0;
        };
        let Some((keep, before, removed, changed)) = plan_trim(s, p.strategy, p.approx, p.limit)
        else {
            return 0;
        };
        if changed {
            self.emit(StreamOp::Trim {
                key: key.clone(),
                keep_node: keep,
                before,
            });
        }
        removed
    }

    pub(crate) fn xadd(&mut self) {
        let Some(p) = self.parse_add_trim(true) else {
            return;
        };
        let args = self.args;
        let fields_at = p.id_index + 1;
        if args.len() < fields_at + 2 || (args.len() - fields_at) % 2 == 1 {
            self.err("ERR wrong number of arguments for 'xadd' command");
            return;
        }
        let key = &args[1];
        let stream = self.state.keys.get(key);
        if stream.is_none() && p.nomkstream {
            self.w.null();
            return;
        }
        let last = stream.map(|s| s.last_id).unwrap_or_default();
        if last == StreamId::MAX {
            self.err("ERR The stream has exhausted the last possible ID, unable to add more items");
            return;
        }
        let id = if self.cx.now_ms > last.ms {
            StreamId::new(self.cx.now_ms, 0)
        } else {
            last.next().unwrap_or(StreamId::MAX)
        };
        let fields: Vec<(Bytes, Bytes)> = args[fields_at..]
            .chunks_exact(2)
            .map(|fv| (fv[0].clone(), fv[1].clone()))
            .collect();
        let node = stream.map_or(id, |s| s.node_for(id, &fields));
        let add = StreamOp::Add {
            offset: self.cx.next_offset,
            key: key.clone(),
            id,
            fields,
            node,
        };
        if !self.fits(&add) {
            return;
        }
        self.cx.next_offset += 1;
        self.emit(add);
        write_id(self.w, id);
        if !matches!(p.strategy, Strategy::None) {
            self.trim(key, &p);
        }
    }

    pub(crate) fn xtrim(&mut self) {
        let Some(p) = self.parse_add_trim(false) else {
            return;
        };
        let key = self.args[1].clone();
        let n = self.trim(&key, &p);
        self.w.integer(n as i64);
    }

    pub(crate) fn xlen(&mut self) {
        let n = self.stream(1).map_or(0, |s| s.entries.len());
        self.w.integer(n as i64);
    }

    pub(crate) fn xrange(&mut self, rev: bool) {
        let (si, ei) = if rev { (3, 2) } else { (2, 3) };
        let Some(start) = self.start_bound(si) else {
            return;
        };
        let Some(end) = self.end_bound(ei) else {
            return;
        };
        let mut count: i64 = -1;
        let mut j = 4;
        while j < self.args.len() {
            if eq(&self.args[j], "COUNT") && j + 1 < self.args.len() {
                count = self.ll(j + 1).map(|c| c.max(0)).unwrap_or(-2);
                if count == -2 {
                    return;
                }
                j += 2;
            } else {
                self.err(SYNTAX);
                return;
            }
        }
        let Some(s) = self.state.keys.get(&self.args[1]) else {
            self.w.array(0);
            return;
        };
        if count == 0 {
            self.w.null_array();
            return;
        }
        let limit = if count < 0 {
            usize::MAX
        } else {
            count as usize
        };
        if start > end {
            self.w.array(0);
            return;
        }
        let range = s.entries.range(start..=end);
        let picked: Vec<(&StreamId, &Entry)> = if rev {
            range.rev().take(limit).collect()
        } else {
            range.take(limit).collect()
        };
        self.w.array(picked.len());
        for (id, e) in picked {
            write_entry(self.w, *id, e);
        }
    }

    pub(crate) fn xdel(&mut self) {
        if self.stream(1).is_none() {
            self.w.integer(0);
            return;
        }
        let mut ids = Vec::with_capacity(self.args.len() - 2);
        for i in 2..self.args.len() {
            let Some(id) = self.strict_id(i) else {
                return;
            };
            ids.push(id);
        }
        let key = self.args[1].clone();
        let s = &self.state.keys[&key];
        let mut gone: Vec<StreamId> = Vec::new();
        for id in ids {
            if s.entries.contains_key(&id) && !gone.contains(&id) {
                gone.push(id);
            }
        }
        let n = gone.len();
        if n > 0 {
            // Nodes whose every live entry goes (Redis frees such a listpack).
            let mut emptied: Vec<StreamId> = gone.iter().filter_map(|id| s.node_of(*id)).collect();
            emptied.sort();
            emptied.dedup();
            emptied.retain(|node| s.node_entries(*node).all(|id| gone.contains(&id)));
            self.emit(StreamOp::Delete {
                key,
                ids: gone,
                emptied,
            });
        }
        self.w.integer(n as i64);
    }

    /// XREAD and XREADGROUP.
    pub(crate) fn xread(&mut self, group_mode: bool) -> Outcome {
        let args = self.args;
        let argc = args.len();
        let mut timeout: Option<u64> = None;
        let mut count: u64 = 0;
        let mut streams_at = 0;
        let mut noack = false;
        let mut group: Option<(Bytes, Bytes)> = None;
        let mut i = 1;
        while i < argc {
            let more = argc - i - 1;
            let o = &args[i][..];
            if eq(o, "BLOCK") && more > 0 {
                i += 1;
                let Some(t) = parse_i64(&args[i]) else {
                    self.err("ERR timeout is not an integer or out of range");
                    return Outcome::Done;
                };
                if t < 0 {
                    self.err("ERR timeout is negative");
                    return Outcome::Done;
                }
                timeout = Some(t as u64);
            } else if eq(o, "COUNT") && more > 0 {
                i += 1;
                let Some(c) = self.ll(i) else {
                    return Outcome::Done;
                };
                count = c.max(0) as u64;
            } else if eq(o, "STREAMS") && more > 0 {
                streams_at = i + 1;
                if !(argc - streams_at).is_multiple_of(2) {
                    let (name, sym) = if group_mode {
                        ("XREADGROUP", '>')
                    } else {
                        ("XREAD", '$')
                    };
                    self.err(&format!(
                        "ERR Unbalanced {name} list of streams: for each stream key an ID or '{sym}' must be specified."
                    ));
                    return Outcome::Done;
                }
                break;
            } else if eq(o, "GROUP") && more >= 2 {
                if !group_mode {
                    self.err("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.");
                    return Outcome::Done;
                }
                group = Some((args[i + 1].clone(), args[i + 2].clone()));
                i += 2;
            } else if eq(o, "NOACK") {
                if !group_mode {
                    self.err("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.");
                    return Outcome::Done;
                }
                noack = true;
            } else {
                self.err(SYNTAX);
                return Outcome::Done;
            }
            i += 1;
        }
        if streams_at == 0 {
            self.err(SYNTAX);
            return Outcome::Done;
        }
        if group_mode && group.is_none() {
            self.err("ERR Missing GROUP option for XREADGROUP");
            return Outcome::Done;
        }
        let n = (argc - streams_at) / 2;
        // `None` is `>`.
        let mut ids: Vec<Option<StreamId>> = Vec::with_capacity(n);
        for k in 0..n {
            let key = &args[streams_at + k];
            let arg = &args[streams_at + n + k][..];
            let s = self.state.keys.get(key);
            if let Some((g, _)) = &group
                && s.is_none_or(|s| !s.groups.contains_key(g))
            {
                let mut msg = b"NOGROUP No such key '".to_vec();
                msg.extend_from_slice(key);
                msg.extend_from_slice(b"' or consumer group '");
                msg.extend_from_slice(g);
                msg.extend_from_slice(b"' in XREADGROUP with GROUP option");
                self.w.error(&msg);
                return Outcome::Done;
            }
            if arg == b"$" {
                if group_mode {
                    self.err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.");
                    return Outcome::Done;
                }
                ids.push(Some(s.map(|s| s.last_id).unwrap_or_default()));
                continue;
            } else if arg == b">" {
                if !group_mode {
                    self.err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.");
                    return Outcome::Done;
                }
                ids.push(None);
                continue;
            }
            let Some(id) = self.strict_id(streams_at + n + k) else {
                return Outcome::Done;
            };
            ids.push(Some(id));
        }
        // The consumer may be created in the group of every stream named:
        // refused as a whole when those do not fit under the memory bound,
        // and room kept for each until it exists (a stream named twice may
        // create it the second time).
        let mut reserved: BTreeMap<&Bytes, u64> = BTreeMap::new();
        if let Some((gname, cname)) = &group {
            for key in &args[streams_at..streams_at + n] {
                let cost = self.state.consumer_cost(key, gname, cname);
                if cost > 0 {
                    reserved.insert(key, cost);
                }
            }
        }
        let mut reserve: u64 = reserved.values().sum();
        if reserve > 0 && !self.within_bound(reserve) {
            self.err(OOM);
            return Outcome::Done;
        }
        // Serve what can be served now.
        let mut body = BytesMut::new();
        let mut served = 0;
        // New entries left undelivered because their pending entries would
        // not fit under the memory bound.
        let mut starved = false;
        let mut previous: Option<&Bytes> = None;
        for (k, gt) in ids.iter().enumerate() {
            let key = &args[streams_at + k];
            // Room kept for the consumer of the stream before is given back
            // once it exists.
            if let Some(p) = previous.replace(key)
                && let Some((gname, cname)) = &group
                && self.state.consumer_cost(p, gname, cname) == 0
            {
                reserve -= reserved.remove(p).unwrap_or(0);
            }
            let Some(s) = self.state.keys.get(key) else {
                continue;
            };
            let mut sw = scratch(self.w, &mut body);
            match &group {
                None => {
                    let Some(gt) = gt else { continue };
                    if s.entries.is_empty() || s.last_live_id() <= *gt {
                        continue;
                    }
                    served += 1;
                    open_stream(&mut sw, key);
                    let Some(start) = gt.next() else { continue };
                    let picked: Vec<_> = s
                        .entries
                        .range(start..)
                        .take(if count == 0 {
                            usize::MAX
                        } else {
                            count as usize
                        })
                        .collect();
                    sw.array(picked.len());
                    for (id, e) in picked {
                        write_entry(&mut sw, *id, e);
                    }
                }
                Some((gname, cname)) => {
                    let Some(g) = s.groups.get(gname) else {
                        continue;
                    };
                    let limit = if count == 0 {
                        usize::MAX
                    } else {
                        count as usize
                    };
                    let op = match gt {
                        Some(gt) => {
                            // The consumer's own history.
                            served += 1;
                            open_stream(&mut sw, key);
                            let start = gt.next().unwrap_or(StreamId::MAX);
                            let pel: Vec<StreamId> = g
                                .consumers
                                .get(cname)
                                .map(|c| c.pel.range(start..).take(limit).copied().collect())
                                .unwrap_or_default();
                            sw.array(pel.len());
                            let mut redelivered = Vec::new();
                            for id in pel {
                                match s.entries.get(&id) {
                                    Some(e) => {
                                        write_entry(&mut sw, id, e);
                                        redelivered.push(id);
                                    }
                                    None => {
                                        sw.array(2);
                                        write_id(&mut sw, id);
                                        sw.null_array();
                                    }
                                }
                            }
                            StreamOp::Read {
                                key: key.clone(),
                                group: gname.clone(),
                                consumer: cname.clone(),
                                now_ms: self.cx.now_ms,
                                noack,
                                history: true,
                                ids: redelivered,
                                last_id: g.last_id,
                                entries_read: g.entries_read,
                            }
                        }
                        None => {
                            if s.entries.is_empty() || s.last_live_id() <= g.last_id {
                                continue;
                            }
                            // Deliver only as many as their pending entries fit.
                            let limit = if noack {
                                limit
                            } else {
                                // `reserve` holds this stream's new consumer too.
                                let used = self.state.used() + reserve;
                                let free = self.config.max_bytes_value().saturating_sub(used);
                                limit
                                    .min(usize::try_from(free / PENDING_COST).unwrap_or(usize::MAX))
                            };
                            if limit == 0 {
                                starved = true;
                                continue;
                            }
                            served += 1;
                            open_stream(&mut sw, key);
                            let Some(start) = g.last_id.next() else {
                                continue;
                            };
                            let picked: Vec<_> = s.entries.range(start..).take(limit).collect();
                            sw.array(picked.len());
                            let (mut last, mut read) = (g.last_id, g.entries_read);
                            let mut delivered = Vec::with_capacity(picked.len());
                            for (id, e) in picked {
                                if *id > last {
                                    if read != INVALID_ENTRIES_READ
                                        && !s.has_tombstones(*id, StreamId::MAX)
                                    {
                                        read += 1;
                                    } else if s.entries_added > 0 {
                                        read = s.estimate_distance(*id);
                                    }
                                    last = *id;
                                }
                                write_entry(&mut sw, *id, e);
                                delivered.push(*id);
                            }
                            StreamOp::Read {
                                key: key.clone(),
                                group: gname.clone(),
                                consumer: cname.clone(),
                                now_ms: self.cx.now_ms,
                                noack,
                                history: false,
                                ids: delivered,
                                last_id: last,
                                entries_read: read,
                            }
                        }
                    };
                    // Within the bound: a new consumer's room was kept, and
                    // `>` delivered only what fits.
                    self.emit(op);
                }
            }
        }
        if served == 0 && starved {
            self.err(OOM);
            return Outcome::Done;
        }
        if served > 0 {
            match self.w.proto() {
                kids_core::Proto::Resp2 => self.w.array(served),
                kids_core::Proto::Resp3 => self.w.map(served),
            }
            self.w.raw(&body);
            return Outcome::Done;
        }
        match timeout {
            None => {
                self.w.null_array();
                Outcome::Done
            }
            Some(t) => {
                // Copies: a parked client's request would pin its read buffer.
                let mut retry: Request = args.iter().map(own).collect();
                for (k, id) in ids.iter().enumerate() {
                    if let Some(id) = id
                        && &args[streams_at + n + k][..] == b"$"
                    {
                        retry[streams_at + n + k] = Bytes::from(id.to_string());
                    }
                }
                Outcome::Block {
                    keys: retry[streams_at..streams_at + n].to_vec(),
                    timeout_ms: t,
                    retry,
                }
            }
        }
    }
}

/// RESP2 wraps each stream of an XREAD reply in `[key, entries]`; RESP3 maps key to entries.
fn open_stream(w: &mut ReplyWriter<'_>, key: &[u8]) {
    if w.proto() == kids_core::Proto::Resp2 {
        w.array(2);
    }
    w.bulk(key);
}

/// Redis's `streamTrim`, planned: the Trim to emit (first node kept, mark
/// entries before), how many entries it removes, and whether it changes anything.
pub(crate) fn plan_trim(
    s: &Stream,
    strategy: Strategy,
    approx: bool,
    limit: u64,
) -> Option<(Option<StreamId>, StreamId, u64, bool)> {
    let mut length = s.entries.len() as u64;
    let mut removed = 0u64;
    let mut nodes_gone = 0;
    for (master, node) in &s.nodes {
        let master = *master;
        let live = s.node_entries(master).count() as u64;
        if let Strategy::MaxLen(max) = strategy
            && length <= max
        {
            return Some((Some(master), StreamId::MIN, removed, nodes_gone > 0));
        }
        if limit > 0 && removed + live > limit {
            return Some((Some(master), StreamId::MIN, removed, nodes_gone > 0));
        }
        let remove = match strategy {
            Strategy::MaxLen(max) => length - live >= max,
            Strategy::MinId(min) => node.last < min,
            Strategy::None => return None,
        };
        if remove {
            length -= live;
            removed += live;
            nodes_gone += 1;
            continue;
        }
        if approx {
            return Some((Some(master), StreamId::MIN, removed, nodes_gone > 0));
        }
        // Mark entries inside this node.
        let next_master = s
            .nodes
            .range((
                std::ops::Bound::Excluded(master),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .map(|(k, _)| *k)
            .unwrap_or(StreamId::MAX);
        let in_node = s.entries.range(master..next_master).map(|(k, _)| *k);
        let before = match strategy {
            Strategy::MaxLen(max) => {
                let k = (length - max) as usize;
                in_node.clone().nth(k).unwrap_or(next_master)
            }
            Strategy::MinId(min) => min,
            Strategy::None => return None,
        };
        let marked = in_node.take_while(|id| *id < before).count() as u64;
        removed += marked;
        return Some((Some(master), before, removed, nodes_gone > 0 || marked > 0));
    }
    Some((None, StreamId::MIN, removed, nodes_gone > 0))
}
