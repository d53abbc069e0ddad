//! Just enough of the protobuf wire format to key a cache: field order and entity values, without the message's type.

use bytes::{BufMut, Bytes, BytesMut};

use crate::options::{EntityField, FieldKind};

/// One field of an encoded message: its number, wire type and the bytes of its value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) number: u32,
    pub(crate) wire: u8,
    /// Where the field (tag included) starts and ends in the message.
    start: usize,
    pub(crate) end: usize,
    /// Where its value starts (after the tag and, for wire type 2, the length).
    pub(crate) value: usize,
    /// Where its value ends: `end`, except for a group, whose end tag follows.
    pub(crate) value_end: usize,
}

/// Groups nested deeper than this in one field do not scan (prost's own
/// recursion limit is 100).
const MAX_GROUP_DEPTH: usize = 100;

/// Calls `each` with every top-level field of a message, in order; `false`
/// if it is not well-formed (groups, which no proto3 message and few proto2
/// ones use, count as not well-formed for a cache key).
fn scan(msg: &[u8], mut each: impl FnMut(Field)) -> bool {
    let mut at = 0;
    while at < msg.len() {
        match next_field(msg, at) {
            Some(field) if field.wire != 3 => {
                at = field.end;
                each(field);
            }
            _ => return false,
        }
    }
    true
}

/// The field that starts at `start`; `None` if the bytes there are not one.
/// A group (wire type 3) runs to its matching end tag, which must carry its
/// number; a lone end tag (wire type 4) is not a field.
pub(crate) fn next_field(msg: &[u8], start: usize) -> Option<Field> {
    let mut at = start;
    let (number, wire) = tag(msg, &mut at)?;
    if wire == 3 {
        let value = at;
        let mut depth = 1;
        loop {
            let inner = at;
            let (n, w) = tag(msg, &mut at)?;
            match w {
                3 if depth < MAX_GROUP_DEPTH => depth += 1,
                4 => {
                    depth -= 1;
                    if depth == 0 {
                        return (n == number).then_some(Field {
                            number,
                            wire,
                            start,
                            end: at,
                            value,
                            value_end: inner,
                        });
                    }
                }
                0 | 1 | 2 | 5 => at = value_end(msg, at, w)?.1,
                _ => return None,
            }
        }
    }
    let (value, end) = value_end(msg, at, wire)?;
    Some(Field {
        number,
        wire,
        start,
        end,
        value,
        value_end: end,
    })
}

/// A field's number and wire type, read from the tag at `at`.
fn tag(msg: &[u8], at: &mut usize) -> Option<(u32, u8)> {
    let tag = varint(msg, at)?;
    let number = u32::try_from(tag >> 3).ok().filter(|n| *n != 0)?;
    Some((number, (tag & 7) as u8))
}

/// Where the value of a field of wire type `wire` (not a group) whose tag
/// ends at `at` starts and ends.
fn value_end(msg: &[u8], mut at: usize, wire: u8) -> Option<(usize, usize)> {
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
    (end <= msg.len()).then_some((value, end))
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    // One byte: tags of the first fifteen fields, small numbers, short lengths.
    let first = *buf.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
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

/// A message's canonical form, as [`key`] finds it: its top-level fields in
/// field-number order (a stable sort, so repeated fields keep their order).
/// Encoders that write fields in number order, as prost and protoc's do,
/// produce this form already and get their bytes back unchanged.
pub(crate) enum Canonical {
    /// The message is canonical already: its own bytes, without a copy.
    Same,
    /// Its fields, sorted into a new buffer.
    Sorted(Bytes),
}

/// What a cache lookup needs of a request, in one pass over it: its
/// canonical form (see [`Canonical`]), returned, and the entities it names,
/// rendered into `entities`: `field=value` for each of `listed`, with the
/// field's default when the message leaves it out. `None` if the message is
/// not well-formed, a listed field has the wrong wire type, or it sends two
/// members of one of `oneofs` (the field numbers of each `oneof`): the last
/// one sent wins, which the sorted form would no longer say.
pub(crate) fn key(
    msg: &[u8],
    listed: &[EntityField],
    oneofs: &[&[u32]],
    entities: &mut Entities,
) -> Option<Canonical> {
    // The last occurrence wins, as protobuf parsers do for singular fields.
    let mut inline = [None; INLINE_ENTITIES];
    let mut heap = Vec::new();
    let found: &mut [Option<Field>] = match inline.get_mut(..listed.len()) {
        Some(found) => found,
        None => {
            heap.resize(listed.len(), None);
            &mut heap
        }
    };
    let (mut last, mut ordered) = (0, true);
    // The member of each oneof seen first (0: none yet; field numbers start
    // at 1), inline for the first few oneofs, and whether another member of
    // one came too.
    let mut first_inline = [0u32; INLINE_ONEOFS];
    let mut first_more = Vec::new();
    let mut two_members = false;
    let well_formed = scan(msg, |f| {
        ordered &= f.number >= last;
        last = f.number;
        if let Some(i) = listed.iter().position(|want| want.number == f.number) {
            found[i] = Some(f);
        }
        if let Some(k) = oneofs.iter().position(|o| o.contains(&f.number)) {
            let first = match first_inline.get_mut(k) {
                Some(first) => first,
                None => {
                    first_more.resize(oneofs.len() - INLINE_ONEOFS, 0u32);
                    &mut first_more[k - INLINE_ONEOFS]
                }
            };
            if *first == 0 {
                *first = f.number;
            } else {
                two_members |= *first != f.number;
            }
        }
    });
    if !well_formed || two_members {
        return None;
    }
    // Reordering keeps fields of one number in order: the last occurrence is
    // the same field in `msg` as in its canonical form.
    for (want, field) in listed.iter().zip(found.iter()) {
        entities.push(want.name.as_bytes());
        entities.push(b"=");
        match field {
            None => entities.push(want.default.as_bytes()),
            Some(f) => render(msg, f, want.kind, entities)?,
        }
        entities.end_entity();
    }
    if ordered {
        return Some(Canonical::Same);
    }
    let mut fields = Vec::new();
    scan(msg, |f| fields.push(f));
    fields.sort_by_key(|f| f.number);
    let mut out = BytesMut::with_capacity(msg.len());
    for f in &fields {
        out.put_slice(&msg[f.start..f.end]);
    }
    Some(Canonical::Sorted(out.freeze()))
}

/// Oneofs a request's key tracks without an allocation; more take one.
const INLINE_ONEOFS: usize = 4;
/// Entities a request may name without an allocation; more take one.
const INLINE_ENTITIES: usize = 4;
/// Bytes of entities rendered without an allocation; more take one.
const INLINE_TEXT: usize = 64;
const _: () = assert!(INLINE_TEXT <= u8::MAX as usize, "inline offsets are bytes");

/// The entities a request names (see [`key`]), rendered into one buffer.
///
/// Up to [`INLINE_ENTITIES`] entities of [`INLINE_TEXT`] bytes in all take
/// no allocation: every cache hit of a method keyed by a few numbers. It is
/// kept small, as it lives in the future of every cache lookup. Only whole
/// `&str`s and ASCII are pushed, so its text is UTF-8.
pub(crate) struct Entities {
    /// The text of the entities, while it fits.
    inline: [u8; INLINE_TEXT],
    /// Where each entity ends in `inline`, while they fit: offsets in
    /// `inline` fit a byte.
    ends: [u8; INLINE_ENTITIES],
    len: u8,
    count: u8,
    /// Everything, once the text or the count outgrew the inline space.
    spill: Option<Box<Spill>>,
}

/// The text and ends of [`Entities`] that did not fit inline.
struct Spill {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl Entities {
    /// None yet.
    pub(crate) fn new() -> Entities {
        Entities {
            inline: [0; INLINE_TEXT],
            len: 0,
            ends: [0; INLINE_ENTITIES],
            count: 0,
            spill: None,
        }
    }

    /// Appends bytes: all of a `&str`, or ASCII.
    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        let len = usize::from(self.len);
        let end = len + bytes.len();
        match self.inline.get_mut(len..end) {
            Some(room) if self.spill.is_none() => {
                room.copy_from_slice(bytes);
                // At most INLINE_TEXT.
                self.len = end as u8;
            }
            _ => self.spilled().text.extend_from_slice(bytes),
        }
    }

    /// Ends the entity being rendered.
    fn end_entity(&mut self) {
        match self.ends.get_mut(usize::from(self.count)) {
            Some(slot) if self.spill.is_none() => {
                *slot = self.len;
                self.count += 1;
            }
            _ => {
                let spill = self.spilled();
                spill.ends.push(spill.text.len());
            }
        }
    }

    /// The spilled text and ends, moved to the heap on first use.
    #[cold]
    #[inline(never)]
    fn spilled(&mut self) -> &mut Spill {
        // Once spilled, `len` and `count` stay as they were: what was inline.
        let inline = &self.inline[..usize::from(self.len)];
        let ends = &self.ends[..usize::from(self.count)];
        self.spill.get_or_insert_with(|| {
            let mut text = Vec::with_capacity(4 * INLINE_TEXT);
            text.extend_from_slice(inline);
            let mut all = Vec::with_capacity(4 * INLINE_ENTITIES);
            all.extend(ends.iter().map(|&end| usize::from(end)));
            Box::new(Spill { text, ends: all })
        })
    }

    /// Whether the request names none.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0 && self.spill.is_none()
    }

    /// Calls `f` with the entities, as `TimestampStore::last_modified` takes them.
    pub(crate) fn with_names<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
        // Whole `&str`s and ASCII make valid UTF-8: never the default.
        let utf8 = |bytes| std::str::from_utf8(bytes).unwrap_or_default();
        let Some(spill) = &self.spill else {
            let text = utf8(&self.inline[..usize::from(self.len)]);
            let mut names = [""; INLINE_ENTITIES];
            let mut start = 0;
            for (slot, &end) in names.iter_mut().zip(&self.ends) {
                *slot = text.get(start..usize::from(end)).unwrap_or_default();
                start = usize::from(end);
            }
            return f(&names[..usize::from(self.count)]);
        };
        let text = utf8(&spill.text);
        let mut names = Vec::with_capacity(spill.ends.len());
        let mut start = 0;
        for &end in &spill.ends {
            names.push(text.get(start..end).unwrap_or_default());
            start = end;
        }
        f(&names)
    }
}

impl std::fmt::Write for Entities {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Appends `bytes` in lowercase hex: how `bytes` fields are rendered in entities.
pub(crate) fn hex(bytes: &[u8], out: &mut impl std::fmt::Write) -> std::fmt::Result {
    const DIGITS: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
    ];
    for b in bytes {
        out.write_str(DIGITS[usize::from(b >> 4)])?;
        out.write_str(DIGITS[usize::from(b & 15)])?;
    }
    Ok(())
}

/// Appends `value` in decimal, after a minus sign if `negative`: the
/// integers of entities, without the formatting machinery of `write!`.
fn decimal(negative: bool, mut value: u64, out: &mut Entities) -> Option<()> {
    let mut digits = [0u8; 21];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    out.push(&digits[at..]);
    Some(())
}

fn signed(v: i64, out: &mut Entities) -> Option<()> {
    decimal(v < 0, v.unsigned_abs(), out)
}

fn render(msg: &[u8], f: &Field, kind: FieldKind, out: &mut Entities) -> Option<()> {
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
    match kind {
        Int32 | Enum => signed(i64::from(v as i32), out),
        Int64 => signed(v as i64, out),
        UInt32 => decimal(false, u64::from(v as u32), out),
        UInt64 => decimal(false, v, out),
        SInt32 => {
            let v = v as u32;
            signed(i64::from(((v >> 1) as i32) ^ -((v & 1) as i32)), out)
        }
        SInt64 => signed(((v >> 1) as i64) ^ -((v & 1) as i64), out),
        Bool => {
            out.push(if v != 0 { b"true" } else { b"false" });
            Some(())
        }
        Fixed32 => decimal(false, u64::from(u32::from_le_bytes(le4()?)), out),
        SFixed32 => signed(i64::from(i32::from_le_bytes(le4()?)), out),
        Float => write!(out, "{}", f32::from_le_bytes(le4()?)).ok(),
        Fixed64 => decimal(false, u64::from_le_bytes(le8()?), out),
        SFixed64 => signed(i64::from_le_bytes(le8()?), out),
        Double => write!(out, "{}", f64::from_le_bytes(le8()?)).ok(),
        String => {
            out.push(std::str::from_utf8(bytes).ok()?.as_bytes());
            Some(())
        }
        Bytes => hex(bytes, out).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form [`key`] finds, as bytes.
    fn canonical(msg: &Bytes) -> Option<Bytes> {
        match key(msg, &[], &[], &mut Entities::new())? {
            Canonical::Same => Some(msg.clone()),
            Canonical::Sorted(sorted) => Some(sorted),
        }
    }

    const fn field(name: &'static str, number: u32, kind: FieldKind) -> EntityField {
        EntityField {
            name,
            number,
            kind,
            default: "0",
        }
    }

    /// The entities `key` renders, as strings.
    fn entities(msg: &[u8], listed: &[EntityField]) -> Option<Vec<String>> {
        let mut e = Entities::new();
        key(&Bytes::copy_from_slice(msg), listed, &[], &mut e)?;
        Some(e.with_names(|names| names.iter().map(|n| n.to_string()).collect()))
    }

    /// Two members of one oneof: the last sent wins, so `a=5` then `b=3`
    /// is `b=3` and the reverse is `a=5`; sorted, both would be one key.
    #[test]
    fn two_members_of_a_oneof_are_not_keyed() {
        let oneofs: &[&[u32]] = &[&[1], &[2, 3], &[4], &[5], &[6, 7]];
        let keyed = |msg: &[u8]| {
            key(
                &Bytes::copy_from_slice(msg),
                &[],
                oneofs,
                &mut Entities::new(),
            )
            .is_some()
        };
        assert!(!keyed(&[0x10, 0x05, 0x18, 0x03]));
        assert!(!keyed(&[0x18, 0x03, 0x10, 0x05]));
        assert!(!keyed(&[0x18, 0x03, 0x08, 0x01, 0x10, 0x05]));
        // A oneof past the inline ones.
        assert!(!keyed(&[0x30, 0x01, 0x38, 0x01]));
        // One member, sent once or twice, beside members of other oneofs.
        assert!(keyed(&[0x10, 0x05]));
        assert!(keyed(&[0x10, 0x05, 0x10, 0x07]));
        assert!(keyed(&[
            0x18, 0x03, 0x08, 0x01, 0x20, 0x01, 0x28, 0x01, 0x38, 0x02
        ]));
        // Without the oneofs the same bytes are keyed.
        let mut e = Entities::new();
        assert!(
            key(
                &Bytes::from_static(&[0x10, 0x05, 0x18, 0x03]),
                &[],
                &[],
                &mut e
            )
            .is_some()
        );
    }

    #[test]
    fn canonical_keeps_ordered_bytes_and_sorts_others() {
        let ordered = Bytes::from_static(&[0x08, 0x01, 0x10, 0x02]);
        assert_eq!(canonical(&ordered).unwrap(), ordered);
        assert_eq!(
            canonical(&ordered).unwrap().as_ptr(),
            ordered.as_ptr(),
            "ordered bytes come back without a copy"
        );
        assert_eq!(canonical(&Bytes::new()).unwrap(), Bytes::new());
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
        let names = |e: Option<Vec<String>>| e.expect("well-formed").join(",");
        assert_eq!(names(entities(&msg, &listed)), "a=-1,b=0");
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
        assert_eq!(names(entities(&msg, &listed)), "s=-3,t=hi,u=true,f=1");
        // Last occurrence wins; a wrong wire type is not a key.
        assert_eq!(
            names(entities(&[0x08, 0x01, 0x08, 0x07], &listed[..1])),
            "s=-4"
        );
        assert!(entities(&[0x0d, 0, 0, 0, 0], &listed[..1]).is_none());
    }

    /// A varint field `number` holding `v`.
    fn varint_field(number: u8, mut v: u64, out: &mut Vec<u8>) {
        out.push(number << 3);
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    #[test]
    fn entities_render_integer_extremes_as_display_does() {
        let cases: [(FieldKind, u64, String); 8] = [
            (FieldKind::Int64, i64::MIN as u64, i64::MIN.to_string()),
            (FieldKind::Int64, i64::MAX as u64, i64::MAX.to_string()),
            (FieldKind::UInt64, u64::MAX, u64::MAX.to_string()),
            (FieldKind::UInt32, u64::MAX, u32::MAX.to_string()),
            (
                FieldKind::Int32,
                i32::MIN as i64 as u64,
                i32::MIN.to_string(),
            ),
            (FieldKind::SInt64, u64::MAX, i64::MIN.to_string()),
            (FieldKind::SInt32, 0xffff_fffe, i32::MAX.to_string()),
            (FieldKind::Enum, 0, "0".to_string()),
        ];
        for (kind, v, want) in cases {
            let mut msg = Vec::new();
            varint_field(1, v, &mut msg);
            let e = entities(&msg, &[field("x", 1, kind)]).expect("well-formed");
            assert_eq!(e, [format!("x={want}")], "{kind:?} {v}");
        }
        // Fixed-width kinds, floats and bytes.
        let msg = [
            0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // 1: fixed64
            0x15, 0xfe, 0xff, 0xff, 0xff, // 2: sfixed32
            0x1d, 0x00, 0x00, 0xc0, 0x3f, // 3: float 1.5
            0x22, 0x02, 0x0a, 0xf0, // 4: bytes
        ];
        let listed = [
            field("a", 1, FieldKind::Fixed64),
            field("b", 2, FieldKind::SFixed32),
            field("c", 3, FieldKind::Float),
            field("d", 4, FieldKind::Bytes),
        ];
        let e = entities(&msg, &listed).expect("well-formed");
        assert_eq!(
            e,
            [
                format!("a={}", u64::MAX).as_str(),
                "b=-2",
                "c=1.5",
                "d=0af0"
            ]
        );
    }

    #[test]
    fn entities_beyond_the_inline_buffers() {
        // More entities than fit inline, and more text: the same names.
        const NAMES: [&str; 12] = [
            "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12",
        ];
        let listed: Vec<EntityField> = (1..=12)
            .map(|n| field(NAMES[n - 1], n as u32, FieldKind::UInt64))
            .collect();
        let mut msg = Vec::new();
        for n in 1..=11 {
            varint_field(n, u64::MAX - u64::from(n), &mut msg);
        }
        let e = entities(&msg, &listed).expect("well-formed");
        let want: Vec<String> = (1..=12u8)
            .map(|n| match n {
                12 => "f12=0".to_string(),
                n => format!("f{n}={}", u64::MAX - u64::from(n)),
            })
            .collect();
        assert!(want.iter().map(String::len).sum::<usize>() > INLINE_TEXT);
        assert_eq!(e, want);
        // One long string spills the text, not the count.
        let long = "x".repeat(300);
        let mut msg = vec![0x0a, 0xac, 0x02];
        msg.extend_from_slice(long.as_bytes());
        let listed = [
            field("s", 1, FieldKind::String),
            field("n", 2, FieldKind::Int32),
        ];
        let e = entities(&msg, &listed).expect("well-formed");
        assert_eq!(e, [format!("s={long}").as_str(), "n=0"]);
        assert!(entities(&[], &[]).expect("well-formed").is_empty());
        // Entities and canonical bytes come from one pass: reordered fields
        // are rendered all the same.
        let mut e = Entities::new();
        let reversed = Bytes::from_static(&[0x10, 0x02, 0x08, 0x01]);
        let listed = [
            field("a", 1, FieldKind::Int32),
            field("b", 2, FieldKind::Int32),
        ];
        let Some(Canonical::Sorted(canonical)) = key(&reversed, &listed, &[], &mut e) else {
            panic!("reversed fields are sorted");
        };
        assert_eq!(&canonical[..], &[0x08, 0x01, 0x10, 0x02]);
        assert_eq!(e.with_names(|n| n.join(",")), "a=1,b=2");
    }
}
