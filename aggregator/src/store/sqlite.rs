//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Durability: `synchronous=FULL`, one transaction per summary; a summary is
//! acknowledged only after its commit returns. One writer connection and one
//! reader connection (WAL lets reads proceed while a write commits).
//! Addresses are stored as 16-byte big-endian blobs (IPv4 mapped), sketches
//! in their wire form's bytes.

use super::{
    DayCount, Inserted, Overview, PortFilter, PortTop, SensorRecord, SensorStatus, SeriesPoint,
    SourceBrief, SourceInfo, Store, StoreError,
};
use darkscope_common::hll::Hll;
use darkscope_common::wire::{ClassTotals, PortCount, Summary};
use darkscope_common::{Addr, ClassSet, FingerprintSet, Proto, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sensors (
  id TEXT PRIMARY KEY, country TEXT NOT NULL, token_hash BLOB NOT NULL UNIQUE,
  created INTEGER NOT NULL, revoked INTEGER);
CREATE TABLE IF NOT EXISTS windows (
  sensor TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
  stored_at INTEGER NOT NULL, country TEXT NOT NULL,
  packets INTEGER NOT NULL, bytes INTEGER NOT NULL, sources INTEGER NOT NULL, exact INTEGER NOT NULL,
  received INTEGER NOT NULL, kernel_dropped INTEGER NOT NULL, if_dropped INTEGER NOT NULL,
  pipeline_dropped INTEGER NOT NULL, malformed INTEGER NOT NULL, non_ip INTEGER NOT NULL,
  not_darknet INTEGER NOT NULL, spool_evicted INTEGER NOT NULL,
  tcp_syn INTEGER NOT NULL, backscatter INTEGER NOT NULL, udp INTEGER NOT NULL,
  icmp_echo INTEGER NOT NULL, icmp_other INTEGER NOT NULL, tcp_other INTEGER NOT NULL,
  other INTEGER NOT NULL, fp_mirai INTEGER NOT NULL, fp_zmap INTEGER NOT NULL,
  fp_masscan INTEGER NOT NULL, sources_hll BLOB NOT NULL,
  PRIMARY KEY (sensor, start)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_start ON windows(start);
CREATE TABLE IF NOT EXISTS port_rows (
  start INTEGER NOT NULL, sensor TEXT NOT NULL, country TEXT NOT NULL,
  proto INTEGER NOT NULL, port INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
  sources INTEGER NOT NULL, destinations INTEGER NOT NULL, hll BLOB NOT NULL,
  PRIMARY KEY (start, sensor, proto, port)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS port_rows_port ON port_rows(proto, port, start);
CREATE TABLE IF NOT EXISTS source_rows (
  ip BLOB NOT NULL, start INTEGER NOT NULL, sensor TEXT NOT NULL,
  packets INTEGER NOT NULL, bytes INTEGER NOT NULL, ports INTEGER NOT NULL,
  destinations INTEGER NOT NULL, classes INTEGER NOT NULL, fingerprints INTEGER NOT NULL,
  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, top_ports TEXT NOT NULL,
  PRIMARY KEY (ip, start, sensor)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS source_rows_start ON source_rows(start);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1');
"#;

/// SQLite store.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    // The default 2 MiB page cache makes every random-key insert into
    // source_rows a read() of a page; 256 MiB of cache and memory-mapped reads
    // keep the hot B-tree pages in memory.
    c.pragma_update(None, "cache_size", -262_144)?;
    c.pragma_update(None, "mmap_size", 1i64 << 30)?;
    c.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(c)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (transactions
    // roll back on drop), so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ip_blob(a: Addr) -> [u8; 16] {
    a.0.to_be_bytes()
}

fn blob_ip(b: &[u8]) -> Addr {
    let mut a = [0u8; 16];
    if b.len() == 16 {
        a.copy_from_slice(b);
    }
    Addr(u128::from_be_bytes(a))
}

fn hll_bytes(h: &Hll) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(h.to_wire())
        .unwrap_or_default()
}

fn bytes_hll(b: &[u8]) -> Hll {
    use base64::Engine;
    Hll::from_wire(&base64::engine::general_purpose::STANDARD.encode(b)).unwrap_or_default()
}

fn ts(v: i64) -> Timestamp {
    Timestamp(v.max(0) as u64)
}

fn proto_of(v: i64) -> Proto {
    Proto::ALL.get(v as usize).copied().unwrap_or(Proto::Ip)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let writer = open(path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = open(path)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }
}

/// Folds port rows into per-port totals (shared by top ports and overview).
fn fold_ports(
    rows: impl Iterator<Item = rusqlite::Result<(i64, i64, i64, i64, i64, i64, Vec<u8>, String)>>,
) -> Result<(Vec<PortTop>, u64), StoreError> {
    struct Acc {
        packets: u64,
        bytes: u64,
        sources_one: u64,
        rows: u64,
        hll: Hll,
        dst_by_sensor: FxHashMap<String, u64>,
    }
    let mut by: FxHashMap<(i64, i64), Acc> = FxHashMap::default();
    let mut total = 0u64;
    for r in rows {
        let (proto, port, packets, bytes, sources, dsts, hll, sensor) = r?;
        total += packets as u64;
        let a = by.entry((proto, port)).or_insert_with(|| Acc {
            packets: 0,
            bytes: 0,
            sources_one: 0,
            rows: 0,
            hll: Hll::new(),
            dst_by_sensor: FxHashMap::default(),
        });
        a.packets += packets as u64;
        a.bytes += bytes as u64;
        a.sources_one = sources as u64;
        a.rows += 1;
        a.hll.merge(&bytes_hll(&hll));
        let d = a.dst_by_sensor.entry(sensor).or_insert(0);
        *d = (*d).max(dsts as u64);
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
            destinations: a.dst_by_sensor.values().sum(),
            share: if total == 0 {
                0.0
            } else {
                a.packets as f64 / total as f64
            },
        })
        .collect();
    Ok((v, total))
}

fn rank(v: &mut Vec<PortTop>, limit: usize) {
    v.sort_by(|a, b| {
        b.sources
            .cmp(&a.sources)
            .then(b.packets.cmp(&a.packets))
            .then(a.proto.cmp(&b.proto))
            .then(a.port.cmp(&b.port))
    });
    v.truncate(limit);
}

impl Store for SqliteStore {
    fn add_sensor(&self, id: &str, country: &str, token_hash: &[u8]) -> Result<(), StoreError> {
        let c = lock(&self.writer);
        let n = c.execute(
            "INSERT OR IGNORE INTO sensors (id, country, token_hash, created) VALUES (?1, ?2, ?3, ?4)",
            params![id, country, token_hash, Timestamp::now().0 as i64],
        )?;
        if n == 0 {
            return Err(StoreError::SensorExists(id.to_string()));
        }
        Ok(())
    }

    fn revoke_sensor(&self, id: &str) -> Result<(), StoreError> {
        let c = lock(&self.writer);
        let n = c.execute(
            "UPDATE sensors SET revoked = COALESCE(revoked, ?2) WHERE id = ?1",
            params![id, Timestamp::now().0 as i64],
        )?;
        if n == 0 {
            return Err(StoreError::NoSensor(id.to_string()));
        }
        Ok(())
    }

    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        let c = lock(&self.reader);
        let mut st = c.prepare("SELECT id, country, created, revoked FROM sensors ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok(SensorRecord {
                id: r.get(0)?,
                country: r.get(1)?,
                created: ts(r.get(2)?),
                revoked: r.get::<_, Option<i64>>(3)?.map(ts),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn sensor_by_token(&self, token_hash: &[u8]) -> Result<Option<SensorRecord>, StoreError> {
        let c = lock(&self.reader);
        Ok(c.query_row(
            "SELECT id, country, created, revoked FROM sensors WHERE token_hash = ?1",
            [token_hash],
            |r| {
                Ok(SensorRecord {
                    id: r.get(0)?,
                    country: r.get(1)?,
                    created: ts(r.get(2)?),
                    revoked: r.get::<_, Option<i64>>(3)?.map(ts),
                })
            },
        )
        .optional()?)
    }

    fn insert_summary(&self, s: &Summary, country: &str) -> Result<Inserted, StoreError> {
        let mut c = lock(&self.writer);
        let tx = c.transaction()?;
        let start = s.window.start.0 as i64;
        let id = s.sensor.id.as_str();
        let h = &s.capture;
        let k = &s.classes;
        let n = tx.execute(
            "INSERT OR IGNORE INTO windows VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28)",
            params![
                id, start, s.window.end.0 as i64, Timestamp::now().0 as i64, country,
                s.totals.packets as i64, s.totals.bytes as i64, s.totals.sources as i64, s.truncation.exact,
                h.received as i64, h.kernel_dropped as i64, h.if_dropped as i64, h.pipeline_dropped as i64,
                h.malformed.values().sum::<u64>() as i64, h.non_ip as i64, h.not_darknet as i64, h.spool_evicted as i64,
                k.tcp_syn as i64, k.backscatter as i64, k.udp as i64, k.icmp_echo as i64, k.icmp_other as i64,
                k.tcp_other as i64, k.other as i64,
                s.fingerprints.mirai as i64, s.fingerprints.zmap as i64, s.fingerprints.masscan as i64,
                hll_bytes(&s.totals.sources_hll),
            ],
        )?;
        if n == 0 {
            return Ok(Inserted::Duplicate);
        }
        {
            let mut ps =
                tx.prepare_cached("INSERT INTO port_rows VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)")?;
            for p in &s.ports {
                ps.execute(params![
                    start,
                    id,
                    country,
                    p.proto as i64,
                    p.port as i64,
                    p.packets as i64,
                    p.bytes as i64,
                    p.sources as i64,
                    p.destinations as i64,
                    hll_bytes(&p.sources_hll),
                ])?;
            }
            let mut ss = tx.prepare_cached(
                "INSERT INTO source_rows VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
            )?;
            for r in &s.sources {
                let top = serde_json::to_string(&r.top_ports)
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                ss.execute(params![
                    &ip_blob(Addr::from(r.ip))[..],
                    start,
                    id,
                    r.packets as i64,
                    r.bytes as i64,
                    r.ports as i64,
                    r.destinations as i64,
                    r.classes.0 as i64,
                    r.fingerprints.0 as i64,
                    r.first_seen.0 as i64,
                    r.last_seen.0 as i64,
                    top,
                ])?;
            }
        }
        tx.commit()?;
        Ok(Inserted::New)
    }

    fn top_ports(&self, f: &PortFilter, limit: usize) -> Result<Vec<PortTop>, StoreError> {
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(
            "SELECT proto, port, packets, bytes, sources, destinations, hll, sensor FROM port_rows
             WHERE start >= ?1 AND start < ?2
               AND (?3 IS NULL OR proto = ?3) AND (?4 IS NULL OR sensor = ?4) AND (?5 IS NULL OR country = ?5)",
        )?;
        let rows = st.query_map(
            params![
                f.from.0 as i64,
                f.to.0 as i64,
                f.proto.map(|p| p as i64),
                f.sensor,
                f.country
            ],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )?;
        let (mut v, _) = fold_ports(rows)?;
        rank(&mut v, limit);
        Ok(v)
    }

    fn port_series(
        &self,
        proto: Proto,
        port: u16,
        from: Timestamp,
        to: Timestamp,
        step_us: u64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let step = step_us.max(1);
        let n = (to.0.saturating_sub(from.0)).div_ceil(step) as usize;
        let mut packets = vec![0u64; n];
        let mut sketches: Vec<Hll> = vec![Hll::new(); n];
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(
            "SELECT start, packets, hll FROM port_rows
             WHERE proto = ?1 AND port = ?2 AND start >= ?3 AND start < ?4",
        )?;
        let rows = st.query_map(
            params![proto as i64, port as i64, from.0 as i64, to.0 as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?;
        for r in rows {
            let (start, p, hll) = r?;
            let i = ((start as u64 - from.0) / step) as usize;
            if i < n {
                packets[i] += p as u64;
                sketches[i].merge(&bytes_hll(&hll));
            }
        }
        Ok((0..n)
            .map(|i| SeriesPoint {
                time: Timestamp(from.0 + i as u64 * step),
                packets: packets[i],
                sources: sketches[i].estimate(),
            })
            .collect())
    }

    fn source(&self, ip: Addr) -> Result<Option<SourceInfo>, StoreError> {
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(
            "SELECT start, sensor, packets, bytes, classes, fingerprints, first_seen, last_seen, top_ports
             FROM source_rows WHERE ip = ?1 ORDER BY start",
        )?;
        let rows = st.query_map([&ip_blob(ip)[..]], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
            ))
        })?;
        let mut info: Option<SourceInfo> = None;
        let mut ports: FxHashMap<(Proto, u16), u64> = FxHashMap::default();
        let mut days: std::collections::BTreeMap<String, u64> = Default::default();
        for r in rows {
            let (start, sensor, packets, bytes, classes, fps, first, last, top) = r?;
            let i = info.get_or_insert_with(|| SourceInfo {
                ip: ip.to_string(),
                first_seen: ts(first),
                last_seen: ts(last),
                packets: 0,
                bytes: 0,
                ports: Vec::new(),
                per_day: Vec::new(),
                sensors: Vec::new(),
                fingerprints: FingerprintSet::default(),
                classes: ClassSet::default(),
                windows: 0,
            });
            i.first_seen = i.first_seen.min(ts(first));
            i.last_seen = i.last_seen.max(ts(last));
            i.packets += packets as u64;
            i.bytes += bytes as u64;
            i.classes.0 |= classes as u8;
            i.fingerprints.0 |= fps as u8;
            i.windows += 1;
            if !i.sensors.contains(&sensor) {
                i.sensors.push(sensor);
            }
            let day = ts(start).to_string()[..10].to_string();
            *days.entry(day).or_default() += packets as u64;
            if let Ok(tp) = serde_json::from_str::<Vec<PortCount>>(&top) {
                for p in tp {
                    *ports.entry((p.proto, p.port)).or_default() += p.packets;
                }
            }
        }
        Ok(info.map(|mut i| {
            let mut v: Vec<PortCount> = ports
                .into_iter()
                .map(|((proto, port), packets)| PortCount {
                    proto,
                    port,
                    packets,
                })
                .collect();
            v.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.port.cmp(&b.port)));
            v.truncate(20);
            i.ports = v;
            i.sensors.sort();
            i.per_day = days
                .into_iter()
                .map(|(day, packets)| DayCount { day, packets })
                .collect();
            i
        }))
    }

    fn sensor_status(&self, now: Timestamp) -> Result<Vec<SensorStatus>, StoreError> {
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(
            "SELECT s.id, s.country, s.revoked, MAX(w.end), MAX(w.stored_at), COUNT(w.start),
                    COALESCE(SUM(w.received), 0),
                    COALESCE(SUM(w.kernel_dropped + w.if_dropped + w.pipeline_dropped), 0),
                    COALESCE(SUM(w.spool_evicted), 0)
             FROM sensors s LEFT JOIN windows w ON w.sensor = s.id
             GROUP BY s.id ORDER BY s.id",
        )?;
        let rows = st.query_map([], |r| {
            let last: Option<i64> = r.get(3)?;
            let received = r.get::<_, i64>(6)? as u64;
            let dropped = r.get::<_, i64>(7)? as u64;
            Ok(SensorStatus {
                id: r.get(0)?,
                country: r.get(1)?,
                revoked: r.get::<_, Option<i64>>(2)?.is_some(),
                last_window_end: last.map(ts),
                last_summary_at: r.get::<_, Option<i64>>(4)?.map(ts),
                windows: r.get::<_, i64>(5)? as u64,
                received,
                dropped,
                drop_rate: if received == 0 {
                    0.0
                } else {
                    dropped as f64 / received as f64
                },
                spool_evicted: r.get::<_, i64>(8)? as u64,
                lag_seconds: last.map(|l| (now.0 as f64 - l as f64) / 1e6),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn overview(&self, from: Timestamp, to: Timestamp) -> Result<Overview, StoreError> {
        let top_ports = self.top_ports(
            &PortFilter {
                from,
                to,
                ..Default::default()
            },
            10,
        )?;
        let c = lock(&self.reader);
        let (packets, classes, active, windows) = c.query_row(
            "SELECT COALESCE(SUM(packets),0), COALESCE(SUM(tcp_syn),0), COALESCE(SUM(backscatter),0),
                    COALESCE(SUM(udp),0), COALESCE(SUM(icmp_echo),0), COALESCE(SUM(icmp_other),0),
                    COALESCE(SUM(tcp_other),0), COALESCE(SUM(other),0), COUNT(DISTINCT sensor), COUNT(*)
             FROM windows WHERE start >= ?1 AND start < ?2",
            params![from.0 as i64, to.0 as i64],
            |r| {
                let g = |i| r.get::<_, i64>(i).map(|v| v as u64);
                Ok((
                    g(0)?,
                    ClassTotals::from_array([g(1)?, g(2)?, g(3)?, g(4)?, g(5)?, g(6)?, g(7)?]),
                    g(8)?,
                    g(9)?,
                ))
            },
        )?;
        let mut st = c.prepare_cached(
            "SELECT ip, SUM(packets) AS n FROM source_rows WHERE start >= ?1 AND start < ?2
             GROUP BY ip ORDER BY n DESC, ip LIMIT 10",
        )?;
        let top_sources = st
            .query_map(params![from.0 as i64, to.0 as i64], |r| {
                Ok(SourceBrief {
                    ip: blob_ip(&r.get::<_, Vec<u8>>(0)?).to_string(),
                    packets: r.get::<_, i64>(1)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Overview {
            from,
            to,
            packets,
            classes,
            top_ports,
            top_sources,
            active_sensors: active,
            windows,
        })
    }

    fn apply_retention(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut c = lock(&self.writer);
        let tx = c.transaction()?;
        let cut = cutoff.0 as i64;
        let n = tx.execute("DELETE FROM windows WHERE start < ?1", [cut])?;
        tx.execute("DELETE FROM port_rows WHERE start < ?1", [cut])?;
        tx.execute("DELETE FROM source_rows WHERE start < ?1", [cut])?;
        tx.commit()?;
        Ok(n as u64)
    }
}
