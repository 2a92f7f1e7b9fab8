//! The summary a sensor sends per window: one JSON document, `schema` 1.
//!
//! The idempotency key is `(sensor.id, window.start)`: an aggregator stores a
//! retried upload once. Distinct counts in `ports[]` and `totals` are exact
//! unless `truncation.exact` is false; the `*_hll` sketches let the
//! aggregator merge distinct sources across sensors and windows.

use crate::class::{ClassSet, FingerprintSet, PacketClass, Proto};
use crate::hll::Hll;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The schema version this build writes and accepts.
pub const SCHEMA: u32 = 1;

/// One sensor's observations over one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Wire schema version ([`SCHEMA`]).
    pub schema: u32,
    /// Who observed.
    pub sensor: SensorInfo,
    /// When: `[start, end)`.
    pub window: Window,
    /// Capture health over the window.
    pub capture: CaptureHealth,
    /// Darknet packets per class.
    pub classes: ClassTotals,
    /// Number of sources carrying each fingerprint in this window.
    pub fingerprints: FingerprintCounts,
    /// Darknet packet, byte and distinct-source totals.
    pub totals: Totals,
    /// How far the bounded tables had to fall back to sketches.
    pub truncation: Truncation,
    /// One row per (protocol, destination port / ICMP type), most packets first.
    pub ports: Vec<PortRow>,
    /// One row per tracked source, most packets first.
    pub sources: Vec<SourceRow>,
}

impl Summary {
    /// The idempotency key: sensor id and window start.
    pub fn key(&self) -> (&str, Timestamp) {
        (&self.sensor.id, self.window.start)
    }
}

/// The sensor's identity as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorInfo {
    /// Sensor id (unique per aggregator).
    pub id: String,
    /// ISO 3166-1 alpha-2 country of the monitored blocks.
    pub country: String,
    /// Monitored prefixes.
    pub darknet: Vec<String>,
    /// Number of monitored IPv4 addresses.
    pub monitored_ipv4: u64,
}

/// A half-open time window `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
}

/// Capture health counters for one window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHealth {
    /// Frames read from libpcap (live: libpcap's received count).
    pub received: u64,
    /// Dropped by the kernel because the buffer was full (live only).
    pub kernel_dropped: u64,
    /// Dropped by the interface or driver (live only).
    pub if_dropped: u64,
    /// Dropped by the sensor's own pipeline because a queue was full (live only).
    pub pipeline_dropped: u64,
    /// Frames that could not be decoded, by reason.
    pub malformed: BTreeMap<String, u64>,
    /// Well-formed frames that carry no IP packet (ARP, LLDP, ...).
    pub non_ip: u64,
    /// IP packets whose destination is outside the darknet.
    pub not_darknet: u64,
    /// Darknet packets from excluded sources (known research scanners), left
    /// out of every statistic.
    #[serde(default)]
    pub excluded: u64,
    /// Summaries the sensor's spool evicted (oldest first) since the last summary.
    #[serde(default)]
    pub spool_evicted: u64,
}

/// Darknet packets per [`PacketClass`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // field names are the class names, documented on PacketClass
pub struct ClassTotals {
    pub tcp_syn: u64,
    pub backscatter: u64,
    pub udp: u64,
    pub icmp_echo: u64,
    pub icmp_other: u64,
    pub tcp_other: u64,
    pub other: u64,
}

impl ClassTotals {
    /// From counts indexed by [`PacketClass::index`].
    pub fn from_array(a: [u64; PacketClass::COUNT]) -> ClassTotals {
        ClassTotals {
            tcp_syn: a[0],
            backscatter: a[1],
            udp: a[2],
            icmp_echo: a[3],
            icmp_other: a[4],
            tcp_other: a[5],
            other: a[6],
        }
    }

    /// Counts indexed by [`PacketClass::index`].
    pub fn to_array(&self) -> [u64; PacketClass::COUNT] {
        [
            self.tcp_syn,
            self.backscatter,
            self.udp,
            self.icmp_echo,
            self.icmp_other,
            self.tcp_other,
            self.other,
        ]
    }

    /// Sum over classes.
    pub fn total(&self) -> u64 {
        self.to_array().iter().sum()
    }
}

/// Number of sources that carry each fingerprint in the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // field names are the fingerprint names
pub struct FingerprintCounts {
    pub mirai: u64,
    pub zmap: u64,
    pub masscan: u64,
}

/// Darknet totals for the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Darknet packets.
    pub packets: u64,
    /// Darknet bytes (IP length).
    pub bytes: u64,
    /// Distinct source addresses (exact unless `truncation.exact` is false).
    pub sources: u64,
    /// Sketch of all sources, for merging across sensors and windows.
    pub sources_hll: Hll,
}

/// What the bounded tables did in this window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Truncation {
    /// True when every distinct count in this summary is exact.
    pub exact: bool,
    /// The configured cap on tracked sources.
    pub source_cap: u64,
    /// Estimated distinct sources that arrived after the cap was reached and got no row.
    pub sources_untracked: u64,
    /// Packets from those sources (exact; they are in every total).
    pub packets_untracked: u64,
    /// The heaviest untracked sources (space-saving): `packets` overcounts by at most `error`.
    pub heavy: Vec<HeavySource>,
}

/// A heavy hitter among untracked sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeavySource {
    /// Source address.
    pub ip: IpAddr,
    /// Upper bound of its packets.
    pub packets: u64,
    /// `packets - error` is a lower bound.
    pub error: u64,
}

/// Traffic to one (protocol, port) in the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortRow {
    /// Protocol.
    pub proto: Proto,
    /// Destination port, ICMP type, or IP protocol number (see [`Proto`]).
    pub port: u16,
    /// Packets.
    pub packets: u64,
    /// Bytes (IP length).
    pub bytes: u64,
    /// Distinct source addresses.
    pub sources: u64,
    /// Distinct darknet destination addresses.
    pub destinations: u64,
    /// Sketch of the sources, for merging distinct counts.
    pub sources_hll: Hll,
}

/// A (protocol, port) and a packet count, for a source's top ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCount {
    /// Protocol.
    pub proto: Proto,
    /// Port (see [`PortRow::port`]).
    pub port: u16,
    /// Packets this source sent there.
    pub packets: u64,
}

impl PortCount {
    /// The `n` busiest ports of a per-port packet tally, busiest first (ties
    /// by protocol, then port, so the order is stable).
    pub fn busiest(
        tally: impl IntoIterator<Item = ((Proto, u16), u64)>,
        n: usize,
    ) -> Vec<PortCount> {
        let mut v: Vec<PortCount> = tally
            .into_iter()
            .map(|((proto, port), packets)| PortCount {
                proto,
                port,
                packets,
            })
            .collect();
        v.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then(a.proto.cmp(&b.proto))
                .then(a.port.cmp(&b.port))
        });
        v.truncate(n);
        v
    }
}

/// A source's busiest ports, busiest first: a fixed array, so a source row
/// costs no allocation. On the wire, a list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopPorts {
    len: u8,
    items: [PortCount; TopPorts::CAP],
}

impl TopPorts {
    /// Most ports kept.
    pub const CAP: usize = 5;

    /// Appends `p` if there is room; false otherwise.
    pub fn push(&mut self, p: PortCount) -> bool {
        if (self.len as usize) < Self::CAP {
            self.items[self.len as usize] = p;
            self.len += 1;
            true
        } else {
            false
        }
    }
}

impl std::ops::Deref for TopPorts {
    type Target = [PortCount];
    fn deref(&self) -> &[PortCount] {
        &self.items[..self.len as usize]
    }
}

impl Serialize for TopPorts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for TopPorts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<PortCount>::deserialize(d)?;
        if v.len() > Self::CAP {
            return Err(serde::de::Error::custom("top_ports lists at most 5 ports"));
        }
        let mut t = TopPorts::default();
        for p in v {
            t.push(p);
        }
        Ok(t)
    }
}

/// What one source did in the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRow {
    /// Source address.
    pub ip: IpAddr,
    /// Packets.
    pub packets: u64,
    /// Bytes (IP length).
    pub bytes: u64,
    /// Distinct (protocol, port) pairs it sent to.
    pub ports: u64,
    /// Distinct darknet addresses it sent to.
    pub destinations: u64,
    /// Its busiest ports (at most [`TopPorts::CAP`]).
    pub top_ports: TopPorts,
    /// Classes of its packets.
    pub classes: ClassSet,
    /// Fingerprints it carries (every IPv4 TCP packet matched); omitted when none.
    #[serde(default, skip_serializing_if = "FingerprintSet::is_empty")]
    pub fingerprints: FingerprintSet,
    /// First packet time.
    pub first_seen: Timestamp,
    /// Last packet time.
    pub last_seen: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_totals_array_round_trip() {
        let a = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(ClassTotals::from_array(a).to_array(), a);
        assert_eq!(ClassTotals::from_array(a).total(), 28);
        let j = serde_json::to_value(ClassTotals::from_array(a)).unwrap();
        for c in PacketClass::ALL {
            assert_eq!(j[c.as_str()], a[c.index()], "{}", c.as_str());
        }
    }
}
