//! Backend-independent folding of stored rows into API answers, shared by
//! every backend so they answer identically: per-port totals with merged
//! sketches, ranking, and a source's history.

use super::{
    DayCount, FingerprintShare, PortCountry, PortReach, PortSensor, PortSource, PortSources,
    PortTop, Scope, SeriesPoint, SourceInfo, SourceSeen, PEER_SENSOR_MARK,
};
use darkscope_common::hll::Hll;
use darkscope_common::wire::PortCount;
use darkscope_common::{Addr, ClassSet, Fingerprint, FingerprintSet, Proto, Timestamp};
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

/// A port row for [`reach`]: sensor, country, packets, sources, sketch
/// bytes, windows it covers.
pub type ReachRowTuple = (String, String, i64, i64, Vec<u8>, i64);

/// Folds one port's rows into per-sensor and per-country totals, most
/// distinct sources first (then packets, then name). A sensor's sources stay
/// exact when one window contributes; countries merge their sensors' sketches.
pub fn reach(rows: impl IntoIterator<Item = ReachRowTuple>) -> PortReach {
    struct Acc {
        country: String,
        packets: u64,
        sources_one: u64,
        windows: u64,
        hll: Hll,
    }
    let mut by: FxHashMap<String, Acc> = FxHashMap::default();
    for (sensor, country, packets, sources, hll, windows) in rows {
        let a = by.entry(sensor).or_insert_with(|| Acc {
            country,
            packets: 0,
            sources_one: 0,
            windows: 0,
            hll: Hll::new(),
        });
        a.packets += packets as u64;
        a.sources_one = sources as u64;
        a.windows += windows as u64;
        a.hll.merge(&bytes_hll(&hll));
    }
    let mut all = Hll::new();
    let mut countries: FxHashMap<String, (u64, u64, Hll)> = FxHashMap::default();
    let mut sensors: Vec<PortSensor> = by
        .into_iter()
        .map(|(sensor, a)| {
            let c = countries.entry(a.country.clone()).or_default();
            c.0 += 1;
            c.1 += a.packets;
            c.2.merge(&a.hll);
            all.merge(&a.hll);
            PortSensor {
                sensor,
                country: a.country,
                packets: a.packets,
                sources: if a.windows == 1 {
                    a.sources_one
                } else {
                    a.hll.estimate()
                },
            }
        })
        .collect();
    sensors
        .sort_by(|a, b| (b.sources, b.packets, &a.sensor).cmp(&(a.sources, a.packets, &b.sensor)));
    let mut countries: Vec<PortCountry> = countries
        .into_iter()
        .map(|(country, (n, packets, hll))| PortCountry {
            sources: match sensors
                .iter()
                .filter(|s| s.country == country)
                .collect::<Vec<_>>()[..]
            {
                [one] => one.sources,
                _ => hll.estimate(),
            },
            country,
            sensors: n,
            packets,
        })
        .collect();
    countries.sort_by(|a, b| {
        (b.sources, b.packets, &a.country).cmp(&(a.sources, a.packets, &b.country))
    });
    PortReach {
        packets: sensors.iter().map(|s| s.packets).sum(),
        sources: match sensors[..] {
            [ref one] => one.sources,
            _ => all.estimate(),
        },
        sensors,
        countries,
    }
}

/// A port's sources from stored source rows (any granularity): each row's
/// busiest-ports list says what it sent to the port; rows outside `scope`
/// are skipped. The `limit` busiest are listed, fingerprint shares cover all.
pub fn port_sources(
    rows: &[SourceSeen],
    proto: Proto,
    port: u16,
    scope: Scope,
    limit: usize,
) -> PortSources {
    struct Acc {
        packets: u64,
        sensors: Vec<String>,
        fingerprints: FingerprintSet,
        first: Timestamp,
        last: Timestamp,
    }
    let mut by: FxHashMap<Addr, Acc> = FxHashMap::default();
    for r in rows {
        if scope == Scope::Local && r.sensor.starts_with(PEER_SENSOR_MARK) {
            continue;
        }
        let Some(pc) = r.ports.iter().find(|p| p.proto == proto && p.port == port) else {
            continue;
        };
        let a = by.entry(r.ip).or_insert_with(|| Acc {
            packets: 0,
            sensors: Vec::new(),
            fingerprints: FingerprintSet::default(),
            first: r.first,
            last: r.last,
        });
        a.packets += pc.packets;
        if !a.sensors.contains(&r.sensor) {
            a.sensors.push(r.sensor.clone());
        }
        a.fingerprints.0 |= r.fingerprints.0;
        a.first = a.first.min(r.first);
        a.last = a.last.max(r.last);
    }
    let n = by.len() as u64;
    let share = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let mut fingerprints: Vec<FingerprintShare> = Fingerprint::ALL
        .iter()
        .map(|f| {
            let k = by.values().filter(|a| a.fingerprints.has(*f)).count() as u64;
            FingerprintShare {
                fingerprint: f.as_str().to_string(),
                sources: k,
                share: share(k),
            }
        })
        .collect();
    let none = by.values().filter(|a| a.fingerprints.is_empty()).count() as u64;
    fingerprints.push(FingerprintShare {
        fingerprint: "none".into(),
        sources: none,
        share: share(none),
    });
    let mut top: Vec<(Addr, Acc)> = by.into_iter().collect();
    top.sort_by(|x, y| y.1.packets.cmp(&x.1.packets).then(x.0.cmp(&y.0)));
    PortSources {
        sources: n,
        packets: top.iter().map(|(_, a)| a.packets).sum(),
        top: top
            .into_iter()
            .take(limit)
            .map(|(ip, a)| PortSource {
                ip: ip.to_string(),
                packets: a.packets,
                sensors: a.sensors.len() as u64,
                fingerprints: a.fingerprints,
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect(),
        fingerprints,
    }
}

/// Distinct sources per port from (proto, port, sources, sketch bytes)
/// rows of one window: exact when one sensor's row is all there is, else
/// the merged sketches' estimate.
pub fn window_port_sources(
    rows: impl IntoIterator<Item = (i64, i64, u64, Vec<u8>)>,
) -> Vec<(Proto, u16, u64)> {
    let mut by: FxHashMap<(i64, i64), (u64, u32, Hll)> = FxHashMap::default();
    for (proto, port, sources, hll) in rows {
        let e = by.entry((proto, port)).or_default();
        e.0 = sources;
        e.1 += 1;
        e.2.merge(&bytes_hll(&hll));
    }
    by.into_iter()
        .map(|((proto, port), (one, n, h))| {
            (
                proto_of(proto),
                port as u16,
                if n == 1 { one } else { h.estimate() },
            )
        })
        .collect()
}

/// Buckets (window start, packets, sketch bytes) rows into steps of
/// `step_us` over `[from, to)`: packets add up, sketches merge.
pub fn steps(
    from: u64,
    to: u64,
    step_us: u64,
    rows: impl IntoIterator<Item = (u64, u64, Vec<u8>)>,
) -> Vec<SeriesPoint> {
    let step = step_us.max(1);
    let n = to.saturating_sub(from).div_ceil(step) as usize;
    let mut packets = vec![0u64; n];
    let mut sketches = vec![Hll::new(); n];
    for (start, p, hll) in rows {
        let Some(i) = start.checked_sub(from).map(|d| (d / step) as usize) else {
            continue;
        };
        if i < n {
            packets[i] += p;
            sketches[i].merge(&bytes_hll(&hll));
        }
    }
    (0..n)
        .map(|i| SeriesPoint {
            time: Timestamp(from + i as u64 * step),
            packets: packets[i],
            sources: sketches[i].estimate(),
        })
        .collect()
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
        port_hours: Vec::new(),
        sensors: Vec::new(),
        fingerprints: FingerprintSet::default(),
        classes: ClassSet::default(),
        windows: 0,
    };
    let mut ports: FxHashMap<(Proto, u16), u64> = FxHashMap::default();
    let mut days: std::collections::BTreeMap<String, u64> = Default::default();
    let mut hours: std::collections::BTreeMap<(i64, Proto, u16), u64> = Default::default();
    for (t, sensor, packets, bytes, windows, classes, fps, first, last, top) in rows {
        for p in serde_json::from_str::<Vec<PortCount>>(&top).unwrap_or_default() {
            *ports.entry((p.proto, p.port)).or_default() += p.packets;
            *hours
                .entry((t - t.rem_euclid(HOUR), p.proto, p.port))
                .or_default() += p.packets;
        }
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
    }
    i.ports = busiest(&ports, 20);
    let keep: Vec<(Proto, u16)> = i
        .ports
        .iter()
        .take(super::SOURCE_PORT_SERIES)
        .map(|p| (p.proto, p.port))
        .collect();
    i.port_hours = hours
        .into_iter()
        .filter(|((_, proto, port), _)| keep.contains(&(*proto, *port)))
        .map(|((h, proto, port), packets)| super::PortHour {
            hour: ts(h),
            proto,
            port,
            packets,
        })
        .collect();
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

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// Key of the pre-merged roll-up rows across the scope's sensors (`*`
/// local, `**` global), optionally of one sensor country.
pub fn merged_key(scope: Scope, country: Option<&str>) -> String {
    let stars = match scope {
        Scope::Local => "*",
        Scope::Global => "**",
    };
    format!("{stars}{}", country.unwrap_or(""))
}

/// A port row going into, or coming out of, a roll-up.
#[derive(Clone, Debug)]
pub struct RollRow {
    /// Sensor, or a pre-merged key ([`merged_key`]).
    pub sensor: String,
    /// Country of the sensor (`*` for the all-countries keys).
    pub country: String,
    /// Protocol number.
    pub proto: i64,
    /// Port.
    pub port: i64,
    /// Packets.
    pub packets: i64,
    /// Bytes.
    pub bytes: i64,
    /// Distinct sources (exact for one window, else the sketch's estimate).
    pub sources: i64,
    /// Largest destination count of one window.
    pub dsts: i64,
    /// Sources sketch.
    pub hll: Hll,
    /// Windows covered.
    pub windows: i64,
}

impl RollRow {
    /// One window's port row of `sensor` (in `country`) as roll-up input.
    pub fn window(sensor: String, country: String, p: darkscope_common::wire::PortRow) -> RollRow {
        RollRow {
            sensor,
            country,
            proto: p.proto as i64,
            port: p.port as i64,
            packets: p.packets as i64,
            bytes: p.bytes as i64,
            sources: p.sources as i64,
            dsts: p.destinations as i64,
            hll: p.sources_hll,
            windows: 1,
        }
    }
}

/// Folds rows with the same (sensor, proto, port) into one: packets and
/// bytes add up, destinations keep the largest window's count, sketches
/// merge, and `sources` stays exact only when a single window contributes.
pub fn by_port(rows: impl IntoIterator<Item = RollRow>) -> Vec<RollRow> {
    let mut acc: FxHashMap<(String, i64, i64), RollRow> = FxHashMap::default();
    for r in rows {
        match acc.entry((r.sensor.clone(), r.proto, r.port)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let a = e.get_mut();
                a.packets += r.packets;
                a.bytes += r.bytes;
                a.sources = r.sources;
                a.dsts = a.dsts.max(r.dsts);
                a.hll.merge(&r.hll);
                a.windows += r.windows;
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
    }
    acc.into_values()
        .map(|mut a| {
            if a.windows != 1 {
                a.sources = a.hll.estimate() as i64;
            }
            a
        })
        .collect()
}

/// Rolls the port rows of one period up: per (sensor, proto, port) as
/// [`by_port`]; plus pre-merged rows across local sensors (`*`, `*CC`) and
/// across all, peers' included (`**`, `**CC`), so queries read one row per
/// port and period in either scope.
pub fn roll(rows: impl IntoIterator<Item = RollRow>) -> Vec<RollRow> {
    let per_sensor = by_port(rows);
    let merged = per_sensor.iter().flat_map(|a| {
        let local = !a.sensor.starts_with(PEER_SENSOR_MARK);
        [
            (merged_key(Scope::Global, None), "*".to_string()),
            (
                merged_key(Scope::Global, Some(&a.country)),
                a.country.clone(),
            ),
            (merged_key(Scope::Local, None), "*".to_string()),
            (
                merged_key(Scope::Local, Some(&a.country)),
                a.country.clone(),
            ),
        ]
        .into_iter()
        .take(if local { 4 } else { 2 })
        .map(|(sensor, country)| RollRow {
            sensor,
            country,
            ..a.clone()
        })
    });
    let merged = by_port(merged.collect::<Vec<_>>());
    per_sensor.into_iter().chain(merged).collect()
}

/// How finely a stretch of time is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gran {
    /// Per-window rows.
    Raw,
    /// Hourly roll-ups.
    Hour,
    /// Daily roll-ups.
    Day,
}

/// Splits `[from, to)` into stretches read from the coarsest table that is
/// complete and clean for them: daily rows for whole days before the roll-up
/// watermark without a dirty hour, hourly rows for other whole rolled-up
/// clean hours, raw rows for the rest (partial hours at the edges, dirty
/// hours, everything after the watermark). `max` caps the coarseness.
pub fn plan(
    from: i64,
    to: i64,
    rolled_until: i64,
    dirty: &[i64],
    max: Gran,
) -> Vec<(Gran, i64, i64)> {
    let mut out: Vec<(Gran, i64, i64)> = Vec::new();
    let mut push = |g: Gran, a: i64, b: i64| {
        if a >= b {
            return;
        }
        match out.last_mut() {
            Some(last) if last.0 == g && last.2 == a => last.2 = b,
            _ => out.push((g, a, b)),
        }
    };
    let ceil = |t: i64, u: i64| t + (u - t.rem_euclid(u)) % u;
    let h0 = ceil(from, HOUR);
    let h1 = to.min(rolled_until);
    let h1 = h1 - h1.rem_euclid(HOUR);
    if max == Gran::Raw || h0 >= h1 {
        push(Gran::Raw, from, to);
        return out;
    }
    push(Gran::Raw, from, h0);
    let is_dirty = |h: i64| dirty.contains(&h);
    let mut h = h0;
    while h < h1 {
        let day_end = h + DAY;
        let whole_day = max == Gran::Day
            && h.rem_euclid(DAY) == 0
            && day_end <= h1
            && !(0..24).any(|i| is_dirty(h + i * HOUR));
        if whole_day {
            push(Gran::Day, h, day_end);
            h = day_end;
        } else {
            push(
                if is_dirty(h) { Gran::Raw } else { Gran::Hour },
                h,
                h + HOUR,
            );
            h += HOUR;
        }
    }
    push(Gran::Raw, h1, to);
    out
}
