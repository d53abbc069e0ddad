//! Fuzz the beanstalk server codec: any bytes, fed in two reads at a point
//! the input picks, decode without panicking, the buffer stays within one
//! line or one body, and every request decoded re-encodes to bytes that
//! decode to the same request.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use miller_core::proto::{Incoming, LINE_MAX, ServerCodec};
use tokio_util::codec::Decoder;

const MAX_JOB: u32 = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let at = usize::from(cut).min(data.len());
    let mut codec = ServerCodec::with_max_job_size(MAX_JOB);
    let mut buf = BytesMut::new();
    for part in [&data[..at], &data[at..]] {
        buf.extend_from_slice(part);
        while let Some(item) = codec.decode(&mut buf).expect("the server codec never fails") {
            if let Incoming::Request(r) = item {
                let mut wire = BytesMut::new();
                r.encode(&mut wire);
                let mut again = ServerCodec::with_max_job_size(MAX_JOB);
                assert_eq!(again.decode(&mut wire).unwrap(), Some(Incoming::Request(r)));
                assert!(wire.is_empty());
            }
        }
        assert!(buf.len() < LINE_MAX + MAX_JOB as usize + 2);
    }
});
