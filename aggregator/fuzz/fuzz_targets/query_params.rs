//! Parsers of what callers put in query strings and paths (times, feed
//! cursors, addresses, prefix lists, protocol/port, scope) and of the ASN
//! table file: Ok or an error, never a panic.
#![no_main]

use darkscope_aggregator::api::parse_query_value;
use darkscope_aggregator::enrich::AsnTable;
use darkscope_aggregator::feeds::{cursor_text, parse_cursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    parse_query_value(s);
    if let Some(c) = parse_cursor(s) {
        assert_eq!(parse_cursor(&cursor_text(&c)), Some(c));
    }
    let _ = AsnTable::parse(data);
});
