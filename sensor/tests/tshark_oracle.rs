//! tshark is the oracle: on a generated capture that mixes every link and
//! protocol case (VLAN, QinQ, IPv6, ICMP errors, GRE, ARP, malformed frames),
//! the sensor's per-port and per-source counts equal what tshark dissects.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use darkscope_benches::gen::{generate, GenConfig};
use darkscope_common::{Addr, PrefixSet};
use std::collections::{BTreeMap, HashSet};
use std::process::Command;

/// (protocol name, port)
type PortKey = (String, u64);
/// packets, sources, destinations
type PortSeen = (u64, HashSet<String>, HashSet<String>);

#[test]
fn generated_mix_matches_tshark_dissection() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("mix.pcap");
    let cfg = GenConfig {
        packets: 40_000,
        sources: 4_000,
        seed: 7,
        truth: false,
        ..Default::default()
    };
    generate(&cfg, &pcap).unwrap();

    let fields = [
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "ip.proto",
        "ipv6.nxt",
        "tcp.dstport",
        "udp.dstport",
        "icmp.type",
        "icmpv6.type",
    ];
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(&pcap);
    cmd.args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark must be installed (apt-get install tshark); .ci/run installs it");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let darknet = PrefixSet::parse_list(common::DARKNET).unwrap();

    // (proto, port) -> (packets, sources, destinations); source -> packets
    let mut ports: BTreeMap<PortKey, PortSeen> = BTreeMap::new();
    let mut sources: BTreeMap<String, u64> = BTreeMap::new();
    let mut frames = 0u64;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        frames += 1;
        let r: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| r.get(i).copied().unwrap_or("");
        let src = if get(0).is_empty() { get(1) } else { get(0) };
        let dst = if get(2).is_empty() { get(3) } else { get(2) };
        let Ok(dst_ip) = dst.parse::<std::net::IpAddr>() else {
            continue;
        };
        if !darknet.contains(Addr::from(dst_ip)) {
            continue;
        }
        let proto = if get(4).is_empty() { get(5) } else { get(4) };
        let key = match proto {
            "1" => ("icmp".to_string(), get(8).parse().unwrap()),
            "58" => ("icmpv6".to_string(), get(9).parse().unwrap()),
            _ if !get(6).is_empty() => ("tcp".to_string(), get(6).parse().unwrap()),
            _ if !get(7).is_empty() => ("udp".to_string(), get(7).parse().unwrap()),
            p => ("ip".to_string(), p.parse().unwrap()),
        };
        let e = ports.entry(key).or_default();
        e.0 += 1;
        e.1.insert(src.to_string());
        e.2.insert(dst.to_string());
        *sources.entry(src.to_string()).or_default() += 1;
    }
    let want_ports: BTreeMap<(String, u64), (u64, u64, u64)> = ports
        .into_iter()
        .map(|(k, (n, s, d))| (k, (n, s.len() as u64, d.len() as u64)))
        .collect();

    let (sums, report) = common::run_file(&pcap, 86_400, 2, 1_000_000);
    assert_eq!(report.frames, frames);
    assert_eq!(sums.len(), 1);
    let s = &sums[0];
    let got_ports: BTreeMap<(String, u64), (u64, u64, u64)> = s
        .ports
        .iter()
        .map(|p| {
            (
                (p.proto.as_str().to_string(), p.port as u64),
                (p.packets, p.sources, p.destinations),
            )
        })
        .collect();
    assert_eq!(got_ports, want_ports);
    let got_sources: BTreeMap<String, u64> = s
        .sources
        .iter()
        .map(|r| (r.ip.to_string(), r.packets))
        .collect();
    assert_eq!(got_sources, sources);
    // The mix really had the awkward cases in it.
    assert!(s.capture.non_ip > 0 && s.capture.not_darknet > 0);
    assert!(s.capture.malformed.values().sum::<u64>() > 0);
    assert!(s
        .ports
        .iter()
        .any(|p| p.proto.as_str() == "ip" && p.port == 47));
}
