//! The store queue and tree, read back from the `# Stores` lines of INFO
//! that the router's tap writes: what the explorer shows and `/metrics`
//! exports, for any tree, a user's own stores included.

use std::collections::BTreeMap;

use serde::Serialize;

/// `/api/stores`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct StoresView {
    /// Whether the router has stores (a tap) at all.
    pub enabled: bool,
    /// The queue between the router and the store tree.
    pub queue: Option<QueueView>,
    /// The store tree, in pre-order.
    pub nodes: Vec<StoreNode>,
    /// Clients closed by an nlimit and the messages lost with them.
    pub nlimit: NLimitView,
}

/// The store queue's counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueView {
    /// Messages waiting.
    pub length: u64,
    /// Its size.
    pub capacity: u64,
    /// `block`, `error` or `spool`.
    pub policy: String,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages refused (publishers told to retry).
    pub refused: u64,
    /// Messages sent to the overflow spool.
    pub spooled: u64,
    /// Messages accepted past its size by the `block` policy.
    pub overfilled: u64,
    /// Bytes in the overflow spool.
    pub spool_bytes: u64,
    /// Messages committed by the tree.
    pub stored: u64,
    /// Store or commit failures.
    pub store_errors: u64,
    /// Messages given up by a failed commit.
    pub unstored: u64,
    /// Store trees replaced.
    pub reloads: u64,
}

/// Clients closed for going over an nlimit.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct NLimitView {
    /// Clients closed.
    pub clients_closed: u64,
    /// Messages lost with them.
    pub messages_dropped: u64,
}

/// One store of the tree.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct StoreNode {
    /// Its INFO name: `root`, `root_0`, `root_0_primary`, ...; a topic
    /// filter is named after the store it guards, plus `_filter`.
    pub name: String,
    /// Its depth in the tree (`root` is 0).
    pub depth: usize,
    /// `file`, `network`, `buffer`, `priority`, `multiple`, `null`, or
    /// `filter` (the topic filter in front of the store of the same name).
    pub kind: String,
    /// For a network store: connected to its target (`true`) or not.
    pub up: Option<bool>,
    /// For a buffer store: bytes in its spool (whole segments: the active
    /// one stays until it is full, so this does not fall to 0 after a replay).
    pub spool_bytes: Option<u64>,
    /// For a buffer store: bytes of its spool not yet handed to its primary.
    pub backlog_bytes: Option<u64>,
    /// For a buffer store: whether its primary says it is up.
    pub primary_up: Option<bool>,
    /// For a buffer store: whether it is replaying a backlog to a primary
    /// that is up (while the primary is down it spools, and waits).
    pub replaying: bool,
    /// For a replaying buffer store: how much of the backlog it had when
    /// the replay began (or grew to since) has been handed on, 0 to 1.
    pub replay_progress: Option<f64>,
    /// Every `key=value` of its INFO line.
    pub fields: BTreeMap<String, String>,
}

/// Reads a tap's INFO lines (`key:value` for the queue, then
/// `store_NAME:kind=...,key=value,...` per store) into a [`StoresView`].
/// Lines it does not know are left out; `None` (no tap) gives a view with
/// `enabled` false.
pub fn parse_stores(info: Option<&str>) -> StoresView {
    let Some(info) = info else {
        return StoresView::default();
    };
    let mut view = StoresView {
        enabled: true,
        ..StoresView::default()
    };
    let mut queue = QueueView::default();
    let mut has_queue = false;
    for line in info.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let n = || value.trim().parse::<u64>().unwrap_or(0);
        has_queue |= QUEUE_KEYS.contains(&key);
        match key {
            "queue_length" => queue.length = n(),
            "queue_capacity" => queue.capacity = n(),
            "queue_policy" => queue.policy = value.trim().to_owned(),
            "queue_accepted" => queue.accepted = n(),
            "queue_refused" => queue.refused = n(),
            "queue_spooled" => queue.spooled = n(),
            "queue_overfilled" => queue.overfilled = n(),
            "queue_spool_bytes" => queue.spool_bytes = n(),
            "stored_messages" => queue.stored = n(),
            "store_errors" => queue.store_errors = n(),
            "unstored_messages" => queue.unstored = n(),
            "store_reloads" => queue.reloads = n(),
            _ => {
                if let Some(name) = key.strip_prefix("store_") {
                    view.nodes.push(node(name, value));
                }
            }
        }
    }
    view.queue = has_queue.then_some(queue);
    view
}

/// The queue's keys; some begin with `store_` like the nodes' names.
const QUEUE_KEYS: &[&str] = &[
    "queue_length",
    "queue_capacity",
    "queue_policy",
    "queue_accepted",
    "queue_refused",
    "queue_spooled",
    "queue_overfilled",
    "queue_spool_bytes",
    "stored_messages",
    "store_errors",
    "unstored_messages",
    "store_reloads",
];

fn node(name: &str, value: &str) -> StoreNode {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for piece in value.split(',') {
        match piece.split_once('=') {
            Some((k, v)) => {
                fields.insert(k.to_owned(), v.to_owned());
                last = Some(k.to_owned());
            }
            // A comma inside a value (a path): it belongs to the value before.
            None => {
                if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                    v.push(',');
                    v.push_str(piece);
                }
            }
        }
    }
    // A topic filter's line comes before the line of the store it guards,
    // named after it: it keeps its own name, at that store's depth.
    let (depth, kind) = match name.strip_suffix("_filter") {
        Some(base) if !fields.contains_key("kind") => {
            (base.matches('_').count(), "filter".to_owned())
        }
        _ => (
            name.matches('_').count(),
            fields.get("kind").cloned().unwrap_or_default(),
        ),
    };
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    let buffer = kind == "buffer";
    let primary_up = buffer.then(|| num("primary_up") == Some(1));
    StoreNode {
        up: (kind == "network").then(|| num("connected") == Some(1)),
        spool_bytes: buffer.then(|| num("spool_bytes").unwrap_or(0)),
        backlog_bytes: buffer.then(|| num("backlog_bytes").unwrap_or(0)),
        primary_up,
        replaying: buffer && num("replaying") == Some(1) && primary_up == Some(true),
        replay_progress: None,
        depth,
        name: name.to_owned(),
        kind,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_of_info_lines_reads_into_nodes() {
        let info = "queue_length:3\r\nqueue_capacity:100\r\nqueue_policy:block\r\nqueue_refused:2\r\nstore_errors:5\r\n\
            store_root:kind=buffer,spool=/tmp/a,b,spool_bytes=4096,spool_segments=1,backlog_bytes=100,primary_up=1,replaying=1,spooled=9\r\n\
            store_root_primary_filter:topics=1,skipped=4\r\n\
            store_root_primary:kind=network,target=127.0.0.1:3389,connected=0,queued=0\r\n";
        let v = parse_stores(Some(info));
        assert!(v.enabled);
        let q = v.queue.expect("queue");
        assert_eq!(
            (q.length, q.capacity, q.refused, q.store_errors),
            (3, 100, 2, 5)
        );
        assert_eq!(q.policy, "block");
        let names: Vec<_> = v
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.kind.as_str(), n.depth))
            .collect();
        assert_eq!(
            names,
            [
                ("root", "buffer", 0),
                ("root_primary_filter", "filter", 1),
                ("root_primary", "network", 1)
            ]
        );
        let root = &v.nodes[0];
        assert_eq!(root.fields["spool"], "/tmp/a,b");
        assert_eq!(
            (root.spool_bytes, root.replaying, root.up),
            (Some(4096), true, None)
        );
        assert_eq!(
            (root.backlog_bytes, root.primary_up),
            (Some(100), Some(true))
        );
        assert_eq!(v.nodes[2].up, Some(false));
        assert_eq!(v.nodes[1].fields["skipped"], "4");
    }

    proptest::proptest! {
        /// A store's INFO is written by any [`Store`](crate::Store)
        /// implementation: whatever it says is read without a panic.
        #[test]
        fn any_info_reads_without_a_panic(lines in proptest::collection::vec("[a-z_:=,0-9 ]{0,40}", 0..8)) {
            let info = lines.join("\r\n");
            let v = parse_stores(Some(&info));
            proptest::prop_assert!(v.enabled);
            for n in &v.nodes {
                let parts = n.name.matches('_').count();
                proptest::prop_assert!(n.depth == parts || n.depth + 1 == parts && n.kind == "filter");
            }
        }
    }

    #[test]
    fn no_tap_means_no_stores() {
        let v = parse_stores(None);
        assert!(!v.enabled);
        assert!(v.queue.is_none() && v.nodes.is_empty());
    }
}
