//! tshark is the oracle: on a generated capture that mixes every link and
//! protocol case (VLAN, QinQ, IPv6, ICMP errors, GRE, ARP, malformed frames),
//! the sensor's per-port and per-source counts equal what tshark dissects.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use darkscope_benches::gen::{generate, GenConfig};
use darkscope_common::{Addr, PrefixSet};
use std::collections::{BTreeMap, HashSet};
use std::process::Command;

/// tshark's dissection of `pcap` (frames passing `filter`), one line per
/// frame: source and destination (`ip.src`, `ipv6.src`, `ip.dst`,
/// `ipv6.dst`), then `fields`, each field's first occurrence, tab-separated.
fn tshark_fields(pcap: &std::path::Path, filter: Option<&str>, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap);
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    cmd.args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]);
    for f in ["ip.src", "ipv6.src", "ip.dst", "ipv6.dst"]
        .iter()
        .chain(fields)
    {
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
    String::from_utf8(out.stdout).unwrap()
}

/// A line of [`tshark_fields`] as (source, destination, the other fields),
/// or `None` when its destination is not in the darknet.
fn to_darknet<'a>(line: &'a str, darknet: &PrefixSet) -> Option<(&'a str, &'a str, Vec<&'a str>)> {
    let r: Vec<&str> = line.split('\t').collect();
    let get = |i: usize| r.get(i).copied().unwrap_or("");
    let src = if get(0).is_empty() { get(1) } else { get(0) };
    let dst = if get(2).is_empty() { get(3) } else { get(2) };
    let ip = dst.parse::<std::net::IpAddr>().ok()?;
    darknet
        .contains(Addr::from(ip))
        .then(|| (src, dst, r.get(4..).unwrap_or_default().to_vec()))
}

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

    let lines = tshark_fields(
        &pcap,
        None,
        &[
            "ip.proto",
            "ipv6.nxt",
            "tcp.dstport",
            "udp.dstport",
            "icmp.type",
            "icmpv6.type",
        ],
    );
    let darknet = PrefixSet::parse_list(common::DARKNET).unwrap();

    // (proto, port) -> (packets, sources, destinations); source -> packets
    let mut ports: BTreeMap<PortKey, PortSeen> = BTreeMap::new();
    let mut sources: BTreeMap<String, u64> = BTreeMap::new();
    let mut frames = 0u64;
    for line in lines.lines() {
        frames += 1;
        let Some((src, dst, r)) = to_darknet(line, &darknet) else {
            continue;
        };
        let get = |i: usize| r.get(i).copied().unwrap_or("");
        let proto = if get(0).is_empty() { get(1) } else { get(0) };
        let key = match proto {
            "1" => ("icmp".to_string(), get(4).parse().unwrap()),
            "58" => ("icmpv6".to_string(), get(5).parse().unwrap()),
            _ if !get(2).is_empty() => ("tcp".to_string(), get(2).parse().unwrap()),
            _ if !get(3).is_empty() => ("udp".to_string(), get(3).parse().unwrap()),
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

/// The Nmap rule on the real captures, with tshark as the oracle: a source
/// carries it when every TCP packet it sent to the darknet is a SYN without
/// ACK, with window 1024 and options exactly MSS 1460 (`020405b4`), unless
/// every one also has Masscan's IPv4 ID (later Masscans send that window
/// and option too). nmap's SYN scans (IPv4 and IPv6) carry it; Masscan
/// 1.3.2 (window 1024, no options), ZMap, hping3 and the spoofed sources
/// do not.
#[test]
fn nmap_fingerprint_matches_tshark_fields_on_real_captures() {
    use darkscope_common::Fingerprint;
    let darknet = PrefixSet::parse_list(common::DARKNET).unwrap();
    let mut labelled = 0;
    for name in ["nmap", "nmap6", "masscan", "zmap", "mirai", "all-small"] {
        let pcap = common::testdata(&format!("{name}.pcap"));
        let lines = tshark_fields(
            &pcap,
            Some("tcp && !icmp && !icmpv6"),
            &[
                "tcp.flags",
                "tcp.window_size_value",
                "tcp.options",
                "ip.id",
                "tcp.dstport",
                "tcp.seq_raw",
            ],
        );
        let hex = |v: &str| u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
        // source -> (every TCP packet so far was Nmap's probe, had Masscan's ID)
        let mut every: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for line in lines.lines() {
            let Some((src, dst, r)) = to_darknet(line, &darknet) else {
                continue;
            };
            let get = |i: usize| r.get(i).copied().unwrap_or("");
            let nmap = hex(get(0)) & 0x12 == 0x02
                && get(1) == "1024"
                && get(2).replace(':', "") == "020405b4";
            let masscan = match dst.parse::<std::net::Ipv4Addr>() {
                Ok(d) => {
                    let (port, seq): (u32, u32) =
                        (get(4).parse().unwrap(), get(5).parse().unwrap());
                    hex(get(3)) == (u32::from(d) ^ port ^ seq) & 0xffff
                }
                Err(_) => false,
            };
            let e = every.entry(src.to_string()).or_insert((true, true));
            e.0 &= nmap;
            e.1 &= masscan;
        }
        let want: HashSet<String> = every
            .into_iter()
            .filter_map(|(ip, (nmap, masscan))| (nmap && !masscan).then_some(ip))
            .collect();
        let (sums, _) = common::run_file(&pcap, 86_400, 2, 1_000_000);
        let s = &sums[0];
        let got: HashSet<String> = s
            .sources
            .iter()
            .filter(|r| r.fingerprints.has(Fingerprint::Nmap))
            .map(|r| r.ip.to_string())
            .collect();
        assert_eq!(got, want, "{name}: nmap sources");
        assert_eq!(s.fingerprints[Fingerprint::Nmap], want.len() as u64);
        labelled += want.len();
    }
    // nmap (1), nmap6 (1), and both again in all-small.
    assert_eq!(labelled, 4);
}
