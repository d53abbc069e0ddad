//! Fuzz the beanstalk client codec: any reply bytes decode to replies or an
//! error, never a panic, and every reply decoded re-encodes to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use miller_core::proto::ClientCodec;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = ClientCodec::with_max_body(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(reply)) = codec.decode(&mut buf) {
        let mut wire = BytesMut::new();
        reply.encode(&mut wire);
        let mut again = ClientCodec::with_max_body(4096);
        assert_eq!(again.decode(&mut wire).unwrap(), Some(reply));
    }
});
