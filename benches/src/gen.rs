//! A seeded generator of darknet captures that look like Internet background
//! radiation, written with libpcap, together with their ground truth in the
//! same JSON shape as `testdata/realscan/*.truth.json`.
//!
//! The mix: heavy-tailed sources (a few send most packets); Mirai, ZMap and
//! Masscan scanners with their header fingerprints; generic SYN scanners over
//! a Zipf-like port mix; UDP probers; ICMP echo sweeps; backscatter (SYN-ACK,
//! RST, ICMP unreachable quoting a spoofed packet); IPv6 scanners; GRE; and,
//! as in real links, 802.1Q / QinQ tags, ARP, packets to addresses outside
//! the darknet and truncated (malformed) frames.
//!
//! The truth is computed from the fields actually written (fingerprint rules
//! are evaluated per packet, as tshark-based truth does), never from the
//! generator's intent.

use darkscope_common::{Addr, PacketClass, Proto};
use etherparse::PacketBuilder;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Frames to write.
    pub packets: u64,
    /// Distinct sources in the population.
    pub sources: u32,
    /// RNG seed: the same seed gives the same file.
    pub seed: u64,
    /// Capture start, seconds since the epoch.
    pub start_secs: u64,
    /// Capture duration in seconds (timestamps spread evenly with jitter).
    pub duration_secs: u64,
    /// Compute the ground truth (costs memory for large files).
    pub truth: bool,
    /// A labelled scanning campaign on top of the background.
    pub surge: Option<Surge>,
}

/// A labelled scanning surge: from `from_secs` to `to_secs` after the
/// capture's start, `share` of the frames come from a ZMap-like campaign of
/// `sources` fresh addresses (none in the background population), each
/// probing tcp/`port` (IP ID 54321: the ZMap fingerprint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Surge {
    /// Destination TCP port.
    pub port: u16,
    /// Onset, seconds after the start.
    pub from_secs: u64,
    /// End, seconds after the start.
    pub to_secs: u64,
    /// Share of the frames in that time that belong to the campaign.
    pub share: f64,
    /// Addresses in the campaign.
    pub sources: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            packets: 100_000,
            sources: 20_000,
            seed: 1,
            start_secs: 1_763_683_200, // 2025-11-21T00:00:00Z
            duration_secs: 300,
            truth: true,
            surge: None,
        }
    }
}

/// The generated darknet: `198.19.0.0/16` and `2001:db8:dead::/48`.
pub const DARKNET: &str = "198.19.0.0/16,2001:db8:dead::/48";

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// libpcap could not write the file.
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
    /// Writing the truth failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Building a frame failed (a bug).
    #[error("build: {0}")]
    Build(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mirai,
    Zmap,
    Masscan,
    SynScan,
    UdpProbe,
    IcmpSweep,
    Backscatter,
    V6Scan,
    Gre,
}

#[derive(Clone, Copy, Debug)]
struct Source {
    addr: Addr,
    kind: Kind,
    port: u16,
}

const POPULAR_TCP: [u16; 16] = [
    23, 445, 22, 80, 8080, 3389, 443, 2323, 5555, 81, 8443, 1433, 3306, 6379, 5900, 21,
];
const POPULAR_UDP: [u16; 8] = [53, 123, 161, 1900, 5060, 11211, 137, 389];

/// Ground truth, in the shape of `truth.json` plus the frame-level counters.
#[derive(Debug, Default, Serialize)]
pub struct Truth {
    /// File name.
    pub capture: String,
    /// All frames.
    pub packets_total: u64,
    /// Frames to the darknet.
    pub packets_darknet: u64,
    /// IP frames to other addresses.
    pub not_darknet: u64,
    /// Frames without IP (ARP).
    pub non_ip: u64,
    /// Truncated frames.
    pub malformed: u64,
    /// Darknet prefixes.
    pub darknet: Vec<String>,
    /// Class totals.
    pub classes: HashMap<String, u64>,
    /// Port rows.
    pub ports: Vec<TruthPort>,
    /// Source rows.
    pub sources: Vec<TruthSource>,
    /// Sources carrying each fingerprint.
    pub fingerprints: HashMap<String, Vec<String>>,
}

/// A truth port row.
#[derive(Debug, Serialize)]
pub struct TruthPort {
    /// Protocol name.
    pub proto: String,
    /// Port / type / protocol number.
    pub port: u16,
    /// Packets.
    pub packets: u64,
    /// Distinct sources.
    pub sources: u64,
    /// Distinct destinations.
    pub destinations: u64,
}

/// A truth source row.
#[derive(Debug, Serialize)]
pub struct TruthSource {
    /// Address.
    pub ip: String,
    /// Packets.
    pub packets: u64,
}

/// Packets, distinct sources and distinct destinations of one port.
type PortTruth = (u64, HashSet<Addr>, HashSet<Addr>);

#[derive(Default)]
struct Acc {
    classes: HashMap<&'static str, u64>,
    ports: HashMap<(Proto, u16), PortTruth>,
    sources: HashMap<Addr, u64>,
    // per source: eligible TCP packets, matches per rule
    fp: HashMap<Addr, (u64, [u64; 3])>,
}

fn rand_public_v4(rng: &mut SmallRng) -> u32 {
    loop {
        let a: u32 = rng.gen();
        let first = a >> 24;
        // Avoid the darknet's own /15 and obviously special blocks.
        if (a >> 17) != (0xc612 >> 1) && !matches!(first, 0 | 10 | 127 | 224..=255) {
            return a;
        }
    }
}

fn darknet_v4(rng: &mut SmallRng) -> u32 {
    0xc613_0000 | rng.gen_range(0..65536u32)
}

fn darknet_v6(rng: &mut SmallRng) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0xde, 0xad]);
    let low: u64 = rng.gen();
    b[8..].copy_from_slice(&low.to_be_bytes());
    b
}

fn population(cfg: &GenConfig, rng: &mut SmallRng) -> Vec<Source> {
    (0..cfg.sources.max(1))
        .map(|_| {
            let r: f64 = rng.gen();
            let kind = match r {
                x if x < 0.25 => Kind::Mirai,
                x if x < 0.32 => Kind::Zmap,
                x if x < 0.39 => Kind::Masscan,
                x if x < 0.64 => Kind::SynScan,
                x if x < 0.76 => Kind::UdpProbe,
                x if x < 0.81 => Kind::IcmpSweep,
                x if x < 0.95 => Kind::Backscatter,
                x if x < 0.99 => Kind::V6Scan,
                _ => Kind::Gre,
            };
            let addr = if kind == Kind::V6Scan {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                b[4] = rng.gen_range(0..0xde);
                b[8..].copy_from_slice(&rng.gen::<u64>().to_be_bytes());
                Addr::v6(b)
            } else {
                Addr::v4(rand_public_v4(rng))
            };
            let port = match kind {
                Kind::Zmap | Kind::Masscan | Kind::SynScan | Kind::V6Scan => {
                    if rng.gen_bool(0.8) {
                        POPULAR_TCP[zipf(rng, POPULAR_TCP.len())]
                    } else {
                        rng.gen_range(1..65535)
                    }
                }
                Kind::UdpProbe => POPULAR_UDP[zipf(rng, POPULAR_UDP.len())],
                Kind::Backscatter => [80, 443, 53, 25][rng.gen_range(0..4)],
                _ => 23,
            };
            Source { addr, kind, port }
        })
        .collect()
}

/// An index in `0..n`, skewed towards 0 (heavy-tailed).
fn zipf(rng: &mut SmallRng, n: usize) -> usize {
    let u: f64 = rng.gen();
    ((n as f64) * u.powf(3.0)) as usize % n
}

/// Writes a capture to `path` and returns its ground truth.
pub fn generate(cfg: &GenConfig, path: &Path) -> Result<Truth, GenError> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let pop = population(cfg, &mut rng);
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET)?;
    let mut out = dead.savefile(path)?;
    let mut acc = Acc::default();
    let mut truth = Truth {
        capture: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        darknet: DARKNET.split(',').map(String::from).collect(),
        ..Default::default()
    };
    let mut frame = Vec::with_capacity(256);
    let step_us = (cfg.duration_secs * 1_000_000) / cfg.packets.max(1);
    let mut ts_us = cfg.start_secs * 1_000_000;
    // The campaign has its own random stream, so the background stays the same.
    let mut crng = SmallRng::seed_from_u64(cfg.seed ^ 0x5eed_c0de);
    let campaign: Vec<Source> = cfg
        .surge
        .map(|s| {
            (0..s.sources.max(1))
                .map(|_| Source {
                    addr: Addr::v4(rand_public_v4(&mut crng)),
                    kind: Kind::Zmap,
                    port: s.port,
                })
                .collect()
        })
        .unwrap_or_default();
    for _ in 0..cfg.packets {
        ts_us += rng.gen_range(0..=2 * step_us.max(1));
        frame.clear();
        let roll: f64 = rng.gen();
        let mut kind_of_frame = FrameKind::Darknet;
        if roll < 0.002 {
            arp(&mut frame);
            kind_of_frame = FrameKind::NonIp;
        } else {
            let mut src = pop[zipf(&mut rng, pop.len())];
            if let Some(s) = cfg.surge {
                let at = ts_us / 1_000_000 - cfg.start_secs;
                if (s.from_secs..s.to_secs).contains(&at) && crng.gen::<f64>() < s.share {
                    src = campaign[crng.gen_range(0..campaign.len())];
                }
            }
            let to_darknet = rng.gen::<f64>() >= 0.01;
            let pkt = packet(&mut rng, &src, to_darknet, &mut frame)?;
            if roll < 0.003 {
                // Truncate inside the IP header: malformed.
                frame.truncate(14 + 10);
                kind_of_frame = FrameKind::Malformed;
            } else if !to_darknet {
                kind_of_frame = FrameKind::NotDarknet;
            } else if cfg.truth {
                account(&mut acc, &pkt);
            }
        }
        if kind_of_frame != FrameKind::Malformed {
            tag_vlan(&mut rng, &mut frame);
        }
        match kind_of_frame {
            FrameKind::Darknet => truth.packets_darknet += 1,
            FrameKind::NotDarknet => truth.not_darknet += 1,
            FrameKind::NonIp => truth.non_ip += 1,
            FrameKind::Malformed => truth.malformed += 1,
        }
        truth.packets_total += 1;
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: (ts_us / 1_000_000) as libc::time_t,
                tv_usec: (ts_us % 1_000_000) as libc::suseconds_t,
            },
            caplen: frame.len() as u32,
            len: frame.len() as u32,
        };
        out.write(&pcap::Packet::new(&header, &frame));
    }
    out.flush()?;
    if cfg.truth {
        finish_truth(&mut truth, acc);
    }
    Ok(truth)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Darknet,
    NotDarknet,
    NonIp,
    Malformed,
}

/// The fields the truth needs about one written packet.
struct Written {
    src: Addr,
    dst: Addr,
    proto: Proto,
    port: u16,
    class: PacketClass,
    /// IPv4 TCP: (seq, ip_id, dport).
    tcp4: Option<(u32, u16, u16)>,
}

fn tag_vlan(rng: &mut SmallRng, frame: &mut Vec<u8>) {
    if frame.len() < 14 {
        return;
    }
    let r: f64 = rng.gen();
    let tags: &[u16] = if r < 0.03 {
        &[0x88a8, 0x8100]
    } else if r < 0.13 {
        &[0x8100]
    } else {
        &[]
    };
    // Insert tags after the MACs: [tpid, tci] per tag, the original EtherType follows.
    let mut at = 12;
    for (i, tpid) in tags.iter().enumerate() {
        let tci = 100 + i as u16 * 100;
        let mut tag = [0u8; 4];
        tag[..2].copy_from_slice(&tpid.to_be_bytes());
        tag[2..].copy_from_slice(&tci.to_be_bytes());
        frame.splice(at..at, tag);
        at += 4;
    }
}

fn arp(frame: &mut Vec<u8>) {
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[
        2, 0, 0, 0, 0, 9, 198, 19, 0, 1, 0, 0, 0, 0, 0, 0, 198, 19, 0, 2,
    ]);
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn packet(
    rng: &mut SmallRng,
    s: &Source,
    to_darknet: bool,
    frame: &mut Vec<u8>,
) -> Result<Written, GenError> {
    let err = |e: etherparse::err::packet::BuildWriteError| GenError::Build(e.to_string());
    if s.kind == Kind::V6Scan {
        let dst = if to_darknet {
            darknet_v6(rng)
        } else {
            let mut b = darknet_v6(rng);
            b[5] = 0xee;
            b
        };
        let src = s.addr.0.to_be_bytes();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(src, dst, 64)
            .tcp(rng.gen(), s.port, rng.gen(), 1024)
            .syn()
            .write(frame, &[])
            .map_err(err)?;
        return Ok(Written {
            src: s.addr,
            dst: Addr::v6(dst),
            proto: Proto::Tcp,
            port: s.port,
            class: PacketClass::TcpSyn,
            tcp4: None,
        });
    }
    let src = s.addr.as_v4().unwrap_or(1);
    let dst = if to_darknet {
        darknet_v4(rng)
    } else {
        0xcb00_7100 | rng.gen_range(0..256u32) // 203.0.113.0/24
    };
    let (sb, db) = (src.to_be_bytes(), dst.to_be_bytes());
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut w = Written {
        src: s.addr,
        dst: Addr::v4(dst),
        proto: Proto::Tcp,
        port: s.port,
        class: PacketClass::TcpSyn,
        tcp4: None,
    };
    // IPv4 header fields are set through an explicit header so the ID is ours.
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, sb, db)
        .map_err(|e| GenError::Build(e.to_string()))?;
    ip.identification = rng.gen();
    match s.kind {
        Kind::Mirai | Kind::Zmap | Kind::Masscan | Kind::SynScan => {
            let dport = match s.kind {
                Kind::Mirai => {
                    if rng.gen_bool(0.9) {
                        23
                    } else {
                        2323
                    }
                }
                Kind::Masscan | Kind::SynScan if rng.gen_bool(0.3) => {
                    POPULAR_TCP[zipf(rng, POPULAR_TCP.len())]
                }
                _ => s.port,
            };
            let mut seq: u32 = rng.gen();
            match s.kind {
                Kind::Mirai => seq = dst,
                Kind::Zmap => ip.identification = 54321,
                Kind::Masscan => {
                    ip.time_to_live = 255;
                    ip.identification = ((dst ^ dport as u32 ^ seq) & 0xffff) as u16;
                }
                _ => {}
            }
            let win = if s.kind == Kind::Masscan { 1024 } else { 65535 };
            eth.ip(etherparse::IpHeaders::Ipv4(ip.clone(), Default::default()))
                .tcp(rng.gen_range(1024..65535), dport, seq, win)
                .syn()
                .write(frame, &[])
                .map_err(err)?;
            w.port = dport;
            w.tcp4 = Some((seq, ip.identification, dport));
        }
        Kind::Backscatter => {
            let dport: u16 = rng.gen_range(1024..65535);
            let r: f64 = rng.gen();
            if r < 0.5 {
                let seq = rng.gen();
                eth.ip(etherparse::IpHeaders::Ipv4(ip.clone(), Default::default()))
                    .tcp(s.port, dport, seq, 29200)
                    .syn()
                    .ack(rng.gen())
                    .write(frame, &[])
                    .map_err(err)?;
                w.tcp4 = Some((seq, ip.identification, dport));
                w.port = dport;
                w.class = PacketClass::Backscatter;
            } else if r < 0.8 {
                let seq = rng.gen();
                eth.ip(etherparse::IpHeaders::Ipv4(ip.clone(), Default::default()))
                    .tcp(s.port, dport, seq, 0)
                    .rst()
                    .write(frame, &[])
                    .map_err(err)?;
                w.tcp4 = Some((seq, ip.identification, dport));
                w.port = dport;
                w.class = PacketClass::Backscatter;
            } else {
                // ICMP port unreachable quoting a UDP packet "from" the darknet.
                let mut quoted = Vec::with_capacity(28);
                PacketBuilder::ipv4(db, sb, 50)
                    .udp(dport, 53)
                    .write(&mut quoted, &[])
                    .map_err(err)?;
                PacketBuilder::ethernet2(MAC_A, MAC_B)
                    .ipv4(sb, db, 60)
                    .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::Port,
                    ))
                    .write(frame, &quoted)
                    .map_err(err)?;
                w.proto = Proto::Icmp;
                w.port = 3;
                w.class = PacketClass::Backscatter;
            }
        }
        Kind::UdpProbe => {
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(sb, db, 64)
                .udp(rng.gen_range(1024..65535), s.port)
                .write(frame, &[0u8; 16])
                .map_err(err)?;
            w.proto = Proto::Udp;
            w.class = PacketClass::Udp;
        }
        Kind::IcmpSweep => {
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(sb, db, 64)
                .icmpv4_echo_request(rng.gen(), rng.gen())
                .write(frame, &[0u8; 8])
                .map_err(err)?;
            w.proto = Proto::Icmp;
            w.port = 8;
            w.class = PacketClass::IcmpEcho;
        }
        Kind::Gre => {
            let mut gre_ip = ip.clone();
            gre_ip.protocol = etherparse::IpNumber::GRE;
            let payload = [0u8, 0, 0x08, 0x00];
            gre_ip
                .set_payload_len(payload.len())
                .map_err(|e| GenError::Build(e.to_string()))?;
            etherparse::Ethernet2Header {
                source: MAC_A,
                destination: MAC_B,
                ether_type: etherparse::EtherType::IPV4,
            }
            .write(frame)?;
            gre_ip
                .write(frame)
                .map_err(|e| GenError::Build(e.to_string()))?;
            frame.extend_from_slice(&payload);
            w.proto = Proto::Ip;
            w.port = 47;
            w.class = PacketClass::Other;
        }
        Kind::V6Scan => unreachable!("handled above"),
    }
    Ok(w)
}

fn account(acc: &mut Acc, w: &Written) {
    *acc.classes.entry(w.class.as_str()).or_default() += 1;
    let p = acc.ports.entry((w.proto, w.port)).or_default();
    p.0 += 1;
    p.1.insert(w.src);
    p.2.insert(w.dst);
    *acc.sources.entry(w.src).or_default() += 1;
    if let (Some((seq, id, dport)), Some(d)) = (w.tcp4, w.dst.as_v4()) {
        let e = acc.fp.entry(w.src).or_default();
        e.0 += 1;
        e.1[0] += (seq == d) as u64;
        e.1[1] += (id == 54321) as u64;
        e.1[2] += (id == ((d ^ dport as u32 ^ seq) & 0xffff) as u16) as u64;
    }
}

fn finish_truth(t: &mut Truth, acc: Acc) {
    t.classes = acc
        .classes
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut ports: Vec<TruthPort> = acc
        .ports
        .into_iter()
        .map(|((proto, port), (n, s, d))| TruthPort {
            proto: proto.as_str().to_string(),
            port,
            packets: n,
            sources: s.len() as u64,
            destinations: d.len() as u64,
        })
        .collect();
    ports.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.port.cmp(&b.port)));
    t.ports = ports;
    let mut sources: Vec<TruthSource> = acc
        .sources
        .into_iter()
        .map(|(a, n)| TruthSource {
            ip: a.to_string(),
            packets: n,
        })
        .collect();
    sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
    t.sources = sources;
    for (i, name) in ["mirai", "zmap", "masscan"].into_iter().enumerate() {
        let mut v: Vec<String> = acc
            .fp
            .iter()
            .filter(|(_, (n, m))| *n > 0 && m[i] == *n)
            .map(|(a, _)| a.to_string())
            .collect();
        v.sort();
        t.fingerprints.insert(name.to_string(), v);
    }
}

/// Writes `n` one-packet TCP SYNs from `n` distinct (spoofed) IPv4 sources to
/// one darknet address within one second: the worst case for the source table.
pub fn spoofed_flood(path: &Path, n: u32, start_secs: u64) -> Result<(), GenError> {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET)?;
    let mut out = dead.savefile(path)?;
    let mut frame = Vec::with_capacity(64);
    for i in 0..n {
        frame.clear();
        // Distinct sources: a bijective scramble of i inside 1.0.0.0-126.255.255.255.
        let src = 0x0100_0000 + (i.wrapping_mul(2_654_435_761) % 0x7e00_0000);
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src.to_be_bytes(), [198, 19, 0, 1], 64)
            .tcp(40000, 80, i, 1024)
            .syn()
            .write(&mut frame, &[])
            .map_err(|e| GenError::Build(e.to_string()))?;
        let us = (i as u64 * 1_000_000) / n.max(1) as u64;
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: (start_secs + us / 1_000_000) as libc::time_t,
                tv_usec: (us % 1_000_000) as libc::suseconds_t,
            },
            caplen: frame.len() as u32,
            len: frame.len() as u32,
        };
        out.write(&pcap::Packet::new(&header, &frame));
    }
    out.flush()?;
    Ok(())
}
