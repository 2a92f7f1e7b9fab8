//! The stored form of a window's source rows: fixed-size binary records
//! sorted by address, one blob per (window, sensor). One insert per summary
//! instead of one per source, and a point lookup is a binary search over
//! 114-byte records read through incremental blob I/O.

use darkscope_common::wire::{PortCount, SourceRow};
use darkscope_common::{Addr, Proto};

/// Bytes per record.
pub const REC: usize = 114;
const TOP: usize = 5;

/// One source row as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRec {
    /// Address, 16 bytes big-endian (IPv4 mapped).
    pub ip: [u8; 16],
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Distinct ports.
    pub ports: u32,
    /// Distinct destinations.
    pub destinations: u32,
    /// Class bits.
    pub classes: u8,
    /// Fingerprint bits.
    pub fingerprints: u8,
    /// First seen, µs.
    pub first: u64,
    /// Last seen, µs.
    pub last: u64,
    /// Busiest ports: (proto, port, packets); `n_top` are valid.
    pub top: [(u8, u16, u64); TOP],
    /// Valid entries in `top`.
    pub n_top: u8,
}

impl SourceRec {
    /// Back to a wire row.
    pub fn to_row(&self) -> SourceRow {
        let mut top_ports = darkscope_common::wire::TopPorts::default();
        for p in self.top_ports() {
            top_ports.push(p);
        }
        SourceRow {
            ip: Addr(u128::from_be_bytes(self.ip)).to_ip(),
            packets: self.packets,
            bytes: self.bytes,
            ports: self.ports as u64,
            destinations: self.destinations as u64,
            top_ports,
            classes: darkscope_common::ClassSet(self.classes),
            fingerprints: darkscope_common::FingerprintSet(self.fingerprints),
            first_seen: darkscope_common::Timestamp(self.first),
            last_seen: darkscope_common::Timestamp(self.last),
        }
    }

    /// From a wire row.
    pub fn from_row(r: &SourceRow) -> SourceRec {
        let mut top = [(0u8, 0u16, 0u64); TOP];
        let mut n_top = 0u8;
        for (slot, p) in top.iter_mut().zip(r.top_ports.iter()) {
            *slot = (p.proto as u8, p.port, p.packets);
            n_top += 1;
        }
        SourceRec {
            ip: Addr::from(r.ip).0.to_be_bytes(),
            packets: r.packets,
            bytes: r.bytes,
            ports: r.ports.min(u32::MAX as u64) as u32,
            destinations: r.destinations.min(u32::MAX as u64) as u32,
            classes: r.classes.0,
            fingerprints: r.fingerprints.0,
            first: r.first_seen.0,
            last: r.last_seen.0,
            top,
            n_top,
        }
    }

    /// Its busiest ports.
    pub fn top_ports(&self) -> impl Iterator<Item = PortCount> + '_ {
        self.top[..self.n_top as usize]
            .iter()
            .map(|&(p, port, packets)| PortCount {
                proto: Proto::ALL.get(p as usize).copied().unwrap_or(Proto::Ip),
                port,
                packets,
            })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ip);
        out.extend_from_slice(&self.packets.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.ports.to_le_bytes());
        out.extend_from_slice(&self.destinations.to_le_bytes());
        out.push(self.classes);
        out.push(self.fingerprints);
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.last.to_le_bytes());
        out.push(self.n_top);
        for (p, port, packets) in self.top {
            out.push(p);
            out.extend_from_slice(&port.to_le_bytes());
            out.extend_from_slice(&packets.to_le_bytes());
        }
    }

    /// Reads one record (`b` must hold [`REC`] bytes).
    pub fn read(b: &[u8]) -> Option<SourceRec> {
        let b = b.get(..REC)?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[..16]);
        let mut top = [(0u8, 0u16, 0u64); TOP];
        for (i, slot) in top.iter_mut().enumerate() {
            let at = 59 + i * 11;
            *slot = (
                b[at],
                u16::from_le_bytes([b[at + 1], b[at + 2]]),
                u64_at(at + 3),
            );
        }
        Some(SourceRec {
            ip,
            packets: u64_at(16),
            bytes: u64_at(24),
            ports: u32_at(32),
            destinations: u32_at(36),
            classes: b[40],
            fingerprints: b[41],
            first: u64_at(42),
            last: u64_at(50),
            n_top: b[58].min(TOP as u8),
            top,
        })
    }
}

/// Encodes rows sorted by address.
pub fn encode(rows: &[SourceRow]) -> Vec<u8> {
    let mut recs: Vec<SourceRec> = rows.iter().map(SourceRec::from_row).collect();
    recs.sort_unstable_by_key(|r| r.ip);
    let mut out = Vec::with_capacity(recs.len() * REC);
    for r in &recs {
        r.write(&mut out);
    }
    out
}

/// Every record of a blob.
pub fn decode(b: &[u8]) -> impl Iterator<Item = SourceRec> + '_ {
    b.chunks_exact(REC).filter_map(SourceRec::read)
}

/// Binary search for `ip` with a record reader (`read(i)` = record `i`).
pub fn find(
    n: usize,
    ip: [u8; 16],
    mut read: impl FnMut(usize) -> Option<SourceRec>,
) -> Option<SourceRec> {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let r = read(mid)?;
        match r.ip.cmp(&ip) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(r),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkscope_common::wire::TopPorts;
    use darkscope_common::{ClassSet, FingerprintSet, Timestamp};

    fn row(ip: u32, n: u64) -> SourceRow {
        let mut top = TopPorts::default();
        top.push(PortCount {
            proto: Proto::Udp,
            port: 53,
            packets: n,
        });
        top.push(PortCount {
            proto: Proto::Tcp,
            port: 23,
            packets: 1,
        });
        SourceRow {
            ip: Addr::v4(ip).to_ip(),
            packets: n + 1,
            bytes: 99,
            ports: 2,
            destinations: 7,
            top_ports: top,
            classes: ClassSet(5),
            fingerprints: FingerprintSet(2),
            first_seen: Timestamp(10),
            last_seen: Timestamp(20),
        }
    }

    #[test]
    fn round_trip_sorted_and_found() {
        let rows: Vec<SourceRow> = [9u32, 1, 5, 300]
            .iter()
            .map(|&i| row(i, i as u64))
            .collect();
        let b = encode(&rows);
        assert_eq!(b.len(), 4 * REC);
        let recs: Vec<SourceRec> = decode(&b).collect();
        assert!(recs.windows(2).all(|w| w[0].ip < w[1].ip));
        let five = find(4, Addr::v4(5).0.to_be_bytes(), |i| {
            SourceRec::read(&b[i * REC..])
        })
        .unwrap();
        assert_eq!(five, SourceRec::from_row(&rows[2]));
        let tp: Vec<PortCount> = five.top_ports().collect();
        assert_eq!(tp, rows[2].top_ports.to_vec());
        assert!(find(4, Addr::v4(6).0.to_be_bytes(), |i| SourceRec::read(
            &b[i * REC..]
        ))
        .is_none());
        assert!(SourceRec::read(&b[..10]).is_none());
    }
}
