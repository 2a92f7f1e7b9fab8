//! The packet decoder and classifier on arbitrary frames: the first byte
//! picks the link type, the rest is the frame. Must never panic.
#![no_main]

use darkscope_sensor::classify::classify;
use darkscope_sensor::decode::{decode, Decoded, LinkType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = match sel % 6 {
        0 => LinkType::Ethernet,
        1 => LinkType::LinuxSll,
        2 => LinkType::LinuxSll2,
        3 => LinkType::RawIp,
        4 => LinkType::Null,
        _ => LinkType::Unsupported(sel as i32),
    };
    if let Decoded::Packet(mut r) = decode(link, frame) {
        classify(&mut r);
    }
});
