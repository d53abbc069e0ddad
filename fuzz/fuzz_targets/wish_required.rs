//! Fuzz wish's check of proto2 required fields on encoded messages: arbitrary
//! bytes never panic it (groups, recursion, many fields), and a message that
//! passes still passes sent twice (protobuf merges the two into one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wish_core::{NestedField, RequiredField, RequiredFields};

static LEAF: RequiredFields = RequiredFields::new("f.Leaf", &[RequiredField::new(1, "x")], &[]);
/// Recursive through field 4, singular and repeated leaves, and required
/// fields with one-byte and longer tags.
static NODE: RequiredFields = RequiredFields::new(
    "f.Node",
    &[RequiredField::new(1, "a"), RequiredField::new(300, "far")],
    &[
        NestedField::new(2, "one", false, &LEAF),
        NestedField::new(3, "many", true, &LEAF),
        NestedField::new(4, "next", false, &NODE),
    ],
);

fuzz_target!(|data: &[u8]| {
    let once = NODE.check(data);
    if once.is_ok() {
        let twice = [data, data].concat();
        assert_eq!(NODE.check(&twice), Ok(()), "merged with itself it fails");
    }
});
