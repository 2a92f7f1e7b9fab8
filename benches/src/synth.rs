//! Synthetic but valid summaries for aggregator benchmarks: `sources` source
//! rows and `ports` port rows, every total consistent, sketches filled.

use darkscope_common::hll::Hll;
use darkscope_common::wire::*;
use darkscope_common::{Addr, ClassSet, PacketClass, Proto, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A summary of `sensor` for the window starting at `start` (µs).
pub fn summary(sensor: &str, start: u64, sources: usize, ports: usize, seed: u64) -> Summary {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ports = ports.max(1);
    let mut port_rows: Vec<PortRow> = (0..ports).map(|i| tcp_port(i as u16)).collect();
    let mut all = Hll::new();
    let mut packets = 0;
    let rows: Vec<SourceRow> = (0..sources)
        .map(|_| {
            let a = Addr::v4(rng.gen());
            let n: u64 = rng.gen_range(1..20);
            let p = &mut port_rows[rng.gen_range(0..ports)];
            p.packets += n;
            p.bytes += 40 * n;
            p.sources += 1;
            p.sources_hll.insert(a);
            all.insert(a);
            packets += n;
            let mut top = TopPorts::default();
            top.push(PortCount {
                proto: Proto::Tcp,
                port: p.port,
                packets: n,
            });
            SourceRow {
                ip: a.to_ip(),
                packets: n,
                bytes: 40 * n,
                ports: 1,
                destinations: n.min(3),
                top_ports: top,
                classes: ClassSet(1 << PacketClass::TcpSyn as u8),
                fingerprints: Default::default(),
                first_seen: Timestamp(start + 1_000),
                last_seen: Timestamp(start + 50_000_000),
            }
        })
        .collect();
    port_rows.retain(|p| p.packets > 0);
    let info = SensorInfo {
        id: sensor.to_string(),
        country: "JP".into(),
        darknet: vec!["198.19.0.0/16".into()],
        monitored_ipv4: 65536,
    };
    syn_summary(info, start, port_rows, rows, sources as u64, all)
}

/// The summaries an ingest benchmark sends, as command-line options.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Batch {
    /// Summaries in all.
    #[arg(long, default_value_t = 4000)]
    pub summaries: usize,
    /// Source rows per summary.
    #[arg(long, default_value_t = 1000)]
    pub sources: usize,
    /// Port rows per summary.
    #[arg(long, default_value_t = 100)]
    pub ports: usize,
}

impl Batch {
    /// Summary `i` of the batch: sensor `sensors[i % n]`, its window
    /// `i / n` minutes after 2025-11-21T00:00Z, seeded by `i`.
    pub fn summary(&self, sensors: &[String], i: usize) -> Summary {
        let n = sensors.len().max(1);
        let start = 1_763_683_200_000_000 + (i / n) as u64 * 60_000_000;
        let id = sensors.get(i % n).map_or("bench", String::as_str);
        summary(id, start, self.sources, self.ports, i as u64)
    }
}

/// An empty TCP port row (one destination) for a builder to fill.
pub fn tcp_port(port: u16) -> PortRow {
    PortRow {
        proto: Proto::Tcp,
        port,
        packets: 0,
        bytes: 0,
        sources: 0,
        destinations: 1,
        sources_hll: Hll::new(),
    }
}

/// A one-minute summary from `start` (µs) of TCP SYN packets only, built
/// from its port rows and source rows: totals and class counts follow from
/// the port rows, packets of sources without a row are untracked, and
/// `distinct`/`hll` are the window's distinct sources.
pub fn syn_summary(
    sensor: SensorInfo,
    start: u64,
    ports: Vec<PortRow>,
    sources: Vec<SourceRow>,
    distinct: u64,
    hll: Hll,
) -> Summary {
    let packets: u64 = ports.iter().map(|p| p.packets).sum();
    let untracked = packets - sources.iter().map(|r| r.packets).sum::<u64>().min(packets);
    Summary {
        schema: SCHEMA,
        sensor,
        window: Window {
            start: Timestamp(start),
            end: Timestamp(start + 60_000_000),
        },
        capture: CaptureHealth {
            received: packets,
            ..Default::default()
        },
        classes: ClassTotals {
            tcp_syn: packets,
            ..Default::default()
        },
        fingerprints: Default::default(),
        totals: Totals {
            packets,
            bytes: 40 * packets,
            sources: distinct,
            sources_hll: hll,
        },
        truncation: Truncation {
            exact: untracked == 0,
            source_cap: 1_000_000,
            packets_untracked: untracked,
            ..Default::default()
        },
        ports,
        sources,
    }
}
