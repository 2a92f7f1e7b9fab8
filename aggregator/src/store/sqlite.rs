//! The embedded default backend: one SQLite file in WAL mode.
//!
//! - Durability: `synchronous=FULL`; a summary is acknowledged only after the
//!   transaction holding it has committed.
//! - Group commit: summaries are encoded on the caller's thread, then one
//!   writer thread inserts whatever has queued up (up to 64) in a single
//!   transaction: one fsync per batch instead of one per summary.
//! - Layout: a summary is three rows, clustered by time (`start, sensor`):
//!   its totals (`windows`), its port rows as one blob ([`super::portrec`])
//!   and its source rows as one blob of packed records sorted by address
//!   ([`super::srcrec`]), found through a block index by incremental blob
//!   I/O. Nothing is indexed by port or address at ingest: one port's
//!   per-window series is built per hour at roll-up (`port_windows`, one row
//!   per port and hour, merged across sensors), so only the hour not rolled
//!   up yet is read from the window blobs. Source lookups use the hourly roll-up
//!   `source_hours`, keyed (hour, address, sensor): one index seek per hour,
//!   built in bulk once the hour is over. A window arriving for an hour that
//!   was already rolled up marks the hour dirty; the next roll-up rebuilds it
//!   and until then lookups read that hour's raw rows.
//! - Roll-ups and inserts run on the same writer thread, so no late window
//!   can slip between a roll-up's read and its watermark.
//! - Addresses are 16-byte big-endian blobs (IPv4 mapped); sketches are their
//!   wire bytes.

use super::fold::{self, bytes_hll, merged_key, proto_of, SourceRowTuple};
use super::{portrec, srcrec};
use super::{
    Alert, AnalystRecord, ExportRecord, FeedCursor, FeedMatch, FeedRow, HostFeed, Inserted,
    LocalChange, Overview, PeerState, PortFilter, PortReach, PortTop, Scope, SensorRecord,
    SensorStatus, SeriesPoint, SourceInfo, SourceSeen, Store, StoreError, SubscriberRecord,
};
use darkscope_common::hll::Hll;
use darkscope_common::wire::{ClassTotals, Summary};
use darkscope_common::{Addr, ClassSet, Fingerprint, FingerprintSet, Proto, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::{mpsc, Mutex, MutexGuard};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sensors (
  id TEXT PRIMARY KEY, country TEXT NOT NULL, token_hash BLOB NOT NULL UNIQUE,
  created INTEGER NOT NULL, revoked INTEGER);
CREATE TABLE IF NOT EXISTS analysts (
  name TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, created INTEGER NOT NULL, revoked INTEGER);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY, proto INTEGER NOT NULL, port INTEGER NOT NULL, scope TEXT NOT NULL,
  start INTEGER NOT NULL, severity TEXT NOT NULL, baseline REAL NOT NULL, observed INTEGER NOT NULL,
  state TEXT NOT NULL, resolved_at INTEGER);
CREATE INDEX IF NOT EXISTS alerts_start ON alerts(start);
CREATE TABLE IF NOT EXISTS subscribers (
  id TEXT PRIMARY KEY, prefixes TEXT NOT NULL, token_hash BLOB NOT NULL UNIQUE,
  created INTEGER NOT NULL, revoked INTEGER,
  webhook TEXT NOT NULL DEFAULT '', webhook_key BLOB NOT NULL DEFAULT x'');
CREATE TABLE IF NOT EXISTS feed_events (
  subscriber TEXT NOT NULL, day INTEGER NOT NULL, ip TEXT NOT NULL, sensor TEXT NOT NULL,
  start INTEGER NOT NULL, stored_at INTEGER NOT NULL, country TEXT NOT NULL,
  asn INTEGER NOT NULL, geo TEXT NOT NULL, packets INTEGER NOT NULL, destinations INTEGER NOT NULL,
  classes INTEGER NOT NULL, fingerprints INTEGER NOT NULL,
  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, top_ports TEXT NOT NULL,
  PRIMARY KEY (subscriber, day, ip, sensor, start)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feed_events_stored ON feed_events(subscriber, stored_at);
CREATE INDEX IF NOT EXISTS feed_events_ip ON feed_events(ip);
CREATE TABLE IF NOT EXISTS feed_staging (
  subscriber TEXT NOT NULL, day INTEGER NOT NULL, ip TEXT NOT NULL, sensor TEXT NOT NULL,
  start INTEGER NOT NULL, country TEXT NOT NULL,
  asn INTEGER NOT NULL, geo TEXT NOT NULL, packets INTEGER NOT NULL, destinations INTEGER NOT NULL,
  classes INTEGER NOT NULL, fingerprints INTEGER NOT NULL,
  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, top_ports TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feed_push (
  subscriber TEXT PRIMARY KEY, stored_at INTEGER NOT NULL, day INTEGER NOT NULL, ip TEXT NOT NULL);
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
  darknet TEXT NOT NULL DEFAULT '', monitored_ipv4 INTEGER NOT NULL DEFAULT 0,
  fp_nmap INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (sensor, start)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_start ON windows(start);
CREATE TABLE IF NOT EXISTS port_blobs (
  start INTEGER NOT NULL, sensor TEXT NOT NULL, country TEXT NOT NULL, rows BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS port_blobs_key ON port_blobs(start, sensor);
CREATE TABLE IF NOT EXISTS port_windows (
  hour INTEGER NOT NULL, proto INTEGER NOT NULL, port INTEGER NOT NULL, sensor TEXT NOT NULL,
  points BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS port_windows_key ON port_windows(hour, proto, port, sensor);
CREATE TABLE IF NOT EXISTS source_blobs (
  start INTEGER NOT NULL, sensor TEXT NOT NULL, rows BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS source_blobs_key ON source_blobs(start, sensor);
CREATE TABLE IF NOT EXISTS source_hours (
  hour INTEGER NOT NULL, ip BLOB NOT NULL, sensor TEXT NOT NULL,
  packets INTEGER NOT NULL, bytes INTEGER NOT NULL, windows INTEGER NOT NULL,
  classes INTEGER NOT NULL, fingerprints INTEGER NOT NULL,
  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, top_ports TEXT NOT NULL,
  PRIMARY KEY (hour, ip, sensor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS port_hours (
  hour INTEGER NOT NULL, sensor TEXT NOT NULL, country TEXT NOT NULL,
  proto INTEGER NOT NULL, port INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
  sources INTEGER NOT NULL, destinations INTEGER NOT NULL, hll BLOB NOT NULL, windows INTEGER NOT NULL,
  PRIMARY KEY (hour, proto, port, sensor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS port_days (
  day INTEGER NOT NULL, sensor TEXT NOT NULL, country TEXT NOT NULL,
  proto INTEGER NOT NULL, port INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
  sources INTEGER NOT NULL, destinations INTEGER NOT NULL, hll BLOB NOT NULL, windows INTEGER NOT NULL,
  PRIMARY KEY (day, proto, port, sensor)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS port_hours_port ON port_hours(proto, port, sensor, hour);
CREATE INDEX IF NOT EXISTS port_days_port ON port_days(proto, port, sensor, day);
-- Top ports over roll-ups read one key's rows (a pre-merged `*` key or a sensor),
-- not every sensor's row of every day (4x faster over 30 days, benches/RESULTS.md).
CREATE INDEX IF NOT EXISTS port_hours_sensor ON port_hours(sensor, hour);
CREATE INDEX IF NOT EXISTS port_days_sensor ON port_days(sensor, day);
CREATE TABLE IF NOT EXISTS rollup_hours (hour INTEGER PRIMARY KEY, dirty INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fed_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, start INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS peer_state (
  peer TEXT PRIMARY KEY, cursor INTEGER NOT NULL, last_pull INTEGER, last_success INTEGER,
  last_error TEXT NOT NULL, errors INTEGER NOT NULL, imported INTEGER NOT NULL,
  newest_window_end INTEGER, tlp TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS export_audit (
  id INTEGER PRIMARY KEY, time INTEGER NOT NULL, peer TEXT NOT NULL, share TEXT NOT NULL,
  tlp TEXT NOT NULL, cursor_from INTEGER NOT NULL, cursor_to INTEGER NOT NULL,
  observations INTEGER NOT NULL, port_rows INTEGER NOT NULL, source_rows INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS export_audit_time ON export_audit(time);
CREATE TABLE IF NOT EXISTS heartbeats (
  role TEXT NOT NULL, holder TEXT NOT NULL, since INTEGER NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY (role, holder)) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '8');
INSERT OR IGNORE INTO meta (key, value) VALUES ('rolled_until', '0');
"#;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// Late windows are expected this long after an hour ends before it is rolled up.
const ROLLUP_GRACE: i64 = 5 * 60_000_000;
/// Most summaries committed in one transaction.
const BATCH_MAX: usize = 64;

/// Query connections (each with its own page cache, see `open`).
const READERS: usize = 3;

/// Least time between two feed reads that make the writer move staged events.
const READ_FLUSH_GAP: std::time::Duration = std::time::Duration::from_millis(250);

/// SQLite store.
pub struct SqliteStore {
    /// When a feed read last had staged events moved.
    last_read_flush: Mutex<Option<std::time::Instant>>,
    /// Inserts handed to the writer and not answered yet.
    inserting: std::sync::atomic::AtomicUsize,
    /// Credential lookups: their own connection, so authenticating an
    /// upload never waits behind an analyst's long query on `reader`.
    auth: Mutex<Connection>,
    /// Administrative writes (sensors, retention).
    writer: Mutex<Connection>,
    /// Query connections: a query takes a free one, so a short query does
    /// not wait behind a long one (WAL readers run concurrently).
    readers: Vec<Mutex<Connection>>,
    /// Round-robin start for [`SqliteStore::reader`].
    next_reader: std::sync::atomic::AtomicUsize,
    jobs: Mutex<mpsc::SyncSender<Job>>,
    /// The writer thread, joined on drop so the file is closed when the
    /// store is (a store opened next on the same file never races it).
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the job channel ends the writer's loop (it moves staged
        // feed events first); then wait for it.
        let (closed, _) = mpsc::sync_channel(1);
        *lock(&self.jobs) = closed;
        if let Some(t) = lock(&self.writer_thread).take() {
            let _ = t.join();
        }
    }
}

/// A summary turned into rows, ready for the writer thread.
struct Encoded {
    sensor: String,
    country: String,
    start: i64,
    end: i64,
    window: [i64; 22],
    exact: bool,
    sources_hll: Vec<u8>,
    /// Port rows, [`portrec`] blob.
    ports: Vec<u8>,
    /// Source rows, [`srcrec`] blob.
    sources: Vec<u8>,
    /// Monitored prefixes, comma-separated.
    darknet: String,
    monitored_ipv4: i64,
    /// Replace a stored window with the same key (federation imports)
    /// instead of keeping the first.
    replace: bool,
    /// Feed events to record with the window.
    feed: Vec<FeedEnc>,
}

/// A feed event ready for the writer thread.
struct FeedEnc {
    subscriber: String,
    ip: String,
    asn: i64,
    geo: String,
    v: [i64; 6],
    top_ports: String,
}

/// Feed events of a summary's matched sources.
fn encode_feed(s: &Summary, matches: &[FeedMatch]) -> Vec<FeedEnc> {
    matches
        .iter()
        .filter_map(|m| {
            let r = s.sources.get(m.source)?;
            Some(FeedEnc {
                subscriber: m.subscriber.clone(),
                ip: Addr::from(r.ip).to_string(),
                asn: m.asn as i64,
                geo: m.geo.clone(),
                v: [
                    r.packets as i64,
                    r.destinations as i64,
                    r.classes.0 as i64,
                    r.fingerprints.0 as i64,
                    r.first_seen.0 as i64,
                    r.last_seen.0 as i64,
                ],
                top_ports: serde_json::to_string(&r.top_ports.to_vec())
                    .unwrap_or_else(|_| "[]".into()),
            })
        })
        .collect()
}

/// Where the writer thread answers an insert.
type InsertReply = mpsc::SyncSender<Result<Inserted, StoreError>>;

enum Job {
    Insert(Box<Encoded>, InsertReply),
    Rollup(Timestamp, mpsc::SyncSender<Result<u64, StoreError>>),
    /// Move staged feed events now; answers whether nothing is left staged.
    FlushFeed(mpsc::SyncSender<Result<bool, StoreError>>),
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let mut c = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every transaction here writes. Taking the write lock at BEGIN lets the
    // busy timeout queue it behind another process's writer (the aggregator
    // and `darkscope-admin` share the file); a deferred one that read first
    // fails at once with "database is locked" when that writer commits
    // in between, since its snapshot is stale.
    c.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    // A 256 MiB page cache and memory-mapped reads keep the hot B-tree pages
    // (roll-ups, indexes) in memory.
    c.pragma_update(None, "cache_size", -262_144)?;
    c.pragma_update(None, "mmap_size", 1i64 << 30)?;
    c.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(c)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

/// Runs a write that must change one row; `missing` is the error otherwise.
fn write_one(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    missing: StoreError,
) -> Result<(), StoreError> {
    if c.execute(sql, p)? == 0 {
        return Err(missing);
    }
    Ok(())
}

fn sensor_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SensorRecord> {
    Ok(SensorRecord {
        id: r.get(0)?,
        country: r.get(1)?,
        created: ts(r.get(2)?),
        revoked: r.get::<_, Option<i64>>(3)?.map(ts),
    })
}

fn subscriber_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubscriberRecord> {
    let mut s = SubscriberRecord {
        id: r.get(0)?,
        created: ts(r.get(2)?),
        revoked: r.get::<_, Option<i64>>(3)?.map(ts),
        webhook: Some(r.get::<_, String>(4)?).filter(|w| !w.is_empty()),
        webhook_key: r.get(5)?,
        ..Default::default()
    };
    s.set_resources(&r.get::<_, String>(1)?);
    Ok(s)
}

const FEED_COLS: &str =
    "day, ip, sensor, country, start, stored_at, asn, geo, packets, destinations,
    classes, fingerprints, first_seen, last_seen, top_ports";

fn feed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedRow> {
    Ok(FeedRow {
        day: ts(r.get(0)?),
        ip: r
            .get::<_, String>(1)?
            .parse::<std::net::IpAddr>()
            .map(Addr::from)
            .unwrap_or_default(),
        sensor: r.get(2)?,
        country: r.get(3)?,
        start: ts(r.get(4)?),
        stored_at: ts(r.get(5)?),
        asn: r.get::<_, i64>(6)? as u32,
        geo: r.get(7)?,
        packets: r.get::<_, i64>(8)? as u64,
        destinations: r.get::<_, i64>(9)? as u64,
        classes: ClassSet(r.get::<_, i64>(10)? as u8),
        fingerprints: FingerprintSet(r.get::<_, i64>(11)? as u8),
        first: ts(r.get(12)?),
        last: ts(r.get(13)?),
        ports: serde_json::from_str(&r.get::<_, String>(14)?).unwrap_or_default(),
    })
}

const ALERT_COLUMNS: &str =
    "id, proto, port, scope, start, severity, baseline, observed, state, resolved_at";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let (scope, group) = Alert::split_scope_key(&r.get::<_, String>(3)?);
    Ok(Alert {
        id: r.get(0)?,
        proto: proto_of(r.get(1)?),
        port: r.get::<_, i64>(2)? as u16,
        scope,
        group,
        start: ts(r.get(4)?),
        severity: r.get(5)?,
        baseline: r.get(6)?,
        observed: r.get::<_, i64>(7)? as u64,
        state: r.get(8)?,
        resolved_at: r.get::<_, Option<i64>>(9)?.map(ts),
    })
}

fn analyst_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AnalystRecord> {
    Ok(AnalystRecord {
        name: r.get(0)?,
        created: ts(r.get(1)?),
        revoked: r.get::<_, Option<i64>>(2)?.map(ts),
    })
}

fn ts(v: i64) -> Timestamp {
    Timestamp(v.max(0) as u64)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let writer = open(path)?;
        writer.execute_batch(SCHEMA)?;
        migrate(&writer, path)?;
        let readers = (0..READERS)
            .map(|_| open(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let ingest = open(path)?;
        // The ingest writer appends; it needs the B-tree's inner pages, not
        // a large cache (every commit walks the whole cache's hash table).
        ingest.pragma_update(None, "cache_size", -16_384)?;
        // Checkpoint every 8,192 WAL pages (32 MiB), not 1,000: a page dirtied
        // by several commits is copied once (benches/RESULTS.md, ingest).
        ingest.pragma_update(None, "wal_autocheckpoint", 8192)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(256);
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(ingest, rx))
            .map_err(|e| StoreError::Backend(format!("writer thread: {e}")))?;
        let auth = open(path)?;
        auth.pragma_update(None, "cache_size", -8_192)?;
        Ok(SqliteStore {
            last_read_flush: Mutex::new(None),
            inserting: std::sync::atomic::AtomicUsize::new(0),
            auth: Mutex::new(auth),
            writer: Mutex::new(writer),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            jobs: Mutex::new(tx),
            writer_thread: Mutex::new(Some(writer_thread)),
        })
    }

    /// Hands an encoded summary to the writer and waits for the commit.
    fn insert(&self, enc: Encoded) -> Result<Inserted, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let (tx, rx) = mpsc::sync_channel(1);
        self.inserting.fetch_add(1, Relaxed);
        let r = self
            .submit(Job::Insert(Box::new(enc), tx))
            .and_then(|()| rx.recv().map_err(|_| gone())?);
        self.inserting.fetch_sub(1, Relaxed);
        r
    }

    /// A free query connection, or (all busy) the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            match r.try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        lock(&self.readers[i])
    }

    /// Has the writer move staged feed events first, if there are any, so a
    /// feed read sees every event acknowledged before it. While uploads
    /// are being stored, reads ask for this at most every
    /// [`READ_FLUSH_GAP`] (pollers would otherwise make the writer flush on
    /// every poll); what they miss then comes with a later update time, so
    /// no cursor skips it.
    fn settle_feed(&self) -> Result<(), StoreError> {
        {
            let busy = self.inserting.load(std::sync::atomic::Ordering::Relaxed) > 0;
            let mut last = self
                .last_read_flush
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if busy && last.is_some_and(|t| t.elapsed() < READ_FLUSH_GAP) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        let any: bool =
            self.reader()
                .query_row("SELECT EXISTS (SELECT 1 FROM feed_staging)", [], |r| {
                    r.get(0)
                })?;
        if !any {
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Job::FlushFeed(tx))?;
        if !rx.recv().map_err(|_| gone())?? {
            return Err(StoreError::Backend(
                "staged feed events could not be moved; see the log".into(),
            ));
        }
        Ok(())
    }

    fn submit(&self, job: Job) -> Result<(), StoreError> {
        let tx = self.jobs.lock().map_err(|_| gone())?.clone();
        tx.send(job).map_err(|_| gone())
    }
}

/// The file's storage schema version.
fn schema_version(c: &Connection) -> Result<String, StoreError> {
    Ok(
        c.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })?,
    )
}

/// Upgrades the file a step at a time to the current schema. Each step
/// re-reads the version inside its own write transaction, so when two
/// processes open an old file at once (the aggregator and
/// `darkscope-admin`), it is upgraded once and the second finds it done.
fn migrate(c: &Connection, path: &Path) -> Result<(), StoreError> {
    loop {
        match schema_version(c)?.as_str() {
            "3" => migrate_3_to_4(c)?,
            "4" => migrate_4_to_5(c)?,
            "5" => migrate_5_to_6(c)?,
            "6" => migrate_6_to_7(c)?,
            "7" => migrate_7_to_8(c)?,
            "8" => return Ok(()),
            v => {
                return Err(StoreError::Backend(format!(
                    "{} has storage schema {v}; this build reads schemas 3 to 8 (move the old file aside)",
                    path.display()
                )))
            }
        }
    }
}

/// Starts a migration step's transaction (it holds the write lock), or
/// `None` when another process has already upgraded past `from`.
fn begin_step<'c>(
    c: &'c Connection,
    from: &str,
) -> Result<Option<rusqlite::Transaction<'c>>, StoreError> {
    let tx = c.unchecked_transaction()?;
    Ok((schema_version(&tx)? == from).then_some(tx))
}

/// Schema 4 (federation): windows remember the sensor's blocks; local
/// windows get an arrival log (the export cursor); pre-merged roll-ups get a
/// global twin (`**`, `**CC`), equal to the local rows while no peer data
/// exists.
fn migrate_3_to_4(c: &Connection) -> Result<(), StoreError> {
    let Some(tx) = begin_step(c, "3")? else {
        return Ok(());
    };
    log::info!("upgrading the database from storage schema 3 to 4 (federation)");
    tx.execute_batch(
        "ALTER TABLE windows ADD COLUMN darknet TEXT NOT NULL DEFAULT '';
         ALTER TABLE windows ADD COLUMN monitored_ipv4 INTEGER NOT NULL DEFAULT 0;
         INSERT INTO fed_log (sensor, start) SELECT sensor, start FROM windows ORDER BY stored_at, start, sensor;
         INSERT OR IGNORE INTO port_hours SELECT hour, '*' || sensor, country, proto, port, packets, bytes,
           sources, destinations, hll, windows FROM port_hours WHERE sensor LIKE '*%';
         INSERT OR IGNORE INTO port_days SELECT day, '*' || sensor, country, proto, port, packets, bytes,
           sources, destinations, hll, windows FROM port_days WHERE sensor LIKE '*%';
         UPDATE meta SET value = '4' WHERE key = 'schema';",
    )?;
    tx.commit()?;
    Ok(())
}

/// Schema 5 (feeds at ingest): subscribers gain a webhook; feed events are
/// recorded as summaries arrive (the table itself is created by the schema).
fn migrate_4_to_5(c: &Connection) -> Result<(), StoreError> {
    let Some(tx) = begin_step(c, "4")? else {
        return Ok(());
    };
    log::info!("upgrading the database from storage schema 4 to 5 (feed events)");
    tx.execute_batch(
        "ALTER TABLE subscribers ADD COLUMN webhook TEXT NOT NULL DEFAULT '';
         ALTER TABLE subscribers ADD COLUMN webhook_key BLOB NOT NULL DEFAULT x'';
         UPDATE meta SET value = '5' WHERE key = 'schema';",
    )?;
    tx.commit()?;
    Ok(())
}

/// Schema 6 (packed source rows): every source blob is rewritten from
/// fixed 114-byte records to [`srcrec`]'s packed format, in one
/// transaction (a crash leaves schema 5 to redo).
fn migrate_5_to_6(c: &Connection) -> Result<(), StoreError> {
    let Some(tx) = begin_step(c, "5")? else {
        return Ok(());
    };
    let n: i64 = tx.query_row("SELECT count(*) FROM source_blobs", [], |r| r.get(0))?;
    log::info!("upgrading the database from storage schema 5 to 6 (packing {n} source blobs)");
    {
        // Row ids first: rows are not rewritten under a running SELECT.
        let ids = tx
            .prepare("SELECT rowid FROM source_blobs")?
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        let mut read = tx.prepare("SELECT rows FROM source_blobs WHERE rowid = ?1")?;
        let mut write = tx.prepare("UPDATE source_blobs SET rows = ?2 WHERE rowid = ?1")?;
        for (done, id) in ids.iter().enumerate() {
            let old: Vec<u8> = read.query_row([id], |r| r.get(0))?;
            write.execute(params![id, srcrec::from_v1(&old)])?;
            if (done + 1) % 100_000 == 0 {
                log::info!("packed {} of {n} source blobs", done + 1);
            }
        }
    }
    tx.execute("UPDATE meta SET value = '6' WHERE key = 'schema'", [])?;
    tx.commit()?;
    Ok(())
}

/// SQL condition keeping only the scope's sensors (on a `sensor` column).
fn scope_pred(scope: Scope) -> &'static str {
    match scope {
        Scope::Local => "substr(sensor, 1, 1) <> '@'",
        Scope::Global => "1",
    }
}

fn gone() -> StoreError {
    StoreError::Backend("the SQLite writer thread stopped".into())
}

fn encode(s: &Summary, country: &str) -> Result<Encoded, StoreError> {
    let h = &s.capture;
    let k = &s.classes;
    let n = |v: u64| v as i64;
    let window = [
        n(s.totals.packets),
        n(s.totals.bytes),
        n(s.totals.sources),
        n(h.received),
        n(h.kernel_dropped),
        n(h.if_dropped),
        n(h.pipeline_dropped),
        n(h.malformed.values().sum::<u64>()),
        n(h.non_ip),
        n(h.not_darknet),
        n(h.spool_evicted),
        n(k.tcp_syn),
        n(k.backscatter),
        n(k.udp),
        n(k.icmp_echo),
        n(k.icmp_other),
        n(k.tcp_other),
        n(k.other),
        n(s.fingerprints[Fingerprint::Mirai]),
        n(s.fingerprints[Fingerprint::Zmap]),
        n(s.fingerprints[Fingerprint::Masscan]),
        n(s.fingerprints[Fingerprint::Nmap]),
    ];
    let ports = portrec::encode(&s.ports);
    let sources = srcrec::encode(&s.sources);
    Ok(Encoded {
        sensor: s.sensor.id.clone(),
        country: country.to_string(),
        start: s.window.start.0 as i64,
        end: s.window.end.0 as i64,
        window,
        exact: s.truncation.exact,
        sources_hll: s.totals.sources_hll.to_bytes(),
        ports,
        sources,
        darknet: s.sensor.darknet.join(","),
        monitored_ipv4: n(s.sensor.monitored_ipv4),
        replace: false,
        feed: Vec::new(),
    })
}

/// Feed events are appended to `feed_staging` (sequential pages) with
/// their window and moved into the per-subscriber `feed_events` at most
/// this long after, in one sorted bulk insert: with many subscribers,
/// writing each batch's few events per subscriber straight into
/// `feed_events` dirtied a page per subscriber per commit (ingest fell from
/// ~400 to ~240 summaries/s with 100,000 subscription prefixes;
/// benches/RESULTS.md). Feed reads first have the writer move what is
/// staged, so they always see every acknowledged event.
const FEED_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

fn writer_loop(mut c: Connection, rx: mpsc::Receiver<Job>) {
    let mut pending: Option<Job> = None;
    // When the oldest staged feed event was staged (staged rows survive a
    // restart: the first pass moves them).
    let mut staged: Option<std::time::Instant> = Some(std::time::Instant::now());
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => {
                let wait = staged
                    .map(|t| FEED_FLUSH.saturating_sub(t.elapsed()))
                    .unwrap_or(std::time::Duration::from_secs(3600));
                match rx.recv_timeout(wait) {
                    Ok(j) => j,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        flush_feed(&mut c, &mut staged);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        flush_feed(&mut c, &mut staged);
                        return;
                    }
                }
            }
        };
        let mut inserts = Vec::new();
        let mut rollups = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Insert(e, reply) => inserts.push((e, reply)),
                Job::Rollup(now, reply) => rollups.push((now, reply)),
                Job::FlushFeed(reply) => flushes.push(reply),
            }
            if inserts.len() < BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !inserts.is_empty() {
            match write_batch(&mut c, &inserts) {
                Ok(results) => {
                    if inserts.iter().any(|(e, _)| !e.feed.is_empty()) {
                        staged.get_or_insert_with(std::time::Instant::now);
                    }
                    for ((_, reply), r) in inserts.iter().zip(results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    log::error!("storing {} summaries failed: {e}", inserts.len());
                    for (_, reply) in &inserts {
                        // Each waiting upload gets the same error.
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        if staged.is_some_and(|t| t.elapsed() >= FEED_FLUSH) || !flushes.is_empty() {
            flush_feed(&mut c, &mut staged);
        }
        for reply in flushes {
            let _ = reply.send(Ok(staged.is_none()));
        }
        for (now, reply) in rollups {
            let _ = reply.send(rollup_now(&mut c, now));
        }
    }
}

/// Moves staged feed events into `feed_events`, sorted, stamped now.
fn flush_feed(c: &mut Connection, staged: &mut Option<std::time::Instant>) {
    if staged.is_none() {
        return;
    }
    let r = (|| -> Result<(), StoreError> {
        let tx = c.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO feed_events SELECT subscriber, day, ip, sensor, start, ?1, country,
               asn, geo, packets, destinations, classes, fingerprints, first_seen, last_seen, top_ports
             FROM feed_staging ORDER BY subscriber, day, ip, sensor, start",
            [monotonic_now()],
        )?;
        tx.execute("DELETE FROM feed_staging", [])?;
        tx.commit()?;
        Ok(())
    })();
    match r {
        Ok(()) => *staged = None,
        // Staged rows are durable; the next flush retries.
        Err(e) => log::error!("moving staged feed events failed (retried): {e}"),
    }
}

/// The wall clock in microseconds, strictly increasing across calls, so
/// feed cursors (ordered by store time) never see two batches share a time.
fn monotonic_now() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Timestamp::now().0 as i64;
    let prev = LAST.fetch_max(now, Ordering::Relaxed);
    if prev >= now {
        LAST.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        now
    }
}

/// Writes a batch in one transaction; feed events go to `feed_staging`
/// (see [`FEED_FLUSH`]).
fn write_batch(
    c: &mut Connection,
    jobs: &[(Box<Encoded>, InsertReply)],
) -> Result<Vec<Inserted>, StoreError> {
    let tx = c.transaction()?;
    let rolled_until = rolled_until(&tx)?;
    let mut out = Vec::with_capacity(jobs.len());
    {
        let mut ws = tx.prepare_cached(
            "INSERT OR IGNORE INTO windows VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28,?29,?30,?31)",
        )?;
        let mut log = tx.prepare_cached("INSERT INTO fed_log (sensor, start) VALUES (?1, ?2)")?;
        let mut del: Vec<rusqlite::CachedStatement<'_>> = [
            "DELETE FROM windows WHERE sensor = ?1 AND start = ?2",
            "DELETE FROM port_blobs WHERE sensor = ?1 AND start = ?2",
            "DELETE FROM source_blobs WHERE sensor = ?1 AND start = ?2",
        ]
        .iter()
        .map(|q| tx.prepare_cached(q))
        .collect::<Result<_, _>>()?;
        let mut ps = tx.prepare_cached("INSERT INTO port_blobs VALUES (?1, ?2, ?3, ?4)")?;
        let mut ss = tx.prepare_cached("INSERT INTO source_blobs VALUES (?1, ?2, ?3)")?;
        let mut dirty =
            tx.prepare_cached("INSERT OR REPLACE INTO rollup_hours (hour, dirty) VALUES (?1, 1)")?;
        let mut fs = tx.prepare_cached(
            "INSERT INTO feed_staging VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
        )?;
        let now = monotonic_now();
        for (e, _) in jobs {
            let w = &e.window;
            let mut replaced = false;
            if e.replace {
                for d in del.iter_mut() {
                    replaced |= d.execute(params![e.sensor, e.start])? > 0;
                }
            }
            let n = ws.execute(params![
                e.sensor,
                e.start,
                e.end,
                now,
                e.country,
                w[0],
                w[1],
                w[2],
                e.exact,
                w[3],
                w[4],
                w[5],
                w[6],
                w[7],
                w[8],
                w[9],
                w[10],
                w[11],
                w[12],
                w[13],
                w[14],
                w[15],
                w[16],
                w[17],
                w[18],
                w[19],
                w[20],
                e.sources_hll,
                e.darknet,
                e.monitored_ipv4,
                w[21],
            ])?;
            if n == 0 {
                out.push(Inserted::Duplicate);
                continue;
            }
            ps.execute(params![e.start, e.sensor, e.country, e.ports])?;
            ss.execute(params![e.start, e.sensor, e.sources])?;
            let day = e.start - e.start.rem_euclid(DAY);
            for f in &e.feed {
                let v = &f.v;
                fs.execute(params![
                    f.subscriber,
                    day,
                    f.ip,
                    e.sensor,
                    e.start,
                    e.country,
                    f.asn,
                    f.geo,
                    v[0],
                    v[1],
                    v[2],
                    v[3],
                    v[4],
                    v[5],
                    f.top_ports
                ])?;
            }
            if e.start < rolled_until {
                dirty.execute([e.start - e.start.rem_euclid(HOUR)])?;
            }
            if !e.replace {
                log.execute(params![e.sensor, e.start])?;
            }
            out.push(if replaced {
                Inserted::Replaced
            } else {
                Inserted::New
            });
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Per (address, sensor) of one hour.
struct HourAcc {
    packets: i64,
    bytes: i64,
    windows: i64,
    classes: i64,
    fingerprints: i64,
    first: i64,
    last: i64,
    ports: FxHashMap<(Proto, u16), u64>,
}

/// Rebuilds the `to` roll-up rows of period `[at, at + len)` from `rows`
/// (one window's or one hour's rows each): per (sensor, proto, port)
/// packets and bytes add up, destinations keep the largest window's count,
/// sketches merge, and `sources` stays exact when the period holds a
/// single window.
fn write_rolled(
    tx: &rusqlite::Transaction<'_>,
    to: &str,
    at: i64,
    rows: Vec<fold::RollRow>,
) -> Result<(), StoreError> {
    let acc = fold::roll(rows);
    tx.execute(
        &format!(
            "DELETE FROM {to} WHERE {} = ?1",
            if to == "port_days" { "day" } else { "hour" }
        ),
        [at],
    )?;
    let mut ins = tx.prepare_cached(&format!(
        "INSERT INTO {to} VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
    ))?;
    for a in acc {
        ins.execute(params![
            at,
            a.sensor,
            a.country,
            a.proto,
            a.port,
            a.packets,
            a.bytes,
            a.sources,
            a.dsts,
            a.hll.to_bytes(),
            a.windows
        ])?;
    }
    Ok(())
}

/// Rebuilds day `day`'s roll-up rows from its hourly rows.
fn roll_day(tx: &rusqlite::Transaction<'_>, day: i64) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    {
        let mut st = tx.prepare_cached(
            "SELECT sensor, country, proto, port, packets, bytes, sources, destinations, hll, windows
             FROM port_hours WHERE hour >= ?1 AND hour < ?2 AND sensor NOT LIKE '*%'",
        )?;
        let it = st.query_map(params![day, day + DAY], |r| {
            Ok(fold::RollRow {
                sensor: r.get(0)?,
                country: r.get(1)?,
                proto: r.get(2)?,
                port: r.get(3)?,
                packets: r.get(4)?,
                bytes: r.get(5)?,
                sources: r.get(6)?,
                dsts: r.get(7)?,
                hll: bytes_hll(&r.get::<_, Vec<u8>>(8)?),
                windows: r.get(9)?,
            })
        })?;
        for r in it {
            rows.push(r?);
        }
    }
    write_rolled(tx, "port_days", day, rows)
}

/// Calls `f(start, sensor, country, blob)` for the port blob of every
/// window with `a <= start < b` that matches the SQL condition `pred`
/// (over `sensor` and `country`; its parameters are `?3`.. from `extra`).
fn each_port_blob(
    c: &Connection,
    a: i64,
    b: i64,
    pred: &str,
    extra: &[&dyn rusqlite::ToSql],
    mut f: impl FnMut(i64, &str, &str, &[u8]),
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT start, sensor, country, rows FROM port_blobs
         WHERE start >= ?1 AND start < ?2 AND {pred}"
    ))?;
    let mut p: Vec<&dyn rusqlite::ToSql> = vec![&a, &b];
    p.extend_from_slice(extra);
    let mut rows = st.query(&p[..])?;
    while let Some(r) = rows.next()? {
        let sensor = r.get_ref(1)?.as_str().unwrap_or_default();
        let country = r.get_ref(2)?.as_str().unwrap_or_default();
        let blob = r.get_ref(3)?.as_blob().unwrap_or_default();
        f(r.get(0)?, sensor, country, blob);
    }
    Ok(())
}

/// Key of the per-window points of local sensors in `port_windows`; peers'
/// windows are merged under [`PEER_POINTS`] (only where there are any).
const LOCAL_POINTS: &str = "*";
/// See [`LOCAL_POINTS`].
const PEER_POINTS: &str = "@";

/// Rolls hour `h` up from its window blobs: the per-sensor and pre-merged
/// hourly rows (`port_hours`, unless `points_only`) and, per port, the
/// hour's per-window points merged across sensors (`port_windows`).
fn roll_hour_ports(
    tx: &rusqlite::Transaction<'_>,
    h: i64,
    points_only: bool,
) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    // (proto, port, from a peer) -> window start -> (packets, sketch)
    type Points = FxHashMap<(u8, u16, bool), std::collections::BTreeMap<i64, (u64, Hll)>>;
    let mut points: Points = FxHashMap::default();
    each_port_blob(
        tx,
        h,
        h + HOUR,
        "substr(sensor, 1, 1) <> '*'",
        &[],
        |start, sensor, country, blob| {
            let peer = sensor.starts_with('@');
            for r in portrec::decode(blob) {
                let row = r.to_row();
                let p = points
                    .entry((r.proto, r.port, peer))
                    .or_default()
                    .entry(start)
                    .or_insert_with(|| (0, Hll::new()));
                p.0 += r.packets;
                p.1.merge(&row.sources_hll);
                if !points_only {
                    rows.push(fold::RollRow::window(
                        sensor.to_string(),
                        country.to_string(),
                        row,
                    ));
                }
            }
        },
    )?;
    if !points_only {
        write_rolled(tx, "port_hours", h, rows)?;
    }
    tx.execute("DELETE FROM port_windows WHERE hour = ?1", [h])?;
    let mut keys: Vec<_> = points.into_iter().collect();
    keys.sort_unstable_by_key(|(k, _)| *k);
    let mut ins = tx.prepare_cached("INSERT INTO port_windows VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for ((proto, port, peer), by_start) in keys {
        let sketches: Vec<(u64, u64, Vec<u8>)> = by_start
            .into_iter()
            .map(|(start, (packets, hll))| ((start - h) as u64, packets, hll.to_bytes()))
            .collect();
        let blob = portrec::encode_points(sketches.iter().map(|(o, p, b)| (*o, *p, &b[..])));
        let key = if peer { PEER_POINTS } else { LOCAL_POINTS };
        ins.execute(params![h, proto, port, key, blob])?;
    }
    Ok(())
}

/// Schema 7 (packed port rows): a window's port rows become one
/// [`portrec`] blob, the port-led index goes, and every rolled-up hour gets
/// its per-window points (`port_windows`), in one transaction (a crash
/// leaves schema 6 to redo).
fn migrate_6_to_7(c: &Connection) -> Result<(), StoreError> {
    use darkscope_common::wire::PortRow;
    let Some(tx) = begin_step(c, "6")? else {
        return Ok(());
    };
    let n: i64 = tx.query_row("SELECT count(*) FROM windows", [], |r| r.get(0))?;
    log::info!(
        "upgrading the database from storage schema 6 to 7 (packing the port rows of {n} windows)"
    );
    {
        let mut st = tx.prepare(
            "SELECT start, sensor, country, proto, port, packets, bytes, sources, destinations, hll
             FROM port_rows ORDER BY start, sensor",
        )?;
        let mut ins = tx.prepare("INSERT INTO port_blobs VALUES (?1, ?2, ?3, ?4)")?;
        let mut key: Option<(i64, String, String)> = None;
        let mut ports: Vec<PortRow> = Vec::new();
        let mut done = 0u64;
        let mut flush = |key: &Option<(i64, String, String)>, ports: &mut Vec<PortRow>| {
            if let Some((start, sensor, country)) = key {
                ins.execute(params![start, sensor, country, portrec::encode(ports)])?;
                ports.clear();
                done += 1;
                if done % 100_000 == 0 {
                    log::info!("packed the port rows of {done} of {n} windows");
                }
            }
            Ok::<(), StoreError>(())
        };
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let k = (r.get::<_, i64>(0)?, r.get::<_, String>(1)?);
            if key.as_ref().map(|(s, id, _)| (*s, id)) != Some((k.0, &k.1)) {
                flush(&key, &mut ports)?;
                key = Some((k.0, k.1, r.get(2)?));
            }
            let g = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            ports.push(PortRow {
                proto: proto_of(r.get(3)?),
                port: r.get::<_, i64>(4)? as u16,
                packets: g(5)?,
                bytes: g(6)?,
                sources: g(7)?,
                destinations: g(8)?,
                sources_hll: bytes_hll(&r.get::<_, Vec<u8>>(9)?),
            });
        }
        flush(&key, &mut ports)?;
    }
    let hours: Vec<i64> = tx
        .prepare("SELECT hour FROM rollup_hours WHERE dirty = 0")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // Only the points: an hour's raw windows may be gone (retention) while
    // its roll-up rows stay.
    for h in hours {
        roll_hour_ports(&tx, h, true)?;
    }
    tx.execute_batch(
        "DROP TABLE port_rows;
         UPDATE meta SET value = '7' WHERE key = 'schema';",
    )?;
    tx.commit()?;
    Ok(())
}

/// Schema 8: windows count the sources carrying the Nmap fingerprint
/// (0 for windows stored before: no sensor reported it then).
fn migrate_7_to_8(c: &Connection) -> Result<(), StoreError> {
    let Some(tx) = begin_step(c, "7")? else {
        return Ok(());
    };
    log::info!("upgrading the database from storage schema 7 to 8 (Nmap fingerprint counts)");
    tx.execute_batch(
        "ALTER TABLE windows ADD COLUMN fp_nmap INTEGER NOT NULL DEFAULT 0;
         UPDATE meta SET value = '8' WHERE key = 'schema';",
    )?;
    tx.commit()?;
    Ok(())
}

use super::fold::{plan, Gran};

fn rollup_now(c: &mut Connection, now: Timestamp) -> Result<u64, StoreError> {
    let cutoff = {
        let t = now.0 as i64 - ROLLUP_GRACE;
        t - t.rem_euclid(HOUR)
    };
    let rolled_until = rolled_until(c)?;
    let mut hours: Vec<i64> = {
        let mut st = c.prepare(
            "SELECT DISTINCT start - start % ?3 FROM windows WHERE start >= ?1 AND start < ?2",
        )?;
        let v = st.query_map(params![rolled_until, cutoff, HOUR], |r| r.get(0))?;
        v.collect::<Result<_, _>>()?
    };
    hours.extend(dirty_hours(c)?);
    hours.sort_unstable();
    hours.dedup();
    for &h in &hours {
        let tx = c.transaction()?;
        let mut acc: std::collections::BTreeMap<([u8; 16], String), HourAcc> = Default::default();
        {
            let mut st = tx.prepare_cached(
                "SELECT sensor, rows FROM source_blobs WHERE start >= ?1 AND start < ?2",
            )?;
            let blobs = st.query_map(params![h, h + HOUR], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for b in blobs {
                let (sensor, blob) = b?;
                for rec in srcrec::decode(&blob) {
                    let a = acc
                        .entry((rec.ip, sensor.clone()))
                        .or_insert_with(|| HourAcc {
                            packets: 0,
                            bytes: 0,
                            windows: 0,
                            classes: 0,
                            fingerprints: 0,
                            first: i64::MAX,
                            last: 0,
                            ports: FxHashMap::default(),
                        });
                    a.packets += rec.packets as i64;
                    a.bytes += rec.bytes as i64;
                    a.windows += 1;
                    a.classes |= rec.classes as i64;
                    a.fingerprints |= rec.fingerprints as i64;
                    a.first = a.first.min(rec.first as i64);
                    a.last = a.last.max(rec.last as i64);
                    for p in rec.top_ports() {
                        *a.ports.entry((p.proto, p.port)).or_default() += p.packets;
                    }
                }
            }
        }
        tx.execute("DELETE FROM source_hours WHERE hour = ?1", [h])?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO source_hours VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            )?;
            for ((ip, sensor), a) in &acc {
                ins.execute(params![
                    h,
                    &ip[..],
                    sensor,
                    a.packets,
                    a.bytes,
                    a.windows,
                    a.classes,
                    a.fingerprints,
                    a.first,
                    a.last,
                    serde_json::to_string(&fold::busiest(&a.ports, 20))
                        .unwrap_or_else(|_| "[]".into()),
                ])?;
            }
        }
        roll_hour_ports(&tx, h, false)?;
        roll_day(&tx, h - h.rem_euclid(DAY))?;
        tx.execute(
            "INSERT OR REPLACE INTO rollup_hours (hour, dirty) VALUES (?1, 0)",
            [h],
        )?;
        tx.commit()?;
    }
    if cutoff > rolled_until {
        c.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'rolled_until'",
            [cutoff.to_string()],
        )?;
    }
    Ok(hours.len() as u64)
}

/// A raw port record as a [`fold::PortRowTuple`] (one window).
fn raw_tuple(r: &portrec::PortRec<'_>, sensor: &str) -> fold::PortRowTuple {
    (
        r.proto as i64,
        r.port as i64,
        r.packets as i64,
        r.bytes as i64,
        r.sources as i64,
        r.destinations as i64,
        r.hll.to_vec(),
        sensor.to_string(),
        1,
    )
}

/// Table and time column of a roll-up granularity. Raw windows have no
/// table of rows (they are blobs, read with [`each_port_blob`]); callers
/// handle [`Gran::Raw`] before asking.
fn table_of(g: Gran) -> (&'static str, &'static str) {
    match g {
        Gran::Day => ("port_days", "day"),
        Gran::Hour | Gran::Raw => ("port_hours", "hour"),
    }
}

/// The roll-up watermark: hours before it have been rolled up.
fn rolled_until(c: &Connection) -> Result<i64, StoreError> {
    let v: String = c.query_row(
        "SELECT value FROM meta WHERE key = 'rolled_until'",
        [],
        |r| r.get(0),
    )?;
    Ok(v.parse().unwrap_or(0))
}

/// Hours whose roll-up a late window made stale.
fn dirty_hours(c: &Connection) -> Result<Vec<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT hour FROM rollup_hours WHERE dirty = 1")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    )
}

/// [`plan`] with the watermark and dirty hours read from the database.
fn plan_for(
    c: &Connection,
    from: i64,
    to: i64,
    max: Gran,
) -> Result<Vec<(Gran, i64, i64)>, StoreError> {
    let rolled_until = rolled_until(c)?;
    let dirty = dirty_hours(c)?;
    Ok(plan(from, to, rolled_until, &dirty, max))
}

impl Store for SqliteStore {
    fn add_sensor(&self, id: &str, country: &str, token_hash: &[u8]) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "INSERT OR IGNORE INTO sensors (id, country, token_hash, created) VALUES (?1, ?2, ?3, ?4)",
            params![id, country, token_hash, Timestamp::now().0 as i64],
            StoreError::SensorExists(id.to_string()),
        )
    }

    fn revoke_sensor(&self, id: &str) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "UPDATE sensors SET revoked = COALESCE(revoked, ?2) WHERE id = ?1",
            params![id, Timestamp::now().0 as i64],
            StoreError::NoSensor(id.to_string()),
        )
    }

    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare("SELECT id, country, created, revoked FROM sensors ORDER BY id")?;
        let rows = st.query_map([], sensor_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn sensor_by_token(&self, token_hash: &[u8]) -> Result<Option<SensorRecord>, StoreError> {
        let c = lock(&self.auth);
        Ok(c.query_row(
            "SELECT id, country, created, revoked FROM sensors WHERE token_hash = ?1",
            [token_hash],
            sensor_row,
        )
        .optional()?)
    }

    fn add_subscriber(&self, s: &SubscriberRecord, token_hash: &[u8]) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "INSERT OR IGNORE INTO subscribers (id, prefixes, token_hash, created, webhook, webhook_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.id,
                s.resources(),
                token_hash,
                Timestamp::now().0 as i64,
                s.webhook.clone().unwrap_or_default(),
                s.webhook_key
            ],
            StoreError::SubscriberExists(s.id.clone()),
        )
    }

    fn update_subscriber(&self, s: &SubscriberRecord) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "UPDATE subscribers SET prefixes = ?2, webhook = ?3, webhook_key = ?4 WHERE id = ?1",
            params![
                s.id,
                s.resources(),
                s.webhook.clone().unwrap_or_default(),
                s.webhook_key
            ],
            StoreError::NoSubscriber(s.id.clone()),
        )
    }

    fn revoke_subscriber(&self, id: &str) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "UPDATE subscribers SET revoked = COALESCE(revoked, ?2) WHERE id = ?1",
            params![id, Timestamp::now().0 as i64],
            StoreError::NoSubscriber(id.to_string()),
        )
    }

    fn subscribers(&self) -> Result<Vec<SubscriberRecord>, StoreError> {
        let c = lock(&self.auth);
        let mut st =
            c.prepare("SELECT id, prefixes, created, revoked, webhook, webhook_key FROM subscribers ORDER BY id")?;
        let rows = st.query_map([], subscriber_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn subscriber_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<SubscriberRecord>, StoreError> {
        let c = lock(&self.auth);
        Ok(c.query_row(
            "SELECT id, prefixes, created, revoked, webhook, webhook_key FROM subscribers WHERE token_hash = ?1",
            [token_hash],
            subscriber_row,
        )
        .optional()?)
    }

    fn sources_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SourceSeen>, StoreError> {
        let c = self.reader();
        let mut out = Vec::new();
        for (g, a, b) in plan_for(&c, from.0 as i64, to.0 as i64, Gran::Hour)? {
            if g == Gran::Raw {
                let mut st = c.prepare_cached(
                    "SELECT sensor, rows FROM source_blobs WHERE start >= ?1 AND start < ?2",
                )?;
                for r in st.query_map(params![a, b], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })? {
                    let (sensor, blob) = r?;
                    for rec in srcrec::decode(&blob) {
                        out.push(SourceSeen {
                            ip: blob_ip(&rec.ip),
                            sensor: sensor.clone(),
                            packets: rec.packets,
                            classes: ClassSet(rec.classes),
                            fingerprints: FingerprintSet(rec.fingerprints),
                            first: Timestamp(rec.first),
                            last: Timestamp(rec.last),
                            ports: rec.top_ports().collect(),
                        });
                    }
                }
            } else {
                let mut st = c.prepare_cached(
                    "SELECT ip, sensor, packets, classes, fingerprints, first_seen, last_seen, top_ports
                     FROM source_hours WHERE hour >= ?1 AND hour < ?2",
                )?;
                for r in st.query_map(params![a, b], |r| {
                    Ok(SourceSeen {
                        ip: blob_ip(&r.get::<_, Vec<u8>>(0)?),
                        sensor: r.get(1)?,
                        packets: r.get::<_, i64>(2)? as u64,
                        classes: ClassSet(r.get::<_, i64>(3)? as u8),
                        fingerprints: FingerprintSet(r.get::<_, i64>(4)? as u8),
                        first: ts(r.get(5)?),
                        last: ts(r.get(6)?),
                        ports: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
                    })
                })? {
                    out.push(r?);
                }
            }
        }
        Ok(out)
    }

    fn add_analyst(&self, name: &str, token_hash: &[u8]) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "INSERT OR IGNORE INTO analysts (name, token_hash, created) VALUES (?1, ?2, ?3)",
            params![name, token_hash, Timestamp::now().0 as i64],
            StoreError::AnalystExists(name.to_string()),
        )
    }

    fn revoke_analyst(&self, name: &str) -> Result<(), StoreError> {
        write_one(
            &lock(&self.writer),
            "UPDATE analysts SET revoked = COALESCE(revoked, ?2) WHERE name = ?1",
            params![name, Timestamp::now().0 as i64],
            StoreError::NoAnalyst(name.to_string()),
        )
    }

    fn analysts(&self) -> Result<Vec<AnalystRecord>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare("SELECT name, created, revoked FROM analysts ORDER BY name")?;
        let rows = st.query_map([], analyst_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn analyst_by_token(&self, token_hash: &[u8]) -> Result<Option<AnalystRecord>, StoreError> {
        let c = lock(&self.auth);
        Ok(c.query_row(
            "SELECT name, created, revoked FROM analysts WHERE token_hash = ?1",
            [token_hash],
            analyst_row,
        )
        .optional()?)
    }

    fn window_starts(
        &self,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<Vec<Timestamp>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached(&format!(
            "SELECT DISTINCT start FROM windows WHERE start >= ?1 AND start < ?2 AND {} ORDER BY start",
            scope_pred(scope)
        ))?;
        let v = st.query_map(params![from.0 as i64, to.0 as i64], |r| r.get::<_, i64>(0))?;
        Ok(v.map(|x| x.map(ts)).collect::<Result<_, _>>()?)
    }

    fn window_sensors(&self, start: Timestamp, scope: Scope) -> Result<u32, StoreError> {
        let c = self.reader();
        Ok(c.query_row(
            &format!(
                "SELECT COUNT(*) FROM windows WHERE start = ?1 AND {}",
                scope_pred(scope)
            ),
            [start.0 as i64],
            |r| r.get(0),
        )?)
    }

    fn port_sources_at(
        &self,
        start: Timestamp,
        scope: Scope,
    ) -> Result<Vec<(Proto, u16, u64)>, StoreError> {
        let c = self.reader();
        let mut rows = Vec::new();
        let s = start.0 as i64;
        each_port_blob(&c, s, s + 1, scope_pred(scope), &[], |_, _, _, blob| {
            for r in portrec::decode(blob) {
                rows.push((r.proto as i64, r.port as i64, r.sources, r.hll.to_vec()));
            }
        })?;
        Ok(fold::window_port_sources(rows))
    }

    fn insert_alert(&self, a: &Alert) -> Result<i64, StoreError> {
        let c = lock(&self.writer);
        c.execute(
            "INSERT INTO alerts (proto, port, scope, start, severity, baseline, observed, state, resolved_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                a.proto as i64, a.port as i64, a.scope_key(), a.start.0 as i64, a.severity, a.baseline,
                a.observed as i64, a.state, a.resolved_at.map(|t| t.0 as i64)
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    fn resolve_alert(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        let c = lock(&self.writer);
        c.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?2 WHERE id = ?1",
            params![id, at.0 as i64],
        )?;
        Ok(())
    }

    fn alerts(&self, since: Timestamp, state: Option<&str>) -> Result<Vec<Alert>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE start >= ?1 AND (?2 IS NULL OR state = ?2)
             ORDER BY start DESC, id DESC"
        ))?;
        let v = st.query_map(params![since.0 as i64, state], alert_row)?;
        Ok(v.collect::<Result<_, _>>()?)
    }

    fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        let c = self.reader();
        let mut st =
            c.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"))?;
        Ok(st.query_row([id], alert_row).optional()?)
    }

    fn insert_summary_with(
        &self,
        s: &Summary,
        country: &str,
        matches: &[FeedMatch],
    ) -> Result<Inserted, StoreError> {
        let mut enc = encode(s, country)?;
        enc.feed = encode_feed(s, matches);
        self.insert(enc)
    }

    fn rollup(&self, now: Timestamp) -> Result<u64, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Job::Rollup(now, tx))?;
        rx.recv().map_err(|_| gone())?
    }

    fn top_ports(&self, f: &PortFilter, limit: usize) -> Result<Vec<PortTop>, StoreError> {
        let c = self.reader();
        let segments = plan_for(&c, f.from.0 as i64, f.to.0 as i64, Gran::Day)?;
        // Roll-ups hold per-sensor rows and pre-merged "*" / "*CC" rows.
        let rolled_key = match (&f.sensor, &f.country) {
            (Some(s), _) => s.clone(),
            (None, cc) => merged_key(f.scope, cc.as_deref()),
        };
        let scope = scope_pred(f.scope);
        let proto = f.proto.map(|p| p as u8);
        let mut rows: Vec<fold::PortRowTuple> = Vec::new();
        for (g, a, b) in segments {
            if g == Gran::Raw {
                each_port_blob(
                    &c,
                    a,
                    b,
                    &format!(
                        "{scope} AND (?3 IS NULL OR sensor = ?3) AND (?4 IS NULL OR country = ?4)"
                    ),
                    &[&f.sensor, &f.country],
                    |_, sensor, _, blob| {
                        for r in portrec::decode(blob) {
                            if proto.is_none_or(|p| p == r.proto) {
                                rows.push(raw_tuple(&r, sensor));
                            }
                        }
                    },
                )?;
                continue;
            }
            let (table, col) = table_of(g);
            let mut st = c.prepare_cached(&format!(
                "SELECT proto, port, packets, bytes, sources, destinations, hll, sensor, windows FROM {table}
                 WHERE {col} >= ?1 AND {col} < ?2 AND {scope}
                   AND (?3 IS NULL OR proto = ?3) AND sensor = ?4 AND (?5 IS NULL OR country = ?5)"
            ))?;
            let it = st.query_map(
                params![a, b, f.proto.map(|p| p as i64), rolled_key, f.country],
                |r| r.try_into(),
            )?;
            for r in it {
                rows.push(r?);
            }
        }
        let (mut v, _) = fold::ports(rows);
        fold::rank(&mut v, limit);
        Ok(v)
    }

    fn port_series(
        &self,
        proto: Proto,
        port: u16,
        from: Timestamp,
        to: Timestamp,
        step_us: u64,
        scope: Scope,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let step = step_us.max(1) as i64;
        let (f, t) = (from.0 as i64, to.0 as i64);
        let n = ((t - f).max(0) as u64).div_ceil(step as u64) as usize;
        let mut packets = vec![0u64; n];
        let mut sketches: Vec<Hll> = vec![Hll::new(); n];
        // Roll-up rows can only feed steps they fit in whole.
        let max = if step % DAY == 0 && f.rem_euclid(DAY) == 0 {
            Gran::Day
        } else if step % HOUR == 0 && f.rem_euclid(HOUR) == 0 {
            Gran::Hour
        } else {
            Gran::Raw
        };
        let mut add = |start: i64, p: u64, hll: &[u8]| {
            if start < f {
                return;
            }
            let i = ((start - f) / step) as usize;
            if i < n {
                packets[i] += p;
                sketches[i].merge(&bytes_hll(hll));
            }
        };
        let c = self.reader();
        // Steps shorter than an hour: rolled-up hours give per-window points.
        let per_window = max == Gran::Raw;
        let peers = match scope {
            Scope::Local => LOCAL_POINTS,
            Scope::Global => PEER_POINTS,
        };
        let plan_max = if per_window { Gran::Hour } else { max };
        for (g, a, b) in plan_for(&c, f, t, plan_max)? {
            if g == Gran::Raw {
                each_port_blob(&c, a, b, scope_pred(scope), &[], |start, _, _, blob| {
                    if let Some(r) = portrec::find(blob, proto as u8, port) {
                        add(start, r.packets, r.hll);
                    }
                })?;
            } else if per_window {
                let mut st = c.prepare_cached(
                    "SELECT points FROM port_windows
                     WHERE hour = ?1 AND proto = ?2 AND port = ?3 AND sensor IN (?4, ?5)",
                )?;
                for h in (a..b).step_by(HOUR as usize) {
                    let mut rows =
                        st.query(params![h, proto as i64, port as i64, LOCAL_POINTS, peers])?;
                    while let Some(r) = rows.next()? {
                        for (offset, p, hll) in
                            portrec::decode_points(r.get_ref(0)?.as_blob().unwrap_or_default())
                        {
                            add(h + offset as i64, p, hll);
                        }
                    }
                }
            } else {
                let (table, col) = table_of(g);
                let mut st = c.prepare_cached(&format!(
                    "SELECT {col}, packets, hll FROM {table}
                     WHERE proto = ?1 AND port = ?2 AND {col} >= ?3 AND {col} < ?4 AND sensor = ?5"
                ))?;
                let key = merged_key(scope, None);
                let mut rows = st.query(params![proto as i64, port as i64, a, b, key])?;
                while let Some(r) = rows.next()? {
                    add(
                        r.get(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get_ref(2)?.as_blob().unwrap_or_default(),
                    );
                }
            }
        }
        Ok((0..n)
            .map(|i| SeriesPoint {
                time: Timestamp((f + i as i64 * step) as u64),
                packets: packets[i],
                sources: sketches[i].estimate(),
            })
            .collect())
    }

    fn total_series(
        &self,
        from: Timestamp,
        to: Timestamp,
        step_us: u64,
        scope: Scope,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached(&format!(
            "SELECT start, packets, sources_hll FROM windows WHERE start >= ?1 AND start < ?2 AND {}",
            scope_pred(scope)
        ))?;
        let rows = st
            .query_map(params![from.0 as i64, to.0 as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(fold::steps(from.0, to.0, step_us, rows))
    }

    fn port_reach(
        &self,
        proto: Proto,
        port: u16,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<PortReach, StoreError> {
        let c = self.reader();
        let mut rows: Vec<fold::ReachRowTuple> = Vec::new();
        for (g, a, b) in plan_for(&c, from.0 as i64, to.0 as i64, Gran::Day)? {
            if g == Gran::Raw {
                each_port_blob(
                    &c,
                    a,
                    b,
                    scope_pred(scope),
                    &[],
                    |_, sensor, country, blob| {
                        if let Some(r) = portrec::find(blob, proto as u8, port) {
                            rows.push((
                                sensor.to_string(),
                                country.to_string(),
                                r.packets as i64,
                                r.sources as i64,
                                r.hll.to_vec(),
                                1,
                            ));
                        }
                    },
                )?;
                continue;
            }
            let (table, col) = table_of(g);
            // Roll-ups also hold pre-merged rows (`*`, `**CC`): per sensor only.
            let mut st = c.prepare_cached(&format!(
                "SELECT sensor, country, packets, sources, hll, windows FROM {table}
                 WHERE proto = ?1 AND port = ?2 AND {col} >= ?3 AND {col} < ?4
                   AND {} AND substr(sensor, 1, 1) <> '*'",
                scope_pred(scope)
            ))?;
            for r in st.query_map(params![proto as i64, port as i64, a, b], |r| r.try_into())? {
                rows.push(r?);
            }
        }
        Ok(fold::reach(rows))
    }

    fn source(&self, ip: Addr, scope: Scope) -> Result<Option<SourceInfo>, StoreError> {
        let c = self.reader();
        let scope = scope_pred(scope);
        let blob = ip_blob(ip);
        let mut rows: Vec<SourceRowTuple> = Vec::new();
        let rolled_until = rolled_until(&c)?;
        // Rolled-up hours: one seek each.
        let done: Vec<i64> = c
            .prepare_cached("SELECT hour FROM rollup_hours WHERE dirty = 0 AND hour < ?1")?
            .query_map([rolled_until], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        {
            let mut st = c.prepare_cached(&format!(
                "SELECT hour, sensor, packets, bytes, windows, classes, fingerprints, first_seen, last_seen, top_ports
                 FROM source_hours WHERE hour = ?1 AND ip = ?2 AND {scope}"
            ))?;
            for h in &done {
                for r in st.query_map(params![h, &blob[..]], |r| r.try_into())? {
                    rows.push(r?);
                }
            }
        }
        // Everything else from raw rows, one seek per (window, sensor): the
        // windows not rolled up yet, and those of hours a late window dirtied.
        let mut windows: Vec<(i64, String)> = Vec::new();
        {
            let mut st = c.prepare_cached(&format!(
                "SELECT start, sensor FROM windows WHERE start >= ?1 AND start < ?2 AND {scope}"
            ))?;
            let mut ranges = vec![(rolled_until, i64::MAX)];
            let dirty = dirty_hours(&c)?;
            ranges.extend(
                dirty
                    .into_iter()
                    .filter(|h| *h < rolled_until)
                    .map(|h| (h, h + HOUR)),
            );
            for (a, b) in ranges {
                for w in st.query_map(params![a, b], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })? {
                    windows.push(w?);
                }
            }
        }
        {
            let mut st = c.prepare_cached(
                "SELECT rowid FROM source_blobs WHERE start = ?1 AND sensor = ?2",
            )?;
            for (start, sensor) in windows {
                let Some(rowid) = st
                    .query_row(params![start, sensor], |r| r.get::<_, i64>(0))
                    .optional()?
                else {
                    continue;
                };
                // Through incremental blob I/O: header, ~5 index entries, a block.
                let b = c.blob_open(rusqlite::MAIN_DB, "source_blobs", "rows", rowid, true)?;
                let found = srcrec::find(b.len(), blob, |buf, at| b.read_at_exact(buf, at).ok());
                if let Some(r) = found {
                    let top = serde_json::to_string(&r.top_ports().collect::<Vec<_>>())
                        .unwrap_or_else(|_| "[]".into());
                    rows.push((
                        start,
                        sensor,
                        r.packets as i64,
                        r.bytes as i64,
                        1,
                        r.classes as i64,
                        r.fingerprints as i64,
                        r.first as i64,
                        r.last as i64,
                        top,
                    ));
                }
            }
        }
        Ok(fold::source_info(ip, rows))
    }

    fn sensor_status(&self, now: Timestamp, scope: Scope) -> Result<Vec<SensorStatus>, StoreError> {
        let c = self.reader();
        let peers = if scope == Scope::Global {
            "UNION ALL
             SELECT sensor, MAX(country), NULL, MAX(end), MAX(stored_at), COUNT(start),
                    SUM(received), SUM(kernel_dropped + if_dropped + pipeline_dropped),
                    SUM(spool_evicted)
             FROM windows WHERE substr(sensor, 1, 1) = '@' GROUP BY sensor"
        } else {
            ""
        };
        let mut st = c.prepare_cached(&format!(
            "SELECT * FROM (
             SELECT s.id, s.country, s.revoked, MAX(w.end), MAX(w.stored_at), COUNT(w.start),
                    COALESCE(SUM(w.received), 0),
                    COALESCE(SUM(w.kernel_dropped + w.if_dropped + w.pipeline_dropped), 0),
                    COALESCE(SUM(w.spool_evicted), 0)
             FROM sensors s LEFT JOIN windows w ON w.sensor = s.id
             GROUP BY s.id {peers}) ORDER BY substr(id, 1, 1) = '@', id"
        ))?;
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

    fn overview(
        &self,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<Overview, StoreError> {
        let top_ports = self.top_ports(
            &PortFilter {
                from,
                to,
                scope,
                ..Default::default()
            },
            10,
        )?;
        let c = self.reader();
        let scope = scope_pred(scope);
        let (packets, classes, active, windows) = c.query_row(
            &format!("SELECT COALESCE(SUM(packets),0), COALESCE(SUM(tcp_syn),0), COALESCE(SUM(backscatter),0),
                    COALESCE(SUM(udp),0), COALESCE(SUM(icmp_echo),0), COALESCE(SUM(icmp_other),0),
                    COALESCE(SUM(tcp_other),0), COALESCE(SUM(other),0), COUNT(DISTINCT sensor), COUNT(*)
             FROM windows WHERE start >= ?1 AND start < ?2 AND {scope}"),
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
        // Top sources: hourly roll-ups for whole clean hours, raw blobs for the rest.
        let mut by_ip: FxHashMap<[u8; 16], u64> = FxHashMap::default();
        for (g, a, b) in plan_for(&c, from.0 as i64, to.0 as i64, Gran::Hour)? {
            if g == Gran::Raw {
                let mut st = c.prepare_cached(&format!(
                    "SELECT rows FROM source_blobs WHERE start >= ?1 AND start < ?2 AND {scope}"
                ))?;
                for blob in st.query_map(params![a, b], |r| r.get::<_, Vec<u8>>(0))? {
                    for rec in srcrec::decode(&blob?) {
                        *by_ip.entry(rec.ip).or_default() += rec.packets;
                    }
                }
            } else {
                let mut st = c.prepare_cached(&format!(
                    "SELECT ip, SUM(packets) FROM source_hours WHERE hour >= ?1 AND hour < ?2 AND {scope} GROUP BY ip"
                ))?;
                for r in st.query_map(params![a, b], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
                })? {
                    let (ip, n) = r?;
                    *by_ip.entry(ip_blob(blob_ip(&ip))).or_default() += n as u64;
                }
            }
        }
        let top_sources = fold::top_sources(by_ip, 10);
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

    fn local_changes(&self, cursor: u64, limit: usize) -> Result<Vec<LocalChange>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached(
            "SELECT seq, sensor, start FROM fed_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let v = st.query_map(params![cursor as i64, limit as i64], |r| {
            Ok(LocalChange {
                seq: r.get::<_, i64>(0)? as u64,
                sensor: r.get(1)?,
                start: ts(r.get(2)?),
            })
        })?;
        Ok(v.collect::<Result<_, _>>()?)
    }

    fn local_changes_head(&self) -> Result<u64, StoreError> {
        let c = self.reader();
        Ok(
            c.query_row("SELECT COALESCE(MAX(seq), 0) FROM fed_log", [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        )
    }

    fn stored_summaries(
        &self,
        sensor: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Summary>, StoreError> {
        use darkscope_common::wire::{
            FingerprintCounts, PortRow, SensorInfo, Totals, Truncation, Window, SCHEMA,
        };
        let c = self.reader();
        let mut ws = c.prepare_cached(
            "SELECT start, end, country, packets, bytes, sources, exact,
                    tcp_syn, backscatter, udp, icmp_echo, icmp_other, tcp_other, other,
                    fp_mirai, fp_zmap, fp_masscan, sources_hll, darknet, monitored_ipv4, fp_nmap
             FROM windows WHERE sensor = ?1 AND start >= ?2 AND start < ?3 ORDER BY start",
        )?;
        let mut ps =
            c.prepare_cached("SELECT rows FROM port_blobs WHERE start = ?1 AND sensor = ?2")?;
        let mut ss =
            c.prepare_cached("SELECT rows FROM source_blobs WHERE start = ?1 AND sensor = ?2")?;
        let mut out = Vec::new();
        let rows = ws.query_map(params![sensor, from.0 as i64, to.0 as i64], |r| {
            let g = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok((
                (g(0)?, g(1)?, r.get::<_, String>(2)?),
                [g(3)?, g(4)?, g(5)?],
                r.get::<_, bool>(6)?,
                [g(7)?, g(8)?, g(9)?, g(10)?, g(11)?, g(12)?, g(13)?],
                [g(14)?, g(15)?, g(16)?, g(20)?],
                r.get::<_, Vec<u8>>(17)?,
                r.get::<_, String>(18)?,
                g(19)?,
            ))
        })?;
        for row in rows {
            let ((start, end, country), tot, exact, classes, fps, hll, darknet, mon) = row?;
            let blob: Vec<u8> = ps
                .query_row(params![start as i64, sensor], |r| r.get(0))
                .optional()?
                .unwrap_or_default();
            let mut ports: Vec<PortRow> = portrec::decode(&blob).map(|r| r.to_row()).collect();
            ports.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.port.cmp(&b.port)));
            let blob: Option<Vec<u8>> = ss
                .query_row(params![start as i64, sensor], |r| r.get(0))
                .optional()?;
            let mut sources: Vec<_> = blob
                .as_deref()
                .map(|b| srcrec::decode(b).into_iter().map(|r| r.to_row()).collect())
                .unwrap_or_default();
            sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
            let tracked: u64 = sources.iter().map(|r| r.packets).sum();
            out.push(Summary {
                schema: SCHEMA,
                sensor: SensorInfo {
                    id: sensor.to_string(),
                    country,
                    darknet: darknet
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect(),
                    monitored_ipv4: mon,
                },
                window: Window {
                    start: Timestamp(start),
                    end: Timestamp(end),
                },
                capture: Default::default(),
                classes: ClassTotals::from_array(classes),
                fingerprints: FingerprintCounts(fps),
                totals: Totals {
                    packets: tot[0],
                    bytes: tot[1],
                    sources: tot[2],
                    sources_hll: bytes_hll(&hll),
                },
                truncation: Truncation {
                    exact,
                    packets_untracked: tot[0].saturating_sub(tracked),
                    ..Default::default()
                },
                ports,
                sources,
            });
        }
        Ok(out)
    }

    fn feed_day(&self, subscriber: &str, day: Timestamp) -> Result<Vec<FeedRow>, StoreError> {
        self.settle_feed()?;
        let c = self.reader();
        let mut st = c.prepare_cached(&format!(
            "SELECT {FEED_COLS} FROM feed_events WHERE subscriber = ?1 AND day = ?2"
        ))?;
        let rows = st.query_map(params![subscriber, day.0 as i64], feed_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn host_feeds(&self, ip: Addr) -> Result<Vec<HostFeed>, StoreError> {
        self.settle_feed()?;
        let c = self.reader();
        let mut st = c.prepare_cached(
            "SELECT subscriber, MIN(day), MAX(day), COUNT(DISTINCT day), SUM(packets)
             FROM feed_events WHERE ip = ?1 GROUP BY subscriber ORDER BY subscriber",
        )?;
        let rows = st.query_map([ip.to_string()], |r| {
            Ok(HostFeed {
                subscriber: r.get(0)?,
                first_day: ts(r.get(1)?),
                last_day: ts(r.get(2)?),
                days: r.get::<_, i64>(3)? as u64,
                packets: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn push_cursor(&self, subscriber: &str) -> Result<Option<FeedCursor>, StoreError> {
        let c = self.reader();
        Ok(c.query_row(
            "SELECT stored_at, day, ip FROM feed_push WHERE subscriber = ?1",
            [subscriber],
            |r| {
                Ok(FeedCursor {
                    stored_at: r.get::<_, i64>(0)? as u64,
                    day: r.get::<_, i64>(1)? as u64,
                    ip: r.get(2)?,
                })
            },
        )
        .optional()?)
    }

    fn save_push_cursor(&self, subscriber: &str, cursor: &FeedCursor) -> Result<(), StoreError> {
        lock(&self.writer).execute(
            "INSERT OR REPLACE INTO feed_push (subscriber, stored_at, day, ip) VALUES (?1, ?2, ?3, ?4)",
            params![
                subscriber,
                cursor.stored_at as i64,
                cursor.day.min(i64::MAX as u64) as i64,
                cursor.ip
            ],
        )?;
        Ok(())
    }

    fn feed_changes(
        &self,
        subscriber: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<(FeedCursor, Vec<FeedRow>)>, StoreError> {
        self.settle_feed()?;
        let c = self.reader();
        // A host-day's last update is at or after the cursor's time exactly
        // when one of its rows is, so the index on (subscriber, stored_at)
        // finds the candidates; the full rows are read per host-day.
        let mut st = c.prepare_cached(
            "SELECT max(stored_at) AS m, day, ip FROM feed_events
             WHERE subscriber = ?1 AND stored_at >= ?2
             GROUP BY day, ip
             HAVING m > ?2 OR (m = ?2 AND (day > ?3 OR (day = ?3 AND ip > ?4)))
             ORDER BY m, day, ip LIMIT ?5",
        )?;
        let keys = st
            .query_map(
                params![
                    subscriber,
                    after.stored_at as i64,
                    after.day.min(i64::MAX as u64) as i64,
                    after.ip,
                    limit as i64
                ],
                |r| {
                    Ok(FeedCursor {
                        stored_at: r.get::<_, i64>(0)? as u64,
                        day: r.get::<_, i64>(1)? as u64,
                        ip: r.get(2)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = c.prepare_cached(&format!(
            "SELECT {FEED_COLS} FROM feed_events WHERE subscriber = ?1 AND day = ?2 AND ip = ?3"
        ))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let v = rows
                .query_map(params![subscriber, k.day as i64, k.ip], feed_row)?
                .collect::<Result<Vec<_>, _>>()?;
            out.push((k, v));
        }
        Ok(out)
    }

    fn import_summary(&self, s: &Summary, country: &str) -> Result<Inserted, StoreError> {
        if !s.sensor.id.starts_with(super::PEER_SENSOR_MARK) {
            return Err(StoreError::Backend(format!(
                "imported sensor key '{}' must start with '{}'",
                s.sensor.id,
                super::PEER_SENSOR_MARK
            )));
        }
        let mut enc = encode(s, country)?;
        enc.replace = true;
        self.insert(enc)
    }

    fn peer_states(&self) -> Result<Vec<PeerState>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached(
            "SELECT peer, cursor, last_pull, last_success, last_error, errors, imported,
                    newest_window_end, tlp FROM peer_state ORDER BY peer",
        )?;
        let v = st.query_map([], |r| {
            Ok(PeerState {
                peer: r.get(0)?,
                cursor: r.get::<_, i64>(1)? as u64,
                last_pull: r.get::<_, Option<i64>>(2)?.map(ts),
                last_success: r.get::<_, Option<i64>>(3)?.map(ts),
                last_error: r.get(4)?,
                errors: r.get::<_, i64>(5)? as u64,
                imported: r.get::<_, i64>(6)? as u64,
                newest_window_end: r.get::<_, Option<i64>>(7)?.map(ts),
                tlp: r.get(8)?,
            })
        })?;
        Ok(v.collect::<Result<_, _>>()?)
    }

    fn save_peer_state(&self, p: &PeerState) -> Result<(), StoreError> {
        let t = |x: Option<Timestamp>| x.map(|t| t.0 as i64);
        lock(&self.writer).execute(
            "INSERT OR REPLACE INTO peer_state VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![
                p.peer,
                p.cursor as i64,
                t(p.last_pull),
                t(p.last_success),
                p.last_error,
                p.errors as i64,
                p.imported as i64,
                t(p.newest_window_end),
                p.tlp
            ],
        )?;
        Ok(())
    }

    fn record_export(&self, e: &ExportRecord) -> Result<(), StoreError> {
        lock(&self.writer).execute(
            "INSERT INTO export_audit (time, peer, share, tlp, cursor_from, cursor_to, observations,
               port_rows, source_rows) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![
                e.time.0 as i64,
                e.peer,
                e.share,
                e.tlp,
                e.cursor_from as i64,
                e.cursor_to as i64,
                e.observations as i64,
                e.port_rows as i64,
                e.source_rows as i64
            ],
        )?;
        Ok(())
    }

    fn exports(
        &self,
        since: Timestamp,
        peer: Option<&str>,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached(
            "SELECT time, peer, share, tlp, cursor_from, cursor_to, observations, port_rows, source_rows
             FROM export_audit WHERE time >= ?1 AND (?2 IS NULL OR peer = ?2) ORDER BY time DESC, id DESC
             LIMIT 10000",
        )?;
        let v = st.query_map(params![since.0 as i64, peer], |r| {
            let g = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(ExportRecord {
                time: Timestamp(g(0)?),
                peer: r.get(1)?,
                share: r.get(2)?,
                tlp: r.get(3)?,
                cursor_from: g(4)?,
                cursor_to: g(5)?,
                observations: g(6)?,
                port_rows: g(7)?,
                source_rows: g(8)?,
            })
        })?;
        Ok(v.collect::<Result<_, _>>()?)
    }

    fn heartbeat(
        &self,
        role: &str,
        holder: &str,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        lock(&self.writer).execute(
            "INSERT OR REPLACE INTO heartbeats VALUES (?1, ?2, ?3, ?4)",
            params![role, holder, since.0 as i64, now.0 as i64],
        )?;
        Ok(())
    }

    fn live_replicas(
        &self,
        role: &str,
        after: Timestamp,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let c = self.reader();
        let mut st =
            c.prepare_cached("SELECT holder, since FROM heartbeats WHERE role = ?1 AND at >= ?2")?;
        let v = st.query_map(params![role, after.0 as i64], |r| {
            Ok((r.get::<_, String>(0)?, ts(r.get(1)?)))
        })?;
        Ok(v.collect::<Result<_, _>>()?)
    }

    fn apply_retention(
        &self,
        cutoff: Timestamp,
        rollup_cutoff: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut c = lock(&self.writer);
        let tx = c.transaction()?;
        let cut = cutoff.0 as i64;
        let n = tx.execute("DELETE FROM windows WHERE start < ?1", [cut])?;
        tx.execute("DELETE FROM port_blobs WHERE start < ?1", [cut])?;
        tx.execute("DELETE FROM port_windows WHERE hour < ?1", [cut])?;
        tx.execute("DELETE FROM source_blobs WHERE start < ?1", [cut])?;
        tx.execute("DELETE FROM fed_log WHERE start < ?1", [cut])?;
        let rcut = rollup_cutoff.0 as i64;
        tx.execute("DELETE FROM source_hours WHERE hour < ?1", [rcut])?;
        tx.execute("DELETE FROM rollup_hours WHERE hour < ?1", [rcut])?;
        tx.execute("DELETE FROM port_hours WHERE hour < ?1", [rcut])?;
        tx.execute(
            "DELETE FROM feed_events WHERE day < ?1",
            [rcut - rcut.rem_euclid(DAY)],
        )?;
        tx.execute(
            "DELETE FROM port_days WHERE day < ?1",
            [rcut - rcut.rem_euclid(DAY)],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_763_683_200_000_000; // a UTC midnight

    /// A one-source summary of sensor `s-1` (source 192.0.2.1, 3 packets).
    fn one_source_summary() -> Summary {
        crate::ingest::parse(&crate::ingest::example_json()).unwrap()
    }

    /// A database file at `path` as storage schema 4 left it, holding one
    /// summary (returned) with its hour rolled up, and a subscriber.
    fn schema_4_file(path: &Path) -> Summary {
        let sum = one_source_summary();
        {
            let s = SqliteStore::open(path).unwrap();
            let sub = SubscriberRecord {
                id: "isp".into(),
                prefixes: vec!["198.18.0.0/16".into()],
                ..Default::default()
            };
            s.add_subscriber(&sub, b"h").unwrap();
            s.insert_summary_with(&sum, "JP", &[]).unwrap();
            // Its hour rolled up, so the upgrade must build that hour's points.
            s.rollup(Timestamp(sum.window.end.0 + 2 * HOUR as u64))
                .unwrap();
        }
        {
            // Back to what schema 4 had: fixed-size source records, one row
            // per port (and no per-window points).
            let c = Connection::open(path).unwrap();
            c.execute_batch(
                "ALTER TABLE subscribers DROP COLUMN webhook;
                 ALTER TABLE subscribers DROP COLUMN webhook_key;
                 ALTER TABLE windows DROP COLUMN fp_nmap;
                 DROP TABLE feed_events;
                 DROP TABLE port_blobs;
                 DROP TABLE port_windows;
                 CREATE TABLE port_rows (
                   start INTEGER NOT NULL, sensor TEXT NOT NULL, country TEXT NOT NULL,
                   proto INTEGER NOT NULL, port INTEGER NOT NULL, packets INTEGER NOT NULL,
                   bytes INTEGER NOT NULL, sources INTEGER NOT NULL, destinations INTEGER NOT NULL,
                   hll BLOB NOT NULL, PRIMARY KEY (start, sensor, proto, port)) WITHOUT ROWID;
                 CREATE INDEX port_rows_port ON port_rows(proto, port, start);
                 UPDATE meta SET value = '4' WHERE key = 'schema';",
            )
            .unwrap();
            c.execute(
                "UPDATE source_blobs SET rows = ?1",
                [srcrec::to_v1(&sum.sources)],
            )
            .unwrap();
            for p in &sum.ports {
                c.execute(
                    "INSERT INTO port_rows VALUES (?1,?2,'JP',?3,?4,?5,?6,?7,?8,?9)",
                    params![
                        sum.window.start.0 as i64,
                        sum.sensor.id,
                        p.proto as i64,
                        p.port,
                        p.packets as i64,
                        p.bytes as i64,
                        p.sources as i64,
                        p.destinations as i64,
                        p.sources_hll.to_bytes()
                    ],
                )
                .unwrap();
            }
        }
        sum
    }

    /// Two processes open an old file at once (the aggregator restarted
    /// after an upgrade while an operator runs `darkscope-admin`): one
    /// upgrades it; the other, having read the old version before that,
    /// runs its steps late. They must find the work done and change nothing.
    #[test]
    fn upgrade_steps_run_late_by_a_second_process_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        let sum = schema_4_file(&path);
        let (first, second) = (open(&path).unwrap(), open(&path).unwrap());
        first.execute_batch(SCHEMA).unwrap();
        migrate(&first, &path).unwrap();
        type Step = fn(&Connection) -> Result<(), StoreError>;
        let steps: [Step; 5] = [
            migrate_3_to_4,
            migrate_4_to_5,
            migrate_5_to_6,
            migrate_6_to_7,
            migrate_7_to_8,
        ];
        for (i, step) in steps.into_iter().enumerate() {
            step(&second).unwrap_or_else(|e| panic!("step {} again: {e}", i + 3));
        }
        assert_eq!(schema_version(&second).unwrap(), "8");
        drop((first, second));
        let s = SqliteStore::open(&path).unwrap();
        let back = s
            .stored_summaries(&sum.sensor.id, sum.window.start, sum.window.end)
            .unwrap();
        assert_eq!(back[0].ports, sum.ports);
        assert_eq!(back[0].sources, sum.sources);
    }

    #[test]
    fn a_schema_4_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        let sum = schema_4_file(&path);
        let ip = Addr::from(sum.sources[0].ip);
        let s = SqliteStore::open(&path).unwrap();
        let subs = s.subscribers().unwrap();
        assert_eq!(subs[0].prefixes, ["198.18.0.0/16"]);
        assert_eq!(subs[0].webhook, None);
        assert!(s.feed_day("isp", Timestamp(0)).unwrap().is_empty());
        let v: String = s
            .reader()
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, "8");
        // The port rows were packed: the window reads back whole, and the
        // rolled-up hour's per-window points were built.
        let back = s
            .stored_summaries(&sum.sensor.id, sum.window.start, sum.window.end)
            .unwrap();
        assert_eq!(back[0].ports, sum.ports);
        let p = &sum.ports[0];
        let hour = sum.window.start.0 - sum.window.start.0 % HOUR as u64;
        let series = s
            .port_series(
                p.proto,
                p.port,
                Timestamp(hour),
                Timestamp(hour + HOUR as u64),
                60_000_000,
                Scope::Local,
            )
            .unwrap();
        assert_eq!(series.iter().map(|x| x.packets).sum::<u64>(), p.packets);
        assert!(
            s.reader()
                .query_row("SELECT count(*) FROM port_windows", [], |r| r
                    .get::<_, i64>(0))
                .unwrap()
                > 0
        );
        // The source rows were repacked: found by lookup and by scans.
        let info = s.source(ip, Scope::Local).unwrap().expect("source kept");
        assert_eq!(info.packets, 3);
        let blob: Vec<u8> = s
            .reader()
            .query_row("SELECT rows FROM source_blobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(blob[0], srcrec::TAG);
        // Windows gained the Nmap count: 0 for the old one, kept for new ones.
        assert_eq!(back[0].fingerprints, sum.fingerprints);
        let mut later = sum.clone();
        later.window.start.0 += 60_000_000;
        later.window.end.0 += 60_000_000;
        later.fingerprints[Fingerprint::Nmap] = 1;
        later.sources[0].fingerprints = FingerprintSet(Fingerprint::Nmap.bit());
        s.insert_summary_with(&later, "JP", &[]).unwrap();
        let back = s
            .stored_summaries(&sum.sensor.id, later.window.start, later.window.end)
            .unwrap();
        assert_eq!(back[0].fingerprints, later.fingerprints);
        assert_eq!(
            back[0].sources[0].fingerprints,
            later.sources[0].fingerprints
        );
    }

    #[test]
    fn plan_uses_the_coarsest_clean_table() {
        let rolled = T + 2 * DAY + 3 * HOUR;
        // 23:30 the day before → 2 days + 5 h later: raw edge, day, day, hours, raw tail.
        let p = plan(
            T - 30 * 60_000_000,
            T + 2 * DAY + 5 * HOUR,
            rolled,
            &[],
            Gran::Day,
        );
        assert_eq!(
            p,
            vec![
                (Gran::Raw, T - 30 * 60_000_000, T),
                (Gran::Day, T, T + 2 * DAY),
                (Gran::Hour, T + 2 * DAY, T + 2 * DAY + 3 * HOUR),
                (Gran::Raw, T + 2 * DAY + 3 * HOUR, T + 2 * DAY + 5 * HOUR),
            ]
        );
        // A dirty hour breaks its day into hours and is read raw.
        let p = plan(T, T + DAY, rolled, &[T + 5 * HOUR], Gran::Day);
        assert_eq!(
            p,
            vec![
                (Gran::Hour, T, T + 5 * HOUR),
                (Gran::Raw, T + 5 * HOUR, T + 6 * HOUR),
                (Gran::Hour, T + 6 * HOUR, T + DAY),
            ]
        );
        // Capped at hours; nothing rolled up; raw only.
        assert_eq!(
            plan(T, T + DAY, rolled, &[], Gran::Hour),
            vec![(Gran::Hour, T, T + DAY)]
        );
        assert_eq!(
            plan(T, T + DAY, 0, &[], Gran::Day),
            vec![(Gran::Raw, T, T + DAY)]
        );
        assert_eq!(
            plan(T, T + DAY, rolled, &[], Gran::Raw),
            vec![(Gran::Raw, T, T + DAY)]
        );
    }
}
