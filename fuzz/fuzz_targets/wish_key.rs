//! Fuzz wish's cache key through `CacheLayer::lookup`, with stores that
//! record what the layer asks them: arbitrary request bytes never panic it;
//! a request it keys means what its key means (prost decodes the key's
//! canonical bytes to the same message as the request, so one cached answer
//! is never served for a request that means something else); the key of a
//! key is itself, its fields in number order, and the request's own bytes
//! when those are in order already; every request prost decodes is keyed,
//! unless it has a group or two members of one oneof; the entities of a
//! `timestamped` method are the request's fields as prost decodes them,
//! last occurrence winning, each field's default when it is left out; and
//! with the real stores, an answer stored for a request is served for its
//! key, until an entity it names is touched or it expires.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use wish_core::{
    CacheKey, CacheLayer, CacheStore, CachedResponse, EntityField, FieldKind, Lookup, LruCache,
    MemoryTimestamps, MethodDesc, MethodOptions, StoreFuture, TimestampStore,
};

/// The request type every method takes: every kind an entity may have
/// (1-16), a recursive message, repeated fields, and five oneofs (more than
/// the key tracks without an allocation).
#[derive(Clone, PartialEq, prost::Message)]
struct Req {
    #[prost(int32, tag = "1")]
    i32: i32,
    #[prost(int64, tag = "2")]
    i64: i64,
    #[prost(uint32, tag = "3")]
    u32: u32,
    #[prost(uint64, tag = "4")]
    u64: u64,
    #[prost(sint32, tag = "5")]
    s32: i32,
    #[prost(sint64, tag = "6")]
    s64: i64,
    #[prost(bool, tag = "7")]
    flag: bool,
    /// An enum is an int32 on the wire, and rendered as one.
    #[prost(int32, tag = "8")]
    kind: i32,
    #[prost(fixed32, tag = "9")]
    f32: u32,
    #[prost(fixed64, tag = "10")]
    f64: u64,
    #[prost(sfixed32, tag = "11")]
    sf32: i32,
    #[prost(sfixed64, tag = "12")]
    sf64: i64,
    #[prost(float, tag = "13")]
    float: f32,
    #[prost(double, tag = "14")]
    double: f64,
    #[prost(string, tag = "15")]
    text: String,
    #[prost(bytes = "vec", tag = "16")]
    raw: Vec<u8>,
    #[prost(message, optional, boxed, tag = "17")]
    child: Option<Box<Req>>,
    #[prost(int32, repeated, tag = "18")]
    numbers: Vec<i32>,
    #[prost(string, repeated, tag = "19")]
    names: Vec<String>,
    #[prost(oneof = "One", tags = "20, 21")]
    one: Option<One>,
    #[prost(oneof = "Two", tags = "22, 23")]
    two: Option<Two>,
    #[prost(oneof = "Three", tags = "24, 25")]
    three: Option<Three>,
    #[prost(oneof = "Four", tags = "26, 27")]
    four: Option<Four>,
    #[prost(oneof = "Five", tags = "28, 29")]
    five: Option<Five>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum One {
    #[prost(int32, tag = "20")]
    A(i32),
    #[prost(string, tag = "21")]
    B(String),
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Two {
    #[prost(message, tag = "22")]
    A(Box<Req>),
    #[prost(sint64, tag = "23")]
    B(i64),
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Three {
    #[prost(fixed32, tag = "24")]
    A(u32),
    #[prost(bool, tag = "25")]
    B(bool),
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Four {
    #[prost(bytes = "vec", tag = "26")]
    A(Vec<u8>),
    #[prost(double, tag = "27")]
    B(f64),
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Five {
    #[prost(uint64, tag = "28")]
    A(u64),
    #[prost(int32, tag = "29")]
    B(i32),
}

const ONEOFS: &[&[u32]] = &[&[20, 21], &[22, 23], &[24, 25], &[26, 27], &[28, 29]];

/// A listed field, with the default prost's decoding renders to.
const fn entity(name: &'static str, number: u32, kind: FieldKind) -> EntityField {
    let default = match kind {
        FieldKind::Bool => "false",
        FieldKind::String | FieldKind::Bytes => "",
        _ => "0",
    };
    EntityField {
        name,
        number,
        kind,
        default,
    }
}

/// Every kind, more entities than the key renders without an allocation.
const ALL: &[EntityField] = &[
    entity("i32", 1, FieldKind::Int32),
    entity("i64", 2, FieldKind::Int64),
    entity("u32", 3, FieldKind::UInt32),
    entity("u64", 4, FieldKind::UInt64),
    entity("s32", 5, FieldKind::SInt32),
    entity("s64", 6, FieldKind::SInt64),
    entity("flag", 7, FieldKind::Bool),
    entity("kind", 8, FieldKind::Enum),
    entity("f32", 9, FieldKind::Fixed32),
    entity("f64", 10, FieldKind::Fixed64),
    entity("sf32", 11, FieldKind::SFixed32),
    entity("sf64", 12, FieldKind::SFixed64),
    entity("float", 13, FieldKind::Float),
    entity("double", 14, FieldKind::Double),
    entity("text", 15, FieldKind::String),
    entity("raw", 16, FieldKind::Bytes),
];

/// A few entities, listed out of field order.
const FEW: &[EntityField] = &[
    entity("text", 15, FieldKind::String),
    entity("i32", 1, FieldKind::Int32),
    entity("flag", 7, FieldKind::Bool),
];

/// As many entities as the key renders without an allocation.
const FOUR: &[EntityField] = &[
    entity("u64", 4, FieldKind::UInt64),
    entity("raw", 16, FieldKind::Bytes),
    entity("s32", 5, FieldKind::SInt32),
    entity("double", 14, FieldKind::Double),
];

/// How long a cached answer lives, in seconds.
const EXPIRE: u32 = 60;

static METHODS: [MethodDesc; 5] = [
    MethodDesc::new("f.S.Plain", MethodOptions::new().cache(EXPIRE)).request_oneofs(ONEOFS),
    MethodDesc::new(
        "f.S.Few",
        MethodOptions::new().cache(EXPIRE).timestamped(FEW),
    )
    .request_oneofs(ONEOFS),
    MethodDesc::new(
        "f.S.Four",
        MethodOptions::new().cache(EXPIRE).timestamped(FOUR),
    )
    .request_oneofs(ONEOFS),
    MethodDesc::new(
        "f.S.All",
        MethodOptions::new().cache(EXPIRE).timestamped(ALL),
    )
    .request_oneofs(ONEOFS),
    // Not cached: never keyed.
    MethodDesc::new("f.S.Off", MethodOptions::new()).request_oneofs(ONEOFS),
];

/// A cache that holds an answer for every key, and records the keys asked.
#[derive(Default)]
struct Recorder {
    keys: Mutex<Vec<CacheKey>>,
}

fn answer() -> CachedResponse {
    CachedResponse {
        payload: Bytes::from_static(b"\x08\x01"),
        computed_at: SystemTime::UNIX_EPOCH,
        expires_at: None,
    }
}

impl CacheStore for Recorder {
    fn get(&self, key: &CacheKey, _now: SystemTime) -> StoreFuture<'_, Option<CachedResponse>> {
        self.keys.lock().unwrap().push(key.clone());
        StoreFuture::ready(Some(answer()))
    }
    fn put(&self, _key: CacheKey, _value: CachedResponse) -> StoreFuture<'_, ()> {
        StoreFuture::ready(())
    }
    fn remove(&self, _key: &CacheKey) -> StoreFuture<'_, ()> {
        panic!("nothing is ever stale here")
    }
}

/// Timestamps that know no entity, and record the entities asked.
#[derive(Default)]
struct Names {
    asked: Mutex<Vec<Vec<String>>>,
}

impl TimestampStore for Names {
    fn touch(&self, _entity: &str, _now: SystemTime) -> StoreFuture<'_, ()> {
        StoreFuture::ready(())
    }
    fn last_modified(&self, entities: &[&str]) -> StoreFuture<'_, Option<SystemTime>> {
        let names = entities.iter().map(|e| e.to_string()).collect();
        self.asked.lock().unwrap().push(names);
        StoreFuture::ready(None)
    }
}

/// What a request means: prost's encoding of what it decodes to (bytes,
/// so that a NaN equals itself), or `None` if prost refuses it.
fn meaning(bytes: &[u8]) -> Option<Vec<u8>> {
    Req::decode(bytes).ok().map(|m| m.encode_to_vec())
}

/// The entity `field` names in `m`, rendered as the key renders it.
fn rendered(m: &Req, field: &EntityField) -> String {
    let value = match field.number {
        1 => m.i32.to_string(),
        2 => m.i64.to_string(),
        3 => m.u32.to_string(),
        4 => m.u64.to_string(),
        5 => m.s32.to_string(),
        6 => m.s64.to_string(),
        7 => m.flag.to_string(),
        8 => m.kind.to_string(),
        9 => m.f32.to_string(),
        10 => m.f64.to_string(),
        11 => m.sf32.to_string(),
        12 => m.sf64.to_string(),
        13 => m.float.to_string(),
        14 => m.double.to_string(),
        15 => m.text.clone(),
        16 => m.raw.iter().map(|b| format!("{b:02x}")).collect(),
        n => unreachable!("no entity field {n}"),
    };
    format!("{}={value}", field.name)
}

/// The top-level fields of a message prost decodes, as (number, wire type),
/// read independently of wish; `None` if it has a group (or is not one).
fn top_level(msg: &[u8]) -> Option<Vec<(u32, u8)>> {
    fn varint(msg: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *msg.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }
    let (mut at, mut fields) = (0, Vec::new());
    while at < msg.len() {
        let tag = varint(msg, &mut at)?;
        let wire = (tag & 7) as u8;
        let skip = match wire {
            0 => {
                varint(msg, &mut at)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(msg, &mut at)?).ok()?,
            5 => 4,
            _ => return None,
        };
        at = at.checked_add(skip).filter(|end| *end <= msg.len())?;
        fields.push((u32::try_from(tag >> 3).ok()?, wire));
    }
    Some(fields)
}

/// Whether `fields` hold two different members of one oneof.
fn two_members(fields: &[(u32, u8)]) -> bool {
    ONEOFS.iter().any(|members| {
        let mut sent = fields.iter().filter(|(n, _)| members.contains(n));
        sent.next()
            .is_some_and(|(first, _)| sent.any(|(n, _)| n != first))
    })
}

/// Polls a future of the in-memory stores, which answer at once.
fn now_or_never<T>(fut: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("in-memory stores answer at once"),
    }
}

const T0: Duration = Duration::from_secs(1_700_000_000);

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
}

/// Looks `request` up; the key and entities asked of the stores, if any.
fn lookup(method: &MethodDesc, request: &[u8]) -> Option<(CacheKey, Option<Vec<String>>)> {
    let keys = Arc::new(Recorder::default());
    let names = Arc::new(Names::default());
    let layer = CacheLayer::new(keys.clone(), names.clone());
    let request = Bytes::copy_from_slice(request);
    let found = now_or_never(layer.lookup(method, &request, at(0)));
    let mut keys = std::mem::take(&mut *keys.keys.lock().unwrap());
    let mut asked = std::mem::take(&mut *names.asked.lock().unwrap());
    assert!(keys.len() <= 1 && asked.len() <= 1);
    match found {
        Lookup::Hit(hit) => {
            assert_eq!(hit, answer());
            let key = keys.pop().expect("a hit was looked up");
            assert_eq!(key.method, method.id);
            // Only a timestamped method asks for its entities, on a hit.
            assert_eq!(asked.len(), usize::from(method.options.timestamped));
            Some((key, asked.pop()))
        }
        Lookup::Skip => {
            assert!(
                keys.is_empty() && asked.is_empty(),
                "a skipped request is not looked up"
            );
            None
        }
        Lookup::Miss(_) => panic!("the recorder holds an answer for every key"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, request)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(pick) % METHODS.len()];
    let decoded = Req::decode(request);
    let fields = top_level(request);
    let Some((key, entities)) = lookup(method, request) else {
        // Only a request that is not cached, or that the key cannot stand
        // for, goes without one.
        assert!(
            !method.options.cache || decoded.is_err() || fields.as_deref().is_none_or(two_members),
            "a request prost decodes is not keyed"
        );
        return;
    };
    assert!(method.options.cache, "a method that is not cached is keyed");
    // The key's fields are in number order; a request in order is its own key.
    let sorted = top_level(&key.request).expect("a key has no group");
    assert!(sorted.is_sorted_by_key(|(n, _)| *n), "a key out of order");
    if let Some(fields) = &fields {
        if fields.is_sorted_by_key(|(n, _)| *n) {
            assert_eq!(key.request, request, "a request in order is its own key");
        }
    }
    // One key, one meaning: the canonical bytes decode as the request does.
    let means = meaning(request);
    assert_eq!(
        meaning(&key.request),
        means,
        "the key means another request"
    );
    // The canonical form is its own key.
    let (again, again_entities) = lookup(method, &key.request).expect("a key keys");
    assert_eq!(again.request, key.request, "the key of a key is itself");
    assert_eq!(again_entities, entities);
    // The entities are the fields as prost sees them.
    if let (Some(entities), Ok(m)) = (&entities, &decoded) {
        let want: Vec<String> = method
            .options
            .timestamped_fields
            .iter()
            .map(|f| rendered(m, f))
            .collect();
        assert_eq!(entities, &want);
    }

    // With the real stores: stored for the request, served for its key,
    // until an entity is touched or the answer expires.
    let layer = CacheLayer::new(
        Arc::new(LruCache::new(4, 1 << 16)),
        Arc::new(MemoryTimestamps::new(4)),
    );
    let payload = Bytes::copy_from_slice(request);
    let Lookup::Miss(pending) = now_or_never(layer.lookup(method, &payload, at(0))) else {
        panic!("an empty cache misses");
    };
    now_or_never(layer.store(pending, payload.clone(), None));
    let Lookup::Hit(hit) = now_or_never(layer.lookup(method, &key.request, at(1))) else {
        panic!("the answer stored for a request is not served for its key");
    };
    assert_eq!((hit.payload, hit.computed_at), (payload, at(0)));
    let stale = match &entities {
        Some(entities) => {
            let touched = &entities[usize::from(pick / 8) % entities.len()];
            now_or_never(layer.timestamps().touch(touched, at(2)));
            at(3)
        }
        None => at(u64::from(EXPIRE)),
    };
    let again = now_or_never(layer.lookup(method, &key.request, stale));
    assert!(
        matches!(again, Lookup::Miss(_)),
        "a stale answer was served"
    );
});
