//! Backend-independent folding of stored rows into API answers, shared by
//! every backend so they answer identically: per-port totals with merged
//! sketches, ranking, and a source's history.

use super::{DayCount, PortTop, SourceInfo};
use darkscope_common::hll::Hll;
use darkscope_common::wire::PortCount;
use darkscope_common::{Addr, ClassSet, FingerprintSet, Proto, Timestamp};
use rustc_hash::FxHashMap;

/// A port row from any granularity: proto, port, packets, bytes, sources,
/// destinations, sketch bytes, sensor, windows it covers.
pub type PortRowTuple = (i64, i64, i64, i64, i64, i64, Vec<u8>, String, i64);

/// A source's row for one window or hour and one sensor: time, sensor,
/// packets, bytes, windows, class bits, fingerprint bits, first seen, last
/// seen, top ports (JSON).
pub type SourceRowTuple = (i64, String, i64, i64, i64, i64, i64, i64, i64, String);

/// Protocol from its stored number.
pub fn proto_of(v: i64) -> Proto {
    Proto::ALL.get(v as usize).copied().unwrap_or(Proto::Ip)
}

/// A sketch from its stored bytes (an unreadable one counts as empty).
pub fn bytes_hll(b: &[u8]) -> Hll {
    Hll::from_bytes(b).unwrap_or_default()
}

fn ts(v: i64) -> Timestamp {
    Timestamp(v.max(0) as u64)
}

/// Folds port rows into per-port totals; returns them and all packets.
/// Distinct sources stay exact when one window contributes, else merge.
pub fn ports(rows: impl IntoIterator<Item = PortRowTuple>) -> (Vec<PortTop>, u64) {
    struct Acc {
        packets: u64,
        bytes: u64,
        sources_one: u64,
        rows: u64,
        hll: Hll,
        dsts: u64,
    }
    let mut by: FxHashMap<(i64, i64), Acc> = FxHashMap::default();
    let mut total = 0u64;
    for (proto, port, packets, bytes, sources, dsts, hll, _sensor, windows) in rows {
        total += packets as u64;
        let a = by.entry((proto, port)).or_insert_with(|| Acc {
            packets: 0,
            bytes: 0,
            sources_one: 0,
            rows: 0,
            hll: Hll::new(),
            dsts: 0,
        });
        a.packets += packets as u64;
        a.bytes += bytes as u64;
        a.sources_one = sources as u64;
        a.rows += windows as u64;
        a.hll.merge(&bytes_hll(&hll));
        a.dsts = a.dsts.max(dsts as u64);
    }
    let v = by
        .into_iter()
        .map(|((proto, port), a)| PortTop {
            proto: proto_of(proto),
            port: port as u16,
            packets: a.packets,
            bytes: a.bytes,
            sources: if a.rows == 1 {
                a.sources_one
            } else {
                a.hll.estimate()
            },
            destinations: a.dsts,
            share: if total == 0 {
                0.0
            } else {
                a.packets as f64 / total as f64
            },
        })
        .collect();
    (v, total)
}

/// Ranks ports by distinct sources (then packets, protocol, port) and keeps `limit`.
pub fn rank(v: &mut Vec<PortTop>, limit: usize) {
    v.sort_by(|a, b| {
        b.sources
            .cmp(&a.sources)
            .then(b.packets.cmp(&a.packets))
            .then(a.proto.cmp(&b.proto))
            .then(a.port.cmp(&b.port))
    });
    v.truncate(limit);
}

/// Adds a stored top-ports list (JSON) into a per-port tally.
pub fn tally_top(ports: &mut FxHashMap<(Proto, u16), u64>, json: &str) {
    if let Ok(tp) = serde_json::from_str::<Vec<PortCount>>(json) {
        for p in tp {
            *ports.entry((p.proto, p.port)).or_default() += p.packets;
        }
    }
}

/// The `n` busiest ports of a tally, busiest first.
pub fn busiest(ports: &FxHashMap<(Proto, u16), u64>, n: usize) -> Vec<PortCount> {
    PortCount::busiest(ports.iter().map(|(k, v)| (*k, *v)), n)
}

/// A source's history from its rows; `None` when there are none.
pub fn source_info(ip: Addr, rows: Vec<SourceRowTuple>) -> Option<SourceInfo> {
    if rows.is_empty() {
        return None;
    }
    let mut i = SourceInfo {
        ip: ip.to_string(),
        first_seen: Timestamp(u64::MAX),
        last_seen: Timestamp(0),
        packets: 0,
        bytes: 0,
        ports: Vec::new(),
        per_day: Vec::new(),
        sensors: Vec::new(),
        fingerprints: FingerprintSet::default(),
        classes: ClassSet::default(),
        windows: 0,
    };
    let mut ports: FxHashMap<(Proto, u16), u64> = FxHashMap::default();
    let mut days: std::collections::BTreeMap<String, u64> = Default::default();
    for (t, sensor, packets, bytes, windows, classes, fps, first, last, top) in rows {
        i.first_seen = i.first_seen.min(ts(first));
        i.last_seen = i.last_seen.max(ts(last));
        i.packets += packets as u64;
        i.bytes += bytes as u64;
        i.windows += windows as u64;
        i.classes.0 |= classes as u8;
        i.fingerprints.0 |= fps as u8;
        if !i.sensors.contains(&sensor) {
            i.sensors.push(sensor);
        }
        *days.entry(ts(t).to_string()[..10].to_string()).or_default() += packets as u64;
        tally_top(&mut ports, &top);
    }
    i.ports = busiest(&ports, 20);
    i.sensors.sort();
    i.per_day = days
        .into_iter()
        .map(|(day, packets)| DayCount { day, packets })
        .collect();
    Some(i)
}

/// The top `n` sources of a per-address packet tally, as the API lists them
/// (most packets first, ties by address).
pub fn top_sources(by_ip: FxHashMap<[u8; 16], u64>, n: usize) -> Vec<super::SourceBrief> {
    let mut top: Vec<([u8; 16], u64)> = by_ip.into_iter().collect();
    top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    top.into_iter()
        .take(n)
        .map(|(ip, packets)| super::SourceBrief {
            ip: Addr(u128::from_be_bytes(ip)).to_string(),
            packets,
        })
        .collect()
}
