//! Stored forms of port rows (storage schema 7).
//!
//! - A window's port rows: one blob per (window, sensor), records sorted by
//!   (proto, port), numbers as variable-length integers, each record's
//!   distinct-source sketch inline. One row insert per summary where one
//!   row per port (plus an index entry per port) took two thirds of the
//!   writer's time (benches/RESULTS.md, ingest).
//! - One port's per-window points over one rolled-up hour, merged across
//!   sensors ([`encode_points`]): what a series with steps shorter than an
//!   hour reads, one row per hour instead of one per window and sensor.
//!
//! Layout of a window blob: `TAG`, then per record proto (1 byte), port,
//! packets, bytes, sources, destinations, sketch length (LEB128 each) and
//! the sketch bytes. Points: `TAG_POINTS`, then per window its start's
//! offset from the hour (µs), packets, sketch length and sketch bytes.
//! Decoding never panics: a damaged blob yields fewer records.

use super::srcrec::{byte, get, put};
use darkscope_common::wire::PortRow;

const TAG: u8 = 1;
const TAG_POINTS: u8 = 0x11;

/// One stored port row, its sketch borrowed from the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRec<'a> {
    /// Protocol number as stored ([`darkscope_common::Proto`] as u8).
    pub proto: u8,
    /// Port, or ICMP type.
    pub port: u16,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Distinct sources (exact or the sensor's estimate).
    pub sources: u64,
    /// Distinct destinations.
    pub destinations: u64,
    /// Distinct-source sketch bytes ([`darkscope_common::Hll::to_bytes`]).
    pub hll: &'a [u8],
}

impl PortRec<'_> {
    /// Back to a wire row (a damaged sketch reads as empty).
    pub fn to_row(&self) -> PortRow {
        PortRow {
            proto: super::fold::proto_of(self.proto as i64),
            port: self.port,
            packets: self.packets,
            bytes: self.bytes,
            sources: self.sources,
            destinations: self.destinations,
            sources_hll: super::fold::bytes_hll(self.hll),
        }
    }
}

/// Encodes a window's port rows, sorted by (proto, port).
pub fn encode(rows: &[PortRow]) -> Vec<u8> {
    let mut order: Vec<&PortRow> = rows.iter().collect();
    order.sort_unstable_by_key(|r| (r.proto as u8, r.port));
    let mut out = Vec::with_capacity(1 + rows.len() * 24);
    out.push(TAG);
    for r in order {
        out.push(r.proto as u8);
        for v in [r.port as u64, r.packets, r.bytes, r.sources, r.destinations] {
            put(&mut out, v as u128);
        }
        let hll = r.sources_hll.to_bytes();
        put(&mut out, hll.len() as u128);
        out.extend_from_slice(&hll);
    }
    out
}

/// Reads a LEB128 integer that must fit in a u64.
fn get64(b: &[u8], at: &mut usize) -> Option<u64> {
    u64::try_from(get(b, at)?).ok()
}

/// `n` bytes at `at`, advancing it.
fn bytes<'a>(b: &'a [u8], at: &mut usize, n: u64) -> Option<&'a [u8]> {
    let end = at.checked_add(usize::try_from(n).ok()?)?;
    let s = b.get(*at..end)?;
    *at = end;
    Some(s)
}

/// The records after `tag` in `b`, each read by `one`; stops at the first
/// damaged one (or a wrong tag).
fn records<'a, T: 'a>(
    b: &'a [u8],
    tag: u8,
    one: impl Fn(&'a [u8], &mut usize) -> Option<T> + 'a,
) -> impl Iterator<Item = T> + 'a {
    let mut at = if b.first() == Some(&tag) { 1 } else { b.len() };
    std::iter::from_fn(move || {
        if at >= b.len() {
            return None;
        }
        let r = one(b, &mut at);
        if r.is_none() {
            at = b.len();
        }
        r
    })
}

/// The records of a window blob, in (proto, port) order; stops at the
/// first damaged one.
pub fn decode(b: &[u8]) -> impl Iterator<Item = PortRec<'_>> + '_ {
    records(b, TAG, |b, at| {
        Some(PortRec {
            proto: byte(b, at)?,
            port: u16::try_from(get64(b, at)?).ok()?,
            packets: get64(b, at)?,
            bytes: get64(b, at)?,
            sources: get64(b, at)?,
            destinations: get64(b, at)?,
            hll: {
                let n = get64(b, at)?;
                bytes(b, at, n)?
            },
        })
    })
}

/// One port's row in a window blob, if present.
pub fn find(b: &[u8], proto: u8, port: u16) -> Option<PortRec<'_>> {
    decode(b)
        .take_while(|r| (r.proto, r.port) <= (proto, port))
        .find(|r| r.proto == proto && r.port == port)
}

/// Encodes one port's points of an hour: (start offset from the hour in
/// µs, packets, sketch bytes) per window, in any order.
pub fn encode_points<'a>(points: impl IntoIterator<Item = (u64, u64, &'a [u8])>) -> Vec<u8> {
    let mut out = vec![TAG_POINTS];
    for (offset, packets, hll) in points {
        put(&mut out, offset as u128);
        put(&mut out, packets as u128);
        put(&mut out, hll.len() as u128);
        out.extend_from_slice(hll);
    }
    out
}

/// The points of [`encode_points`]; stops at the first damaged one.
pub fn decode_points(b: &[u8]) -> impl Iterator<Item = (u64, u64, &[u8])> + '_ {
    records(b, TAG_POINTS, |b, at| {
        let offset = get64(b, at)?;
        let packets = get64(b, at)?;
        let n = get64(b, at)?;
        Some((offset, packets, bytes(b, at, n)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkscope_common::{Addr, Hll, Proto};

    fn row(proto: Proto, port: u16, packets: u64, sources: u32) -> PortRow {
        let mut h = Hll::new();
        for i in 0..sources {
            h.insert(Addr::from(std::net::IpAddr::from(
                std::net::Ipv4Addr::from(0x0a00_0000 + i),
            )));
        }
        PortRow {
            proto,
            port,
            packets,
            bytes: packets.saturating_mul(60),
            sources: sources as u64,
            destinations: 3,
            sources_hll: h,
        }
    }

    fn rows() -> Vec<PortRow> {
        vec![
            row(Proto::Udp, 53, 7, 2),
            row(Proto::Tcp, 65535, u64::MAX, 0),
            row(Proto::Tcp, 23, 1_000_000, 5000),
            row(Proto::Icmpv6, 128, 1, 1),
            row(Proto::Tcp, 0, 0, 1),
        ]
    }

    #[test]
    fn rows_come_back_sorted_with_their_sketches() {
        let rows = rows();
        let b = encode(&rows);
        let back: Vec<PortRec> = decode(&b).collect();
        assert_eq!(back.len(), rows.len());
        assert!(back
            .windows(2)
            .all(|w| (w[0].proto, w[0].port) < (w[1].proto, w[1].port)));
        for r in &rows {
            let f = find(&b, r.proto as u8, r.port).expect("each row is found");
            assert_eq!(
                (f.packets, f.bytes, f.sources, f.destinations),
                (r.packets, r.bytes, r.sources, r.destinations)
            );
            assert_eq!(f.hll, &r.sources_hll.to_bytes()[..]);
            assert_eq!(
                Hll::from_bytes(f.hll).unwrap().estimate(),
                r.sources_hll.estimate()
            );
        }
        assert!(find(&b, Proto::Tcp as u8, 24).is_none());
        assert_eq!(decode(&encode(&[])).count(), 0);
    }

    #[test]
    fn damaged_blobs_yield_fewer_records_and_never_panic() {
        let b = encode(&rows());
        let whole = decode(&b).count();
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).count() < whole, "cut at {cut}");
        }
        for i in 0..b.len() {
            for v in [0x00, 0xff, 0x80] {
                let mut d = b.clone();
                d[i] = v;
                let _ = decode(&d).count();
                let _ = find(&d, 6, 23);
            }
        }
        assert_eq!(decode(&[0xff; 40]).count(), 0);
    }

    #[test]
    fn points_round_trip_and_survive_damage() {
        let h = row(Proto::Tcp, 23, 1, 40).sources_hll.to_bytes();
        let pts = vec![
            (0u64, 5u64, &h[..]),
            (60_000_000, 0, &[][..]),
            (3_599_999_999, u64::MAX, &h[..]),
        ];
        let b = encode_points(pts.clone());
        assert_eq!(decode_points(&b).collect::<Vec<_>>(), pts);
        for cut in 0..b.len() {
            assert!(decode_points(&b[..cut]).count() < pts.len());
        }
        assert_eq!(decode_points(&encode(&rows())).count(), 0, "tags differ");
    }
}
