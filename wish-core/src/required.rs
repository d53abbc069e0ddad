//! proto2 `required` fields, checked on the encoded message: prost decodes a missing required scalar as its default, so only the bytes still say whether it was sent.

use crate::error::RequiredError;
use crate::wire::next_field;

/// Messages nested deeper than this are refused (prost's own recursion limit).
pub const MAX_REQUIRED_DEPTH: usize = 100;

/// The proto2 `required` fields of a message type, and the message fields
/// that lead to other messages with required fields: what the code generator
/// emits for each request and response type (see [`MethodDesc::messages`](crate::MethodDesc::messages)).
///
/// The check reads the encoded message once, field by field, without
/// decoding it: a few comparisons per field, and nothing at all for a message
/// type without required fields ([`RequiredFields::NONE`]). Protobuf's rules
/// apply: a singular message field sent several times is one message, merged,
/// so its required fields may come in any of its occurrences; each element of
/// a repeated message field (and each value of a map) is checked on its own,
/// and a map entry without its value holds an empty one, which is checked too;
/// a member of a `oneof` replaces whatever another member of it sent before
/// (the last member wins), so only the occurrences after that count.
///
/// ```
/// use wish_core::{RequiredField, RequiredFields};
///
/// // message CalcRequest { required int32 a = 1; required int32 b = 2; }
/// static CALC_REQUEST: RequiredFields = RequiredFields::new(
///     "calc.CalcRequest",
///     &[RequiredField::new(1, "a"), RequiredField::new(2, "b")],
///     &[],
/// );
/// assert!(CALC_REQUEST.check(&[0x08, 0x03, 0x10, 0x04]).is_ok());
/// let err = CALC_REQUEST.check(&[0x08, 0x03]).unwrap_err();
/// assert_eq!(err.to_string(), "missing required field b of calc.CalcRequest");
/// ```
#[derive(Debug)]
pub struct RequiredFields {
    /// The message's full name, `calc.CalcRequest`.
    pub message: &'static str,
    /// Its required fields.
    pub fields: &'static [RequiredField],
    /// Its message fields whose type has required fields, itself or deeper.
    pub nested: &'static [NestedField],
    /// The field numbers of each of its `oneof`s that has a member in
    /// `nested` (see [`NestedField::in_oneof`]), every member listed.
    pub oneofs: &'static [&'static [u32]],
}

/// A required field: its number and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredField {
    /// Its field number.
    pub number: u32,
    /// Its name in the .proto.
    pub name: &'static str,
}

/// A message field (or group, or map of message values) whose type has
/// required fields.
#[derive(Debug)]
pub struct NestedField {
    /// Its field number.
    pub number: u32,
    /// Its name in the .proto.
    pub name: &'static str,
    /// Repeated (or a map): each occurrence is a message of its own, not a part of one.
    pub repeated: bool,
    /// The rules of its type (of a map's entry type, for a map).
    pub rules: &'static RequiredFields,
    /// The index in [`RequiredFields::oneofs`] of the `oneof` it is a member of.
    pub oneof: Option<usize>,
    /// A proto2 group: sent as wire type 3 (start group), where a message
    /// field is sent as wire type 2 (length-delimited). Either is refused
    /// where the other is declared, as prost refuses it.
    pub group: bool,
    /// The value of a map entry: an entry that leaves it out holds an empty
    /// message (protobuf's default), which must have its required fields too.
    pub map_value: bool,
}

impl RequiredFields {
    /// A message type without required fields: the check costs nothing.
    pub const NONE: RequiredFields = RequiredFields::new("", &[], &[]);

    /// The rules of message type `message`.
    pub const fn new(
        message: &'static str,
        fields: &'static [RequiredField],
        nested: &'static [NestedField],
    ) -> RequiredFields {
        RequiredFields {
            message,
            fields,
            nested,
            oneofs: &[],
        }
    }

    /// The same rules, with the members of its `oneof`s: sending one clears
    /// what the others sent before.
    pub const fn oneofs(mut self, oneofs: &'static [&'static [u32]]) -> RequiredFields {
        self.oneofs = oneofs;
        self
    }

    /// Whether the check has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.nested.is_empty()
    }

    /// Checks that the encoded message `encoded` holds every required field,
    /// of its own and of the messages nested in it.
    ///
    /// # Errors
    /// [`RequiredError::Missing`] naming the first missing field (as a path
    /// from this message, `inner.b`); [`RequiredError::Malformed`] if the
    /// bytes are not a message; [`RequiredError::TooDeep`] past
    /// [`MAX_REQUIRED_DEPTH`] levels of nesting.
    pub fn check(&self, encoded: &[u8]) -> Result<(), RequiredError> {
        if self.is_empty() {
            return Ok(());
        }
        self.check_parts(&[encoded], 1)
    }

    /// Checks one message sent in `parts`, which protobuf merges into one.
    fn check_parts(&self, parts: &[&[u8]], depth: usize) -> Result<(), RequiredError> {
        if depth > MAX_REQUIRED_DEPTH {
            return Err(RequiredError::TooDeep(MAX_REQUIRED_DEPTH));
        }
        // Up to 64 required fields are marked in a word; the rest in a vector.
        let mut seen = 0u64;
        let mut seen_more = vec![false; self.fields.len().saturating_sub(64)];
        // The occurrences of each singular nested field, merged once all are
        // found; allocated at the first one (a repeated element or a message
        // without singular nested fields needs none).
        let mut merged: Vec<Vec<&[u8]>> = Vec::new();
        for part in parts {
            let mut at = 0;
            while at < part.len() {
                let field = next_field(part, at).ok_or(RequiredError::Malformed)?;
                at = field.end;
                if let Some(k) = self.oneofs.iter().position(|o| o.contains(&field.number)) {
                    // The last member wins: the others' occurrences are gone.
                    for (nested, parts) in self.nested.iter().zip(&mut merged) {
                        if nested.oneof == Some(k) && nested.number != field.number {
                            parts.clear();
                        }
                    }
                }
                if let Some(i) = self.fields.iter().position(|r| r.number == field.number) {
                    if i < 64 {
                        seen |= 1 << i;
                    } else {
                        seen_more[i - 64] = true;
                    }
                }
                if let Some(j) = self.nested.iter().position(|n| n.number == field.number) {
                    let nested = &self.nested[j];
                    if field.wire != if nested.group { 3 } else { 2 } {
                        return Err(RequiredError::Malformed);
                    }
                    let value = &part[field.value..field.value_end];
                    if nested.repeated {
                        nested
                            .rules
                            .check_parts(&[value], depth + 1)
                            .map_err(|e| e.within(self.message, nested.name))?;
                    } else {
                        if merged.is_empty() {
                            merged.resize_with(self.nested.len(), Vec::new);
                        }
                        merged[j].push(value);
                    }
                }
            }
        }
        for (i, field) in self.fields.iter().enumerate() {
            let present = if i < 64 {
                seen & (1 << i) != 0
            } else {
                seen_more[i - 64]
            };
            if !present {
                return Err(RequiredError::Missing {
                    message: self.message,
                    field: field.name.to_string(),
                });
            }
        }
        for (j, nested) in self.nested.iter().enumerate() {
            let parts = merged.get(j).map_or(&[][..], Vec::as_slice);
            // A map entry without its value holds an empty one.
            let parts = match parts {
                [] if nested.map_value => &[&[][..]][..],
                parts => parts,
            };
            if !parts.is_empty() {
                nested
                    .rules
                    .check_parts(parts, depth + 1)
                    .map_err(|e| e.within(self.message, nested.name))?;
            }
        }
        Ok(())
    }
}

impl RequiredField {
    /// Field `number`, called `name`.
    pub const fn new(number: u32, name: &'static str) -> RequiredField {
        RequiredField { number, name }
    }
}

impl NestedField {
    /// Message field `number`, called `name`, of a type with these rules.
    pub const fn new(
        number: u32,
        name: &'static str,
        repeated: bool,
        rules: &'static RequiredFields,
    ) -> NestedField {
        NestedField {
            number,
            name,
            repeated,
            rules,
            oneof: None,
            group: false,
            map_value: false,
        }
    }

    /// The same field, the value of a map entry (see [`NestedField::map_value`]).
    pub const fn map_value(mut self) -> NestedField {
        self.map_value = true;
        self
    }

    /// The same field, a group.
    pub const fn group(mut self) -> NestedField {
        self.group = true;
        self
    }

    /// The same field, a member of `oneof` `k` of its message (an index in
    /// [`RequiredFields::oneofs`]).
    pub const fn in_oneof(mut self, k: usize) -> NestedField {
        self.oneof = Some(k);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static INNER: RequiredFields =
        RequiredFields::new("t.Inner", &[RequiredField::new(1, "x")], &[]);
    static OUTER: RequiredFields = RequiredFields::new(
        "t.Outer",
        &[RequiredField::new(1, "id")],
        &[
            NestedField::new(2, "one", false, &INNER),
            NestedField::new(3, "many", true, &INNER),
            NestedField::new(4, "g", false, &INNER).group(),
        ],
    );
    /// message Node { required int32 v = 1; optional Node next = 2; }
    static NODE: RequiredFields = RequiredFields::new(
        "t.Node",
        &[RequiredField::new(1, "v")],
        &[NestedField::new(2, "next", false, &NODE)],
    );

    fn missing(rules: &RequiredFields, bytes: &[u8]) -> Option<String> {
        match rules.check(bytes) {
            Ok(()) => None,
            Err(RequiredError::Missing { message, field }) => Some(format!("{message}:{field}")),
            Err(other) => Some(other.to_string()),
        }
    }

    #[test]
    fn nested_messages_are_checked_with_a_path() {
        assert_eq!(missing(&OUTER, &[0x08, 0x01]), None);
        // one = {} : x is missing inside it.
        assert_eq!(
            missing(&OUTER, &[0x08, 0x01, 0x12, 0x00]).as_deref(),
            Some("t.Outer:one.x")
        );
        assert_eq!(missing(&OUTER, &[0x08, 0x01, 0x12, 0x02, 0x08, 0x05]), None);
        // many = [{x: 5}, {}]: the second element lacks x.
        assert_eq!(
            missing(&OUTER, &[0x08, 0x01, 0x1a, 0x02, 0x08, 0x05, 0x1a, 0x00]).as_deref(),
            Some("t.Outer:many.x")
        );
        // Without id, whatever else is there.
        assert_eq!(
            missing(&OUTER, &[0x12, 0x02, 0x08, 0x05]).as_deref(),
            Some("t.Outer:id")
        );
    }

    #[test]
    fn a_singular_message_sent_twice_is_merged() {
        // one = {} then one = {x: 5}: merged, x is there.
        assert_eq!(
            missing(&OUTER, &[0x12, 0x00, 0x08, 0x01, 0x12, 0x02, 0x08, 0x05]),
            None
        );
    }

    #[test]
    fn groups_count_as_messages() {
        // g: start tag 4/3, x = 5, end tag 4/4.
        assert_eq!(missing(&OUTER, &[0x08, 0x01, 0x23, 0x08, 0x05, 0x24]), None);
        assert_eq!(
            missing(&OUTER, &[0x08, 0x01, 0x23, 0x24]).as_deref(),
            Some("t.Outer:g.x")
        );
        // An end tag of another number does not close the group.
        assert_eq!(
            missing(&OUTER, &[0x08, 0x01, 0x23, 0x2c]).as_deref(),
            Some("message does not decode")
        );
    }

    #[test]
    fn a_field_sent_with_the_other_wire_type_is_malformed() {
        // one (a message) sent as a group; g (a group) sent length-delimited.
        for bytes in [
            &[0x08, 0x01, 0x13, 0x08, 0x05, 0x14][..],
            &[0x08, 0x01, 0x22, 0x02, 0x08, 0x05],
        ] {
            assert_eq!(OUTER.check(bytes), Err(RequiredError::Malformed));
        }
    }

    /// A `Node` with `v = 1` and `next` = `inner`.
    fn node_around(inner: &[u8]) -> Vec<u8> {
        let mut out = vec![0x08, 0x01, 0x12];
        let mut len = inner.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn recursive_types_stop_at_the_depth_bound() {
        let mut msg = vec![0x08, 0x01];
        for _ in 1..MAX_REQUIRED_DEPTH {
            msg = node_around(&msg);
        }
        assert_eq!(NODE.check(&msg), Ok(()));
        assert_eq!(
            NODE.check(&node_around(&msg)),
            Err(RequiredError::TooDeep(MAX_REQUIRED_DEPTH))
        );
    }

    #[test]
    fn many_required_fields_are_all_checked() {
        static FIELDS: [RequiredField; 70] = {
            let mut out = [RequiredField::new(1, "f"); 70];
            let mut i = 0;
            while i < 70 {
                out[i].number = i as u32 + 1;
                i += 1;
            }
            out
        };
        static WIDE: RequiredFields = RequiredFields::new("t.Wide", &FIELDS, &[]);
        let all: Vec<u8> = (1..=70u32)
            .flat_map(|n| {
                let tag = n << 3;
                if tag < 0x80 {
                    vec![tag as u8, 0]
                } else {
                    vec![(tag as u8) | 0x80, (tag >> 7) as u8, 0]
                }
            })
            .collect();
        assert_eq!(WIDE.check(&all), Ok(()));
        // Without field 70 (in the vector) and without field 3 (in the word).
        let no_70 = &all[..all.len() - 3];
        assert!(WIDE.check(no_70).is_err());
        let no_3: Vec<u8> = [&all[..4], &all[6..]].concat();
        assert!(WIDE.check(&no_3).is_err());
    }

    #[test]
    fn wrong_wire_type_for_a_nested_field_is_malformed() {
        assert_eq!(
            OUTER.check(&[0x08, 0x01, 0x10, 0x01]),
            Err(RequiredError::Malformed)
        );
    }
}
