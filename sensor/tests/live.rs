//! Live capture for real: the test makes two network namespaces joined by a
//! veth pair (nothing leaves them), replays a real scanner capture into one
//! side with tcpreplay, and captures it with the sensor on the other side.
//! The totals must equal the capture's ground truth. Needs root (namespaces,
//! raw sockets); skipped with a printed reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{testdata, DARKNET};
use darkscope_common::Summary;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {:?}: {e} (.ci/run installs iproute2 and tcpreplay)",
                args
            )
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair, removed on drop.
struct Testbed {
    tx: String,
    rx: String,
}

impl Testbed {
    fn new() -> Testbed {
        let id = std::process::id() % 100_000;
        let t = Testbed {
            tx: format!("dstx{id}"),
            rx: format!("dsrx{id}"),
        };
        sh(&["ip", "netns", "add", &t.tx]);
        sh(&["ip", "netns", "add", &t.rx]);
        sh(&[
            "ip", "link", "add", "vtx", "netns", &t.tx, "type", "veth", "peer", "name", "vrx",
            "netns", &t.rx,
        ]);
        for (ns, dev) in [(&t.tx, "vtx"), (&t.rx, "vrx")] {
            // No IPv6 autoconfiguration chatter: only the replay crosses the link.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        t
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [&self.tx, &self.rx] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn live_capture_over_veth_matches_the_replayed_capture() {
    if !is_root() {
        eprintln!("SKIPPED live_capture_over_veth: needs root to create network namespaces");
        return;
    }
    let bed = Testbed::new();
    let dir = tempfile::tempdir().unwrap();
    // The sensor writes its output as `nobody` once the capture is open.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = dir.path().join("live.jsonl");
    let pcap = testdata("all-small.pcap");
    // Frames sent out of the sensor's interface: the sensor must never add any.
    let counter = |ns: &str, dev: &str| -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat"])
            .arg(format!("/sys/class/net/{dev}/statistics/tx_packets"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let tx_before = counter(&bed.rx, "vrx");
    let replayer_before = counter(&bed.tx, "vtx");
    let mut sensor = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.rx,
            env!("CARGO_BIN_EXE_darkscope-sensor"),
        ])
        .args([
            "--interface",
            "vrx",
            "--darknet",
            DARKNET,
            "--window",
            "2",
            "--user",
            "nobody",
            "--out",
        ])
        .arg(&out)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it open the capture before the replay starts.
    std::thread::sleep(Duration::from_millis(1500));
    // It opened the capture as root, then gave everything up: every thread
    // runs as nobody with no capability at all and cannot regain any.
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", sensor.id()))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("status")).unwrap())
        .collect();
    assert!(tasks.len() >= 3, "shards, merger and reader are running");
    for st in &tasks {
        let field = |k: &str| {
            st.lines()
                .find(|l| l.starts_with(k))
                .unwrap_or_else(|| panic!("no {k} in {st}"))
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        };
        for k in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(k), "0000000000000000", "{k} in {st}");
        }
        assert_eq!(field("NoNewPrivs:"), "1");
        assert_eq!(field("Uid:"), "65534", "running as nobody");
    }
    let t0 = Instant::now();
    let replay = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.tx,
            "tcpreplay",
            "--intf1=vtx",
            "--pps=20000",
        ])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    eprintln!(
        "replayed in {:.1?}:\n{}",
        t0.elapsed(),
        String::from_utf8_lossy(&replay.stdout)
    );
    std::thread::sleep(Duration::from_millis(800));
    sh(&["kill", "-TERM", &sensor.id().to_string()]);
    let status = sensor.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(sensor.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "sensor: {log}");
    assert_eq!(
        counter(&bed.rx, "vrx"),
        tx_before,
        "a frame left the capture interface while the sensor ran"
    );
    // The counters are live: the replaying side counted the frames it sent.
    assert!(counter(&bed.tx, "vtx") - replayer_before >= 30_000);

    let sums: Vec<Summary> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!sums.is_empty(), "no summaries; log: {log}");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("all-small.truth.json")).unwrap())
            .unwrap();
    let dropped: u64 = sums
        .iter()
        .map(|s| s.capture.kernel_dropped + s.capture.pipeline_dropped)
        .sum();
    assert_eq!(dropped, 0, "drops at 20 kpps");
    let packets: u64 = sums.iter().map(|s| s.totals.packets).sum();
    assert_eq!(packets, truth["packets_darknet"].as_u64().unwrap());
    let mut classes = BTreeMap::new();
    let mut ports: BTreeMap<(String, u16), u64> = BTreeMap::new();
    for s in &sums {
        for (k, v) in serde_json::to_value(s.classes)
            .unwrap()
            .as_object()
            .unwrap()
        {
            *classes.entry(k.clone()).or_insert(0) += v.as_u64().unwrap();
        }
        for p in &s.ports {
            *ports
                .entry((p.proto.as_str().to_string(), p.port))
                .or_default() += p.packets;
        }
    }
    for (k, v) in truth["classes"].as_object().unwrap() {
        assert_eq!(classes[k], v.as_u64().unwrap(), "class {k}");
    }
    for p in truth["ports"].as_array().unwrap() {
        let key = (
            p["proto"].as_str().unwrap().to_string(),
            p["port"].as_u64().unwrap() as u16,
        );
        assert_eq!(ports.get(&key).copied(), p["packets"].as_u64(), "{key:?}");
    }
    // Wall-clock windows: aligned to 2 s and contiguous.
    for w in sums.windows(2) {
        assert_eq!(w[0].window.end.0 % 2_000_000, 0);
        assert!(w[0].window.end <= w[1].window.start);
    }
}
