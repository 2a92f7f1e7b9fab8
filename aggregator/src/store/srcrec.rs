//! The stored form of a window's source rows: one blob per (window,
//! sensor), records sorted by address and packed with variable-length
//! integers (addresses as the gap from the previous one, times from the
//! blob's earliest), about 20 bytes a source where fixed-size records took
//! 114: ingest writes (WAL and checkpoint) shrink fourfold
//! (benches/RESULTS.md). Records come in blocks of [`BLOCK`] behind a
//! fixed-size index of each block's first address and offset, so a point
//! lookup reads the header, ~5 index entries and one block through
//! incremental blob I/O.
//!
//! Layout: `TAG` (1 byte), record count (u32 LE), base time µs (u64 LE),
//! block count (u32 LE); per block its first address (16 bytes BE) and the
//! offset of its data (u32 LE, from the blob's start); then the blocks.
//! Decoding never panics: a damaged blob yields fewer records.

use darkscope_common::wire::{PortCount, SourceRow};
use darkscope_common::{Addr, Proto};

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

    fn write(&self, prev: u128, base: u64, out: &mut Vec<u8>) {
        put(out, u128::from_be_bytes(self.ip).wrapping_sub(prev));
        for v in [self.packets, self.bytes] {
            put(out, v as u128);
        }
        for v in [self.ports, self.destinations] {
            put(out, v as u128);
        }
        out.push(self.classes);
        out.push(self.fingerprints);
        put(out, self.first.wrapping_sub(base) as u128);
        put(out, self.last.wrapping_sub(self.first) as u128);
        out.push(self.n_top);
        for &(p, port, packets) in &self.top[..self.n_top as usize] {
            out.push(p);
            put(out, port as u128);
            put(out, packets as u128);
        }
    }

    fn read(b: &[u8], at: &mut usize, prev: u128, base: u64) -> Option<SourceRec> {
        let ip = get(b, at)?.wrapping_add(prev).to_be_bytes();
        let packets = get(b, at)? as u64;
        let bytes = get(b, at)? as u64;
        let ports = get(b, at)? as u32;
        let destinations = get(b, at)? as u32;
        let classes = byte(b, at)?;
        let fingerprints = byte(b, at)?;
        let first = (get(b, at)? as u64).wrapping_add(base);
        let last = (get(b, at)? as u64).wrapping_add(first);
        let n_top = byte(b, at)?.min(TOP as u8);
        let mut top = [(0u8, 0u16, 0u64); TOP];
        for slot in &mut top[..n_top as usize] {
            *slot = (byte(b, at)?, get(b, at)? as u16, get(b, at)? as u64);
        }
        Some(SourceRec {
            ip,
            packets,
            bytes,
            ports,
            destinations,
            classes,
            fingerprints,
            first,
            last,
            top,
            n_top,
        })
    }
}

/// The first byte of every blob (format 2; format 1, fixed 114-byte
/// records, is rewritten when a schema-5 database is opened).
pub const TAG: u8 = 2;
/// Records per block.
pub const BLOCK: usize = 32;
/// Header bytes: tag, count, base time, block count.
pub const HEAD: usize = 17;
/// Index bytes per block: first address, data offset.
const ENTRY: usize = 20;
/// Most bytes one record can take (every varint at its longest, five top ports).
const MAX_REC: usize = 19 + 4 * 10 + 2 + 2 * 10 + 1 + TOP * (1 + 3 + 10);

/// Appends `v` as a LEB128 variable-length integer.
pub(super) fn put(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 integer (at most 19 bytes), advancing `at`.
pub(super) fn get(b: &[u8], at: &mut usize) -> Option<u128> {
    let mut v = 0u128;
    for shift in (0..133).step_by(7) {
        let x = *b.get(*at)?;
        *at += 1;
        v |= ((x & 0x7f) as u128).checked_shl(shift)?;
        if x < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Reads one byte, advancing `at`.
pub(super) fn byte(b: &[u8], at: &mut usize) -> Option<u8> {
    let x = *b.get(*at)?;
    *at += 1;
    Some(x)
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// The header: (record count, base time, block count).
fn head(b: &[u8]) -> Option<(usize, u64, usize)> {
    if *b.first()? != TAG {
        return None;
    }
    let base = u64::from_le_bytes(b.get(5..13)?.try_into().ok()?);
    Some((u32_at(b, 1)? as usize, base, u32_at(b, 13)? as usize))
}

/// Encodes rows sorted by address. Only (address, index) pairs are sorted
/// (rows arriving in address order are not sorted at all); records are
/// built as they are written.
pub fn encode(rows: &[SourceRow]) -> Vec<u8> {
    let mut order: Vec<(u128, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (Addr::from(r.ip).0, i as u32))
        .collect();
    if !order.is_sorted() {
        order.sort_unstable();
    }
    let base = rows.iter().map(|r| r.first_seen.0).min().unwrap_or(0);
    let blocks = order.len().div_ceil(BLOCK);
    let mut out = Vec::with_capacity(HEAD + blocks * ENTRY + order.len() * 32);
    out.push(TAG);
    out.extend_from_slice(&(order.len() as u32).to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&(blocks as u32).to_le_bytes());
    out.resize(HEAD + blocks * ENTRY, 0);
    for (i, block) in order.chunks(BLOCK).enumerate() {
        let at = HEAD + i * ENTRY;
        let offset = out.len() as u32;
        out[at..at + 16].copy_from_slice(&block[0].0.to_be_bytes());
        out[at + 16..at + 20].copy_from_slice(&offset.to_le_bytes());
        let mut prev = block[0].0;
        for &(ip, row) in block {
            SourceRec::from_row(&rows[row as usize]).write(prev, base, &mut out);
            prev = ip;
        }
    }
    out
}

/// The `count` records of one block (`b` from the block's first byte).
fn block(b: &[u8], first: u128, base: u64, count: usize) -> impl Iterator<Item = SourceRec> + '_ {
    let (mut at, mut prev) = (0usize, first);
    std::iter::from_fn(move || {
        let r = SourceRec::read(b, &mut at, prev, base)?;
        prev = u128::from_be_bytes(r.ip);
        Some(r)
    })
    .take(count)
}

/// Records in block `i` of a blob with `n` records.
fn in_block(n: usize, i: usize) -> usize {
    BLOCK.min(n.saturating_sub(i * BLOCK))
}

/// Every record of a blob.
pub fn decode(b: &[u8]) -> Vec<SourceRec> {
    let Some((n, base, blocks)) = head(b) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n.min(b.len() / 12));
    for i in 0..blocks {
        let at = HEAD + i * ENTRY;
        let (Some(first), Some(pos)) = (b.get(at..at + 16), u32_at(b, at + 16)) else {
            break;
        };
        let first = u128::from_be_bytes(first.try_into().unwrap_or([0; 16]));
        let data = b.get(pos as usize..).unwrap_or_default();
        let before = out.len();
        out.extend(block(data, first, base, in_block(n, i)));
        if out.len() - before < in_block(n, i) {
            break; // damaged: keep what decoded
        }
    }
    out
}

/// Looks `ip` up in a blob of `len` bytes read through `read_at(buf,
/// offset)` (which fills `buf` or fails): the header, a binary search over
/// the block index, then one block.
pub fn find(
    len: usize,
    ip: [u8; 16],
    mut read_at: impl FnMut(&mut [u8], usize) -> Option<()>,
) -> Option<SourceRec> {
    let mut h = [0u8; HEAD];
    read_at(&mut h, 0)?;
    let (n, base, blocks) = head(&h)?;
    let mut entry = [0u8; ENTRY];
    let mut entry_at = |i: usize| -> Option<(u128, usize)> {
        read_at(&mut entry, HEAD + i * ENTRY)?;
        let first = u128::from_be_bytes(entry[..16].try_into().ok()?);
        Some((first, u32_at(&entry, 16)? as usize))
    };
    let want = u128::from_be_bytes(ip);
    // The last block whose first address is <= ip.
    let (mut lo, mut hi) = (0usize, blocks);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if entry_at(mid)?.0 <= want {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let i = lo.checked_sub(1)?;
    let (first, from) = entry_at(i)?;
    let to = if i + 1 < blocks {
        entry_at(i + 1)?.1
    } else {
        len
    };
    let mut data = vec![0u8; to.checked_sub(from)?.min(BLOCK * MAX_REC)];
    read_at(&mut data, from)?;
    let found = block(&data, first, base, in_block(n, i))
        .take_while(|r| u128::from_be_bytes(r.ip) <= want)
        .find(|r| u128::from_be_bytes(r.ip) == want);
    found
}

/// Rewrites a format-1 blob (fixed 114-byte records) in this format.
pub fn from_v1(b: &[u8]) -> Vec<u8> {
    let rows: Vec<SourceRow> = b
        .chunks_exact(V1_REC)
        .filter_map(read_v1)
        .map(|r| r.to_row())
        .collect();
    encode(&rows)
}

/// Bytes per format-1 record.
const V1_REC: usize = 114;

fn read_v1(b: &[u8]) -> Option<SourceRec> {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let mut ip = [0u8; 16];
    ip.copy_from_slice(b.get(..16)?);
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
        ports: u32_at(b, 32)?,
        destinations: u32_at(b, 36)?,
        classes: b[40],
        fingerprints: b[41],
        first: u64_at(42),
        last: u64_at(50),
        n_top: b[58].min(TOP as u8),
        top,
    })
}

/// A format-1 blob as storage schema 5 stored it (for migration tests).
#[cfg(test)]
pub(crate) fn to_v1(rows: &[SourceRow]) -> Vec<u8> {
    let mut v1 = Vec::new();
    let mut recs: Vec<SourceRec> = rows.iter().map(SourceRec::from_row).collect();
    recs.sort_by_key(|r| r.ip);
    for r in &recs {
        v1.extend_from_slice(&r.ip);
        v1.extend_from_slice(&r.packets.to_le_bytes());
        v1.extend_from_slice(&r.bytes.to_le_bytes());
        v1.extend_from_slice(&r.ports.to_le_bytes());
        v1.extend_from_slice(&r.destinations.to_le_bytes());
        v1.push(r.classes);
        v1.push(r.fingerprints);
        v1.extend_from_slice(&r.first.to_le_bytes());
        v1.extend_from_slice(&r.last.to_le_bytes());
        v1.push(r.n_top);
        for (p, port, packets) in r.top {
            v1.push(p);
            v1.extend_from_slice(&port.to_le_bytes());
            v1.extend_from_slice(&packets.to_le_bytes());
        }
    }
    v1
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

    fn lookup(b: &[u8], ip: u32) -> Option<SourceRec> {
        find(b.len(), Addr::v4(ip).0.to_be_bytes(), |buf, at| {
            buf.copy_from_slice(b.get(at..at + buf.len())?);
            Some(())
        })
    }

    #[test]
    fn round_trip_sorted_and_found() {
        let rows: Vec<SourceRow> = [9u32, 1, 5, 300]
            .iter()
            .map(|&i| row(i, i as u64))
            .collect();
        let b = encode(&rows);
        let recs = decode(&b);
        assert_eq!(recs.len(), 4);
        assert!(recs.windows(2).all(|w| w[0].ip < w[1].ip));
        let five = lookup(&b, 5).unwrap();
        assert_eq!(five, SourceRec::from_row(&rows[2]));
        let tp: Vec<PortCount> = five.top_ports().collect();
        assert_eq!(tp, rows[2].top_ports.to_vec());
        assert!(lookup(&b, 6).is_none());
        assert!(lookup(&b, 0).is_none());
        assert!(lookup(&b, 301).is_none());
        assert!(decode(&b[..10]).is_empty());
        assert!(decode(&[]).is_empty());
    }

    /// Many blocks, IPv6 beside IPv4, extreme values: every record comes
    /// back exactly, by full decode and by lookup; every cut or corrupted
    /// blob decodes to fewer records without a panic.
    #[test]
    fn many_blocks_and_extremes_round_trip() {
        let mut rows: Vec<SourceRow> = (0..1000u32)
            .map(|i| row(i.wrapping_mul(2_654_435_761), i as u64 * 7919))
            .collect();
        rows[3].packets = u64::MAX;
        rows[4].first_seen = Timestamp(u64::MAX);
        rows[4].last_seen = Timestamp(0);
        rows[5].ip = "2001:db8::1".parse().unwrap();
        rows[6].ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let b = encode(&rows);
        assert!(b.len() < rows.len() * 40, "{} bytes", b.len());
        let mut want: Vec<SourceRec> = rows.iter().map(SourceRec::from_row).collect();
        want.sort_by_key(|r| r.ip);
        assert_eq!(decode(&b), want);
        for r in &want {
            let got = find(b.len(), r.ip, |buf, at| {
                buf.copy_from_slice(b.get(at..at + buf.len())?);
                Some(())
            });
            assert_eq!(got.as_ref(), Some(r));
        }
        for cut in (0..b.len()).step_by(97) {
            assert!(decode(&b[..cut]).len() <= want.len());
            let _ = lookup(&b[..cut], 7);
        }
        let mut bad = b.clone();
        for i in (HEAD..bad.len()).step_by(13) {
            bad[i] = 0xff;
        }
        let _ = decode(&bad);
    }

    /// A block of records at their longest (every count at u64::MAX, five
    /// top ports) is still found by lookup.
    #[test]
    fn blocks_of_longest_records_are_found() {
        let rows: Vec<SourceRow> = (0..100u32)
            .map(|i| {
                let mut r = row(i.wrapping_mul(2_654_435_761), u64::MAX - 1);
                r.bytes = u64::MAX;
                r.ports = u64::MAX;
                r.destinations = u64::MAX;
                r.first_seen = Timestamp(u64::MAX);
                for p in 0..3 {
                    r.top_ports.push(PortCount {
                        proto: Proto::Icmpv6,
                        port: u16::MAX - p,
                        packets: u64::MAX,
                    });
                }
                r
            })
            .collect();
        let b = encode(&rows);
        for r in &rows {
            let rec = SourceRec::from_row(r);
            let got = find(b.len(), rec.ip, |buf, at| {
                buf.copy_from_slice(b.get(at..at + buf.len())?);
                Some(())
            });
            assert_eq!(got, Some(rec));
        }
    }

    #[test]
    fn format_1_blobs_are_rewritten() {
        let rows: Vec<SourceRow> = [9u32, 1, 5].iter().map(|&i| row(i, 3)).collect();
        let v1 = to_v1(&rows);
        let mut recs: Vec<SourceRec> = rows.iter().map(SourceRec::from_row).collect();
        recs.sort_by_key(|r| r.ip);
        assert_eq!(v1.len(), 3 * V1_REC);
        assert_eq!(decode(&from_v1(&v1)), recs);
    }
}
