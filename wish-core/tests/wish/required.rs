//! proto2 `required` fields: refused in requests before the handler, failed in answers at the client, emitted by the code generator; the checker against prost's own merge.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use proptest::prelude::*;
use wish_core::{
    BoxFuture, Bytes, CallContext, CallOptions, Channel, Code, LocalChannel, MethodDesc,
    MethodOptions, NestedField, Reply, RequiredError, RequiredField, RequiredFields, Server,
    ServerConfig, Service, ServiceDesc, Status,
};

use super::support::Pair;

/// `message Pair { required int32 a = 1; required int32 b = 2; }`
static PAIR: RequiredFields = RequiredFields::new(
    "test.Pair",
    &[RequiredField::new(1, "a"), RequiredField::new(2, "b")],
    &[],
);
/// `message Answer { required int64 c = 1; }`
static ANSWER: RequiredFields =
    RequiredFields::new("test.Answer", &[RequiredField::new(1, "c")], &[]);

static STRICT: ServiceDesc = ServiceDesc::new(
    "test.Strict",
    &[
        MethodDesc::new("test.Strict.Reply", MethodOptions::new().cache(60))
            .messages(&PAIR, &ANSWER),
    ],
);

/// Answers each call with the bytes it was built with, and counts the calls.
struct Fixed(Bytes, Arc<AtomicU64>);

impl Service for Fixed {
    fn descriptor(&self) -> &'static ServiceDesc {
        &STRICT
    }

    fn call(
        &self,
        _: usize,
        _: CallContext,
        _: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        let answer = self.0.clone();
        Box::pin(async move { Ok(answer) })
    }
}

fn channel(answer: &'static [u8]) -> (LocalChannel, Arc<AtomicU64>, Server) {
    let calls = Arc::new(AtomicU64::new(0));
    let server = Server::new(ServerConfig::default())
        .with_service(Fixed(Bytes::from_static(answer), calls.clone()))
        .unwrap();
    let channel = LocalChannel::new(server.clone(), Arc::new(SystemTime::now));
    (channel, calls, server)
}

/// Calls `test.Strict.Reply` as generated clients do: encoded, checked, decoded.
async fn typed(channel: &LocalChannel, request: Pair) -> Result<Reply<Pair>, Status> {
    wish_core::call(channel, &STRICT.methods[0], &request, CallOptions::new()).await
}

#[test]
fn a_request_without_a_required_field_never_reaches_the_handler() {
    let (channel, calls, server) = channel(b"\x08\x0c");
    let method = &STRICT.methods[0];
    futures::executor::block_on(async {
        // a = 3 and no b, by hand.
        let err = channel
            .call(method, Bytes::from_static(b"\x08\x03"), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert!(
            err.message()
                .contains("missing required field b of test.Pair"),
            "{err}"
        );
        // prost leaves out a zero of a field without presence: the same.
        let err = typed(&channel, Pair { a: 0, b: 4 }).await.unwrap_err();
        assert!(err.message().contains("field a of"), "{err}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the handler was not called"
        );
        assert_eq!(server.stats().missing_required.load(Ordering::Relaxed), 2);
        assert_eq!(server.stats().handled.load(Ordering::Relaxed), 0);
        // Not a message at all: refused, an error, but nothing is missing.
        let err = channel
            .call(method, Bytes::from_static(b"\x08"), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert_eq!(server.stats().missing_required.load(Ordering::Relaxed), 2);
        assert_eq!(server.stats().errors.load(Ordering::Relaxed), 3);
        // Both fields, in any order, even zero: called.
        let reply = channel
            .call(
                method,
                Bytes::from_static(b"\x10\x00\x08\x03"),
                CallOptions::new(),
            )
            .await
            .unwrap();
        assert_eq!(&reply.payload[..], b"\x08\x0c");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn an_answer_without_a_required_field_fails_at_the_client() {
    // The handler answers field 2, not c.
    let (channel, calls, _server) = channel(b"\x10\x05");
    futures::executor::block_on(async {
        let err = typed(&channel, Pair { a: 1, b: 2 }).await.unwrap_err();
        assert_eq!(err.code(), Code::INTERNAL);
        assert!(
            err.message()
                .contains("missing required field c of test.Answer"),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn the_generator_emits_rules_for_nested_repeated_mapped_and_recursive_messages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.proto"),
        r#"syntax = "proto2";
package t;
message Leaf { required string name = 1; optional int32 n = 2; }
message Node { required int32 v = 1; optional Node next = 2; }
message Free { optional int32 x = 1; optional Free self = 2; }
message Req {
  required int32 id = 1;
  optional Leaf one = 2;
  repeated Leaf many = 3;
  map<string, Leaf> by_name = 4;
  optional Node list = 5;
  optional Free free = 6;
  oneof pick { Leaf a = 7; int32 n = 8; Free f = 9; }
  optional group G = 10 { required int32 x = 1; }
}
service S {
  rpc Call (Req) returns (Leaf);
  rpc Loose (Free) returns (Free);
  rpc Cached (Req) returns (Leaf) { option (cache) = true; }
}
"#,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    wish_core::build::Builder::new()
        .out_dir(out.path())
        .compile(&["t.proto"], &[dir.path()])
        .unwrap();
    let code = std::fs::read_to_string(out.path().join("t.rs")).unwrap();
    // Whatever the formatter did with spaces and trailing commas.
    let flat = |s: &str| {
        s.split_whitespace()
            .collect::<String>()
            .replace(",]", "]")
            .replace(",)", ")")
    };
    let code_flat = flat(&code);
    for item in [
        // Leaf, Node, Req, the map entry and the group, in name order; not Free.
        r#"static S_SERVICE_REQUIRED_0: ::wish_core::RequiredFields = ::wish_core::RequiredFields::new( "t.Leaf", &[::wish_core::RequiredField::new(1, "name"), ], &[], );"#,
        r#"::wish_core::NestedField::new(2, "next", false, &S_SERVICE_REQUIRED_1)"#,
        r#""t.Req", &[::wish_core::RequiredField::new(1, "id"), ], &[::wish_core::NestedField::new(2, "one", false, &S_SERVICE_REQUIRED_0), ::wish_core::NestedField::new(3, "many", true, &S_SERVICE_REQUIRED_0), ::wish_core::NestedField::new(4, "by_name", true, &S_SERVICE_REQUIRED_3), ::wish_core::NestedField::new(5, "list", false, &S_SERVICE_REQUIRED_1), ::wish_core::NestedField::new(7, "a", false, &S_SERVICE_REQUIRED_0).in_oneof(0), ::wish_core::NestedField::new(10, "g", false, &S_SERVICE_REQUIRED_4).group(), ], ).oneofs(&[&[7, 8, 9], ]);"#,
        r#""t.Req.ByNameEntry", &[], &[::wish_core::NestedField::new(2, "value", false, &S_SERVICE_REQUIRED_0).map_value(), ]"#,
        ".messages(&S_SERVICE_REQUIRED_2, &S_SERVICE_REQUIRED_0)",
        ".messages(&::wish_core::RequiredFields::NONE, &::wish_core::RequiredFields::NONE)",
    ] {
        assert!(code_flat.contains(&flat(item)), "missing {item} in\n{code}");
    }
    assert!(
        !code_flat.contains("\"t.Free\""),
        "Free has nothing required"
    );
    // The cache key of a cached method knows its request's oneof members,
    // in Rust and in Python.
    assert_eq!(
        code_flat
            .matches(&flat(".request_oneofs(&[&[7, 8, 9]])"))
            .count(),
        1,
        "{code}"
    );
    let py = tempfile::tempdir().unwrap();
    wish_core::build::PythonPackage::new("t_wish")
        .generate(&["t.proto"], &[dir.path()], py.path())
        .unwrap();
    let init = std::fs::read_to_string(py.path().join("t_wish/__init__.py")).unwrap();
    assert_eq!(
        init.matches("request_oneofs=[(7, 8, 9,)]").count(),
        1,
        "{init}"
    );
}

/// `message Inner { required int32 x = 1; }`, decoded with presence.
#[derive(Clone, PartialEq, prost::Message)]
struct Inner {
    #[prost(int32, optional, tag = "1")]
    x: Option<i32>,
}

/// ```proto
/// message Outer {
///   required int32 id = 1;
///   optional Inner one = 2;
///   repeated Inner many = 3;
///   oneof choice { Inner a = 4; Inner b = 5; int32 n = 6; }
///   optional group G = 7 { required int32 x = 1; }
/// }
/// ```
#[derive(Clone, PartialEq, prost::Message)]
struct Outer {
    #[prost(int32, optional, tag = "1")]
    id: Option<i32>,
    #[prost(message, optional, tag = "2")]
    one: Option<Inner>,
    #[prost(message, repeated, tag = "3")]
    many: Vec<Inner>,
    #[prost(oneof = "Choice", tags = "4, 5, 6")]
    choice: Option<Choice>,
    #[prost(group, optional, tag = "7")]
    g: Option<Inner>,
}

/// `Outer.choice`: the last member sent wins, and replaces the others.
#[derive(Clone, PartialEq, prost::Oneof)]
enum Choice {
    #[prost(message, tag = "4")]
    A(Inner),
    #[prost(message, tag = "5")]
    B(Inner),
    #[prost(int32, tag = "6")]
    N(i32),
}

static INNER: RequiredFields = RequiredFields::new("t.Inner", &[RequiredField::new(1, "x")], &[]);
static OUTER: RequiredFields = RequiredFields::new(
    "t.Outer",
    &[RequiredField::new(1, "id")],
    &[
        NestedField::new(2, "one", false, &INNER),
        NestedField::new(3, "many", true, &INNER),
        NestedField::new(4, "a", false, &INNER).in_oneof(0),
        NestedField::new(5, "b", false, &INNER).in_oneof(0),
        NestedField::new(7, "g", false, &INNER).group(),
    ],
)
.oneofs(&[&[4, 5, 6]]);

fn complete(m: &Outer) -> bool {
    m.id.is_some()
        && m.one.as_ref().is_none_or(|i| i.x.is_some())
        && m.many.iter().all(|i| i.x.is_some())
        && match &m.choice {
            Some(Choice::A(i) | Choice::B(i)) => i.x.is_some(),
            Some(Choice::N(_)) | None => true,
        }
        && m.g.as_ref().is_none_or(|i| i.x.is_some())
}

fn arb_inner() -> impl Strategy<Value = Inner> {
    proptest::option::of(any::<i32>()).prop_map(|x| Inner { x })
}

fn arb_outer() -> impl Strategy<Value = Outer> {
    (
        proptest::option::of(any::<i32>()),
        proptest::option::of(arb_inner()),
        proptest::collection::vec(arb_inner(), 0..4),
        proptest::option::of(prop_oneof![
            arb_inner().prop_map(Choice::A),
            arb_inner().prop_map(Choice::B),
            any::<i32>().prop_map(Choice::N),
        ]),
        proptest::option::of(arb_inner()),
    )
        .prop_map(|(id, one, many, choice, g)| Outer {
            id,
            one,
            many,
            choice,
            g,
        })
}

#[test]
fn a_field_sent_with_the_wire_type_of_the_other_kind_is_malformed_as_for_prost() {
    // one (a message) sent as a group; g (a group) sent length-delimited.
    for bytes in [
        &[0x08, 0x01, 0x13, 0x08, 0x05, 0x14][..],
        &[0x08, 0x01, 0x3a, 0x02, 0x08, 0x05],
    ] {
        assert!(<Outer as prost::Message>::decode(bytes).is_err());
        assert_eq!(OUTER.check(bytes), Err(RequiredError::Malformed));
    }
    // As declared: both fine.
    let bytes = [0x08, 0x01, 0x12, 0x02, 0x08, 0x05, 0x3b, 0x08, 0x05, 0x3c];
    assert!(<Outer as prost::Message>::decode(&bytes[..]).is_ok_and(|m| complete(&m)));
    assert_eq!(OUTER.check(&bytes), Ok(()));
}

#[test]
fn a_oneof_member_replaces_the_one_sent_before() {
    // id = 1, a = {} (x missing), then b = {x: 5}: b replaces a; complete.
    let bytes = [0x08, 0x01, 0x22, 0x00, 0x2a, 0x02, 0x08, 0x05];
    assert!(<Outer as prost::Message>::decode(&bytes[..]).is_ok_and(|m| complete(&m)));
    assert_eq!(OUTER.check(&bytes), Ok(()));
    // a = {x: 5}, then b = {x: 1}, then a = {}: the last a is a new one, without x.
    let bytes = [
        0x08, 0x01, 0x22, 0x02, 0x08, 0x05, 0x2a, 0x02, 0x08, 0x01, 0x22, 0x00,
    ];
    assert!(<Outer as prost::Message>::decode(&bytes[..]).is_ok_and(|m| !complete(&m)));
    assert_eq!(
        OUTER.check(&bytes).map_err(|e| e.to_string()),
        Err("missing required field a.x of t.Outer".to_string())
    );
    // The same with a scalar member between them: n = 1 clears a too.
    let bytes = [0x08, 0x01, 0x22, 0x02, 0x08, 0x05, 0x30, 0x01, 0x22, 0x00];
    assert!(OUTER.check(&bytes).is_err());
    // a sent twice with no other member between: one a, merged.
    let bytes = [0x08, 0x01, 0x22, 0x00, 0x22, 0x02, 0x08, 0x05];
    assert_eq!(OUTER.check(&bytes), Ok(()));
}

proptest! {
    /// Two messages sent one after the other are one, merged: the check
    /// agrees with prost's decoding of the merge.
    #[test]
    fn the_check_agrees_with_prost_on_merged_messages(first in arb_outer(), second in arb_outer()) {
        let mut bytes = prost::Message::encode_to_vec(&first);
        bytes.extend(prost::Message::encode_to_vec(&second));
        let merged = <Outer as prost::Message>::decode(&bytes[..]).unwrap();
        prop_assert_eq!(OUTER.check(&bytes).is_ok(), complete(&merged));
        prop_assert_eq!(OUTER.check(&prost::Message::encode_to_vec(&first)).is_ok(), complete(&first));
    }

    /// Cut at every byte, a message checks as prost decodes it: complete
    /// where the cut leaves a whole message with every required field,
    /// refused where it leaves none or a part of one.
    #[test]
    fn every_cut_checks_as_prost_decodes_it(message in arb_outer()) {
        let bytes = prost::Message::encode_to_vec(&message);
        for cut in 0..=bytes.len() {
            let prefix = &bytes[..cut];
            let decoded = <Outer as prost::Message>::decode(prefix);
            let want = decoded.as_ref().is_ok_and(complete);
            prop_assert_eq!(OUTER.check(prefix).is_ok(), want, "cut at {}", cut);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = OUTER.check(&bytes);
    }
}

/// A map entry that leaves its value out holds an empty value (protobuf's
/// default), which lacks the value type's required fields: refused, as
/// protobuf runtimes refuse it.
#[test]
fn a_map_entry_without_its_value_lacks_the_values_required_fields() {
    static ENTRY: RequiredFields = RequiredFields::new(
        "t.M.ByNameEntry",
        &[],
        &[NestedField::new(2, "value", false, &INNER).map_value()],
    );
    static WITH_MAP: RequiredFields =
        RequiredFields::new("t.M", &[], &[NestedField::new(4, "by_name", true, &ENTRY)]);
    // by_name { key: "k" }, without a value.
    let missing = WITH_MAP.check(&[0x22, 0x03, 0x0a, 0x01, b'k']);
    match missing {
        Err(RequiredError::Missing { field, .. }) => assert_eq!(field, "by_name.value.x"),
        other => panic!("{other:?}"),
    }
    // With a complete value, with an incomplete one, and no entry at all.
    let complete = [0x22, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x08, 0x01];
    assert_eq!(WITH_MAP.check(&complete), Ok(()));
    let empty_value = [0x22, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00];
    assert!(WITH_MAP.check(&empty_value).is_err());
    assert_eq!(WITH_MAP.check(&[]), Ok(()));
}
