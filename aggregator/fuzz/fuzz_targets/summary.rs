//! Summary ingest as a sensor's upload reaches it: the first byte picks the
//! content encoding (none, zstd, gzip), the rest is the body; decompression
//! (bounded), JSON decoding and validation must answer Ok or an error,
//! never panic, and never let more than the limit through.
#![no_main]

use darkscope_aggregator::ingest::{decode_body, parse};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let encoding = match sel % 3 {
        0 => None,
        1 => Some("zstd"),
        _ => Some("gzip"),
    };
    if let Ok(bytes) = decode_body(encoding, body, LIMIT) {
        assert!(bytes.len() <= LIMIT);
        let _ = parse(&bytes);
    }
});
