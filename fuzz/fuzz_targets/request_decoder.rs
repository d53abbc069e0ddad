//! Fuzz the server-side request decoder: small bounds, input split in two.
#![no_main]

use bytes::BytesMut;
use kids_core::{Limits, RequestDecoder};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let limits = Limits::default().max_bulk(1024).max_inline(256).max_multibulk(64).max_query_buffer(4096);
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    for part in [&data[..cut], &data[cut..]] {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(req)) => assert!(!req.is_empty()),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 4096 + part.len());
    }
});
