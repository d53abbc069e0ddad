//! Fuzz wish's check of proto2 required fields on encoded messages: arbitrary
//! bytes never panic it (groups, oneofs, recursion, many fields); where prost
//! decodes the bytes, the check agrees with the fields prost saw; and a
//! message that passes still passes sent twice (protobuf merges the two).
//! The same bytes are also checked as a message with a map of LEAF values,
//! where an entry without its value holds an empty, incomplete one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wish_core::{NestedField, RequiredError, RequiredField, RequiredFields};

static LEAF: RequiredFields = RequiredFields::new("f.Leaf", &[RequiredField::new(1, "x")], &[]);
/// Recursive through field 4, singular and repeated leaves, a oneof, a
/// group, and required fields with one-byte and longer tags.
static NODE: RequiredFields = RequiredFields::new(
    "f.Node",
    &[RequiredField::new(1, "a"), RequiredField::new(300, "far")],
    &[
        NestedField::new(2, "one", false, &LEAF),
        NestedField::new(3, "many", true, &LEAF),
        NestedField::new(4, "next", false, &NODE),
        NestedField::new(5, "p", false, &LEAF).in_oneof(0),
        NestedField::new(6, "q", false, &LEAF).in_oneof(0),
        NestedField::new(8, "g", false, &LEAF).group(),
    ],
)
.oneofs(&[&[5, 6, 7]]);

/// `map<int32, Leaf> m = 1;`: its entry type, and the message.
static ENTRY: RequiredFields = RequiredFields::new(
    "f.Mapped.MEntry",
    &[],
    &[NestedField::new(2, "value", false, &LEAF).map_value()],
);
static MAPPED: RequiredFields =
    RequiredFields::new("f.Mapped", &[], &[NestedField::new(1, "m", true, &ENTRY)]);

/// MAPPED's message, as prost decodes it (a later entry replaces an
/// earlier one of the same key).
#[derive(Clone, PartialEq, prost::Message)]
struct Mapped {
    #[prost(map = "int32, message", tag = "1")]
    m: std::collections::HashMap<i32, Leaf>,
}

/// MAPPED's entries, every one.
#[derive(Clone, PartialEq, prost::Message)]
struct Entries {
    #[prost(bytes = "vec", repeated, tag = "1")]
    entries: Vec<Vec<u8>>,
}

/// `message Leaf { required int32 x = 1; }`, decoded with presence.
#[derive(Clone, PartialEq, prost::Message)]
struct Leaf {
    #[prost(int32, optional, tag = "1")]
    x: Option<i32>,
}

/// NODE's message, decoded with presence.
#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    #[prost(int32, optional, tag = "1")]
    a: Option<i32>,
    #[prost(message, optional, tag = "2")]
    one: Option<Leaf>,
    #[prost(message, repeated, tag = "3")]
    many: Vec<Leaf>,
    #[prost(message, optional, boxed, tag = "4")]
    next: Option<Box<Node>>,
    #[prost(oneof = "Pick", tags = "5, 6, 7")]
    pick: Option<Pick>,
    #[prost(group, optional, tag = "8")]
    g: Option<Leaf>,
    #[prost(int32, optional, tag = "300")]
    far: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Pick {
    #[prost(message, tag = "5")]
    P(Leaf),
    #[prost(message, tag = "6")]
    Q(Leaf),
    #[prost(int32, tag = "7")]
    N(i32),
}

fn complete(n: &Node) -> bool {
    let leaf = |l: &Leaf| l.x.is_some();
    n.a.is_some()
        && n.far.is_some()
        && n.one.as_ref().is_none_or(leaf)
        && n.many.iter().all(leaf)
        && n.next.as_deref().is_none_or(complete)
        && match &n.pick {
            Some(Pick::P(l) | Pick::Q(l)) => leaf(l),
            Some(Pick::N(_)) | None => true,
        }
        && n.g.as_ref().is_none_or(leaf)
}

fuzz_target!(|data: &[u8]| {
    let once = NODE.check(data);
    // The check reads no scalar, so prost may refuse what it passes; and its
    // depth bound is not prost's. Where prost decodes, they agree.
    if let Ok(node) = <Node as prost::Message>::decode(data)
        && once != Err(RequiredError::TooDeep(wish_core::MAX_REQUIRED_DEPTH))
    {
        assert_eq!(once.is_ok(), complete(&node), "{once:?} for {node:?}");
    }
    if once.is_ok() {
        let twice = [data, data].concat();
        assert_eq!(NODE.check(&twice), Ok(()), "merged with itself it fails");
    }
    // Each entry is checked on its own, so only where no key came twice
    // (prost keeps the last) does the check agree with prost's map.
    let mapped = MAPPED.check(data);
    if let (Ok(map), Ok(all)) = (
        <Mapped as prost::Message>::decode(data),
        <Entries as prost::Message>::decode(data),
    ) && map.m.len() == all.entries.len()
    {
        let complete = map.m.values().all(|l| l.x.is_some());
        assert_eq!(mapped.is_ok(), complete, "{mapped:?} for {map:?}");
    }
});
