//! A peer's change document, as the puller receives it: JSON decoding and
//! the whole-document validation must answer Ok or an error, never panic.
#![no_main]

use darkscope_aggregator::federation::{validate, Changes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<Changes>(data) {
        let _ = validate(&c, "fuzz-peer", c.cursor);
    }
});
