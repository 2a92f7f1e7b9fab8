//! Replays the real scanner captures in `testdata/realscan` through the whole
//! pipeline and compares with their tshark-derived ground truth, exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{run_file, testdata};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const CAPTURES: [&str; 11] = [
    "masscan",
    "zmap",
    "nmap",
    "nmap6",
    "spoofed",
    "synack",
    "rst",
    "icmp",
    "udp",
    "mirai",
    "all-small",
];

fn check(name: &str, shards: usize) {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(testdata(&format!("{name}.truth.json"))).unwrap(),
    )
    .unwrap();
    // One window spanning the whole capture (all were recorded within one day).
    let (sums, report) = run_file(
        &testdata(&format!("{name}.pcap")),
        86_400,
        shards,
        1_000_000,
    );
    assert_eq!(sums.len(), 1, "{name}: one window expected");
    let s = &sums[0];
    let total = truth["packets_total"].as_u64().unwrap();
    let darknet = truth["packets_darknet"].as_u64().unwrap();
    assert_eq!(report.frames, total, "{name}: frames");
    assert_eq!(s.capture.received, total, "{name}: received");
    assert_eq!(s.totals.packets, darknet, "{name}: darknet packets");
    assert_eq!(
        s.capture.not_darknet,
        total - darknet,
        "{name}: not_darknet"
    );
    assert!(
        s.capture.malformed.is_empty(),
        "{name}: malformed {:?}",
        s.capture.malformed
    );
    assert!(s.truncation.exact, "{name}: exact");

    // Class totals.
    let ours = serde_json::to_value(s.classes).unwrap();
    for (k, v) in ours.as_object().unwrap() {
        let want = truth["classes"].get(k).and_then(Value::as_u64).unwrap_or(0);
        assert_eq!(v.as_u64().unwrap(), want, "{name}: class {k}");
    }

    // Port rows: packets, distinct sources, distinct destinations.
    let want: BTreeMap<(String, u64), (u64, u64, u64)> = truth["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (
                    p["proto"].as_str().unwrap().to_string(),
                    p["port"].as_u64().unwrap(),
                ),
                (
                    p["packets"].as_u64().unwrap(),
                    p["sources"].as_u64().unwrap(),
                    p["destinations"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let got: BTreeMap<(String, u64), (u64, u64, u64)> = s
        .ports
        .iter()
        .map(|p| {
            (
                (p.proto.as_str().to_string(), p.port as u64),
                (p.packets, p.sources, p.destinations),
            )
        })
        .collect();
    assert_eq!(got, want, "{name}: port rows");
    // The shipped sketches agree with the exact counts at these sizes.
    for p in &s.ports {
        let e = p.sources_hll.estimate() as f64;
        assert!(
            (e - p.sources as f64).abs() <= 0.02 * p.sources as f64 + 1.0,
            "{name}: sketch"
        );
    }

    // Source rows.
    let want: BTreeMap<String, u64> = truth["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().unwrap().to_string(),
                r["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    let got: BTreeMap<String, u64> = s
        .sources
        .iter()
        .map(|r| (r.ip.to_string(), r.packets))
        .collect();
    assert_eq!(got, want, "{name}: source rows");
    assert_eq!(
        s.totals.sources,
        want.len() as u64,
        "{name}: distinct sources"
    );

    // Fingerprints: the sources carrying each, and the per-rule counts.
    let fp_counts = serde_json::to_value(s.fingerprints).unwrap();
    for fp in ["mirai", "zmap", "masscan"] {
        let want: BTreeSet<String> = truth["fingerprints"]
            .get(fp)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let got: BTreeSet<String> = s
            .sources
            .iter()
            .filter(|r| r.fingerprints.iter().any(|f| f.as_str() == fp))
            .map(|r| r.ip.to_string())
            .collect();
        assert_eq!(got, want, "{name}: {fp} sources");
        assert_eq!(
            fp_counts[fp].as_u64().unwrap(),
            want.len() as u64,
            "{name}: {fp} count"
        );
    }
}

#[test]
fn every_real_capture_matches_tshark_truth_one_shard() {
    for name in CAPTURES {
        check(name, 1);
    }
}

#[test]
fn every_real_capture_matches_tshark_truth_four_shards() {
    for name in CAPTURES {
        check(name, 4);
    }
}

#[test]
fn windows_partition_the_capture() {
    // With one-minute windows, the windows' totals add up to the whole.
    let (sums, _) = run_file(&testdata("all-small.pcap"), 60, 2, 1_000_000);
    assert!(sums.len() > 1);
    let packets: u64 = sums.iter().map(|s| s.totals.packets).sum();
    assert_eq!(packets, 30_346);
    for w in sums.windows(2) {
        assert_eq!(w[0].window.end.0 % 60_000_000, 0);
        assert!(
            w[0].window.end <= w[1].window.start,
            "windows in order, disjoint"
        );
    }
    for s in &sums {
        for r in &s.sources {
            assert!(r.first_seen >= s.window.start && r.last_seen < s.window.end);
        }
    }
}

#[test]
fn excluded_research_scanners_leave_every_statistic_but_are_counted() {
    use darkscope_sensor::config::Config;
    use darkscope_sensor::export::Collect;
    let mut cfg = Config::default();
    cfg.sensor.darknet = common::DARKNET.split(',').map(String::from).collect();
    // Exclude the masscan host (16,384 packets to 4 ports).
    cfg.sensor.exclude = vec!["198.18.1.2/32".into()];
    cfg.capture.read = Some(testdata("all-small.pcap"));
    cfg.pipeline.window_secs = 86_400;
    let v = cfg.validate().unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    darkscope_sensor::run(
        &v,
        Box::new(Collect(out.clone())),
        Default::default(),
        Default::default(),
        None,
    )
    .unwrap();
    let s = out.lock().unwrap()[0].clone();
    assert_eq!(s.capture.excluded, 16_384);
    assert_eq!(s.totals.packets, 30_346 - 16_384);
    assert!(s.sources.iter().all(|r| r.ip.to_string() != "198.18.1.2"));
    assert_eq!(s.fingerprints[darkscope_common::Fingerprint::Masscan], 0);
    let p2323 = s.ports.iter().find(|p| p.port == 2323);
    assert!(p2323.is_none(), "2323 was hit only by masscan");
}

/// However many shards split the sources, every window's summary is the
/// same, from the first windows (fresh shard state) to the later ones (state
/// the merger emptied and handed back).
#[test]
fn shard_count_does_not_change_any_window() {
    use darkscope_benches::gen::{generate, GenConfig};
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ibr.pcap");
    let cfg = GenConfig {
        packets: 60_000,
        sources: 8_000,
        seed: 11,
        duration_secs: 600,
        truth: false,
        ..Default::default()
    };
    generate(&cfg, &pcap).unwrap();
    let (one, _) = run_file(&pcap, 60, 1, 1_000_000);
    assert!(one.len() >= 8, "{} windows", one.len());
    for shards in [2, 3] {
        let (many, _) = run_file(&pcap, 60, shards, 1_000_000);
        assert_eq!(many.len(), one.len());
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(a, b, "window {} with {shards} shards", a.window.start);
        }
    }
}
