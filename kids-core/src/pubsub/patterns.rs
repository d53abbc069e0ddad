//! The router's pattern set, indexed so that a publish visits only the
//! patterns that can match its channel.
//!
//! A pattern is filed under its literal prefix (the bytes before its first
//! `*`, `?` or `[`), or, when it starts with one of those, under its literal
//! suffix; only patterns with neither (`*foo*`, `?x*`) are visited by every
//! publish. A publish looks up the channel's prefixes and suffixes of the
//! lengths that are filed (one hash lookup per distinct length), so 100,000
//! patterns `news.N.*` cost a publish to `sport.x` nothing, where a flat
//! list would match all of them.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::pubsub::glob::Glob;
use crate::server::outbox::Outbox;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One distinct pattern and its subscribers.
pub(crate) struct PatternEntry {
    pub(crate) glob: Glob,
    pub(crate) subscribers: Vec<Arc<Outbox>>,
    /// When it was added (never reused): a publish cut into slices skips
    /// the patterns added after it began.
    pub(crate) seq: u64,
    /// Where it is filed.
    key: Key,
    /// Its position in that bucket.
    pos: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Prefix(Bytes),
    Suffix(Bytes),
    Rest,
}

/// Buckets of pattern ids by a literal, with the lengths that occur.
#[derive(Default)]
struct Literals {
    buckets: Map<Bytes, Vec<u32>>,
    /// Length → how many buckets have a key of that length.
    lens: BTreeMap<usize, usize>,
}

impl Literals {
    fn push(&mut self, key: &Bytes, id: u32) -> usize {
        let bucket = self.buckets.entry(key.clone()).or_insert_with(|| {
            *self.lens.entry(key.len()).or_insert(0) += 1;
            Vec::new()
        });
        bucket.push(id);
        bucket.len() - 1
    }

    /// Removes the id at `pos`; returns the id moved into its place, if any.
    fn remove(&mut self, key: &Bytes, pos: usize) -> Option<u32> {
        let bucket = self.buckets.get_mut(key)?;
        bucket.swap_remove(pos);
        let moved = bucket.get(pos).copied();
        if bucket.is_empty() {
            self.buckets.remove(key);
            if let Some(n) = self.lens.get_mut(&key.len()) {
                *n -= 1;
                if *n == 0 {
                    self.lens.remove(&key.len());
                }
            }
        }
        moved
    }
}

/// The distinct patterns subscribed to, indexed by literal prefix or suffix.
#[derive(Default)]
pub(crate) struct Patterns {
    slots: Vec<Option<PatternEntry>>,
    free: Vec<u32>,
    by_source: Map<Bytes, u32>,
    prefix: Literals,
    suffix: Literals,
    rest: Vec<u32>,
    next_seq: u64,
}

impl Patterns {
    /// Distinct patterns.
    pub(crate) fn len(&self) -> usize {
        self.by_source.len()
    }

    /// The pattern with id `id`, if it is still there.
    pub(crate) fn get(&self, id: u32) -> Option<&PatternEntry> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// The sequence number the next pattern added will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds `outbox` as a subscriber of `glob`'s pattern (filed if new).
    pub(crate) fn subscribe(&mut self, glob: Glob, outbox: &Arc<Outbox>) {
        if let Some(&id) = self.by_source.get(glob.source()) {
            if let Some(e) = self.slots[id as usize].as_mut() {
                e.subscribers.push(outbox.clone());
            }
            return;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let (prefix, suffix) = (glob.literal_prefix(), glob.literal_suffix());
        let key = if !prefix.is_empty() {
            Key::Prefix(Bytes::from(prefix))
        } else if !suffix.is_empty() {
            Key::Suffix(Bytes::from(suffix))
        } else {
            Key::Rest
        };
        let pos = match &key {
            Key::Prefix(k) => self.prefix.push(k, id),
            Key::Suffix(k) => self.suffix.push(k, id),
            Key::Rest => {
                self.rest.push(id);
                self.rest.len() - 1
            }
        };
        self.by_source.insert(glob.source().clone(), id);
        self.slots[id as usize] = Some(PatternEntry {
            glob,
            subscribers: vec![outbox.clone()],
            seq: self.next_seq,
            key,
            pos,
        });
        self.next_seq += 1;
    }

    /// Removes `outbox` from the subscribers of `pattern`; the pattern goes
    /// when it has none left.
    pub(crate) fn unsubscribe(&mut self, pattern: &[u8], outbox: &Arc<Outbox>) {
        let Some(&id) = self.by_source.get(pattern) else {
            return;
        };
        let Some(entry) = self.slots[id as usize].as_mut() else {
            return;
        };
        entry.subscribers.retain(|o| !Arc::ptr_eq(o, outbox));
        if !entry.subscribers.is_empty() {
            return;
        }
        let Some(entry) = self.slots[id as usize].take() else {
            return;
        };
        self.by_source.remove(pattern);
        self.free.push(id);
        let moved = match &entry.key {
            Key::Prefix(k) => self.prefix.remove(k, entry.pos),
            Key::Suffix(k) => self.suffix.remove(k, entry.pos),
            Key::Rest => {
                self.rest.swap_remove(entry.pos);
                self.rest.get(entry.pos).copied()
            }
        };
        if let Some(m) = moved.and_then(|m| self.slots[m as usize].as_mut()) {
            m.pos = entry.pos;
        }
    }

    /// The buckets of the patterns that can match `channel` (lowered
    /// first when patterns ignore case): every other pattern cannot.
    pub(crate) fn candidates<'a>(&'a self, channel: &[u8]) -> Vec<&'a [u32]> {
        let mut out: Vec<&[u32]> = Vec::new();
        for &len in self.prefix.lens.keys() {
            if len > channel.len() {
                break;
            }
            if let Some(b) = self.prefix.buckets.get(&channel[..len]) {
                out.push(b);
            }
        }
        for &len in self.suffix.lens.keys() {
            if len > channel.len() {
                break;
            }
            if let Some(b) = self.suffix.buckets.get(&channel[channel.len() - len..]) {
                out.push(b);
            }
        }
        if !self.rest.is_empty() {
            out.push(&self.rest);
        }
        out
    }

    /// Every pattern, with its subscribers.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &PatternEntry> {
        self.slots.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::outbox::Outbox;

    fn outbox(id: u64) -> Arc<Outbox> {
        Arc::new(Outbox::new(id))
    }

    fn matching(p: &Patterns, channel: &[u8]) -> Vec<String> {
        let mut v: Vec<String> = p
            .candidates(channel)
            .iter()
            .flat_map(|b| b.iter())
            .filter_map(|&id| p.get(id))
            .filter(|e| e.glob.matches(channel))
            .map(|e| String::from_utf8_lossy(e.glob.source()).into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn filed_by_prefix_then_suffix_then_rest() {
        let mut p = Patterns::default();
        let o = outbox(1);
        for pat in ["news.*", "news.sport.*", "*.log", "*mid*", "exact", "[ab]x"] {
            p.subscribe(Glob::new(pat.as_bytes(), false), &o);
        }
        // Only the buckets that can match are visited.
        let visited: usize = p.candidates(b"news.sport.x").iter().map(|b| b.len()).sum();
        // news.*, news.sport.*, [ab]x (suffix x) and the rest bucket (*mid*).
        assert_eq!(visited, 4);
        assert_eq!(matching(&p, b"news.sport.x"), ["news.*", "news.sport.*"]);
        assert_eq!(matching(&p, b"app.log"), ["*.log"]);
        assert_eq!(matching(&p, b"amidb"), ["*mid*"]);
        assert_eq!(matching(&p, b"exact"), ["exact"]);
        assert_eq!(matching(&p, b"bx"), ["[ab]x"]);
        assert!(matching(&p, b"").is_empty());
    }

    #[test]
    fn removal_keeps_every_other_pattern_findable() {
        let mut p = Patterns::default();
        let (a, b) = (outbox(1), outbox(2));
        let pats: Vec<String> = (0..50).map(|i| format!("*x{}", i % 7)).collect();
        let mut distinct: Vec<String> = pats.clone();
        distinct.sort();
        distinct.dedup();
        for (i, pat) in pats.iter().enumerate() {
            p.subscribe(
                Glob::new(pat.as_bytes(), false),
                if i % 2 == 0 { &a } else { &b },
            );
        }
        assert_eq!(p.len(), 7);
        // Drop a's subscriptions: patterns b also holds stay.
        for pat in &distinct {
            p.unsubscribe(pat.as_bytes(), &a);
        }
        assert_eq!(p.len(), 7, "b subscribes to every one of them too");
        for (i, pat) in distinct.iter().enumerate() {
            if i % 2 == 0 {
                p.unsubscribe(pat.as_bytes(), &b);
            }
        }
        for (i, pat) in distinct.iter().enumerate() {
            let channel = format!("ax{}", &pat[2..]);
            let found = matching(&p, channel.as_bytes());
            if i % 2 == 0 {
                assert!(found.is_empty(), "{pat} was removed: {found:?}");
            } else {
                assert_eq!(found, std::slice::from_ref(pat));
            }
        }
        // Slots are reused, with new sequence numbers.
        let before = p.next_seq();
        p.subscribe(Glob::new(b"*new", false), &a);
        assert!(p.iter().any(|e| e.seq == before));
        assert_eq!(p.slots.len(), 7);
    }

    #[test]
    fn nocase_patterns_are_filed_lowered() {
        let mut p = Patterns::default();
        p.subscribe(Glob::new(b"NEWS.*", true), &outbox(1));
        p.subscribe(Glob::new(b"*.LOG", true), &outbox(1));
        assert_eq!(matching(&p, b"news.x"), ["NEWS.*"]);
        assert_eq!(matching(&p, b"a.log"), ["*.LOG"]);
    }
}
