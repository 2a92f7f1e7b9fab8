//! The scale-out backend: ClickHouse over its HTTP interface (`reqwest`,
//! `JSONEachRow` in and out), for many sensors, months of per-source rows
//! and several aggregator replicas sharing one database.
//!
//! - Schema: `deploy/clickhouse/NNN_*.sql`, versioned and applied by
//!   [`ClickHouseStore::migrate`] (`darkscope-aggregator migrate`); a store
//!   refuses to open a database whose schema is behind.
//! - Only SQL that ClickHouse 18.16 (Debian 12) and current releases both
//!   accept. That old server has no query parameters, so every value is
//!   put in the SQL text by [`lit`] (strings quoted and escaped) or as a
//!   Rust integer: nothing a caller sends is ever spliced in raw.
//! - Batched inserts: a writer thread commits whatever summaries have
//!   queued (group commit), with one existence query and one INSERT per
//!   table per batch.
//! - No transactions: a batch writes the port and source rows first and
//!   the window rows last; every such table is a `ReplacingMergeTree` keyed
//!   by what makes a row unique and read with `FINAL`, so a retry (or the
//!   same window arriving at two replicas) is seen once, and a federation
//!   import replaces a window by its newer version.
//! - Distinct sources merge from the stored HyperLogLog sketches in Rust,
//!   with the same folding code as SQLite ([`super::fold`]), so both
//!   backends give identical answers on the same data.
//! - Port roll-ups by hour and day (per sensor and pre-merged across
//!   sensors, local and global), built by the leader replica once an hour
//!   is over, with late windows marking their hour dirty, and queries
//!   planned over raw, hourly and daily rows exactly as on SQLite
//!   ([`fold::plan`], [`fold::roll`]); a source's history is read from raw
//!   rows (ordered by address).
//! - Durability is ClickHouse's: an insert is acknowledged once its part is
//!   written; use a replicated cluster for more (see deploy/clickhouse/).

use super::fold::{self, merged_key, proto_of, Gran, PortRowTuple, RollRow, SourceRowTuple};
use super::{
    Alert, AnalystRecord, ExportRecord, FeedCursor, FeedMatch, FeedRow, HostFeed, Inserted,
    LocalChange, Overview, PeerState, PortFilter, PortReach, PortTop, Scope, SensorRecord,
    SensorStatus, SeriesPoint, SourceInfo, SourceSeen, Store, StoreError, SubscriberRecord,
    PEER_SENSOR_MARK,
};
use base64::Engine;
use darkscope_common::hll::Hll;
use darkscope_common::wire::{
    ClassTotals, FingerprintCounts, PortCount, PortRow, SensorInfo, SourceRow, Summary, TopPorts,
    Totals, Truncation, Window, SCHEMA,
};
use darkscope_common::{Addr, ClassSet, Fingerprint, FingerprintSet, Proto, Timestamp};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The migrations, in order: (version, SQL with `{db}` for the database).
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../../deploy/clickhouse/001_init.sql")),
    (
        2,
        include_str!("../../../deploy/clickhouse/002_heartbeats.sql"),
    ),
    (
        3,
        include_str!("../../../deploy/clickhouse/003_rollups.sql"),
    ),
    (
        4,
        include_str!("../../../deploy/clickhouse/004_feed_events.sql"),
    ),
    (5, include_str!("../../../deploy/clickhouse/005_nmap.sql")),
];

/// The same migrations for a ClickHouse cluster (`[clickhouse] cluster`):
/// replicated `<name>_local` tables on every node behind `Distributed`
/// tables with the names darkscope queries; `{cluster}` is the cluster.
pub const CLUSTER_MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        include_str!("../../../deploy/clickhouse/cluster/001_init.sql"),
    ),
    (
        2,
        include_str!("../../../deploy/clickhouse/cluster/002_heartbeats.sql"),
    ),
    (
        3,
        include_str!("../../../deploy/clickhouse/cluster/003_rollups.sql"),
    ),
    (
        4,
        include_str!("../../../deploy/clickhouse/cluster/004_feed_events.sql"),
    ),
    (
        5,
        include_str!("../../../deploy/clickhouse/cluster/005_nmap.sql"),
    ),
];

const HOUR: u64 = 3_600_000_000;
/// Feed changes younger than this are not handed out yet (see `feed_changes`).
const FEED_SETTLE_US: u64 = 5_000_000;
const DAY: u64 = 24 * HOUR;
/// Late windows are expected this long after an hour ends before it is rolled up.
const ROLLUP_GRACE: u64 = 5 * 60_000_000;

/// `[clickhouse]`: where the database is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database (created by `migrate`).
    pub database: String,
    /// User.
    pub user: String,
    /// File holding the user's password (none: no password).
    pub password_file: Option<PathBuf>,
    /// Seconds before a request is abandoned; on a cluster, `ON CLUSTER`
    /// statements wait for their hosts 5 s less (at least half as long).
    pub timeout_secs: u64,
    /// Windows are offered to federation peers only this many seconds
    /// after their export position was taken. Positions come from each
    /// replica's clock when the upload arrives, not from one sequence, so
    /// a window can become visible after one with a later position (a
    /// slower batch, another replica, clock skew); a peer that had already
    /// moved its cursor past it would never get it. Must exceed commit
    /// latency plus clock skew between replicas.
    pub export_settle_secs: u64,
    /// A ClickHouse cluster (a `<remote_servers>` name) to use the
    /// replicated, distributed schema on (`deploy/clickhouse/cluster/`);
    /// none: one server. Inserts then wait until every shard has its rows
    /// (`insert_distributed_sync`), and reads prefer the replicas inserts
    /// went to (`load_balancing = in_order`), so what was acknowledged is
    /// what the next query sees.
    pub cluster: Option<String>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "darkscope".into(),
            user: "default".into(),
            password_file: None,
            timeout_secs: 60,
            export_settle_secs: 30,
            cluster: None,
        }
    }
}

impl ClickHouseConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "[clickhouse] url '{}' must be http:// or https://",
                self.url
            ));
        }
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !ok(&self.database) {
            return Err("[clickhouse] database must be 1-64 letters, digits or '_'".into());
        }
        if self.cluster.as_deref().is_some_and(|c| !ok(c)) {
            return Err("[clickhouse] cluster must be 1-64 letters, digits or '_'".into());
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return Err("[clickhouse] timeout_secs must be 1-3600".into());
        }
        if self.export_settle_secs > 3600 {
            return Err("[clickhouse] export_settle_secs must be 0-3600".into());
        }
        Ok(())
    }
}

/// A string literal for ClickHouse SQL: quoted, with `\` and `'` escaped.
pub fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn hll_of(s: &str) -> Hll {
    Hll::from_bytes(&hll_bytes(s)).unwrap_or_default()
}

/// A stored (base64) sketch's bytes; empty when unreadable.
fn hll_bytes(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn opt(t: u64) -> Option<Timestamp> {
    (t != 0).then_some(Timestamp(t))
}

/// `FINAL PREWHERE key [WHERE rest]`, for `SELECT *`: the deduplicated rows
/// matching both. `key` may only test sorting-key columns: every version
/// of a row has the same key, so filtering before the FINAL merge keeps or
/// drops all of them together and the answer is the one `FINAL WHERE`
/// gives, but ClickHouse then reads only the matching rows' other columns
/// (top ports over 30 days × 200 sensors: 275 → ~110 ms; it otherwise
/// reads whole granules of sketches). Anything else goes in `rest`, tested
/// after the merge. Only with every column selected: on a cluster,
/// ClickHouse 18.16 loses the key and version columns FINAL needs when a
/// query selects fewer ("Cannot find column ... in source stream").
fn final_filter(key: &str, rest: &str) -> String {
    if rest.is_empty() {
        format!("FINAL PREWHERE {key}")
    } else {
        format!("FINAL PREWHERE {key} WHERE {rest}")
    }
}

fn scope_pred(scope: Scope) -> String {
    match scope {
        Scope::Local => format!(
            "NOT startsWith(sensor, {})",
            lit(&PEER_SENSOR_MARK.to_string())
        ),
        Scope::Global => "1".into(),
    }
}

/// The HTTP connection to ClickHouse (shared with the writer thread).
pub struct Conn {
    http: reqwest::blocking::Client,
    cfg: ClickHouseConfig,
    password: Option<String>,
}

/// A window turned into rows, waiting for the writer thread.
struct Rows {
    replace: bool,
    ports: Vec<PortRowCh>,
    sources: Vec<SourceRowCh>,
    feed: Vec<FeedRowCh>,
    window: WindowRow,
}

/// A `feed_events` row.
#[derive(Serialize, Deserialize)]
struct FeedRowCh {
    #[serde(default)]
    subscriber: String,
    day: u64,
    ip: String,
    sensor: String,
    start: u64,
    stored_at: u64,
    country: String,
    asn: u32,
    geo: String,
    packets: u64,
    destinations: u64,
    classes: u8,
    fingerprints: u8,
    first_seen: u64,
    last_seen: u64,
    top_ports: String,
}

impl FeedRowCh {
    fn row(self) -> FeedRow {
        FeedRow {
            day: Timestamp(self.day),
            ip: self
                .ip
                .parse::<std::net::IpAddr>()
                .map(Addr::from)
                .unwrap_or_default(),
            sensor: self.sensor,
            country: self.country,
            start: Timestamp(self.start),
            stored_at: Timestamp(self.stored_at),
            asn: self.asn,
            geo: self.geo,
            packets: self.packets,
            destinations: self.destinations,
            classes: ClassSet(self.classes),
            fingerprints: FingerprintSet(self.fingerprints),
            first: Timestamp(self.first_seen),
            last: Timestamp(self.last_seen),
            ports: serde_json::from_str(&self.top_ports).unwrap_or_default(),
        }
    }
}

type Reply = std::sync::mpsc::SyncSender<Result<Inserted, StoreError>>;

/// Most windows written in one batch (one INSERT per table).
const BATCH_MAX: usize = 256;

/// Whether `msg` is ClickHouse's answer to an ON CLUSTER statement that
/// outlived `distributed_ddl_task_timeout` (code 159, TIMEOUT_EXCEEDED; `,`
/// after the code in old servers, `.` in new ones): the statement stays
/// queued for the hosts that have not run it yet.
fn ddl_in_background(msg: &str) -> bool {
    ["Code: 159,", "Code: 159."].iter().any(|c| msg.contains(c))
}

/// The distributed-DDL task (its ZooKeeper path, e.g.
/// `/clickhouse/task_queue/ddl/query-0000000030`) named in a code-159 answer.
fn ddl_task(msg: &str) -> Option<&str> {
    let rest = &msg[msg.find("Watching task ")? + "Watching task ".len()..];
    rest.split_whitespace()
        .next()
        .filter(|task| task.contains("/query-"))
}

/// The hosts a distributed-DDL entry's text lists (`hosts: ['a:9000',…]`),
/// spelled as ZooKeeper spells them (escaped, e.g. `127%2E0%2E0%2E1:9000`).
fn ddl_hosts(entry: &str) -> Vec<String> {
    entry
        .lines()
        .find_map(|l| l.strip_prefix("hosts: ["))
        .map(|l| {
            l.trim_end_matches(']')
                .split(',')
                .map(|h| h.trim().trim_matches('\'').to_string())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A host name as ZooKeeper's DDL queue escapes it (`%2E` for `.`), made readable.
fn unescape_host(h: &str) -> String {
    percent_encoding::percent_decode_str(h)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether ClickHouse's `answer` to schema statement `sql` only says that
/// the column it adds is already there (ClickHouse 18.16 has no `ADD
/// COLUMN IF NOT EXISTS`): the statement has nothing left to do.
fn column_already_there(sql: &str, answer: &str) -> bool {
    sql.contains(" ADD COLUMN ") && answer.contains("column with this name already exists")
}

/// ClickHouse store.
pub struct ClickHouseStore {
    conn: std::sync::Arc<Conn>,
    /// Last version handed out: versions only grow within this process.
    last_ver: AtomicU64,
    jobs: std::sync::Mutex<std::sync::mpsc::SyncSender<(Box<Rows>, Reply)>>,
}

impl std::ops::Deref for ClickHouseStore {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

#[derive(Serialize, Deserialize)]
struct CredRow {
    #[serde(alias = "name")]
    id: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    prefixes: String,
    #[serde(default)]
    webhook: String,
    #[serde(default)]
    webhook_key: String,
    token_hash: String,
    created: u64,
    revoked: u64,
    ver: u64,
}

#[derive(Serialize, Deserialize)]
struct AlertRow {
    id: u64,
    proto: u8,
    port: u16,
    scope: String,
    start: u64,
    severity: String,
    baseline: f64,
    observed: u64,
    state: String,
    resolved_at: u64,
    ver: u64,
}

impl AlertRow {
    fn alert(self) -> Alert {
        let (scope, group) = Alert::split_scope_key(&self.scope);
        Alert {
            id: self.id as i64,
            proto: proto_of(self.proto as i64),
            port: self.port,
            scope,
            group,
            start: Timestamp(self.start),
            severity: self.severity,
            baseline: self.baseline,
            observed: self.observed,
            state: self.state,
            resolved_at: opt(self.resolved_at),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WindowRow {
    sensor: String,
    start: u64,
    end: u64,
    stored_at: u64,
    seq: u64,
    country: String,
    packets: u64,
    bytes: u64,
    sources: u64,
    exact: u8,
    received: u64,
    kernel_dropped: u64,
    if_dropped: u64,
    pipeline_dropped: u64,
    malformed: u64,
    non_ip: u64,
    not_darknet: u64,
    spool_evicted: u64,
    tcp_syn: u64,
    backscatter: u64,
    udp: u64,
    icmp_echo: u64,
    icmp_other: u64,
    tcp_other: u64,
    other: u64,
    fp_mirai: u64,
    fp_zmap: u64,
    fp_masscan: u64,
    sources_hll: String,
    darknet: String,
    monitored_ipv4: u64,
    fp_nmap: u64,
}

#[derive(Serialize, Deserialize)]
struct PortRowCh {
    start: u64,
    sensor: String,
    country: String,
    proto: u8,
    port: u16,
    packets: u64,
    bytes: u64,
    sources: u64,
    destinations: u64,
    hll: String,
    stored_at: u64,
}

impl PortRowCh {
    /// This window's row as roll-up input.
    fn roll_row(self) -> RollRow {
        RolledCh::from(self).roll_row()
    }
}

/// A roll-up row; `at` is the `hour` or `day` column.
#[derive(Deserialize)]
struct RolledCh {
    #[serde(alias = "hour", alias = "day")]
    at: u64,
    sensor: String,
    country: String,
    proto: u8,
    port: u16,
    packets: u64,
    bytes: u64,
    sources: u64,
    destinations: u64,
    hll: String,
    windows: u64,
}

impl From<PortRowCh> for RolledCh {
    /// A window's row read as a roll-up of one window.
    fn from(p: PortRowCh) -> RolledCh {
        RolledCh {
            at: p.start,
            sensor: p.sensor,
            country: p.country,
            proto: p.proto,
            port: p.port,
            packets: p.packets,
            bytes: p.bytes,
            sources: p.sources,
            destinations: p.destinations,
            hll: p.hll,
            windows: 1,
        }
    }
}

/// Hourly port roll-ups.
const HOURS: &str = "port_hours";
/// Daily port roll-ups.
const DAYS: &str = "port_days";

/// The roll-up table and its time column for a granularity coarser than raw.
fn rolled_table(g: Gran) -> (&'static str, &'static str) {
    if g == Gran::Hour {
        (HOURS, "hour")
    } else {
        (DAYS, "day")
    }
}

impl RolledCh {
    fn reach_row(self) -> fold::ReachRowTuple {
        let hll = hll_bytes(&self.hll);
        (
            self.sensor,
            self.country,
            self.packets as i64,
            self.sources as i64,
            hll,
            self.windows as i64,
        )
    }

    fn tuple(self) -> PortRowTuple {
        let hll = hll_bytes(&self.hll);
        (
            self.proto as i64,
            self.port as i64,
            self.packets as i64,
            self.bytes as i64,
            self.sources as i64,
            self.destinations as i64,
            hll,
            self.sensor,
            self.windows as i64,
        )
    }

    fn roll_row(self) -> RollRow {
        RollRow {
            hll: hll_of(&self.hll),
            sensor: self.sensor,
            country: self.country,
            proto: self.proto as i64,
            port: self.port as i64,
            packets: self.packets as i64,
            bytes: self.bytes as i64,
            sources: self.sources as i64,
            dsts: self.destinations as i64,
            windows: self.windows as i64,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SourceRowCh {
    start: u64,
    sensor: String,
    ip: String,
    packets: u64,
    bytes: u64,
    ports: u64,
    destinations: u64,
    classes: u8,
    fingerprints: u8,
    first_seen: u64,
    last_seen: u64,
    top_ports: String,
    stored_at: u64,
}

impl SourceRowCh {
    fn top(&self) -> Vec<PortCount> {
        serde_json::from_str(&self.top_ports).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
struct PeerRow {
    peer: String,
    cursor: u64,
    last_pull: u64,
    last_success: u64,
    last_error: String,
    errors: u64,
    imported: u64,
    newest_window_end: u64,
    tlp: String,
    ver: u64,
}

#[derive(Serialize, Deserialize)]
struct AuditRow {
    time: u64,
    peer: String,
    share: String,
    tlp: String,
    cursor_from: u64,
    cursor_to: u64,
    observations: u64,
    port_rows: u64,
    source_rows: u64,
}

#[derive(Deserialize)]
struct N {
    n: u64,
}

impl ClickHouseStore {
    /// Connects and checks that the schema is current (run
    /// [`ClickHouseStore::migrate`] first on a new database).
    pub fn open(cfg: &ClickHouseConfig) -> Result<ClickHouseStore, StoreError> {
        let conn = std::sync::Arc::new(Conn::new(cfg)?);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Box<Rows>, Reply)>(1024);
        let c = conn.clone();
        std::thread::Builder::new()
            .name("clickhouse-writer".into())
            .spawn(move || writer_loop(&c, rx))
            .map_err(|e| StoreError::Backend(format!("writer thread: {e}")))?;
        let s = ClickHouseStore {
            conn,
            last_ver: AtomicU64::new(0),
            jobs: std::sync::Mutex::new(tx),
        };
        let have = s.schema_version()?;
        let want = s.conn.migrations().last().map(|m| m.0).unwrap_or(0);
        if have < want {
            return Err(StoreError::Backend(format!(
                "ClickHouse database '{}' has schema version {have}, this build needs {want}: run `darkscope-aggregator migrate`",
                cfg.database
            )));
        }
        Ok(s)
    }

    /// Creates the database and applies the migrations it lacks; returns
    /// the versions applied now.
    pub fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<u32>, StoreError> {
        Conn::new(cfg)?.migrate()
    }

    /// A version number larger than any handed out before by this process.
    fn ver(&self) -> u64 {
        let now = Timestamp::now().0;
        let mut last = self.last_ver.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last_ver
                .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(l) => last = l,
            }
        }
    }
}

impl Conn {
    fn new(cfg: &ClickHouseConfig) -> Result<Conn, StoreError> {
        cfg.validate().map_err(StoreError::Backend)?;
        let password = match &cfg.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        StoreError::Backend(format!(
                            "cannot read ClickHouse password file '{}': {e}",
                            p.display()
                        ))
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(cfg.timeout_secs))
            .build()
            .map_err(|e| StoreError::Backend(format!("HTTP client: {e}")))?;
        Ok(Conn {
            http,
            cfg: cfg.clone(),
            password,
        })
    }

    /// The migrations for this deployment (one server or a cluster).
    fn migrations(&self) -> &'static [(u32, &'static str)] {
        match self.cfg.cluster {
            Some(_) => CLUSTER_MIGRATIONS,
            None => MIGRATIONS,
        }
    }

    fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let s = self;
        let db = &self.cfg.database;
        // DDL on a cluster runs on every node.
        let on = match &self.cfg.cluster {
            Some(c) => format!(" ON CLUSTER {c}"),
            None => String::new(),
        };
        s.ddl(&format!("CREATE DATABASE IF NOT EXISTS {db}{on}"))?;
        // On a cluster the version table is one replicated table on every
        // node (a path without the shard), so any node can tell the version.
        let engine = match self.cfg.cluster {
            Some(_) => format!(
                "ReplicatedMergeTree('/clickhouse/tables/all/{db}/schema_migrations', '{{shard}}-{{replica}}')"
            ),
            None => "MergeTree".into(),
        };
        s.ddl(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} (version UInt32, applied UInt64) ENGINE = {engine} ORDER BY version"
        ))?;
        let have = s.schema_version()?;
        let mut done = Vec::new();
        let cluster = self.cfg.cluster.as_deref().unwrap_or("");
        for (v, sql) in self.migrations().iter().filter(|m| m.0 > have) {
            for stmt in statements(sql) {
                s.ddl(&stmt.replace("{db}", db).replace("{cluster}", cluster))?;
            }
            s.run(
                &format!(
                    "INSERT INTO {db}.schema_migrations (version, applied) VALUES ({v}, {})",
                    Timestamp::now().0
                ),
                None,
            )?;
            done.push(*v);
        }
        Ok(done)
    }

    /// Runs a schema statement. On a cluster ClickHouse stops waiting for
    /// slow hosts after `distributed_ddl_task_timeout` (code 159) and
    /// leaves the statement queued for them; the next statement may need
    /// this one's result on every host, so this waits for them (up to
    /// `timeout_secs` more), and fails naming the hosts that are still
    /// behind, or with a host's own error. An `ADD COLUMN` whose column is
    /// already there counts as done (ClickHouse 18.16 has no `IF NOT
    /// EXISTS` for columns), so a migration cut short can be run again.
    fn ddl(&self, sql: &str) -> Result<(), StoreError> {
        match self.run(sql, None) {
            Ok(_) => Ok(()),
            Err(StoreError::Backend(m)) if column_already_there(sql, &m) => {
                log::info!("ClickHouse: column already there, skipped: {sql}");
                Ok(())
            }
            Err(StoreError::Backend(m)) if self.cfg.cluster.is_some() && ddl_in_background(&m) => {
                let Some(task) = ddl_task(&m) else {
                    return Err(StoreError::Backend(m));
                };
                log::warn!(
                    "ClickHouse: schema change {task} is not done on every host after {} s; \
                     waiting up to {} s more",
                    self.ddl_timeout_secs(),
                    self.cfg.timeout_secs
                );
                self.await_ddl(
                    sql,
                    task,
                    std::time::Duration::from_secs(self.cfg.timeout_secs),
                )
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until every host listed in the distributed-DDL task at
    /// ZooKeeper path `task` (statement `sql`) has finished it (read
    /// through `system.zookeeper`), at most `wait`.
    fn await_ddl(
        &self,
        sql: &str,
        task: &str,
        wait: std::time::Duration,
    ) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Node {
            name: String,
            value: String,
        }
        let zk = |path: &str, name: Option<&str>| -> Result<Vec<Node>, StoreError> {
            let only = name.map(|n| format!(" AND name = {}", lit(n)));
            self.rows(&format!(
                "SELECT name, value FROM system.zookeeper WHERE path = {}{}",
                lit(path),
                only.unwrap_or_default()
            ))
        };
        let (queue, entry) = task.rsplit_once('/').unwrap_or(("", task));
        let hosts = ddl_hosts(
            &zk(queue, Some(entry))?
                .into_iter()
                .next()
                .map(|n| n.value)
                .unwrap_or_default(),
        );
        if hosts.is_empty() {
            return Err(StoreError::Backend(format!(
                "ClickHouse schema change {entry} is not done on every host, and its host list \
                 cannot be read from system.zookeeper ({task})"
            )));
        }
        let t0 = std::time::Instant::now();
        loop {
            let finished = zk(&format!("{task}/finished"), None)?;
            // A host's status: its error code, then the message ("0" = done).
            let failed = |f: &&Node| {
                f.value.lines().next() != Some("0") && !column_already_there(sql, &f.value)
            };
            if let Some(f) = finished.iter().find(failed) {
                let (code, why) = f.value.split_once('\n').unwrap_or((&f.value, ""));
                return Err(StoreError::Backend(format!(
                    "ClickHouse host {} failed schema change {entry} (code {code}): {}",
                    unescape_host(&f.name),
                    why.trim()
                )));
            }
            let behind: Vec<String> = hosts
                .iter()
                .filter(|h| !finished.iter().any(|f| &f.name == *h))
                .map(|h| unescape_host(h))
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if t0.elapsed() >= wait {
                return Err(StoreError::Backend(format!(
                    "ClickHouse schema change {entry} is still not done on {} (down or \
                     overloaded?); ClickHouse keeps it queued for them: run migrate again \
                     once they are back",
                    behind.join(", ")
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    fn schema_version(&self) -> Result<u32, StoreError> {
        let db = &self.cfg.database;
        let exists: Vec<N> = self.rows(&format!(
            "SELECT count() AS n FROM system.tables WHERE database = {} AND name = 'schema_migrations'",
            lit(db)
        ))?;
        if exists.first().is_none_or(|r| r.n == 0) {
            return Ok(0);
        }
        let v: Vec<N> = self.rows(&format!(
            "SELECT max(version) AS n FROM {db}.schema_migrations"
        ))?;
        Ok(v.first().map(|r| r.n as u32).unwrap_or(0))
    }

    /// The server's version string.
    pub fn server_version(&self) -> Result<String, StoreError> {
        #[derive(Deserialize)]
        struct V {
            v: String,
        }
        let v: Vec<V> = self.rows("SELECT version() AS v")?;
        Ok(v.into_iter().next().map(|v| v.v).unwrap_or_default())
    }

    /// How long an ON CLUSTER statement waits for its hosts: 5 s less than
    /// a request may take (at least half of it), so ClickHouse's answer
    /// comes before our timeout.
    fn ddl_timeout_secs(&self) -> u64 {
        let t = self.cfg.timeout_secs;
        t.saturating_sub(5).max(t / 2).max(1)
    }

    /// Sends `sql` (in the body, or in the URL with `data` as the body).
    fn run(&self, sql: &str, data: Option<String>) -> Result<String, StoreError> {
        let mut req = self
            .http
            .post(&self.cfg.url)
            // Every table name is qualified with the database, so the
            // database need not exist yet (migrate creates it).
            .query(&[("output_format_json_quote_64bit_integers", "0")])
            .basic_auth(&self.cfg.user, self.password.as_deref());
        if self.cfg.cluster.is_some() {
            req = req
                .query(&[
                    ("insert_distributed_sync", "1"),
                    ("load_balancing", "in_order"),
                ])
                // An ON CLUSTER statement waits for every host; one that is
                // down would hold it past our own timeout. ClickHouse gives
                // up waiting a little before us (code 159) and runs it on
                // the late hosts when they return.
                .query(&[("distributed_ddl_task_timeout", self.ddl_timeout_secs())]);
        }
        req = match data {
            Some(d) => req.query(&[("query", sql)]).body(d),
            None => req.body(sql.to_string()),
        };
        let r = req.send().map_err(|e| {
            StoreError::Backend(format!(
                "ClickHouse at {}: {}",
                self.cfg.url,
                darkscope_common::causes(&e)
            ))
        })?;
        let status = r.status();
        let body = r.text().map_err(|e| {
            StoreError::Backend(format!(
                "ClickHouse answer: {}",
                darkscope_common::causes(&e)
            ))
        })?;
        if !status.is_success() {
            let first = body
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(400)
                .collect::<String>();
            return Err(StoreError::Backend(format!("ClickHouse {status}: {first}")));
        }
        Ok(body)
    }

    fn rows<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let body = self.run(&format!("{sql} FORMAT JSONEachRow"), None)?;
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| StoreError::Backend(format!("ClickHouse row '{l}': {e}")))
            })
            .collect()
    }

    fn insert<T: Serialize>(&self, table: &str, rows: &[T]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut body = String::new();
        for r in rows {
            body.push_str(
                &serde_json::to_string(r).map_err(|e| StoreError::Backend(e.to_string()))?,
            );
            body.push('\n');
        }
        self.run(
            &format!(
                "INSERT INTO {}.{table} FORMAT JSONEachRow",
                self.cfg.database
            ),
            Some(body),
        )?;
        Ok(())
    }

    fn t(&self, table: &str) -> String {
        format!("{}.{table}", self.cfg.database)
    }

    fn count(&self, sql: &str) -> Result<u64, StoreError> {
        let v: Vec<N> = self.rows(sql)?;
        Ok(v.first().map(|r| r.n).unwrap_or(0))
    }

    fn cred(&self, table: &str, key: &str, id: &str) -> Result<Option<CredRow>, StoreError> {
        Ok(self
            .rows(&format!(
                "SELECT * FROM {} FINAL WHERE {key} = {}",
                self.t(table),
                lit(id)
            ))?
            .into_iter()
            .next())
    }

    fn add_cred(
        &self,
        table: &str,
        key: &str,
        row: CredRow,
        exists: StoreError,
    ) -> Result<(), StoreError> {
        if self.cred(table, key, &row.id)?.is_some() {
            return Err(exists);
        }
        self.insert_cred(table, key, &row)
    }

    fn insert_cred(&self, table: &str, key: &str, r: &CredRow) -> Result<(), StoreError> {
        let row = match table {
            "sensors" => {
                serde_json::json!({"id": r.id, "country": r.country, "token_hash": r.token_hash,
                "created": r.created, "revoked": r.revoked, "ver": r.ver})
            }
            "subscribers" => {
                serde_json::json!({"id": r.id, "prefixes": r.prefixes, "token_hash": r.token_hash,
                "created": r.created, "revoked": r.revoked, "ver": r.ver,
                "webhook": r.webhook, "webhook_key": r.webhook_key})
            }
            _ => serde_json::json!({key: r.id, "token_hash": r.token_hash,
                "created": r.created, "revoked": r.revoked, "ver": r.ver}),
        };
        self.insert(table, &[row])
    }

    fn creds(&self, table: &str, key: &str, filter: &str) -> Result<Vec<CredRow>, StoreError> {
        self.rows(&format!(
            "SELECT * FROM {} FINAL {filter} ORDER BY {key}",
            self.t(table)
        ))
    }

    /// The roll-up watermark: hours before it have been rolled up.
    fn rolled_until(&self) -> Result<u64, StoreError> {
        self.count(&format!(
            "SELECT max(value) AS n FROM {} FINAL WHERE key = 'rolled_until'",
            self.t("rollup_state")
        ))
    }

    /// Hours a late window made stale.
    fn dirty_hours(&self) -> Result<Vec<u64>, StoreError> {
        #[derive(Deserialize)]
        struct H {
            hour: u64,
        }
        let v: Vec<H> = self.rows(&format!(
            "SELECT hour FROM {} FINAL WHERE dirty = 1",
            self.t("rollup_hours")
        ))?;
        Ok(v.into_iter().map(|h| h.hour).collect())
    }

    /// The query plan for `[from, to)` (see [`fold::plan`]).
    fn plan(&self, from: u64, to: u64, max: Gran) -> Result<Vec<(Gran, i64, i64)>, StoreError> {
        let rolled = self.rolled_until()? as i64;
        let dirty: Vec<i64> = self.dirty_hours()?.into_iter().map(|h| h as i64).collect();
        Ok(fold::plan(from as i64, to as i64, rolled, &dirty, max))
    }

    /// Roll-up rows ([`HOURS`] or [`DAYS`]) matching `key` (sorting-key
    /// columns only, see [`final_filter`]) and `rest`.
    fn rolled_rows(&self, table: &str, key: &str, rest: &str) -> Result<Vec<RolledCh>, StoreError> {
        self.rows(&format!(
            "SELECT * FROM {} {}",
            self.t(table),
            final_filter(key, rest)
        ))
    }

    /// Writes `rows` as the roll-up of the period starting at `at`.
    fn write_rolled(
        &self,
        table: &str,
        at: u64,
        rows: Vec<RollRow>,
        ver: u64,
    ) -> Result<(), StoreError> {
        let time = if table == DAYS { "day" } else { "hour" };
        let lines: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    time: at, "sensor": r.sensor, "country": r.country,
                    "proto": r.proto as u8, "port": r.port as u16,
                    "packets": r.packets as u64, "bytes": r.bytes as u64,
                    "sources": r.sources as u64, "destinations": r.dsts as u64,
                    "hll": b64(&r.hll.to_bytes()), "windows": r.windows as u64, "ver": ver,
                })
            })
            .collect();
        self.insert(table, &lines)
    }

    /// Window port rows matching `key` (sorting-key columns only) and `rest`.
    fn port_rows(&self, key: &str, rest: &str) -> Result<Vec<PortRowCh>, StoreError> {
        self.rows(&format!(
            "SELECT * FROM {} {}",
            self.t("port_rows"),
            final_filter(key, rest)
        ))
    }

    /// Window source rows matching `key` (sorting-key columns only).
    fn source_rows(&self, key: &str) -> Result<Vec<SourceRowCh>, StoreError> {
        self.rows(&format!(
            "SELECT * FROM {} {}",
            self.t("sources"),
            final_filter(key, "")
        ))
    }
}

impl ClickHouseStore {
    /// Alerts matching `cond` (an SQL condition, optionally with ORDER BY).
    fn alert_rows(&self, cond: &str) -> Result<Vec<Alert>, StoreError> {
        let v: Vec<AlertRow> = self.rows(&format!(
            "SELECT * FROM {} FINAL WHERE {cond}",
            self.t("alerts")
        ))?;
        Ok(v.into_iter().map(AlertRow::alert).collect())
    }

    /// A new, unrevoked credential row.
    fn new_cred(&self, id: &str, country: &str, prefixes: &str, token_hash: &[u8]) -> CredRow {
        CredRow {
            id: id.into(),
            country: country.into(),
            prefixes: prefixes.into(),
            webhook: String::new(),
            webhook_key: String::new(),
            token_hash: hex(token_hash),
            created: Timestamp::now().0,
            revoked: 0,
            ver: self.ver(),
        }
    }

    /// The credential of `table` whose token digest is `token_hash`.
    fn cred_by_token(
        &self,
        table: &str,
        key: &str,
        token_hash: &[u8],
    ) -> Result<Option<CredRow>, StoreError> {
        let f = format!("WHERE token_hash = {}", lit(&hex(token_hash)));
        Ok(self.creds(table, key, &f)?.into_iter().next())
    }

    fn revoke_cred(
        &self,
        table: &str,
        key: &str,
        id: &str,
        missing: StoreError,
    ) -> Result<(), StoreError> {
        let mut r = self.cred(table, key, id)?.ok_or(missing)?;
        if r.revoked == 0 {
            r.revoked = Timestamp::now().0;
            r.ver = self.ver().max(r.ver + 1);
            self.insert_cred(table, key, &r)?;
        }
        Ok(())
    }

    /// A summary as rows for the writer thread.
    fn rows_of(&self, s: &Summary, country: &str, seq: u64, replace: bool) -> Rows {
        let at = self.ver();
        let start = s.window.start.0;
        let sensor = s.sensor.id.clone();
        let ports: Vec<PortRowCh> = s
            .ports
            .iter()
            .map(|p| PortRowCh {
                start,
                sensor: sensor.clone(),
                country: country.to_string(),
                proto: p.proto as u8,
                port: p.port,
                packets: p.packets,
                bytes: p.bytes,
                sources: p.sources,
                destinations: p.destinations,
                hll: b64(&p.sources_hll.to_bytes()),
                stored_at: at,
            })
            .collect();
        let sources: Vec<SourceRowCh> = s
            .sources
            .iter()
            .map(|r| SourceRowCh {
                start,
                sensor: sensor.clone(),
                ip: Addr::from(r.ip).to_string(),
                packets: r.packets,
                bytes: r.bytes,
                ports: r.ports,
                destinations: r.destinations,
                classes: r.classes.0,
                fingerprints: r.fingerprints.0,
                first_seen: r.first_seen.0,
                last_seen: r.last_seen.0,
                top_ports: serde_json::to_string(&r.top_ports.to_vec())
                    .unwrap_or_else(|_| "[]".into()),
                stored_at: at,
            })
            .collect();
        let h = &s.capture;
        let k = &s.classes;
        let w = WindowRow {
            sensor,
            start,
            end: s.window.end.0,
            stored_at: at,
            seq,
            country: country.to_string(),
            packets: s.totals.packets,
            bytes: s.totals.bytes,
            sources: s.totals.sources,
            exact: s.truncation.exact as u8,
            received: h.received,
            kernel_dropped: h.kernel_dropped,
            if_dropped: h.if_dropped,
            pipeline_dropped: h.pipeline_dropped,
            malformed: h.malformed.values().sum(),
            non_ip: h.non_ip,
            not_darknet: h.not_darknet,
            spool_evicted: h.spool_evicted,
            tcp_syn: k.tcp_syn,
            backscatter: k.backscatter,
            udp: k.udp,
            icmp_echo: k.icmp_echo,
            icmp_other: k.icmp_other,
            tcp_other: k.tcp_other,
            other: k.other,
            fp_mirai: s.fingerprints[Fingerprint::Mirai],
            fp_zmap: s.fingerprints[Fingerprint::Zmap],
            fp_masscan: s.fingerprints[Fingerprint::Masscan],
            fp_nmap: s.fingerprints[Fingerprint::Nmap],
            sources_hll: b64(&s.totals.sources_hll.to_bytes()),
            darknet: s.sensor.darknet.join(","),
            monitored_ipv4: s.sensor.monitored_ipv4,
        };
        Rows {
            replace,
            ports,
            sources,
            feed: Vec::new(),
            window: w,
        }
    }

    /// Hands rows to the writer thread and waits for the commit.
    fn submit(&self, rows: Rows) -> Result<Inserted, StoreError> {
        let gone = || StoreError::Backend("the ClickHouse writer thread stopped".into());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let jobs = self.jobs.lock().map_err(|_| gone())?.clone();
        jobs.send((Box::new(rows), tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

/// Group commit: whatever windows have queued up (up to [`BATCH_MAX`]) are
/// checked with one query and written with one INSERT per table, port and
/// source rows before window rows (a window row marks its window stored).
fn writer_loop(conn: &Conn, rx: std::sync::mpsc::Receiver<(Box<Rows>, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        match write_batch(conn, &batch) {
            Ok(results) => {
                for ((_, reply), r) in batch.iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                log::error!(
                    "storing {} summaries in ClickHouse failed: {e}",
                    batch.len()
                );
                for (_, reply) in &batch {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

fn write_batch(conn: &Conn, batch: &[(Box<Rows>, Reply)]) -> Result<Vec<Inserted>, StoreError> {
    #[derive(Deserialize)]
    struct K {
        sensor: String,
        start: u64,
    }
    let keys: Vec<String> = batch
        .iter()
        .map(|(r, _)| format!("({}, {})", lit(&r.window.sensor), r.window.start))
        .collect();
    let mut known: std::collections::HashSet<(String, u64)> = conn
        .rows::<K>(&format!(
            // No FINAL: any stored copy of a key means it exists.
            "SELECT DISTINCT sensor, start FROM {} WHERE (sensor, start) IN ({})",
            conn.t("windows"),
            keys.join(", ")
        ))?
        .into_iter()
        .map(|k| (k.sensor, k.start))
        .collect();
    let (mut ports, mut sources, mut windows) = (Vec::new(), Vec::new(), Vec::new());
    let mut feed = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for (r, _) in batch {
        let key = (r.window.sensor.clone(), r.window.start);
        let existed = !known.insert(key);
        if existed && !r.replace {
            out.push(Inserted::Duplicate);
            continue;
        }
        out.push(if existed {
            Inserted::Replaced
        } else {
            Inserted::New
        });
        ports.extend(r.ports.iter());
        sources.extend(r.sources.iter());
        feed.extend(r.feed.iter());
        windows.push(&r.window);
    }
    conn.insert("port_rows", &ports)?;
    conn.insert("sources", &sources)?;
    conn.insert("feed_events", &feed)?;
    conn.insert("windows", &windows)?;
    // Windows for hours already rolled up make those hours dirty: queries
    // read them raw until the leader rebuilds them. Marked after the rows
    // are in, with a version newer than any rebuild that could miss them.
    let rolled = conn.rolled_until()?;
    let mut late: Vec<u64> = windows
        .iter()
        .filter(|w| w.start < rolled)
        .map(|w| w.start - w.start % HOUR)
        .collect();
    late.sort_unstable();
    late.dedup();
    let ver = Timestamp::now().0;
    let marks: Vec<serde_json::Value> = late
        .into_iter()
        .map(|h| serde_json::json!({"hour": h, "dirty": 1, "ver": ver}))
        .collect();
    conn.insert("rollup_hours", &marks)?;
    Ok(out)
}

/// The statements of a migration file (comments dropped, split at `;`).
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn cred_sensor(r: CredRow) -> SensorRecord {
    SensorRecord {
        id: r.id,
        country: r.country,
        created: Timestamp(r.created),
        revoked: opt(r.revoked),
    }
}

fn cred_analyst(r: CredRow) -> AnalystRecord {
    AnalystRecord {
        name: r.id,
        created: Timestamp(r.created),
        revoked: opt(r.revoked),
    }
}

fn cred_subscriber(r: CredRow) -> SubscriberRecord {
    let mut s = SubscriberRecord {
        id: r.id,
        created: Timestamp(r.created),
        revoked: opt(r.revoked),
        webhook: Some(r.webhook).filter(|w| !w.is_empty()),
        webhook_key: unhex(&r.webhook_key),
        ..Default::default()
    };
    s.set_resources(&r.prefixes);
    s
}

fn ip_key(ip: &str) -> [u8; 16] {
    ip.parse::<std::net::IpAddr>()
        .map(|a| Addr::from(a).0.to_be_bytes())
        .unwrap_or([0; 16])
}

impl Store for ClickHouseStore {
    fn add_sensor(&self, id: &str, country: &str, token_hash: &[u8]) -> Result<(), StoreError> {
        let row = self.new_cred(id, country, "", token_hash);
        self.add_cred("sensors", "id", row, StoreError::SensorExists(id.into()))
    }

    fn revoke_sensor(&self, id: &str) -> Result<(), StoreError> {
        self.revoke_cred("sensors", "id", id, StoreError::NoSensor(id.into()))
    }

    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        Ok(self
            .creds("sensors", "id", "")?
            .into_iter()
            .map(cred_sensor)
            .collect())
    }

    fn sensor_by_token(&self, token_hash: &[u8]) -> Result<Option<SensorRecord>, StoreError> {
        Ok(self
            .cred_by_token("sensors", "id", token_hash)?
            .map(cred_sensor))
    }

    fn add_analyst(&self, name: &str, token_hash: &[u8]) -> Result<(), StoreError> {
        let row = self.new_cred(name, "", "", token_hash);
        self.add_cred(
            "analysts",
            "name",
            row,
            StoreError::AnalystExists(name.into()),
        )
    }

    fn revoke_analyst(&self, name: &str) -> Result<(), StoreError> {
        self.revoke_cred("analysts", "name", name, StoreError::NoAnalyst(name.into()))
    }

    fn analysts(&self) -> Result<Vec<AnalystRecord>, StoreError> {
        Ok(self
            .creds("analysts", "name", "")?
            .into_iter()
            .map(cred_analyst)
            .collect())
    }

    fn analyst_by_token(&self, token_hash: &[u8]) -> Result<Option<AnalystRecord>, StoreError> {
        Ok(self
            .cred_by_token("analysts", "name", token_hash)?
            .map(cred_analyst))
    }

    fn add_subscriber(&self, s: &SubscriberRecord, token_hash: &[u8]) -> Result<(), StoreError> {
        let mut row = self.new_cred(&s.id, "", &s.resources(), token_hash);
        row.webhook = s.webhook.clone().unwrap_or_default();
        row.webhook_key = hex(&s.webhook_key);
        self.add_cred(
            "subscribers",
            "id",
            row,
            StoreError::SubscriberExists(s.id.clone()),
        )
    }

    fn update_subscriber(&self, s: &SubscriberRecord) -> Result<(), StoreError> {
        let mut r = self
            .cred("subscribers", "id", &s.id)?
            .ok_or_else(|| StoreError::NoSubscriber(s.id.clone()))?;
        r.prefixes = s.resources();
        r.webhook = s.webhook.clone().unwrap_or_default();
        r.webhook_key = hex(&s.webhook_key);
        r.ver = self.ver().max(r.ver + 1);
        self.insert_cred("subscribers", "id", &r)
    }

    fn revoke_subscriber(&self, id: &str) -> Result<(), StoreError> {
        self.revoke_cred("subscribers", "id", id, StoreError::NoSubscriber(id.into()))
    }

    fn subscribers(&self) -> Result<Vec<SubscriberRecord>, StoreError> {
        Ok(self
            .creds("subscribers", "id", "")?
            .into_iter()
            .map(cred_subscriber)
            .collect())
    }

    fn subscriber_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<SubscriberRecord>, StoreError> {
        Ok(self
            .cred_by_token("subscribers", "id", token_hash)?
            .map(cred_subscriber))
    }

    fn sources_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SourceSeen>, StoreError> {
        Ok(self
            .source_rows(&format!("start >= {} AND start < {}", from.0, to.0))?
            .into_iter()
            .map(|r| SourceSeen {
                ip: r
                    .ip
                    .parse::<std::net::IpAddr>()
                    .map(Addr::from)
                    .unwrap_or(Addr(0)),
                ports: r.top(),
                sensor: r.sensor,
                packets: r.packets,
                classes: ClassSet(r.classes),
                fingerprints: FingerprintSet(r.fingerprints),
                first: Timestamp(r.first_seen),
                last: Timestamp(r.last_seen),
            })
            .collect())
    }

    fn insert_summary_with(
        &self,
        s: &Summary,
        country: &str,
        matches: &[FeedMatch],
    ) -> Result<Inserted, StoreError> {
        // The export position: time-ordered, unique with high probability.
        let seq = Timestamp::now().0 * 1000 + rand::random::<u64>() % 1000;
        let mut rows = self.rows_of(s, country, seq, false);
        let (start, at) = (rows.window.start, rows.window.stored_at);
        rows.feed = matches
            .iter()
            .filter_map(|m| {
                let r = s.sources.get(m.source)?;
                Some(FeedRowCh {
                    subscriber: m.subscriber.clone(),
                    day: start - start % DAY,
                    ip: Addr::from(r.ip).to_string(),
                    sensor: s.sensor.id.clone(),
                    start,
                    stored_at: at,
                    country: country.to_string(),
                    asn: m.asn,
                    geo: m.geo.clone(),
                    packets: r.packets,
                    destinations: r.destinations,
                    classes: r.classes.0,
                    fingerprints: r.fingerprints.0,
                    first_seen: r.first_seen.0,
                    last_seen: r.last_seen.0,
                    top_ports: serde_json::to_string(&r.top_ports.to_vec())
                        .unwrap_or_else(|_| "[]".into()),
                })
            })
            .collect();
        self.submit(rows)
    }

    fn feed_day(&self, subscriber: &str, day: Timestamp) -> Result<Vec<FeedRow>, StoreError> {
        let v: Vec<FeedRowCh> = self.rows(&format!(
            "SELECT * FROM {} FINAL WHERE subscriber = {} AND day = {}",
            self.t("feed_events"),
            lit(subscriber),
            day.0
        ))?;
        Ok(v.into_iter().map(FeedRowCh::row).collect())
    }

    fn host_feeds(&self, ip: Addr) -> Result<Vec<HostFeed>, StoreError> {
        #[derive(Deserialize)]
        struct H {
            subscriber: String,
            first_day: u64,
            last_day: u64,
            days: u64,
            packets: u64,
        }
        let v: Vec<H> = self.rows(&format!(
            "SELECT subscriber, min(day) AS first_day, max(day) AS last_day,
                    uniqExact(day) AS days, sum(packets) AS packets
             FROM {} FINAL WHERE ip = {} GROUP BY subscriber ORDER BY subscriber",
            self.t("feed_events"),
            lit(&ip.to_string())
        ))?;
        Ok(v.into_iter()
            .map(|h| HostFeed {
                subscriber: h.subscriber,
                first_day: Timestamp(h.first_day),
                last_day: Timestamp(h.last_day),
                days: h.days,
                packets: h.packets,
            })
            .collect())
    }

    fn push_cursor(&self, subscriber: &str) -> Result<Option<FeedCursor>, StoreError> {
        #[derive(Deserialize)]
        struct P {
            stored_at: u64,
            day: u64,
            ip: String,
        }
        let v: Vec<P> = self.rows(&format!(
            "SELECT stored_at, day, ip FROM {} FINAL WHERE subscriber = {}",
            self.t("feed_push"),
            lit(subscriber)
        ))?;
        Ok(v.into_iter().next().map(|p| FeedCursor {
            stored_at: p.stored_at,
            day: p.day,
            ip: p.ip,
        }))
    }

    fn save_push_cursor(&self, subscriber: &str, cursor: &FeedCursor) -> Result<(), StoreError> {
        self.insert(
            "feed_push",
            &[serde_json::json!({
                "subscriber": subscriber, "stored_at": cursor.stored_at, "day": cursor.day,
                "ip": cursor.ip, "ver": self.ver(),
            })],
        )
    }

    fn feed_changes(
        &self,
        subscriber: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<(FeedCursor, Vec<FeedRow>)>, StoreError> {
        #[derive(Deserialize)]
        struct K {
            m: u64,
            day: u64,
            ip: String,
        }
        // Replicas stamp rows with their own clocks and a batch becomes
        // visible only once written: rows younger than FEED_SETTLE are left
        // for the next poll so a cursor never runs ahead of a slower writer.
        let settle = Timestamp::now().0.saturating_sub(FEED_SETTLE_US);
        let (a, d) = (after.stored_at, after.day);
        let keys: Vec<K> = self.rows(&format!(
            "SELECT max(stored_at) AS m, day, ip FROM {} FINAL
             WHERE subscriber = {sub} AND stored_at >= {a}
             GROUP BY day, ip
             HAVING m < {settle} AND (m > {a} OR (m = {a} AND (day > {d} OR (day = {d} AND ip > {ip}))))
             ORDER BY m, day, ip LIMIT {limit}",
            self.t("feed_events"),
            sub = lit(subscriber),
            ip = lit(&after.ip),
        ))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<String> = keys
            .iter()
            .map(|k| format!("({}, {})", k.day, lit(&k.ip)))
            .collect();
        let rows: Vec<FeedRowCh> = self.rows(&format!(
            "SELECT * FROM {} FINAL WHERE subscriber = {} AND (day, ip) IN ({})",
            self.t("feed_events"),
            lit(subscriber),
            pairs.join(", ")
        ))?;
        let mut by: std::collections::HashMap<(u64, String), Vec<FeedRow>> =
            std::collections::HashMap::new();
        for r in rows {
            by.entry((r.day, r.ip.clone())).or_default().push(r.row());
        }
        Ok(keys
            .into_iter()
            .map(|k| {
                let v = by.remove(&(k.day, k.ip.clone())).unwrap_or_default();
                (
                    FeedCursor {
                        stored_at: k.m,
                        day: k.day,
                        ip: k.ip,
                    },
                    v,
                )
            })
            .collect())
    }

    fn top_ports(&self, f: &PortFilter, limit: usize) -> Result<Vec<PortTop>, StoreError> {
        let mut cond = scope_pred(f.scope);
        if let Some(p) = f.proto {
            cond += &format!(" AND proto = {}", p as u8);
        }
        // Not a sorting-key column: tested after the FINAL merge.
        let country = f
            .country
            .as_ref()
            .map(|c| format!("country = {}", lit(c)))
            .unwrap_or_default();
        // Roll-ups hold per-sensor rows and pre-merged ones.
        let rolled_key = match (&f.sensor, &f.country) {
            (Some(s), _) => s.clone(),
            (None, cc) => merged_key(f.scope, cc.as_deref()),
        };
        let mut rows: Vec<PortRowTuple> = Vec::new();
        for (g, a, b) in self.plan(f.from.0, f.to.0, Gran::Day)? {
            match g {
                Gran::Raw => {
                    let sensor = f
                        .sensor
                        .as_ref()
                        .map(|s| format!(" AND sensor = {}", lit(s)))
                        .unwrap_or_default();
                    rows.extend(
                        self.port_rows(
                            &format!("start >= {a} AND start < {b} AND {cond}{sensor}"),
                            &country,
                        )?
                        .into_iter()
                        .map(|r| RolledCh::from(r).tuple()),
                    );
                }
                Gran::Hour | Gran::Day => {
                    let (table, col) = rolled_table(g);
                    rows.extend(
                        self.rolled_rows(
                            table,
                            &format!(
                                "{col} >= {a} AND {col} < {b} AND {cond} AND sensor = {}",
                                lit(&rolled_key)
                            ),
                            &country,
                        )?
                        .into_iter()
                        .map(RolledCh::tuple),
                    );
                }
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
        let step = step_us.max(1);
        let n = (to.0.saturating_sub(from.0)).div_ceil(step) as usize;
        let mut packets = vec![0u64; n];
        let mut sketches = vec![Hll::new(); n];
        // Roll-up rows can only feed steps they fit in whole.
        let max = if step % DAY == 0 && from.0 % DAY == 0 {
            Gran::Day
        } else if step % HOUR == 0 && from.0 % HOUR == 0 {
            Gran::Hour
        } else {
            Gran::Raw
        };
        let key = proto as u8;
        let mut add = |t: u64, p: u64, hll: &str| {
            let i = ((t - from.0) / step) as usize;
            if i < n {
                packets[i] += p;
                sketches[i].merge(&hll_of(hll));
            }
        };
        for (g, a, b) in self.plan(from.0, to.0, max)? {
            if g == Gran::Raw {
                for r in self.port_rows(
                    &format!(
                        "proto = {key} AND port = {port} AND start >= {a} AND start < {b} AND {}",
                        scope_pred(scope)
                    ),
                    "",
                )? {
                    add(r.start, r.packets, &r.hll);
                }
            } else {
                let (table, col) = rolled_table(g);
                for r in self.rolled_rows(
                    table,
                    &format!(
                        "proto = {key} AND port = {port} AND {col} >= {a} AND {col} < {b} AND sensor = {}",
                        lit(&merged_key(scope, None))
                    ),
                    "",
                )? {
                    add(r.at, r.packets, &r.hll);
                }
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

    fn total_series(
        &self,
        from: Timestamp,
        to: Timestamp,
        step_us: u64,
        scope: Scope,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        #[derive(Deserialize)]
        struct W {
            start: u64,
            packets: u64,
            sources_hll: String,
        }
        let v: Vec<W> = self.rows(&format!(
            "SELECT start, packets, sources_hll FROM {} FINAL WHERE start >= {} AND start < {} AND {}",
            self.t("windows"),
            from.0,
            to.0,
            scope_pred(scope)
        ))?;
        Ok(fold::steps(
            from.0,
            to.0,
            step_us,
            v.into_iter()
                .map(|w| (w.start, w.packets, hll_bytes(&w.sources_hll))),
        ))
    }

    fn port_reach(
        &self,
        proto: Proto,
        port: u16,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<PortReach, StoreError> {
        let key = proto as u8;
        let mut rows: Vec<fold::ReachRowTuple> = Vec::new();
        for (g, a, b) in self.plan(from.0, to.0, Gran::Day)? {
            if g == Gran::Raw {
                rows.extend(
                    self.port_rows(
                        &format!(
                            "proto = {key} AND port = {port} AND start >= {a} AND start < {b} AND {}",
                            scope_pred(scope)
                        ),
                        "",
                    )?
                    .into_iter()
                    .map(|r| RolledCh::from(r).reach_row()),
                );
            } else {
                let (table, col) = rolled_table(g);
                // Roll-ups also hold pre-merged rows (`*`, `**CC`): per sensor only.
                rows.extend(
                    self.rolled_rows(
                        table,
                        &format!(
                            "proto = {key} AND port = {port} AND {col} >= {a} AND {col} < {b} AND {} AND NOT startsWith(sensor, '*')",
                            scope_pred(scope)
                        ),
                        "",
                    )?
                    .into_iter()
                    .map(RolledCh::reach_row),
                );
            }
        }
        Ok(fold::reach(rows))
    }

    fn source(&self, ip: Addr, scope: Scope) -> Result<Option<SourceInfo>, StoreError> {
        let rows: Vec<SourceRowTuple> = self
            .source_rows(&format!(
                "ip = {} AND {}",
                lit(&ip.to_string()),
                scope_pred(scope)
            ))?
            .into_iter()
            .map(|r| {
                (
                    r.start as i64,
                    r.sensor,
                    r.packets as i64,
                    r.bytes as i64,
                    1,
                    r.classes as i64,
                    r.fingerprints as i64,
                    r.first_seen as i64,
                    r.last_seen as i64,
                    r.top_ports,
                )
            })
            .collect();
        Ok(fold::source_info(ip, rows))
    }

    fn sensor_status(&self, now: Timestamp, scope: Scope) -> Result<Vec<SensorStatus>, StoreError> {
        #[derive(Deserialize)]
        struct Agg {
            sensor: String,
            country: String,
            last_end: u64,
            last_at: u64,
            windows: u64,
            received: u64,
            dropped: u64,
            evicted: u64,
        }
        let agg: Vec<Agg> = self.rows(&format!(
            "SELECT sensor, max(country) AS country, max(end) AS last_end, max(stored_at) AS last_at,
                    count() AS windows, sum(received) AS received,
                    sum(kernel_dropped + if_dropped + pipeline_dropped) AS dropped,
                    sum(spool_evicted) AS evicted
             FROM {} FINAL GROUP BY sensor",
            self.t("windows")
        ))?;
        let by: FxHashMap<&str, &Agg> = agg.iter().map(|a| (a.sensor.as_str(), a)).collect();
        let status = |id: String, country: String, revoked: bool| {
            let a = by.get(id.as_str());
            let received = a.map(|a| a.received).unwrap_or(0);
            let dropped = a.map(|a| a.dropped).unwrap_or(0);
            let last = a.map(|a| a.last_end);
            SensorStatus {
                id,
                country,
                revoked,
                last_window_end: last.map(Timestamp),
                last_summary_at: a.map(|a| Timestamp(a.last_at)),
                windows: a.map(|a| a.windows).unwrap_or(0),
                received,
                dropped,
                drop_rate: if received == 0 {
                    0.0
                } else {
                    dropped as f64 / received as f64
                },
                spool_evicted: a.map(|a| a.evicted).unwrap_or(0),
                lag_seconds: last.map(|l| (now.0 as f64 - l as f64) / 1e6),
            }
        };
        let mut out: Vec<SensorStatus> = self
            .sensors()?
            .into_iter()
            .map(|s| status(s.id, s.country, s.revoked.is_some()))
            .collect();
        if scope == Scope::Global {
            let mut peers: Vec<&Agg> = agg
                .iter()
                .filter(|a| a.sensor.starts_with(PEER_SENSOR_MARK))
                .collect();
            peers.sort_by(|a, b| a.sensor.cmp(&b.sensor));
            out.extend(
                peers
                    .into_iter()
                    .map(|a| status(a.sensor.clone(), a.country.clone(), false)),
            );
        }
        Ok(out)
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
        #[derive(Deserialize)]
        struct Tot {
            packets: u64,
            c: [u64; 7],
            sensors: u64,
            windows: u64,
        }
        let cond = format!(
            "start >= {} AND start < {} AND {}",
            from.0,
            to.0,
            scope_pred(scope)
        );
        let t: Vec<Tot> = self.rows(&format!(
            "SELECT sum(packets) AS packets,
                    [sum(tcp_syn), sum(backscatter), sum(udp), sum(icmp_echo), sum(icmp_other),
                     sum(tcp_other), sum(other)] AS c,
                    uniqExact(sensor) AS sensors, count() AS windows
             FROM {} FINAL WHERE {cond}",
            self.t("windows")
        ))?;
        let t = t.into_iter().next().unwrap_or(Tot {
            packets: 0,
            c: [0; 7],
            sensors: 0,
            windows: 0,
        });
        #[derive(Deserialize)]
        struct Ip {
            ip: String,
            p: u64,
        }
        let ips: Vec<Ip> = self.rows(&format!(
            "SELECT ip, sum(packets) AS p FROM {} FINAL WHERE {cond} GROUP BY ip",
            self.t("sources")
        ))?;
        let by_ip: FxHashMap<[u8; 16], u64> =
            ips.into_iter().map(|r| (ip_key(&r.ip), r.p)).collect();
        Ok(Overview {
            from,
            to,
            packets: t.packets,
            classes: ClassTotals::from_array(t.c),
            top_ports,
            top_sources: fold::top_sources(by_ip, 10),
            active_sensors: t.sensors,
            windows: t.windows,
        })
    }

    fn window_starts(
        &self,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<Vec<Timestamp>, StoreError> {
        #[derive(Deserialize)]
        struct S {
            start: u64,
        }
        let v: Vec<S> = self.rows(&format!(
            "SELECT DISTINCT start FROM {} FINAL WHERE start >= {} AND start < {} AND {} ORDER BY start",
            self.t("windows"),
            from.0,
            to.0,
            scope_pred(scope)
        ))?;
        Ok(v.into_iter().map(|s| Timestamp(s.start)).collect())
    }

    fn window_sensors(&self, start: Timestamp, scope: Scope) -> Result<u32, StoreError> {
        Ok(self.count(&format!(
            "SELECT count() AS n FROM {} FINAL WHERE start = {} AND {}",
            self.t("windows"),
            start.0,
            scope_pred(scope)
        ))? as u32)
    }

    fn port_sources_at(
        &self,
        start: Timestamp,
        scope: Scope,
    ) -> Result<Vec<(Proto, u16, u64)>, StoreError> {
        let rows = self.port_rows(
            &format!("start = {} AND {}", start.0, scope_pred(scope)),
            "",
        )?;
        Ok(fold::window_port_sources(rows.into_iter().map(|r| {
            let h = hll_bytes(&r.hll);
            (r.proto as i64, r.port as i64, r.sources, h)
        })))
    }

    fn insert_alert(&self, a: &Alert) -> Result<i64, StoreError> {
        // Unique across replicas without a sequence: time plus a random tail.
        let id = Timestamp::now().0 * 1000 + rand::random::<u64>() % 1000;
        self.insert(
            "alerts",
            &[AlertRow {
                id,
                proto: a.proto as u8,
                port: a.port,
                scope: a.scope_key(),
                start: a.start.0,
                severity: a.severity.clone(),
                baseline: a.baseline,
                observed: a.observed,
                state: a.state.clone(),
                resolved_at: a.resolved_at.map(|t| t.0).unwrap_or(0),
                ver: self.ver(),
            }],
        )?;
        Ok(id as i64)
    }

    fn resolve_alert(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        let rows: Vec<AlertRow> = self.rows(&format!(
            "SELECT * FROM {} FINAL WHERE id = {}",
            self.t("alerts"),
            id.max(0)
        ))?;
        if let Some(mut r) = rows.into_iter().next() {
            r.state = "resolved".into();
            r.resolved_at = at.0;
            r.ver = self.ver().max(r.ver + 1);
            self.insert("alerts", &[r])?;
        }
        Ok(())
    }

    fn alerts(&self, since: Timestamp, state: Option<&str>) -> Result<Vec<Alert>, StoreError> {
        let st = state
            .map(|s| format!(" AND state = {}", lit(s)))
            .unwrap_or_default();
        self.alert_rows(&format!(
            "start >= {}{st} ORDER BY start DESC, id DESC",
            since.0
        ))
    }

    fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        Ok(self.alert_rows(&format!("id = {id}"))?.into_iter().next())
    }

    fn heartbeat(
        &self,
        role: &str,
        holder: &str,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct H<'a> {
            role: &'a str,
            holder: &'a str,
            since: u64,
            at: u64,
        }
        self.insert(
            "heartbeats",
            &[H {
                role,
                holder,
                since: since.0,
                at: now.0,
            }],
        )
    }

    fn live_replicas(
        &self,
        role: &str,
        after: Timestamp,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        #[derive(Deserialize)]
        struct H {
            holder: String,
            since: u64,
        }
        let v: Vec<H> = self.rows(&format!(
            "SELECT holder, min(since) AS since FROM {} WHERE role = {} AND at >= {} GROUP BY holder",
            self.t("heartbeats"),
            lit(role),
            after.0
        ))?;
        Ok(v.into_iter()
            .map(|h| (h.holder, Timestamp(h.since)))
            .collect())
    }

    fn apply_retention(
        &self,
        cutoff: Timestamp,
        rollup_cutoff: Timestamp,
    ) -> Result<u64, StoreError> {
        let r = rollup_cutoff.0;
        let n = self.count(&format!(
            "SELECT count() AS n FROM {} FINAL WHERE start < {}",
            self.t("windows"),
            cutoff.0
        ))?;
        // A mutation rewrites parts even when nothing matches: only issue
        // those that delete something. On a cluster, mutations go to the
        // replicated tables behind the distributed ones, on every shard.
        let target = |t: &str| match &self.cfg.cluster {
            Some(c) => format!("{}_local ON CLUSTER {c}", self.t(t)),
            None => self.t(t),
        };
        let mut issued = Vec::new();
        for (t, col, cut) in [
            (HOURS, "hour", r),
            (DAYS, "day", r - r % DAY),
            ("rollup_hours", "hour", r),
            ("feed_events", "day", r - r % DAY),
            ("port_rows", "start", cutoff.0),
            ("sources", "start", cutoff.0),
            ("windows", "start", cutoff.0),
        ] {
            let left = format!("SELECT count() AS n FROM {} WHERE {col} < {cut}", self.t(t));
            if self.count(&left)? > 0 {
                match self.run(
                    &format!("ALTER TABLE {} DELETE WHERE {col} < {cut}", target(t)),
                    None,
                ) {
                    Ok(_) => {}
                    // Hosts that are down get it when they return; the
                    // live replicas of every shard have it now.
                    Err(StoreError::Backend(m)) if ddl_in_background(&m) => {
                        log::warn!(
                            "ClickHouse retention on {t}: some hosts did not answer in time \
                             and will delete when they are back ({m})"
                        );
                    }
                    Err(e) => return Err(e),
                }
                issued.push(left);
            }
        }
        // Mutations run in the background; wait (bounded) until no shard
        // has the deleted rows any more.
        let t0 = std::time::Instant::now();
        for left in issued {
            while self.count(&left)? > 0 {
                if t0.elapsed() > std::time::Duration::from_secs(60) {
                    log::warn!("ClickHouse retention mutations still running after 60 s");
                    return Ok(n);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(n)
    }

    fn rollup(&self, now: Timestamp) -> Result<u64, StoreError> {
        let cutoff = {
            let t = now.0.saturating_sub(ROLLUP_GRACE);
            t - t % HOUR
        };
        let rolled = self.rolled_until()?;
        #[derive(Deserialize)]
        struct H {
            h: u64,
        }
        let mut hours: Vec<u64> = self
            .rows::<H>(&format!(
                "SELECT DISTINCT start - start % {HOUR} AS h FROM {} WHERE start >= {rolled} AND start < {cutoff}",
                self.t("windows")
            ))?
            .into_iter()
            .map(|h| h.h)
            .collect();
        hours.extend(self.dirty_hours()?);
        hours.sort_unstable();
        hours.dedup();
        let mut days: Vec<u64> = Vec::new();
        for &h in &hours {
            // Marked clean with the time the rebuild started reading: a late
            // window's dirty mark written after that wins, so the hour is
            // rebuilt again rather than left stale.
            let read_at = self.ver();
            let rows = self
                .port_rows(&format!("start >= {h} AND start < {}", h + HOUR), "")?
                .into_iter()
                .map(PortRowCh::roll_row);
            self.write_rolled(HOURS, h, fold::roll(rows), self.ver())?;
            self.insert(
                "rollup_hours",
                &[serde_json::json!({"hour": h, "dirty": 0, "ver": read_at})],
            )?;
            let day = h - h % DAY;
            if !days.contains(&day) {
                days.push(day);
            }
        }
        for day in days {
            let rows = self
                .rolled_rows(
                    HOURS,
                    &format!(
                        "hour >= {day} AND hour < {} AND NOT startsWith(sensor, '*')",
                        day + DAY
                    ),
                    "",
                )?
                .into_iter()
                .map(RolledCh::roll_row);
            self.write_rolled(DAYS, day, fold::roll(rows), self.ver())?;
        }
        if cutoff > rolled {
            self.insert(
                "rollup_state",
                &[serde_json::json!({"key": "rolled_until", "value": cutoff, "ver": self.ver()})],
            )?;
        }
        Ok(hours.len() as u64)
    }

    fn local_changes(&self, cursor: u64, limit: usize) -> Result<Vec<LocalChange>, StoreError> {
        #[derive(Deserialize)]
        struct C {
            seq: u64,
            sensor: String,
            start: u64,
        }
        // Positions are µs × 1000 plus a random tail (see insert_summary_with).
        let settled = Timestamp::now()
            .0
            .saturating_sub(self.cfg.export_settle_secs.saturating_mul(1_000_000))
            .saturating_mul(1000);
        let v: Vec<C> = self.rows(&format!(
            "SELECT seq, sensor, start FROM {} FINAL WHERE seq > {cursor} AND seq < {settled} AND {} ORDER BY seq LIMIT {limit}",
            self.t("windows"),
            scope_pred(Scope::Local)
        ))?;
        Ok(v.into_iter()
            .map(|c| LocalChange {
                seq: c.seq,
                sensor: c.sensor,
                start: Timestamp(c.start),
            })
            .collect())
    }

    fn local_changes_head(&self) -> Result<u64, StoreError> {
        self.count(&format!(
            "SELECT max(seq) AS n FROM {} FINAL WHERE {}",
            self.t("windows"),
            scope_pred(Scope::Local)
        ))
    }

    fn stored_summaries(
        &self,
        sensor: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Summary>, StoreError> {
        let cond = format!(
            "sensor = {} AND start >= {} AND start < {}",
            lit(sensor),
            from.0,
            to.0
        );
        let windows: Vec<WindowRow> = self.rows(&format!(
            "SELECT * FROM {} {} ORDER BY start",
            self.t("windows"),
            final_filter(&cond, "")
        ))?;
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut ports: FxHashMap<u64, Vec<PortRow>> = FxHashMap::default();
        for p in self.port_rows(&cond, "")? {
            ports.entry(p.start).or_default().push(PortRow {
                proto: proto_of(p.proto as i64),
                port: p.port,
                packets: p.packets,
                bytes: p.bytes,
                sources: p.sources,
                destinations: p.destinations,
                sources_hll: hll_of(&p.hll),
            });
        }
        let mut sources: FxHashMap<u64, Vec<SourceRow>> = FxHashMap::default();
        for r in self.source_rows(&cond)? {
            let mut top_ports = TopPorts::default();
            for p in r.top() {
                top_ports.push(p);
            }
            let Ok(ip) = r.ip.parse() else { continue };
            sources.entry(r.start).or_default().push(SourceRow {
                ip,
                packets: r.packets,
                bytes: r.bytes,
                ports: r.ports,
                destinations: r.destinations,
                top_ports,
                classes: ClassSet(r.classes),
                fingerprints: FingerprintSet(r.fingerprints),
                first_seen: Timestamp(r.first_seen),
                last_seen: Timestamp(r.last_seen),
            });
        }
        Ok(windows
            .into_iter()
            .map(|w| {
                let mut ports = ports.remove(&w.start).unwrap_or_default();
                ports.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.port.cmp(&b.port)));
                let mut sources = sources.remove(&w.start).unwrap_or_default();
                sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
                let tracked: u64 = sources.iter().map(|r| r.packets).sum();
                Summary {
                    schema: SCHEMA,
                    sensor: SensorInfo {
                        id: w.sensor,
                        country: w.country,
                        darknet: w
                            .darknet
                            .split(',')
                            .filter(|p| !p.is_empty())
                            .map(String::from)
                            .collect(),
                        monitored_ipv4: w.monitored_ipv4,
                    },
                    window: Window {
                        start: Timestamp(w.start),
                        end: Timestamp(w.end),
                    },
                    capture: Default::default(),
                    classes: ClassTotals::from_array([
                        w.tcp_syn,
                        w.backscatter,
                        w.udp,
                        w.icmp_echo,
                        w.icmp_other,
                        w.tcp_other,
                        w.other,
                    ]),
                    fingerprints: FingerprintCounts([
                        w.fp_mirai,
                        w.fp_zmap,
                        w.fp_masscan,
                        w.fp_nmap,
                    ]),
                    totals: Totals {
                        packets: w.packets,
                        bytes: w.bytes,
                        sources: w.sources,
                        sources_hll: hll_of(&w.sources_hll),
                    },
                    truncation: Truncation {
                        exact: w.exact != 0,
                        packets_untracked: w.packets.saturating_sub(tracked),
                        ..Default::default()
                    },
                    ports,
                    sources,
                }
            })
            .collect())
    }

    fn import_summary(&self, s: &Summary, country: &str) -> Result<Inserted, StoreError> {
        if !s.sensor.id.starts_with(PEER_SENSOR_MARK) {
            return Err(StoreError::Backend(format!(
                "imported sensor key '{}' must start with '{PEER_SENSOR_MARK}'",
                s.sensor.id
            )));
        }
        // A newer version replaces the stored one; imports are never exported.
        self.submit(self.rows_of(s, country, 0, true))
    }

    fn peer_states(&self) -> Result<Vec<PeerState>, StoreError> {
        let v: Vec<PeerRow> = self.rows(&format!(
            "SELECT * FROM {} FINAL ORDER BY peer",
            self.t("peer_state")
        ))?;
        Ok(v.into_iter()
            .map(|r| PeerState {
                peer: r.peer,
                cursor: r.cursor,
                last_pull: opt(r.last_pull),
                last_success: opt(r.last_success),
                last_error: r.last_error,
                errors: r.errors,
                imported: r.imported,
                newest_window_end: opt(r.newest_window_end),
                tlp: r.tlp,
            })
            .collect())
    }

    fn save_peer_state(&self, p: &PeerState) -> Result<(), StoreError> {
        let t = |x: Option<Timestamp>| x.map(|t| t.0).unwrap_or(0);
        self.insert(
            "peer_state",
            &[PeerRow {
                peer: p.peer.clone(),
                cursor: p.cursor,
                last_pull: t(p.last_pull),
                last_success: t(p.last_success),
                last_error: p.last_error.clone(),
                errors: p.errors,
                imported: p.imported,
                newest_window_end: t(p.newest_window_end),
                tlp: p.tlp.clone(),
                ver: self.ver(),
            }],
        )
    }

    fn record_export(&self, e: &ExportRecord) -> Result<(), StoreError> {
        self.insert(
            "export_audit",
            &[AuditRow {
                time: e.time.0,
                peer: e.peer.clone(),
                share: e.share.clone(),
                tlp: e.tlp.clone(),
                cursor_from: e.cursor_from,
                cursor_to: e.cursor_to,
                observations: e.observations,
                port_rows: e.port_rows,
                source_rows: e.source_rows,
            }],
        )
    }

    fn exports(
        &self,
        since: Timestamp,
        peer: Option<&str>,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        let p = peer
            .map(|p| format!(" AND peer = {}", lit(p)))
            .unwrap_or_default();
        let v: Vec<AuditRow> = self.rows(&format!(
            "SELECT * FROM {} WHERE time >= {}{p} ORDER BY time DESC LIMIT 10000",
            self.t("export_audit"),
            since.0
        ))?;
        Ok(v.into_iter()
            .map(|r| ExportRecord {
                time: Timestamp(r.time),
                peer: r.peer,
                share: r.share,
                tlp: r.tlp,
                cursor_from: r.cursor_from,
                cursor_to: r.cursor_to,
                observations: r.observations,
                port_rows: r.port_rows,
                source_rows: r.source_rows,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ClickHouse 18.16's answers, as the cluster test met them.
    #[test]
    fn distributed_ddl_answers_are_read() {
        let m = "ClickHouse 500 Internal Server Error: Code: 159, e.displayText() = DB::Exception: \
                 Watching task /clickhouse/task_queue/ddl/query-0000000030 is executing longer than \
                 distributed_ddl_task_timeout (=55) seconds. There are 1 unfinished hosts";
        assert!(ddl_in_background(m));
        assert_eq!(
            ddl_task(m),
            Some("/clickhouse/task_queue/ddl/query-0000000030")
        );
        assert_eq!(
            ddl_task("Code: 159, e.displayText() = something else"),
            None
        );
        let entry = "version: 1\nquery: CREATE DATABASE x ON CLUSTER c \n\
                     hosts: ['127%2E0%2E0%2E1:45543','127%2E0%2E0%2E1:35385']\ninitiator: vm:40131\n";
        let hosts = ddl_hosts(entry);
        assert_eq!(hosts, ["127%2E0%2E0%2E1:45543", "127%2E0%2E0%2E1:35385"]);
        assert_eq!(unescape_host(&hosts[0]), "127.0.0.1:45543");
        assert_eq!(unescape_host("a%2"), "a%2", "a cut escape is kept as it is");
        assert!(ddl_hosts("version: 1\n").is_empty());
        let exists = "Code: 44, e.displayText() = DB::Exception: Cannot add column webhook: \
                      column with this name already exists";
        assert!(column_already_there(
            "ALTER TABLE d.s ADD COLUMN webhook String",
            exists
        ));
        assert!(!column_already_there("CREATE TABLE d.s (a UInt8)", exists));
        assert!(!column_already_there(
            "ALTER TABLE d.s ADD COLUMN w String",
            m
        ));
    }

    #[test]
    fn literals_cannot_break_out_of_their_quotes() {
        assert_eq!(lit("jp-01"), "'jp-01'");
        assert_eq!(lit("a'b"), "'a\\'b'");
        assert_eq!(
            lit("a\\'; DROP TABLE x; --"),
            "'a\\\\\\'; DROP TABLE x; --'"
        );
        // Every quote inside is escaped: the literal ends only at the last char.
        let l = lit("x' OR '1'='1");
        let inner = &l[1..l.len() - 1];
        assert!(inner.split("\\'").all(|part| !part.contains('\'')));
    }

    #[test]
    fn migrations_split_into_statements() {
        let s = statements(MIGRATIONS[0].1);
        assert!(s.len() >= 9);
        assert!(s
            .iter()
            .all(|x| x.starts_with("CREATE TABLE IF NOT EXISTS {db}.")));
    }

    #[test]
    fn config_is_validated() {
        ClickHouseConfig::default().validate().unwrap();
        let bad = ClickHouseConfig {
            database: "x; DROP".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        // The cluster name is spliced into DDL: only a plain identifier.
        for (cluster, ok) in [
            ("darkscope", true),
            ("a b", false),
            ("x'--", false),
            ("", false),
        ] {
            let c = ClickHouseConfig {
                cluster: Some(cluster.into()),
                ..Default::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{cluster:?}");
        }
    }
}
