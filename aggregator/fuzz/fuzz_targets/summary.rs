//! Summary ingest as a sensor's upload reaches it: the first byte picks the
//! content encoding (none, zstd, gzip) and the form (JSON, binary layout 2
//! or layout 1), the rest is the body; decompression (bounded), decoding and
//! validation must answer Ok or an error, never panic, and never let more
//! than the limit through. A binary summary that is accepted must survive a
//! round trip through the current layout.
#![no_main]

use darkscope_aggregator::ingest::{decode_body, parse_as};
use darkscope_common::wire::{BINARY_MEDIA_TYPE, BINARY_V1_MEDIA_TYPE};
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
    let form = match sel / 3 % 3 {
        0 => None,
        1 => Some(BINARY_MEDIA_TYPE),
        _ => Some(BINARY_V1_MEDIA_TYPE),
    };
    if let Ok(bytes) = decode_body(encoding, body, LIMIT) {
        assert!(bytes.len() <= LIMIT);
        if let (Ok(s), Some(_)) = (parse_as(form, &bytes), form) {
            let again = s.to_binary().expect("an accepted summary re-encodes");
            let back = parse_as(Some(BINARY_MEDIA_TYPE), &again).expect("and reads back");
            assert_eq!(back, s);
        }
    }
});
