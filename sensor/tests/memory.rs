//! Bounded memory: 2,000,000 distinct spoofed sources in one window. The
//! source table stops at its cap, totals stay exact, distinct counts fall back
//! to sketches within their error, and the truncation is reported.
//! (Its own test binary, so the peak-RSS reading is this test's alone.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use darkscope_benches::gen::spoofed_flood;

fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[test]
fn two_million_spoofed_sources_stay_bounded_and_totals_exact() {
    const N: u32 = 2_000_000;
    const CAP: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("spoofed-2m.pcap");
    spoofed_flood(&pcap, N, 1_763_683_200).unwrap();

    let (sums, report) = common::run_file(&pcap, 60, 1, CAP);
    assert_eq!(report.frames, N as u64);
    assert_eq!(sums.len(), 1, "one window");
    let s = &sums[0];
    // Exact totals.
    assert_eq!(s.totals.packets, N as u64);
    assert_eq!(s.classes.tcp_syn, N as u64);
    assert_eq!(s.ports.len(), 1);
    assert_eq!(s.ports[0].packets, N as u64);
    assert_eq!(s.ports[0].destinations, 1);
    // The table stopped at the cap and said so.
    assert_eq!(s.sources.len(), CAP);
    assert!(!s.truncation.exact);
    assert_eq!(s.truncation.source_cap, CAP as u64);
    assert_eq!(s.truncation.packets_untracked, (N as usize - CAP) as u64);
    let within = |got: u64, want: u64| (got as f64 - want as f64).abs() / (want as f64) < 0.05;
    assert!(
        within(s.truncation.sources_untracked, (N as usize - CAP) as u64),
        "{}",
        s.truncation.sources_untracked
    );
    // Distinct counts from the sketches, within 5 % (standard error 1.6 %).
    assert!(within(s.totals.sources, N as u64), "{}", s.totals.sources);
    assert!(
        within(s.ports[0].sources, N as u64),
        "{}",
        s.ports[0].sources
    );
    if let Some(mib) = peak_rss_mib() {
        eprintln!("peak RSS {mib} MiB (summary with 1,000,000 rows held in memory)");
        assert!(mib < 1024, "peak RSS {mib} MiB: memory is not bounded");
    }
}
