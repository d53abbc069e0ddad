//! Fuzz wish's cache key through `CacheLayer::lookup`, with stores that
//! record what the layer asks them: arbitrary request bytes never panic it;
//! a request it keys means what its key means (prost decodes the key's
//! canonical bytes to the same message as the request, so one cached answer
//! is never served for a request that means something else); the key of a
//! key is itself; and the entities of a `timestamped` method are the
//! request's fields as prost decodes them, last occurrence winning, each
//! field's default when it is left out.
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
    CacheKey, CacheLayer, CacheStore, CachedResponse, EntityField, FieldKind, Lookup, MethodDesc,
    MethodOptions, StoreFuture, TimestampStore,
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

static METHODS: [MethodDesc; 3] = [
    MethodDesc::new("f.S.Plain", MethodOptions::new().cache(60)).request_oneofs(ONEOFS),
    MethodDesc::new("f.S.Few", MethodOptions::new().cache(60).timestamped(FEW))
        .request_oneofs(ONEOFS),
    MethodDesc::new("f.S.All", MethodOptions::new().cache(60).timestamped(ALL))
        .request_oneofs(ONEOFS),
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

/// Looks `request` up; the key and entities asked of the stores, if any.
fn lookup(method: &MethodDesc, request: &[u8]) -> Option<(CacheKey, Option<Vec<String>>)> {
    let keys = Arc::new(Recorder::default());
    let names = Arc::new(Names::default());
    let layer = CacheLayer::new(keys.clone(), names.clone());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let request = Bytes::copy_from_slice(request);
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(found) = pin!(layer.lookup(method, &request, now)).poll(&mut cx) else {
        panic!("in-memory stores answer at once");
    };
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
    let Some((key, entities)) = lookup(method, request) else {
        return;
    };
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
    if let (Some(entities), Ok(m)) = (entities, Req::decode(request)) {
        let want: Vec<String> = method
            .options
            .timestamped_fields
            .iter()
            .map(|f| rendered(&m, f))
            .collect();
        assert_eq!(entities, want);
    }
});
