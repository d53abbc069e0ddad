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

/// Splits a message into its top-level fields; `None` if it is not well-formed
/// (groups, which no proto3 message and few proto2 ones use, count as not well-formed).
fn fields(msg: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::with_capacity(4);
    let mut at = 0;
    while at < msg.len() {
        let start = at;
        let tag = varint(msg, &mut at)?;
        let number = u32::try_from(tag >> 3).ok().filter(|n| *n != 0)?;
        let wire = (tag & 7) as u8;
        let value;
        match wire {
            0 => {
                value = at;
                varint(msg, &mut at)?;
            }
            1 => {
                value = at;
                at = at.checked_add(8).filter(|e| *e <= msg.len())?;
            }
            2 => {
                let len = usize::try_from(varint(msg, &mut at)?).ok()?;
                value = at;
                at = at.checked_add(len).filter(|e| *e <= msg.len())?;
            }
            5 => {
                value = at;
                at = at.checked_add(4).filter(|e| *e <= msg.len())?;
            }
            _ => return None,
        }
        out.push(Field {
            number,
            wire,
            start,
            end: at,
            value,
        });
    }
    Some(out)
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
/// their bytes back unchanged, without a copy. `None` if the message is not
/// well-formed.
pub(crate) fn canonical(msg: &Bytes) -> Option<Bytes> {
    let mut fields = fields(msg)?;
    if fields.windows(2).all(|w| w[0].number <= w[1].number) {
        return Some(msg.clone());
    }
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
    let fields = fields(msg)?;
    let mut out = Vec::with_capacity(listed.len());
    for want in listed {
        // The last occurrence wins, as protobuf parsers do for singular fields.
        let value = match fields.iter().rev().find(|f| f.number == want.number) {
            None => want.default.to_string(),
            Some(f) => render(msg, f, want.kind)?,
        };
        out.push(format!("{}={}", want.name, value));
    }
    Some(out)
}

fn render(msg: &[u8], f: &Field, kind: FieldKind) -> Option<String> {
    use FieldKind::*;
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
    Some(match kind {
        Int32 | Enum => (v as i32).to_string(),
        Int64 => (v as i64).to_string(),
        UInt32 => (v as u32).to_string(),
        UInt64 => v.to_string(),
        SInt32 => {
            let v = v as u32;
            (((v >> 1) as i32) ^ -((v & 1) as i32)).to_string()
        }
        SInt64 => (((v >> 1) as i64) ^ -((v & 1) as i64)).to_string(),
        Bool => (v != 0).to_string(),
        Fixed32 => u32::from_le_bytes(le4()?).to_string(),
        SFixed32 => i32::from_le_bytes(le4()?).to_string(),
        Float => f32::from_le_bytes(le4()?).to_string(),
        Fixed64 => u64::from_le_bytes(le8()?).to_string(),
        SFixed64 => i64::from_le_bytes(le8()?).to_string(),
        Double => f64::from_le_bytes(le8()?).to_string(),
        String => std::str::from_utf8(bytes).ok()?.to_string(),
        Bytes => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    })
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
