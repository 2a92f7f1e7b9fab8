//! The capture-file path: arbitrary bytes as a pcap/pcapng file, opened with
//! libpcap and every frame decoded and classified as the sensor does.
//! Must end in an error or the end of the file, never a panic.
#![no_main]

use darkscope_sensor::capture::{Capture, Next, SourceSpec};
use darkscope_sensor::classify::classify;
use darkscope_sensor::decode::{decode, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("darkscope-fuzz-{}.pcap", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(mut cap) = Capture::open(&SourceSpec::File(path.clone())) {
        let link = cap.link();
        for _ in 0..100_000 {
            match cap.read_next() {
                Ok(Next::Frame(_, _, frame)) => {
                    if let Decoded::Packet(mut r) = decode(link, frame) {
                        classify(&mut r);
                    }
                }
                _ => break,
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
