//! Storage behind one trait, so backends are interchangeable and one
//! conformance suite (`tests/store_conformance.rs`) checks them all.
//!
//! Methods are synchronous; the HTTP layer calls them on Tokio's blocking
//! pool. `insert_summary` returns only after the data is durable.

pub mod clickhouse;
pub mod fold;
pub mod portrec;
pub mod sqlite;
pub mod srcrec;

use darkscope_common::wire::{ClassTotals, PortCount, Summary};
use darkscope_common::{Addr, ClassSet, FingerprintSet, Proto, Timestamp};
use serde::{Deserialize, Serialize};

/// Why a storage operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, ...).
    #[error("storage: {0}")]
    Backend(String),
    /// The disk under the database is full: nothing was written, and the
    /// same write can succeed once space is freed.
    #[error("storage: the disk is full ({0})")]
    DiskFull(String),
    /// A subscriber id that is already registered.
    #[error("subscriber '{0}' already exists")]
    SubscriberExists(String),
    /// No such subscriber.
    #[error("no subscriber '{0}'")]
    NoSubscriber(String),
    /// A sensor id that is already registered.
    #[error("sensor '{0}' already exists")]
    SensorExists(String),
    /// No such sensor.
    #[error("no sensor '{0}'")]
    NoSensor(String),
    /// An analyst name that is already registered.
    #[error("analyst '{0}' already exists")]
    AnalystExists(String),
    /// No such analyst.
    #[error("no analyst '{0}'")]
    NoAnalyst(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// A registered sensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SensorRecord {
    /// Sensor id.
    pub id: String,
    /// Country of its blocks, as registered.
    pub country: String,
    /// Registration time.
    pub created: Timestamp,
    /// Revocation time, if revoked.
    pub revoked: Option<Timestamp>,
}

/// An analyst credential (query API and console).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnalystRecord {
    /// Analyst name.
    pub name: String,
    /// Creation time.
    pub created: Timestamp,
    /// Revocation time, if revoked.
    pub revoked: Option<Timestamp>,
}

/// A surge alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Id.
    pub id: i64,
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// Scope of the series: `local` (own sensors) or `global` (with
    /// federation peers' data).
    pub scope: String,
    /// Which sources of the port: empty for all of them, `country:CC` or
    /// `asn:N` for those an enrichment table places there.
    pub group: String,
    /// Start of the window in which the surge was detected.
    pub start: Timestamp,
    /// `low` (≥ 2× baseline), `medium` (≥ 3×), `high` (≥ 10×) or `new-port`.
    pub severity: String,
    /// Baseline distinct sources.
    pub baseline: f64,
    /// Observed distinct sources.
    pub observed: u64,
    /// `open` or `resolved`.
    pub state: String,
    /// When it resolved.
    pub resolved_at: Option<Timestamp>,
}

impl Alert {
    /// Scope and group as one stored value: `local`, `global/asn:4134`.
    pub fn scope_key(&self) -> String {
        if self.group.is_empty() {
            self.scope.clone()
        } else {
            format!("{}/{}", self.scope, self.group)
        }
    }

    /// Scope and group from a stored [`Alert::scope_key`].
    pub fn split_scope_key(key: &str) -> (String, String) {
        match key.split_once('/') {
            Some((s, g)) => (s.to_string(), g.to_string()),
            None => (key.to_string(), String::new()),
        }
    }
}

/// A feed subscriber (an ISP or CSIRT constituent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SubscriberRecord {
    /// Subscriber id.
    pub id: String,
    /// Prefixes it owns.
    pub prefixes: Vec<String>,
    /// Autonomous systems it owns (used when an ASN table is configured).
    pub asns: Vec<u32>,
    /// Where digests of its new events are pushed, if anywhere.
    pub webhook: Option<String>,
    /// HMAC-SHA256 key of its webhook digests (derived from its token; see
    /// [`crate::feeds::webhook_key`]). Never serialised.
    #[serde(skip)]
    pub webhook_key: Vec<u8>,
    /// Creation time.
    pub created: Timestamp,
    /// Revocation time, if revoked.
    pub revoked: Option<Timestamp>,
}

impl SubscriberRecord {
    /// Its prefixes and ASNs as one stored list (`198.18.0.0/16,AS64500`).
    pub fn resources(&self) -> String {
        self.prefixes
            .iter()
            .cloned()
            .chain(self.asns.iter().map(|a| format!("AS{a}")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Splits a stored resource list back into prefixes and ASNs.
    pub fn set_resources(&mut self, list: &str) {
        self.prefixes.clear();
        self.asns.clear();
        for r in list.split(',').filter(|r| !r.is_empty()) {
            match r.strip_prefix("AS").and_then(|n| n.parse().ok()) {
                Some(n) => self.asns.push(n),
                None => self.prefixes.push(r.to_string()),
            }
        }
    }
}

/// A source in a summary that belongs to a subscriber, found at ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedMatch {
    /// The owning subscriber.
    pub subscriber: String,
    /// Index of the source row in the summary.
    pub source: usize,
    /// The source's AS number (0 when unknown).
    pub asn: u32,
    /// The source's country from the ASN table ("" when unknown).
    pub geo: String,
}

/// One subscriber's host as one sensor saw it in one window: a feed event
/// as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedRow {
    /// UTC day (of the window start).
    pub day: Timestamp,
    /// The host.
    pub ip: Addr,
    /// The sensor.
    pub sensor: String,
    /// The sensor's country.
    pub country: String,
    /// Window start.
    pub start: Timestamp,
    /// When the aggregator stored it.
    pub stored_at: Timestamp,
    /// AS number of the host (0 when unknown).
    pub asn: u32,
    /// Country of the host from the ASN table ("" when unknown).
    pub geo: String,
    /// Packets.
    pub packets: u64,
    /// Distinct darknet addresses it sent to.
    pub destinations: u64,
    /// Classes.
    pub classes: ClassSet,
    /// Fingerprints.
    pub fingerprints: FingerprintSet,
    /// First packet.
    pub first: Timestamp,
    /// Last packet.
    pub last: Timestamp,
    /// Busiest ports.
    pub ports: Vec<PortCount>,
}

/// A position in a subscriber's change stream: host-days ordered by their
/// last update, then day, then address text.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    /// Last update of the host-day.
    pub stored_at: u64,
    /// Its day.
    pub day: u64,
    /// Its address, as text.
    pub ip: String,
}

/// A source as stored for one window or hour and one sensor.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSeen {
    /// Address.
    pub ip: Addr,
    /// Sensor.
    pub sensor: String,
    /// Packets.
    pub packets: u64,
    /// Class bits.
    pub classes: ClassSet,
    /// Fingerprint bits.
    pub fingerprints: FingerprintSet,
    /// First seen.
    pub first: Timestamp,
    /// Last seen.
    pub last: Timestamp,
    /// Busiest ports.
    pub ports: Vec<PortCount>,
}

/// What `insert_summary` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now.
    New,
    /// Replaced an earlier version with the same key (federation imports).
    Replaced,
    /// This (sensor, window start) was already stored; nothing changed.
    Duplicate,
}

/// Whose observations a query or the detector reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This aggregator's own sensors (the default).
    #[default]
    Local,
    /// Own sensors plus everything imported from federation peers; distinct
    /// sources are merged with the sketches, so a scanner seen in two
    /// countries counts once.
    Global,
}

impl Scope {
    /// From `local` / `global`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "local" => Some(Scope::Local),
            "global" => Some(Scope::Global),
            _ => None,
        }
    }

    /// `local` or `global`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// First character of the storage key of a sensor learned from a peer
/// (`@peer/pseudonym`); local sensor ids cannot contain it.
pub const PEER_SENSOR_MARK: char = '@';

/// The storage key of a peer's (pseudonymous) sensor.
pub fn peer_sensor_key(peer: &str, pseudonym: &str) -> String {
    format!("{PEER_SENSOR_MARK}{peer}/{pseudonym}")
}

/// A local window in arrival order: the unit federation exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalChange {
    /// Position in the arrival log (the export cursor).
    pub seq: u64,
    /// Local sensor id.
    pub sensor: String,
    /// Window start.
    pub start: Timestamp,
}

/// Sync state of one federation peer we pull from.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerState {
    /// Peer id.
    pub peer: String,
    /// Their cursor: the next pull asks for changes after it.
    pub cursor: u64,
    /// Last pull attempt.
    pub last_pull: Option<Timestamp>,
    /// Last pull that succeeded.
    pub last_success: Option<Timestamp>,
    /// Why the last pull failed (empty when it succeeded).
    pub last_error: String,
    /// Failed pulls since the first.
    pub errors: u64,
    /// Observations imported since the first.
    pub imported: u64,
    /// End of the newest window imported from the peer.
    pub newest_window_end: Option<Timestamp>,
    /// The TLP marking the peer put on its data.
    pub tlp: String,
}

/// One export to a peer, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportRecord {
    /// When it was served.
    pub time: Timestamp,
    /// The peer that pulled.
    pub peer: String,
    /// Policy applied (`aggregates` or `aggregates+sources`).
    pub share: String,
    /// TLP marking sent.
    pub tlp: String,
    /// Cursor asked for.
    pub cursor_from: u64,
    /// Cursor handed back.
    pub cursor_to: u64,
    /// Observations sent.
    pub observations: u64,
    /// Port rows sent.
    pub port_rows: u64,
    /// Source rows (addresses) sent.
    pub source_rows: u64,
}

/// Which rows a port query covers.
#[derive(Clone, Debug, Default)]
pub struct PortFilter {
    /// Windows starting at or after this.
    pub from: Timestamp,
    /// Windows starting before this.
    pub to: Timestamp,
    /// Only this protocol.
    pub proto: Option<Proto>,
    /// Only this sensor.
    pub sensor: Option<String>,
    /// Only sensors registered in this country.
    pub country: Option<String>,
    /// Own sensors only, or with peers' data too.
    pub scope: Scope,
}

/// A port ranked over a time range, merged across sensors and windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortTop {
    /// Protocol.
    pub proto: Proto,
    /// Port / ICMP type / IP protocol.
    pub port: u16,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Distinct sources (merged sketches; exact when one window contributes).
    pub sources: u64,
    /// Distinct darknet destinations: the largest count one sensor saw in one
    /// window (a lower bound on the whole range; it merges the same way at
    /// every roll-up level).
    pub destinations: u64,
    /// Share of all packets in the range.
    pub share: f64,
}

/// One step of a port's time series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Step start.
    pub time: Timestamp,
    /// Packets in the step.
    pub packets: u64,
    /// Distinct sources in the step, merged across sensors with the sketches.
    pub sources: u64,
}

/// One sensor's view of a port over a range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortSensor {
    /// Sensor id (a peer's sensors as `@peer/pseudonym`).
    pub sensor: String,
    /// The sensor's country.
    pub country: String,
    /// Packets it saw to the port.
    pub packets: u64,
    /// Distinct sources it saw there (exact for one window, else merged).
    pub sources: u64,
}

/// One sensor country's view of a port over a range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortCountry {
    /// Country of the sensors.
    pub country: String,
    /// Sensors there that saw the port.
    pub sensors: u64,
    /// Packets.
    pub packets: u64,
    /// Distinct sources, merged across its sensors.
    pub sources: u64,
}

/// Which sensors and countries see a port: per sensor and per country,
/// most distinct sources first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortReach {
    /// Packets to the port.
    pub packets: u64,
    /// Distinct sources, merged across all sensors.
    pub sources: u64,
    /// Per sensor.
    pub sensors: Vec<PortSensor>,
    /// Per sensor country.
    pub countries: Vec<PortCountry>,
}

/// A source of one port's traffic over a range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortSource {
    /// The address.
    pub ip: String,
    /// Packets it sent to the port (from its busiest ports per window).
    pub packets: u64,
    /// Sensors that saw it there.
    pub sensors: u64,
    /// Fingerprints it carried in those windows.
    pub fingerprints: FingerprintSet,
    /// First packet of those windows.
    pub first_seen: Timestamp,
    /// Last packet of those windows.
    pub last_seen: Timestamp,
}

/// How many of a port's sources carried a fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FingerprintShare {
    /// Fingerprint name, or `none` for sources that carried none.
    pub fingerprint: String,
    /// Sources carrying it.
    pub sources: u64,
    /// Their share of the port's sources.
    pub share: f64,
}

/// A port's sources over a range, from each source's busiest ports per
/// window (a source that spread thin over many ports may be missed).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortSources {
    /// Distinct sources found.
    pub sources: u64,
    /// Their packets to the port.
    pub packets: u64,
    /// The busiest, most packets first.
    pub top: Vec<PortSource>,
    /// Fingerprint shares among them (every fingerprint, then `none`).
    pub fingerprints: Vec<FingerprintShare>,
}

/// A feed a source appeared in: one subscriber's events about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFeed {
    /// The subscriber whose feed carried it.
    pub subscriber: String,
    /// First day it was in the feed.
    pub first_day: Timestamp,
    /// Last day it was in the feed.
    pub last_day: Timestamp,
    /// Days it was in the feed.
    pub days: u64,
    /// Packets reported.
    pub packets: u64,
}

/// How many of a source's busiest ports get an hourly series.
pub const SOURCE_PORT_SERIES: usize = 8;

/// Packets of one source to one port in one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortHour {
    /// Hour start.
    pub hour: Timestamp,
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// Packets.
    pub packets: u64,
}

/// Packets of one source on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Packets.
    pub packets: u64,
}

/// Everything known about one source address.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceInfo {
    /// The address.
    pub ip: String,
    /// First packet seen.
    pub first_seen: Timestamp,
    /// Last packet seen.
    pub last_seen: Timestamp,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Its ports, busiest first (from each window's top ports).
    pub ports: Vec<PortCount>,
    /// Packets per day.
    pub per_day: Vec<DayCount>,
    /// Its busiest ports over time: packets per hour to each of its
    /// [`SOURCE_PORT_SERIES`] busiest ports, hours ascending.
    pub port_hours: Vec<PortHour>,
    /// Sensors that saw it.
    pub sensors: Vec<String>,
    /// Fingerprints it carried in any window.
    pub fingerprints: FingerprintSet,
    /// Classes of its packets.
    pub classes: ClassSet,
    /// Windows it appears in.
    pub windows: u64,
}

/// Health of one sensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SensorStatus {
    /// Sensor id.
    pub id: String,
    /// Registered country.
    pub country: String,
    /// True when its token was revoked.
    pub revoked: bool,
    /// End of its newest stored window.
    pub last_window_end: Option<Timestamp>,
    /// When that summary arrived.
    pub last_summary_at: Option<Timestamp>,
    /// Windows stored.
    pub windows: u64,
    /// Frames it received (libpcap) over the stored windows.
    pub received: u64,
    /// Kernel + interface + pipeline drops.
    pub dropped: u64,
    /// `dropped / received`.
    pub drop_rate: f64,
    /// Summaries its spool had to evict.
    pub spool_evicted: u64,
    /// Seconds from its newest window's end to now.
    pub lag_seconds: Option<f64>,
}

/// A source and its packets, for overviews.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceBrief {
    /// The address.
    pub ip: String,
    /// Packets.
    pub packets: u64,
}

/// Totals over a time range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overview {
    /// Range start.
    pub from: Timestamp,
    /// Range end.
    pub to: Timestamp,
    /// Darknet packets.
    pub packets: u64,
    /// Packets per class.
    pub classes: ClassTotals,
    /// Busiest ports by distinct sources.
    pub top_ports: Vec<PortTop>,
    /// Busiest sources by packets.
    pub top_sources: Vec<SourceBrief>,
    /// Sensors with at least one window in the range.
    pub active_sensors: u64,
    /// Windows in the range.
    pub windows: u64,
}

/// A storage backend.
pub trait Store: Send + Sync {
    /// Registers a sensor with the digest of its token.
    fn add_sensor(&self, id: &str, country: &str, token_hash: &[u8]) -> Result<(), StoreError>;
    /// Revokes a sensor's token.
    fn revoke_sensor(&self, id: &str) -> Result<(), StoreError>;
    /// All sensors.
    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError>;
    /// The sensor a token digest belongs to.
    fn sensor_by_token(&self, token_hash: &[u8]) -> Result<Option<SensorRecord>, StoreError>;
    /// Registers an analyst with the digest of their token.
    fn add_analyst(&self, name: &str, token_hash: &[u8]) -> Result<(), StoreError>;
    /// Revokes an analyst's token.
    fn revoke_analyst(&self, name: &str) -> Result<(), StoreError>;
    /// All analysts.
    fn analysts(&self) -> Result<Vec<AnalystRecord>, StoreError>;
    /// The analyst a token digest belongs to.
    fn analyst_by_token(&self, token_hash: &[u8]) -> Result<Option<AnalystRecord>, StoreError>;
    /// Registers a feed subscriber (id, prefixes, ASNs, webhook) with its
    /// token digest.
    fn add_subscriber(&self, s: &SubscriberRecord, token_hash: &[u8]) -> Result<(), StoreError>;
    /// Changes a subscriber's prefixes, ASNs and webhook (not its token).
    fn update_subscriber(&self, s: &SubscriberRecord) -> Result<(), StoreError>;
    /// Revokes a subscriber's token.
    fn revoke_subscriber(&self, id: &str) -> Result<(), StoreError>;
    /// All subscribers.
    fn subscribers(&self) -> Result<Vec<SubscriberRecord>, StoreError>;
    /// The subscriber a token digest belongs to.
    fn subscriber_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<SubscriberRecord>, StoreError>;
    /// Every stored source row (per window or hour, per sensor) in `[from, to)`.
    fn sources_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SourceSeen>, StoreError>;
    /// Stores a validated summary durably, once per (sensor id, window start).
    /// `country` is the sensor's registered country.
    fn insert_summary(&self, s: &Summary, country: &str) -> Result<Inserted, StoreError> {
        self.insert_summary_with(s, country, &[])
    }
    /// [`Store::insert_summary`], recording `matches` as feed events in the
    /// same commit (and not at all when the window was already stored).
    fn insert_summary_with(
        &self,
        s: &Summary,
        country: &str,
        matches: &[FeedMatch],
    ) -> Result<Inserted, StoreError>;
    /// A subscriber's feed events of the UTC day starting at `day`.
    fn feed_day(&self, subscriber: &str, day: Timestamp) -> Result<Vec<FeedRow>, StoreError>;
    /// The subscribers' feeds that carried `ip`, by subscriber id.
    fn host_feeds(&self, ip: Addr) -> Result<Vec<HostFeed>, StoreError>;
    /// Where a subscriber's webhook digests stand (None: nothing pushed yet).
    fn push_cursor(&self, subscriber: &str) -> Result<Option<FeedCursor>, StoreError>;
    /// Records that digests up to `cursor` were accepted by the subscriber.
    fn save_push_cursor(&self, subscriber: &str, cursor: &FeedCursor) -> Result<(), StoreError>;
    /// A subscriber's host-days updated after `after` (see [`FeedCursor`]),
    /// at most `limit`, in cursor order, each with all its stored rows.
    fn feed_changes(
        &self,
        subscriber: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<(FeedCursor, Vec<FeedRow>)>, StoreError>;
    /// Ports over a range, by distinct sources.
    fn top_ports(&self, f: &PortFilter, limit: usize) -> Result<Vec<PortTop>, StoreError>;
    /// A port's packets and distinct sources per step over `[from, to)`.
    #[allow(clippy::too_many_arguments)]
    fn port_series(
        &self,
        proto: Proto,
        port: u16,
        from: Timestamp,
        to: Timestamp,
        step_us: u64,
        scope: Scope,
    ) -> Result<Vec<SeriesPoint>, StoreError>;
    /// All darknet packets and distinct sources (any port) per step over
    /// `[from, to)`, from the windows' totals and sketches.
    fn total_series(
        &self,
        from: Timestamp,
        to: Timestamp,
        step_us: u64,
        scope: Scope,
    ) -> Result<Vec<SeriesPoint>, StoreError>;
    /// Which sensors and countries saw `proto`/`port` in `[from, to)`.
    fn port_reach(
        &self,
        proto: Proto,
        port: u16,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<PortReach, StoreError>;
    /// Everything about one source.
    fn source(&self, ip: Addr, scope: Scope) -> Result<Option<SourceInfo>, StoreError>;
    /// Health of every registered sensor; with [`Scope::Global`] also the
    /// peers' pseudonymous sensors seen in imported data (after ours).
    fn sensor_status(&self, now: Timestamp, scope: Scope) -> Result<Vec<SensorStatus>, StoreError>;
    /// Totals over a range.
    fn overview(
        &self,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<Overview, StoreError>;
    /// Distinct window starts in `[from, to)`, ascending.
    fn window_starts(
        &self,
        from: Timestamp,
        to: Timestamp,
        scope: Scope,
    ) -> Result<Vec<Timestamp>, StoreError>;
    /// Number of sensors that stored a window starting at `start`.
    fn window_sensors(&self, start: Timestamp, scope: Scope) -> Result<u32, StoreError>;
    /// Per port, distinct sources of the window starting at `start`, merged
    /// across the scope's sensors with the sketches.
    fn port_sources_at(
        &self,
        start: Timestamp,
        scope: Scope,
    ) -> Result<Vec<(Proto, u16, u64)>, StoreError>;
    /// Stores a new alert; returns its id.
    fn insert_alert(&self, a: &Alert) -> Result<i64, StoreError>;
    /// Marks an alert resolved.
    fn resolve_alert(&self, id: i64, at: Timestamp) -> Result<(), StoreError>;
    /// Alerts that started at or after `since`, newest first, optionally only in `state`.
    fn alerts(&self, since: Timestamp, state: Option<&str>) -> Result<Vec<Alert>, StoreError>;
    /// One alert by id.
    fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError>;
    /// Deletes raw windows that started before `cutoff`; returns how many.
    /// Roll-ups older than `rollup_cutoff` go too.
    fn apply_retention(
        &self,
        cutoff: Timestamp,
        rollup_cutoff: Timestamp,
    ) -> Result<u64, StoreError>;
    /// Builds hourly roll-ups for every hour that ended before `now` minus a
    /// grace period, and rebuilds hours that late windows changed. Returns
    /// the number of hours (re)built.
    fn rollup(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// Local windows stored after `cursor`, in arrival order, at most `limit`.
    fn local_changes(&self, cursor: u64, limit: usize) -> Result<Vec<LocalChange>, StoreError>;
    /// The newest position in the arrival log (0 when empty).
    fn local_changes_head(&self) -> Result<u64, StoreError>;
    /// A local sensor's stored windows starting in `[from, to)`, read back
    /// as summaries (capture health and heavy hitters are not kept).
    fn stored_summaries(
        &self,
        sensor: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Summary>, StoreError>;
    /// Stores an observation learned from a peer (its sensor id is a
    /// [`peer_sensor_key`]), replacing any stored version with the same
    /// (sensor, window start): applying the same change twice is a no-op.
    fn import_summary(&self, s: &Summary, country: &str) -> Result<Inserted, StoreError>;
    /// Sync state of every peer we pulled from.
    fn peer_states(&self) -> Result<Vec<PeerState>, StoreError>;
    /// Saves a peer's sync state.
    fn save_peer_state(&self, st: &PeerState) -> Result<(), StoreError>;
    /// Appends to the export audit log.
    fn record_export(&self, e: &ExportRecord) -> Result<(), StoreError>;
    /// Exports served since `since`, newest first, optionally to one peer.
    fn exports(
        &self,
        since: Timestamp,
        peer: Option<&str>,
    ) -> Result<Vec<ExportRecord>, StoreError>;
    /// Records that replica `holder` (alive since `since`) is alive at
    /// `now`, for the cluster role `role`.
    fn heartbeat(
        &self,
        role: &str,
        holder: &str,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Replicas that sent a heartbeat for `role` at or after `after`:
    /// (holder, alive since), in no particular order.
    fn live_replicas(
        &self,
        role: &str,
        after: Timestamp,
    ) -> Result<Vec<(String, Timestamp)>, StoreError>;
}
