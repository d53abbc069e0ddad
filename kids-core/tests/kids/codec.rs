//! Property tests of the RESP codecs: encode/decode round trips, split anywhere.

use bytes::{Bytes, BytesMut};
use kids_core::{Frame, FrameCodec, Proto, RequestDecoder};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

/// Simple strings and errors cannot hold CR or LF.
fn line() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    )
    .prop_map(Bytes::from)
}

fn frame(resp3: bool) -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line().prop_map(Frame::Simple),
        line().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes().prop_map(Frame::Bulk),
        Just(Frame::Null),
    ];
    let leaf = if resp3 {
        prop_oneof![
            leaf,
            any::<bool>().prop_map(Frame::Boolean),
            any::<f64>()
                .prop_filter("nan is not equal to itself", |v| !v.is_nan())
                .prop_map(Frame::Double),
            "-?[1-9][0-9]{0,30}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
            bytes().prop_map(|text| Frame::Verbatim {
                format: *b"txt",
                text
            }),
        ]
        .boxed()
    } else {
        prop_oneof![leaf, Just(Frame::NullArray)].boxed()
    };
    leaf.prop_recursive(3, 24, 5, move |inner| {
        let list = proptest::collection::vec(inner.clone(), 0..5);
        if resp3 {
            prop_oneof![
                list.clone().prop_map(Frame::Array),
                list.clone().prop_map(Frame::Set),
                list.prop_map(Frame::Push),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
            ]
            .boxed()
        } else {
            list.prop_map(Frame::Array).boxed()
        }
    })
}

/// Decodes all frames from `wire` delivered in two parts split at `cut`.
fn decode_split(wire: &[u8], cut: usize) -> Vec<Frame> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in [&wire[..cut], &wire[cut..]] {
        buf.extend_from_slice(part);
        while let Some(f) = codec.decode(&mut buf).expect("valid frame") {
            out.push(f);
        }
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn resp3_frames_round_trip(frames in proptest::collection::vec(frame(true), 1..4), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        frames.iter().for_each(|f| f.encode(Proto::Resp3, &mut wire));
        prop_assert_eq!(decode_split(&wire, cut.index(wire.len() + 1)), frames);
    }

    #[test]
    fn resp2_frames_round_trip(frames in proptest::collection::vec(frame(false), 1..4), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        frames.iter().for_each(|f| f.encode(Proto::Resp2, &mut wire));
        prop_assert_eq!(decode_split(&wire, cut.index(wire.len() + 1)), frames);
    }

    #[test]
    fn requests_round_trip(reqs in proptest::collection::vec(proptest::collection::vec(bytes(), 1..6), 1..5),
                           cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        for r in &reqs {
            Frame::command(r).encode(Proto::Resp2, &mut wire);
        }
        let cut = cut.index(wire.len() + 1);
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(part);
            while let Some(r) = dec.decode(&mut buf).expect("valid request") {
                got.push(r);
            }
        }
        prop_assert_eq!(got, reqs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}

#[test]
fn every_split_of_a_mixed_stream() {
    let mut wire = BytesMut::new();
    for f in [
        Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk("c"),
            Frame::bulk("m"),
        ]),
        Frame::Map(vec![(
            Frame::bulk("k"),
            Frame::Set(vec![Frame::Integer(1), Frame::Null]),
        )]),
        Frame::Verbatim {
            format: *b"txt",
            text: Bytes::from_static(b"a\r\nb"),
        },
        Frame::Double(-0.5),
    ] {
        f.encode(Proto::Resp3, &mut wire);
    }
    let whole = decode_split(&wire, wire.len());
    for cut in 0..=wire.len() {
        assert_eq!(decode_split(&wire, cut), whole, "cut {cut}");
    }
}
