//! The frame codec: golden bytes, every split, round trips, bounds, bombs.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use wish_core::{
    Body, Code, Error, Frame, FrameCodec, FrameError, RequestFrame, ResponseFrame, Status,
    method_id,
};

fn encode(codec: &mut FrameCodec, frame: Frame) -> BytesMut {
    let mut out = BytesMut::new();
    codec.encode(frame, &mut out).unwrap();
    out
}

fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<Frame>, Error> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf)? {
        out.push(f);
    }
    assert!(buf.is_empty(), "bytes left over");
    Ok(out)
}

fn frame_error(result: Result<Option<Frame>, Error>) -> FrameError {
    match result {
        Err(Error::Frame(e)) => e,
        other => panic!("expected a frame error, got {other:?}"),
    }
}

/// `Plus{a:1,b:2}` and its answer `{c:3}`, byte for byte (also in PROTOCOL.md).
const PLUS_REQUEST: &[u8] = &[
    0, 0, 0, 19, // length of what follows
    1,  // version
    1,  // kind: request
    0,  // flags
    0, 0, 0, 0, 0, 0, 0, 1, // request id 1
    0xf7, 0x73, 0x3f, 0x92, // method id: FNV-1a("calc.Simple.Plus")
    0x08, 0x01, 0x10, 0x02, // CalcRequest { a: 1, b: 2 }
];
const PLUS_RESPONSE: &[u8] = &[0, 0, 0, 13, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x08, 0x03];

#[test]
fn golden_plus_frames() {
    let mut codec = FrameCodec::new();
    assert_eq!(method_id("calc.Simple.Plus"), 0xf773_3f92);
    let request = Frame::request(
        1,
        method_id("calc.Simple.Plus"),
        Bytes::from_static(&[8, 1, 16, 2]),
    );
    assert_eq!(&encode(&mut codec, request.clone())[..], PLUS_REQUEST);
    assert_eq!(decode_all(&mut codec, PLUS_REQUEST).unwrap(), [request]);
    let response = Frame::response(1, Bytes::from_static(&[8, 3]));
    assert_eq!(&encode(&mut codec, response.clone())[..], PLUS_RESPONSE);
    assert_eq!(decode_all(&mut codec, PLUS_RESPONSE).unwrap(), [response]);
    // A deadline of 250 ms, no-cache: flags 0x24, then the deadline after the method id.
    let mut with_deadline = Frame::request(2, 7, Bytes::new());
    if let Body::Request(r) = &mut with_deadline.body {
        r.deadline = Some(Duration::from_millis(250));
        r.no_cache = true;
    }
    assert_eq!(
        &encode(&mut codec, with_deadline)[..],
        &[
            0, 0, 0, 19, 1, 1, 0x24, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 250
        ]
    );
    let error = Frame::error(3, Status::new(Code::NOT_FOUND, "no"));
    assert_eq!(
        &encode(&mut codec, error)[..],
        &[
            0, 0, 0, 17, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5, 0, 2, b'n', b'o'
        ]
    );
    assert_eq!(
        &encode(&mut codec, Frame::cancel(4))[..],
        &[0, 0, 0, 11, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4]
    );
}

fn samples() -> Vec<Frame> {
    let big = Bytes::from(b"multiply ".repeat(200));
    vec![
        Frame::request(1, 9, Bytes::from_static(&[8, 1, 16, 2])),
        Frame {
            id: u64::MAX,
            body: Body::Request(RequestFrame {
                method: u32::MAX,
                deadline: Some(Duration::from_millis(1500)),
                no_cache: true,
                plain_response: true,
                compress: true,
                payload: big.clone(),
            }),
        },
        Frame {
            id: 5,
            body: Body::Response(ResponseFrame {
                computed_at: Some(1_700_000_000_123),
                from_cache: true,
                compress: true,
                payload: big,
            }),
        },
        Frame::response(6, Bytes::new()),
        Frame::error(7, Status::new(Code(999), "ünïcode")),
        Frame::cancel(8),
    ]
}

#[test]
fn every_split_decodes_the_same_frames() {
    let mut codec = FrameCodec::new();
    let mut wire = BytesMut::new();
    for f in samples() {
        codec.encode(f, &mut wire).unwrap();
    }
    let whole = decode_all(&mut codec, &wire).unwrap();
    assert_eq!(whole.len(), 6);
    for cut in 0..=wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            got.push(f);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, whole, "cut at {cut}");
    }
}

#[test]
fn compression_keeps_only_what_shrinks() {
    let mut codec = FrameCodec::new().compress_threshold(64);
    let compressible = Bytes::from(vec![b'x'; 4096]);
    let mut f = Frame::response(1, compressible.clone());
    if let Body::Response(r) = &mut f.body {
        r.compress = true;
    }
    let wire = encode(&mut codec, f);
    assert!(
        wire.len() < 200,
        "4 KiB of one byte compresses: {}",
        wire.len()
    );
    assert_eq!(wire[6] & 3, 1, "lz4 flag");
    match &decode_all(&mut codec, &wire).unwrap()[0].body {
        Body::Response(r) => assert_eq!((r.compress, &r.payload), (true, &compressible)),
        other => panic!("{other:?}"),
    }
    // Below the threshold: sent as is.
    let mut small = Frame::response(1, Bytes::from(vec![b'x'; 63]));
    if let Body::Response(r) = &mut small.body {
        r.compress = true;
    }
    assert_eq!(encode(&mut codec, small)[6] & 3, 0);
    // Incompressible: tried, not kept.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    let mut f = Frame::response(1, Bytes::from(noise.clone()));
    if let Body::Response(r) = &mut f.body {
        r.compress = true;
    }
    let wire = encode(&mut codec, f);
    assert_eq!(wire[6] & 3, 0);
    assert_eq!(wire.len(), 4 + 11 + noise.len());
}

#[test]
fn bounds_and_bad_frames_are_errors() {
    let mut codec = FrameCodec::new().max_frame_len(64);
    // Over the bound: refused from the length alone.
    let mut buf = BytesMut::from(&[0u8, 0, 0, 65][..]);
    assert_eq!(
        frame_error(codec.decode(&mut buf)),
        FrameError::TooLong { len: 65, max: 64 }
    );
    // The encoder refuses too, and leaves nothing behind.
    let mut out = BytesMut::from(&b"kept"[..]);
    let err = codec.encode(Frame::response(1, Bytes::from(vec![0; 100])), &mut out);
    assert!(matches!(err, Err(Error::Frame(FrameError::TooLong { .. }))));
    assert_eq!(&out[..], b"kept");

    let header = |version: u8, kind: u8, flags: u8, rest: &[u8]| {
        let mut b = BytesMut::new();
        b.put_u32((11 + rest.len()) as u32);
        b.put_slice(&[version, kind, flags]);
        b.put_u64(1);
        b.put_slice(rest);
        b
    };
    let cases: Vec<(BytesMut, FrameError)> = vec![
        (header(2, 1, 0, &[0, 0, 0, 1]), FrameError::Version(2)),
        (header(1, 9, 0, &[]), FrameError::Kind(9)),
        (header(1, 1, 2, &[0, 0, 0, 1]), FrameError::Codec(2)),
        (
            header(1, 1, 0x80, &[0, 0, 0, 1]),
            FrameError::Flags {
                kind: 1,
                flags: 0x80,
            },
        ),
        (
            header(1, 2, 0x04, &[]),
            FrameError::Flags {
                kind: 2,
                flags: 0x04,
            },
        ),
        (
            header(1, 1, 0x10, &[0, 0, 0, 1]),
            FrameError::Flags {
                kind: 1,
                flags: 0x10,
            },
        ),
        (
            header(1, 4, 0x01, &[]),
            FrameError::Flags {
                kind: 4,
                flags: 0x01,
            },
        ),
        (header(1, 1, 0, &[0, 0, 1]), FrameError::Truncated),
        (
            header(1, 1, 0x04, &[0, 0, 0, 1, 0, 0]),
            FrameError::Truncated,
        ),
        (header(1, 2, 0x08, &[0, 0, 0, 0]), FrameError::Truncated),
        (header(1, 3, 0, &[0, 1, 0, 5, b'a']), FrameError::Truncated),
        (header(1, 3, 0, &[0, 1, 0, 0, b'a']), FrameError::Trailing),
        (header(1, 3, 0, &[0, 1, 0, 1, 0xff]), FrameError::Utf8),
        (header(1, 4, 0, &[0]), FrameError::Trailing),
        (header(1, 2, 1, &[0, 0]), FrameError::Truncated),
        (
            header(1, 2, 1, &[0, 0, 0, 4, 0x40, b'a', b'b']),
            FrameError::Decompress,
        ),
        (
            BytesMut::from(&[0u8, 0, 0, 3, 1, 1, 0][..]),
            FrameError::Truncated,
        ),
    ];
    for (mut bytes, want) in cases {
        let shown = format!("{:?}", &bytes[..]);
        assert_eq!(frame_error(codec.decode(&mut bytes)), want, "{shown}");
    }
}

#[test]
fn decompression_bombs_are_refused_before_allocating() {
    let mut codec = FrameCodec::new().max_frame_len(1 << 20);
    // 1 GiB declared, in a 20-byte frame.
    let mut bomb = BytesMut::new();
    bomb.put_u32(11 + 4 + 4);
    bomb.put_slice(&[1, 2, 1]);
    bomb.put_u64(1);
    bomb.put_u32(1 << 30);
    bomb.put_slice(&[0x1f, 0, 0, 0]);
    assert_eq!(
        frame_error(codec.decode(&mut bomb)),
        FrameError::Bomb {
            size: 1 << 30,
            max: 1 << 20
        }
    );
    // A real lz4 block of 2 MiB of zeros fits a small frame, and is refused
    // for its declared size, not after inflating it.
    let block = lz4_flex::block::compress(&vec![0u8; 2 << 20]);
    assert!(block.len() < 1 << 20);
    let mut frame = BytesMut::new();
    frame.put_u32((11 + 4 + block.len()) as u32);
    frame.put_slice(&[1, 2, 1]);
    frame.put_u64(1);
    frame.put_u32(2 << 20);
    frame.put_slice(&block);
    assert_eq!(
        frame_error(codec.decode(&mut frame)),
        FrameError::Bomb {
            size: 2 << 20,
            max: 1 << 20
        }
    );
    // A block that inflates to more than it declares is damaged.
    let mut liar = BytesMut::new();
    let block = lz4_flex::block::compress(&[7u8; 1000]);
    liar.put_u32((11 + 4 + block.len()) as u32);
    liar.put_slice(&[1, 2, 1]);
    liar.put_u64(1);
    liar.put_u32(10);
    liar.put_slice(&block);
    assert_eq!(frame_error(codec.decode(&mut liar)), FrameError::Decompress);
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (any::<u8>(), 0usize..3000).prop_map(|(b, n)| vec![b; n]),
    ]
    .prop_map(Bytes::from);
    let body = prop_oneof![
        (
            any::<u32>(),
            proptest::option::of(1u32..u32::MAX),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            payload.clone()
        )
            .prop_map(
                |(method, deadline, no_cache, plain_response, compress, payload)| {
                    Body::Request(RequestFrame {
                        method,
                        deadline: deadline.map(|ms| Duration::from_millis(u64::from(ms))),
                        no_cache,
                        plain_response,
                        compress,
                        payload,
                    })
                }
            ),
        (
            proptest::option::of(any::<u64>()),
            any::<bool>(),
            any::<bool>(),
            payload
        )
            .prop_map(|(computed_at, from_cache, compress, payload)| {
                Body::Response(ResponseFrame {
                    computed_at,
                    from_cache,
                    compress,
                    payload,
                })
            }),
        (any::<u16>(), ".{0,40}")
            .prop_map(|(code, message)| Body::Error(Status::new(Code(code), message))),
        Just(Body::Cancel),
    ];
    (any::<u64>(), body).prop_map(|(id, body)| Frame { id, body })
}

/// On decode, `compress` says whether the payload was compressed on the wire.
fn normalise(mut f: Frame) -> Frame {
    match &mut f.body {
        Body::Request(r) => r.compress = false,
        Body::Response(r) => r.compress = false,
        _ => {}
    }
    f
}

proptest! {
    #[test]
    fn frames_round_trip(frames in proptest::collection::vec(arb_frame(), 1..8)) {
        let mut codec = FrameCodec::new().compress_threshold(32);
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut wire).unwrap();
        }
        let got = decode_all(&mut codec, &wire).unwrap();
        prop_assert_eq!(
            got.into_iter().map(normalise).collect::<Vec<_>>(),
            frames.into_iter().map(normalise).collect::<Vec<_>>()
        );
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = FrameCodec::new().max_frame_len(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}

#[test]
fn deadlines_round_up_to_whole_milliseconds() {
    let mut codec = FrameCodec::new();
    for (given, wire_ms) in [
        (Duration::ZERO, 0u32),
        (Duration::from_nanos(500), 1),
        (Duration::from_micros(1999), 2),
        (Duration::from_millis(7), 7),
    ] {
        let mut f = Frame::request(1, 1, Bytes::new());
        if let Body::Request(r) = &mut f.body {
            r.deadline = Some(given);
        }
        let wire = encode(&mut codec, f);
        assert_eq!(&wire[19..23], &wire_ms.to_be_bytes(), "{given:?}");
        match &decode_all(&mut codec, &wire).unwrap()[0].body {
            Body::Request(r) => {
                assert_eq!(r.deadline, Some(Duration::from_millis(u64::from(wire_ms))))
            }
            other => panic!("{other:?}"),
        }
    }
    // A payload over the bound is refused, never compressed under it.
    let mut codec = FrameCodec::new().max_frame_len(1 << 16);
    let mut f = Frame::response(1, Bytes::from(vec![0u8; 1 << 17]));
    if let Body::Response(r) = &mut f.body {
        r.compress = true;
    }
    let mut out = BytesMut::new();
    assert!(matches!(
        codec.encode(f, &mut out),
        Err(Error::Frame(FrameError::TooLong { .. }))
    ));
}

/// Every golden example in PROTOCOL.md is one frame, and the codec writes it
/// back byte for byte: the document and the code cannot drift apart.
#[test]
fn the_golden_frames_of_protocol_md_are_what_the_codec_writes() {
    let doc = include_str!("../../PROTOCOL.md");
    let start = doc.find("## 12. Golden examples").expect("section 12");
    let end = start + doc[start..].find("\n## 13.").expect("section 13");
    let mut seen = Vec::new();
    for example in doc[start..end].split("\n**(").skip(1) {
        let label = &example[..1];
        let hex = example.split("```").nth(1).expect("a hex block");
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("({label}): {h}")))
            .collect();
        let mut codec = FrameCodec::new();
        let frames = decode_all(&mut codec, &bytes).unwrap_or_else(|e| panic!("({label}): {e}"));
        assert_eq!(frames.len(), 1, "({label})");
        let again = encode(&mut codec, frames[0].clone());
        assert_eq!(&again[..], &bytes[..], "({label}) re-encodes differently");
        seen.push(label.to_string());
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e", "f", "g"]);
}
