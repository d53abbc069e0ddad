//! Consumer-group commands (XGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM) and XINFO.

use std::collections::HashMap;

use bytes::Bytes;
use kids_core::ReplyWriter;
use kids_core::resp::parse_i64;

use super::StreamCommand;
use super::exec::{Exec, NOT_INTEGER, OOM, SYNTAX, elapsed, eq, error3, write_entry, write_id};
use super::id::{INVALID_ID, StreamId};
use super::op::StreamOp;
use super::state::{Group, INVALID_ENTRIES_READ, State, Stream};

fn nogroup(w: &mut ReplyWriter<'_>, key: &[u8], group: &[u8]) {
    let mut msg = b"NOGROUP No such key '".to_vec();
    msg.extend_from_slice(key);
    msg.extend_from_slice(b"' or consumer group '");
    msg.extend_from_slice(group);
    msg.push(b'\'');
    w.error(&msg);
}

fn nogroup_for_key(w: &mut ReplyWriter<'_>, group: &[u8], key: &[u8]) {
    let mut msg = b"NOGROUP No such consumer group '".to_vec();
    msg.extend_from_slice(group);
    msg.extend_from_slice(b"' for key name '");
    msg.extend_from_slice(key);
    msg.push(b'\'');
    w.error(&msg);
}

/// Redis's `addReplySubcommandSyntaxError`.
fn subcommand_syntax(w: &mut ReplyWriter<'_>, args: &[Bytes]) {
    let cmd = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let sub = &args[1][..args[1].len().min(128)];
    error3(
        w,
        "ERR unknown subcommand or wrong number of arguments for '",
        sub,
        &format!("'. Try {cmd} HELP."),
    );
}

fn group_of<'a>(state: &'a State, args: &[Bytes]) -> Option<(&'a Stream, &'a Group)> {
    let s = state.keys.get(&args[1])?;
    Some((s, s.groups.get(&args[2])?))
}

impl Exec<'_, '_, '_, '_, '_> {
    pub(crate) fn xgroup(&mut self, cmd: StreamCommand) {
        use StreamCommand as C;
        let args = self.args;
        let argc = args.len();
        let mut mkstream = false;
        let mut entries_read = INVALID_ENTRIES_READ;
        let create = cmd == C::XgroupCreate;
        let setid = cmd == C::XgroupSetid;
        let mut i = 5;
        while i < argc {
            if create && eq(&args[i], "MKSTREAM") {
                mkstream = true;
                i += 1;
            } else if (create || setid) && eq(&args[i], "ENTRIESREAD") && i + 1 < argc {
                let Some(n) = self.ll(i + 1) else { return };
                if n < 0 && n != INVALID_ENTRIES_READ {
                    self.err("ERR value for ENTRIESREAD must be positive or -1");
                    return;
                }
                entries_read = n;
                i += 2;
            } else {
                subcommand_syntax(self.w, args);
                return;
            }
        }
        let key = &args[1 + 1];
        let gname = &args[3];
        let exists = self.state.keys.contains_key(key);
        if !mkstream {
            let Some(s) = self.state.keys.get(key) else {
                self.err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.");
                return;
            };
            if !s.groups.contains_key(gname)
                && matches!(
                    cmd,
                    C::XgroupSetid | C::XgroupCreateconsumer | C::XgroupDelconsumer
                )
            {
                nogroup_for_key(self.w, gname, key);
                return;
            }
        }
        match cmd {
            C::XgroupCreate if argc <= 8 => {
                let last = self
                    .state
                    .keys
                    .get(key)
                    .map(|s| s.last_id)
                    .unwrap_or_default();
                let id = if &args[4][..] == b"$" {
                    last
                } else {
                    let Some(id) = self.strict_id(4) else { return };
                    id
                };
                if exists && self.state.keys[key].groups.contains_key(gname) {
                    self.err("BUSYGROUP Consumer Group name already exists");
                    return;
                }
                let op = StreamOp::GroupCreate {
                    key: key.clone(),
                    group: gname.clone(),
                    last_id: id,
                    entries_read,
                };
                if self.fits(&op) {
                    self.emit(op);
                    self.w.simple(b"OK");
                }
            }
            C::XgroupSetid if argc == 5 || argc == 7 => {
                let id = if &args[4][..] == b"$" {
                    self.state.keys[key].last_id
                } else {
                    match StreamId::parse_arg(&args[4], 0, false) {
                        Some(id) => id,
                        None => {
                            self.err(INVALID_ID);
                            return;
                        }
                    }
                };
                self.emit(StreamOp::GroupSetId {
                    key: key.clone(),
                    group: gname.clone(),
                    last_id: id,
                    entries_read,
                });
                self.w.simple(b"OK");
            }
            C::XgroupDestroy => {
                if self.state.keys[key].groups.contains_key(gname) {
                    self.emit(StreamOp::GroupDestroy {
                        key: key.clone(),
                        group: gname.clone(),
                    });
                    self.w.integer(1);
                } else {
                    self.w.integer(0);
                }
            }
            C::XgroupCreateconsumer => {
                let c = &args[4];
                if self.state.keys[key].groups[gname].consumers.contains_key(c) {
                    self.w.integer(0);
                } else {
                    let op = StreamOp::ConsumerCreate {
                        key: key.clone(),
                        group: gname.clone(),
                        consumer: c.clone(),
                        now_ms: self.cx.now_ms,
                    };
                    if self.fits(&op) {
                        self.emit(op);
                        self.w.integer(1);
                    }
                }
            }
            C::XgroupDelconsumer => {
                let c = &args[4];
                let pending = self.state.keys[key].groups[gname]
                    .consumers
                    .get(c)
                    .map(|c| c.pel.len());
                if let Some(n) = pending {
                    self.emit(StreamOp::ConsumerDelete {
                        key: key.clone(),
                        group: gname.clone(),
                        consumer: c.clone(),
                    });
                    self.w.integer(n as i64);
                } else {
                    self.w.integer(0);
                }
            }
            _ => subcommand_syntax(self.w, args),
        }
    }

    pub(crate) fn xack(&mut self) {
        if group_of(self.state, self.args).is_none() {
            self.w.integer(0);
            return;
        }
        let mut ids = Vec::with_capacity(self.args.len() - 3);
        for i in 3..self.args.len() {
            let Some(id) = self.strict_id(i) else { return };
            ids.push(id);
        }
        let Some((_, g)) = group_of(self.state, self.args) else {
            return;
        };
        let mut acked: Vec<StreamId> = Vec::new();
        for id in ids {
            if g.pel.contains_key(&id) && !acked.contains(&id) {
                acked.push(id);
            }
        }
        let n = acked.len();
        if n > 0 {
            self.emit(StreamOp::Ack {
                key: self.args[1].clone(),
                group: self.args[2].clone(),
                ids: acked,
            });
        }
        self.w.integer(n as i64);
    }

    pub(crate) fn xpending(&mut self) {
        let args = self.args;
        let argc = args.len();
        if argc != 3 && !(6..=9).contains(&argc) {
            self.err(SYNTAX);
            return;
        }
        let mut range = None;
        let mut minidle = 0i64;
        let mut consumer = None;
        if argc >= 6 {
            let mut at = 3;
            if eq(&args[3], "IDLE") {
                let Some(v) = self.ll(4) else { return };
                minidle = v;
                if argc < 8 {
                    self.err(SYNTAX);
                    return;
                }
                at += 2;
            }
            let Some(count) = self.ll(at + 2) else { return };
            let Some(start) = self.start_bound(at) else {
                return;
            };
            let Some(end) = self.end_bound(at + 1) else {
                return;
            };
            if at + 3 < argc {
                consumer = Some(args[at + 3].clone());
            }
            range = Some((start, end, count.max(0) as usize));
        }
        let Some((_, g)) = group_of(self.state, self.args) else {
            nogroup(self.w, &args[1], &args[2]);
            return;
        };
        let now = self.cx.now_ms;
        let w = &mut *self.w;
        let Some((start, end, count)) = range else {
            w.array(4);
            w.integer(g.pel.len() as i64);
            match (g.pel.keys().next(), g.pel.keys().next_back()) {
                (Some(first), Some(last)) => {
                    write_id(w, *first);
                    write_id(w, *last);
                    let owners: Vec<_> = g
                        .consumers
                        .iter()
                        .filter(|(_, c)| !c.pel.is_empty())
                        .collect();
                    w.array(owners.len());
                    for (name, c) in owners {
                        w.array(2);
                        w.bulk(name);
                        w.bulk(c.pel.len().to_string().as_bytes());
                    }
                }
                _ => {
                    w.null();
                    w.null();
                    w.null_array();
                }
            }
            return;
        };
        let ids: Vec<StreamId> = match &consumer {
            Some(name) => match g.consumers.get(name) {
                Some(c) if start <= end => c.pel.range(start..=end).copied().collect(),
                Some(_) => Vec::new(),
                None => {
                    w.array(0);
                    return;
                }
            },
            None if start <= end => g.pel.range(start..=end).map(|(k, _)| *k).collect(),
            None => Vec::new(),
        };
        let picked: Vec<_> = ids
            .into_iter()
            .filter_map(|id| g.pel.get(&id).map(|p| (id, p)))
            .filter(|(_, p)| minidle == 0 || elapsed(now, p.delivery_ms) >= minidle)
            .take(count)
            .collect();
        w.array(picked.len());
        for (id, p) in picked {
            w.array(4);
            write_id(w, id);
            w.bulk(&p.consumer);
            w.integer(elapsed(now, p.delivery_ms));
            w.integer(p.count as i64);
        }
    }

    pub(crate) fn xclaim(&mut self) {
        let args = self.args;
        let argc = args.len();
        if group_of(self.state, self.args).is_none() {
            nogroup(self.w, &args[1], &args[2]);
            return;
        }
        let Some(minidle) = parse_i64(&args[4]) else {
            self.err("ERR Invalid min-idle-time argument for XCLAIM");
            return;
        };
        let minidle = minidle.max(0);
        let mut ids = Vec::new();
        let mut j = 5;
        while j < argc {
            match StreamId::parse_arg(&args[j], 0, true) {
                Some(id) => ids.push(id),
                None => break,
            }
            j += 1;
        }
        let now = self.cx.now_ms as i64;
        let (mut force, mut justid) = (false, false);
        let mut retrycount: i64 = -1;
        let mut deliverytime: i64 = -1;
        let mut lastid = StreamId::MIN;
        while j < argc {
            let more = argc - 1 - j;
            let opt = &args[j][..];
            if eq(opt, "FORCE") {
                force = true;
            } else if eq(opt, "JUSTID") {
                justid = true;
            } else if eq(opt, "IDLE") && more > 0 {
                j += 1;
                let Some(v) = parse_i64(&args[j]) else {
                    self.err("ERR Invalid IDLE option argument for XCLAIM");
                    return;
                };
                deliverytime = now.saturating_sub(v);
            } else if eq(opt, "TIME") && more > 0 {
                j += 1;
                let Some(v) = parse_i64(&args[j]) else {
                    self.err("ERR Invalid TIME option argument for XCLAIM");
                    return;
                };
                deliverytime = v;
            } else if eq(opt, "RETRYCOUNT") && more > 0 {
                j += 1;
                let Some(v) = parse_i64(&args[j]) else {
                    self.err("ERR Invalid RETRYCOUNT option argument for XCLAIM");
                    return;
                };
                retrycount = v;
            } else if eq(opt, "LASTID") && more > 0 {
                j += 1;
                let Some(id) = self.strict_id(j) else { return };
                lastid = id;
            } else {
                error3(self.w, "ERR Unrecognized XCLAIM option '", opt, "'");
                return;
            }
            j += 1;
        }
        if deliverytime < 0 || deliverytime > now {
            deliverytime = now;
        }
        let deliverytime = deliverytime as u64;
        let Some((s, g)) = group_of(self.state, self.args) else {
            return;
        };
        let me = args[3].clone();
        // What each pending entry looks like as the claim goes: owner, delivery time, count.
        let mut view: HashMap<StreamId, Option<(Bytes, u64, u64)>> = HashMap::new();
        let mut claimed = Vec::new();
        let mut dropped = Vec::new();
        let mut body = Vec::new();
        for id in ids {
            let cur = view.get(&id).cloned().unwrap_or_else(|| {
                g.pel
                    .get(&id)
                    .map(|p| (p.consumer.clone(), p.delivery_ms, p.count))
            });
            if !s.entries.contains_key(&id) {
                if cur.is_some() {
                    dropped.push(id);
                    view.insert(id, None);
                }
                continue;
            }
            let (owner, delivery, count) = match cur {
                Some((o, d, c)) => (Some(o), d, c),
                None if force => (None, self.cx.now_ms, 1),
                None => continue,
            };
            if owner.is_some() && minidle != 0 && elapsed(self.cx.now_ms, delivery) < minidle {
                continue;
            }
            let count = if retrycount >= 0 {
                retrycount as u64
            } else if !justid {
                count + 1
            } else {
                count
            };
            view.insert(id, Some((me.clone(), deliverytime, count)));
            claimed.push((id, deliverytime, count));
            body.push(id);
        }
        let last_id = (lastid > g.last_id).then_some(lastid);
        let op = (!claimed.is_empty() || !dropped.is_empty() || last_id.is_some()).then(|| {
            StreamOp::Claim {
                key: args[1].clone(),
                group: args[2].clone(),
                consumer: me,
                now_ms: self.cx.now_ms,
                claimed,
                dropped,
                last_id,
            }
        });
        if op.as_ref().is_some_and(|op| !self.fits_quietly(op)) {
            self.w.error(OOM.as_bytes());
            return;
        }
        self.w.array(body.len());
        for id in &body {
            if justid {
                write_id(self.w, *id);
            } else if let Some(e) = s.entries.get(id) {
                write_entry(self.w, *id, e);
            }
        }
        if let Some(op) = op {
            self.emit(op);
        }
    }

    pub(crate) fn xautoclaim(&mut self) {
        let args = self.args;
        let argc = args.len();
        let Some(minidle) = parse_i64(&args[4]) else {
            self.err("ERR Invalid min-idle-time argument for XAUTOCLAIM");
            return;
        };
        let minidle = minidle.max(0);
        let Some(start) = self.start_bound(5) else {
            return;
        };
        let mut count: i64 = 100;
        let mut justid = false;
        let mut j = 6;
        while j < argc {
            let more = argc - 1 - j;
            if eq(&args[j], "COUNT") && more > 0 {
                let max = i64::MAX / 16;
                match parse_i64(&args[j + 1]) {
                    Some(c) if (1..=max).contains(&c) => count = c,
                    _ => {
                        self.err("ERR COUNT must be > 0");
                        return;
                    }
                }
                j += 1;
            } else if eq(&args[j], "JUSTID") {
                justid = true;
            } else {
                self.err(SYNTAX);
                return;
            }
            j += 1;
        }
        let Some((s, g)) = group_of(self.state, self.args) else {
            nogroup(self.w, &args[1], &args[2]);
            return;
        };
        let now = self.cx.now_ms;
        let me = args[3].clone();
        let mut attempts = count.saturating_mul(10);
        let mut left = count;
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut iter = g.pel.range(start..);
        let mut cursor = StreamId::MIN;
        loop {
            if attempts == 0 || left == 0 {
                // Redis's cursor: the next pending entry after the loop.
                cursor = iter.next().map(|(k, _)| *k).unwrap_or_default();
                break;
            }
            attempts -= 1;
            let Some((id, p)) = iter.next() else { break };
            if !s.entries.contains_key(id) {
                deleted.push(*id);
                left -= 1;
                continue;
            }
            if minidle != 0 && elapsed(now, p.delivery_ms) < minidle {
                continue;
            }
            let n = if justid { p.count } else { p.count + 1 };
            claimed.push((*id, now, n));
            left -= 1;
        }
        let ids: Vec<StreamId> = claimed.iter().map(|(id, _, _)| *id).collect();
        let op = (!claimed.is_empty() || !deleted.is_empty()).then(|| StreamOp::Claim {
            key: args[1].clone(),
            group: args[2].clone(),
            consumer: me,
            now_ms: now,
            claimed,
            dropped: deleted.clone(),
            last_id: None,
        });
        if op.as_ref().is_some_and(|op| !self.fits_quietly(op)) {
            self.w.error(OOM.as_bytes());
            return;
        }
        let w = &mut *self.w;
        w.array(3);
        write_id(w, cursor);
        w.array(ids.len());
        for id in &ids {
            if justid {
                write_id(w, *id);
            } else if let Some(e) = s.entries.get(id) {
                write_entry(w, *id, e);
            }
        }
        w.array(deleted.len());
        for id in &deleted {
            write_id(w, *id);
        }
        if let Some(op) = op {
            self.emit(op);
        }
    }

    pub(crate) fn xinfo(&mut self, cmd: StreamCommand) {
        let args = self.args;
        let Some(s) = self.state.keys.get(&args[2]) else {
            self.err("ERR no such key");
            return;
        };
        let now = self.cx.now_ms;
        let w = &mut *self.w;
        match cmd {
            StreamCommand::XinfoConsumers => {
                let Some(g) = s.groups.get(&args[3]) else {
                    nogroup_for_key(w, &args[3], &args[2]);
                    return;
                };
                w.array(g.consumers.len());
                for (name, c) in &g.consumers {
                    w.map(3);
                    w.bulk(b"name");
                    w.bulk(name);
                    w.bulk(b"pending");
                    w.integer(c.pel.len() as i64);
                    w.bulk(b"idle");
                    w.integer(elapsed(now, c.seen_ms));
                }
            }
            StreamCommand::XinfoGroups => {
                w.array(s.groups.len());
                for (name, g) in &s.groups {
                    w.map(6);
                    w.bulk(b"name");
                    w.bulk(name);
                    w.bulk(b"consumers");
                    w.integer(g.consumers.len() as i64);
                    w.bulk(b"pending");
                    w.integer(g.pel.len() as i64);
                    w.bulk(b"last-delivered-id");
                    write_id(w, g.last_id);
                    w.bulk(b"entries-read");
                    write_entries_read(w, g.entries_read);
                    w.bulk(b"lag");
                    match s.lag(g) {
                        Some(l) => w.integer(l),
                        None => w.null(),
                    }
                }
            }
            _ => {
                let optc = args.len() - 3;
                let mut full = false;
                let mut count: i64 = 10;
                if optc > 0 {
                    if (optc != 1 && optc != 3)
                        || !eq(&args[3], "FULL")
                        || (optc == 3 && !eq(&args[4], "COUNT"))
                    {
                        subcommand_syntax(w, args);
                        return;
                    }
                    full = true;
                    if optc == 3 {
                        let Some(c) = parse_i64(&args[5]) else {
                            w.error(NOT_INTEGER.as_bytes());
                            return;
                        };
                        count = if c < 0 { 10 } else { c };
                    }
                }
                stream_info(w, s, full, count, now);
            }
        }
    }
}

fn write_entries_read(w: &mut ReplyWriter<'_>, n: i64) {
    if n == INVALID_ENTRIES_READ {
        w.null();
    } else {
        w.integer(n);
    }
}

/// XINFO STREAM [FULL [COUNT n]].
fn stream_info(w: &mut ReplyWriter<'_>, s: &Stream, full: bool, count: i64, now: u64) {
    let _ = now;
    w.map(if full { 9 } else { 10 });
    w.bulk(b"length");
    w.integer(s.entries.len() as i64);
    w.bulk(b"radix-tree-keys");
    w.integer(s.nodes.len() as i64);
    w.bulk(b"radix-tree-nodes");
    w.integer(s.rax_nodes() as i64);
    w.bulk(b"last-generated-id");
    write_id(w, s.last_id);
    w.bulk(b"max-deleted-entry-id");
    write_id(w, s.max_deleted);
    w.bulk(b"entries-added");
    w.integer(s.entries_added as i64);
    w.bulk(b"recorded-first-entry-id");
    write_id(w, s.first_id());
    let limit = if count == 0 {
        usize::MAX
    } else {
        count as usize
    };
    if !full {
        w.bulk(b"groups");
        w.integer(s.groups.len() as i64);
        for (label, e) in [
            ("first-entry", s.entries.iter().next()),
            ("last-entry", s.entries.iter().next_back()),
        ] {
            w.bulk(label.as_bytes());
            match e {
                Some((id, e)) => write_entry(w, *id, e),
                None => w.null(),
            }
        }
        return;
    }
    w.bulk(b"entries");
    let entries: Vec<_> = s.entries.iter().take(limit).collect();
    w.array(entries.len());
    for (id, e) in entries {
        write_entry(w, *id, e);
    }
    w.bulk(b"groups");
    w.array(s.groups.len());
    for (name, g) in &s.groups {
        w.map(7);
        w.bulk(b"name");
        w.bulk(name);
        w.bulk(b"last-delivered-id");
        write_id(w, g.last_id);
        w.bulk(b"entries-read");
        write_entries_read(w, g.entries_read);
        w.bulk(b"lag");
        match s.lag(g) {
            Some(l) => w.integer(l),
            None => w.null(),
        }
        w.bulk(b"pel-count");
        w.integer(g.pel.len() as i64);
        w.bulk(b"pending");
        let pel: Vec<_> = g.pel.iter().take(limit).collect();
        w.array(pel.len());
        for (id, p) in pel {
            w.array(4);
            write_id(w, *id);
            w.bulk(&p.consumer);
            w.integer(p.delivery_ms as i64);
            w.integer(p.count as i64);
        }
        w.bulk(b"consumers");
        w.array(g.consumers.len());
        for (cname, c) in &g.consumers {
            w.map(4);
            w.bulk(b"name");
            w.bulk(cname);
            w.bulk(b"seen-time");
            w.integer(c.seen_ms as i64);
            w.bulk(b"pel-count");
            w.integer(c.pel.len() as i64);
            w.bulk(b"pending");
            let pel: Vec<_> = c.pel.iter().take(limit).collect();
            w.array(pel.len());
            for id in pel {
                let p = g.pel.get(id);
                w.array(3);
                write_id(w, *id);
                w.integer(p.map_or(0, |p| p.delivery_ms as i64));
                w.integer(p.map_or(0, |p| p.count as i64));
            }
        }
    }
}
