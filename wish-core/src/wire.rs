//! Just enough of the protobuf wire format to key a cache: field order and entity values, without the message's type.

use bytes::{BufMut, Bytes, BytesMut};

use crate::options::{EntityField, FieldKind};

/// One field of an encoded message: its number, wire type and the bytes of its value.
#[derive(Debug, Clone, Copy)]
struct Field {
    number: u32,
    wire: u8,
    /// Where the field (tag included) starts and ends in the message.
    start: usize,
    end: usize,
    /// Where its value starts (after the tag and, for wire type 2, the length).
    value: usize,
}

/// Calls `each` with every top-level field of a message, in order; `false`
/// if it is not well-formed (groups, which no proto3 message and few proto2
/// ones use, count as not well-formed).
fn scan(msg: &[u8], mut each: impl FnMut(Field)) -> bool {
    let mut at = 0;
    while at < msg.len() {
        match next_field(msg, at) {
            Some(field) => {
                at = field.end;
                each(field);
            }
            None => return false,
        }
    }
    true
}

/// The field that starts at `start`.
fn next_field(msg: &[u8], start: usize) -> Option<Field> {
    let mut at = start;
    let tag = varint(msg, &mut at)?;
    let number = u32::try_from(tag >> 3).ok().filter(|n| *n != 0)?;
    let wire = (tag & 7) as u8;
    let (value, end) = match wire {
        0 => {
            let value = at;
            varint(msg, &mut at)?;
            (value, at)
        }
        1 => (at, at.checked_add(8)?),
        2 => {
            let len = usize::try_from(varint(msg, &mut at)?).ok()?;
            (at, at.checked_add(len)?)
        }
        5 => (at, at.checked_add(4)?),
        _ => return None,
    };
    if end > msg.len() {
        return None;
    }
    Some(Field {
        number,
        wire,
        start,
        end,
        value,
    })
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The message with its top-level fields in field-number order (a stable
/// sort, so repeated fields keep their order). Encoders that write fields in
/// number order, as prost and protoc's do, produce this form already and get
/// their bytes back unchanged, without a copy or an allocation. `None` if
/// the message is not well-formed.
pub(crate) fn canonical(msg: &Bytes) -> Option<Bytes> {
    let (mut last, mut ordered) = (0, true);
    let well_formed = scan(msg, |f| {
        ordered &= f.number >= last;
        last = f.number;
    });
    if !well_formed {
        return None;
    }
    if ordered {
        return Some(msg.clone());
    }
    let mut fields = Vec::new();
    scan(msg, |f| fields.push(f));
    fields.sort_by_key(|f| f.number);
    let mut out = BytesMut::with_capacity(msg.len());
    for f in &fields {
        out.put_slice(&msg[f.start..f.end]);
    }
    Some(out.freeze())
}

/// The entities a request names: `field=value` for each listed field, with
/// the field's default when the message leaves it out. `None` if the message
/// is not well-formed or a listed field has the wrong wire type.
pub(crate) fn entities(msg: &[u8], listed: &[EntityField]) -> Option<Vec<String>> {
    // The last occurrence wins, as protobuf parsers do for singular fields.
    let mut found: Vec<Option<Field>> = vec![None; listed.len()];
    let well_formed = scan(msg, |f| {
        if let Some(i) = listed.iter().position(|want| want.number == f.number) {
            found[i] = Some(f);
        }
    });
    if !well_formed {
        return None;
    }
    let mut out = Vec::with_capacity(listed.len());
    for (want, field) in listed.iter().zip(found) {
        let mut entity = String::with_capacity(want.name.len() + 12);
        entity.push_str(want.name);
        entity.push('=');
        match field {
            None => entity.push_str(want.default),
            Some(f) => render(msg, &f, want.kind, &mut entity)?,
        }
        out.push(entity);
    }
    Some(out)
}

/// Appends `bytes` in lowercase hex: how `bytes` fields are rendered in entities.
pub(crate) fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

fn render(msg: &[u8], f: &Field, kind: FieldKind, out: &mut String) -> Option<()> {
    use FieldKind::*;
    use std::fmt::Write as _;
    let bytes = &msg[f.value..f.end];
    let expect = match kind {
        Int32 | Int64 | UInt32 | UInt64 | SInt32 | SInt64 | Bool | Enum => 0,
        Fixed64 | SFixed64 | Double => 1,
        String | Bytes => 2,
        Fixed32 | SFixed32 | Float => 5,
    };
    if f.wire != expect {
        return None;
    }
    let v = if f.wire == 0 {
        let mut at = f.value;
        varint(msg, &mut at)?
    } else {
        0
    };
    let le4 = || <[u8; 4]>::try_from(bytes).ok();
    let le8 = || <[u8; 8]>::try_from(bytes).ok();
    let written = match kind {
        Int32 | Enum => write!(out, "{}", v as i32),
        Int64 => write!(out, "{}", v as i64),
        UInt32 => write!(out, "{}", v as u32),
        UInt64 => write!(out, "{v}"),
        SInt32 => {
            let v = v as u32;
            write!(out, "{}", ((v >> 1) as i32) ^ -((v & 1) as i32))
        }
        SInt64 => write!(out, "{}", ((v >> 1) as i64) ^ -((v & 1) as i64)),
        Bool => write!(out, "{}", v != 0),
        Fixed32 => write!(out, "{}", u32::from_le_bytes(le4()?)),
        SFixed32 => write!(out, "{}", i32::from_le_bytes(le4()?)),
        Float => write!(out, "{}", f32::from_le_bytes(le4()?)),
        Fixed64 => write!(out, "{}", u64::from_le_bytes(le8()?)),
        SFixed64 => write!(out, "{}", i64::from_le_bytes(le8()?)),
        Double => write!(out, "{}", f64::from_le_bytes(le8()?)),
        String => {
            out.push_str(std::str::from_utf8(bytes).ok()?);
            Ok(())
        }
        Bytes => {
            hex(bytes, out);
            Ok(())
        }
    };
    written.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn field(name: &'static str, number: u32, kind: FieldKind) -> EntityField {
        EntityField {
            name,
            number,
            kind,
            default: "0",
        }
    }

    #[test]
    fn canonical_keeps_ordered_bytes_and_sorts_others() {
        let ordered = Bytes::from_static(&[0x08, 0x01, 0x10, 0x02]);
        assert_eq!(canonical(&ordered).unwrap(), ordered);
        let reversed = Bytes::from_static(&[0x10, 0x02, 0x08, 0x01]);
        assert_eq!(canonical(&reversed).unwrap(), ordered);
        // Repeated field 1 keeps its order around field 2.
        let mixed = Bytes::from_static(&[0x10, 0x02, 0x08, 0x05, 0x08, 0x03]);
        assert_eq!(
            &canonical(&mixed).unwrap()[..],
            &[0x08, 0x05, 0x08, 0x03, 0x10, 0x02]
        );
        assert!(canonical(&Bytes::from_static(&[0x08])).is_none());
        assert!(canonical(&Bytes::from_static(&[0x0b])).is_none(), "groups");
        assert!(canonical(&Bytes::from_static(&[0x12, 0x05, 0x01])).is_none());
    }

    #[test]
    fn entities_render_each_kind() {
        // a = -1 as int32 (ten-byte varint), b absent.
        let mut msg = vec![0x08];
        msg.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let listed = [
            field("a", 1, FieldKind::Int32),
            field("b", 2, FieldKind::Int32),
        ];
        assert_eq!(entities(&msg, &listed).unwrap(), ["a=-1", "b=0"]);
        // sint32 -3 is zigzag 5; a string; a bool; fixed32.
        let msg = [
            0x08, 0x05, 0x12, 0x02, b'h', b'i', 0x18, 0x01, 0x25, 1, 0, 0, 0,
        ];
        let listed = [
            field("s", 1, FieldKind::SInt32),
            field("t", 2, FieldKind::String),
            field("u", 3, FieldKind::Bool),
            field("f", 4, FieldKind::Fixed32),
        ];
        assert_eq!(
            entities(&msg, &listed).unwrap(),
            ["s=-3", "t=hi", "u=true", "f=1"]
        );
        // Last occurrence wins; a wrong wire type is not a key.
        assert_eq!(
            entities(&[0x08, 0x01, 0x08, 0x07], &listed[..1]).unwrap(),
            ["s=-4"]
        );
        assert!(entities(&[0x0d, 0, 0, 0, 0], &listed[..1]).is_none());
    }
}
